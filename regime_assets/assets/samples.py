"""Group `samples`: features, labelled samples, the rare-event archive, the hybrid training set and its
validation sets, the regime-balanced set and the sample weights."""


import polars as pl
from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, Output, asset

from regime_assets.assets._meta import base_meta, md, num, plot_md
from regime_assets.assets.state import captured_events, production_model
from regime_assets.core import archive as archive_core
from regime_assets.rendering import plots
from regime_assets.core.features import build_features, feature_catalog
from regime_assets.core.labels import LABEL_COLUMNS, LabelError, label_columns
from regime_assets.core import replay_buffer as replay_core
from regime_assets.core.sampling import balanced_sample
from regime_assets.core.training_set import (
    REQUIRED as TRAINING_REQUIRED,
    TrainingSetError,
    build_training_set,
    regime_validation_sets as split_validation,
    window_bounds,
)
from regime_assets.core.weights import sample_weights as weigh
from regime_assets.resources.settings import RegimeSettings
from regime_assets.resources import tables
from regime_assets.resources.warehouse import APPEND_KEY, DEFAULT_SCHEMA, write_table
from regime_assets.spec import EventSpec

OWNERS = ["team:quant-research"]
GROUP = "samples"
KINDS = {"polars", "duckdb"}
LABELED = "labeled_samples"


def _features_of(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("f_")]


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse",
       description="Point-in-time features per symbol-day (returns, volatility, drawdown, moving-average gaps, "
                   "RSI, MACD, Bollinger, beta/relative strength to the index, VIX level/changes/percentile, "
                   "sector), computed in polars over all symbols at once. Columns f_*. Writes its own table "
                   "(DuckDB's buffers bounded), read by its consumers with SQL.")
def features(context: AssetExecutionContext, settings: RegimeSettings, raw_prices: pl.DataFrame,
             market_context: pl.DataFrame, sectors: pl.DataFrame) -> MaterializeResult:
    spec = settings.spec
    out = build_features(raw_prices, market_context, sectors, spec.features)
    cat = feature_catalog(spec.features, volume="volume" in raw_prices.columns)
    meta = base_meta(out.select("symbol", "date", "sector", *_features_of(out)[:8]), spec.spec_hash)
    meta.update({"rows": num(out.height), "feature_count": num(len(_features_of(out))),
                 "feature_catalog": md(cat, 400)})
    with tables.connect(settings) as conn:  # replaced in one statement, as the IO manager does
        write_table(conn, DEFAULT_SCHEMA, "features", out)
        del out
        meta = {**tables.table_metadata(conn, "features"), **meta}
    return MaterializeResult(metadata=meta)


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse", deps=["features"],
       description="Features + forward label (buy/hold/sell from the forward return over the spec's horizon) + "
                   "forward return + regime. Rows whose forward window runs past the data end have a null label "
                   "and never enter training. The label columns are computed from the prices and regimes; the "
                   "table is the stored features joined to them in the warehouse (the features never load here).")
def labeled_samples(context: AssetExecutionContext, settings: RegimeSettings, regime_labels: pl.DataFrame,
                    raw_prices: pl.DataFrame) -> MaterializeResult:
    spec = settings.spec
    with tables.connect(settings) as conn:
        cols = tables.require(conn, "features")
        clash = [c for c in LABEL_COLUMNS if c in cols]
        if clash:
            raise LabelError(f"labels: features already has columns {clash}")
        # the keys in the table's own (scan) order; the label columns come back aligned to them
        keys = tables.rows(conn, "features", cols=["symbol", "date"], order="")
        lab = label_columns(keys, regime_labels, spec.labels, raw_prices)
        _store_labeled(conn, keys, lab)
        lab = lab.drop("_row")
        del keys
        table_meta = tables.table_metadata(conn, LABELED)
    # the metadata from the label columns only (the same rows, in the table's order)
    labelled = lab.select("date", "regime", "label").filter(pl.col("label").is_not_null())
    dist = (labelled.group_by("regime", "label").len().pivot(on="label", index="regime", values="len")
            .fill_null(0).sort("regime"))
    meta = base_meta(lab.select("symbol", "date", "regime", "label", "fwd_return"), spec.spec_hash)
    meta.update({
        "rows": num(lab.height), "labelled_rows": num(labelled.height),
        "unlabelled_rows": num(lab.height - labelled.height),
        "last_labelled_date": MetadataValue.text(str(labelled["date"].max()) if labelled.height else "none"),
        "label_distribution_by_regime": md(dist),
        "horizon_days": num(spec.labels.horizon),
    })
    for cls in ("sell", "hold", "buy"):
        meta[f"share_{cls}"] = num(round(float((labelled["label"] == cls).mean() or 0.0), 4))
    return MaterializeResult(metadata={**table_meta, **meta})


