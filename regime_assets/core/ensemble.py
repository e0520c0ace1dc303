"""Meta-learner over the base models, fitted only on their honest out-of-fold (OOF) predictions.

* ``weighted`` -- weighted average of the base models' class probabilities. A model's weight is its OOF score
  normalised to sum 1: the OOF ``accuracy`` or ``balanced_accuracy``, or for ``log_loss`` the geometric-mean
  probability of the true class ``exp(-log_loss)`` (so lower loss gives more weight). Training-set accuracy never
  enters, so a model that memorises its training rows gains nothing.
* ``stacking`` -- multinomial logistic regression on the concatenated OOF probabilities
  (``p_sell, p_hold, p_buy`` of each model, in model-name order). Its weights table reports each model's share of
  the absolute coefficients.

The OOF frames of the models are aligned on ``row_id`` (inner join); every model must predict the same rows.

Sample weights (``meta.use_sample_weights``): when the OOF frames carry a ``weight`` column (the rows' regime x
event weights, see ``models.fit_with_oof``), the OOF scores behind the ``weighted`` method are weighted metrics and
the stacker is fitted with them as sample weights. With a ``CalibrationSpec`` the ensemble's own OOF output is
then calibrated (unweighted, on the same natural OOF rows: a 6- or 12-parameter map, see ``core/calibration.py``),
so the weights may shift the ensemble's priors and the calibrator puts the true class frequencies back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from regime_assets.core.calibration import Calibrator, fit_calibrator_honest
from regime_assets.core.evaluation import metrics
from regime_assets.core.models import PROBA_COLUMNS, FittedModel, encode_labels
from regime_assets.spec import CLASSES, CalibrationSpec, MetaSpec

WEIGHTS_SCHEMA = {"model": pl.Utf8, "oof_metric": pl.Float64, "weight": pl.Float64}


class EnsembleError(ValueError):
    """OOF predictions or model sets the meta-learner cannot use; the message names what is wrong."""


def _check_oof(name: str, oof: pl.DataFrame) -> None:
    missing = [c for c in ("row_id", "label", *PROBA_COLUMNS) if c not in oof.columns]
    if missing:
        raise EnsembleError(f"OOF frame of model {name}: missing columns {missing}")
    if oof.height == 0:
        raise EnsembleError(f"OOF frame of model {name}: no rows")
    if oof["row_id"].n_unique() != oof.height:
        raise EnsembleError(f"OOF frame of model {name}: duplicate row_id values")


def align_oof(oof_by_model: dict[str, pl.DataFrame]) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Model names (sorted), labels (codes) and (n, 3) probabilities per model on the common row_ids."""
    names, y, probs, _, _ = align_oof_rows(oof_by_model)
    return names, y, probs


def align_oof_rows(oof_by_model: dict[str, pl.DataFrame]
                   ) -> tuple[list[str], np.ndarray, dict[str, np.ndarray], np.ndarray | None, pl.DataFrame]:
    """``align_oof`` plus the rows' weights (the first model's ``weight`` column, None without one) and the
    common rows (``row_id`` and, where present, ``date, regime, label``) in the order of the arrays."""
    if not oof_by_model:
        raise EnsembleError("no OOF predictions: at least one model is needed")
    names = sorted(oof_by_model)
    for n in names:
        _check_oof(n, oof_by_model[n])
    base = oof_by_model[names[0]].select("row_id", "label").sort("row_id")
    for n in names[1:]:
        ids = oof_by_model[n].select("row_id")
        base = base.join(ids, on="row_id", how="inner")
    if base.height == 0:
        raise EnsembleError(f"OOF frames of models {names} share no row_id")
    largest = max(oof_by_model[n].height for n in names)
    if base.height < largest:
        raise EnsembleError(f"OOF frames of models {names} predict different rows "
                            f"({base.height} common of {largest}); fit them on the same training frame")
    y = encode_labels(base["label"], "OOF labels")
    first = oof_by_model[names[0]]
    keep = [c for c in ("row_id", "date", "regime", "weight") if c in first.columns]
    rows = base.select("row_id", "label").join(first.select(keep), on="row_id", how="left", maintain_order="left")
    w = rows["weight"].cast(pl.Float64).fill_null(1.0).to_numpy() if "weight" in rows.columns else None
    probs = {}
    for n in names:
        p = base.select("row_id").join(oof_by_model[n].select("row_id", *PROBA_COLUMNS), on="row_id", how="left",
                                       maintain_order="left")
        probs[n] = p.select(PROBA_COLUMNS).to_numpy().astype(np.float64)
    return names, y, probs, w, rows


