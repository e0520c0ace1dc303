"""The windows the drift report compares: the production model's training window vs the latest weeks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from regime_assets.core.drift import select_windows
from regime_assets.spec import Spec

MAX_REFERENCE_ROWS = 50_000


def _date(v: Any) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v)[:10])


def reference_and_current(labeled: pl.DataFrame, record: dict | None, model: Any, spec: Spec,
                          as_of: dt.date | None = None, seed: int = 0):
    """(reference, current, ref_pred, cur_pred, info).

    Reference = the production model's training window (from its registry record); without a production model,
    the spec's rolling window before the current weeks. Current = the last ``drift.current_weeks`` weeks up to
    ``as_of`` (default: the last date with features). Predictions are the production model's class
    probabilities on its validation window (reference side) and on the current window.
    Nothing after ``as_of`` is read.
    """
    as_of = as_of or labeled["date"].max()
    data = labeled.filter(pl.col("date") <= as_of)
    cur_start = as_of - dt.timedelta(weeks=spec.drift.current_weeks)
    if record is not None and record.get("train_start") is not None:
        ref_start, ref_end = _date(record["train_start"]), _date(record["train_end"])
        source = f"production model {record['model_name']} {record['version']} training window"
    else:
        ref_end = cur_start
        ref_start = ref_end - dt.timedelta(days=int(round(spec.training_set.window_years * 365.25)))
        source = "no production model: the spec's rolling window before the current weeks"
    ref_end = min(ref_end, cur_start)
    if ref_start >= ref_end:
        ref_start = ref_end - dt.timedelta(days=365)
    reference, current = select_windows(data, as_of, ref_start, ref_end, spec.drift.current_weeks)
    if reference.height > MAX_REFERENCE_ROWS:
        reference = reference.sample(MAX_REFERENCE_ROWS, seed=seed).sort("symbol", "date")
    ref_pred = cur_pred = ref_pred_dates = None
    if model is not None and record is not None:
        v0, v1 = _date(record.get("validation_start")), _date(record.get("validation_end"))
        if v0 is not None and v1 is not None:
            val = data.filter(pl.col("date").is_between(v0, min(v1, as_of)))
            if val.height and current.height:
                ref_pred = np.asarray(model.predict_proba(val))
                ref_pred_dates = val.get_column("date")
                cur_pred = np.asarray(model.predict_proba(current))
    info = {"as_of": as_of, "reference_from": source, "reference_start": ref_start, "reference_end": ref_end,
            "ref_pred_dates": ref_pred_dates}
    # drift_report compares prediction shares of two windows of any size: pass the validation predictions as the
    # reference side only through the summary (the frames keep their own lengths)
    return reference, current, ref_pred, cur_pred, info
