import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regime_assets.core.splits import (
    PurgedWalkForward,
    SplitError,
    holdout_bounds,
    holdout_split,
    months_before,
    years_before,
)

BASE = dt.date(2010, 1, 4)


def _panel(day_offsets: list[int], n_symbols: int, seed: int) -> pl.Series:
    """A shuffled panel: every trading day present for 1..n_symbols symbols."""
    rng = np.random.default_rng(seed)
    days = sorted({BASE + dt.timedelta(days=int(o)) for o in day_offsets})
    reps = rng.integers(1, n_symbols + 1, size=len(days))
    dates = [d for d, r in zip(days, reps) for _ in range(r)]
    order = rng.permutation(len(dates))
    return pl.Series("date", [dates[i] for i in order], dtype=pl.Date)


def _business_panel(start: dt.date, end: dt.date, n_symbols: int = 3) -> pl.Series:
    days = pl.date_range(start, end, "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    return pl.Series("date", [d for d in days.to_list() for _ in range(n_symbols)], dtype=pl.Date)


panels = st.builds(
    _panel,
    st.lists(st.integers(0, 400), min_size=12, max_size=80),
    st.integers(1, 4),
    st.integers(0, 10_000),
)


@settings(max_examples=80, deadline=None)
@given(panels, st.integers(0, 8), st.integers(0, 8), st.integers(1, 5), st.booleans())
def test_purged_splits_properties(dates, horizon, embargo, n, allow_after):
    days = sorted(set(dates.to_list()))
    k = n if allow_after else n + 1
    if len(days) < k:
        with pytest.raises(SplitError):
            PurgedWalkForward.n_blocks(dates, n, horizon, embargo, allow_after=allow_after)
        return
    cv = PurgedWalkForward.n_blocks(dates, n, horizon, embargo, allow_after=allow_after)
    idx = {d: i for i, d in enumerate(days)}
    pos = np.array([idx[d] for d in dates.to_list()])
    folds = list(cv.split(dates))
    assert len(folds) == n == cv.n_splits
    tested = np.zeros(len(dates), dtype=int)
    prev_hi = -1
    for train, test in folds:
        assert test.size > 0
        assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
        assert not set(train.tolist()) & set(test.tolist())
        tested[test] += 1
        lo, hi = pos[test].min(), pos[test].max()
        # the test block is a contiguous run of trading days, all its rows included
        assert set(np.flatnonzero((pos >= lo) & (pos <= hi)).tolist()) == set(test.tolist())
        assert lo > prev_hi  # folds ordered, blocks disjoint
        prev_hi = hi
        tp = pos[train]
        before, after = tp[tp < lo], tp[tp > hi]
        assert np.all(before + horizon < lo)  # no training label window reaches the test block
        if allow_after:
            assert np.all(after > hi + embargo)
        else:
            assert after.size == 0
        # nothing else is left out: train = every row outside test, purge and embargo
        expected = (pos < lo - horizon) | ((pos > hi + embargo) if allow_after else False)
        assert set(train.tolist()) == set(np.flatnonzero(expected).tolist())
    assert tested.max() <= 1
    if allow_after:
        assert tested.min() == 1  # k-fold style: every date tested exactly once
    else:
        first_block = pos < pos[folds[0][1]].min()
        assert np.all(tested[~first_block] == 1) and np.all(tested[first_block] == 0)


@settings(max_examples=40, deadline=None)
@given(panels, st.integers(0, 5), st.integers(1, 30), st.integers(1, 3))
def test_train_window_limits_history(dates, horizon, window, n):
    if dates.n_unique() < n + 1:
        return
    cv = PurgedWalkForward.n_blocks(dates, n, horizon, train_window=window)
    days = sorted(set(dates.to_list()))
    idx = {d: i for i, d in enumerate(days)}
    pos = np.array([idx[d] for d in dates.to_list()])
    for train, test in cv.split(dates):
        lo = pos[test].min()
        expected = np.flatnonzero((pos < lo - horizon) & (pos >= lo - window))
        assert np.array_equal(train, expected)


def test_yearly_blocks_and_train_years():
    dates = _business_panel(dt.date(2000, 1, 1), dt.date(2009, 12, 31))
    cv = PurgedWalkForward.yearly(dates, start_year=2005, test_years=2, train_years=3, horizon=5, embargo=0)
    folds = cv.folds(dates)
    assert folds.get_column("test_start").to_list() == [dt.date(2005, 1, 3), dt.date(2007, 1, 1),
                                                        dt.date(2009, 1, 1)]
    assert folds.get_column("test_end").to_list() == [dt.date(2006, 12, 29), dt.date(2008, 12, 31),
                                                      dt.date(2009, 12, 31)]
    d = dates.to_numpy()
    for (train, test), row in zip(cv.split(dates), folds.iter_rows(named=True)):
        test_dates = d[test].astype("datetime64[D]").astype(object)
        assert min(test_dates) == row["test_start"] and max(test_dates) == row["test_end"]
        train_dates = sorted(set(d[train].astype("datetime64[D]").astype(object)))
        assert train_dates[0] > years_before(row["test_start"], 3)
        assert train_dates[0] <= years_before(row["test_start"], 3) + dt.timedelta(days=4)
        # horizon 5: the last 5 trading days before the test start are purged
        all_days = sorted(set(d.astype("datetime64[D]").astype(object)))
        k = all_days.index(row["test_start"])
        assert train_dates[-1] == all_days[k - 6]
        assert row["purged_rows"] == 5 * 3 and row["train_rows"] == train.size and row["test_rows"] == test.size


def test_yearly_without_train_years_uses_all_history_and_first_fold_may_be_empty():
    dates = _business_panel(dt.date(2004, 1, 1), dt.date(2006, 12, 31), n_symbols=2)
    cv = PurgedWalkForward.yearly(dates, start_year=2004, test_years=1, train_years=None, horizon=3)
    folds = list(cv.split(dates))
    assert len(folds) == 3
    assert folds[0][0].size == 0
    d = dates.to_numpy()
    assert d[folds[2][0]].min() == d.min()


def test_splitter_errors():
    dates = _business_panel(dt.date(2020, 1, 1), dt.date(2020, 12, 31))
    with pytest.raises(SplitError, match="horizon"):
        PurgedWalkForward([(dt.date(2020, 6, 1), dt.date(2020, 6, 30))], horizon=-1)
    with pytest.raises(SplitError, match="sorted and disjoint"):
        PurgedWalkForward([(dt.date(2020, 6, 1), dt.date(2020, 6, 30)),
                           (dt.date(2020, 6, 15), dt.date(2020, 7, 30))], horizon=1)
    cv = PurgedWalkForward([(dt.date(2021, 6, 1), dt.date(2021, 6, 30))], horizon=1)
    with pytest.raises(SplitError, match="2021-06-01"):
        list(cv.split(dates))
    with pytest.raises(SplitError, match="start_year"):
        PurgedWalkForward.yearly(dates, start_year=2030, test_years=1, train_years=None, horizon=1)
    with pytest.raises(SplitError, match="null"):
        list(cv.split(pl.Series([dt.date(2020, 1, 1), None], dtype=pl.Date)))


def test_numpy_and_series_inputs_agree():
    dates = _business_panel(dt.date(2019, 1, 1), dt.date(2020, 12, 31))
    cv = PurgedWalkForward.n_blocks(dates, 4, horizon=5, embargo=5, allow_after=True)
    a = list(cv.split(dates))
    b = list(cv.split(dates.to_numpy()))
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


@settings(max_examples=60, deadline=None)
@given(panels, st.integers(0, 8), st.integers(0, 8), st.integers(1, 4), st.integers(0, 400))
def test_holdout_split_properties(dates, horizon, embargo, months, as_of_offset):
    as_of = BASE + dt.timedelta(days=as_of_offset)
    days = sorted(set(dates.to_list()))
    if as_of < days[0] or not [d for d in days if months_before(as_of, months) < d <= as_of]:
        with pytest.raises(SplitError):
            holdout_split(dates, as_of, months, horizon=horizon, embargo=embargo)
        return
    train, purge, val = holdout_split(dates, as_of, months, horizon=horizon, embargo=embargo)
    b = holdout_bounds(dates, as_of, months, horizon=horizon, embargo=embargo)
    assert not (train & purge).any() and not (train & val).any() and not (purge & val).any()
    idx = {d: i for i, d in enumerate(days)}
    dl = dates.to_list()
    pos = np.array([idx[d] for d in dl])
    cutoff = months_before(as_of, months)
    expected_val = np.array([cutoff < d <= as_of for d in dl])
    assert np.array_equal(val, expected_val)
    vstart = pos[val].min()
    assert days[vstart] == b.validation_start and max(d for d in days if d <= as_of) == b.validation_end
    assert np.array_equal(train, pos + horizon < vstart)
    assert np.array_equal(purge, (pos < vstart) & (pos >= vstart - horizon))
    assert not (np.array([d > as_of for d in dl]) & (train | purge | val)).any()
    if train.any():
        assert days[pos[train].max()] == b.train_end
    else:
        assert b.train_end is None
    if embargo and any(d > b.validation_end for d in days):
        assert b.embargo_end == days[min(idx[b.validation_end] + embargo, len(days) - 1)]


def test_holdout_by_trading_days():
    dates = _business_panel(dt.date(2021, 1, 1), dt.date(2021, 3, 31), n_symbols=2)
    train, purge, val = holdout_split(dates, dt.date(2021, 3, 31), validation_days=10, horizon=3)
    assert val.sum() == 20 and purge.sum() == 6
    assert train.sum() == dates.len() - 26
    with pytest.raises(SplitError, match="exactly one"):
        holdout_split(dates, dt.date(2021, 3, 31), 1, validation_days=10, horizon=3)


def test_calendar_helpers():
    assert months_before(dt.date(2024, 3, 31), 1) == dt.date(2024, 2, 29)
    assert months_before(dt.date(2024, 1, 15), 13) == dt.date(2022, 12, 15)
    assert years_before(dt.date(2024, 2, 29), 1) == dt.date(2023, 2, 28)
    assert years_before(dt.date(2024, 7, 1), 2.5) == dt.date(2022, 7, 1) - dt.timedelta(days=183)
