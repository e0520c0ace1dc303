"""Base classifiers: build from a ``ModelSpec``, fit with sample weights, honest out-of-fold predictions.

Every model is trained on the ``f_*`` feature matrix with ``label`` mapped to ``CLASSES`` indices (sell 0, hold 1,
buy 2) and the row weights of ``sample_weights``. Missing values (null, NaN, +-inf) are filled with the training
medians, which are stored in the ``FittedModel`` together with the feature list, so prediction on a new frame is
self-contained. ``FittedModel.predict_proba`` always returns an ``(n, 3)`` array in ``CLASSES`` order; a class that
was absent from the training rows gets probability 0.

Wrapping: ``scale`` puts a ``StandardScaler`` in front (``Pipeline(scale, model)``), ``calibrate`` wraps the
estimator in ``CalibratedClassifierCV(method="sigmoid", cv=3)`` -- a probability wrapper for estimators without
``predict_proba`` (hinge-loss SVMs), fitted on the model's own balanced, weighted rows, so it does not correct the
priors. Sample weights reach the final estimator in both cases: through ``model__sample_weight`` for the pipeline,
and ``CalibratedClassifierCV.fit(sample_weight=...)`` which passes them to every inner fit and to the calibrator.
When scikit-learn metadata routing is enabled the weights are requested explicitly instead (the scaler is fitted
unweighted either way).

The production recipe is ``fit_with_oof``: an inner model fitted before a purged holdout of the latest training
dates predicts the held-out rows; with ``natural`` rows (the training window's rows as they occur, not the
balanced resample) those predictions calibrate the model against the window's true class frequencies
(``core/calibration.py``, spec ``calibration``) and are the honest out-of-fold (OOF) predictions the
meta-learner fits on; the final model is refitted on every training row and carries the calibrator, so its
``predict_proba`` is calibrated (``raw_proba_matrix`` gives the estimator's own probabilities).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import platform
import time
from importlib import metadata
from typing import Any

import numpy as np
import polars as pl

from regime_assets.core.calibration import Calibrator, fit_calibrator_honest
from regime_assets.spec import CLASSES, CalibrationSpec, ModelSpec, WeightSpec

CALIBRATION_METHOD = "sigmoid"
CALIBRATION_CV = 3
PREDICT_CHUNK_ROWS = 250_000
PROBA_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)
OOF_COLUMNS: tuple[str, ...] = ("row_id", "date", "regime", "label", *PROBA_COLUMNS)
RAW_COLUMNS: tuple[str, ...] = tuple(f"raw_p_{c}" for c in CLASSES)  # OOF before calibration
VERSION_PACKAGES: tuple[str, ...] = (
    "numpy", "polars", "scipy", "scikit-learn", "xgboost", "lightgbm", "shap", "arch", "joblib", "pandas",
)


class ModelError(ValueError):
    """A model or training frame that cannot be used; the message names what is wrong."""


# ----------------------------------------------------------------------------------------------- helpers


def feature_columns(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("f_")]


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuplify(x) for k, x in v.items()}
    return v


def _import_estimator(path: str, model: str) -> type:
    mod_name, _, cls_name = path.rpartition(".")
    if not mod_name:
        raise ModelError(f"model {model}: estimator '{path}' is not a dotted import path")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise ModelError(f"model {model}: cannot import module '{mod_name}' ({err})") from None
    cls = getattr(mod, cls_name, None)
    if cls is None:
        raise ModelError(f"model {model}: module '{mod_name}' has no attribute '{cls_name}'")
    return cls


def _routing_enabled() -> bool:
    import sklearn

    return bool(sklearn.get_config().get("enable_metadata_routing", False))


def build_estimator(mspec: ModelSpec) -> Any:
    """The unfitted estimator of a spec: import, params (lists -> tuples), optional calibration and scaling."""
    cls = _import_estimator(mspec.estimator, mspec.name)
    params = {k: _tuplify(v) for k, v in mspec.params.items()}
    try:
        est = cls(**params)
    except TypeError as err:
        raise ModelError(f"model {mspec.name}: bad params for {mspec.estimator} ({err})") from None
    if mspec.calibrate:
        from sklearn.calibration import CalibratedClassifierCV

        est = CalibratedClassifierCV(estimator=est, method=CALIBRATION_METHOD, cv=CALIBRATION_CV)
    if mspec.scale:
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        est = Pipeline([("scale", StandardScaler()), ("model", est)])
    return est


def _fit_weighted(est: Any, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> Any:
    """Fit with sample weights reaching the final estimator, with or without metadata routing."""
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import has_fit_parameter

    final = est.steps[-1][1] if isinstance(est, Pipeline) else est
    if not has_fit_parameter(final, "sample_weight"):
        raise ModelError(f"{type(final).__name__}.fit does not accept sample_weight")

    if _routing_enabled():
        from sklearn.calibration import CalibratedClassifierCV

        if isinstance(est, Pipeline):
            for _, step in est.steps[:-1]:
                if hasattr(step, "set_fit_request"):
                    step.set_fit_request(sample_weight=False)
        if isinstance(final, CalibratedClassifierCV) and hasattr(final.estimator, "set_fit_request"):
            final.estimator.set_fit_request(sample_weight=True)
        if isinstance(est, Pipeline) and hasattr(final, "set_fit_request"):
            final.set_fit_request(sample_weight=True)
        return est.fit(X, y, sample_weight=w)
    if isinstance(est, Pipeline):
        return est.fit(X, y, **{f"{est.steps[-1][0]}__sample_weight": w})
    return est.fit(X, y, sample_weight=w)


def _nan_medians(X: np.ndarray) -> np.ndarray:
    if X.shape[0] == 0:
        return np.zeros(X.shape[1])
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(X, axis=0)
    return np.where(np.isfinite(med), med, 0.0)


def _matrix(df: pl.DataFrame, features: list[str], what: str) -> np.ndarray:
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise ModelError(f"{what}: missing feature columns {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if not features:
        raise ModelError(f"{what}: no feature columns")
    bad = [f for f in features if not (df.schema[f].is_numeric() or df.schema[f] == pl.Boolean)]
    if bad:
        raise ModelError(f"{what}: feature columns must be numeric, got {[(f, str(df.schema[f])) for f in bad[:5]]}")
    X = df.select(pl.col(features).cast(pl.Float64)).to_numpy()
    X = np.ascontiguousarray(X, dtype=np.float64)
    X[~np.isfinite(X)] = np.nan
    return X


def _fill(X: np.ndarray, medians: np.ndarray) -> np.ndarray:
    bad = np.isnan(X)
    if bad.any():
        X = np.where(bad, medians[None, :], X)
    return X


def encode_labels(labels: pl.Series | np.ndarray | list, what: str = "labels") -> np.ndarray:
    """Map label strings (CLASSES) or codes 0/1/2 to an int array; unknown or null labels raise."""
    s = labels if isinstance(labels, pl.Series) else pl.Series("label", labels)
    if s.dtype.is_integer():
        arr = s.to_numpy()
        if s.null_count() or ((arr < 0) | (arr >= len(CLASSES))).any():
            raise ModelError(f"{what}: integer labels must be 0..{len(CLASSES) - 1} without nulls")
        return arr.astype(np.int64)
    if s.null_count():
        raise ModelError(f"{what}: {s.null_count()} null labels (unlabelled rows cannot be used)")
    codes = s.cast(pl.Utf8).replace_strict(list(CLASSES), list(range(len(CLASSES))), default=None,
                                           return_dtype=pl.Int64)
    if codes.null_count():
        bad = s.filter(codes.is_null()).unique().to_list()[:5]
        raise ModelError(f"{what}: unknown labels {bad}; expected {list(CLASSES)}")
    return codes.to_numpy().astype(np.int64)


def _check_weights(weights: np.ndarray | None, n: int, model: str) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape[0] != n:
        raise ModelError(f"model {model}: {w.shape[0]} sample weights for {n} training rows")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ModelError(f"model {model}: sample weights must be finite and >= 0")
    if w.sum() <= 0:
        raise ModelError(f"model {model}: sample weights sum to 0")
    return w


# ----------------------------------------------------------------------------------------------- fitted model


class FittedModel:
    """A fitted estimator with its feature list, training medians and the class codes it knows."""

    def __init__(self, name: str, estimator: Any, features: list[str], medians: np.ndarray,
                 present: np.ndarray, mspec: ModelSpec | None = None, n_train: int = 0,
                 fit_seconds: float = 0.0) -> None:
        self.name = name
        self.estimator = estimator
        self.features = list(features)
        self.medians = np.asarray(medians, dtype=np.float64)
        self.classes = CLASSES
        self.present = np.asarray(present, dtype=np.int64)  # CLASSES indices, in estimator output order
        self.spec = mspec.model_dump() if mspec is not None else None
        self.shap_kind = mspec.shap if mspec is not None else "none"
        self.n_train = int(n_train)
        self.fit_seconds = float(fit_seconds)
        self.calibrator: Calibrator | None = None  # set by fit_with_oof; applied by predict_proba
        self.calibration_report: dict[str, Any] = {}

    def __repr__(self) -> str:
        known = [CLASSES[i] for i in self.present]
        return f"FittedModel({self.name!r}, features={len(self.features)}, classes={known}, n_train={self.n_train})"

    def matrix(self, df: pl.DataFrame) -> np.ndarray:
        """Median-filled feature matrix of a frame, in this model's feature order."""
        return _fill(_matrix(df, self.features, f"model {self.name}"), self.medians)

    def predict_proba_matrix(self, X: np.ndarray) -> np.ndarray:
        """(n, 3) calibrated class probabilities in CLASSES order for a median-filled feature matrix."""
        p = self.raw_proba_matrix(X)
        cal = getattr(self, "calibrator", None)
        return p if cal is None else cal.transform(p)

    def raw_proba_matrix(self, X: np.ndarray) -> np.ndarray:
        """(n, 3) class probabilities of the estimator before calibration."""
        X = np.asarray(X, dtype=np.float64)
        out = np.zeros((X.shape[0], len(CLASSES)))
        if X.shape[0] == 0:
            return out
        if self.estimator is None:  # one class in training: constant prediction
            out[:, self.present[0]] = 1.0
            return out
        for start in range(0, X.shape[0], PREDICT_CHUNK_ROWS):
            part = np.asarray(self.estimator.predict_proba(X[start:start + PREDICT_CHUNK_ROWS]), dtype=np.float64)
            out[start:start + part.shape[0], self.present] = part
        out = np.clip(np.nan_to_num(out, nan=0.0), 0.0, None)
        s = out.sum(axis=1, keepdims=True)
        return np.where(s > 0, out / np.where(s > 0, s, 1.0), 1.0 / len(CLASSES))

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        """(n, 3) class probabilities in CLASSES order (built in row chunks to bound memory)."""
        if df.height <= PREDICT_CHUNK_ROWS:
            return self.predict_proba_matrix(self.matrix(df))
        return np.vstack([self.predict_proba_matrix(self.matrix(df.slice(start, PREDICT_CHUNK_ROWS)))
                          for start in range(0, df.height, PREDICT_CHUNK_ROWS)])

    # pieces used by the SHAP tables
    @property
    def final_estimator(self) -> Any:
        from sklearn.pipeline import Pipeline

        return self.estimator.steps[-1][1] if isinstance(self.estimator, Pipeline) else self.estimator

    def preprocess(self, X: np.ndarray) -> np.ndarray:
        """Apply the fitted steps before the final estimator (the scaler) to a median-filled matrix."""
        from sklearn.pipeline import Pipeline

        if isinstance(self.estimator, Pipeline) and len(self.estimator.steps) > 1:
            return self.estimator[:-1].transform(X)
        return X


