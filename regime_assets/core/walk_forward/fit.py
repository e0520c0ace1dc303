"""What is fitted per fold: the production recipe of every candidate, the baselines and the ablation arms.

Production recipe (the same core functions the production assets call, sizes from ``walk_forward``):

1. training rows = the fold's window rows (source ``window``), archive rows dated before the purge (``archive``;
   when ``training_set.use_archive``) and the replay buffer (``replay``; when ``training_set.use_replay``): the
   worst ``replay_buffer.worst_fraction`` of the previous fold's out-of-sample rows by log-loss of its
   ``meta_learner`` (``core.replay_buffer.error_replay_buffer``), the rows of the window it may train on;
2. ``core.sampling.balanced_sample`` with ``target_size = min(balance.target_size,
   walk_forward.candidate_train_rows)``;
3. ``core.weights.sample_weights``;
4. every enabled spec model through ``core.models.fit_with_oof`` (inner holdout of the latest dates, ``horizon``
   purged), calibrated on the fold's window rows as they occur (its natural rows, spec ``calibration``), as the
   model assets do; ``n_estimators`` replaced by ``walk_forward.n_estimators`` and ``walk_forward.candidate_params``
   applied on top;
5. ``core.ensemble.fit_meta`` on their out-of-fold predictions (weighted, calibration anchored to the window's class
   frequencies as in production): the ``meta_learner`` candidate.

Baselines: ``baseline_prior`` predicts the class frequencies of the fold's window training rows,
``baseline_regime_prior`` those frequencies per regime (overall frequencies for a regime absent from training).

Ablation arms (``walk_forward.arms``, models ``walk_forward.models`` with ``walk_forward.model_params``; every arm
is tested on the fold's test rows, so differences are paired): ``unweighted`` (window rows capped at
``max_train_rows`` by a seeded draw), ``regime_weights`` (same rows, regime weights), ``regime_feature`` (same
rows, one-hot regime features), ``balanced`` (balanced sample of the window, unweighted), ``no_archive`` (the same
balanced rows, weighted), ``full`` (balanced window + archive, weighted). Production arms
(``walk_forward.production_arms``) are the production recipe with one part removed: ``no_archive``,
``no_replay``, ``no_balance`` (window + archive + replay rows drawn down to the same size, no balancing),
``no_weights``; their model is ``arm:production_<part>`` and they compare with ``meta_learner``.

Each result (a candidate's test probabilities plus, for a base model, its out-of-fold rows) is one fold-store entry
keyed by (fold window, the fold's rows hash, the recipe hash); see ``store.py``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

import numpy as np
import polars as pl

from regime_assets.core import ensemble as ensemble_core
from regime_assets.core import models as model_core
from regime_assets.core import replay_buffer as replay_core
from regime_assets.core import sampling as sampling_core
from regime_assets.core import weights as weights_core
from regime_assets.core.walk_forward.plan import Fold
from regime_assets.core.walk_forward.store import FoldStore, fold_key, rows_hash
from regime_assets.spec import CLASSES, REGIMES, ModelSpec, Spec

RECIPE_VERSION = "walk-forward-recipe-1"
PROBA: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)
TEST_COLUMNS: tuple[str, ...] = ("symbol", "date", "regime", "label", "fwd_return")
ARMS: tuple[str, ...] = ("unweighted", "regime_weights", "balanced", "regime_feature", "no_archive", "full")
PRODUCTION_ARMS: tuple[str, ...] = ("no_archive", "no_replay", "no_balance", "no_weights")
LOCO_ARMS: tuple[str, ...] = ("unweighted", "full")
BASELINE_ARM = "unweighted"
META_MODEL = "meta_learner"
BASELINE_PRIOR = "baseline_prior"
BASELINE_REGIME_PRIOR = "baseline_regime_prior"
BASELINES: tuple[str, ...] = (BASELINE_PRIOR, BASELINE_REGIME_PRIOR)
CHAMPION = "champion"
ONEHOT: tuple[str, ...] = tuple(f"regime_is_{r}" for r in REGIMES)
EVENT_COLUMNS = ("event_id", "event_regime", "event_weight")


class WalkForwardError(ValueError):
    """Inputs or settings the walk-forward cannot use; the message names what is wrong."""


def arm_model_name(arm: str, model: str, n_models: int) -> str:
    """``arm:<arm>`` (``arm:<arm>:<model>`` when the arms fit several models)."""
    return f"arm:{arm}" if n_models == 1 else f"arm:{arm}:{model}"


def production_arm_name(part: str) -> str:
    return f"arm:production_{part}"


# ----------------------------------------------------------------------------------------------- rows


class RowSource(Protocol):
    """Where a fold's rows come from (an in-memory frame in tests, the warehouse in the asset)."""

    features: list[str]

    def days(self) -> np.ndarray:
        """Sorted unique trading days (datetime64[D]) of labeled_samples and the archive."""

    def labeled(self, ranges: list[tuple[Any, Any]]) -> pl.DataFrame:
        """Labelled rows with a date in one of the inclusive ``ranges`` (None = open), columns
        ``TEST_COLUMNS + features``, sorted by symbol, date."""

    def archive(self, ranges: list[tuple[Any, Any]]) -> pl.DataFrame:
        """Labelled archive rows dated in ``ranges``: the labeled columns + ``event_id, event_regime,
        event_weight``, sorted by event_id, symbol, date."""

    def archive_events(self) -> pl.DataFrame:
        """``event_id, event_regime, lo, hi`` of the archive's events."""


