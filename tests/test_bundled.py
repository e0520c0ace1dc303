"""The bundled data (20 S&P 500 stocks and the index, 1990-2022): ingest, regimes and the samples group
materialize through Dagster, with the figures the docs quote (proxy calibration, regime shares, archive counts)."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
from dagster import AssetKey, AssetSelection, DagsterInstance

from regime_assets.resources.warehouse import warehouse_path
from regime_assets.spec import REGIMES, load_spec

pytestmark = pytest.mark.bundled


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory):
    from regime_assets.definitions import build_definitions

    home = tmp_path_factory.mktemp("bundled_home")
    defs = build_definitions(spec_path=None, home=str(home))
    keys = AssetSelection.groups("ingest", "regimes", "samples").resolve(defs.resolve_asset_graph())
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)
    instance = DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    return home, instance, result


def _meta(instance, key: str) -> dict:
    ev = instance.get_latest_materialization_event(AssetKey(key))
    assert ev is not None, key
    return {k: v.value for k, v in ev.asset_materialization.metadata.items()}


def test_samples_group_materializes_on_bundled_data(bundled_run):
    home, _, result = bundled_run
    assert result.success
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        counts = {t: conn.execute(f"select count(*) from {t}").fetchall()[0][0]
                  for t in ("raw_prices", "regime_labels", "features", "labeled_samples", "rare_event_archive",
                            "training_set", "balanced_training_set", "sample_weights")}
        symbols = conn.execute("select count(distinct symbol), min(date), max(date) from raw_prices").fetchall()[0]
    assert symbols[0] == 20 and symbols[1].year == 1990 and symbols[2].year == 2022
    assert counts["raw_prices"] > 150_000 and counts["features"] == counts["raw_prices"]
    assert counts["balanced_training_set"] == counts["sample_weights"] > 10_000


def test_vix_proxy_calibration_is_reported_and_good(bundled_run):
    _, instance, _ = bundled_run
    meta = _meta(instance, "market_context")
    corr = [v for k, v in meta.items() if "corr" in k and isinstance(v, float)]
    assert corr and max(corr) > 0.85, meta.keys()


def test_every_regime_present_with_plausible_shares(bundled_run):
    home, _, _ = bundled_run
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        labels = pl.DataFrame(conn.sql("select regime from regime_labels").to_arrow_table())
    shares = labels.group_by("regime").len().with_columns(share=pl.col("len") / labels.height)
    by = dict(shares.select("regime", "share").iter_rows())
    assert set(by) == set(REGIMES)
    assert 0.2 < by["low_vol"] < 0.6 and 0.2 < by["normal"] < 0.6
    assert 0.01 < by["crash"] < 0.1 and 0.01 < by["high_vol"] < 0.1


def test_archive_counts_every_in_range_event_and_flags_2023(bundled_run):
    home, instance, _ = bundled_run
    spec = load_spec(None)
    meta = _meta(instance, "rare_event_archive")
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        arch = pl.DataFrame(conn.sql("select event_id, count(*) n from rare_event_archive group by 1").to_arrow_table())
    counts = dict(arch.iter_rows())
    for e in spec.events:
        if e.end.year <= 2022:
            assert counts.get(e.id, 0) > 0, e.id
            assert meta[f"rows_{e.id}"] == counts[e.id]
        else:
            assert e.id not in counts
            assert meta[f"rows_{e.id}"] == 0
    assert meta["events_outside_range"] == 1
    assert "outside data range" in meta["events"]
