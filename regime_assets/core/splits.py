"""Purged, embargoed splits by date for a panel (many symbols per date).

Trading days are the sorted unique dates of the panel; ``horizon`` and ``embargo`` count trading days. A label at
trading day ``i`` looks forward to ``i + horizon``, so its label window is ``[i, i + horizon]``.

* Purge: a training row is honest only when its label window ends before the test block starts, i.e. its trading
  day index is ``< block_start - horizon``; the ``horizon`` trading days right before a test block never train.
* Embargo (``allow_after=True``, k-fold style): rows after a test block may train, except the ``embargo`` trading
  days right after the block's end (set ``embargo >= horizon`` so no test label window reaches a training row).
  Walk-forward (the default) trains only on rows before the test block; the embargo then has no effect.
* ``train_window`` (trading days) or ``train_years`` (calendar years) bounds the training dates before a test block
  to those after ``block_start - window``; rows after the block (``allow_after``) are not windowed.

Row indices refer to the order of the ``dates`` passed to ``split``.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from regime_assets.core.dates import as_date


class SplitError(ValueError):
    """A split that cannot be built; the message names what is wrong."""


DAYS_PER_YEAR = 365.25


def _as_date(x: Any, what: str) -> dt.date:
    return as_date(x, what, SplitError)



def to_days(dates: pl.Series | np.ndarray | Sequence[Any]) -> np.ndarray:
    """The dates as a ``datetime64[D]`` array (no nulls allowed)."""
    if isinstance(dates, pl.Series):
        if dates.null_count():
            first = int(dates.is_null().arg_true()[0])
            raise SplitError(f"dates: row {first} is null ({dates.null_count()} null dates)")
        if dates.dtype == pl.Datetime or isinstance(dates.dtype, pl.Datetime):
            dates = dates.dt.date()
        elif dates.dtype != pl.Date:
            raise SplitError(f"dates must be pl.Date, got {dates.dtype}")
        return dates.to_numpy().astype("datetime64[D]")
    arr = np.asarray(dates)
    if arr.ndim != 1:
        raise SplitError(f"dates must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "M":
        out = arr.astype("datetime64[D]")
    else:
        try:
            out = arr.astype("datetime64[D]")
        except (TypeError, ValueError) as err:
            raise SplitError(f"dates cannot be read as dates: {err}") from None
    if np.isnat(out).any():
        first = int(np.flatnonzero(np.isnat(out))[0])
        raise SplitError(f"dates: row {first} is null")
    return out


def _d64(d: dt.date) -> np.datetime64:
    return np.datetime64(d, "D")


def months_before(d: dt.date, months: int) -> dt.date:
    """``d`` minus whole calendar months (the day clamped to the month's length)."""
    y, m = divmod(d.year * 12 + (d.month - 1) - int(months), 12)
    m += 1
    return dt.date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def years_before(d: dt.date, years: float) -> dt.date:
    """``d`` minus ``years``: whole years by calendar (29 Feb -> 28 Feb), the fraction as 365.25-day years."""
    whole = int(years)
    y = d.year - whole
    out = dt.date(y, d.month, min(d.day, calendar.monthrange(y, d.month)[1]))
    return out - dt.timedelta(days=round((years - whole) * DAYS_PER_YEAR))


@dataclass(frozen=True)
class PurgedWalkForward:
    """Walk-forward (or ``allow_after`` k-fold) splits by date with purge and embargo; see the module doc."""

    test_blocks: list[tuple[dt.date, dt.date]]
    horizon: int
    embargo: int = 0
    train_window: int | None = None
    train_years: float | None = None
    allow_after: bool = False
    _blocks: tuple[tuple[dt.date, dt.date], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if int(self.horizon) != self.horizon or self.horizon < 0:
            raise SplitError(f"horizon must be a whole number >= 0, got {self.horizon!r}")
        if int(self.embargo) != self.embargo or self.embargo < 0:
            raise SplitError(f"embargo must be a whole number >= 0, got {self.embargo!r}")
        if self.train_window is not None and self.train_window < 1:
            raise SplitError(f"train_window must be >= 1 trading day, got {self.train_window!r}")
        if self.train_years is not None and self.train_years <= 0:
            raise SplitError(f"train_years must be > 0, got {self.train_years!r}")
        if self.train_window is not None and self.train_years is not None:
            raise SplitError("give train_window (trading days) or train_years, not both")
        if not self.test_blocks:
            raise SplitError("test_blocks is empty")
        blocks = []
        for i, b in enumerate(self.test_blocks):
            if len(b) != 2:
                raise SplitError(f"test block #{i} must be (start, end), got {b!r}")
            s, e = _as_date(b[0], f"start of test block #{i}"), _as_date(b[1], f"end of test block #{i}")
            if s > e:
                raise SplitError(f"test block #{i}: start {s} is after end {e}")
            if blocks and s <= blocks[-1][1]:
                raise SplitError(f"test block #{i} ({s}..{e}) starts before the previous block ends "
                                 f"({blocks[-1][1]}); blocks must be sorted and disjoint")
            blocks.append((s, e))
        object.__setattr__(self, "_blocks", tuple(blocks))

    @property
    def n_splits(self) -> int:
        return len(self._blocks)

    # -- constructors ---------------------------------------------------------------------------------------
    @classmethod
    def yearly(cls, dates: pl.Series | np.ndarray, start_year: int, test_years: int,
               train_years: float | None, horizon: int, embargo: int = 0,
               allow_after: bool = False, end_year: int | None = None) -> "PurgedWalkForward":
        """Test blocks of ``test_years`` calendar years from ``start_year`` to the data's last year
        (or ``end_year``); each block is trimmed to the trading days it holds, blocks without any are left out.
        ``train_years=None`` trains on all earlier history."""
        if test_years < 1:
            raise SplitError(f"test_years must be >= 1, got {test_years}")
        days = np.unique(to_days(dates))
        if days.size == 0:
            raise SplitError("yearly: no dates")
        last_year = days[-1].astype(object).year if end_year is None else int(end_year)
        if start_year > last_year:
            raise SplitError(f"yearly: start_year {start_year} is after the last year {last_year} of the data")
        blocks = []
        for y in range(int(start_year), last_year + 1, int(test_years)):
            y_end = min(y + int(test_years) - 1, last_year)
            lo = np.searchsorted(days, _d64(dt.date(y, 1, 1)), "left")
            hi = np.searchsorted(days, _d64(dt.date(y_end, 12, 31)), "right") - 1
            if lo <= hi:
                blocks.append((days[lo].astype(object), days[hi].astype(object)))
        if not blocks:
            raise SplitError(f"yearly: no trading days from {start_year} to {last_year}")
        return cls(blocks, horizon=horizon, embargo=embargo, train_years=train_years, allow_after=allow_after)

    @classmethod
    def n_blocks(cls, dates: pl.Series | np.ndarray, n: int, horizon: int, embargo: int = 0,
                 allow_after: bool = False, train_window: int | None = None,
                 train_years: float | None = None) -> "PurgedWalkForward":
        """``n`` folds of contiguous, near-equal runs of trading days.

        With ``allow_after`` the trading days are cut into ``n`` blocks, all tested; walk-forward cuts them into
        ``n + 1`` and tests the last ``n`` so every fold has earlier dates to train on.
        """
        if n < 1:
            raise SplitError(f"n_blocks: n must be >= 1, got {n}")
        days = np.unique(to_days(dates))
        k = n if allow_after else n + 1
        if days.size < k:
            raise SplitError(f"n_blocks: {days.size} trading days cannot make {k} blocks")
        chunks = np.array_split(np.arange(days.size), k)
        blocks = [(days[c[0]].astype(object), days[c[-1]].astype(object)) for c in chunks]
        if not allow_after:
            blocks = blocks[1:]
        return cls(blocks, horizon=horizon, embargo=embargo, train_window=train_window,
                   train_years=train_years, allow_after=allow_after)

    # -- splitting ------------------------------------------------------------------------------------------
    def _masks(self, dates: pl.Series | np.ndarray) -> Iterator[dict[str, Any]]:
        d = to_days(dates)
        days = np.unique(d)
        pos = np.searchsorted(days, d)
        for i, (s, e) in enumerate(self._blocks):
            lo = int(np.searchsorted(days, _d64(s), "left"))
            hi = int(np.searchsorted(days, _d64(e), "right")) - 1
            if lo > hi:
                raise SplitError(f"test block #{i} ({s}..{e}) holds none of the panel's dates")
            test = (pos >= lo) & (pos <= hi)
            cut = lo - self.horizon
            train = pos < cut
            if self.train_window is not None:
                train &= pos >= lo - self.train_window
            elif self.train_years is not None:
                first = days[lo].astype(object)
                train &= d > _d64(years_before(first, self.train_years))
            purged = (pos >= max(cut, 0)) & (pos < lo)
            embargoed = np.zeros_like(test)
            if self.allow_after:
                after = hi + self.embargo
                train |= pos > after
                embargoed = (pos > hi) & (pos <= after)
            yield {"fold": i, "lo": lo, "hi": hi, "days": days, "train": train, "test": test,
                   "purged": purged, "embargoed": embargoed, "d": d}

    def split(self, dates: pl.Series | np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(train_idx, test_idx) per test block, in block order; a fold's train may be empty."""
        for m in self._masks(dates):
            yield np.flatnonzero(m["train"]), np.flatnonzero(m["test"])

    def folds(self, dates: pl.Series | np.ndarray) -> pl.DataFrame:
        """One row per fold: ``fold, test_start, test_end, test_rows, train_start, train_end, train_rows,
        purged_rows, embargoed_rows`` (dates are the trading days actually used)."""
        rows = []
        for m in self._masks(dates):
            td = m["d"][m["train"]]
            rows.append({
                "fold": m["fold"],
                "test_start": m["days"][m["lo"]].astype(object),
                "test_end": m["days"][m["hi"]].astype(object),
                "test_rows": int(m["test"].sum()),
                "train_start": td.min().astype(object) if td.size else None,
                "train_end": td.max().astype(object) if td.size else None,
                "train_rows": int(td.size),
                "purged_rows": int(m["purged"].sum()),
                "embargoed_rows": int(m["embargoed"].sum()),
            })
        return pl.DataFrame(rows, schema={
            "fold": pl.Int64, "test_start": pl.Date, "test_end": pl.Date, "test_rows": pl.Int64,
            "train_start": pl.Date, "train_end": pl.Date, "train_rows": pl.Int64,
            "purged_rows": pl.Int64, "embargoed_rows": pl.Int64,
        })


@dataclass(frozen=True)
class HoldoutBounds:
    """The trading days of one holdout split (None where a part holds no trading day)."""

    as_of: dt.date
    validation_start: dt.date
    validation_end: dt.date
    purge_start: dt.date | None
    purge_end: dt.date | None
    train_end: dt.date | None
    embargo_end: dt.date | None
    horizon: int
    embargo: int


def _holdout(days: np.ndarray, as_of: dt.date, validation_months: int | None, validation_days: int | None,
             horizon: int, embargo: int) -> tuple[int, int, HoldoutBounds]:
    if (validation_months is None) == (validation_days is None):
        raise SplitError("holdout: give exactly one of validation_months and validation_days")
    if horizon < 0 or embargo < 0:
        raise SplitError(f"holdout: horizon ({horizon}) and embargo ({embargo}) must be >= 0")
    if days.size == 0:
        raise SplitError("holdout: no dates")
    as_of = _as_date(as_of, "as_of")
    end = int(np.searchsorted(days, _d64(as_of), "right")) - 1
    if end < 0:
        raise SplitError(f"holdout: as_of {as_of} is before the first date {days[0]}")
    if validation_months is not None:
        if validation_months < 1:
            raise SplitError(f"holdout: validation_months must be >= 1, got {validation_months}")
        start = int(np.searchsorted(days, _d64(months_before(as_of, validation_months)), "right"))
    else:
        if validation_days is None or validation_days < 1:
            raise SplitError(f"holdout: validation_days must be >= 1, got {validation_days}")
        start = max(0, end - int(validation_days) + 1)
    if start > end:
        raise SplitError(f"holdout: the validation block ending {as_of} holds no trading day")
    day = lambda i: days[i].astype(object)  # noqa: E731
    p0 = max(start - horizon, 0)
    e_last = min(end + embargo, days.size - 1)
    bounds = HoldoutBounds(
        as_of=as_of,
        validation_start=day(start),
        validation_end=day(end),
        purge_start=day(p0) if start > p0 else None,
        purge_end=day(start - 1) if start > p0 else None,
        train_end=day(start - horizon - 1) if start - horizon - 1 >= 0 else None,
        embargo_end=day(e_last) if e_last > end else None,
        horizon=int(horizon),
        embargo=int(embargo),
    )
    return start, end, bounds


def holdout_bounds(dates: pl.Series | np.ndarray, as_of: dt.date, validation_months: int | None = None, *,
                   validation_days: int | None = None, horizon: int, embargo: int = 0) -> HoldoutBounds:
    """The dates of the single latest validation block ending at ``as_of`` (see ``holdout_split``)."""
    return _holdout(np.unique(to_days(dates)), as_of, validation_months, validation_days, horizon, embargo)[2]


def holdout_split(dates: pl.Series | np.ndarray, as_of: dt.date, validation_months: int | None = None, *,
                  validation_days: int | None = None, horizon: int,
                  embargo: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks ``(train, purge, validation)`` over ``dates`` for the latest validation block.

    Validation = trading days in ``(as_of - validation_months, as_of]`` (or the last ``validation_days`` trading
    days up to ``as_of``); purge = the ``horizon`` trading days before it; train = everything earlier, so every
    training label window ``[t, t + horizon]`` ends before the validation start (and so by ``as_of``). Rows after
    ``as_of`` (the embargo included) are in no mask.
    """
    d = to_days(dates)
    days = np.unique(d)
    start, end, _ = _holdout(days, as_of, validation_months, validation_days, horizon, embargo)
    pos = np.searchsorted(days, d)
    train = pos < start - horizon
    purge = (pos >= start - horizon) & (pos < start)
    validation = (pos >= start) & (pos <= end)
    return train, purge, validation