def check_rows(df: pl.DataFrame, what: str) -> None:
    """Labels in CLASSES, regimes in REGIMES, no duplicate (symbol, date): else an error naming the row."""
    bad = df.filter(~pl.col("label").is_in(list(CLASSES)))
    if bad.height:
        sym, day, v = bad.select("symbol", "date", "label").row(0)
        raise WalkForwardError(f"walk forward: {what}: label {v!r} for symbol {sym} on {day} is not one of "
                               f"{list(CLASSES)}")
    bad = df.filter(pl.col("regime").is_null() | ~pl.col("regime").is_in(list(REGIMES)))
    if bad.height:
        sym, day, v = bad.select("symbol", "date", "regime").row(0)
        raise WalkForwardError(f"walk forward: {what}: regime {v!r} for symbol {sym} on {day} is not one of "
                               f"{list(REGIMES)}")
    keys = ["event_id", "symbol", "date"] if "event_id" in df.columns else ["symbol", "date"]
    dup = df.select(keys).is_duplicated()
    if dup.any():
        row = df.filter(dup).select(keys).row(0)
        raise WalkForwardError(f"walk forward: {what} has duplicate rows for {dict(zip(keys, row))}")


@dataclass
class FoldData:
    fold: Fold
    window: pl.DataFrame  # labelled training-window rows (TEST_COLUMNS + features)
    archive: pl.DataFrame  # archive rows allowed to train (+ EVENT_COLUMNS)
    test: pl.DataFrame  # labelled test rows
    data_hash: str = ""
    _matrix: "TestMatrix | None" = None

    def __post_init__(self) -> None:
        self.data_hash = rows_hash(self.window, self.archive, self.test)

    def matrix(self, features: list[str]) -> "TestMatrix":
        if self._matrix is None:
            self._matrix = TestMatrix(self.test, features)
        return self._matrix


def train_ranges(fold: Fold) -> list[tuple[Any, Any]]:
    out = []
    if fold.train_start is not None and fold.train_end is not None:
        out.append((fold.train_start, fold.train_end))
    if fold.after_start is not None and fold.after_end is not None:
        out.append((fold.after_start, fold.after_end))
    return out


def archive_ranges(fold: Fold) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    if fold.train_end is not None:
        out.append((None, fold.train_end))
    if fold.after_start is not None:
        out.append((fold.after_start, None))
    return out


def test_symbol_subset(test: pl.DataFrame, k: int | None, seed: int) -> pl.DataFrame:
    """At most ``k`` symbols of a test block: those with the smallest seeded hash of their name, so the same
    symbols are kept in every fold where they trade (None: all)."""
    if k is None or test.height == 0:
        return test
    syms = test.select(pl.col("symbol").unique())
    if syms.height <= k:
        return test
    keep = syms.with_columns(pl.col("symbol").hash(seed).alias("_h")).sort("_h", "symbol").head(k)["symbol"]
    return test.filter(pl.col("symbol").is_in(keep.implode()))


