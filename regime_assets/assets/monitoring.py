"""Group `monitoring`: the drift report and new rare-event capture."""


import datetime as dt
import polars as pl
from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, AssetSpec, MetadataValue, Output, asset

from regime_assets.assets._meta import md, num, plot_md
from regime_assets.assets.state import captured_events, captured_history, production_model
from regime_assets.core import archive as archive_core
from regime_assets.rendering import plots
from regime_assets.core.capture import (
    STATUS_CREATED,
    STATUS_EXTENDED,
    as_event_specs,
    find_candidate_events,
    plan_retrains,
)
from regime_assets.core.drift import drift_report as compute_drift
from regime_assets.core.monitoring import drift_windows, window_dates
from regime_assets.assets.samples import LABELED, event_archive_rows
from regime_assets.resources import tables
from regime_assets.resources.settings import RegimeSettings
from regime_assets.resources.warehouse import APPEND_KEY, DEFAULT_SCHEMA, write_table

OWNERS = ["team:quant-research"]
GROUP = "monitoring"
KINDS = {"polars", "duckdb"}


def _drift_history(context: AssetExecutionContext, limit: int = 60) -> pl.DataFrame:
    rows = []
    try:
        events = context.instance.fetch_materializations(AssetKey("drift_report"), limit=limit).records
    except Exception:  # an instance without the API: no history
        events = []
    for rec in events:
        mat = rec.asset_materialization
        if mat is None:
            continue
        meta = mat.metadata
        score = meta.get("drift_score")
        as_of = meta.get("as_of")
        if score is None or as_of is None:
            continue
        rows.append({"date": dt.date.fromisoformat(str(as_of.value)), "score": float(score.value)})
    if not rows:
        return pl.DataFrame(schema={"date": pl.Date, "score": pl.Float64})
    return pl.DataFrame(rows).unique("date", keep="first").sort("date")


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse", deps=["production_model", LABELED],
       description="Drift of the most recent weeks against the recent past (the rolling window's last "
                   "drift.reference_years before them; archive and replay rows excluded): per-feature PSI, KS and "
                   "Wasserstein, regime-mix drift, prediction drift of the production model, a cross-validated "
                   "domain classifier, each calibrated on the reference's own windows, and one score in [0, 1] "
                   "(formula in docs/ARCHITECTURE.md). The drift sensor reads `drift_score`. Reads only the rows of "
                   "labeled_samples from the reference start on.")
