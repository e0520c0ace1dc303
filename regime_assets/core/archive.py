"""The rare-event archive: labelled symbol-days inside the windows of known market events.

An archive row is a labelled sample (``label`` not null) of any symbol whose date lies within an event's
inclusive ``[start, end]``, tagged with ``event_id, event_regime, event_weight``; the key is
``(event_id, symbol, date)``. Overlapping events each get their own copy of a symbol-day. The per-event summary
lists every event, also those that yield no rows: ``status`` is ``ok``, ``outside data range`` (the event's
window does not meet the data's first..last date) or ``no labelled rows`` (it does, but every row there lacks a
label, e.g. the last ``labels.horizon`` days of the data).

The stored archive is append-only: ``merge_append_only`` returns only the rows whose key is not stored yet, so
writing its result twice adds nothing the second time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import polars as pl

from regime_assets.spec import REGIMES, EventSpec
from regime_assets.core.dates import as_date

ARCHIVE_KEY = ["event_id", "symbol", "date"]
EVENT_COLUMNS = ["event_id", "event_regime", "event_weight"]
STATUS_OK = "ok"
STATUS_OUTSIDE = "outside data range"
STATUS_NO_LABELS = "no labelled rows"
SUMMARY_SCHEMA = {
    "event_id": pl.Utf8,
    "start": pl.Date,
    "end": pl.Date,
    "regime": pl.Utf8,
    "weight": pl.Float64,
    "rows": pl.Int64,
    "symbols": pl.Int64,
    "status": pl.Utf8,
}


class ArchiveError(ValueError):
    """Inputs the archive cannot use; the message names what is wrong."""


def _check_labeled(labeled: pl.DataFrame) -> None:
    missing = [c for c in ("symbol", "date", "regime", "label") if c not in labeled.columns]
    if missing:
        raise ArchiveError(f"build_archive: labeled_samples is missing columns {missing}")
    if labeled.schema["date"] != pl.Date:
        raise ArchiveError(f"build_archive: labeled_samples.date must be pl.Date, got {labeled.schema['date']}")
    clash = [c for c in EVENT_COLUMNS if c in labeled.columns]
    if clash:
        raise ArchiveError(f"build_archive: labeled_samples already has archive columns {clash}")


def _check_unique(part: pl.DataFrame, event_id: str) -> None:
    dup = part.select("symbol", "date").is_duplicated()
    if dup.any():
        sym, day = part.filter(dup).select("symbol", "date").row(0)
        raise ArchiveError(f"build_archive: labeled_samples has duplicate rows for symbol {sym} on {day} "
                           f"(inside event {event_id})")


def _check_events(events: list[EventSpec]) -> None:
    seen: set[str] = set()
    for e in events:
        if e.id in seen:
            raise ArchiveError(f"build_archive: event id {e.id!r} appears twice")
        seen.add(e.id)


def build_archive(labeled: pl.DataFrame, events: list[EventSpec],
                  date_range: tuple[dt.date | None, dt.date | None] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(archive, summary).

    ``date_range``: the data's first and last date when ``labeled`` holds only part of labeled_samples (the rows
    inside the events' windows, read with a filter); default the dates of ``labeled`` itself. It decides the
    ``outside data range`` status, so a pre-filtered call gives the same result as a call on every row.

    archive: ``event_id, event_regime, event_weight`` + the labeled columns, sorted by event (spec order),
    symbol, date. summary: ``event_id, start, end, regime, weight, rows, symbols, status``, one row per event.
    """
    _check_labeled(labeled)
    _check_events(events)
    event_schema = {"event_id": pl.Utf8, "event_regime": pl.Utf8, "event_weight": pl.Float64}
    empty = pl.DataFrame(schema={**event_schema, **labeled.schema})
    if not events:
        return empty, pl.DataFrame(schema=SUMMARY_SCHEMA)

    if date_range is None:
        lo, hi = labeled.get_column("date").min(), labeled.get_column("date").max()
    else:
        lo, hi = date_range
    # filter each event's dates first (small) -- never copy every labelled row of a large panel
    parts: list[pl.DataFrame] = []
    summary: list[dict[str, Any]] = []
    for e in events:
        part = (labeled.filter(pl.col("date").is_between(e.start, e.end, closed="both")
                               & pl.col("label").is_not_null())
                .sort("symbol", "date"))
        _check_unique(part, e.id)
        n = part.height
        if lo is None or e.end < lo or e.start > hi:
            status = STATUS_OUTSIDE
        elif n == 0:
            status = STATUS_NO_LABELS
        else:
            status = STATUS_OK
        summary.append({"event_id": e.id, "start": e.start, "end": e.end, "regime": e.regime,
                        "weight": float(e.weight), "rows": n,
                        "symbols": part.get_column("symbol").n_unique() if n else 0, "status": status})
        if n:
            parts.append(part.select(
                pl.lit(e.id, dtype=pl.Utf8).alias("event_id"),
                pl.lit(e.regime, dtype=pl.Utf8).alias("event_regime"),
                pl.lit(float(e.weight), dtype=pl.Float64).alias("event_weight"),
                pl.all(),
            ))
    archive = pl.concat(parts, how="vertical") if parts else empty
    return archive, pl.DataFrame(summary, schema=SUMMARY_SCHEMA)


