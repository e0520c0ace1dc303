"""Walk-forward backtest of the training arms, per regime, plus leave-one-crisis-out.

The question it answers: do regime weights, regime-balanced sampling, the regime as a feature and the rare-event
archive help, and in which regime?

Folds: ``PurgedWalkForward.yearly`` test blocks of ``walk_forward.test_years`` calendar years from ``start_year``.
The trading-day calendar is the unique dates of labeled_samples and the archive. For a test block starting at
trading day ``lo`` a row may train only when its trading day is ``< lo - labels.horizon`` (its label window ends
before the block), and window rows only when dated after ``first test day - train_years``. Unlabelled rows never
train or test. A fold with fewer than ``walk_forward.min_train_rows`` window rows, or no labelled test row, is
skipped (``folds.status`` says why).

Arms (every arm is tested on exactly the same rows, so their differences are paired):

* ``unweighted``: the window rows, capped at ``max_train_rows`` by a seeded draw, no weights.
* ``regime_weights``: the same rows, weighted by ``weights.regime_weights`` (``sample_weights``, mean 1).
* ``regime_feature``: the same rows, unweighted, plus one-hot ``regime_is_<regime>`` features.
* ``balanced``: ``balanced_sample`` of the window rows (target size capped at ``max_train_rows``), unweighted.
* ``no_archive``: the same balanced rows, with ``sample_weights``.
* ``full``: ``balanced_sample`` of window + archive rows, with ``sample_weights`` (archive event multiplier
  included). Archive rows obey the fold's purge like window rows (date before the purge, never in or after the
  test block); they are not limited to the train window (old events are the point of the archive). An event
  that straddles the purge contributes only its rows before it.
* For ``full`` also ``meta_learner``: the ``walk_forward.meta_models`` combined with weights from their
  out-of-fold ``meta.weight_metric`` on the latest ``meta.inner_holdout_fraction`` of the training dates
  (``horizon`` dates purged before that holdout); ``accuracy``/``balanced_accuracy`` weights are proportional to
  the metric, ``log_loss`` weights to its inverse.

Models: ``spec.models`` entries named in ``walk_forward.models`` (and ``meta_models``) with ``n_estimators``
replaced by ``walk_forward.n_estimators`` and ``walk_forward.model_params`` applied on top. Folds run in
``walk_forward.n_jobs`` threads, every fit single-threaded (model ``n_jobs`` and BLAS/OpenMP pools set to 1), so
the results do not depend on ``n_jobs``.

Differences: for every arm (and model) other than the ``unweighted`` baseline and every regime scope
(``overall`` + the 5 regimes), ``diff = metric(arm) - metric(unweighted)`` on the scope's test rows, with a
paired stationary bootstrap over the scope's test dates (``evaluation.bootstrap_reps``, mean block
``evaluation.block_length_days``, ``evaluation.seed``): each replicate resamples dates (blocks of consecutive
dates) and recomputes both arms' metric on the rows of the drawn dates. The interval is the percentile interval at
``evaluation.confidence``, widened to include ``diff`` itself if a very skewed bootstrap left it outside.
``helps`` is ``yes`` when the whole interval is on the better side of 0 (above 0; below 0 for ``log_loss``),
``no`` when it is on the worse side, ``inconclusive`` when it contains 0 or the scope has fewer than
``evaluation.min_rows`` test rows or fewer than 2 test dates.

Leave-one-crisis-out: for each event (the spec's, then captured ones only the archive holds) with labelled rows in
labeled_samples, the event's trading days are a custom test block (``PurgedWalkForward`` with ``allow_after=True``):
the ``horizon`` days before it are purged and ``max(training_set.embargo_days, horizon)`` days after it embargoed;
window rows train from ``train_years`` before to ``train_years`` after the block (capped at ``max_train_rows``);
the ``unweighted`` and ``full`` arms are fitted (``full`` with the other events' archive rows at allowed dates) and
tested on the event's rows. ``loco_folds`` lists every event, with the reason when one is skipped.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from regime_assets.core.ensemble import MetaLearner, fit_meta
from regime_assets.core.evaluation import metrics, paired_difference
from regime_assets.core.models import FittedModel, ModelError, encode_labels, fit_model, inner_split, oof_frame
from regime_assets.core.sampling import balanced_sample
from regime_assets.core.splits import DAYS_PER_YEAR, PurgedWalkForward, to_days
from regime_assets.core.weights import sample_weights
from regime_assets.spec import CLASSES, REGIMES, ModelSpec, Spec

ARMS: tuple[str, ...] = ("unweighted", "regime_weights", "balanced", "regime_feature", "no_archive", "full")
BASELINE_ARM = "unweighted"
META_ARM = "full"
META_MODEL = "meta_learner"
LOCO_ARMS: tuple[str, ...] = ("unweighted", "full")
OVERALL = "overall"
SCOPES: tuple[str, ...] = (OVERALL, *REGIMES)
METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss")
LOWER_IS_BETTER = frozenset({"log_loss"})
PROBA = tuple(f"p_{c}" for c in CLASSES)
ONEHOT = tuple(f"regime_is_{r}" for r in REGIMES)
REQUIRED = ("symbol", "date", "regime", "label", "fwd_return")
TEST_COLUMNS = ("symbol", "date", "regime", "label", "fwd_return")

PREDICTION_SCHEMA = {"fold": pl.Int64, "arm": pl.Utf8, "model": pl.Utf8, "symbol": pl.Utf8, "date": pl.Date,
                     "regime": pl.Utf8, "label": pl.Utf8, "fwd_return": pl.Float64,
                     **{p: pl.Float64 for p in PROBA}}
METRIC_SCHEMA = {"arm": pl.Utf8, "model": pl.Utf8, "regime": pl.Utf8, "n": pl.Int64,
                 **{m: pl.Float64 for m in METRICS}}
DIFF_SCHEMA = {"arm": pl.Utf8, "model": pl.Utf8, "baseline_model": pl.Utf8, "regime": pl.Utf8, "metric": pl.Utf8,
               "arm_value": pl.Float64, "baseline_value": pl.Float64, "diff": pl.Float64, "ci_low": pl.Float64,
               "ci_high": pl.Float64, "n": pl.Int64, "n_dates": pl.Int64, "helps": pl.Utf8, "sentence": pl.Utf8}
FOLD_SCHEMA = {"fold": pl.Int64, "test_start": pl.Date, "test_end": pl.Date, "test_rows": pl.Int64,
               "train_start": pl.Date, "train_end": pl.Date, "train_rows": pl.Int64, "purged_rows": pl.Int64,
               "embargoed_rows": pl.Int64, "archive_rows": pl.Int64, "status": pl.Utf8}
LOCO_FOLD_SCHEMA = {"event_id": pl.Utf8, "event_regime": pl.Utf8, "test_start": pl.Date, "test_end": pl.Date,
                    "test_rows": pl.Int64, "train_rows_before": pl.Int64, "train_rows_after": pl.Int64,
                    "purged_rows": pl.Int64, "embargoed_rows": pl.Int64, "archive_rows": pl.Int64,
                    "status": pl.Utf8}
LOCO_SCHEMA = {"event_id": pl.Utf8, "event_regime": pl.Utf8, "arm": pl.Utf8, "model": pl.Utf8, "n": pl.Int64,
               **{m: pl.Float64 for m in METRICS}}
LOCO_DIFF_SCHEMA = {"event_id": pl.Utf8, "model": pl.Utf8, "metric": pl.Utf8, "diff": pl.Float64,
                    "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int64, "n_dates": pl.Int64,
                    "helps": pl.Utf8, "sentence": pl.Utf8}
FIT_LOG_SCHEMA = {"fold": pl.Int64, "event_id": pl.Utf8, "arm": pl.Utf8, "model": pl.Utf8, "train_rows": pl.Int64,
                  "window_rows": pl.Int64, "archive_rows": pl.Int64, "first_date": pl.Date, "last_date": pl.Date,
                  "seconds": pl.Float64}
TRAIN_DATES_SCHEMA = {"fold": pl.Int64, "arm": pl.Utf8, "source": pl.Utf8, "date": pl.Date, "rows": pl.Int64}
LOCO_TRAIN_DATES_SCHEMA = {"event_id": pl.Utf8, "arm": pl.Utf8, "source": pl.Utf8, "date": pl.Date,
                           "rows": pl.Int64}
META_WEIGHT_SCHEMA = {"fold": pl.Int64, "model": pl.Utf8, "method": pl.Utf8, "oof_metric": pl.Utf8,
                      "oof_value": pl.Float64, "oof_rows": pl.Int64, "weight": pl.Float64}


class WalkForwardError(ValueError):
    """Inputs or settings the walk-forward backtest cannot use; the message names what is wrong."""


@dataclass
class WalkForwardResult:
    """The backtest's frames (see the module doc); ``answer`` holds one sentence per arm x model x regime."""

    predictions: pl.DataFrame
    arm_metrics: pl.DataFrame
    arm_differences: pl.DataFrame
    answer: list[str]
    folds: pl.DataFrame
    loco: pl.DataFrame
    loco_differences: pl.DataFrame
    loco_folds: pl.DataFrame
    fit_log: pl.DataFrame
    train_dates: pl.DataFrame
    loco_train_dates: pl.DataFrame
    meta_weights: pl.DataFrame
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- metrics


