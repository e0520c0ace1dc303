"""Date coercion shared by core modules (no Dagster import)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np


def as_date(x: Any, what: str, error: type[Exception] = ValueError) -> dt.date:
    """``x`` (date, datetime, numpy datetime64 or ISO string) as a ``datetime.date``; else ``error`` naming
    ``what``."""
    if isinstance(x, np.datetime64):
        x = x.astype("datetime64[D]").item()
    if isinstance(x, dt.datetime):
        return x.date()
    if isinstance(x, dt.date):
        return x
    if isinstance(x, str):
        try:
            return dt.date.fromisoformat(x)
        except ValueError:
            pass
    raise error(f"{what} is not a date: {x!r}")