def merge_append_only(existing: pl.DataFrame | None, new: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """The rows of ``new`` whose ``key`` is not in ``existing`` (first occurrence of a key within ``new``).

    Appending the result to ``existing`` and calling again returns an empty frame.
    """
    if not key:
        raise ArchiveError("merge_append_only: key must name at least one column")
    missing = [c for c in key if c not in new.columns]
    if missing:
        raise ArchiveError(f"merge_append_only: the new rows are missing key columns {missing}")
    nulls = [c for c in key if new.get_column(c).null_count()]
    if nulls:
        raise ArchiveError(f"merge_append_only: the new rows have null values in key columns {nulls}")
    fresh = new.unique(subset=key, keep="first", maintain_order=True)
    if existing is None or existing.height == 0:
        return fresh
    missing = [c for c in key if c not in existing.columns]
    if missing:
        raise ArchiveError(f"merge_append_only: the existing rows are missing key columns {missing}")
    for c in key:
        if existing.schema[c] != new.schema[c]:
            raise ArchiveError(f"merge_append_only: key column {c!r} is {new.schema[c]} in the new rows but "
                               f"{existing.schema[c]} in the existing rows")
    return fresh.join(existing.select(key).unique(), on=key, how="anti", maintain_order="left")


def _date(x: Any, what: str) -> dt.date:
    return as_date(x, what, ArchiveError)


def _windows(events: Any) -> Iterable[tuple[dt.date, dt.date]]:
    if events is None:
        return []
    if isinstance(events, pl.DataFrame):
        if not {"start", "end"} <= set(events.columns):
            raise ArchiveError("events frame needs 'start' and 'end' columns")
        return list(events.select("start", "end").iter_rows())
    out = []
    for i, e in enumerate(events):
        if isinstance(e, dict):
            s, en = e.get("start"), e.get("end")
        elif isinstance(e, (tuple, list)):
            s, en = (e[-2], e[-1]) if len(e) >= 2 else (None, None)
        else:
            s, en = getattr(e, "start", None), getattr(e, "end", None)
        if s is None or en is None:
            raise ArchiveError(f"event #{i} has no start/end: {e!r}")
        out.append((_date(s, f"start of event #{i}"), _date(en, f"end of event #{i}")))
    return out


def events_overlap(start: dt.date, end: dt.date, events: Any) -> bool:
    """True when ``[start, end]`` shares at least one date with any event (inclusive bounds).

    ``events``: EventSpec-like objects, dicts, ``(..., start, end)`` tuples or a frame with ``start, end``.
    """
    s, e = _date(start, "start"), _date(end, "end")
    if s > e:
        raise ArchiveError(f"events_overlap: start {s} is after end {e}")
    return any(s <= we and e >= ws for ws, we in _windows(events))


def event_id_for(start: dt.date, regime: str) -> str:
    """Stable id of a captured event: ``captured_{start}_{regime}`` (ISO start date). The end is not part of it:
    an event that grows keeps its id."""
    s = _date(start, "start")
    if regime not in REGIMES:
        raise ArchiveError(f"event_id_for: regime {regime!r} is not one of {list(REGIMES)}")
    return f"captured_{s.isoformat()}_{regime}"
