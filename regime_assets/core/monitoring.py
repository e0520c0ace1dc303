"""The one place that chooses what the drift report compares: the recent past vs the current weeks.

* current = dates in ``(as_of - drift.current_weeks weeks, as_of]``;
* reference = the rolling window's own rows in the ``drift.reference_years`` before the current weeks,
  ``(current_start - reference_years, current_start]`` -- rows of the panel itself: archive and replay rows (a
  frame with a ``source`` column keeps ``source == 'window'`` only) never enter, so an archived crash years ago
  does not widen the reference, and the production model's training window does not set it either;
* prediction reference = the production model's predictions on the reference rows dated after its training
  window (``record['train_end']``: out of sample -- its validation block and later); when those span fewer than
  ``drift.min_null_windows`` windows, on every reference row (then in-sample, and said so).

Nothing after ``as_of`` is read. ``core/drift.py`` compares the two frames and knows nothing of dates or models.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from regime_assets.core.drift import DriftError, window_ids
from regime_assets.spec import DriftSpec, Spec

MAX_REFERENCE_ROWS = 50_000


def _date(v: Any) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v)[:10])


def select_windows(
    labeled: pl.DataFrame,
    as_of: dt.date,
    reference_start: dt.date,
    reference_end: dt.date,
    current_weeks: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(reference, current): reference = dates in [reference_start, min(reference_end, as_of)],
    current = dates in (as_of - current_weeks weeks, as_of]. Nothing after ``as_of`` is returned."""
    if "date" not in labeled.columns:
        raise DriftError("select_windows: frame has no 'date' column")
    if reference_start > reference_end:
        raise DriftError(f"select_windows: reference_start {reference_start} is after reference_end {reference_end}")
    if current_weeks < 1:
        raise DriftError(f"select_windows: current_weeks must be >= 1 (got {current_weeks})")
    ref_hi = min(reference_end, as_of)
    cur_lo = as_of - dt.timedelta(weeks=current_weeks)
    d = pl.col("date")
    reference = labeled.filter((d >= reference_start) & (d <= ref_hi))
    current = labeled.filter((d > cur_lo) & (d <= as_of))
    return reference, current


def window_dates(as_of: dt.date, dspec: DriftSpec) -> tuple[dt.date, dt.date, dt.date]:
    """``(current_start, reference_end, reference_start)`` (inclusive) of the windows as of ``as_of``:
    nothing before ``reference_start`` is read."""
    cur_start = as_of - dt.timedelta(weeks=dspec.current_weeks) + dt.timedelta(days=1)
    ref_end = cur_start - dt.timedelta(days=1)
    ref_start = ref_end - dt.timedelta(days=int(round(dspec.reference_years * 365.25))) + dt.timedelta(days=1)
    return cur_start, ref_end, ref_start


@dataclass
class DriftWindows:
    as_of: dt.date
    reference_start: dt.date  # first date the reference may hold (inclusive)
    reference_end: dt.date  # last reference date (inclusive) = the day before the current weeks begin
    current_start: dt.date  # first current date (inclusive)
    reference: pl.DataFrame
    current: pl.DataFrame
    ref_pred: np.ndarray | None = None
    cur_pred: np.ndarray | None = None
    ref_pred_dates: pl.Series | None = None
    prediction_reference: str = "no production model"
    reference_from: str = ""

    def describe(self) -> dict[str, str]:
        return {"as_of": str(self.as_of), "reference_window": f"{self.reference_start}..{self.reference_end}",
                "current_window": f"{self.current_start}..{self.as_of}", "reference_from": self.reference_from,
                "prediction_reference": self.prediction_reference}


def drift_windows(labeled: pl.DataFrame, spec: Spec, as_of: dt.date | None = None, record: dict | None = None,
                  model: Any = None, seed: int = 0) -> DriftWindows:
    """The reference and current frames (and the production model's predictions on both) as of ``as_of``
    (default: the last date of ``labeled``). See the module docstring."""
    if "date" not in labeled.columns:
        raise DriftError("drift_windows: frame has no 'date' column")
    data = labeled
    if "source" in data.columns:
        data = data.filter(pl.col("source") == "window")
    as_of = _date(as_of) or data["date"].max()
    data = data.filter(pl.col("date") <= as_of)
    dspec = spec.drift
    cur_start, ref_end, ref_start = window_dates(as_of, dspec)
    reference, current = select_windows(data, as_of, ref_start, ref_end, dspec.current_weeks)
    if reference.height > MAX_REFERENCE_ROWS:
        reference = reference.sample(MAX_REFERENCE_ROWS, seed=seed).sort("symbol", "date")
    win = DriftWindows(as_of=as_of, reference_start=ref_start, reference_end=ref_end, current_start=cur_start,
                       reference=reference, current=current,
                       reference_from=f"the rolling window's rows, the last {dspec.reference_years:g} years before "
                                      f"the current {dspec.current_weeks} weeks")
    if model is None or record is None or reference.height == 0 or current.height == 0:
        return win
    train_end = _date(record.get("train_end"))
    oos = reference.filter(pl.col("date") > train_end) if train_end is not None else reference.head(0)
    ids = window_ids(oos.get_column("date"), dspec.current_weeks) if oos.height else np.zeros(0, dtype=np.int64)
    n_win = np.unique(ids[ids >= 0]).size
    if n_win >= dspec.min_null_windows:
        rows = oos
        win.prediction_reference = (f"out of sample: {oos.height} reference rows after the model's training window "
                                    f"(ends {train_end})")
    else:
        rows = reference
        win.prediction_reference = (f"in-sample: only {n_win} reference windows after the model's training window "
                                    f"(ends {train_end}); every reference row")
    win.ref_pred = np.asarray(model.predict_proba(rows))
    win.ref_pred_dates = rows.get_column("date")
    win.cur_pred = np.asarray(model.predict_proba(current))
    return win