def _store_labeled(conn, keys: pl.DataFrame, lab: pl.DataFrame) -> None:
    """``labeled_samples`` = the stored features + the label columns, only the rows with a regime, in the features'
    order, in one statement (a killed run leaves the previous table). The label columns are aligned to the
    features rows and attached with a positional join: nothing is sorted or hashed on the wide rows."""
    aligned = lab.drop("symbol", "date")
    if lab.height != keys.height:  # rows without a regime: aligned as nulls, filtered out below
        aligned = (pl.DataFrame({"_row": pl.int_range(keys.height, dtype=pl.UInt32, eager=True)})
                   .join(aligned, on="_row", how="left").sort("_row"))
    arrow = keys.hstack(aligned.drop("_row")).to_arrow()  # noqa: F841  (referenced by name in the SQL)
    feats, out = tables.qualified("features"), tables.qualified(LABELED)
    label_cols = ", ".join(f"l.{c}" for c in LABEL_COLUMNS)
    # the positional join needs the table scanned in the order the keys were read: checked, else a keyed join
    moved = conn.execute(f"select count(*) from (select symbol, date from {feats}) f positional join arrow l "
                         "where f.symbol is distinct from l.symbol or f.date is distinct from l.date").fetchall()[0][0]
    if moved == 0:
        conn.execute(f"create or replace table {out} as select f.*, {label_cols} from {feats} f positional join "
                     "arrow l where l.regime is not null")
    else:
        conn.execute(f"create or replace table {out} as select f.*, {label_cols} from {feats} f join arrow l "
                     "on f.symbol = l.symbol and f.date = l.date where l.regime is not null order by f.symbol, f.date")


def _event_rows(settings: RegimeSettings, events: list[EventSpec]) -> tuple[pl.DataFrame, tuple]:
    """The labelled rows of labeled_samples inside the events' windows, and the table's first and last date."""
    with tables.connect(settings) as conn:
        where, params = tables.date_ranges([(e.start, e.end) for e in events])
        rows = tables.rows(conn, LABELED, f"label is not null and {where}", params)
        span = conn.execute(f"select min(date), max(date) from {tables.qualified(LABELED)}").fetchall()[0]
    return rows, (span[0], span[1])


