"""The rare-event capture rule: new archive events found in recent market data, point-in-time.

Only data dated up to ``as_of`` is read. The scan window is the last ``capture.lookback_days`` trading days
(dates of ``market_context``) up to ``as_of``. Candidate windows come from three triggers:

* ``vix`` -- a run of at least ``capture.vix_days`` consecutive trading days with ``vix > capture.vix_level``
  (strict; a null VIX breaks the run). Window = the whole run.
* ``crash_share`` -- a run of consecutive dates on which the share of symbols in the ``crash`` regime is
  ``> capture.crash_share`` (strict). Window = the whole run.
* ``drift`` -- ``drift_score > capture.drift_score`` (strict). Window = the trading days of the current drift
  window, ``(as_of - drift.current_weeks weeks, as_of]``.

Runs are found on the whole history up to ``as_of`` and kept when they end inside the scan window, so a
run's start does not move as the scan window slides. Candidate windows that overlap (share a date) are merged
into one window whose trigger lists them joined by ``+`` (``vix+crash_share``). A merged window that overlaps
a seeded event (inclusive dates) is dropped. A merged window that overlaps a *captured* event (``growable``) and
ends after it **extends** that event: same ``event_id`` and start, the end moves to the window's end (status
``extended``); one that ends inside it adds nothing. So an episode that keeps going grows its event week by week
instead of being frozen at its first detection.

A new event (status ``created``) gets ``event_id = captured_{start}_{regime}`` (ISO start date; stable while the
event grows: the id never carries the end),
``weight = capture.default_weight``, ``regime`` = the most common non-normal regime among the symbol-days of
the window (ties broken by severity: crash, high_vol, recovery, low_vol; ``normal`` when there is none),
``peak_vix`` = the highest VIX and ``crash_share`` = the highest daily crash share within the window, and
``extent_days`` = its trading days (dates of ``market_context`` in ``[start, end]``). An extended event keeps its
regime and weight.

``plan_retrains`` decides which stored rows start a retraining run: a created event, and an extension whose
extent exceeds the extent of the event's last planned run by at least ``capture.regrow_days`` trading days;
``run_key = {event_id}@{extent_days}``, so one extent never starts two runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import polars as pl

from regime_assets.spec import REGIMES, CaptureSpec, DriftSpec, EventSpec
from regime_assets.core.archive import event_id_for
from regime_assets.core.dates import as_date

TRIGGERS = ("vix", "crash_share", "drift")
SEVERITY = ("crash", "high_vol", "recovery", "low_vol")
CANDIDATE_SCHEMA = {
    "event_id": pl.Utf8,
    "start": pl.Date,
    "end": pl.Date,
    "regime": pl.Utf8,
    "weight": pl.Float64,
    "trigger": pl.Utf8,
    "peak_vix": pl.Float64,
    "crash_share": pl.Float64,
    "status": pl.Utf8,
    "extent_days": pl.Int64,
}
STATUS_CREATED = "created"
STATUS_EXTENDED = "extended"


class CaptureError(ValueError):
    """Inputs the capture rule cannot use; the message names what is wrong."""


def _as_date(x: Any, what: str) -> dt.date:
    return as_date(x, f"find_candidate_events: {what}", CaptureError)



def existing_windows(existing_events: Any) -> list[tuple[str, dt.date, dt.date]]:
    """Normalise existing events to ``(id, start, end)``.

    Accepts EventSpec-like objects (``id``/``event_id``, ``start``, ``end``), dicts, ``(id, start, end)`` tuples,
    or a frame with ``event_id``/``id`` and either ``start, end`` or per-row ``date`` (an archive frame).
    """
    if existing_events is None:
        return []
    if isinstance(existing_events, pl.DataFrame):
        df = existing_events
        idc = "event_id" if "event_id" in df.columns else "id" if "id" in df.columns else None
        if idc is None:
            raise CaptureError("existing events frame needs an 'event_id' (or 'id') column")
        if {"start", "end"} <= set(df.columns):
            df = df.select(pl.col(idc).cast(pl.Utf8), "start", "end")
        elif "date" in df.columns:
            df = df.group_by(idc).agg(pl.col("date").min().alias("start"), pl.col("date").max().alias("end"))
        else:
            raise CaptureError("existing events frame needs 'start' and 'end' columns (or a 'date' column)")
        rows = df.iter_rows()
    else:
        rows = existing_events
    out = []
    for i, e in enumerate(rows):
        if isinstance(e, dict):
            eid, s, en = e.get("id", e.get("event_id")), e.get("start"), e.get("end")
        elif isinstance(e, (tuple, list)):
            if len(e) < 3:
                raise CaptureError(f"existing event #{i} must be (id, start, end), got {e!r}")
            eid, s, en = e[0], e[1], e[2]
        else:
            eid = getattr(e, "id", getattr(e, "event_id", None))
            s, en = getattr(e, "start", None), getattr(e, "end", None)
        if s is None or en is None:
            raise CaptureError(f"existing event #{i} ({eid!r}) has no start/end")
        out.append((str(eid), _as_date(s, f"start of event {eid}"), _as_date(en, f"end of event {eid}")))
    return out


def _require(df: pl.DataFrame, cols: Iterable[str], name: str) -> pl.DataFrame:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CaptureError(f"find_candidate_events: {name} is missing columns {missing}")
    if df.schema["date"] == pl.Datetime or isinstance(df.schema["date"], pl.Datetime):
        df = df.with_columns(pl.col("date").dt.date())
    elif df.schema["date"] != pl.Date:
        raise CaptureError(f"find_candidate_events: {name}.date must be a date, got {df.schema['date']}")
    return df


def _runs(daily: pl.DataFrame, flag: str, min_len: int) -> pl.DataFrame:
    """Runs of consecutive rows (sorted by date) where ``flag`` is true: start, end, n."""
    if daily.height == 0:
        return pl.DataFrame(schema={"start": pl.Date, "end": pl.Date, "n": pl.UInt32})
    f = pl.col(flag)
    return (
        daily.with_columns((f != f.shift(1)).fill_null(True).cum_sum().alias("_run"))
        .filter(f)
        .group_by("_run")
        .agg(pl.col("date").min().alias("start"), pl.col("date").max().alias("end"), pl.len().alias("n"))
        .filter(pl.col("n") >= min_len)
        .select("start", "end", pl.col("n").cast(pl.UInt32))
        .sort("start")
    )


def _merge(windows: list[tuple[dt.date, dt.date, str]]) -> list[tuple[dt.date, dt.date, list[str]]]:
    merged: list[tuple[dt.date, dt.date, list[str]]] = []
    for s, e, trig in sorted(windows):
        if merged and s <= merged[-1][1]:
            ps, pe, pt = merged[-1]
            merged[-1] = (ps, max(pe, e), pt if trig in pt else [*pt, trig])
        else:
            merged.append((s, e, [trig]))
    return [(s, e, sorted(t, key=TRIGGERS.index)) for s, e, t in merged]


def _event_regime(labels: pl.DataFrame) -> str:
    counts = labels.filter(pl.col("regime").is_in(list(SEVERITY))).group_by("regime").len()
    if counts.height == 0:
        return "normal"
    m = dict(zip(counts.get_column("regime").to_list(), counts.get_column("len").to_list()))
    return max(SEVERITY, key=lambda r: (m.get(r, 0), -SEVERITY.index(r)))


def find_candidate_events(
    market_context: pl.DataFrame,
    regime_labels: pl.DataFrame,
    drift_score: float | None,
    as_of: dt.date,
    existing_events: Any,
    cspec: CaptureSpec,
    drift_weeks: int | None = None,
    growable_events: Any = None,
) -> pl.DataFrame:
    """New and extended events: ``event_id, start, end, regime, weight, trigger, peak_vix, crash_share, status,
    extent_days``.

    ``existing_events`` are the events a window must not overlap (the seeded ones; captured ones passed here
    too are treated as fixed); ``growable_events`` the captured events a window may extend (EventSpec-like, with
    ``regime`` and ``weight``). ``drift_weeks`` is the drift window length (default
    ``DriftSpec().current_weeks``; pass ``spec.drift.current_weeks``). See the module docstring for the rule.
    """
    as_of = _as_date(as_of, "as_of")
    weeks = DriftSpec().current_weeks if drift_weeks is None else int(drift_weeks)
    mc = _require(market_context, ("date", "vix"), "market_context")
    rl = _require(regime_labels, ("symbol", "date", "regime"), "regime_labels")
    bad = sorted(set(rl.get_column("regime").drop_nulls().unique().to_list()) - set(REGIMES))
    if bad:
        raise CaptureError(f"find_candidate_events: regime_labels has unknown regimes {bad}")

    mc = (mc.filter(pl.col("date") <= as_of).select("date", pl.col("vix").cast(pl.Float64))
          .unique("date", keep="last").sort("date"))
    rl = rl.filter(pl.col("date") <= as_of).select("symbol", "date", "regime")
    empty = pl.DataFrame(schema=CANDIDATE_SCHEMA)
    if mc.height == 0:
        return empty
    scan_start = mc.get_column("date").tail(cspec.lookback_days)[0]

    daily_crash = (
        rl.filter(pl.col("regime").is_not_null())
        .group_by("date")
        .agg((pl.col("regime") == "crash").mean().alias("crash_share"))
        .sort("date")
    )

    windows: list[tuple[dt.date, dt.date, str]] = []
    vix_flag = mc.with_columns((pl.col("vix") > cspec.vix_level).fill_null(False).alias("_flag"))
    for s, e, _ in _runs(vix_flag, "_flag", cspec.vix_days).iter_rows():
        if e >= scan_start:
            windows.append((s, e, "vix"))
    crash_flag = daily_crash.with_columns((pl.col("crash_share") > cspec.crash_share).alias("_flag"))
    for s, e, _ in _runs(crash_flag, "_flag", 1).iter_rows():
        if e >= scan_start:
            windows.append((s, e, "crash_share"))
    if drift_score is not None and drift_score > cspec.drift_score:
        lo = as_of - dt.timedelta(weeks=weeks)
        days = mc.filter(pl.col("date") > lo).get_column("date")
        if days.len():
            windows.append((days.min(), days.max(), "drift"))
    if not windows:
        return empty

    grow = {eid: (xs, xe) for eid, xs, xe in existing_windows(growable_events)}
    if isinstance(growable_events, pl.DataFrame):
        grow_info = {r["event_id"]: r for r in growable_events.iter_rows(named=True)}
    else:
        grow_info = {str(_attr(e, "id", _attr(e, "event_id", ""))): e for e in (growable_events or [])}
    existing = [w for w in existing_windows(existing_events) if w[0] not in grow]
    trading = mc.get_column("date")
    rows = []
    for s, e, trig in _merge(windows):
        if any(s <= xe and e >= xs for _, xs, xe in existing):
            continue
        hits = [(xe, eid, xs) for eid, (xs, xe) in grow.items() if s <= xe and e >= xs]
        if hits:
            xe, eid, xs = max(hits)
            if e <= xe:
                continue  # inside the event as it stands: nothing new
            info = grow_info.get(eid)
            regime = _attr(info, "regime", "normal")
            weight = float(_attr(info, "weight", cspec.default_weight))
            start, status = xs, STATUS_EXTENDED
        else:
            start, status, weight = s, STATUS_CREATED, float(cspec.default_weight)
            regime = _event_regime(rl.filter((pl.col("date") >= s) & (pl.col("date") <= e)))
            eid = event_id_for(s, regime)
        in_win = (pl.col("date") >= start) & (pl.col("date") <= e)
        peak_vix = mc.filter(in_win).get_column("vix").max()
        peak_crash = daily_crash.filter(in_win).get_column("crash_share").max()
        rows.append({
            "event_id": eid,
            "start": start,
            "end": e,
            "regime": regime,
            "weight": weight,
            "trigger": "+".join(trig),
            "peak_vix": None if peak_vix is None else float(peak_vix),
            "crash_share": None if peak_crash is None else float(peak_crash),
            "status": status,
            "extent_days": int(((trading >= start) & (trading <= e)).sum()),
        })
    if not rows:
        return empty
    return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA).sort("start")


def _attr(obj: Any, name: str, default: Any) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def plan_retrains(candidates: pl.DataFrame, history: pl.DataFrame | None, regrow_days: int) -> pl.DataFrame:
    """``candidates`` + ``retrain`` (bool) and ``run_key``: a created event retrains; an extended one when its
    extent is at least ``regrow_days`` trading days beyond the extent of the event's last planned run in
    ``history`` (stored rows with ``event_id, extent_days, retrain``; rows without ``retrain`` count as planned
    at their extent). A candidate whose (event_id, extent) is already in the history plans nothing."""
    if regrow_days < 1:
        raise CaptureError(f"plan_retrains: regrow_days must be >= 1 (got {regrow_days})")
    last: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    if history is not None and history.height:
        h = history
        if "extent_days" not in h.columns:
            h = h.with_columns(((pl.col("end") - pl.col("start")).dt.total_days() + 1).alias("extent_days"))
        if "retrain" not in h.columns:
            h = h.with_columns(pl.lit(True).alias("retrain"))
        for eid, ext, planned in h.select("event_id", "extent_days", "retrain").iter_rows():
            seen.add((eid, int(ext)))
            if planned:
                last[eid] = max(last.get(eid, 0), int(ext))
    flags, keys = [], []
    for eid, ext, status in candidates.select("event_id", "extent_days", "status").iter_rows():
        key = f"{eid}@{int(ext)}"
        if (eid, int(ext)) in seen:
            go = False
        elif status == STATUS_CREATED or eid not in last:
            go = True
        else:
            go = int(ext) - last[eid] >= regrow_days
        if go:
            last[eid] = int(ext)
        seen.add((eid, int(ext)))
        flags.append(go)
        keys.append(key)
    return candidates.with_columns(pl.Series("retrain", flags, dtype=pl.Boolean),
                                   pl.Series("run_key", keys, dtype=pl.Utf8))


def as_event_specs(candidates: pl.DataFrame, as_of: dt.date | None = None) -> list[EventSpec]:
    """The candidate rows as EventSpec objects (description names the trigger and the capture date)."""
    out = []
    for row in candidates.iter_rows(named=True):
        when = f" on {as_of}" if as_of else ""
        out.append(EventSpec(id=row["event_id"], start=row["start"], end=row["end"], regime=row["regime"],
                             weight=row["weight"], description=f"captured{when} by {row['trigger']}"))
    return out