def load_fold(src: RowSource, fold: Fold, use_archive: bool, test_symbols: int | None = None,
              seed: int = 0) -> FoldData:
    ranges = train_ranges(fold)
    window = src.labeled(ranges) if ranges else src.labeled([]).head(0)
    arch = src.archive(archive_ranges(fold)) if use_archive and archive_ranges(fold) else src.archive([]).head(0)
    test = test_symbol_subset(src.labeled([(fold.test_start, fold.test_end)]), test_symbols, seed)
    for what, f in (("training rows", window), ("archive rows", arch), ("test rows", test)):
        check_rows(f, f"{fold.key} {what}")
    return FoldData(fold, window, arch, test)


# ----------------------------------------------------------------------------------------------- recipes


def _h(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


_CODE_HASH: str | None = None


def code_hash() -> str:
    """Hash of the recipe code (this module and the core modules it calls) and the model libraries' versions:
    a change of either gives new recipe hashes, so no stale fold is reused."""
    global _CODE_HASH
    if _CODE_HASH is None:
        import sys

        h = hashlib.sha256(RECIPE_VERSION.encode())
        mods = [model_core, ensemble_core, sampling_core, weights_core, replay_core, sys.modules[__name__]]
        try:
            from regime_assets.core import calibration as calibration_core

            mods.append(calibration_core)
        except ImportError:
            pass
        for mod in mods:
            h.update(inspect.getsource(mod).encode())
        for p in ("scikit-learn", "lightgbm", "xgboost", "numpy"):
            try:
                h.update(f"{p}={metadata.version(p)}".encode())
            except metadata.PackageNotFoundError:
                h.update(f"{p}=missing".encode())
        _CODE_HASH = h.hexdigest()[:16]
    return _CODE_HASH


def candidate_model_spec(spec: Spec, m: ModelSpec) -> ModelSpec:
    """A spec model as the walk-forward fits it: ``n_estimators`` from ``walk_forward``, then
    ``walk_forward.candidate_params[name]``."""
    params = dict(m.params)
    if "n_estimators" in params:
        params["n_estimators"] = spec.walk_forward.n_estimators
    params.update(spec.walk_forward.candidate_params.get(m.name, {}))
    if "n_jobs" in params:
        params["n_jobs"] = spec.walk_forward.fit_threads
    return m.model_copy(update={"params": params})


def arm_model_spec(spec: Spec, name: str) -> ModelSpec:
    """The ``spec.models`` entry ``name`` for arm fits: ``n_estimators`` from ``walk_forward``, then
    ``walk_forward.model_params[name]``."""
    m = next((x for x in spec.models if x.name == name), None)
    if m is None:
        raise WalkForwardError(f"walk forward: model {name!r} is not among spec.models")
    params = dict(m.params)
    if "n_estimators" in params:
        params["n_estimators"] = spec.walk_forward.n_estimators
    params.update(spec.walk_forward.model_params.get(name, {}))
    if "n_jobs" in params:
        params["n_jobs"] = spec.walk_forward.fit_threads
    return m.model_copy(update={"params": params})


@dataclass
class Recipe:
    """One spec's production recipe: its candidate model specs and the recipe hash of every output."""

    spec: Spec
    mspecs: dict[str, ModelSpec]
    hashes: dict[str, str]  # output name -> recipe hash
    arm_specs: dict[str, ModelSpec] = field(default_factory=dict)

    @property
    def target_size(self) -> int:
        return int(min(self.spec.balance.target_size, self.spec.walk_forward.candidate_train_rows))


def build_recipe(spec: Spec, with_arms: bool = True) -> Recipe:
    wf = spec.walk_forward
    common = {"v": RECIPE_VERSION, "code": code_hash(), "horizon": spec.labels.horizon, "threads": wf.fit_threads,
              "embargo": spec.training_set.embargo_days, "train_years": wf.train_years,
              "candidate_train_rows": wf.candidate_train_rows, "min_train_rows": wf.min_train_rows,
              "balance": spec.balance.model_dump(), "weights": spec.weights.model_dump(),
              "use_archive": spec.training_set.use_archive, "use_replay": spec.training_set.use_replay,
              "replay_buffer": spec.replay_buffer.model_dump(), "inner": spec.meta.inner_holdout_fraction,
              "calibration": spec.calibration.model_dump() if hasattr(spec, "calibration") else None}
    mspecs = {m.name: candidate_model_spec(spec, m) for m in spec.enabled_models}
    hashes = {n: _h({"common": common, "model": ms.model_dump()}) for n, ms in mspecs.items()}
    hashes[META_MODEL] = _h({"meta": spec.meta.model_dump(), "base": sorted(hashes.values()), "v": RECIPE_VERSION,
                             "calibration": common["calibration"]})
    for b in BASELINES:
        hashes[b] = _h({"baseline": b, "v": RECIPE_VERSION, "train_years": wf.train_years,
                        "horizon": spec.labels.horizon})
    arm_specs: dict[str, ModelSpec] = {}
    if with_arms:
        arm_specs = {m: arm_model_spec(spec, m) for m in wf.models}
        arm_common = {"v": RECIPE_VERSION, "code": code_hash(), "horizon": spec.labels.horizon, "threads": wf.fit_threads,
                      "train_years": wf.train_years, "max_train_rows": wf.max_train_rows, "seed": wf.seed,
                      "balance": spec.balance.model_dump(), "weights": spec.weights.model_dump()}
        for arm in wf.arms:
            for m, ms in arm_specs.items():
                hashes[arm_model_name(arm, m, len(arm_specs))] = _h({"arm": arm, "common": arm_common,
                                                                     "model": ms.model_dump()})
        for part in wf.production_arms:
            hashes[production_arm_name(part)] = _h({"production_arm": part, "meta": hashes[META_MODEL]})
    return Recipe(spec, mspecs, hashes, arm_specs)


def check_spec(spec: Spec) -> None:
    wf = spec.walk_forward
    unknown = [a for a in wf.arms if a not in ARMS]
    if unknown:
        raise WalkForwardError(f"walk_forward.arms: unknown arms {unknown}; known arms are {list(ARMS)}")
    if wf.arms and BASELINE_ARM not in wf.arms:
        raise WalkForwardError(f"walk_forward.arms must include the reference arm '{BASELINE_ARM}'")
    if len(set(wf.arms)) != len(wf.arms):
        raise WalkForwardError(f"walk_forward.arms has duplicates: {wf.arms}")
    bad = [p for p in wf.production_arms if p not in PRODUCTION_ARMS]
    if bad:
        raise WalkForwardError(f"walk_forward.production_arms: unknown {bad}; known are {list(PRODUCTION_ARMS)}")
    if wf.arms and not wf.models:
        raise WalkForwardError("walk_forward.models is empty but walk_forward.arms is not")
    names = {m.name for m in spec.models}
    missing = [m for m in wf.models if m not in names]
    if missing:
        raise WalkForwardError(f"walk_forward.models: {missing} not among spec.models {sorted(names)}")
    for what, d in (("model_params", wf.model_params),):
        bad = [m for m in d if m not in names]
        if bad:
            raise WalkForwardError(f"walk_forward.{what}: {bad} not among spec.models {sorted(names)}")
    if not spec.enabled_models:
        raise WalkForwardError("walk forward: no enabled model in spec.models")


# ----------------------------------------------------------------------------------------------- fitting


@dataclass
class FitLog:
    rows: list[dict[str, Any]] = field(default_factory=list)
    train_dates: list[pl.DataFrame] = field(default_factory=list)
    meta_weights: list[dict[str, Any]] = field(default_factory=list)

    def add(self, fold: Fold, model: str, rows: pl.DataFrame | None, seconds: float, cached: bool) -> None:
        src = rows.get_column("source") if rows is not None and "source" in rows.columns else None
        self.rows.append({
            "fold": fold.fold, "fold_key": fold.key, "model": model, "cached": cached,
            "train_rows": None if rows is None else rows.height,
            "window_rows": None if src is None else int((src == "window").sum()),
            "archive_rows": None if src is None else int((src == "archive").sum()),
            "replay_rows": None if src is None else int((src == "replay").sum()),
            "seconds": seconds})

    def dates(self, fold: Fold, group: str, rows: pl.DataFrame) -> None:
        self.train_dates.append(rows.group_by("source", "date").agg(pl.len().cast(pl.Int64).alias("rows"))
                                .with_columns(pl.lit(fold.fold, dtype=pl.Int64).alias("fold"),
                                              pl.lit(fold.key).alias("fold_key"), pl.lit(group).alias("arm")))


def _tagged(frame: pl.DataFrame, source: str, features: list[str]) -> pl.DataFrame:
    cols = ["symbol", "date", "regime", "label", *features]
    out = frame.select(cols).with_columns(pl.lit(source).alias("source"), pl.lit("train").alias("split"))
    if "event_id" in frame.columns:
        return out.with_columns(frame.get_column("event_id").cast(pl.Utf8),
                                frame.get_column("event_weight").cast(pl.Float64))
    return out.with_columns(pl.lit(None, dtype=pl.Utf8).alias("event_id"),
                            pl.lit(None, dtype=pl.Float64).alias("event_weight"))


def replay_rows(window: pl.DataFrame, previous: pl.DataFrame | None, spec: Spec) -> pl.DataFrame:
    """The replay buffer of a fold: the worst rows of the previous fold's out-of-sample ``meta_learner``
    predictions (``symbol, date, label, p_*``) among the window rows, as window rows (features included)."""
    if previous is None or previous.height == 0 or window.height == 0 or not spec.training_set.use_replay:
        return window.head(0)
    recent = previous.join(window.select("symbol", "date"), on=["symbol", "date"], how="semi").sort("symbol", "date")
    if recent.height == 0:
        return window.head(0)
    buf = replay_core.error_replay_buffer(recent.select("symbol", "date", "label"),
                                          recent.select(PROBA).to_numpy(), spec.replay_buffer)
    return window.join(buf.select("symbol", "date"), on=["symbol", "date"], how="semi")


def production_pool(data: FoldData, replay: pl.DataFrame, features: list[str], archive: bool = True,
                    with_replay: bool = True) -> pl.DataFrame:
    parts = [_tagged(data.window, "window", features)]
    if archive and data.archive.height:
        parts.append(_tagged(data.archive, "archive", features))
    if with_replay and replay.height:
        parts.append(_tagged(replay, "replay", features))
    return pl.concat(parts, how="vertical_relaxed")


def production_set(pool: pl.DataFrame, recipe: Recipe, balance: bool = True, weights: bool = True
                   ) -> tuple[pl.DataFrame, np.ndarray]:
    """(training rows with ``row_id``, weights): balanced sample + sample weights, as the production assets."""
    spec = recipe.spec
    if balance:
        bspec = spec.balance.model_copy(update={"target_size": recipe.target_size})
        rows, _ = sampling_core.balanced_sample(pool, bspec)
    else:
        rng = np.random.default_rng(spec.balance.seed)
        keep = np.arange(pool.height)
        if keep.size > recipe.target_size:
            keep = np.sort(rng.choice(keep, size=recipe.target_size, replace=False))
        rows = pool[keep].with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("row_id"))
    w = weights_core.sample_weights(rows, spec.weights).get_column("weight").to_numpy()
    if not weights:
        w = np.ones(rows.height)
    return rows, w


