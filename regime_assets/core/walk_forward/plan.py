"""Fold planning: which dates each walk-forward fold (and each leave-one-crisis-out event) trains and tests on.

The plan works on the trading-day calendar only (the unique dates of labeled_samples and the archive), never on
the rows, so it is cheap at any universe size; a fold then loads just the rows its dates name.

* Walk-forward folds: ``PurgedWalkForward.yearly`` test blocks of ``walk_forward.test_years`` calendar years from
  ``start_year`` to the end of the data. A row may train only when its trading day is ``< lo - labels.horizon``
  (its label window ends before the block starts) and, for window rows, when it is dated after
  ``first test day - train_years``. Archive rows obey the same purge and are not limited to the window.
* Leave-one-crisis-out: the event's labelled trading days are the test block; the ``horizon`` days before it are
  purged and ``max(training_set.embargo_days, horizon)`` days after it embargoed; window rows train from
  ``train_years`` before to ``train_years`` after the block.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from regime_assets.core.splits import DAYS_PER_YEAR, PurgedWalkForward, years_before
from regime_assets.spec import Spec


@dataclass(frozen=True)
class Fold:
    """One test block and the dates that may train for it (inclusive bounds; ``None`` = no such date)."""

    key: str  # "wf:<k>" or "loco:<event id>"
    fold: int  # walk-forward fold number (events: -1 - their index)
    test_start: dt.date
    test_end: dt.date
    train_start: dt.date | None  # first window date
    train_end: dt.date | None  # last trainable date before the block (after the purge)
    after_start: dt.date | None = None  # leave-one-crisis-out: first trainable date after the embargo
    after_end: dt.date | None = None  # ... and the last window date after the block
    event_id: str | None = None
    event_regime: str | None = None

    @property
    def window(self) -> tuple[str, ...]:
        """The fold's dates as text: part of the fold store key."""
        return tuple(str(x) for x in (self.key, self.test_start, self.test_end, self.train_start, self.train_end,
                                      self.after_start, self.after_end))


def _day(days: np.ndarray, i: int) -> dt.date | None:
    return days[i].astype(object) if 0 <= i < days.size else None


def years_after(d: dt.date, years: float) -> dt.date:
    whole = int(years)
    y = d.year + whole
    out = dt.date(y, d.month, min(d.day, calendar.monthrange(y, d.month)[1]))
    return out + dt.timedelta(days=round((years - whole) * DAYS_PER_YEAR))


def walk_forward_folds(days: np.ndarray, spec: Spec) -> list[Fold]:
    """The yearly folds over the sorted unique trading days ``days`` (datetime64[D])."""
    wf, horizon = spec.walk_forward, spec.labels.horizon
    splitter = PurgedWalkForward.yearly(days, wf.start_year, wf.test_years, wf.train_years, horizon,
                                        embargo=int(spec.training_set.embargo_days))
    out = []
    for k, (s, e) in enumerate(splitter.test_blocks):
        lo = int(np.searchsorted(days, np.datetime64(s, "D")))
        train_end = _day(days, lo - horizon - 1)
        first = years_before(s, wf.train_years)
        i0 = int(np.searchsorted(days, np.datetime64(first, "D"), "right"))
        train_start = _day(days, i0) if train_end is not None and i0 <= lo - horizon - 1 else None
        out.append(Fold(key=f"wf:{k}", fold=k, test_start=s, test_end=e, train_start=train_start,
                        train_end=train_end if train_start is not None or train_end is not None else None))
    return out


def loco_folds(days: np.ndarray, events: list[tuple[str, str, dt.date, dt.date]], spec: Spec) -> list[Fold]:
    """One fold per event with trading days in the data; ``events`` = (event_id, regime, start, end)."""
    wf, horizon = spec.walk_forward, spec.labels.horizon
    embargo = max(int(spec.training_set.embargo_days), horizon)
    out = []
    for j, (eid, reg, s, e) in enumerate(events):
        lo = int(np.searchsorted(days, np.datetime64(s, "D")))
        hi = int(np.searchsorted(days, np.datetime64(e, "D"), "right")) - 1
        if lo > hi:
            out.append(Fold(key=f"loco:{eid}", fold=-1 - j, test_start=s, test_end=e, train_start=None,
                            train_end=None, event_id=eid, event_regime=reg))
            continue
        bs, be = _day(days, lo), _day(days, hi)
        first = years_before(bs, wf.train_years)
        i0 = int(np.searchsorted(days, np.datetime64(first, "D"), "right"))
        train_end = _day(days, lo - horizon - 1)
        last = years_after(be, wf.train_years)
        i1 = int(np.searchsorted(days, np.datetime64(last, "D"), "right")) - 1
        a0 = hi + embargo + 1
        out.append(Fold(key=f"loco:{eid}", fold=-1 - j, test_start=bs, test_end=be,
                        train_start=_day(days, i0) if train_end is not None else None, train_end=train_end,
                        after_start=_day(days, a0) if a0 <= i1 else None,
                        after_end=_day(days, i1) if a0 <= i1 else None, event_id=eid, event_regime=reg))
    return out


def event_windows(spec: Spec, archive_events: pl.DataFrame | None) -> list[tuple[str, str, dt.date, dt.date]]:
    """(event_id, regime, start, end): the spec's events in spec order, then events only the archive knows
    (captured ones; ``archive_events`` has ``event_id, event_regime, lo, hi``)."""
    out = [(e.id, e.regime, e.start, e.end) for e in spec.events]
    known = {e.id for e in spec.events}
    if archive_events is not None and archive_events.height:
        ev = archive_events.filter(~pl.col("event_id").is_in(list(known)))
        out.extend(ev.select("event_id", "event_regime", "lo", "hi").iter_rows())
    return out