def fit_model(mspec: ModelSpec, train: pl.DataFrame, weights: np.ndarray | None,
              features: list[str] | None = None) -> FittedModel:
    """Fit one model on the training rows with their sample weights (aligned with ``train`` row order)."""
    what = f"model {mspec.name}"
    if train.height == 0:
        raise ModelError(f"{what}: empty training frame")
    if "label" not in train.columns:
        raise ModelError(f"{what}: training frame has no 'label' column")
    feats = list(features) if features is not None else feature_columns(train)
    X = _matrix(train, feats, what)
    y = encode_labels(train["label"], f"{what} training labels")
    w = _check_weights(weights, train.height, mspec.name)
    medians = _nan_medians(X)
    X = _fill(X, medians)
    present = np.unique(y[w > 0]) if (w > 0).any() else np.unique(y)
    keep = np.isin(y, present)
    t0 = time.perf_counter()
    if present.size < 2:
        est = None
    else:
        remap = np.full(len(CLASSES), -1, dtype=np.int64)
        remap[present] = np.arange(present.size)
        est = build_estimator(mspec)
        try:
            _fit_weighted(est, X[keep], remap[y[keep]], w[keep])
        except ModelError as err:
            raise ModelError(f"{what}: {err}") from None
        except ValueError as err:
            raise ModelError(f"{what}: fit failed ({err})") from err
    return FittedModel(mspec.name, est, feats, medians, present, mspec, n_train=train.height,
                       fit_seconds=time.perf_counter() - t0)