class TestMatrix:
    """The fold's test features as one float64 matrix (NaN where missing), converted once per fold; each model
    fills it with its own training medians (as ``FittedModel.matrix`` does) and predicts."""

    def __init__(self, test: pl.DataFrame, features: list[str]) -> None:
        self.features = list(features)
        self.X = model_core._matrix(test, self.features, "walk-forward test rows") if test.height else \
            np.zeros((0, len(self.features)))

    def predict(self, fitted: model_core.FittedModel) -> np.ndarray:
        if fitted.features != self.features:
            raise WalkForwardError(f"walk forward: model {fitted.name} was fitted on other features")
        return fitted.predict_proba_matrix(model_core._fill(self.X, fitted.medians))


def _fit_with_oof(mspec: ModelSpec, rows: pl.DataFrame, w: np.ndarray, features: list[str], spec: Spec,
                  natural: pl.DataFrame) -> tuple[model_core.FittedModel, pl.DataFrame]:
    """``models.fit_with_oof`` as the model assets call it: calibrated on the window's natural rows (the fold's
    labelled window rows as they occur) when the recipe calibrates."""
    cal = getattr(spec, "calibration", None)
    params = inspect.signature(model_core.fit_with_oof).parameters
    if cal is None or "natural" not in params:
        return model_core.fit_with_oof(mspec, rows, w, features, spec.meta.inner_holdout_fraction,
                                       spec.labels.horizon)
    return model_core.fit_with_oof(mspec, rows, w, features, spec.meta.inner_holdout_fraction, spec.labels.horizon,
                                   natural=natural, calibration=cal, wspec=spec.weights)