def weighted_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> dict[str, float]:
    """accuracy, balanced_accuracy, log_loss with row weights (``metrics`` when ``w`` is None)."""
    if w is None:
        return metrics(y, p)
    w = np.asarray(w, dtype=np.float64)
    pred = p.argmax(axis=1)
    hit = (pred == y).astype(np.float64)
    acc = float((w * hit).sum() / w.sum())
    rec = [float((w * hit)[y == k].sum() / w[y == k].sum()) for k in range(len(CLASSES)) if w[y == k].sum() > 0]
    ll = float(-(w * np.log(np.clip(p[np.arange(y.size), y], 1e-15, 1.0))).sum() / w.sum())
    return {"n": int(y.size), "accuracy": acc, "balanced_accuracy": float(np.mean(rec)) if rec else float("nan"),
            "log_loss": ll}


def _score_weight(metric: str, value: float) -> float:
    if not np.isfinite(value):
        return 0.0
    return float(np.exp(-value)) if metric == "log_loss" else max(float(value), 0.0)


class MetaLearner:
    """Combines base-model probabilities; built by ``fit_meta``."""

    def __init__(self, method: str, models: list[str], weights: np.ndarray, oof_metric: np.ndarray,
                 metric: str, stacker: Any = None, stacker_classes: np.ndarray | None = None,
                 fitted: dict[str, FittedModel] | None = None, n_oof: int = 0) -> None:
        self.method = method
        self.models = list(models)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.oof_metric = np.asarray(oof_metric, dtype=np.float64)
        self.metric = metric
        self.stacker = stacker
        self.stacker_classes = stacker_classes
        self.fitted = dict(fitted) if fitted else {}
        self.n_oof = int(n_oof)
        self.classes = CLASSES
        self.calibrator: Calibrator | None = None
        self.calibration_report: dict[str, Any] = {}
        self.weighted_fit = False
        self.shrinkage = None  # core.shrinkage.RegimeShrinkage, applied by predict_proba (needs 'regime')

    @property
    def features(self) -> list[str]:
        """The feature columns the base models read (their union, in first-seen order)."""
        out: list[str] = []
        for m in self.models:
            for f in getattr(self.fitted.get(m), "features", []):
                if f not in out:
                    out.append(f)
        return out

    def __repr__(self) -> str:
        w = ", ".join(f"{m}={x:.3f}" for m, x in zip(self.models, self.weights))
        return f"MetaLearner({self.method!r}, {w})"

    def weights_table(self) -> pl.DataFrame:
        """One row per model: model, oof_metric, weight."""
        return pl.DataFrame({"model": self.models, "oof_metric": self.oof_metric.tolist(),
                             "weight": self.weights.tolist()}, schema=WEIGHTS_SCHEMA)

    def attach(self, fitted: dict[str, FittedModel]) -> "MetaLearner":
        missing = [m for m in self.models if m not in fitted]
        if missing:
            raise EnsembleError(f"meta-learner: fitted models missing for {missing}")
        self.fitted = {m: fitted[m] for m in self.models}
        return self

    def predict_proba_from(self, probs_by_model: dict[str, np.ndarray]) -> np.ndarray:
        """(n, 3) calibrated probabilities in CLASSES order from each base model's (n, 3) probabilities."""
        p = self.raw_proba_from(probs_by_model)
        cal = getattr(self, "calibrator", None)
        return p if cal is None else cal.transform(p)

    def raw_proba_from(self, probs_by_model: dict[str, np.ndarray]) -> np.ndarray:
        """(n, 3) ensemble probabilities before the ensemble's own calibration."""
        missing = [m for m in self.models if m not in probs_by_model]
        if missing:
            raise EnsembleError(f"meta-learner: probabilities missing for models {missing}")
        arrs = [np.asarray(probs_by_model[m], dtype=np.float64) for m in self.models]
        n = arrs[0].shape[0]
        for m, a in zip(self.models, arrs):
            if a.shape != (n, len(CLASSES)):
                raise EnsembleError(f"meta-learner: probabilities of model {m} have shape {a.shape}, "
                                    f"expected ({n}, {len(CLASSES)})")
        if self.method == "weighted":
            out = np.zeros((n, len(CLASSES)))
            for w, a in zip(self.weights, arrs):
                out += w * a
        else:
            out = np.zeros((n, len(CLASSES)))
            if n:
                out[:, self.stacker_classes] = self.stacker.predict_proba(np.hstack(arrs))
        s = out.sum(axis=1, keepdims=True)
        return np.where(s > 0, out / np.where(s > 0, s, 1.0), 1.0 / len(CLASSES))

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        """(n, 3) probabilities for a feature frame using the attached fitted base models."""
        if not self.fitted:
            raise EnsembleError("meta-learner holds no fitted models; call attach() or fit_meta(models=...)")
        p = self.predict_proba_from({m: self.fitted[m].predict_proba(df) for m in self.models})
        sh = getattr(self, "shrinkage", None)
        if sh is None:
            return p
        if "regime" not in df.columns:
            raise EnsembleError("meta-learner: its regime shrinkage needs a 'regime' column in the rows it predicts")
        return sh.apply(p, df.get_column("regime").to_numpy())


