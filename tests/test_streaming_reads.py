"""The assets that read labeled_samples / features with SQL filters give exactly what the core functions give on
the whole tables (tiny synthetic graph, ingest through the training set)."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance
from polars.testing import assert_frame_equal

from regime_assets.home.paths import warehouse_path

PREFIX = ["raw_prices", "index_prices", "sectors", "market_context", "regime_labels", "features", "labeled_samples",
          "rare_event_archive", "error_replay_buffer", "training_set"]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    from regime_assets.definitions import build_definitions
    from tests.conftest import TINY_SPEC

    home = tmp_path_factory.mktemp("streaming_home")
    defs = build_definitions(spec_path=str(TINY_SPEC), home=str(home))
    job = defs.resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False,
                                 asset_selection=[AssetKey(k) for k in PREFIX])
    assert res.success, [e.step_key for e in res.all_events if e.is_step_failure]
    from regime_assets.resources.settings import RegimeSettings

    settings = RegimeSettings(spec_path=str(TINY_SPEC), home=str(home))
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        t = {name: pl.from_arrow(conn.sql(f"select * from main.{name}").to_arrow_table()) for name in PREFIX}
    return settings, t


def test_labeled_samples_equal_build_labels_on_the_whole_features(warehouse):
    from regime_assets.core.labels import build_labels

    settings, t = warehouse
    whole = build_labels(t["features"], t["regime_labels"], settings.spec.labels, t["raw_prices"])
    assert t["labeled_samples"].height > 1000
    assert t["labeled_samples"]["label"].null_count() > 0  # the last horizon days are there, unlabelled
    assert_frame_equal(t["labeled_samples"], whole)


def test_archive_from_filtered_rows_equals_the_whole_call(warehouse):
    from regime_assets.assets.samples import event_archive_rows
    from regime_assets.core.archive import build_archive
    from regime_assets.spec import EventSpec

    settings, t = warehouse
    lab = t["labeled_samples"]
    lo, hi = lab["date"].min(), lab["date"].max()
    events = [*settings.spec.events,
              EventSpec(id="inside", start=lo + dt.timedelta(days=40), end=lo + dt.timedelta(days=60), regime="crash",
                        weight=0.5),
              EventSpec(id="at_the_end", start=hi - dt.timedelta(days=3), end=hi, regime="crash", weight=0.5),
              EventSpec(id="before", start=dt.date(1900, 1, 1), end=dt.date(1900, 2, 1), regime="crash", weight=0.5)]
    rows, summary = event_archive_rows(settings, events)
    whole_rows, whole_summary = build_archive(lab, events)
    assert rows.height > 0 and set(summary["status"]) >= {"ok", "outside data range", "no labelled rows"}
    assert_frame_equal(rows, whole_rows)
    assert_frame_equal(summary, whole_summary)
    # the stored archive (through the IO manager, append-only) holds the seeded events' rows of the whole call
    seeded, _ = build_archive(lab, list(settings.spec.events))
    key = ["event_id", "symbol", "date"]
    assert_frame_equal(t["rare_event_archive"].sort(key), seeded.sort(key), check_column_order=False)


def test_training_set_from_the_window_rows_equals_the_whole_call(warehouse):
    from regime_assets.assets.samples import window_rows
    from regime_assets.core.training_set import build_training_set

    settings, t = warehouse
    spec = settings.spec
    window, calendar = window_rows(settings)
    assert 0 < window.height < t["labeled_samples"].height
    args = (t["rare_event_archive"], t["error_replay_buffer"], spec.training_set, spec.labels.horizon)
    part, info = build_training_set(window, *args, calendar=calendar)
    whole, whole_info = build_training_set(t["labeled_samples"], *args)
    assert_frame_equal(part, whole)
    assert_frame_equal(t["training_set"], whole)
    assert {k: v for k, v in info.items() if not isinstance(v, pl.DataFrame)} == {
        k: v for k, v in whole_info.items() if not isinstance(v, pl.DataFrame)}
    for k in ("counts", "dropped"):
        assert_frame_equal(info[k], whole_info[k])


def test_drift_windows_from_the_recent_rows_equal_the_whole_call(warehouse):
    from regime_assets.assets.monitoring import drift_rows
    from regime_assets.core.monitoring import drift_windows

    settings, t = warehouse
    recent = drift_rows(settings)
    assert 0 < recent.height < t["labeled_samples"].height
    part = drift_windows(recent, settings.spec)
    whole = drift_windows(t["labeled_samples"], settings.spec)
    assert part.describe() == whole.describe()
    assert part.reference.height > 0 and part.current.height > 0
    assert_frame_equal(part.reference, whole.reference)
    assert_frame_equal(part.current, whole.current)


def test_signal_rows_from_the_last_dates_equal_the_whole_call(warehouse):
    from regime_assets.assets.signals import signal_feature_rows
    from regime_assets.core.signals import signal_dates, signal_rows

    settings, t = warehouse
    n = settings.spec.signals.n_dates
    dates, rows = signal_feature_rows(settings, n)
    assert dates == signal_dates(t["features"], n) and len(dates) == n
    assert_frame_equal(rows, signal_rows(t["features"], dates))


@pytest.mark.parametrize("shuffled_keys", [False, True])
def test_stored_labels_keep_the_features_order_and_drop_rows_without_a_regime(warehouse, shuffled_keys):
    """The positional join (keys read in the table's order) and the keyed fallback give build_labels' frame, also
    when some features rows have no regime."""
    from regime_assets.assets.samples import _store_labeled
    from regime_assets.core.labels import build_labels, label_columns

    settings, t = warehouse
    feats, prices = t["features"], t["raw_prices"]
    regimes = t["regime_labels"].filter(pl.col("date") != pl.col("date").min())  # a date without regimes
    want = build_labels(feats, regimes, settings.spec.labels, prices)
    assert 0 < want.height < feats.height
    conn = duckdb.connect()
    conn.execute("create table main.features as select * from feats")
    keys = conn.sql("select symbol, date from main.features").pl()
    if shuffled_keys:
        keys = keys.sample(fraction=1.0, shuffle=True, seed=1)
    _store_labeled(conn, keys, label_columns(keys, regimes, settings.spec.labels, prices))
    got = pl.from_arrow(conn.sql("select * from main.labeled_samples").to_arrow_table())
    assert_frame_equal(got, want)
