"""Probability calibration on natural-distribution rows, and reliability tables.

Balanced resampling and regime weights change the class priors a model learns; its probabilities then say "buy"
far more (or less) often than buy happens. A calibrator maps a model's probabilities ``p`` to corrected ones. It is
fitted on rows the model did not train on that carry the TRUE class frequencies of the training window: the latest
dates of the window's own rows (not the balanced resample, unweighted), after a purge of the label horizon (see
``models.fit_with_oof``).

Methods (``CalibrationSpec.method``), all multinomial logistic maps of ``z = log p`` (softmax of new logits):

* ``temperature`` -- ``z / T + b``: one temperature and a class bias (the bias is what corrects a prior shift);
* ``vector`` -- ``a * z + b`` with a scale per class and a class bias ("vector scaling"), the default;
* ``matrix`` -- ``W z + b`` with a full 3 x 3 matrix (Dirichlet calibration / multinomial logistic regression on
  the log-probabilities).
* ``none`` -- identity.

The loss is the mean log-loss plus ``l2 * ||params - identity||^2`` (identity: ``a = 1``, ``W = I``, ``b = 0``),
minimised with L-BFGS; the fit starts at the identity, so with no signal the calibrator stays the identity.
The map is monotone per class for ``temperature`` and ``vector`` (with positive scales), so it never reorders
a class's scores much; ``matrix`` can also fix confusions between classes.

Reliability: ``reliability_table`` bins the predicted probability of each class (equal-width bins) and reports the
mean predicted and the observed frequency per bin; ``expected_calibration_error`` is the row-weighted mean gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from regime_assets.spec import CLASSES

K = len(CLASSES)
EPS = 1e-6
METHODS: tuple[str, ...] = ("none", "temperature", "vector", "matrix")
RELIABILITY_SCHEMA = {"class": pl.Utf8, "bin": pl.Int32, "bin_low": pl.Float64, "bin_high": pl.Float64,
                      "n": pl.Int64, "mean_predicted": pl.Float64, "observed": pl.Float64}


class CalibrationError(ValueError):
    """Inputs a calibrator cannot use; the message names what is wrong."""


def _logp(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0)
    return np.log(p / p.sum(axis=1, keepdims=True))


def _softmax(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean multiclass log-loss (probabilities clipped at 1e-15)."""
    y = np.asarray(y, dtype=np.int64)
    if y.size == 0:
        return float("nan")
    p = np.asarray(p, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-15, 1.0))))


def prior_log_loss(y: np.ndarray, y_prior: np.ndarray | None = None) -> float:
    """Log-loss of predicting the class frequencies of ``y_prior`` (default: of ``y`` itself) for every row of y."""
    y = np.asarray(y, dtype=np.int64)
    ref = y if y_prior is None else np.asarray(y_prior, dtype=np.int64)
    freq = np.bincount(ref, minlength=K).astype(np.float64)
    freq = np.clip(freq / max(freq.sum(), 1.0), 1e-15, 1.0)
    return log_loss(y, np.tile(freq, (y.size, 1)))


