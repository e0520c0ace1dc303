"""Regime shrinkage: how far to trust a model in each regime, learned from its own past out-of-sample errors.

A calibrator fitted on the training window's latest months (``core/calibration.py``) corrects the class priors
that balancing and weighting shift, but those months rarely hold a crash: in the regimes the model has least
seen, its probabilities stay too sharp. Shrinkage mixes them with the regime prior (the class frequencies of the
model's training rows in that regime)::

    p'(x) = (1 - lam[r]) * p(x) + lam[r] * prior[r]          r = the row's regime

``lam[r]`` is chosen on the model's PAST out-of-sample predictions (the walk-forward's earlier test blocks) in
regime ``r``: the value ``lam_hat`` of a grid on [0, 1] with the lowest log-loss there, blended with a default
``lam0`` by the evidence, ``lam = (n * lam_hat + k * lam0) / (n + k)`` (``n`` past rows of the regime, ``k`` =
``prior_rows``). The default is 1: without out-of-sample evidence the model is trusted no more than the regime's
own class frequencies, the baseline it must beat; a regime with many past rows gets its fitted value. Every past
row used must have its label window closed before the rows the shrinkage is applied to (``past_before``), so
nothing here sees a label it should not.

A mixture with the prior can only move a regime's log-loss towards the prior's; with ``lam = 1`` it IS the
prior, so on the rows it was chosen on it is never worse than the better of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from regime_assets.spec import CLASSES, REGIMES

K = len(CLASSES)
PAST_SCHEMA = {"date": pl.Date, "regime": pl.Utf8, "y": pl.Int8,
               "p_sell": pl.Float64, "p_hold": pl.Float64, "p_buy": pl.Float64,
               "q_sell": pl.Float64, "q_hold": pl.Float64, "q_buy": pl.Float64}


class ShrinkageError(ValueError):
    """Inputs the shrinkage cannot use; the message names what is wrong."""


def _ll(y: np.ndarray, p: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-15, 1.0)))) if y.size else float("nan")


def grid(step: float) -> np.ndarray:
    n = max(int(round(1.0 / step)), 1)
    return np.linspace(0.0, 1.0, n + 1)


def best_lambda(y: np.ndarray, p: np.ndarray, q: np.ndarray, lams: np.ndarray) -> tuple[float, float, float]:
    """(lam, log-loss at lam, log-loss at 0) on these rows: the grid value with the lowest log-loss (ties: the
    smallest lam)."""
    y = np.asarray(y, dtype=np.int64)
    idx = np.arange(y.size)
    py, qy = p[idx, y], q[idx, y]
    losses = np.array([-np.mean(np.log(np.clip((1 - lam) * py + lam * qy, 1e-15, 1.0))) for lam in lams])
    i = int(np.argmin(losses))
    return float(lams[i]), float(losses[i]), float(losses[0])


@dataclass
class RegimeShrinkage:
    """Mixing weights per regime and the regime priors they mix towards (CLASSES order)."""

    lam: dict[str, float]
    prior: dict[str, np.ndarray]
    overall_prior: np.ndarray
    report: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, p: np.ndarray, regimes: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        regimes = np.asarray(regimes).astype(str)
        lam = np.zeros(p.shape[0])
        q = np.tile(self.overall_prior, (p.shape[0], 1))
        for r, v in self.lam.items():
            m = regimes == r
            if m.any():
                lam[m] = v
                q[m] = self.prior.get(r, self.overall_prior)
        return (1.0 - lam)[:, None] * p + lam[:, None] * q

    def table(self) -> pl.DataFrame:
        return pl.DataFrame(self.report, schema=REPORT_SCHEMA)

    def params(self) -> dict[str, Any]:
        return {"lambda": {r: round(v, 4) for r, v in self.lam.items()},
                "prior": {r: np.round(v, 6).tolist() for r, v in self.prior.items()}}


REPORT_SCHEMA = {"regime": pl.Utf8, "past_rows": pl.Int64, "lambda_fitted": pl.Float64, "lambda": pl.Float64,
                 "source": pl.Utf8,
                 "log_loss_model": pl.Float64, "log_loss_shrunk": pl.Float64}


def regime_priors(labels: np.ndarray, regimes: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Class frequencies overall and per regime (a regime without rows: the overall frequencies)."""
    y = np.asarray(labels, dtype=np.int64)
    reg = np.asarray(regimes).astype(str)
    overall = np.bincount(y, minlength=K) / max(y.size, 1)
    by = {r: (np.bincount(y[reg == r], minlength=K) / (reg == r).sum()) if (reg == r).any() else overall
          for r in REGIMES}
    return overall, by