def drift_report(context: AssetExecutionContext, settings: RegimeSettings) -> Output[pl.DataFrame]:
    spec = settings.spec
    record, model = production_model(settings)
    recent = drift_rows(settings)
    win = drift_windows(recent, spec, record=record, model=model)
    feats = [c for c in recent.columns if c.startswith("f_")]
    del recent
    table, summary = compute_drift(win.reference, win.current, feats, spec.drift, win.ref_pred, win.cur_pred,
                                   win.ref_pred_dates)
    history = pl.concat([_drift_history(context), pl.DataFrame(
        {"date": [win.as_of], "score": [summary["score"]]})]).unique("date", keep="last").sort("date")
    components = {c: round(float(summary[f"{c}_score"]), 6) for c in ("feature", "regime", "prediction", "domain")}
    meta = {
        "drift_score": num(round(summary["score"], 6)),
        "feature_score": num(summary["feature_score"]),
        "regime_score": num(summary["regime_score"]),
        "prediction_score": num(summary["prediction_score"]),
        "domain_score": num(summary["domain_score"]),
        "components": MetadataValue.json({"calibrated": components, "weights": summary["weights"],
                                          "raw": summary["raw"], "null_quantiles": summary["null_quantiles"]}),
        "raw_components": MetadataValue.json(summary["raw"]),
        "calibration": MetadataValue.text(f"{summary['calibration']} ({summary['null_windows']} reference windows "
                                          f"of {spec.drift.current_weeks} weeks, q{spec.drift.null_quantile:g})"),
        "retrain_threshold": num(spec.drift.retrain_threshold),
        "above_threshold": MetadataValue.bool(bool(summary["above_threshold"])),
        "as_of": MetadataValue.text(str(win.as_of)),
        "reference": MetadataValue.text(f"{summary['reference_start']}..{summary['reference_end']} "
                                        f"({summary['n_reference']} rows; {win.reference_from})"),
        "reference_window": MetadataValue.text(f"{win.reference_start}..{win.reference_end}"),
        "current": MetadataValue.text(f"{summary['current_start']}..{summary['current_end']} "
                                      f"({summary['n_current']} rows)"),
        "prediction_reference": MetadataValue.text(win.prediction_reference),
        "domain_classifier": MetadataValue.text(
            f"AUROC {summary['raw']['domain_auc']} on {summary['domain_features']} features (null q "
            f"{summary['null_quantiles']['domain_auc']})" if summary["domain_available"] else "not available"),
        "top_drifted_features": md(table.head(spec.drift.top_features)),
        "features_major": num(summary["n_major"]),
        "features_moderate": num(summary["n_moderate"]),
        "regime_shares": MetadataValue.json({"reference": summary["regime_shares_reference"],
                                             "current": summary["regime_shares_current"]}),
        "prediction_shares": MetadataValue.json({"reference": summary["prediction_shares_reference"],
                                                 "current": summary["prediction_shares_current"]}),
        "drift_plot": plot_md(plots.png_markdown(plots.drift_plot(table, summary["score"], history),
                                                 "drift score and top drifted features")),
        "spec_hash": MetadataValue.text(spec.spec_hash),
    }
    out = table.with_columns(
        pl.lit(win.as_of).alias("as_of"), pl.lit(summary["score"]).alias("drift_score"),
        *[pl.lit(v, dtype=pl.Float64).alias(f"{c}_score") for c, v in components.items()],
        pl.lit(win.reference_start).alias("reference_start"), pl.lit(win.reference_end).alias("reference_end"),
        pl.lit(win.current_start).alias("current_start"))
    return Output(out, metadata=meta)


def drift_rows(settings: RegimeSettings) -> pl.DataFrame:
    """The rows of labeled_samples ``drift_windows`` can read: from the reference start of the windows as of the
    table's last date (``window_dates``) on, in the table's order."""
    with tables.connect(settings) as conn:
        tables.require(conn, LABELED)
        as_of = conn.execute(f"select max(date) from {tables.qualified(LABELED)}").fetchall()[0][0]
        if as_of is None:
            return tables.rows(conn, LABELED, "false")
        ref_start = window_dates(as_of, settings.spec.drift)[2]
        return tables.rows(conn, LABELED, "date >= ?", [ref_start])


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse", deps=[LABELED],
       metadata={APPEND_KEY: ["event_id", "end"]},
       description="Events captured by the rule: VIX > 40 for 3+ days, or drift score > 0.25, or crash share > "
                   "50 % of symbols, over a window overlapping no seeded event. An episode that keeps going extends "
                   "its captured event (same id, later end). Append-only, one row per event and extent (key "
                   "event_id, end); the samples of each new or extended window are appended to "
                   "`rare_event_archive` at once. The new-event sensor starts a retraining run per row with "
                   "`retrain` (a new event, or one grown by capture.regrow_days trading days), run key "
                   "`event_id@extent_days`.")
