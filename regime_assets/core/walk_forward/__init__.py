"""Walk-forward: out-of-sample predictions of every candidate the gate may promote, fold by fold.

* ``plan``: the folds (dates only): yearly purged test blocks and leave-one-crisis-out events;
* ``fit``: per fold the production recipe of every candidate, the two baselines and the ablation arms;
* ``store``: the fold memo (content-keyed Parquet entries), so unchanged folds are never fitted again;
* ``report``: metrics per candidate x regime x year with block-bootstrap intervals, paired differences with
  Holm's correction, leave-one-crisis-out rows and the sentences that say what they mean.

``run_walk_forward`` streams: it loads one fold's rows at a time from a ``RowSource`` (the warehouse in the
asset), fits what the store does not hold, hands the fold's prediction frame to ``sink`` and releases it.
Folds run one after another (a fold's replay buffer comes from the previous fold's out-of-sample errors).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from regime_assets.core import models as model_core
from regime_assets.core.memory import release as release_memory
from regime_assets.core import shrinkage as shrink_core
from regime_assets.core.splits import to_days
from regime_assets.core.walk_forward.fit import (
    ARMS,
    BASELINE_ARM,
    BASELINE_PRIOR,
    BASELINE_REGIME_PRIOR,
    BASELINES,
    CHAMPION,
    EVENT_COLUMNS,
    LOCO_ARMS,
    META_MODEL,
    PRODUCTION_ARMS,
    PROBA,
    TEST_COLUMNS,
    FitLog,
    FoldOutput,
    Recipe,
    RowSource,
    WalkForwardError,
    arm_model_name,
    baseline_probs,
    build_recipe,
    check_spec,
    fit_arms,
    fit_production,
    fit_production_arms,
    load_fold,
    production_arm_name,
    replay_rows,
)
from regime_assets.core.walk_forward.plan import Fold, event_windows, loco_folds, walk_forward_folds
from regime_assets.core.walk_forward.store import FoldStore
from regime_assets.spec import CLASSES, REGIMES, Spec

PREDICTION_SCHEMA = {"fold": pl.Int32, "test_start": pl.Date, "test_end": pl.Date, "model": pl.Utf8,
                     "recipe_hash": pl.Utf8, "symbol": pl.Utf8, "date": pl.Date, "regime": pl.Utf8,
                     "label": pl.Utf8, "fwd_return": pl.Float64, **{p: pl.Float64 for p in PROBA}}
LOCO_PREDICTION_SCHEMA = {"event_id": pl.Utf8, "event_regime": pl.Utf8, **PREDICTION_SCHEMA}
FOLD_SCHEMA = {"fold": pl.Int32, "fold_key": pl.Utf8, "event_id": pl.Utf8, "event_regime": pl.Utf8,
               "test_start": pl.Date, "test_end": pl.Date, "test_rows": pl.Int64, "train_start": pl.Date,
               "train_end": pl.Date, "after_start": pl.Date, "after_end": pl.Date, "train_rows": pl.Int64,
               "archive_rows": pl.Int64, "replay_rows": pl.Int64, "fits": pl.Int64, "reused": pl.Int64,
               "data_hash": pl.Utf8, "status": pl.Utf8}
FIT_LOG_SCHEMA = {"fold": pl.Int64, "fold_key": pl.Utf8, "model": pl.Utf8, "cached": pl.Boolean,
                  "train_rows": pl.Int64, "window_rows": pl.Int64, "archive_rows": pl.Int64,
                  "replay_rows": pl.Int64, "seconds": pl.Float64}
TRAIN_DATES_SCHEMA = {"fold": pl.Int64, "fold_key": pl.Utf8, "arm": pl.Utf8, "source": pl.Utf8, "date": pl.Date,
                      "rows": pl.Int64}
META_WEIGHT_SCHEMA = {"fold": pl.Int64, "fold_key": pl.Utf8, "model": pl.Utf8, "method": pl.Utf8,
                      "oof_metric": pl.Utf8, "oof_value": pl.Float64, "weight": pl.Float64}
REQUIRED = ("symbol", "date", "regime", "label", "fwd_return")

NO_SHRINKAGE = "arm:meta_no_shrinkage"
SHRINKAGE_SCHEMA = {"fold": pl.Int32, "fold_key": pl.Utf8, "model": pl.Utf8, **shrink_core.REPORT_SCHEMA}

__all__ = ["NO_SHRINKAGE", "ARMS", "BASELINES", "BASELINE_PRIOR", "BASELINE_REGIME_PRIOR", "CHAMPION", "META_MODEL",
           "PRODUCTION_ARMS", "PREDICTION_SCHEMA", "FoldStore", "FrameRows", "WalkForwardError", "WalkForwardRun",
           "arm_model_name", "build_recipe", "production_arm_name", "run_walk_forward", "candidate_names"]


def run_code_hash() -> str:
    """Hash of the code behind the walk-forward's tables: the recipe code (``fit.code_hash``) and the fold loop,
    plan, store and regime shrinkage, so a memo of the whole step is not reused across a code change."""
    import hashlib
    import inspect
    import sys

    from regime_assets.core.walk_forward import fit, plan, store

    h = hashlib.sha256(fit.code_hash().encode())
    for mod in (sys.modules[__name__], plan, store, shrink_core):
        h.update(inspect.getsource(mod).encode())
    return h.hexdigest()[:16]


def candidate_names(spec: Spec) -> list[str]:
    """The names the gate may promote: every enabled spec model and the meta-learner."""
    return [*(m.name for m in spec.enabled_models), META_MODEL]


# ----------------------------------------------------------------------------------------------- in-memory rows


def _in_ranges(ranges: list[tuple[Any, Any]]) -> pl.Expr:
    if not ranges:
        return pl.lit(False)
    expr = None
    for lo, hi in ranges:
        e = pl.lit(True)
        if lo is not None:
            e = e & (pl.col("date") >= lo)
        if hi is not None:
            e = e & (pl.col("date") <= hi)
        expr = e if expr is None else expr | e
    return expr


class FrameRows:
    """A ``RowSource`` over in-memory frames (labeled_samples and the archive), checked once."""

    def __init__(self, labeled: pl.DataFrame, archive: pl.DataFrame | None) -> None:
        missing = [c for c in REQUIRED if c not in labeled.columns]
        if missing:
            raise WalkForwardError(f"walk forward: labeled_samples is missing columns {missing}")
        if labeled.schema["date"] != pl.Date:
            raise WalkForwardError(f"walk forward: labeled_samples.date must be pl.Date, got "
                                   f"{labeled.schema['date']}")
        self.features = [c for c in labeled.columns if c.startswith("f_")]
        if not self.features:
            raise WalkForwardError("walk forward: labeled_samples has no feature columns (f_*)")
        if labeled.get_column("date").null_count():
            raise WalkForwardError("walk forward: labeled_samples has null dates")
        dup = labeled.select("symbol", "date").is_duplicated()
        if dup.any():
            sym, day = labeled.filter(dup).select("symbol", "date").row(0)
            raise WalkForwardError(f"walk forward: labeled_samples has duplicate rows for symbol {sym} on {day}")
        cols = [*TEST_COLUMNS, *self.features]
        self._lab = labeled.filter(pl.col("label").is_not_null()).select(cols).sort("symbol", "date")
        schema = {c: labeled.schema[c] for c in cols}
        out_schema = {**schema, "event_id": pl.Utf8, "event_regime": pl.Utf8, "event_weight": pl.Float64}
        if archive is None or archive.height == 0:
            self._arch = pl.DataFrame(schema=out_schema)
        else:
            miss = [c for c in out_schema if c not in archive.columns]
            if miss:
                raise WalkForwardError(f"walk forward: rare_event_archive is missing columns {miss[:10]}")
            try:
                arch = archive.select([pl.col(c).cast(t) for c, t in out_schema.items()])
            except pl.exceptions.PolarsError as err:
                raise WalkForwardError(f"walk forward: rare_event_archive columns do not match labeled_samples: "
                                       f"{err}") from None
            arch = arch.filter(pl.col("label").is_not_null())
            bad = arch.filter(pl.col("event_id").is_null() | pl.col("event_weight").is_null()
                              | (pl.col("event_weight") <= 0))
            if bad.height:
                sym, day = bad.select("symbol", "date").row(0)
                raise WalkForwardError(f"walk forward: rare_event_archive row for symbol {sym} on {day} lacks a "
                                       f"positive event_weight or an event_id")
            self._arch = arch.sort("event_id", "symbol", "date")
        self._days = np.unique(to_days(pl.concat([labeled.get_column("date"), self._arch.get_column("date")])))

    def days(self) -> np.ndarray:
        return self._days

    def labeled(self, ranges):
        return self._lab.filter(_in_ranges(ranges))

    def archive(self, ranges):
        return self._arch.filter(_in_ranges(ranges))

    def archive_events(self) -> pl.DataFrame:
        return (self._arch.group_by("event_id", maintain_order=True)
                .agg(pl.col("event_regime").first(), pl.col("date").min().alias("lo"),
                     pl.col("date").max().alias("hi")))


# ----------------------------------------------------------------------------------------------- the run


@dataclass
class Champion:
    """The production model's recipe when no current candidate has it: its spec and candidate name."""

    spec: Spec
    candidate: str
    recipe_hash: str = ""