def fit_meta(oof_by_model: dict[str, pl.DataFrame], mspec: MetaSpec,
             models: dict[str, FittedModel] | None = None, calibration: CalibrationSpec | None = None,
             prior: np.ndarray | None = None) -> MetaLearner:
    """Fit the meta-learner on the models' OOF predictions (``models`` optional, for ``predict_proba(df)``).

    With ``mspec.use_sample_weights`` and a ``weight`` column in the OOF frames the fit is weighted; with an
    enabled ``calibration`` (and ``calibration.ensemble``) the ensemble's OOF output is calibrated on the same rows
    (unweighted), its bias anchored to ``prior`` (default: the base models' ``window_prior``)."""
    names, y, probs, w, rows = align_oof_rows(oof_by_model)
    if not getattr(mspec, "use_sample_weights", False):
        w = None
    scores = np.array([weighted_metrics(y, probs[n], w)[mspec.weight_metric] for n in names], dtype=np.float64)
    if mspec.method == "weighted":
        raw = np.array([_score_weight(mspec.weight_metric, s) for s in scores])
        weights = raw / raw.sum() if raw.sum() > 0 else np.full(len(names), 1.0 / len(names))
        learner = MetaLearner("weighted", names, weights, scores, mspec.weight_metric, n_oof=y.size)
    else:
        from sklearn.linear_model import LogisticRegression

        present = np.unique(y)
        if present.size < 2:
            raise EnsembleError(f"stacking: OOF labels hold only class {CLASSES[present[0]]!r}")
        Z = np.hstack([probs[n] for n in names])
        stacker = LogisticRegression(max_iter=1000).fit(Z, y, sample_weight=w)
        coef = np.abs(stacker.coef_).reshape(stacker.coef_.shape[0], len(names), len(CLASSES)).sum(axis=(0, 2))
        weights = coef / coef.sum() if coef.sum() > 0 else np.full(len(names), 1.0 / len(names))
        learner = MetaLearner("stacking", names, weights, scores, mspec.weight_metric, stacker=stacker,
                              stacker_classes=stacker.classes_.astype(np.int64), n_oof=y.size)
    learner.weighted_fit = w is not None
    if calibration is not None and calibration.enabled and calibration.method != "none" and \
            getattr(calibration, "ensemble", True):
        raw_oof = learner.raw_proba_from(probs)
        dates = rows["date"].to_physical().to_numpy() if "date" in rows.columns else None
        if prior is None and getattr(calibration, "anchor", "none") == "window" and models:
            prior = next((np.asarray(m.calibration_report["window_prior"]) for m in models.values()
                          if (getattr(m, "calibration_report", None) or {}).get("window_prior")), None)
        learner.calibrator = fit_calibrator_honest(raw_oof, y, dates, calibration.method, calibration.l2,
                                                   calibration.min_rows, prior)
        learner.calibration_report = {"method": learner.calibrator.method, "requested": calibration.method,
                                      **learner.calibrator.report}
    elif calibration is not None and calibration.enabled and calibration.method != "none":
        learner.calibration_report = {"method": "inputs", "requested": calibration.method,
                                      "status": "base models calibrated; no second map (calibration.ensemble off)"}
    if models is not None:
        learner.attach(models)
    return learner


def meta_oof(learner: MetaLearner, oof_by_model: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The ensemble's own predictions on the OOF rows: ``row_id, date, regime, label, p_*, weight, raw_p_*``
    (raw = before its calibration; in-sample for the ensemble weights and calibrator)."""
    from regime_assets.core.models import RAW_COLUMNS

    names, y, probs, w, rows = align_oof_rows(oof_by_model)
    raw = learner.raw_proba_from(probs)
    cal = learner.calibrator.transform(raw) if learner.calibrator is not None else raw
    out = rows.select([c for c in ("row_id", "date", "regime", "label") if c in rows.columns])
    out = out.with_columns([pl.Series(c, cal[:, i]) for i, c in enumerate(PROBA_COLUMNS)]
                           + [pl.Series("weight", w if w is not None else np.ones(y.size))]
                           + [pl.Series(c, raw[:, i]) for i, c in enumerate(RAW_COLUMNS)])
    return out