def _fit_meta(oofs: dict[str, pl.DataFrame], spec: Spec, natural: pl.DataFrame):
    """``ensemble.fit_meta`` as the meta-learner asset calls it (calibration anchored to the window's class
    frequencies, which the base models' calibration reports carry in production)."""
    cal = getattr(spec, "calibration", None)
    params = inspect.signature(ensemble_core.fit_meta).parameters
    if cal is None or "calibration" not in params:
        return ensemble_core.fit_meta(oofs, spec.meta)
    prior = None
    if getattr(cal, "anchor", "none") == "window" and natural.height:
        y = model_core.encode_labels(natural.get_column("label"), "walk-forward window labels")
        prior = np.bincount(y, minlength=len(CLASSES)) / y.size
    return ensemble_core.fit_meta(oofs, spec.meta, calibration=cal, prior=prior)


def _entry(test: pl.DataFrame, proba: np.ndarray, oof: pl.DataFrame | None = None) -> pl.DataFrame:
    t = test.select("symbol", "date").with_columns(
        pl.lit("test").alias("part"), pl.lit(None, dtype=pl.Int64).alias("row_id"),
        pl.lit(None, dtype=pl.Utf8).alias("regime"), pl.lit(None, dtype=pl.Utf8).alias("label"),
        *[pl.Series(c, proba[:, i], dtype=pl.Float64) for i, c in enumerate(PROBA)],
        pl.lit(None, dtype=pl.Float64).alias("weight"))
    if oof is None or oof.height == 0:
        return t
    weight = pl.col("weight").cast(pl.Float64) if "weight" in oof.columns else pl.lit(1.0, dtype=pl.Float64)
    o = oof.select(pl.lit(None, dtype=pl.Utf8).alias("symbol"), pl.col("date").cast(pl.Date),
                   pl.lit("oof").alias("part"), pl.col("row_id").cast(pl.Int64), pl.col("regime").cast(pl.Utf8),
                   pl.col("label").cast(pl.Utf8), *[pl.col(c).cast(pl.Float64) for c in PROBA], weight.alias("weight"))
    return pl.concat([t, o.select(t.columns)], how="vertical")