def oof_frame(rows: pl.DataFrame, proba: np.ndarray) -> pl.DataFrame:
    """The OOF contract frame: row_id, date, regime, label, p_sell, p_hold, p_buy."""
    base = rows.select([c for c in OOF_COLUMNS[:4] if c in rows.columns])
    probs = pl.DataFrame({c: proba[:, i] for i, c in enumerate(PROBA_COLUMNS)},
                         schema={c: pl.Float64 for c in PROBA_COLUMNS})
    return pl.concat([base, probs], how="horizontal")


def inner_split(dates: pl.Series, inner_holdout_fraction: float, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (fit, holdout): holdout = latest fraction of distinct dates, ``horizon`` dates purged before."""
    if dates.null_count():
        raise ModelError(f"training frame: {dates.null_count()} null dates")
    uniq = dates.unique().sort()
    n = uniq.len()
    n_hold = max(1, int(math.ceil(inner_holdout_fraction * n)))
    if n_hold + horizon >= n:
        raise ModelError(f"training frame: {n} distinct dates are too few for an inner holdout of {n_hold} dates "
                         f"and a purge of {horizon} dates")
    rank = dates.to_frame("date").join(uniq.to_frame("date").with_row_index("k"), on="date", how="left")["k"]
    k = rank.to_numpy().astype(np.int64)
    hold_start = n - n_hold
    return k < hold_start - horizon, k >= hold_start


def holdout_cut(dates: pl.Series, holdout_fraction: float, horizon: int) -> tuple[Any, Any]:
    """(purge_start, hold_start) dates of an inner split of ``dates``: the holdout is the latest
    ``holdout_fraction`` of the distinct dates (from ``hold_start`` on); rows dated before ``purge_start`` may fit
    (the ``horizon`` dates in between are purged: their labels look into the holdout)."""
    if dates.null_count():
        raise ModelError(f"training frame: {dates.null_count()} null dates")
    uniq = dates.unique().sort()
    n = uniq.len()
    n_hold = max(1, int(math.ceil(holdout_fraction * n)))
    if n_hold + horizon >= n:
        raise ModelError(f"training frame: {n} distinct dates are too few for an inner holdout of {n_hold} dates "
                         f"and a purge of {horizon} dates")
    return uniq[n - n_hold - horizon], uniq[n - n_hold]


def calibration_method(mspec: ModelSpec, cspec: CalibrationSpec | None) -> str:
    """The calibration method of a model: its own override, else the section's; 'none' when disabled/absent."""
    if cspec is None or not cspec.enabled:
        return "none"
    own = getattr(mspec, "calibration", "default")
    return cspec.method if own in (None, "default") else own


def _with_row_id(rows: pl.DataFrame) -> pl.DataFrame:
    if "row_id" in rows.columns:
        return rows
    keys = [c for c in ("symbol", "date") if c in rows.columns]
    return (rows.sort(keys) if keys else rows).with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))


