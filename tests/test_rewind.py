"""History rewind on a short synthetic history: the timeline's shape, the sensors' logic on every step,
point-in-time (prices after the last as-of date change nothing), capture once per window, and the CLI."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

import regime_assets.rewind as rewind_mod
from regime_assets.core.sources import load_source
from regime_assets.rewind import run_rewind
from regime_assets.spec import Spec

ROOT = Path(__file__).resolve().parents[1]
TINY_SPEC = ROOT / "tests" / "specs" / "tiny.yaml"


START, END = dt.date(2009, 1, 1), dt.date(2009, 3, 31)


def _spec(**overrides) -> Spec:
    data = yaml.safe_load(TINY_SPEC.read_text())
    data["rewind"] = {"model": "lightgbm", "n_estimators": 10, "max_train_rows": 1000}
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return Spec.model_validate(data)


@pytest.fixture(scope="module")
def timeline() -> pl.DataFrame:
    return run_rewind(_spec(), START, END, "week", out_dir=None)


def test_one_row_per_week_with_scores_in_range(timeline):
    days = [START + dt.timedelta(days=i) for i in range((END - START).days + 1)]
    weeks_in_range = {d.isocalendar()[:2] for d in days if d.weekday() < 5}
    assert timeline.height == len(weeks_in_range)
    assert timeline["as_of"].is_sorted()
    weeks = timeline["as_of"].dt.truncate("1w")
    assert weeks.n_unique() == timeline.height
    assert timeline["as_of"].min() >= START and timeline["as_of"].max() <= END
    for c in ("drift_score", "feature_score", "regime_score", "prediction_score"):
        s = timeline[c]
        assert s.null_count() == 0 and s.min() >= 0.0 and s.max() <= 1.0, c
    assert timeline["vix"].null_count() == 0
    assert (timeline["model_trained_on"] <= timeline["as_of"]).all()


def test_sensor_logic_on_every_step(timeline):
    spec = _spec()
    over = timeline["drift_score"] >= spec.drift.retrain_threshold
    planned = timeline["event_runs"].is_not_null()
    assert (timeline["retrain"] == (over | planned)).all()
    # a new event always plans a run (an extension only per capture.regrow_days of growth)
    assert timeline.filter(pl.col("captured_event").is_not_null())["event_runs"].null_count() == 0
    for row, trig in zip(timeline.iter_rows(named=True), timeline["trigger"].to_list()):
        if row["retrain"]:
            assert ("drift sensor" in trig) == (row["drift_score"] >= spec.drift.retrain_threshold)
            assert ("new-event sensor" in trig) == (row["event_runs"] is not None)
        else:
            assert trig is None
    # the model in use at a step is the one trained at the last retrain before it (or at the first step)
    rows = timeline.to_dicts()
    expected = rows[0]["as_of"]
    for r in rows:
        assert r["model_trained_on"] == expected
        if r["retrain"]:
            expected = r["as_of"]


def test_point_in_time_prices_after_the_end_change_nothing(timeline, monkeypatch):
    rng = np.random.default_rng(3)

    def perturbed(dspec):
        data = load_source(dspec)
        after = pl.col("date") > END
        noise = pl.Series(rng.uniform(0.5, 1.5, data.prices.height))
        prices = data.prices.with_columns(
            pl.when(after).then(pl.col("close") * noise).otherwise(pl.col("close")).alias("close"))
        changed = (prices["close"] != data.prices["close"]).sum()
        assert changed > 0
        index = data.index.with_columns(pl.when(pl.col("date") > END).then(pl.col("close") * 0.6)
                                        .otherwise(pl.col("close")).alias("close"))
        vix = data.vix
        if vix is not None:
            vix = vix.with_columns(pl.when(pl.col("date") > END).then(pl.col("vix") * 2.0)
                                   .otherwise(pl.col("vix")).alias("vix"))
        return type(data)(**{**data.__dict__, "prices": prices, "index": index, "vix": vix})

    monkeypatch.setattr(rewind_mod, "load_source", perturbed)
    again = run_rewind(_spec(), START, END, "week", out_dir=None)
    cols = [c for c in timeline.columns if c != "seconds"]
    assert again.select(cols).equals(timeline.select(cols))


def test_capture_fires_once_per_window_and_triggers_retraining():
    # a VIX level every synthetic market exceeds: the rule must capture, and the captured window is then known
    spec = _spec(capture={"vix_level": 5.0, "vix_days": 3})
    tl = run_rewind(spec, START, dt.date(2009, 2, 15), "week", out_dir=None)
    caps = tl.filter(pl.col("captured_event").is_not_null())
    assert caps.height >= 1
    first = caps.row(0, named=True)
    assert first["retrain"] and "new-event sensor" in first["trigger"]
    ids = [i for s in caps["captured_event"].to_list() for i in s.split(",")]
    assert len(ids) == len(set(ids)), "the same window was captured twice"
    runs = [k for s in tl["event_runs"].drop_nulls().to_list() for k in s.split(",")]
    assert len(runs) == len(set(runs)), "one extent started two runs"
    # a growing episode extends its event instead of capturing it again
    for ext in tl["extended_event"].drop_nulls().to_list():
        assert all(e.split("@")[0] in ids for e in ext.split(","))


def test_cli_prints_timeline_and_writes_plot(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_spec().model_dump(mode="json")))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "regime_assets.cli", "rewind", "--spec", str(spec_file),
                           "--start", "2009-01-01", "--end", "2009-01-31", "--every", "week", "--out", str(out), "--home", str(tmp_path / "home")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln[:4] == "2009"]
    assert len(lines) == 5 and all("drift" in ln for ln in lines)
    assert "steps in" in proc.stdout
    csv = pl.read_csv(out / "rewind_timeline.csv")
    assert csv.height == 5
    png = (out / "rewind_timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # the timeline is a warehouse table and a reported materialization of the rewind_timeline asset
    import duckdb
    from dagster import AssetKey, DagsterInstance

    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from rewind_timeline").fetchall()[0][0] == 5
    with DagsterInstance.from_config(str(tmp_path / "home" / "dagster")) as instance:
        ev = instance.get_latest_materialization_event(AssetKey("rewind_timeline"))
    assert ev is not None
    meta = ev.asset_materialization.metadata
    assert meta["steps"].value == 5 and "timeline_plot" in meta

