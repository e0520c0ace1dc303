"""SHAP feature importance per model and regime, and how the ranking changes across regimes.

Per regime at most ``shap.rows_per_regime`` rows are drawn (seeded by ``shap.seed``); features are the model's
median-filled ``f_*`` columns. The explainer follows the model's ``shap`` kind:

* ``tree`` -- ``shap.TreeExplainer`` on the fitted estimator (RF, ExtraTrees, HistGB, XGBoost, LightGBM), in the
  estimator's raw output (probabilities for forests, margins for boosting);
* ``linear`` -- ``shap.LinearExplainer`` on the final linear estimator, applied to the scaled features with the
  pooled sampled rows as background (log-odds);
* ``kernel`` -- model-agnostic ``shap.explainers.Permutation`` on the class probabilities for
  ``shap.kernel_rows`` rows per regime, with ``shap.kernel_background`` pooled rows as background;
* ``none`` -- no values; a status row says so.

If a tree or linear explainer fails, the model-agnostic explainer is used and the status says so. Every regime
gets a status row (``ok``, ``ok (fallback: ...)``, ``not supported``, ``no rows``, ``error: ...``), so nothing is
silently left out. Importance = mean |SHAP| over rows and classes; rank 1 = most important within model x regime.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import polars as pl

from regime_assets.core.models import FittedModel
from regime_assets.spec import REGIMES, ShapSpec

IMPORTANCE_SCHEMA = {"model": pl.Utf8, "regime": pl.Utf8, "feature": pl.Utf8, "mean_abs_shap": pl.Float64,
                     "rank": pl.Int64}
STATUS_SCHEMA = {"model": pl.Utf8, "regime": pl.Utf8, "rows": pl.Int64, "status": pl.Utf8, "explainer": pl.Utf8,
                 "seconds": pl.Float64}
KINDS = ("tree", "linear", "kernel", "none")


class ShapError(ValueError):
    """Inputs the SHAP tables cannot use; the message names what is wrong."""


def _as_3d(values: Any, n: int, f: int) -> np.ndarray:
    """SHAP values as (rows, features, outputs) whatever the explainer returned."""
    if isinstance(values, list):
        values = np.stack([np.asarray(v) for v in values], axis=-1)
    v = np.asarray(getattr(values, "values", values), dtype=np.float64)
    if v.ndim == 2:
        v = v[:, :, None]
    if v.shape[:2] != (n, f):
        raise ShapError(f"unexpected SHAP value shape {v.shape} for {n} rows x {f} features")
    return v


def _sample(df: pl.DataFrame, k: int, seed: int) -> pl.DataFrame:
    return df if df.height <= k else df.sample(n=k, seed=seed, shuffle=False)


def _base(expected: Any, n: int) -> np.ndarray:
    b = np.asarray(expected, dtype=np.float64)
    if b.ndim == 0:
        b = b[None]
    return np.broadcast_to(b, (n, b.shape[-1])).copy() if b.ndim == 1 else b.reshape(n, -1)


def _tree(fitted: FittedModel, X: np.ndarray, background: np.ndarray, seed: int
          ) -> tuple[np.ndarray, np.ndarray, str]:
    import shap

    Xp = fitted.preprocess(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shap.TreeExplainer(fitted.final_estimator)
        vals = explainer.shap_values(Xp, check_additivity=False)
    return _as_3d(vals, X.shape[0], X.shape[1]), _base(explainer.expected_value, X.shape[0]), "TreeExplainer"


def _linear(fitted: FittedModel, X: np.ndarray, background: np.ndarray, seed: int
            ) -> tuple[np.ndarray, np.ndarray, str]:
    import shap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shap.LinearExplainer(fitted.final_estimator,
                                         shap.maskers.Independent(fitted.preprocess(background)))
        vals = explainer.shap_values(fitted.preprocess(X))
    return _as_3d(vals, X.shape[0], X.shape[1]), _base(explainer.expected_value, X.shape[0]), "LinearExplainer"


def _agnostic(fitted: FittedModel, X: np.ndarray, background: np.ndarray, seed: int
              ) -> tuple[np.ndarray, np.ndarray, str]:
    import shap

    f = X.shape[1]
    masker = shap.maskers.Independent(background, max_samples=background.shape[0])
    explainer = shap.explainers.Permutation(fitted.predict_proba_matrix, masker, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = explainer(X, max_evals=2 * f + 1, silent=True)
    return _as_3d(out, X.shape[0], f), _base(out.base_values, X.shape[0]), "Permutation"


_EXPLAINERS = {"tree": _tree, "linear": _linear, "kernel": _agnostic}


def explain(fitted: FittedModel, X: np.ndarray, kind: str, background: np.ndarray | None = None,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """SHAP values (rows, features, outputs), base values (rows, outputs) and the explainer's name for a
    median-filled feature matrix. Outputs: probabilities per known class for forests and the model-agnostic
    explainer, margins for boosting, log-odds for linear models. ``background`` defaults to ``X``."""
    if kind not in _EXPLAINERS:
        raise ShapError(f"model {fitted.name}: no explainer for SHAP kind {kind!r}")
    if fitted.estimator is None:
        raise ShapError(f"model {fitted.name}: constant model (one class in training) has no SHAP values")
    X = np.asarray(X, dtype=np.float64)
    return _EXPLAINERS[kind](fitted, X, X if background is None else background, seed)


def shap_importance(fitted: FittedModel, frames_by_regime: dict[str, pl.DataFrame], sspec: ShapSpec,
                    kind: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(importance ``model, regime, feature, mean_abs_shap, rank``; status ``model, regime, rows, status,
    explainer, seconds``) for one fitted model over the given regime frames (``kind`` None = the model's spec)."""
    kind = kind or fitted.shap_kind
    if kind not in KINDS:
        raise ShapError(f"model {fitted.name}: unknown SHAP kind {kind!r}; expected one of {list(KINDS)}")
    regimes = [r for r in REGIMES if r in frames_by_regime] + sorted(r for r in frames_by_regime if r not in REGIMES)
    sampled = {}
    limit = sspec.kernel_rows if kind == "kernel" else sspec.rows_per_regime
    for r in regimes:
        df = frames_by_regime[r]
        sampled[r] = fitted.matrix(_sample(df, limit, sspec.seed)) if df.height else None
    pool = [x for x in sampled.values() if x is not None]
    background = None
    if pool:
        allx = np.vstack(pool)
        rng = np.random.default_rng(sspec.seed)
        take = rng.choice(allx.shape[0], size=min(sspec.kernel_background, allx.shape[0]), replace=False)
        background = allx[np.sort(take)]
    imp_parts: list[pl.DataFrame] = []
    status: list[dict] = []
    for r in regimes:
        X = sampled[r]
        row = {"model": fitted.name, "regime": r, "rows": 0 if X is None else int(X.shape[0]),
               "status": "ok", "explainer": None, "seconds": 0.0}
        if kind == "none":
            row.update(status="not supported", explainer="none")
        elif X is None:
            row.update(status="no rows")
        elif fitted.estimator is None:
            row.update(status="not supported: constant model (one class in training)")
        else:
            t0 = time.perf_counter()
            try:
                try:
                    vals, _, name = explain(fitted, X, kind, background, sspec.seed)
                except Exception as err:  # noqa: BLE001 - explainer support varies by estimator
                    if kind == "kernel":
                        raise
                    Xk = X[: sspec.kernel_rows]
                    vals, _, name = explain(fitted, Xk, "kernel", background, sspec.seed)
                    row["status"] = f"ok (fallback: {type(err).__name__}: {str(err)[:120]})"
                    row["rows"] = int(Xk.shape[0])
                imp = np.abs(vals).mean(axis=(0, 2))
                row["explainer"] = name
                imp_parts.append(pl.DataFrame({"model": fitted.name, "regime": r, "feature": fitted.features,
                                               "mean_abs_shap": imp}))
            except Exception as err:  # noqa: BLE001 - reported in the status table
                row.update(status=f"error: {type(err).__name__}: {str(err)[:200]}")
            row["seconds"] = time.perf_counter() - t0
        status.append(row)
    if imp_parts:
        imp_df = pl.concat(imp_parts).with_columns(
            rank=pl.col("mean_abs_shap").rank("ordinal", descending=True).over("model", "regime").cast(pl.Int64))
        imp_df = imp_df.sort("model", "regime", "rank").cast(IMPORTANCE_SCHEMA)
    else:
        imp_df = pl.DataFrame(schema=IMPORTANCE_SCHEMA)
    return imp_df, pl.DataFrame(status, schema=STATUS_SCHEMA, orient="row")


