"""The hybrid-memory training set: rolling window + rare-event archive + error replay, split by date.

* ``as_of`` = ``training_set.as_of`` or the last date with a non-null label. Nothing dated after ``as_of`` is used.
* Trading days = the unique dates of labeled_samples (and of the archive/replay rows), ``horizon`` = the label
  horizon in trading days.
* Window rows: labelled rows with date in ``(as_of - window_years, as_of]``.
* Validation block: window rows with date in ``(as_of - validation_months, as_of]`` (window rows only).
* Purge: the ``horizon`` trading days before the validation start never train, so every training label window
  ``[t, t + horizon]`` ends before the validation start; hence also ``t + horizon <= as_of`` for every train row.
* Embargo: the ``embargo_days`` trading days after the validation end never train (they are after ``as_of`` and
  so excluded anyway; they are reported separately).
* Archive and replay rows enter the train split only, and only when their date is a training date (before the
  purge); rows in the validation block, purge, embargo or after ``as_of`` are dropped and counted in
  ``summary["dropped"]``. Archive rows are not limited to the window: old events are the point of the archive.
* A symbol-day present as a window row and as archive (or replay) row is kept once per source: the archive copy
  carries ``event_id``/``event_weight`` and the duplication is the intended extra emphasis on rare events.
* Unlabelled rows never enter. Output: the labeled columns + ``source, split, event_id, event_weight``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from regime_assets.core.splits import HoldoutBounds, holdout_bounds, months_before, years_before
from regime_assets.spec import CLASSES, REGIMES, TrainingSetSpec

SOURCES = ("window", "archive", "replay")
SPLITS = ("train", "validation")
ZONES = ("train", "purge", "validation", "embargo", "after_as_of")
REQUIRED = ("symbol", "date", "regime", "label")


class TrainingSetError(ValueError):
    """Inputs the training set cannot use; the message names what is wrong."""


def _check_labeled(labeled: pl.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in labeled.columns]
    if missing:
        raise TrainingSetError(f"training set: labeled_samples is missing columns {missing}")
    if labeled.schema["date"] != pl.Date:
        raise TrainingSetError(f"training set: labeled_samples.date must be pl.Date, got {labeled.schema['date']}")
    clash = [c for c in ("source", "split", "event_id", "event_weight") if c in labeled.columns]
    if clash:
        raise TrainingSetError(f"training set: labeled_samples already has columns {clash}")


def _check_unique(df: pl.DataFrame, name: str) -> None:
    dup = df.select("symbol", "date").is_duplicated()
    if dup.any():
        sym, day = df.filter(dup).select("symbol", "date").row(0)
        raise TrainingSetError(f"training set: {name} has duplicate rows for symbol {sym} on {day}")


def _check_values(df: pl.DataFrame, name: str) -> None:
    bad = df.filter(pl.col("regime").is_null() | ~pl.col("regime").is_in(list(REGIMES)))
    if bad.height:
        sym, day, reg = bad.select("symbol", "date", "regime").row(0)
        raise TrainingSetError(f"training set: {name} has regime {reg!r} for symbol {sym} on {day}; "
                               f"expected one of {list(REGIMES)}")
    bad = df.filter(pl.col("label").is_not_null() & ~pl.col("label").is_in(list(CLASSES)))
    if bad.height:
        sym, day, lab = bad.select("symbol", "date", "label").row(0)
        raise TrainingSetError(f"training set: {name} has label {lab!r} for symbol {sym} on {day}; "
                               f"expected one of {list(CLASSES)}")


def _align(frame: pl.DataFrame, schema: pl.Schema, name: str, extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """``frame`` restricted to the labeled columns (cast to their dtypes) + ``extra``, labelled rows only."""
    missing = [c for c in [*schema.names(), *extra] if c not in frame.columns]
    if missing:
        raise TrainingSetError(f"training set: {name} is missing columns {missing}")
    try:
        out = frame.select([pl.col(c).cast(t) for c, t in schema.items()] + [pl.col(c) for c in extra])
    except pl.exceptions.PolarsError as err:
        raise TrainingSetError(f"training set: {name} columns do not match labeled_samples: {err}") from None
    out = out.filter(pl.col("label").is_not_null())
    _check_values(out, name)
    return out


def _zone(b: HoldoutBounds, as_of: dt.date) -> pl.Expr:
    d = pl.col("date")
    zone = pl.when(d > as_of).then(pl.lit("after_as_of"))
    if b.embargo_end is not None:
        zone = pl.when(d > b.validation_end).then(
            pl.when(d <= b.embargo_end).then(pl.lit("embargo")).otherwise(pl.lit("after_as_of")))
    zone = zone.when(d >= b.validation_start).then(pl.lit("validation"))
    if b.train_end is not None:
        zone = zone.when(d <= b.train_end).then(pl.lit("train"))
    return zone.otherwise(pl.lit("purge"))


def labelled_calendar(labeled: pl.DataFrame) -> pl.DataFrame:
    """``date, labelled``: every distinct date of labeled_samples and whether any row of it has a label."""
    return (labeled.lazy().group_by("date").agg(pl.col("label").is_not_null().any().alias("labelled"))
            .sort("date").collect())


def window_bounds(calendar: pl.DataFrame, tspec: TrainingSetSpec) -> tuple[dt.date, dt.date]:
    """``(as_of, window_start)`` from the calendar (``labelled_calendar``): window rows have dates in
    ``(window_start, as_of]``."""
    lab_dates = calendar.filter(pl.col("labelled")).get_column("date")
    if lab_dates.len() == 0:
        raise TrainingSetError("training set: labeled_samples has no labelled rows")
    as_of = tspec.as_of or lab_dates.max()
    window_start = years_before(as_of, tspec.window_years)
    if months_before(as_of, tspec.validation_months) <= window_start:
        raise TrainingSetError(f"training set: validation_months={tspec.validation_months} covers the whole "
                               f"window of {tspec.window_years} years; nothing is left to train on")
    return as_of, window_start


def build_training_set(labeled: pl.DataFrame, archive: pl.DataFrame | None, replay: pl.DataFrame | None,
                       tspec: TrainingSetSpec, horizon: int,
                       calendar: pl.DataFrame | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(training_set, summary); see the module doc for the rules.

    ``calendar``: ``labelled_calendar`` of the whole labeled_samples table when ``labeled`` holds only its
    window rows (read with ``window_bounds``' dates); default the calendar of ``labeled`` itself. The trading
    days and the as-of date come from it, so a pre-filtered call gives the same result as a call on every row.

    summary: ``as_of, window_start`` (exclusive), ``validation_start, validation_end, purge_start, purge_end,
    train_end, embargo_end, horizon, embargo_days, rows`` (per split), ``rows_by_source``, ``purged_rows``,
    ``embargoed_rows`` (all sources), ``counts`` (frame: source, regime, split, rows; every combination) and
    ``dropped`` (frame: source, zone, rows: labelled rows kept out, by where their date falls; window rows can
    only fall in the purge, archive/replay rows also in validation, embargo or after_as_of).
    """
    _check_labeled(labeled)
    if horizon < 0:
        raise TrainingSetError(f"training set: horizon must be >= 0, got {horizon}")
    schema = labeled.schema
    labelled = pl.col("label").is_not_null()
    # never copy every labelled row of a large panel: only dates here, the window's rows below
    cal = labelled_calendar(labeled) if calendar is None else calendar
    as_of, window_start = window_bounds(cal, tspec)

    extras: dict[str, pl.DataFrame] = {}
    if tspec.use_archive and archive is not None:
        arch = _align(archive, schema, "rare_event_archive", ("event_id", "event_weight"))
        if arch.get_column("event_id").null_count() or arch.get_column("event_weight").null_count():
            raise TrainingSetError("training set: rare_event_archive has rows without event_id/event_weight")
        extras["archive"] = arch.with_columns(pl.col("event_id").cast(pl.Utf8),
                                              pl.col("event_weight").cast(pl.Float64))
    if tspec.use_replay and replay is not None:
        extras["replay"] = _align(replay, schema, "error_replay_buffer").with_columns(
            pl.lit(None, dtype=pl.Utf8).alias("event_id"), pl.lit(None, dtype=pl.Float64).alias("event_weight"))

    all_dates = pl.concat([cal.get_column("date"),
                           *[f.get_column("date").unique() for f in extras.values()]]).unique()
    if (cal.filter(pl.col("labelled")).get_column("date") <= as_of).sum() == 0:
        raise TrainingSetError(f"training set: as_of {as_of} is before the first labelled date")
    b = holdout_bounds(all_dates, as_of, tspec.validation_months, horizon=horizon, embargo=tspec.embargo_days)
    zone = _zone(b, as_of)

    window = labeled.filter(labelled & (pl.col("date") > window_start) & (pl.col("date") <= as_of)).with_columns(
        zone.alias("_zone"))
    dropped = [window.filter(pl.col("_zone") == "purge").group_by("_zone").len()
               .select(pl.lit("window").alias("source"), pl.col("_zone").alias("zone"),
                       pl.col("len").cast(pl.Int64).alias("rows"))]
    window = window.filter(pl.col("_zone").is_in(["train", "validation"])).sort("symbol", "date")
    _check_unique(window, "labeled_samples")
    _check_values(window, "labeled_samples")
    window = (
        window
        .select(
            *schema.names(),
            pl.lit("window").alias("source"),
            pl.col("_zone").alias("split"),
            pl.lit(None, dtype=pl.Utf8).alias("event_id"),
            pl.lit(None, dtype=pl.Float64).alias("event_weight"),
        )
    )
    parts = [window]
    for src, frame in extras.items():
        z = frame.with_columns(zone.alias("_zone"))
        dropped.append(z.filter(pl.col("_zone") != "train").group_by("_zone").len()
                       .select(pl.lit(src).alias("source"), pl.col("_zone").alias("zone"),
                               pl.col("len").cast(pl.Int64).alias("rows")))
        keep = z.filter(pl.col("_zone") == "train")
        keep = keep.sort("event_id", "symbol", "date") if src == "archive" else keep.sort("symbol", "date")
        parts.append(keep.select(*schema.names(), pl.lit(src).alias("source"), pl.lit("train").alias("split"),
                                 "event_id", "event_weight"))
    out = pl.concat(parts, how="vertical")

    grid = (pl.DataFrame({"source": list(SOURCES)})
            .join(pl.DataFrame({"regime": list(REGIMES)}), how="cross")
            .join(pl.DataFrame({"split": list(SPLITS)}), how="cross"))
    counts = (grid.join(out.group_by("source", "regime", "split").len(), on=["source", "regime", "split"],
                        how="left")
              .select("source", "regime", "split", pl.col("len").fill_null(0).cast(pl.Int64).alias("rows")))
    dropped_df = pl.concat(dropped).sort(pl.col("source").replace_strict(list(SOURCES), list(range(3))),
                                         pl.col("zone").replace_strict(list(ZONES), list(range(5))))
    summary = {
        "as_of": as_of,
        "window_start": window_start,
        "validation_start": b.validation_start,
        "validation_end": b.validation_end,
        "purge_start": b.purge_start,
        "purge_end": b.purge_end,
        "train_end": b.train_end,
        "embargo_end": b.embargo_end,
        "horizon": int(horizon),
        "embargo_days": int(tspec.embargo_days),
        "rows": {s: int(out.filter(pl.col("split") == s).height) for s in SPLITS},
        "rows_by_source": {s: int(out.filter(pl.col("source") == s).height) for s in SOURCES},
        "purged_rows": int(dropped_df.filter(pl.col("zone") == "purge").get_column("rows").sum()),
        "embargoed_rows": int(dropped_df.filter(pl.col("zone") == "embargo").get_column("rows").sum()),
        "counts": counts,
        "dropped": dropped_df,
    }
    return out, summary


def regime_validation_sets(training_set: pl.DataFrame,
                           min_rows: int) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """The validation rows split by regime (all five keys, possibly empty frames) + a summary frame
    ``regime, rows, flagged, reason``: a regime with fewer than ``min_rows`` rows is flagged, never dropped."""
    missing = [c for c in ("split", "regime") if c not in training_set.columns]
    if missing:
        raise TrainingSetError(f"regime validation sets: training_set is missing columns {missing}")
    if min_rows < 1:
        raise TrainingSetError(f"regime validation sets: min_rows must be >= 1, got {min_rows}")
    val = training_set.filter(pl.col("split") == "validation")
    sets = {r: val.filter(pl.col("regime") == r) for r in REGIMES}
    rows = []
    for r, f in sets.items():
        n = f.height
        if n == 0:
            reason = "no validation rows"
        elif n < min_rows:
            reason = f"{n} rows < min_rows {min_rows}"
        else:
            reason = "ok"
        rows.append({"regime": r, "rows": n, "flagged": n < min_rows, "reason": reason})
    summary = pl.DataFrame(rows, schema={"regime": pl.Utf8, "rows": pl.Int64, "flagged": pl.Boolean,
                                         "reason": pl.Utf8})
    return sets, summary