def natural_weights(rows: pl.DataFrame, wspec: WeightSpec | None) -> np.ndarray:
    """Regime x event weights (mean 1) of natural rows, as the balanced rows get them; ones without a spec."""
    if wspec is None or rows.height == 0:
        return np.ones(rows.height)
    from regime_assets.core.weights import sample_weights

    src = pl.col("source") if "source" in rows.columns else pl.lit("window")
    ew = pl.col("event_weight").cast(pl.Float64) if "event_weight" in rows.columns else pl.lit(None, pl.Float64)
    frame = rows.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("row_id"), "regime", src.alias("source"),
                        ew.alias("event_weight"))
    return sample_weights(frame, wspec).get_column("weight").to_numpy()


def fit_with_oof(mspec: ModelSpec, train: pl.DataFrame, weights: np.ndarray | None, features: list[str] | None,
                 inner_holdout_fraction: float, horizon: int, natural: pl.DataFrame | None = None,
                 calibration: CalibrationSpec | None = None, wspec: WeightSpec | None = None,
                 ) -> tuple[FittedModel, pl.DataFrame]:
    """The production recipe of one model: final model on every training row, calibrated, plus honest
    out-of-fold (OOF) predictions (columns ``OOF_COLUMNS`` + ``weight`` + ``RAW_COLUMNS``).

    * ``train``/``weights``: the (balanced) training rows and their sample weights.
    * ``natural``: the natural-distribution rows of the same training window (e.g. the window's train-split rows,
      not resampled, unweighted). When given, the inner split is cut on ITS dates: the latest
      ``calibration.holdout_fraction`` (None: ``inner_holdout_fraction``) of them are held out, the ``horizon``
      dates before are purged; an inner model fitted on the training rows before the purge predicts the held-out
      natural rows; the calibrator is fitted on those predictions against the true labels (so it restores the
      window's true class frequencies) and the OOF frame holds the calibrated predictions on those rows
      (``weight``: their regime x event weights from ``wspec``). Without ``natural`` the OOF rows are the held-out
      training rows (``weight``: their sample weights) and no calibrator is fitted (they carry the shifted
      priors).
    * The final model is refitted on every training row and carries the inner fit's calibrator
      (``FittedModel.calibrator``, ``calibration_report``): its ``predict_proba`` is calibrated.
    """
    for c in ("row_id", "date", "regime", "label"):
        if c not in train.columns:
            raise ModelError(f"model {mspec.name}: training frame has no '{c}' column")
    w = _check_weights(weights, train.height, mspec.name)
    method = calibration_method(mspec, calibration)
    if natural is None:
        fit_mask, hold_mask = inner_split(train["date"], inner_holdout_fraction, horizon)
        if not fit_mask.any():
            raise ModelError(f"model {mspec.name}: no rows left to fit before the inner holdout")
        inner = fit_model(mspec, train.filter(pl.Series(fit_mask)), w[fit_mask], features)
        hold = train.filter(pl.Series(hold_mask))
        raw = inner.predict_proba(hold)
        oof = oof_frame(hold, raw).with_columns(pl.Series("weight", w[hold_mask], dtype=pl.Float64))
        oof = _add_raw(oof, raw)
        final = fit_model(mspec, train, w, inner.features)
        return final, oof
    for c in ("date", "regime", "label"):
        if c not in natural.columns:
            raise ModelError(f"model {mspec.name}: natural calibration rows have no '{c}' column")
    natural = _with_row_id(natural.filter(pl.col("label").is_not_null()))
    codes = encode_labels(natural["label"], f"model {mspec.name} natural labels")
    window_prior = np.bincount(codes, minlength=len(CLASSES)) / max(codes.size, 1)
    frac = (calibration.holdout_fraction if calibration is not None and calibration.holdout_fraction
            else inner_holdout_fraction)
    purge_start, hold_start = holdout_cut(natural["date"], frac, horizon)
    fit_mask = (train["date"] < purge_start).to_numpy()
    if not fit_mask.any():
        raise ModelError(f"model {mspec.name}: no training rows before {purge_start} (the inner holdout of the "
                         f"natural rows starts {hold_start})")
    inner = fit_model(mspec, train.filter(pl.Series(fit_mask)), w[fit_mask], features)
    hold = natural.filter(pl.col("date") >= hold_start)
    cap = calibration.max_rows if calibration is not None else hold.height
    if hold.height > cap:
        hold = hold.sample(cap, seed=calibration.seed if calibration is not None else 0)
    hold = hold.sort("date", *(["symbol"] if "symbol" in hold.columns else []))
    raw = inner.predict_proba(hold)
    y = encode_labels(hold["label"], f"model {mspec.name} calibration labels")
    cal = None
    if method != "none":
        cspec = calibration
        prior = window_prior if getattr(cspec, "anchor", "none") == "window" else None
        cal = fit_calibrator_honest(raw, y, hold["date"].to_physical().to_numpy(), method, cspec.l2, cspec.min_rows,
                                    prior)
    proba = cal.transform(raw) if cal is not None else raw
    oof = oof_frame(hold, proba).with_columns(pl.Series("weight", natural_weights(hold, wspec), dtype=pl.Float64))
    oof = _add_raw(oof, raw)
    final = fit_model(mspec, train, w, inner.features)
    final.calibrator = cal
    final.calibration_report = {
        "method": method if cal is None else cal.method, "requested": method,
        "holdout_start": str(hold_start), "purge_start": str(purge_start), "inner_rows": int(fit_mask.sum()),
        "window_prior": np.round(window_prior, 6).tolist(),
        **({} if cal is None else cal.report)}
    return final, oof