def event_archive_rows(settings: RegimeSettings, events: list[EventSpec]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``archive.build_archive`` of the events on labeled_samples, reading only the rows inside their windows."""
    rows, span = _event_rows(settings, events)
    return archive_core.build_archive(rows, events, date_range=span)


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse",
       metadata={APPEND_KEY: archive_core.ARCHIVE_KEY},
       deps=[LABELED],
       description="The rare-event archive: labelled samples of every symbol inside each event's dates (the "
                   "spec's seeded events plus captured ones), with event id, regime and weight. Append-only, "
                   "keyed by (event_id, symbol, date): re-materializing adds nothing already stored. Reads only "
                   "the labelled rows inside the events' dates.")
def rare_event_archive(context: AssetExecutionContext, settings: RegimeSettings) -> Output[pl.DataFrame]:
    spec = settings.spec
    captured = captured_events(settings)
    events: list[EventSpec] = list(spec.events) + captured
    rows, summary = event_archive_rows(settings, events)
    summary = summary.with_columns(
        pl.col("event_id").is_in([e.id for e in captured]).replace_strict(
            {True: "captured", False: "seeded"}, return_dtype=pl.Utf8).alias("origin"))
    meta = base_meta(rows.select("event_id", "symbol", "date", "regime", "label", "event_weight"), spec.spec_hash)
    meta["events"] = md(summary, 50)
    meta["events_in_range"] = num(int((summary["status"] == archive_core.STATUS_OK).sum()))
    meta["events_outside_range"] = num(int((summary["status"] == archive_core.STATUS_OUTSIDE).sum()))
    for r in summary.iter_rows(named=True):
        meta[f"rows_{r['event_id']}"] = num(int(r["rows"]))
    return Output(rows, metadata=meta)


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse", deps=[LABELED],
       description="Worst share (spec) by log-loss of the production model's predictions on the labelled rows "
                   "after its training window (its training window end from the registry, which is read as state "
                   "so the graph stays acyclic): out-of-sample errors, never its own training rows. Empty when "
                   "there is no production model.")
def error_replay_buffer(context: AssetExecutionContext, settings: RegimeSettings) -> Output[pl.DataFrame]:
    spec = settings.spec
    record, model = production_model(settings)
    train_end = _as_date(record.get("train_end")) if record is not None else None
    as_of = spec.training_set.as_of
    # only the rows after_training_window keeps are read; it is applied again to them (the one rule)
    where, params = "false", []
    if train_end is not None:
        where, params = "label is not null and date > ?", [train_end]
        if as_of is not None:
            where, params = where + " and date <= ?", [*params, as_of]
    with tables.connect(settings) as conn:
        recent = tables.rows(conn, LABELED, where, params)
    candidates = replay_core.after_training_window(recent, train_end, as_of)
    del recent
    if record is None:
        out = replay_core.empty_like(candidates)
        note = "no production model yet: empty buffer"
    else:
        proba = model.predict_proba(candidates) if candidates.height else None
        out = replay_core.error_replay_buffer(candidates, proba, spec.replay_buffer, train_end)
        note = f"production model {record['model_name']} {record['version']}"
    meta = base_meta(out.select([c for c in out.columns if not c.startswith("f_")]), spec.spec_hash)
    meta["source_model"] = MetadataValue.text(note)
    meta["model_training_window_end"] = MetadataValue.text(str(train_end))
    meta["candidate_rows"] = num(candidates.height)
    meta["candidate_window"] = MetadataValue.text(
        f"{candidates['date'].min()}..{candidates['date'].max()}" if candidates.height else "none")
    meta["rows"] = num(out.height)
    return Output(out, metadata=meta)


def window_rows(settings: RegimeSettings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the labelled rows of labeled_samples in the training window, the table's calendar): what
    ``build_training_set`` reads of it (``window_bounds`` gives the window from the calendar)."""
    with tables.connect(settings) as conn:
        cols = tables.require(conn, LABELED)
        missing = [c for c in TRAINING_REQUIRED if c not in cols]
        if missing:
            raise TrainingSetError(f"training set: labeled_samples is missing columns {missing}")
        calendar = tables.query(conn, f"select date, bool_or(label is not null) as labelled from "
                                      f"{tables.qualified(LABELED)} group by date order by date")
        as_of, window_start = window_bounds(calendar, settings.spec.training_set)
        window = tables.rows(conn, LABELED, "label is not null and date > ? and date <= ?", [window_start, as_of])
    return window, calendar


def _as_date(v):
    import datetime as dt

    if v is None or isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        return v
    if isinstance(v, dt.datetime):
        return v.date()
    return dt.date.fromisoformat(str(v)[:10])


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse",
       description="The hybrid memory: a rolling window up to the as-of date + archive samples + the error "
                   "replay buffer, each row tagged with its source, split by date into train and validation "
                   "with the label horizon purged and an embargo after the validation block. Reads only the "
                   "window's labelled rows of labeled_samples (and its calendar of dates).",
       deps=[LABELED])