def _test_proba(entry: pl.DataFrame, test: pl.DataFrame, what: str) -> np.ndarray:
    t = entry.filter(pl.col("part") == "test")
    if t.height != test.height or not t.select("symbol", "date").equals(test.select("symbol", "date")):
        raise WalkForwardError(f"walk forward: stored fold entry of {what} does not match the fold's test rows")
    return t.select(PROBA).to_numpy()


def _oof(entry: pl.DataFrame) -> pl.DataFrame:
    cols = ["row_id", "date", "regime", "label", *PROBA, *(["weight"] if "weight" in entry.columns else [])]
    return entry.filter(pl.col("part") == "oof").select(cols)


@dataclass
class FoldOutput:
    probs: dict[str, np.ndarray]  # output name -> (n_test, 3)
    hashes: dict[str, str]  # output name -> recipe hash


def fit_production(data: FoldData, replay: pl.DataFrame, recipe: Recipe, store: FoldStore, log: FitLog,
                   features: list[str], emit: set[str] | None = None) -> FoldOutput:
    """Every candidate of ``recipe`` on one fold (read from ``store`` where found)."""
    fold, test = data.fold, data.test
    rhash = data.data_hash + ":" + rows_hash(replay.select("symbol", "date"))
    keys = {n: fold_key(fold.window, rhash, recipe.hashes[n]) for n in [*recipe.mspecs, META_MODEL]}
    entries = {n: store.get(k) for n, k in keys.items()}
    train: tuple[pl.DataFrame, np.ndarray] | None = None
    for name, mspec in recipe.mspecs.items():
        if entries[name] is not None:
            log.add(fold, name, None, 0.0, True)
            continue
        if train is None:
            train = production_set(production_pool(data, replay, features), recipe)
            log.dates(fold, "production", train[0])
        t0 = time.perf_counter()
        fitted, oof = _fit_with_oof(mspec, train[0], train[1], features, recipe.spec, data.window)
        entries[name] = _entry(test, data.matrix(features).predict(fitted), oof)
        store.put(keys[name], entries[name])
        log.add(fold, name, train[0], time.perf_counter() - t0, False)
        del fitted
    probs = {n: _test_proba(entries[n], test, n) for n in recipe.mspecs}
    if entries[META_MODEL] is None:
        t0 = time.perf_counter()
        learner = _fit_meta({n: _oof(entries[n]) for n in recipe.mspecs}, recipe.spec, data.window)
        entries[META_MODEL] = _entry(test, learner.predict_proba_from(probs))
        store.put(keys[META_MODEL], entries[META_MODEL])
        log.add(fold, META_MODEL, train[0] if train is not None else None, time.perf_counter() - t0, False)
        log.meta_weights.extend({"fold": fold.fold, "fold_key": fold.key, "model": m, "method": learner.method,
                                 "oof_metric": learner.metric, "oof_value": float(v), "weight": float(x)}
                                for m, v, x in zip(learner.models, learner.oof_metric, learner.weights))
    else:
        log.add(fold, META_MODEL, None, 0.0, True)
    probs[META_MODEL] = _test_proba(entries[META_MODEL], test, META_MODEL)
    names = set(probs) if emit is None else emit
    return FoldOutput({n: p for n, p in probs.items() if n in names},
                      {n: recipe.hashes[n] for n in probs if n in names})