def fit_shrinkage(past: pl.DataFrame, prior: dict[str, np.ndarray], overall_prior: np.ndarray, step: float,
                  prior_rows: int, default: float = 1.0) -> RegimeShrinkage:
    """Mixing weights from past out-of-sample rows (``PAST_SCHEMA``: the model's probabilities ``p_*`` and the
    regime prior that held for each row ``q_*``); ``prior``: the priors the shrinkage will mix towards;
    ``default``/``prior_rows``: the weight without evidence and how many past rows it counts as."""
    missing = [c for c in PAST_SCHEMA if c not in past.columns]
    if missing:
        raise ShrinkageError(f"regime shrinkage: past rows lack columns {missing}")
    lams = grid(step)
    y = past["y"].to_numpy().astype(np.int64)
    p = past.select("p_sell", "p_hold", "p_buy").to_numpy()
    q = past.select("q_sell", "q_hold", "q_buy").to_numpy()
    reg = past["regime"].to_numpy().astype(str)
    report: list[dict[str, Any]] = []
    lam: dict[str, float] = {}
    k = float(prior_rows)
    for r in REGIMES:
        m = reg == r
        n = int(m.sum())
        if n:
            hat, _, l0 = best_lambda(y[m], p[m], q[m], lams)
        else:
            hat, l0 = float("nan"), float("nan")
        lam[r] = float(default) if n == 0 else float((n * hat + k * default) / (n + k))
        l1 = _ll(y[m], (1 - lam[r]) * p[m] + lam[r] * q[m]) if n else float("nan")
        report.append({"regime": r, "past_rows": n, "lambda_fitted": None if n == 0 else hat, "lambda": lam[r],
                       "source": (f"default {default} (no past rows)" if n == 0 else
                                  f"fitted on {n} past rows, {k / (n + k):.0%} default {default}"),
                       "log_loss_model": l0, "log_loss_shrunk": l1})
    return RegimeShrinkage(lam, {r: np.asarray(v, dtype=np.float64) for r, v in prior.items()},
                           np.asarray(overall_prior, dtype=np.float64), report)


def past_rows(dates, regimes, labels: np.ndarray, p: np.ndarray, q: np.ndarray) -> pl.DataFrame:
    """Past out-of-sample rows in ``PAST_SCHEMA`` (labels as codes 0..2)."""
    return pl.DataFrame({
        "date": pl.Series(dates).cast(pl.Date), "regime": pl.Series(regimes).cast(pl.Utf8),
        "y": pl.Series(np.asarray(labels, dtype=np.int8)),
        **{f"p_{c}": np.asarray(p, dtype=np.float64)[:, i] for i, c in enumerate(CLASSES)},
        **{f"q_{c}": np.asarray(q, dtype=np.float64)[:, i] for i, c in enumerate(CLASSES)},
    }, schema=PAST_SCHEMA)


def past_before(past: pl.DataFrame, last_date) -> pl.DataFrame:
    """The past rows dated on or before ``last_date`` (a fold's last trainable date, whose label window closes
    before the fold's test block): nothing else may inform the shrinkage applied to that block."""
    if last_date is None:
        return past.head(0)
    return past.filter(pl.col("date") <= last_date)


def production_shrinkage(raw: pl.DataFrame, prior_rows: pl.DataFrame, window: pl.DataFrame, last_date,
                         step: float, evidence_rows: int, default: float = 1.0) -> RegimeShrinkage:
    """The production model's shrinkage: weights from the walk-forward's raw out-of-sample rows of its recipe
    (``raw``: fold, symbol, date, regime, label, p_*) dated on or before ``last_date`` (the production training's
    last trainable date, so no validation label is seen), each with the regime prior of its fold
    (``prior_rows``: fold, symbol, date, p_* of ``baseline_regime_prior``); priors to mix towards: the class
    frequencies per regime of ``window`` (the training window's own rows: regime, label)."""
    from regime_assets.core.models import encode_labels

    y_w = encode_labels(window.get_column("label"), "regime shrinkage: training window labels")
    overall, by = regime_priors(y_w, window.get_column("regime").to_numpy())
    if raw.height == 0:
        return fit_shrinkage(pl.DataFrame(schema=PAST_SCHEMA), by, overall, step, evidence_rows, default)
    q = prior_rows.select("fold", "symbol", "date", *[pl.col(f"p_{c}").alias(f"q_{c}") for c in CLASSES])
    j = raw.join(q, on=["fold", "symbol", "date"], how="inner")
    if last_date is not None:
        j = j.filter(pl.col("date") <= last_date)
    y = encode_labels(j.get_column("label"), "regime shrinkage: walk-forward labels")
    past = past_rows(j.get_column("date"), j.get_column("regime"), y,
                     j.select([f"p_{c}" for c in CLASSES]).to_numpy(), j.select([f"q_{c}" for c in CLASSES]).to_numpy())
    return fit_shrinkage(past, by, overall, step, evidence_rows, default)
