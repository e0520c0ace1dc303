"""History replay: step an as-of date through history and evaluate the monitoring assets and the sensors' logic
as they would have run on each date.

Point-in-time: every input at a step is cut at the as-of date. Features and regimes use data up to each row's own
date (proven by the leakage tests), so they are computed once on the full history and filtered; a label is
visible only when its forward window has closed by the as-of date (``label_known_on`` <= as-of); the archive
knows only events that ended before the as-of date plus those the replay captured itself.

At each step: the drift report against the production model's training window; the capture rule; the drift
sensor (score >= retrain threshold) and the new-event sensor (a new event id) decide whether a retraining run
starts; a retrain fits the replay model on the hybrid training set as of that date and becomes the production
model (the replay skips the promotion gate: every retrain is promoted, as the first model of a fresh home is).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from regime_assets.core import archive as archive_core
from regime_assets.core.capture import as_event_specs, find_candidate_events
from regime_assets.core.drift import drift_report
from regime_assets.core.features import build_features
from regime_assets.core.labels import build_labels
from regime_assets.core.market import build_market_context
from regime_assets.core.models import feature_columns, fit_model
from regime_assets.core.monitoring import reference_and_current
from regime_assets.core.regimes import label_regimes
from regime_assets.core.sampling import balanced_sample
from regime_assets.core.sources import load_source
from regime_assets.core.training_set import build_training_set
from regime_assets.core.weights import sample_weights
from regime_assets.spec import EventSpec, Spec

TIMELINE_SCHEMA = {"as_of": pl.Date, "drift_score": pl.Float64, "feature_score": pl.Float64,
                   "regime_score": pl.Float64, "prediction_score": pl.Float64, "vix": pl.Float64,
                   "crash_share": pl.Float64, "retrain": pl.Boolean, "trigger": pl.Utf8,
                   "captured_event": pl.Utf8, "model_trained_on": pl.Date, "seconds": pl.Float64}


@dataclass
class ReplayState:
    record: dict | None = None
    model: object | None = None
    captured: list[EventSpec] = field(default_factory=list)


def prepare(spec: Spec) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(market_context, regime_labels, labeled) on the full history, with ``label_known_on`` per row."""
    data = load_source(spec.data)
    ctx, _ = build_market_context(data.index, data.vix, spec.vix_proxy)
    regimes = label_regimes(data.prices, ctx, spec.regimes)
    feats = build_features(data.prices, ctx, data.sectors, spec.features)
    labeled = build_labels(feats, regimes, spec.labels, data.prices)
    h = spec.labels.horizon
    labeled = labeled.sort("symbol", "date").with_columns(
        pl.col("date").shift(-h).over("symbol").alias("label_known_on"))
    return ctx, regimes, labeled


def as_of_dates(ctx: pl.DataFrame, start: dt.date, end: dt.date, every: str) -> list[dt.date]:
    days = ctx.filter(pl.col("date").is_between(start, end)).select("date")
    if every == "day":
        return days["date"].to_list()
    key = pl.col("date").dt.truncate("1w" if every == "week" else "1mo")
    return days.group_by(key.alias("k")).agg(pl.col("date").max()).sort("k")["date"].to_list()


