"""Leakage standing test: perturbing every price (stocks, index, VIX) after a date t changes no market context,
regime label or feature up to t, no label up to t - horizon, and no training row, balanced sample, weight or
fitted model of a training set whose as-of date is t - horizon (trading days). Synthetic market, core functions
end to end."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from regime_assets.core.archive import build_archive
from regime_assets.core.features import build_features
from regime_assets.core.labels import build_labels
from regime_assets.core.market import build_market_context
from regime_assets.core.models import fit_model
from regime_assets.core.regimes import label_regimes
from regime_assets.core.sampling import balanced_sample
from regime_assets.core.synthetic import generate_synthetic
from regime_assets.core.weights import sample_weights
from regime_assets.spec import BalanceSpec, LabelSpec, ModelSpec, Spec, TrainingSetSpec

HORIZON = 5
SPEC = Spec()
MODEL = ModelSpec(name="rf", estimator="sklearn.ensemble.RandomForestClassifier",
                  params={"n_estimators": 15, "max_depth": 5, "min_samples_leaf": 10, "n_jobs": 1,
                          "random_state": 7})


def _chain(data, as_of: dt.date) -> dict[str, pl.DataFrame | np.ndarray]:
    from regime_assets.core.training_set import build_training_set

    ctx, _ = build_market_context(data["index"], data["vix"], SPEC.vix_proxy)
    regimes = label_regimes(data["prices"], ctx, SPEC.regimes)
    feats = build_features(data["prices"], ctx, data["sectors"], SPEC.features)
    labeled = build_labels(feats, regimes, LabelSpec(horizon=HORIZON), data["prices"])
    archive, _ = build_archive(labeled, list(SPEC.events))
    ts, summary = build_training_set(labeled, archive, None,
                                     TrainingSetSpec(as_of=as_of, window_years=2, validation_months=3), HORIZON)
    balanced, _ = balanced_sample(ts, BalanceSpec(target_size=1500))
    weights = sample_weights(balanced, SPEC.weights)
    model = fit_model(MODEL, balanced, weights["weight"].to_numpy())
    return {"ctx": ctx, "regimes": regimes, "features": feats, "labeled": labeled, "training_set": ts,
            "balanced": balanced, "weights": weights, "proba": model.predict_proba(ts),
            "summary": pl.DataFrame({k: [str(summary[k])] for k in ("as_of", "validation_start", "train_end")})}


def _perturb(data, t: dt.date, seed: int):
    rng = np.random.default_rng(seed)

    def shake(frame: pl.DataFrame, col: str) -> pl.DataFrame:
        f = pl.Series(rng.uniform(0.4, 1.8, frame.height))
        return frame.with_columns(pl.when(pl.col("date") > t).then(pl.col(col) * f).otherwise(pl.col(col))
                                  .alias(col))

    prices = data["prices"]
    for c in ("close", "open", "high", "low", "volume"):
        prices = shake(prices, c)
    return {**data, "prices": prices, "index": shake(data["index"], "close"), "vix": shake(data["vix"], "vix")}


@pytest.fixture(scope="module")
def market():
    src = generate_synthetic(4, 5.0, seed=5, start=dt.date(2006, 1, 2))
    return {"prices": src.prices, "index": src.index, "vix": src.vix, "sectors": src.sectors}


@pytest.mark.parametrize("cut", [900, 1100])
def test_prices_after_t_change_nothing_known_at_t(market, cut):
    dates = market["index"]["date"].sort()
    t = dates[cut]
    as_of = dates[cut - HORIZON]  # the last label window of a row at as_of ends at t itself
    before = _chain(market, as_of)
    after = _chain(_perturb(market, t, seed=cut), as_of)

    def upto(frame: pl.DataFrame, day: dt.date) -> pl.DataFrame:
        return frame.filter(pl.col("date") <= day)

    assert upto(before["ctx"], t).equals(upto(after["ctx"], t))
    assert upto(before["regimes"], t).equals(upto(after["regimes"], t))
    assert upto(before["features"], t).equals(upto(after["features"], t))
    assert upto(before["labeled"], as_of).equals(upto(after["labeled"], as_of))
    assert before["summary"].equals(after["summary"])
    assert before["training_set"]["date"].max() <= as_of
    assert before["training_set"].height > 500 and (before["training_set"]["source"] == "archive").any()
    assert before["training_set"].equals(after["training_set"])
    assert before["balanced"].equals(after["balanced"])
    assert before["weights"].equals(after["weights"])
    np.testing.assert_array_equal(before["proba"], after["proba"])
    # the perturbation is real: what comes after t does change
    assert not before["features"].filter(pl.col("date") > t).equals(after["features"].filter(pl.col("date") > t))
    # ... and the bound is tight: every row after as_of has a forward window that reaches past t
    late = [c["labeled"].filter(pl.col("date") > as_of).sort("symbol", "date")["fwd_return"].fill_null(0.0)
            .to_numpy() for c in (before, after)]
    nonzero = late[0] != 0
    assert (late[0][nonzero] != late[1][nonzero]).all()