def fit_production_arms(data: FoldData, replay: pl.DataFrame, recipe: Recipe, store: FoldStore, log: FitLog,
                        features: list[str], parts: list[str]) -> FoldOutput:
    """The production recipe with one part removed (``no_archive``, ``no_replay``, ``no_balance``,
    ``no_weights``); only its meta-learner's probabilities are kept."""
    fold, test = data.fold, data.test
    rhash = data.data_hash + ":" + rows_hash(replay.select("symbol", "date"))
    out = FoldOutput({}, {})
    for part in parts:
        name = production_arm_name(part)
        key = fold_key(fold.window, rhash, recipe.hashes[name])
        entry = store.get(key)
        if entry is None:
            t0 = time.perf_counter()
            pool = production_pool(data, replay, features, archive=part != "no_archive",
                                   with_replay=part != "no_replay")
            rows, w = production_set(pool, recipe, balance=part != "no_balance", weights=part != "no_weights")
            log.dates(fold, name, rows)
            oofs, probs = {}, {}
            for n, mspec in recipe.mspecs.items():
                fitted, oofs[n] = _fit_with_oof(mspec, rows, w, features, recipe.spec, data.window)
                probs[n] = data.matrix(features).predict(fitted)
                del fitted
            learner = _fit_meta(oofs, recipe.spec, data.window)
            entry = _entry(test, learner.predict_proba_from(probs))
            store.put(key, entry)
            log.add(fold, name, rows, time.perf_counter() - t0, False)
        else:
            log.add(fold, name, None, 0.0, True)
        out.probs[name] = _test_proba(entry, test, name)
        out.hashes[name] = recipe.hashes[name]
    return out