def visible(labeled: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """Rows up to the as-of date, with labels only where the forward window has closed by then."""
    known = pl.col("label_known_on").is_not_null() & (pl.col("label_known_on") <= as_of)
    return labeled.filter(pl.col("date") <= as_of).with_columns(
        pl.when(known).then(pl.col("label")).otherwise(None).alias("label"),
        pl.when(known).then(pl.col("fwd_return")).otherwise(None).alias("fwd_return"))


def known_events(spec: Spec, state: ReplayState, as_of: dt.date) -> list[EventSpec]:
    return [e for e in spec.events if e.end < as_of] + state.captured


def train(spec: Spec, labeled_t: pl.DataFrame, events: list[EventSpec], as_of: dt.date) -> tuple[dict, object]:
    """Fit the replay model on the hybrid training set as of ``as_of``; returns (registry-like record, model)."""
    rs = spec.replay
    archive, _ = archive_core.build_archive(labeled_t, events)
    tspec = spec.training_set.model_copy(update={"as_of": as_of})
    ts, info = build_training_set(labeled_t, archive, None, tspec, spec.labels.horizon)
    bspec = spec.balance.model_copy(update={"target_size": min(spec.balance.target_size, rs.max_train_rows)})
    bal, _ = balanced_sample(ts, bspec)
    w = sample_weights(bal, spec.weights).sort("row_id")["weight"].to_numpy()
    bal = bal.sort("row_id")
    mspec = next(m for m in spec.models if m.name == rs.model)
    params = dict(mspec.params)
    if "n_estimators" in params:
        params["n_estimators"] = rs.n_estimators
    mspec = mspec.model_copy(update={"params": params})
    model = fit_model(mspec, bal, w, feature_columns(bal))
    tr = ts.filter(pl.col("split") == "train")
    va = ts.filter(pl.col("split") == "validation")
    record = {"model_name": f"replay_{rs.model}", "version": str(as_of), "train_start": tr["date"].min(),
              "train_end": tr["date"].max(), "validation_start": va["date"].min(),
              "validation_end": va["date"].max()}
    return record, model


def run_replay(spec: Spec, start: dt.date, end: dt.date, every: str, out_dir: Path | None,
               verbose: bool = False) -> pl.DataFrame:
    t0 = time.perf_counter()
    ctx, regimes, labeled = prepare(spec)
    prep = time.perf_counter() - t0
    if verbose:
        print(f"replay: prepared {labeled.height} symbol-days in {prep:.1f} s; stepping {start}..{end} every {every}")
    state = ReplayState()
    steps = as_of_dates(ctx, start, end, every)
    if not steps:
        raise ValueError(f"replay: no trading dates between {start} and {end}")
    rows = []
    threshold = spec.drift.retrain_threshold
    crash_daily = regimes.group_by("date").agg((pl.col("regime") == "crash").mean().alias("crash_share"))
    for i, as_of in enumerate(steps):
        s0 = time.perf_counter()
        lab_t = visible(labeled, as_of)
        if state.model is None:
            state.record, state.model = train(spec, lab_t, known_events(spec, state, as_of), as_of)
        ref, cur, ref_pred, cur_pred, info = reference_and_current(lab_t, state.record, state.model, spec, as_of)
        feats = [c for c in lab_t.columns if c.startswith("f_")]
        _, summary = drift_report(ref, cur, feats, spec.drift, ref_pred, cur_pred, info["ref_pred_dates"])
        score = summary["score"]
        cand = find_candidate_events(ctx, regimes, score, as_of, known_events(spec, state, as_of), spec.capture,
                                     drift_weeks=spec.drift.current_weeks)
        new_ids = cand["event_id"].to_list()
        state.captured += as_event_specs(cand, as_of)
        triggers = []
        if score >= threshold:
            triggers.append("drift sensor")
        if new_ids:
            triggers.append("new-event sensor")
        trained_on = state.record["version"]
        if triggers:
            state.record, state.model = train(spec, lab_t, known_events(spec, state, as_of), as_of)
        vix = ctx.filter(pl.col("date") == as_of)["vix"]
        cs = crash_daily.filter(pl.col("date") == as_of)["crash_share"]
        rows.append({"as_of": as_of, "drift_score": score, "feature_score": summary["feature_score"],
                     "regime_score": summary["regime_score"], "prediction_score": summary["prediction_score"],
                     "vix": float(vix[0]) if vix.len() else None, "crash_share": float(cs[0]) if cs.len() else None,
                     "retrain": bool(triggers), "trigger": "+".join(triggers) or None,
                     "captured_event": ",".join(new_ids) or None,
                     "model_trained_on": dt.date.fromisoformat(trained_on), "seconds": time.perf_counter() - s0})
        if verbose:
            r = rows[-1]
            flag = f"  RETRAIN ({r['trigger']})" if r["retrain"] else ""
            ev = f"  CAPTURED {r['captured_event']}" if r["captured_event"] else ""
            print(f"{as_of}  drift {score:.3f}  vix {r['vix']:.1f}  crash share {r['crash_share']:.2f}{flag}{ev}")
    timeline = pl.DataFrame(rows, schema=TIMELINE_SCHEMA)
    total = time.perf_counter() - t0
    if out_dir is not None:
        from regime_assets.rendering import plots

        out_dir.mkdir(parents=True, exist_ok=True)
        timeline.write_csv(out_dir / "replay_timeline.csv")
        png = plots.replay_timeline_plot(timeline, threshold)
        (out_dir / "replay_timeline.png").write_bytes(png)
    if verbose:
        n_re = int(timeline["retrain"].sum())
        caps = [c for c in timeline["captured_event"].to_list() if c]
        print(f"replay: {len(steps)} steps in {total:.1f} s ({prep:.1f} s preparing); {n_re} retrains; "
              f"captured: {', '.join(caps) or 'none'}")
        if out_dir is not None:
            print(f"timeline: {out_dir / 'replay_timeline.csv'}, plot: {out_dir / 'replay_timeline.png'}")
    return timeline
