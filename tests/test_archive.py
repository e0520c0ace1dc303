import datetime as dt
import time

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regime_assets.core.archive import (
    ARCHIVE_KEY,
    STATUS_NO_LABELS,
    STATUS_OK,
    STATUS_OUTSIDE,
    ArchiveError,
    build_archive,
    event_id_for,
    events_overlap,
    merge_append_only,
)
from _panels import labeled_panel
from regime_assets.spec import DEFAULT_EVENTS, EventSpec


def _labeled(n_symbols: int = 3, start: dt.date = dt.date(2007, 1, 1), end: dt.date = dt.date(2010, 12, 31),
             horizon: int = 5, seed: int = 0) -> pl.DataFrame:
    return labeled_panel(n_symbols, start, end, horizon, seed)


def _ev(eid: str, s: dt.date, e: dt.date, regime: str = "crash", w: float = 0.2) -> EventSpec:
    return EventSpec(id=eid, start=s, end=e, regime=regime, weight=w)


def test_counts_match_direct_filter_and_columns():
    lab = _labeled()
    events = [e for e in DEFAULT_EVENTS if e.start.year <= 2010]
    arch, summ = build_archive(lab, events)
    assert arch.columns == ["event_id", "event_regime", "event_weight", *lab.columns]
    assert arch.select(ARCHIVE_KEY).is_duplicated().sum() == 0
    assert arch.get_column("label").null_count() == 0
    for e in events:
        direct = lab.filter(pl.col("label").is_not_null() & (pl.col("date") >= e.start) & (pl.col("date") <= e.end))
        got = arch.filter(pl.col("event_id") == e.id)
        assert got.height == direct.height > 0
        assert got.drop("event_id", "event_regime", "event_weight").sort("symbol", "date").equals(
            direct.sort("symbol", "date"))
        assert set(got.get_column("event_regime")) == {e.regime}
        assert set(got.get_column("event_weight")) == {e.weight}
        row = summ.filter(pl.col("event_id") == e.id).row(0, named=True)
        assert row["rows"] == direct.height
        assert row["symbols"] == direct.get_column("symbol").n_unique()
        assert row["status"] == STATUS_OK
        assert (row["start"], row["end"], row["regime"], row["weight"]) == (e.start, e.end, e.regime, e.weight)


def test_event_outside_data_range_is_listed_with_zero_rows():
    lab = _labeled(end=dt.date(2009, 12, 31))
    arch, summ = build_archive(lab, DEFAULT_EVENTS)
    assert summ.get_column("event_id").to_list() == [e.id for e in DEFAULT_EVENTS]
    later = summ.filter(pl.col("start") > dt.date(2010, 1, 1))
    assert later.height == 7
    assert set(later.get_column("status")) == {STATUS_OUTSIDE}
    assert later.get_column("rows").sum() == 0 and later.get_column("symbols").sum() == 0
    assert set(arch.get_column("event_id")) == {"2008_crash"}
    assert summ.filter(pl.col("event_id") == "2008_crash").get_column("status")[0] == STATUS_OK


def test_event_over_unlabelled_tail_says_no_labelled_rows():
    lab = _labeled(end=dt.date(2010, 12, 31), horizon=5)
    last_days = lab.get_column("date").unique().sort().tail(3)
    ev = _ev("tail", last_days[0], last_days[-1])
    arch, summ = build_archive(lab, [ev])
    assert arch.height == 0
    assert summ.row(0, named=True)["status"] == STATUS_NO_LABELS
    assert summ.row(0, named=True)["rows"] == 0


def test_partial_overlap_with_data_start_counts_rows_inside():
    lab = _labeled(start=dt.date(2008, 10, 1), end=dt.date(2009, 12, 31))
    arch, summ = build_archive(lab, [DEFAULT_EVENTS[0]])
    inside = lab.filter(pl.col("date") <= dt.date(2009, 3, 31)).height
    assert arch.height == inside and summ.get_column("status")[0] == STATUS_OK


def test_overlapping_events_each_get_their_rows():
    lab = _labeled()
    a = _ev("a", dt.date(2008, 1, 1), dt.date(2008, 3, 31))
    b = _ev("b", dt.date(2008, 3, 1), dt.date(2008, 4, 30), regime="high_vol", w=0.05)
    arch, _ = build_archive(lab, [a, b])
    march = lab.filter((pl.col("date") >= dt.date(2008, 3, 1)) & (pl.col("date") <= dt.date(2008, 3, 31))).height
    both = arch.group_by("symbol", "date").len().filter(pl.col("len") == 2).height
    assert both == march > 0


def test_no_events_and_bad_inputs():
    lab = _labeled(n_symbols=2, start=dt.date(2008, 1, 1), end=dt.date(2008, 6, 30))
    arch, summ = build_archive(lab, [])
    assert arch.height == 0 and summ.height == 0 and arch.columns[:3] == ["event_id", "event_regime", "event_weight"]
    dup = pl.concat([lab, lab.filter(pl.col("date") == dt.date(2008, 2, 4)).head(1)])
    with pytest.raises(ArchiveError, match="S00.*2008-02-04"):
        build_archive(dup, [_ev("feb", dt.date(2008, 2, 1), dt.date(2008, 2, 29))])
    with pytest.raises(ArchiveError, match="label"):
        build_archive(lab.drop("label"), DEFAULT_EVENTS)
    e = _ev("x", dt.date(2008, 1, 1), dt.date(2008, 2, 1))
    with pytest.raises(ArchiveError, match="'x'"):
        build_archive(lab, [e, e])