class Shrinker:
    """Regime shrinkage in the walk-forward (``core/shrinkage.py``): per output (the meta-learner, each production
    arm, the champion) the raw out-of-sample rows of the folds before; a fold's probabilities are mixed with its
    window's regime prior by weights chosen on the past rows whose labels closed before the fold's training end."""

    def __init__(self, spec: Spec) -> None:
        self.m = spec.meta
        self.past: dict[str, list[pl.DataFrame]] = {}
        self.rows: list[dict[str, Any]] = []

    def shrink(self, name: str, fold: Fold, data, p: np.ndarray, remember: bool = True) -> np.ndarray:
        parts = self.past.get(name, [])
        past = shrink_core.past_before(pl.concat(parts) if parts else pl.DataFrame(schema=shrink_core.PAST_SCHEMA),
                                       fold.train_end)
        y_w = model_core.encode_labels(data.window.get_column("label"), f"{fold.key} training labels")
        overall, by = shrink_core.regime_priors(y_w, data.window.get_column("regime").to_numpy())
        sh = shrink_core.fit_shrinkage(past, by, overall, self.m.shrinkage_step, self.m.shrinkage_prior_rows,
                                       self.m.shrinkage_default)
        self.rows.extend({"fold": fold.fold, "fold_key": fold.key, "model": name, **r} for r in sh.report)
        test = data.test
        if remember:
            y_t = model_core.encode_labels(test.get_column("label"), f"{fold.key} test labels")
            q = np.stack([by.get(r, overall) for r in test.get_column("regime").to_list()]) if test.height else \
                np.zeros((0, len(CLASSES)))
            self.past.setdefault(name, []).append(shrink_core.past_rows(
                test.get_column("date"), test.get_column("regime"), y_t, p, q))
        return sh.apply(p, test.get_column("regime").to_numpy())

    def table(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=SHRINKAGE_SCHEMA) if self.rows else pl.DataFrame(schema=SHRINKAGE_SCHEMA)