def _finite(x: float | None) -> bool:
    return x is not None and bool(np.isfinite(x))


def helps_verdict(metric: str, lo: float | None, hi: float | None, n: int, n_dates: int, min_rows: int) -> str:
    """``yes`` when the interval lies on the better side of 0, ``no`` on the worse side, else ``inconclusive``
    (also with fewer than ``min_rows`` rows, fewer than 2 dates or no interval)."""
    if not (_finite(lo) and _finite(hi)) or n < min_rows or n_dates < 2:
        return "inconclusive"
    better_lo, better_hi = (-hi, -lo) if metric in LOWER_IS_BETTER else (lo, hi)
    if better_lo > 0:
        return "yes"
    if better_hi < 0:
        return "no"
    return "inconclusive"


def widen(diff: float | None, lo: float | None, hi: float | None) -> tuple[float | None, float | None]:
    """The interval widened to include ``diff`` (a very skewed bootstrap can leave the estimate outside)."""
    if not (_finite(diff) and _finite(lo) and _finite(hi)):
        return lo, hi
    return min(lo, diff), max(hi, diff)


# ----------------------------------------------------------------------------------------------- inputs


def _check_spec(spec: Spec) -> None:
    wf = spec.walk_forward
    unknown = [a for a in wf.arms if a not in ARMS]
    if unknown:
        raise WalkForwardError(f"walk_forward.arms: unknown arms {unknown}; known arms are {list(ARMS)}")
    if BASELINE_ARM not in wf.arms:
        raise WalkForwardError(f"walk_forward.arms must include the baseline arm '{BASELINE_ARM}'")
    if len(set(wf.arms)) != len(wf.arms):
        raise WalkForwardError(f"walk_forward.arms has duplicates: {wf.arms}")
    if not wf.models:
        raise WalkForwardError("walk_forward.models is empty")
    names = {m.name for m in spec.models}
    for what, lst in (("models", wf.models), ("meta_models", wf.meta_models)):
        missing = [m for m in lst if m not in names]
        if missing:
            raise WalkForwardError(f"walk_forward.{what}: {missing} not among spec.models {sorted(names)}")
    bad = [m for m in wf.model_params if m not in names]
    if bad:
        raise WalkForwardError(f"walk_forward.model_params: {bad} not among spec.models {sorted(names)}")