def regime_comparison(table: pl.DataFrame, top_k: int) -> pl.DataFrame:
    """Per model x feature in any regime's top ``top_k``: ``rank_<regime>`` columns and ``max_rank_change``
    (largest minus smallest rank over the regimes that have the feature), sorted by the change."""
    missing = [c for c in ("model", "regime", "feature", "rank") if c not in table.columns]
    if missing:
        raise ShapError(f"regime_comparison: missing columns {missing}")
    if table.height == 0:
        return pl.DataFrame(schema={"model": pl.Utf8, "feature": pl.Utf8, "max_rank_change": pl.Int64})
    top = table.filter(pl.col("rank") <= top_k).select("model", "feature").unique()
    sub = table.join(top, on=["model", "feature"], how="inner")
    regimes = [r for r in REGIMES if r in sub["regime"].unique().to_list()]
    regimes += sorted(r for r in sub["regime"].unique().to_list() if r not in regimes)
    wide = sub.pivot(on="regime", index=["model", "feature"], values="rank")
    wide = wide.rename({r: f"rank_{r}" for r in regimes if r in wide.columns})
    rank_cols = [f"rank_{r}" for r in regimes if f"rank_{r}" in wide.columns]
    wide = wide.with_columns(
        max_rank_change=(pl.max_horizontal(rank_cols) - pl.min_horizontal(rank_cols)).cast(pl.Int64),
        best_rank=pl.min_horizontal(rank_cols))
    return (wide.sort(["model", "max_rank_change", "best_rank"], descending=[False, True, False])
            .select("model", "feature", *rank_cols, "max_rank_change"))