def test_merge_append_only_is_idempotent():
    lab = _labeled(end=dt.date(2011, 12, 31))
    full, _ = build_archive(lab, DEFAULT_EVENTS[:2])
    first, _ = build_archive(lab, DEFAULT_EVENTS[:1])
    assert merge_append_only(None, first, ARCHIVE_KEY).equals(first)
    add = merge_append_only(first, full, ARCHIVE_KEY)
    assert add.height == full.height - first.height > 0
    assert set(add.get_column("event_id")) == {DEFAULT_EVENTS[1].id}
    stored = pl.concat([first, add])
    assert merge_append_only(stored, full, ARCHIVE_KEY).height == 0
    assert stored.select(ARCHIVE_KEY).is_duplicated().sum() == 0
    assert stored.height == full.height


def test_merge_append_only_dedups_within_new_and_keeps_existing_values():
    new = pl.DataFrame({"k": [1, 2, 2, 3], "v": ["a", "b", "c", "d"]})
    existing = pl.DataFrame({"k": [3], "v": ["old"]})
    out = merge_append_only(existing, new, ["k"])
    assert out.to_dict(as_series=False) == {"k": [1, 2], "v": ["a", "b"]}


def test_merge_append_only_errors():
    new = pl.DataFrame({"k": [1, None], "v": ["a", "b"]})
    with pytest.raises(ArchiveError, match="null"):
        merge_append_only(None, new, ["k"])
    with pytest.raises(ArchiveError, match="missing key"):
        merge_append_only(None, new, ["z"])
    with pytest.raises(ArchiveError, match="'k'"):
        merge_append_only(pl.DataFrame({"k": ["1"]}), pl.DataFrame({"k": [1]}), ["k"])


def test_events_overlap_inclusive_bounds():
    evs = [_ev("a", dt.date(2020, 3, 1), dt.date(2020, 3, 10))]
    assert events_overlap(dt.date(2020, 3, 10), dt.date(2020, 3, 20), evs)
    assert events_overlap(dt.date(2020, 2, 1), dt.date(2020, 3, 1), evs)
    assert not events_overlap(dt.date(2020, 3, 11), dt.date(2020, 3, 20), evs)
    assert not events_overlap(dt.date(2020, 2, 1), dt.date(2020, 2, 29), evs)
    assert not events_overlap(dt.date(2020, 2, 1), dt.date(2020, 2, 29), [])
    frame = pl.DataFrame({"event_id": ["a"], "start": [dt.date(2020, 3, 1)], "end": [dt.date(2020, 3, 10)]})
    assert events_overlap(dt.date(2020, 3, 5), dt.date(2020, 3, 5), frame)
    assert events_overlap("2020-03-05", "2020-03-06", [{"start": "2020-03-01", "end": "2020-03-10"}])
    with pytest.raises(ArchiveError, match="after"):
        events_overlap(dt.date(2020, 3, 5), dt.date(2020, 3, 1), evs)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 60), st.integers(0, 20), st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)),
                                                        max_size=4))
def test_events_overlap_matches_day_sets(s, length, raw):
    base = dt.date(2021, 1, 1)
    day = lambda i: base + dt.timedelta(days=i)  # noqa: E731
    evs = [(f"e{i}", day(a), day(a + n)) for i, (a, n) in enumerate(raw)]
    mine = set(range(s, s + length + 1))
    expected = any(mine & set(range(a, a + n + 1)) for a, n in raw)
    assert events_overlap(day(s), day(s + length), evs) == expected


def test_event_id_for_is_stable():
    a = event_id_for(dt.date(2020, 2, 24), "crash")
    assert a == "captured_2020-02-24_crash"  # no end date: a growing event keeps its id
    assert event_id_for(dt.date(2020, 2, 24), "crash") == a
    assert event_id_for(dt.date(2020, 2, 25), "crash") != a
    with pytest.raises(ArchiveError, match="regime"):
        event_id_for(dt.date(2020, 2, 24), "panic")


def test_bundled_size_is_fast():
    lab = _labeled(n_symbols=20, start=dt.date(1990, 1, 1), end=dt.date(2022, 12, 31))
    assert lab.height > 160_000
    t = time.perf_counter()
    arch, summ = build_archive(lab, DEFAULT_EVENTS)
    elapsed = time.perf_counter() - t
    assert arch.height == summ.get_column("rows").sum() > 0
    assert elapsed < 2.0


def test_append_only_table_gains_new_columns_and_keeps_old_rows():
    """new_rare_events written before events could grow (key event_id) then with extents (key event_id, end)."""
    import duckdb

    from regime_assets.resources.warehouse import write_table

    con = duckdb.connect()
    old = pl.DataFrame({"event_id": ["a"], "start": [dt.date(2020, 1, 1)], "end": [dt.date(2020, 1, 5)]})
    assert write_table(con, "main", "ev", old, ["event_id"]) == 1
    grown = pl.DataFrame({"event_id": ["a", "a"], "start": [dt.date(2020, 1, 1)] * 2,
                          "end": [dt.date(2020, 1, 5), dt.date(2020, 1, 9)], "extent_days": [5, 9]})
    assert write_table(con, "main", "ev", grown, ["event_id", "end"]) == 1  # the stored extent is not repeated
    assert write_table(con, "main", "ev", grown, ["event_id", "end"]) == 0
    rows = con.sql("select event_id, \"end\", extent_days from ev order by \"end\"").fetchall()
    assert rows == [("a", dt.date(2020, 1, 5), None), ("a", dt.date(2020, 1, 9), 9)]