def _shrink_outputs(shr: Shrinker | None, fold: Fold, data, outs: list[FoldOutput], names: set[str],
                    remember: bool = True) -> None:
    """Replace, in place, the probabilities of the outputs in ``names`` by their shrunk ones; the raw
    meta-learner stays as ``NO_SHRINKAGE``."""
    if shr is None:
        return
    for out in outs:
        for name in [n for n in out.probs if n in names]:
            raw = out.probs[name]
            if name == META_MODEL:
                out.probs[NO_SHRINKAGE] = raw
                out.hashes[NO_SHRINKAGE] = f"{out.hashes[name]}:no_shrinkage"
            out.probs[name] = shr.shrink(name, fold, data, raw, remember)


@dataclass
class WalkForwardRun:
    predictions: pl.DataFrame | None  # None when a sink took the fold frames
    loco_predictions: pl.DataFrame
    folds: pl.DataFrame
    fit_log: pl.DataFrame
    train_dates: pl.DataFrame
    meta_weights: pl.DataFrame
    recipes: dict[str, str]
    shrinkage: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SHRINKAGE_SCHEMA))
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def fits(self) -> int:
        return int((~self.fit_log.get_column("cached")).sum()) if self.fit_log.height else 0


def _pieces(fold: Fold, test: pl.DataFrame, outs: list[FoldOutput]):
    """One frame (``PREDICTION_SCHEMA``) per output model of a fold, so a sink never holds a fold's all models."""
    base = test.select(*TEST_COLUMNS).with_columns(
        pl.lit(fold.fold, dtype=pl.Int32).alias("fold"), pl.lit(fold.test_start).alias("test_start"),
        pl.lit(fold.test_end).alias("test_end"))
    for out in outs:
        for name, p in out.probs.items():
            yield base.with_columns(
                pl.lit(name).alias("model"), pl.lit(out.hashes[name]).alias("recipe_hash"),
                *[pl.Series(c, p[:, i], dtype=pl.Float64) for i, c in enumerate(PROBA)]
            ).select(list(PREDICTION_SCHEMA)).cast(PREDICTION_SCHEMA)