def new_rare_events(context: AssetExecutionContext, settings: RegimeSettings, market_context: pl.DataFrame,
                    regime_labels: pl.DataFrame, drift_report: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    as_of = drift_report["as_of"][0] if drift_report.height else regime_labels["date"].max()
    score = float(drift_report["drift_score"][0]) if drift_report.height else None
    already = captured_events(settings)
    cand = find_candidate_events(market_context, regime_labels, score, as_of, list(spec.events), spec.capture,
                                 drift_weeks=spec.drift.current_weeks, growable_events=already)
    cand = plan_retrains(cand, captured_history(settings), spec.capture.regrow_days)
    cand = cand.with_columns(pl.lit(as_of).alias("captured_as_of"),
                             pl.lit(context.run.run_id).alias("captured_by_run"))
    new_ids = cand.filter(pl.col("status") == STATUS_CREATED)["event_id"].to_list()
    grown = cand.filter(pl.col("status") == STATUS_EXTENDED)["event_id"].to_list()
    runs = cand.filter(pl.col("retrain")).select("event_id", "extent_days", "run_key").to_dicts()
    appended = 0
    if cand.height:
        rows, _ = event_archive_rows(settings, as_event_specs(cand, as_of))
        with tables.connect(settings) as conn:
            appended = write_table(conn, DEFAULT_SCHEMA, "rare_event_archive", rows, archive_core.ARCHIVE_KEY)
        context.log_event(AssetMaterialization(
            asset_key="rare_event_archive",
            description=f"{appended} rows of captured events {new_ids + grown} appended",
            metadata={"rows_appended": num(appended), "captured_events": MetadataValue.json(new_ids + grown)}))
    meta = {
        "new_event_ids": MetadataValue.json(new_ids),
        "extended_event_ids": MetadataValue.json(grown),
        "retrain_runs": MetadataValue.json(runs),
        "new_events": num(len(new_ids)),
        "captured_events_total": num(len(already) + len(new_ids)),
        "archive_rows_appended": num(appended),
        "as_of": MetadataValue.text(str(as_of)),
        "drift_score": num(score),
        "candidates": md(cand),
        "rule": MetadataValue.text(
            f"VIX > {spec.capture.vix_level} for >= {spec.capture.vix_days} days, or drift > "
            f"{spec.capture.drift_score}, or crash share > {spec.capture.crash_share}; no overlap with "
            f"{len(spec.events)} seeded events; {len(already)} captured events may grow (a retraining run per "
            f"{spec.capture.regrow_days} trading days of growth)"),
    }
    context.log.info(f"captured events: new {new_ids or 'none'}, extended {grown or 'none'}; runs "
                     f"{[r['run_key'] for r in runs] or 'none'}")
    return Output(cand, metadata=meta)


# Written by `regime-assets rewind` (a history rewind is a command, not a step of any job): the command stores the
# timeline in the warehouse and reports a materialization with the plot, so the UI shows it beside drift_report.
rewind_timeline = AssetSpec(
    "rewind_timeline", group_name=GROUP, owners=OWNERS, kinds={"duckdb"},
    description="History rewind (`uv run regime-assets rewind --start ... --end ... --every week`): per as-of "
                "date the drift score and its components, VIX, crash share, whether the drift or new-event sensor "
                "would have retrained, and captured events. Point-in-time: each step reads nothing after its date. "
                "Reported by the rewind command, not materialized by a job.")


def report_rewind(instance, home, spec, timeline: pl.DataFrame, seconds: float, start, end, every: str) -> None:
    """Store a rewind's timeline as the ``rewind_timeline`` table and report its materialization (with the plot)
    on ``instance``, so the UI shows it in the monitoring group."""
    from regime_assets.rendering import plots
    from regime_assets.resources.warehouse import DEFAULT_SCHEMA, locked_connection, warehouse_path, write_table

    home.mkdir(parents=True, exist_ok=True)
    with locked_connection(warehouse_path(home)) as conn:
        write_table(conn, DEFAULT_SCHEMA, "rewind_timeline", timeline)
    caps = [c for c in timeline["captured_event"].to_list() if c]
    retrains = timeline.filter(pl.col("retrain"))
    meta = {
        "window": MetadataValue.text(f"{start}..{end} every {every}"),
        "steps": num(timeline.height),
        "retrains": num(retrains.height),
        "drift_retrains": num(int(timeline["trigger"].fill_null("").str.contains("drift").sum())),
        "captured_events": MetadataValue.text(", ".join(caps) or "none"),
        "max_drift_score": num(float(timeline["drift_score"].max() or 0.0)),
        "seconds": num(round(seconds, 1)),
        "retrain_steps": md(retrains.select("as_of", "drift_score", "vix", "crash_share", "trigger",
                                            "captured_event"), 60),
        "timeline_plot": plot_md(plots.png_markdown(plots.rewind_timeline_plot(timeline,
                                                                               spec.drift.retrain_threshold),
                                                    "rewind timeline")),
        "spec_hash": MetadataValue.text(spec.spec_hash),
    }
    instance.report_runless_asset_event(AssetMaterialization(asset_key="rewind_timeline", metadata=meta))