def _add_raw(oof: pl.DataFrame, raw: np.ndarray) -> pl.DataFrame:
    return oof.with_columns([pl.Series(c, raw[:, i], dtype=pl.Float64) for i, c in enumerate(RAW_COLUMNS)])


# ----------------------------------------------------------------------------------------------- provenance


def data_hash(frame: pl.DataFrame) -> str:
    """Stable sha256 (16 hex) of a frame's content, independent of row and column order."""
    cols = sorted(frame.columns)
    df = frame.select(cols)
    if df.height:
        df = df.sort(cols, nulls_last=True)
    h = hashlib.sha256()
    h.update(f"rows={df.height}".encode())
    for c in cols:
        s = df[c]
        h.update(f"|{c}:{s.dtype}|".encode())
        nulls = s.is_null().to_numpy()
        h.update(np.packbits(nulls).tobytes())
        if s.dtype.is_numeric() or s.dtype == pl.Boolean:
            h.update(s.cast(pl.Float64).fill_null(0.0).to_numpy().tobytes())
        elif s.dtype.is_temporal():
            h.update(s.to_physical().cast(pl.Int64).fill_null(0).to_numpy().tobytes())
        else:
            try:
                text = s.cast(pl.Utf8).fill_null("").to_list()
            except pl.exceptions.PolarsError:
                text = [repr(x) for x in s.to_list()]
            h.update("\x1f".join(text).encode())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of python and the numeric/model libraries (``"missing"`` when not installed)."""
    out = {"python": platform.python_version()}
    for p in VERSION_PACKAGES:
        out[p] = "missing"
        for dist in (p, f"{p}-cpu"):  # xgboost is installed as the CPU-only build, distribution xgboost-cpu
            try:
                out[p] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def fit_key(mspec: ModelSpec, train: pl.DataFrame, weights: np.ndarray | None, features: list[str],
            inner_holdout_fraction: float, horizon: int, natural: pl.DataFrame | None = None,
            calibration: CalibrationSpec | None = None, wspec: WeightSpec | None = None) -> str:
    """The memo key of ``fit_with_oof`` with these arguments: the model's spec (estimator, params, seed, scaling,
    calibration choice), the recipe's settings, the feature list, the libraries' versions and content hashes of the
    training rows, their weights and the natural rows. Same key => the same fit."""
    from regime_assets.core.memo import array_hash, memo_key, schema_rows_hash

    return memo_key(
        "model_fit", model=mspec, features=list(features), inner_holdout_fraction=inner_holdout_fraction,
        horizon=horizon, calibration=calibration, weights_spec=wspec, libraries=library_versions(),
        train=schema_rows_hash(train), weights=None if weights is None else array_hash(np.asarray(weights)),
        natural=None if natural is None else schema_rows_hash(natural))