def _frame(fold: Fold, test: pl.DataFrame, outs: list[FoldOutput]) -> pl.DataFrame:
    return pl.concat(list(_pieces(fold, test, outs)))


def _fold_row(fold: Fold, status: str, data=None, replay=None, log_from: int = 0, log: FitLog | None = None
              ) -> dict[str, Any]:
    rows = log.rows[log_from:] if log is not None else []
    return {"fold": fold.fold, "fold_key": fold.key, "event_id": fold.event_id, "event_regime": fold.event_regime,
            "test_start": fold.test_start, "test_end": fold.test_end,
            "test_rows": 0 if data is None else data.test.height, "train_start": fold.train_start,
            "train_end": fold.train_end, "after_start": fold.after_start, "after_end": fold.after_end,
            "train_rows": 0 if data is None else data.window.height,
            "archive_rows": 0 if data is None else data.archive.height,
            "replay_rows": 0 if replay is None else replay.height,
            "fits": sum(1 for r in rows if not r["cached"]), "reused": sum(1 for r in rows if r["cached"]),
            "data_hash": None if data is None else data.data_hash, "status": status}


def _status(data, spec: Spec) -> str:
    if data.test.height == 0:
        return "skipped: no labelled test rows"
    if data.window.height < spec.walk_forward.min_train_rows:
        return (f"skipped: {data.window.height} training rows < walk_forward.min_train_rows "
                f"{spec.walk_forward.min_train_rows}")
    return "ok"


def _meta_frame(test: pl.DataFrame, p: np.ndarray) -> pl.DataFrame:
    return test.select("symbol", "date", "label").with_columns(
        *[pl.Series(c, p[:, i], dtype=pl.Float64) for i, c in enumerate(PROBA)])