def baseline_probs(data: FoldData, recipe: Recipe) -> FoldOutput:
    """Class frequencies of the fold's window training rows, overall and per regime."""
    y = model_core.encode_labels(data.window.get_column("label"), f"{data.fold.key} training labels")
    k = len(CLASSES)
    overall = np.bincount(y, minlength=k) / max(y.size, 1)
    n = data.test.height
    prior = np.tile(overall, (n, 1))
    reg_train = data.window.get_column("regime").to_numpy()
    reg_test = data.test.get_column("regime").to_numpy()
    by_regime = prior.copy()
    for r in REGIMES:
        yr = y[reg_train == r]
        if yr.size:
            by_regime[reg_test == r] = np.bincount(yr, minlength=k) / yr.size
    return FoldOutput({BASELINE_PRIOR: prior, BASELINE_REGIME_PRIOR: by_regime},
                      {b: recipe.hashes[b] for b in BASELINES})


def _with_onehot(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns([(pl.col("regime") == r).cast(pl.Float64).alias(c) for r, c in zip(REGIMES, ONEHOT)])


def fit_arms(data: FoldData, recipe: Recipe, store: FoldStore, log: FitLog, features: list[str],
             arms: list[str], seed: tuple[int, ...]) -> FoldOutput:
    """The ablation arms (see the module doc) with ``walk_forward.models``."""
    spec, wf = recipe.spec, recipe.spec.walk_forward
    fold, test = data.fold, data.test
    out = FoldOutput({}, {})
    n_models = len(recipe.arm_specs)
    todo: list[tuple[str, str, str]] = []
    for arm in arms:
        for m in recipe.arm_specs:
            name = arm_model_name(arm, m, n_models)
            key = fold_key(fold.window, data.data_hash, recipe.hashes[name])
            entry = store.get(key)
            if entry is None:
                todo.append((arm, m, key))
            else:
                log.add(fold, name, None, 0.0, True)
                out.probs[name] = _test_proba(entry, test, name)
                out.hashes[name] = recipe.hashes[name]
    if not todo:
        return out
    rng = np.random.default_rng(list(seed))
    win = _tagged(data.window, "window", features)
    keep = np.arange(win.height)
    if keep.size > wf.max_train_rows:
        keep = np.sort(rng.choice(keep, size=wf.max_train_rows, replace=False))
    plain = win[keep].with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("row_id"))
    bspec = spec.balance.model_copy(update={"target_size": min(spec.balance.target_size, wf.max_train_rows)})
    sets: dict[str, tuple[pl.DataFrame, np.ndarray | None, list[str]]] = {}
    need = {a for a, _, _ in todo}
    if need & {"balanced", "no_archive"}:
        bal, _ = sampling_core.balanced_sample(win, bspec)
        sets["balanced"] = (bal, None, features)
        sets["no_archive"] = (bal, weights_core.sample_weights(bal, spec.weights).get_column("weight").to_numpy(),
                              features)
    if "unweighted" in need:
        sets["unweighted"] = (plain, None, features)
    if "regime_weights" in need:
        sets["regime_weights"] = (plain, weights_core.sample_weights(plain, spec.weights)
                                  .get_column("weight").to_numpy(), features)
    if "regime_feature" in need:
        sets["regime_feature"] = (_with_onehot(plain), None, [*features, *ONEHOT])
    if "full" in need:
        pool = production_pool(data, win.head(0), features, archive=True, with_replay=False)
        full, _ = sampling_core.balanced_sample(pool, bspec)
        sets["full"] = (full, weights_core.sample_weights(full, spec.weights).get_column("weight").to_numpy(),
                        features)
    test_oh = _with_onehot(test) if "regime_feature" in need else None
    logged: set[str] = set()
    for arm, m, key in todo:
        rows, w, feats = sets[arm]
        if arm not in logged:
            log.dates(fold, arm, rows)
            logged.add(arm)
        name = arm_model_name(arm, m, n_models)
        t0 = time.perf_counter()
        fitted = model_core.fit_model(recipe.arm_specs[m], rows, w, feats)
        p = fitted.predict_proba(test_oh) if arm == "regime_feature" else data.matrix(features).predict(fitted)
        entry = _entry(test, p)
        store.put(key, entry)
        log.add(fold, name, rows, time.perf_counter() - t0, False)
        out.probs[name] = p
        out.hashes[name] = recipe.hashes[name]
    return out