def _check_labeled(labeled: pl.DataFrame) -> list[str]:
    missing = [c for c in REQUIRED if c not in labeled.columns]
    if missing:
        raise WalkForwardError(f"walk forward: labeled_samples is missing columns {missing}")
    if labeled.schema["date"] != pl.Date:
        raise WalkForwardError(f"walk forward: labeled_samples.date must be pl.Date, got {labeled.schema['date']}")
    feats = [c for c in labeled.columns if c.startswith("f_")]
    if not feats:
        raise WalkForwardError("walk forward: labeled_samples has no feature columns (f_*)")
    if labeled.get_column("date").null_count():
        raise WalkForwardError("walk forward: labeled_samples has null dates")
    dup = labeled.select("symbol", "date").is_duplicated()
    if dup.any():
        sym, day = labeled.filter(dup).select("symbol", "date").row(0)
        raise WalkForwardError(f"walk forward: labeled_samples has duplicate rows for symbol {sym} on {day}")
    lab = labeled.filter(pl.col("label").is_not_null())
    bad = lab.filter(~pl.col("label").is_in(list(CLASSES)))
    if bad.height:
        sym, day, v = bad.select("symbol", "date", "label").row(0)
        raise WalkForwardError(f"walk forward: label {v!r} for symbol {sym} on {day} is not one of {list(CLASSES)}")
    bad = lab.filter(pl.col("regime").is_null() | ~pl.col("regime").is_in(list(REGIMES)))
    if bad.height:
        sym, day, v = bad.select("symbol", "date", "regime").row(0)
        raise WalkForwardError(f"walk forward: regime {v!r} for symbol {sym} on {day} is not one of {list(REGIMES)}")
    return feats


def _prepare_archive(archive: pl.DataFrame | None, cols: list[str], schema: pl.Schema) -> pl.DataFrame:
    keep = [*cols, "event_id", "event_regime", "event_weight"]
    out_schema = {**{c: schema[c] for c in cols}, "event_id": pl.Utf8, "event_regime": pl.Utf8,
                  "event_weight": pl.Float64}
    if archive is None or archive.height == 0:
        return pl.DataFrame(schema=out_schema)
    missing = [c for c in keep if c not in archive.columns]
    if missing:
        raise WalkForwardError(f"walk forward: rare_event_archive is missing columns {missing[:10]}")
    try:
        arch = archive.select([pl.col(c).cast(t) for c, t in out_schema.items()])
    except pl.exceptions.PolarsError as err:
        raise WalkForwardError(f"walk forward: rare_event_archive columns do not match labeled_samples: "
                               f"{err}") from None
    arch = arch.filter(pl.col("label").is_not_null())
    bad = arch.filter(pl.col("event_id").is_null() | pl.col("event_weight").is_null() | (pl.col("event_weight") <= 0))
    if bad.height:
        sym, day = bad.select("symbol", "date").row(0)
        raise WalkForwardError(f"walk forward: rare_event_archive row for symbol {sym} on {day} lacks a positive "
                               f"event_weight or an event_id")
    bad = arch.filter(~pl.col("label").is_in(list(CLASSES)) | ~pl.col("regime").is_in(list(REGIMES))
                      | pl.col("regime").is_null())
    if bad.height:
        sym, day, lab, reg = bad.select("symbol", "date", "label", "regime").row(0)
        raise WalkForwardError(f"walk forward: rare_event_archive row for symbol {sym} on {day} has label {lab!r} / "
                               f"regime {reg!r}")
    return arch.sort("event_id", "symbol", "date")


def backtest_model_spec(spec: Spec, name: str, threads: int) -> ModelSpec:
    """The ``spec.models`` entry ``name`` for backtest fits: ``n_estimators`` from ``walk_forward``, then
    ``walk_forward.model_params[name]``, and ``n_jobs`` (where the estimator has it) set to ``threads``."""
    m = next((x for x in spec.models if x.name == name), None)
    if m is None:
        raise WalkForwardError(f"walk forward: model {name!r} is not among spec.models")
    params = dict(m.params)
    if "n_estimators" in params:
        params["n_estimators"] = spec.walk_forward.n_estimators
    params.update(spec.walk_forward.model_params.get(name, {}))
    if "n_jobs" in params:
        params["n_jobs"] = int(threads)
    return m.model_copy(update={"params": params})


def _years_after(d: dt.date, years: float) -> dt.date:
    whole = int(years)
    y = d.year + whole
    out = dt.date(y, d.month, min(d.day, calendar.monthrange(y, d.month)[1]))
    return out + dt.timedelta(days=round((years - whole) * DAYS_PER_YEAR))


# ----------------------------------------------------------------------------------------------- arm training sets