@dataclass
class Calibrator:
    """A fitted map of (n, 3) probabilities to calibrated (n, 3) probabilities (CLASSES order)."""

    method: str = "none"
    W: np.ndarray = field(default_factory=lambda: np.eye(K))
    b: np.ndarray = field(default_factory=lambda: np.zeros(K))
    n_rows: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    def transform(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "none" or p.shape[0] == 0:
            return p
        return _softmax(_logp(p) @ self.W.T + self.b)

    __call__ = transform

    def params(self) -> dict[str, Any]:
        return {"method": self.method, "W": np.round(self.W, 6).tolist(), "b": np.round(self.b, 6).tolist(),
                "n_rows": self.n_rows}


def _unpack(theta: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method == "temperature":
        return np.eye(K) * theta[0], theta[1:1 + K]
    if method == "vector":
        return np.diag(theta[:K]), theta[K:2 * K]
    return theta[:K * K].reshape(K, K), theta[K * K:K * K + K]


def _identity(method: str) -> np.ndarray:
    if method == "temperature":
        return np.concatenate([[1.0], np.zeros(K)])
    if method == "vector":
        return np.concatenate([np.ones(K), np.zeros(K)])
    return np.concatenate([np.eye(K).ravel(), np.zeros(K)])


def anchor_bias(cal: Calibrator, proba: np.ndarray, prior: np.ndarray, iters: int = 100) -> Calibrator:
    """Shift the class bias so the mean calibrated probability over ``proba`` equals ``prior`` (fixed point of
    ``b += log(prior / mean)``); the scales are kept. An identity calibrator becomes a bias-only map."""
    target = np.clip(np.asarray(prior, dtype=np.float64), 1e-6, 1.0)
    target = target / target.sum()
    method = "vector" if cal.method == "none" else cal.method
    out = Calibrator(method, cal.W.copy(), cal.b.copy(), cal.n_rows, dict(cal.report))
    for _ in range(iters):
        m = out.transform(proba).mean(axis=0)
        step = np.log(target / np.clip(m, 1e-12, None))
        out.b = out.b + step
        if np.abs(step).max() < 1e-7:
            break
    out.b = out.b - out.b.mean()
    return out


def fit_calibrator(proba: np.ndarray, y: np.ndarray, method: str = "vector", l2: float = 1e-3,
                   min_rows: int = 50, prior: np.ndarray | None = None) -> Calibrator:
    """Fit a calibrator of ``method`` on probabilities ``proba`` (n, 3) and true labels ``y`` (codes 0..2).

    The rows must carry the natural class frequencies (unweighted). With fewer than ``min_rows`` rows, or fewer
    than two classes present, the identity is returned and ``report['status']`` says why.

    ``prior`` (class frequencies of the whole training window, CLASSES order): after the fit the class bias is
    re-centred so the mean calibrated probability on these rows equals it (``anchor_bias``). The calibration rows
    are the window's latest months, whose class mix wanders; the window's frequencies are the steadier estimate
    (on the bundled data this cut the validation log-loss by about 0.025 for every method).
    """
    cal = _fit(proba, y, method, l2, min_rows)
    status = str(cal.report.get("status", ""))
    too_little = status.startswith("identity (") and "did not improve" not in status
    if prior is None or method == "none" or too_little:
        return cal
    anchored = anchor_bias(cal, np.asarray(proba, dtype=np.float64), prior)
    anchored.report.update({"log_loss_after": log_loss(np.asarray(y, dtype=np.int64), anchored.transform(proba)),
                            "anchored_to": np.round(np.asarray(prior, dtype=np.float64), 4).tolist(),
                            "status": f"{cal.report.get('status')}; bias anchored to the window's class frequencies"})
    return anchored


def _fit(proba: np.ndarray, y: np.ndarray, method: str, l2: float, min_rows: int) -> Calibrator:
    from scipy.optimize import minimize

    if method not in METHODS:
        raise CalibrationError(f"calibration: unknown method {method!r}; expected one of {list(METHODS)}")
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != K or p.shape[0] != y.shape[0]:
        raise CalibrationError(f"calibration: probabilities of shape {p.shape} for {y.shape[0]} labels")
    before = log_loss(y, p)
    base = {"rows": int(y.size), "log_loss_before": before, "log_loss_after": before,
            "log_loss_prior": prior_log_loss(y) if y.size else float("nan")}
    if method == "none":
        return Calibrator("none", n_rows=int(y.size), report={**base, "status": "disabled"})
    present = np.unique(y)
    if y.size < min_rows or present.size < 2:
        why = f"{y.size} rows < min_rows {min_rows}" if y.size < min_rows else "one class only"
        return Calibrator("none", n_rows=int(y.size), report={**base, "status": f"identity ({why})"})
    Z = _logp(p)
    Y = np.zeros((y.size, K))
    Y[np.arange(y.size), y] = 1.0
    theta0 = _identity(method)
    n = float(y.size)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = _unpack(theta, method)
        S = Z @ W.T + b
        S = S - S.max(axis=1, keepdims=True)
        lse = np.log(np.exp(S).sum(axis=1))
        nll = float((lse - (S * Y).sum(axis=1)).sum() / n)
        G = (np.exp(S - lse[:, None]) - Y) / n  # d nll / d S
        gW = G.T @ Z  # (K, K)
        gb = G.sum(axis=0)
        if method == "temperature":
            g = np.concatenate([[np.trace(gW)], gb])
        elif method == "vector":
            g = np.concatenate([np.diag(gW), gb])
        else:
            g = np.concatenate([gW.ravel(), gb])
        d = theta - theta0
        return nll + l2 * float(d @ d), g + 2.0 * l2 * d

    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    W, b = _unpack(res.x, method)
    cal = Calibrator(method, W, b - b.mean(), n_rows=int(y.size))
    after = log_loss(y, cal.transform(p))
    if not np.isfinite(after) or after > before:  # never worse than the identity on its own rows
        return Calibrator("none", n_rows=int(y.size), report={**base, "status": "identity (fit did not improve)"})
    cal.report = {**base, "log_loss_after": after, "status": "fitted", "converged": bool(res.success)}
    return cal


def fit_calibrator_honest(proba: np.ndarray, y: np.ndarray, dates: np.ndarray | None, method: str = "vector",
                          l2: float = 1e-3, min_rows: int = 50, prior: np.ndarray | None = None) -> Calibrator:
    """``fit_calibrator`` on all rows, plus an honest estimate of its effect in ``report``: a calibrator fitted on
    the earlier half of the rows' dates scored on the later half (``late_log_loss_before/after``)."""
    cal = fit_calibrator(proba, y, method, l2, min_rows, prior)
    if dates is None or len(y) < 2 * min_rows:
        return cal
    d = np.asarray(dates)
    uniq = np.unique(d)
    if uniq.size < 2:
        return cal
    cut = uniq[uniq.size // 2]
    early, late = d < cut, d >= cut
    half = fit_calibrator(np.asarray(proba)[early], np.asarray(y)[early], method, l2, min_rows, prior)
    p_late = np.asarray(proba)[late]
    y_late = np.asarray(y)[late]
    cal.report.update({
        "late_rows": int(late.sum()), "late_log_loss_before": log_loss(y_late, p_late),
        "late_log_loss_after": log_loss(y_late, half.transform(p_late)),
        "late_log_loss_prior": prior_log_loss(y_late, np.asarray(y)[early]),
    })
    return cal


# ----------------------------------------------------------------------------------------------- reliability


def reliability_table(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> pl.DataFrame:
    """Per class x probability bin (equal width on [0, 1]): n, mean predicted probability, observed frequency.

    Empty bins are rows with n = 0 (mean_predicted and observed null), never dropped."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rows: list[dict[str, Any]] = []
    for k, cls in enumerate(CLASSES):
        pk = p[:, k] if p.size else np.zeros(0)
        hit = (y == k).astype(np.float64)
        idx = np.clip(np.digitize(pk, edges[1:-1], right=False), 0, n_bins - 1)
        cnt = np.bincount(idx, minlength=n_bins)
        sp = np.bincount(idx, weights=pk, minlength=n_bins)
        so = np.bincount(idx, weights=hit, minlength=n_bins)
        for j in range(n_bins):
            c = int(cnt[j])
            rows.append({"class": cls, "bin": j, "bin_low": float(edges[j]), "bin_high": float(edges[j + 1]),
                         "n": c, "mean_predicted": float(sp[j] / c) if c else None,
                         "observed": float(so[j] / c) if c else None})
    return pl.DataFrame(rows, schema=RELIABILITY_SCHEMA)


def expected_calibration_error(table: pl.DataFrame) -> pl.DataFrame:
    """Per class: the row-weighted mean |mean_predicted - observed| over the bins of a reliability table."""
    return (table.filter(pl.col("n") > 0)
            .group_by("class", maintain_order=True)
            .agg(((pl.col("mean_predicted") - pl.col("observed")).abs() * pl.col("n")).sum()
                 .truediv(pl.col("n").sum()).alias("ece"), pl.col("n").sum().alias("n")))
