"""Bad input through Dagster: every broken folder of tests/data stops the graph at ingest, with a message naming
the file, symbol and row, and nothing downstream is written. Plus wrong-type and missing-column cases the core
tests (tests/test_sources.py) do not cover."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import yaml
from dagster import DagsterInstance

from regime_assets.core.sources import PriceValidationError, load_source, validate_prices
from regime_assets.resources.warehouse import warehouse_path
from regime_assets.spec import DataSpec

DATA = Path(__file__).resolve().parents[1] / "data"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
TODAY = dt.date.fromisoformat(MANIFEST["_today"])
BAD = sorted(k for k in MANIFEST if not k.startswith("_"))
DOWNSTREAM = ("raw_prices", "index_prices", "sectors", "market_context", "regime_labels", "features",
              "labeled_samples", "rare_event_archive", "training_set", "model_versions", "training_runs")


def _error_texts(event) -> list[str]:
    texts = []
    data = event.event_specific_data
    if getattr(data, "user_failure_data", None) is not None and data.user_failure_data.description:
        texts.append(data.user_failure_data.description)
    err = getattr(data, "error", None)
    while err is not None:
        texts.append(err.message)
        err = err.cause
    return texts


def _tables(home: Path) -> set[str]:
    db = warehouse_path(home)
    if not db.exists():
        return set()
    with duckdb.connect(str(db), read_only=True) as conn:
        return {r[0] for r in conn.execute("select table_name from information_schema.tables").fetchall()}


def _folder_spec(tmp_path: Path, folder: Path, extra: dict | None = None) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump({"name": "bad_input", "data": {"source": "folder", "folder": str(folder),
                                                               "min_history_days": 20, **(extra or {})}}))
    return p


@pytest.mark.parametrize("name", BAD)
def test_bad_folder_fails_the_graph_at_ingest_and_writes_nothing(name, tmp_path, home):
    from regime_assets.definitions import build_definitions

    exp = MANIFEST[name]
    defs = build_definitions(spec_path=str(_folder_spec(tmp_path, DATA / name, exp.get("spec"))), home=str(home))
    t0 = time.perf_counter()
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("materialize_all").execute_in_process(instance=instance, raise_on_error=False)
    elapsed = time.perf_counter() - t0
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["ingest_prices"]
    msg = " | ".join(_error_texts(failures[0]))
    assert msg.count("bad input:") >= 1, msg
    assert f"file {exp['file']}" in msg and f"symbol {exp['symbol']}" in msg and exp["problem"] in msg, msg
    if isinstance(exp["row"], int):
        assert f"row {exp['row']}," in msg, msg
    else:  # the header row or no row at all (an empty file) is named as such
        assert (exp["row"] or "empty file") in msg, msg
    # nothing ran after ingest, and the warehouse has no table of the graph
    ran = {e.step_key for e in result.all_events if e.is_step_success}
    assert ran == set(), ran
    assert _tables(home).isdisjoint(DOWNSTREAM), _tables(home)
    assert not (home / "models").exists() or not any((home / "models").iterdir())
    assert elapsed < 60, f"failing at ingest took {elapsed:.1f}s"


def test_bad_input_through_the_cli_names_file_symbol_and_row(tmp_path, monkeypatch, capsys):
    """`regime-assets materialize` on a bad folder exits 1 with the ingest message, and writes no table."""
    from regime_assets.cli import main

    home = tmp_path / "cli_home"
    spec = _folder_spec(tmp_path, DATA / "bad_negative")
    for var in ("DAGSTER_HOME", "REGIME_ASSETS_SPEC", "REGIME_ASSETS_HOME"):
        monkeypatch.setenv(var, "")  # restored after the test (the CLI sets them for its children)
    monkeypatch.delenv("DAGSTER_HOME")
    rc = main(["materialize", "--spec", str(spec), "--home", str(home)])
    err = capsys.readouterr().err
    assert rc == 1
    exp = MANIFEST["bad_negative"]
    assert "ingest_prices: " in err and f"file {exp['file']}, symbol {exp['symbol']}, row {exp['row']}," in err, err
    assert _tables(home).isdisjoint(DOWNSTREAM)


# ---------------------------------------------------------------------------------------------------------------
# wrong types and missing columns the core tests do not cover


def _dates(n: int = 40) -> list[dt.date]:
    d, out = dt.date(2021, 1, 4), []
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


BASE = pl.DataFrame({"date": _dates(), "close": np.linspace(10.0, 20.0, 40)})
WRONG_TYPES = {
    "boolean close": (BASE.with_columns(pl.col("close") > 15), "column 'close' has type Boolean, expected numbers"),
    "date close": (BASE.with_columns(pl.col("date").alias("close")), "column 'close' has type Date"),
    "list close": (BASE.with_columns(pl.concat_list("close")), "column 'close' has type List"),
    "struct close": (BASE.with_columns(pl.struct("close").alias("close")), "column 'close' has type Struct"),
    "boolean volume": (BASE.with_columns((pl.col("close") > 3).alias("volume")), "column 'volume' has type Boolean"),
    "text volume": (BASE.with_columns(pl.lit("lots").alias("volume")), "column 'volume' has type String, expected "
                                                                       "numbers (a typed Parquet file"),
    "text close": (BASE.with_columns(pl.col("close").cast(pl.Utf8)), "column 'close' has type String"),
    "epoch-day dates": (BASE.with_columns(pl.col("date").dt.epoch("d")), "column 'date' has type Int32, expected Date"),
    "text dates": (BASE.with_columns(pl.col("date").cast(pl.Utf8)), "column 'date' has type String, expected Date"),
    "no date column": (BASE.drop("date"), "header row: missing column 'date'"),
    "no close column": (BASE.drop("close").with_columns(pl.lit(1.0).alias("open")),
                        "header row: missing column 'close'"),
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_wrong_type_or_missing_column_in_a_parquet_file(case, tmp_path):
    frame, expected = WRONG_TYPES[case]
    frame.write_parquet(tmp_path / "ACME.parquet")
    with pytest.raises(PriceValidationError) as err:
        load_source(DataSpec(source="folder", folder=str(tmp_path), min_history_days=20), today=TODAY)
    msg = str(err.value)
    assert "file ACME.parquet, symbol ACME" in msg and expected in msg, msg


@pytest.mark.parametrize("cell,expected", [
    ("1e400", "row 6, date 2021-01-11: close is inf"),
    ('"1,234.5"', "row 6, date 2021-01-11: close '1,234.5' is not a number"),
    ("-0", "row 6, date 2021-01-11: close is 0"),
    ("nan", "row 6, date 2021-01-11: close is NaN"),
])
def test_odd_numbers_in_a_csv_cell(cell, expected, tmp_path):
    lines = ["date,close"] + [f"{d},{cell if i == 5 else 10 + i}" for i, d in enumerate(_dates())]
    (tmp_path / "ACME.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(PriceValidationError, match="file ACME.csv, symbol ACME, " + expected.replace("(", r"\(")):
        load_source(DataSpec(source="folder", folder=str(tmp_path), min_history_days=20), today=TODAY)


def test_unreadable_files_are_price_validation_errors(tmp_path):
    (tmp_path / "ACME.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(PriceValidationError, match="file ACME.parquet: cannot be read"):
        load_source(DataSpec(source="folder", folder=str(tmp_path), min_history_days=20), today=TODAY)
    (tmp_path / "ACME.parquet").unlink()
    (tmp_path / "ACME.csv").write_bytes(b"date,close\n2021-01-04,\xff\xfe1\n")
    with pytest.raises(PriceValidationError, match="file ACME.csv: cannot be read"):
        load_source(DataSpec(source="folder", folder=str(tmp_path), min_history_days=1), today=TODAY)


@pytest.mark.parametrize("change,expected", [
    (lambda f: f.with_columns(pl.lit(1).alias("symbol")), "column 'symbol' has type Int32, expected String"),
    (lambda f: f.with_columns(pl.col("symbol").cast(pl.Categorical)), "column 'symbol' has type Categorical"),
    (lambda f: f.with_columns(pl.lit(None).alias("close")), "column 'close' has type Null, expected Float64"),
    (lambda f: f.drop("symbol"), "missing column 'symbol'"),
    (lambda f: f.drop("date"), "missing column 'date'"),
])
def test_validate_prices_wrong_frame_types(change, expected):
    frame = BASE.with_columns(pl.lit("AA").alias("symbol"))
    with pytest.raises(PriceValidationError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate_prices(change(frame), {"AA": "aa.csv"}, DataSpec(min_history_days=5), TODAY)


def test_a_daily_jump_warns_by_default_as_an_asset_check_and_in_the_summary(tmp_path, home, capsys):
    """bad_jump under the default data.jump_action (warn): ingest succeeds, the raw_prices check
    prices_no_large_jumps fails with severity WARN naming symbol and date, and the summary shows it."""
    from dagster import AssetCheckSeverity, AssetSelection

    from regime_assets.definitions import build_definitions
    from regime_assets.spec import load_spec
    from regime_assets.summary import print_summary

    exp = MANIFEST["bad_jump"]
    spec_path = _folder_spec(tmp_path, DATA / "bad_jump")
    defs = build_definitions(spec_path=str(spec_path), home=str(home))
    keys = AssetSelection.groups("ingest").resolve(defs.resolve_asset_graph())
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    jump = checks["prices_no_large_jumps"]
    assert not jump.passed and jump.severity == AssetCheckSeverity.WARN
    shown = jump.metadata["first_offending_rows"].value
    assert exp["symbol"] in shown and exp["date"] in shown and "close jumps from" in shown, shown
    assert checks["prices_no_long_gaps"].passed
    print_summary(defs, home, load_spec(str(spec_path)), result, 1.0)
    out = capsys.readouterr().out
    assert "input warnings: 1 daily close move(s) beyond |log return| 1.609" in out, out
    assert f"{exp['symbol']}" in out and exp["date"] in out and "close jumps from" in out, out