@dataclass
class _Ctx:
    spec: Spec
    features: list[str]
    mspecs: dict[str, ModelSpec]
    meta_specs: dict[str, ModelSpec]
    lab: pl.DataFrame  # labeled_samples (all rows), training columns only
    arch: pl.DataFrame  # archive rows, training columns + event_id, event_weight
    tests: pl.DataFrame  # labeled_samples (all rows), test columns + features


SLIM = ("symbol", "date", "regime")


def _cap(idx: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    if idx.size <= max_rows:
        return idx
    return np.sort(rng.choice(idx, size=max_rows, replace=False))


def _slim_pool(ctx: _Ctx, win_idx: np.ndarray, arch_idx: np.ndarray | None) -> pl.DataFrame:
    """Key columns of the rows a balanced sample draws from; ``_i`` points into ``ctx.lab`` or ``ctx.arch``."""
    parts = [ctx.lab.select(SLIM)[win_idx].with_columns(
        pl.lit("window").alias("source"), pl.lit("train").alias("split"), pl.lit(None, dtype=pl.Utf8).alias("event_id"),
        pl.lit(None, dtype=pl.Float64).alias("event_weight"), pl.Series("_i", win_idx, dtype=pl.Int64))]
    if arch_idx is not None and arch_idx.size:
        parts.append(ctx.arch.select(*SLIM, "event_id", "event_weight")[arch_idx].select(
            *SLIM, pl.lit("archive").alias("source"), pl.lit("train").alias("split"), "event_id", "event_weight",
            pl.Series("_i", arch_idx, dtype=pl.Int64)))
    return pl.concat(parts, how="vertical")


def _gather(ctx: _Ctx, slim: pl.DataFrame) -> pl.DataFrame:
    """The training rows of ``slim`` (same order): training columns + ``source`` (+ ``row_id`` when present)."""
    is_arch = (slim.get_column("source") == "archive").to_numpy()
    idx = slim.get_column("_i").to_numpy()
    cols = ctx.lab.columns
    parts = [ctx.lab[idx[~is_arch]]]
    if is_arch.any():
        parts.append(ctx.arch.select(cols)[idx[is_arch]])
    order = np.concatenate([np.flatnonzero(~is_arch), np.flatnonzero(is_arch)])
    rows = pl.concat(parts, how="vertical")[np.argsort(order, kind="stable")]
    extra = [c for c in ("source", "row_id") if c in slim.columns]
    return pl.concat([rows, slim.select(extra)], how="horizontal")


def _with_onehot(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns([(pl.col("regime") == r).cast(pl.Float64).alias(c) for r, c in zip(REGIMES, ONEHOT)])


def _arm_sets(arms: list[str], win_idx: np.ndarray, arch_idx: np.ndarray, ctx: _Ctx,
              rng: np.random.Generator) -> dict[str, tuple[pl.DataFrame, np.ndarray | None, list[str]]]:
    """Per arm: (training rows with ``source``, weights or None, feature list); see the module doc."""
    spec, wf = ctx.spec, ctx.spec.walk_forward
    out: dict[str, tuple[pl.DataFrame, np.ndarray | None, list[str]]] = {}
    plain = None
    if {"unweighted", "regime_weights", "regime_feature"} & set(arms):
        keep = _cap(win_idx, wf.max_train_rows, rng)
        plain = ctx.lab[keep].with_columns(pl.lit("window").alias("source"))
    bspec = spec.balance.model_copy(update={"target_size": min(spec.balance.target_size, wf.max_train_rows)})
    balanced = bal_w = None
    if {"balanced", "no_archive"} & set(arms):
        slim, _ = balanced_sample(_slim_pool(ctx, win_idx, None), bspec)
        balanced = _gather(ctx, slim)
        bal_w = sample_weights(slim, spec.weights).get_column("weight").to_numpy()
    for arm in arms:
        if arm == "unweighted":
            out[arm] = (plain, None, ctx.features)
        elif arm == "regime_weights":
            w = sample_weights(plain.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("row_id"), "regime",
                                            "source", pl.lit(None, dtype=pl.Float64).alias("event_weight")),
                               spec.weights)
            out[arm] = (plain, w.get_column("weight").to_numpy(), ctx.features)
        elif arm == "regime_feature":
            out[arm] = (_with_onehot(plain), None, [*ctx.features, *ONEHOT])
        elif arm == "balanced":
            out[arm] = (balanced, None, ctx.features)
        elif arm == "no_archive":
            out[arm] = (balanced, bal_w, ctx.features)
        elif arm == "full":
            slim, _ = balanced_sample(_slim_pool(ctx, win_idx, arch_idx), bspec)
            out[arm] = (_gather(ctx, slim), sample_weights(slim, spec.weights).get_column("weight").to_numpy(),
                        ctx.features)
    return out


def _train_dates(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by("source", "date").agg(pl.len().cast(pl.Int64).alias("rows")).sort("source", "date")


def _fit_meta(train: pl.DataFrame, weights: np.ndarray | None, ctx: _Ctx, reuse: dict[str, FittedModel],
              ) -> tuple[MetaLearner, list[dict[str, Any]]]:
    """``ensemble.fit_meta`` on OOF predictions of the meta models (as ``models.fit_with_oof``: latest
    ``meta.inner_holdout_fraction`` of the dates held out, ``horizon`` dates purged); an arm fit with the same
    model spec on the same rows is reused as the final model instead of being fitted again."""
    spec = ctx.spec
    w = np.ones(train.height) if weights is None else np.asarray(weights, dtype=np.float64)
    fit_mask, hold_mask = inner_split(train.get_column("date"), spec.meta.inner_holdout_fraction,
                                      spec.labels.horizon)
    if not fit_mask.any():
        raise ModelError("meta learner: no rows left to fit before the inner holdout")
    inner_rows, hold = train.filter(pl.Series(fit_mask)), train.filter(pl.Series(hold_mask))
    oof: dict[str, pl.DataFrame] = {}
    finals: dict[str, FittedModel] = {}
    for name, mspec in ctx.meta_specs.items():
        inner = fit_model(mspec, inner_rows, w[fit_mask], ctx.features)
        oof[name] = oof_frame(hold, inner.predict_proba(hold))
        same = reuse.get(name)
        finals[name] = same if same is not None and same.spec == mspec.model_dump() else \
            fit_model(mspec, train, w, ctx.features)
    learner = fit_meta(oof, spec.meta, models=finals)
    rows = [{"model": m, "method": learner.method, "oof_metric": learner.metric, "oof_value": float(v),
             "oof_rows": learner.n_oof, "weight": float(x)}
            for m, v, x in zip(learner.models, learner.oof_metric, learner.weights)]
    return learner, rows


def _fit_and_predict(arm_sets: dict[str, tuple[pl.DataFrame, np.ndarray | None, list[str]]], test: pl.DataFrame,
                     ctx: _Ctx, models: list[str], meta: bool
                     ) -> tuple[list[tuple[str, str, np.ndarray]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Fit every model on every arm's rows; (predictions per arm and model, fit log rows, meta weight rows)."""
    preds: list[tuple[str, str, np.ndarray]] = []
    log: list[dict[str, Any]] = []
    meta_rows: list[dict[str, Any]] = []
    test_oh = None
    for arm, (rows, w, feats) in arm_sets.items():
        fitted: dict[str, FittedModel] = {}
        if arm == "regime_feature" and test_oh is None:
            test_oh = _with_onehot(test)
        tdf = test_oh if arm == "regime_feature" else test
        src = rows.get_column("source")
        d = rows.get_column("date")
        for name in models:
            t0 = time.perf_counter()
            fm = fit_model(ctx.mspecs[name], rows, w, feats)
            fitted[name] = fm
            preds.append((arm, name, fm.predict_proba(tdf)))
            log.append({"arm": arm, "model": name, "train_rows": rows.height,
                        "window_rows": int((src == "window").sum()), "archive_rows": int((src == "archive").sum()),
                        "first_date": d.min(), "last_date": d.max(), "seconds": time.perf_counter() - t0})
        if meta and arm == META_ARM and ctx.meta_specs:
            t0 = time.perf_counter()
            learner, mrows = _fit_meta(rows, w, ctx, fitted)
            preds.append((arm, META_MODEL, learner.predict_proba(tdf)))
            log.append({"arm": arm, "model": META_MODEL, "train_rows": rows.height,
                        "window_rows": int((src == "window").sum()), "archive_rows": int((src == "archive").sum()),
                        "first_date": d.min(), "last_date": d.max(), "seconds": time.perf_counter() - t0})
            meta_rows.extend(mrows)
    return preds, log, meta_rows


# ----------------------------------------------------------------------------------------------- folds


@dataclass
class _Task:
    key: int | str
    test_idx: np.ndarray  # rows of labeled_samples
    win_idx: np.ndarray  # rows of labeled_samples
    arch_idx: np.ndarray  # rows of the archive
    arms: list[str]
    seed: tuple[int, ...]
    meta: bool


def _run_task(task: _Task, ctx: _Ctx) -> dict[str, Any]:
    rng = np.random.default_rng(list(task.seed))
    sets = _arm_sets(task.arms, task.win_idx, task.arch_idx, ctx, rng)
    test = ctx.tests[task.test_idx]
    preds, log, meta_rows = _fit_and_predict(sets, test, ctx, ctx.spec.walk_forward.models, task.meta)
    dates = [_train_dates(rows).with_columns(pl.lit(arm).alias("arm")) for arm, (rows, _, _) in sets.items()]
    return {"key": task.key, "test": test.select(TEST_COLUMNS), "preds": preds, "log": log, "meta": meta_rows,
            "dates": pl.concat(dates)}


def _run_all(tasks: list[_Task], ctx: _Ctx, workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(tasks) <= 1:
        return [_run_task(t, ctx) for t in tasks]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda t: _run_task(t, ctx), tasks))


# ----------------------------------------------------------------------------------------------- evaluation


def _paired_frames(preds: pl.DataFrame, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], pl.DataFrame]:
    """Each (arm, model)'s predictions sorted by date, symbol; raises unless all cover the same rows."""
    out = {}
    for arm, model in pairs:
        out[(arm, model)] = preds.filter((pl.col("arm") == arm) & (pl.col("model") == model)).sort("date", "symbol")
    keys = out[pairs[0]].select("date", "symbol")
    for (arm, model), f in out.items():
        if not f.select("date", "symbol").equals(keys):
            raise WalkForwardError(f"walk forward: arm {arm} model {model} did not predict the same test rows as "
                                   f"arm {pairs[0][0]} model {pairs[0][1]}")
    return out


def _fmt(x: float) -> str:
    return f"{x:+.3f}".replace("-", "\u2212")


def _sentence(a: str, b: str, scope: str, metric: str, diff: float | None, lo: float | None, hi: float | None,
              helps: str, n: int, n_dates: int) -> str:
    if not _finite(diff):
        return f"{a} vs {b}, {scope}: no test rows to compare \u2014 {helps}"
    ci = f"[{_fmt(lo)}, {_fmt(hi)}]" if _finite(lo) and _finite(hi) else "[no interval]"
    return (f"{a} vs {b}, {scope}: {metric.replace('_', ' ')} {_fmt(diff)} {ci} \u2014 {helps} "
            f"({n} rows, {n_dates} dates)")


def _scope_metrics(f: pl.DataFrame) -> list[dict[str, Any]]:
    y = encode_labels(f.get_column("label"))
    p = f.select(PROBA).to_numpy()
    regimes = f.get_column("regime").to_numpy()
    out = []
    for scope in SCOPES:
        mask = np.ones(y.size, dtype=bool) if scope == OVERALL else regimes == scope
        vals = metrics(y[mask], p[mask]) if mask.any() else {}
        out.append({"regime": scope, "n": int(mask.sum()),
                    **{m: (vals[m] if m in vals and _finite(vals[m]) else None) for m in METRICS}})
    return out


def _evaluate(preds: pl.DataFrame, spec: Spec, pairs: list[tuple[str, str]]
              ) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """(arm_metrics, arm_differences, sentences) of the pooled out-of-sample predictions."""
    ev, wf = spec.evaluation, spec.walk_forward
    metric = spec.gate.primary_metric
    frames = _paired_frames(preds, pairs)
    metric_rows = [{"arm": arm, "model": model, **r} for (arm, model), f in frames.items() for r in _scope_metrics(f)]
    one_model = len(wf.models) == 1
    diff_rows: list[dict[str, Any]] = []
    for arm, model in pairs:
        bm = model if (BASELINE_ARM, model) in frames else wf.models[0]
        if arm == BASELINE_ARM and model == bm:
            continue
        pd_ = paired_difference(frames[(BASELINE_ARM, bm)], frames[(arm, model)], metric, ev)
        by = {r["regime"]: r for r in pd_.iter_rows(named=True)}
        a = arm if one_model and model in wf.models else f"{arm} ({model})"
        b = BASELINE_ARM if one_model else f"{BASELINE_ARM} ({bm})"
        for scope in SCOPES:
            r = by.get(scope) or {"n": 0, "n_dates": 0, "value_a": None, "value_b": None, "diff": None,
                                  "ci_low": None, "ci_high": None}
            lo, hi = widen(r["diff"], r["ci_low"], r["ci_high"])
            helps = helps_verdict(metric, lo, hi, r["n"], r["n_dates"], ev.min_rows)
            diff_rows.append({"arm": arm, "model": model, "baseline_model": bm, "regime": scope, "metric": metric,
                              "arm_value": r["value_b"], "baseline_value": r["value_a"], "diff": r["diff"],
                              "ci_low": lo, "ci_high": hi, "n": r["n"], "n_dates": r["n_dates"], "helps": helps,
                              "sentence": _sentence(a, b, scope, metric, r["diff"], lo, hi, helps, r["n"],
                                                    r["n_dates"])})
    ad = pl.DataFrame(diff_rows, schema=DIFF_SCHEMA)
    return pl.DataFrame(metric_rows, schema=METRIC_SCHEMA), ad, ad.get_column("sentence").to_list()


def _loco_evaluate(preds: dict[str, list[tuple[str, str, np.ndarray]]], tests: dict[str, pl.DataFrame],
                   regimes: dict[str, str], spec: Spec) -> tuple[pl.DataFrame, pl.DataFrame]:
    ev, metric = spec.evaluation, spec.gate.primary_metric
    rows, diffs = [], []
    for eid, plist in preds.items():
        base = tests[eid].select(*TEST_COLUMNS)
        frames = {}
        for arm, model, p in plist:
            frames[(arm, model)] = base.with_columns(*[pl.Series(c, p[:, i]) for i, c in enumerate(PROBA)])
            overall = _scope_metrics(frames[(arm, model)])[0]
            rows.append({"event_id": eid, "event_regime": regimes[eid], "arm": arm, "model": model,
                         "n": overall["n"], **{m: overall[m] for m in METRICS}})
        for model in spec.walk_forward.models:
            if ("full", model) not in frames or (BASELINE_ARM, model) not in frames:
                continue
            pd_ = paired_difference(frames[(BASELINE_ARM, model)], frames[("full", model)], metric, ev)
            r = pd_.filter(pl.col("regime") == OVERALL).row(0, named=True)
            lo, hi = widen(r["diff"], r["ci_low"], r["ci_high"])
            helps = helps_verdict(metric, lo, hi, r["n"], r["n_dates"], ev.min_rows)
            sent = _sentence(f"leave-one-crisis-out {eid} ({regimes[eid]}): full ({model})",
                             f"{BASELINE_ARM} ({model})", "event rows", metric, r["diff"], lo, hi, helps, r["n"],
                             r["n_dates"])
            diffs.append({"event_id": eid, "model": model, "metric": metric, "diff": r["diff"], "ci_low": lo,
                          "ci_high": hi, "n": r["n"], "n_dates": r["n_dates"], "helps": helps, "sentence": sent})
    return pl.DataFrame(rows, schema=LOCO_SCHEMA), pl.DataFrame(diffs, schema=LOCO_DIFF_SCHEMA)


# ----------------------------------------------------------------------------------------------- main


def _event_windows(arch: pl.DataFrame, spec: Spec) -> list[tuple[str, str, dt.date, dt.date]]:
    """(event_id, regime, start, end): the spec's events in spec order, then events only the archive knows
    (captured ones; their window is the first..last date of their archive rows)."""
    out = [(e.id, e.regime, e.start, e.end) for e in spec.events]
    known = {e.id for e in spec.events}
    if arch.height:
        ev = (arch.filter(~pl.col("event_id").is_in(list(known)))
              .group_by("event_id", maintain_order=True)
              .agg(pl.col("event_regime").first(), pl.col("date").min().alias("lo"), pl.col("date").max().alias("hi")))
        out.extend(ev.iter_rows())
    return out


def run_walk_forward(labeled: pl.DataFrame, archive: pl.DataFrame | None, spec: Spec,
                     progress: Callable[[str], None] | None = None) -> WalkForwardResult:
    """Walk-forward backtest of ``spec.walk_forward.arms`` and leave-one-crisis-out; see the module doc."""
    from threadpoolctl import threadpool_limits

    import warnings

    from sklearn.exceptions import ConvergenceWarning

    # every fit runs single-threaded (BLAS/OpenMP pools too); walk_forward.n_jobs folds run side by side.
    # Backtest fits cap their iterations on purpose (walk_forward.model_params): no convergence warning per fold.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _run_walk_forward(labeled, archive, spec, progress, max(1, int(spec.walk_forward.n_jobs)), 1)


def _run_walk_forward(labeled: pl.DataFrame, archive: pl.DataFrame | None, spec: Spec,
                      progress: Callable[[str], None] | None, workers: int, threads: int) -> WalkForwardResult:
    t_start = time.perf_counter()
    _check_spec(spec)
    feats = _check_labeled(labeled)
    wf, horizon = spec.walk_forward, spec.labels.horizon
    embargo = int(spec.training_set.embargo_days)
    say = progress or (lambda _m: None)
    labeled = labeled.sort("symbol", "date")
    train_cols = ["symbol", "date", "regime", "label", *feats]
    arch = _prepare_archive(archive, train_cols, labeled.schema)
    ctx = _Ctx(spec=spec, features=feats,
               mspecs={m: backtest_model_spec(spec, m, threads) for m in wf.models},
               meta_specs={m: backtest_model_spec(spec, m, threads) for m in wf.meta_models},
               lab=labeled.select(train_cols), arch=arch, tests=labeled.select(*TEST_COLUMNS, *feats))

    # one trading-day calendar for labeled_samples and archive rows; indices >= n_lab are archive rows
    combined = pl.concat([labeled.get_column("date"), arch.get_column("date")])
    days = np.unique(to_days(combined))
    n_lab = labeled.height
    lab_dates = labeled.get_column("date")
    lab_pos = np.searchsorted(days, to_days(lab_dates))
    is_lab = labeled.get_column("label").is_not_null().to_numpy()

    def labelled(idx: np.ndarray) -> np.ndarray:
        idx = idx[idx < n_lab]
        return idx[is_lab[idx]]

    def in_archive(idx: np.ndarray) -> np.ndarray:
        return idx[idx >= n_lab] - n_lab

    def zone_rows(lo: int, hi: int) -> int:
        return int((is_lab & (lab_pos >= lo) & (lab_pos <= hi)).sum())

    # ---- walk-forward folds
    splitter = PurgedWalkForward.yearly(combined, wf.start_year, wf.test_years, wf.train_years, horizon,
                                        embargo=embargo)
    arch_split = PurgedWalkForward(list(splitter.test_blocks), horizon, embargo=embargo, train_years=None)
    fold_rows: list[dict[str, Any]] = []
    tasks: list[_Task] = []
    for k, ((tr, te), (atr, _)) in enumerate(zip(splitter.split(combined), arch_split.split(combined))):
        s, e = splitter.test_blocks[k]
        tr, te, atr = labelled(tr), labelled(te), in_archive(atr)
        lo = int(np.searchsorted(days, np.datetime64(s, "D")))
        status = "ok"
        if te.size == 0:
            status = "skipped: no labelled test rows"
        elif tr.size < wf.min_train_rows:
            status = f"skipped: {tr.size} training rows < walk_forward.min_train_rows {wf.min_train_rows}"
        td = lab_dates.gather(tr)
        fold_rows.append({"fold": k, "test_start": s, "test_end": e, "test_rows": int(te.size),
                          "train_start": td.min() if tr.size else None, "train_end": td.max() if tr.size else None,
                          "train_rows": int(tr.size), "purged_rows": zone_rows(lo - horizon, lo - 1),
                          "embargoed_rows": 0, "archive_rows": int(atr.size), "status": status})
        if status == "ok":
            tasks.append(_Task(key=k, test_idx=te, win_idx=tr, arch_idx=atr, arms=list(wf.arms),
                               seed=(wf.seed, 0, k), meta=True))
    folds = pl.DataFrame(fold_rows, schema=FOLD_SCHEMA)
    if not tasks:
        raise WalkForwardError(f"walk forward: no fold can run (start_year {wf.start_year}, "
                               f"min_train_rows {wf.min_train_rows}): " +
                               "; ".join(f"{r['test_start']}: {r['status']}" for r in fold_rows))
    say(f"walk forward: {len(tasks)} folds x {len(wf.arms)} arms")
    results = _run_all(tasks, ctx, workers)

    pred_parts, log_rows, date_parts, meta_rows = [], [], [], []
    for res in results:
        k = res["key"]
        for arm, model, p in res["preds"]:
            pred_parts.append(res["test"].with_columns(
                pl.lit(k, dtype=pl.Int64).alias("fold"), pl.lit(arm).alias("arm"), pl.lit(model).alias("model"),
                *[pl.Series(c, p[:, i]) for i, c in enumerate(PROBA)]))
        log_rows.extend({"fold": k, "event_id": None, **r} for r in res["log"])
        meta_rows.extend({"fold": k, **r} for r in res["meta"])
        date_parts.append(res["dates"].with_columns(pl.lit(k, dtype=pl.Int64).alias("fold")))
    predictions = pl.concat(pred_parts).select(list(PREDICTION_SCHEMA)).cast(PREDICTION_SCHEMA)
    pairs = [(a, m) for a in wf.arms for m in wf.models]
    if META_ARM in wf.arms and wf.meta_models:
        pairs.append((META_ARM, META_MODEL))
    say("walk forward: paired bootstrap of the arms")
    arm_metrics, arm_differences, answer = _evaluate(predictions, spec, pairs)
    train_dates = pl.concat(date_parts).select(list(TRAIN_DATES_SCHEMA)).cast(TRAIN_DATES_SCHEMA)

    # ---- leave-one-crisis-out
    loco_fold_rows: list[dict[str, Any]] = []
    loco_tasks: list[_Task] = []
    loco_regimes: dict[str, str] = {}
    loco_arms = [a for a in LOCO_ARMS if a in wf.arms]
    loco_embargo = max(embargo, horizon)
    if wf.leave_one_crisis_out and loco_arms:
        for j, (eid, reg, s, e) in enumerate(_event_windows(arch, spec)):
            te = np.flatnonzero(((lab_dates >= s) & (lab_dates <= e)).to_numpy() & is_lab)
            row = {"event_id": eid, "event_regime": reg, "test_start": None, "test_end": None,
                   "test_rows": int(te.size), "train_rows_before": 0, "train_rows_after": 0, "purged_rows": 0,
                   "embargoed_rows": 0, "archive_rows": 0, "status": "ok"}
            loco_fold_rows.append(row)
            if te.size == 0:
                row["status"] = "skipped: no labelled rows in the data"
                continue
            tdays = lab_dates.gather(te)
            bs, be = tdays.min(), tdays.max()
            sp = PurgedWalkForward([(bs, be)], horizon, embargo=loco_embargo, train_years=wf.train_years,
                                   allow_after=True)
            asp = PurgedWalkForward([(bs, be)], horizon, embargo=loco_embargo, train_years=None, allow_after=True)
            tr = labelled(next(sp.split(combined))[0])
            atr = in_archive(next(asp.split(combined))[0])
            tr = tr[(lab_dates.gather(tr) <= _years_after(be, wf.train_years)).to_numpy()]
            lo = int(np.searchsorted(days, np.datetime64(bs, "D")))
            hi = int(np.searchsorted(days, np.datetime64(be, "D")))
            before = int((lab_dates.gather(tr) < bs).sum())
            row.update({"test_start": bs, "test_end": be, "train_rows_before": before,
                        "train_rows_after": int(tr.size) - before, "purged_rows": zone_rows(lo - horizon, lo - 1),
                        "embargoed_rows": zone_rows(hi + 1, hi + loco_embargo), "archive_rows": int(atr.size)})
            if tr.size < wf.min_train_rows:
                row["status"] = f"skipped: {tr.size} training rows < walk_forward.min_train_rows {wf.min_train_rows}"
                continue
            loco_regimes[eid] = reg
            loco_tasks.append(_Task(key=eid, test_idx=te, win_idx=tr, arch_idx=atr, arms=loco_arms,
                                    seed=(wf.seed, 1, j), meta=False))
    say(f"leave-one-crisis-out: {len(loco_tasks)} events")
    loco_results = _run_all(loco_tasks, ctx, workers)
    loco_preds, loco_tests, loco_date_parts = {}, {}, []
    for res in loco_results:
        loco_preds[res["key"]] = res["preds"]
        loco_tests[res["key"]] = res["test"]
        log_rows.extend({"fold": None, "event_id": res["key"], **r} for r in res["log"])
        loco_date_parts.append(res["dates"].with_columns(pl.lit(res["key"]).alias("event_id")))
    loco, loco_diff = _loco_evaluate(loco_preds, loco_tests, loco_regimes, spec)
    loco_train_dates = (pl.concat(loco_date_parts).select(list(LOCO_TRAIN_DATES_SCHEMA)).cast(LOCO_TRAIN_DATES_SCHEMA)
                        if loco_date_parts else pl.DataFrame(schema=LOCO_TRAIN_DATES_SCHEMA))

    return WalkForwardResult(
        predictions=predictions,
        arm_metrics=arm_metrics,
        arm_differences=arm_differences,
        answer=answer + loco_diff.get_column("sentence").to_list(),
        folds=folds,
        loco=loco,
        loco_differences=loco_diff,
        loco_folds=pl.DataFrame(loco_fold_rows, schema=LOCO_FOLD_SCHEMA),
        fit_log=pl.DataFrame(log_rows, schema=FIT_LOG_SCHEMA),
        train_dates=train_dates,
        loco_train_dates=loco_train_dates,
        meta_weights=pl.DataFrame(meta_rows, schema=META_WEIGHT_SCHEMA),
        seconds=time.perf_counter() - t_start,
        settings={"folds_run": len(tasks), "loco_events_run": len(loco_tasks), "workers": workers,
                  "threads_per_fit": threads, "metric": spec.gate.primary_metric, "loco_embargo_days": loco_embargo},
    )