def training_set(context: AssetExecutionContext, settings: RegimeSettings,
                 rare_event_archive: pl.DataFrame, error_replay_buffer: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    window, calendar = window_rows(settings)
    out, info = build_training_set(window, rare_event_archive, error_replay_buffer,
                                   spec.training_set, spec.labels.horizon, calendar=calendar)
    del window
    n_train = int((out["split"] == "train").sum())
    if n_train < spec.automation.min_samples:
        raise Failure(description=(
            f"refusing to train: the training split has {n_train} rows, below the minimum of "
            f"{spec.automation.min_samples} (spec automation.min_samples); as-of {info.get('as_of')}"),
            allow_retries=False)
    counts = out.group_by("source", "regime", "split").len().sort("source", "regime", "split")
    meta = base_meta(out.select("symbol", "date", "regime", "label", "source", "split", "event_id"), spec.spec_hash)
    meta.update({
        "as_of": MetadataValue.text(str(info.get("as_of"))),
        "validation_start": MetadataValue.text(str(info.get("validation_start"))),
        "validation_end": MetadataValue.text(str(info.get("validation_end"))),
        "train_rows": num(n_train), "validation_rows": num(int((out["split"] == "validation").sum())),
        "rows_by_source_regime_split": md(counts, 60),
    })
    for k in ("purged_rows", "embargoed_rows", "purge_start", "purge_end"):
        if k in info:
            meta[k] = num(info[k]) if isinstance(info[k], (int, float)) else MetadataValue.text(str(info[k]))
    return Output(out, metadata=meta)


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse",
       description="The validation block split into the five regimes; a regime with too few rows is flagged "
                   "(never dropped silently). Stored as one table with a `regime` column.")
def regime_validation_sets(context: AssetExecutionContext, settings: RegimeSettings,
                           training_set: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    sets, summary = split_validation(training_set, spec.training_set.min_regime_rows)
    out = pl.concat([df for df in sets.values() if df.height], how="vertical_relaxed") if any(
        df.height for df in sets.values()) else training_set.filter(pl.lit(False))
    meta = base_meta(out.select("symbol", "date", "regime", "label"), spec.spec_hash)
    meta["regimes"] = md(summary)
    for r in summary.iter_rows(named=True):
        meta[f"rows_{r['regime']}"] = num(int(r["rows"]))
    flagged = summary.filter(pl.col("flagged"))["regime"].to_list()
    meta["flagged_regimes"] = MetadataValue.text(", ".join(flagged) or "none")
    return Output(out, metadata=meta)


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse",
       description="The seeds' 20/40/20/10/10 regime mix (low_vol/normal/high_vol/crash/recovery) drawn from the "
                   "training split only, seeded, to the spec's target size; short regimes are up-sampled with "
                   "replacement up to a cap and the shortfall is reported.")
def balanced_training_set(context: AssetExecutionContext, settings: RegimeSettings,
                          training_set: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    out, summary = balanced_sample(training_set, spec.balance)
    meta = base_meta(out.select("row_id", "symbol", "date", "regime", "label", "source"), spec.spec_hash)
    meta["ratios"] = md(summary)
    for r in summary.iter_rows(named=True):
        meta[f"achieved_{r['regime']}"] = num(round(float(r["achieved_ratio"]), 4))
    meta["class_balance_plot"] = plot_md(plots.png_markdown(plots.class_balance_plot(out), "class balance"))
    return Output(out, metadata=meta)


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse",
       description="Per balanced row: regime weight (crash 2.0, recovery 1.5, high_vol 1.3, normal 1.0, "
                   "low_vol 0.8) times the event weight for archive rows, normalised to mean 1.")
def sample_weights(context: AssetExecutionContext, settings: RegimeSettings,
                   balanced_training_set: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    out = weigh(balanced_training_set, spec.weights)
    by = out.group_by("regime", "source").agg(pl.len().alias("rows"), pl.col("weight").mean().alias("mean_weight"),
                                              pl.col("weight").sum().alias("total_weight")).sort("regime", "source")
    meta = base_meta(out, spec.spec_hash)
    meta["weights_by_regime_source"] = md(by)
    meta["mean_weight"] = num(float(out["weight"].mean()))
    return Output(out, metadata=meta)