def run_walk_forward(rows: RowSource | pl.DataFrame, archive: pl.DataFrame | None, spec: Spec,
                     store: FoldStore | None = None, sink: Callable[[pl.DataFrame], None] | None = None,
                     champion: Champion | None = None,
                     progress: Callable[[str], None] | None = None) -> WalkForwardRun:
    """Walk-forward predictions of every candidate, the baselines and the arms; see the package doc.

    ``rows``: a ``RowSource`` or labeled_samples itself (then ``archive`` is the rare-event archive).
    ``store``: the fold memo (``FoldStore(None)`` keeps nothing). ``sink``: receives each fold's prediction
    frame (``PREDICTION_SCHEMA``); without it the frames are collected into ``predictions``. ``champion``: a
    production recipe no current candidate shares; its meta or model predictions are added as model
    ``champion``.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    check_spec(spec)
    src = FrameRows(rows, archive) if isinstance(rows, pl.DataFrame) else rows
    store = store or FoldStore(None)
    say = progress or (lambda _m: None)
    features = list(src.features)
    wf = spec.walk_forward
    recipe = build_recipe(spec)
    champ_recipe: Recipe | None = None
    if champion is not None:
        champ_recipe = build_recipe(champion.spec, with_arms=False)
        champion.recipe_hash = champ_recipe.hashes.get(champion.candidate, "")
    log = FitLog()
    fold_rows: list[dict[str, Any]] = []
    collected: list[pl.DataFrame] = []
    emit = sink or collected.append
    days = src.days()
    if days.size == 0:
        raise WalkForwardError("walk forward: labeled_samples has no dates")
    folds = walk_forward_folds(days, spec)
    prev: dict[str, pl.DataFrame | None] = {"main": None, "champion": None}
    shr = Shrinker(spec) if spec.meta.regime_shrinkage else None
    shrunk = {META_MODEL, *(production_arm_name(p) for p in wf.production_arms)}
    champ_shr = Shrinker(champion.spec) if champion is not None and champion.spec.meta.regime_shrinkage and \
        champion.candidate == META_MODEL else None
    with warnings.catch_warnings(), threadpool_limits(limits=spec.walk_forward.fit_threads):
        # backtest fits cap their iterations on purpose (walk_forward sizes): no convergence warning per fold;
        # BLAS/OpenMP pools of walk_forward.fit_threads (1: no spinning threads on a busy machine)
        warnings.simplefilter("ignore", ConvergenceWarning)
        for fold in folds:
            data = load_fold(src, fold, True, wf.test_symbols, wf.seed)
            status = _status(data, spec)
            if status != "ok":
                fold_rows.append(_fold_row(fold, status, data))
                prev = {"main": None, "champion": None}
                continue
            say(f"walk forward: fold {fold.fold} ({fold.test_start}..{fold.test_end})")
            start = len(log.rows)
            replay = replay_rows(data.window, prev["main"], spec)
            outs = [fit_production(data, replay, recipe, store, log, features), baseline_probs(data, recipe)]
            if wf.arms:
                outs.append(fit_arms(data, recipe, store, log, features, list(wf.arms), (wf.seed, 0, fold.fold)))
            if wf.production_arms:
                outs.append(fit_production_arms(data, replay, recipe, store, log, features,
                                                list(wf.production_arms)))
            _shrink_outputs(shr, fold, data, outs, shrunk)
            prev["main"] = _meta_frame(data.test, outs[0].probs[META_MODEL])
            if champ_recipe is not None:
                c_replay = replay_rows(data.window, prev["champion"], champion.spec)
                c_out = fit_production(data, c_replay, champ_recipe, store, log, features)
                _shrink_outputs(champ_shr, fold, data, [c_out], {META_MODEL})
                c_out.probs.pop(NO_SHRINKAGE, None)
                prev["champion"] = _meta_frame(data.test, c_out.probs[META_MODEL])
                outs.append(FoldOutput({CHAMPION: c_out.probs[champion.candidate]},
                                       {CHAMPION: c_out.hashes[champion.candidate]}))
            for piece in _pieces(fold, data.test, outs):
                emit(piece)
            fold_rows.append(_fold_row(fold, "ok", data, replay, start, log))
            del data, outs, replay
            release_memory()
        if not any(r["status"] == "ok" for r in fold_rows):
            raise WalkForwardError(f"walk forward: no fold can run (start_year {wf.start_year}, min_train_rows "
                                   f"{wf.min_train_rows}): " +
                                   "; ".join(f"{r['test_start']}: {r['status']}" for r in fold_rows))

        # leave-one-crisis-out: the production candidates, the baselines and the LOCO arms per event
        loco_parts: list[pl.DataFrame] = []
        if wf.leave_one_crisis_out:
            events = event_windows(spec, src.archive_events())
            loco_arms = [a for a in LOCO_ARMS if a in wf.arms]
            for fold in loco_folds(days, events, spec):
                data = load_fold(src, fold, True)
                status = _status(data, spec) if fold.train_end is not None or fold.after_start is not None else \
                    "skipped: no trading days of the event in the data"
                if data.test.height == 0:
                    status = "skipped: no labelled rows in the data"
                if status != "ok":
                    fold_rows.append(_fold_row(fold, status, data))
                    continue
                say(f"leave-one-crisis-out: {fold.event_id}")
                start = len(log.rows)
                empty = data.window.head(0)
                outs = [baseline_probs(data, recipe)]
                if wf.loco_production:
                    outs.append(fit_production(data, empty, recipe, store, log, features))
                    _shrink_outputs(shr, fold, data, outs[-1:], {META_MODEL}, remember=False)
                if loco_arms:
                    outs.append(fit_arms(data, recipe, store, log, features, loco_arms, (wf.seed, 1, -fold.fold)))
                loco_parts.append(_frame(fold, data.test, outs).with_columns(
                    pl.lit(fold.event_id).alias("event_id"), pl.lit(fold.event_regime).alias("event_regime")))
                fold_rows.append(_fold_row(fold, "ok", data, None, start, log))
                del data, outs
                release_memory()
    loco = (pl.concat(loco_parts).select(list(LOCO_PREDICTION_SCHEMA)) if loco_parts
            else pl.DataFrame(schema=LOCO_PREDICTION_SCHEMA))
    recipes = dict(recipe.hashes)
    store.write_recipes(spec.spec_hash, spec.resolved(), recipes)
    fit_log = pl.DataFrame(log.rows, schema=FIT_LOG_SCHEMA) if log.rows else pl.DataFrame(schema=FIT_LOG_SCHEMA)
    td = (pl.concat(log.train_dates, how="vertical_relaxed").select(list(TRAIN_DATES_SCHEMA)).cast(TRAIN_DATES_SCHEMA)
          if log.train_dates else pl.DataFrame(schema=TRAIN_DATES_SCHEMA))
    return WalkForwardRun(
        predictions=pl.concat(collected) if collected else (None if sink else pl.DataFrame(schema=PREDICTION_SCHEMA)),
        loco_predictions=loco,
        folds=pl.DataFrame(fold_rows, schema=FOLD_SCHEMA),
        fit_log=fit_log, train_dates=td,
        meta_weights=pl.DataFrame(log.meta_weights, schema=META_WEIGHT_SCHEMA) if log.meta_weights
        else pl.DataFrame(schema=META_WEIGHT_SCHEMA),
        recipes=recipes, shrinkage=shr.table() if shr is not None else pl.DataFrame(schema=SHRINKAGE_SCHEMA),
        seconds=time.perf_counter() - t_start,
        settings={"folds_run": int(sum(1 for r in fold_rows if r["status"] == "ok" and r["event_id"] is None)),
                  "loco_events_run": len(loco_parts), "fits": int(sum(1 for r in log.rows if not r["cached"])),
                  "reused": int(sum(1 for r in log.rows if r["cached"])),
                  "champion_recipe": None if champion is None else champion.recipe_hash},
    )
