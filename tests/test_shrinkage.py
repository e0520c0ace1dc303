"""Regime shrinkage: weights from past out-of-sample rows, mixing towards the regime prior."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from regime_assets.core import shrinkage as sh
from regime_assets.spec import CLASSES, REGIMES


def _rows(n, regime, prior, sharp, informative, rng, start=dt.date(2010, 1, 1)):
    """Labels drawn from ``prior``; probabilities sharp (confident) and either informative (peaked on the true
    label) or noise (peaked on a random label)."""
    y = rng.choice(3, size=n, p=prior)
    peak = y if informative else rng.integers(0, 3, size=n)
    p = np.full((n, 3), (1 - sharp) / 2)
    p[np.arange(n), peak] = sharp
    q = np.tile(prior, (n, 1))
    dates = [start + dt.timedelta(days=int(i)) for i in range(n)]
    return sh.past_rows(dates, [regime] * n, y, p, q), y, p, q


def _ll(y, p):
    return float(-np.mean(np.log(p[np.arange(y.size), y])))


def test_noise_model_in_crash_is_shrunk_to_the_prior_and_informative_normal_is_kept():
    rng = np.random.default_rng(0)
    prior_c, prior_n = np.array([0.35, 0.2, 0.45]), np.array([0.2, 0.5, 0.3])
    crash, *_ = _rows(600, "crash", prior_c, 0.7, False, rng)
    normal, *_ = _rows(2000, "normal", prior_n, 0.6, True, rng)
    fit = sh.fit_shrinkage(pl.concat([crash, normal]), {"crash": prior_c, "normal": prior_n}, prior_n, 0.05, 20)
    assert fit.lam["crash"] >= 0.8
    assert fit.lam["normal"] <= 0.2
    # on NEW rows of the same process the shrunk crash predictions beat the model and are no worse than the prior
    fresh, y, p, q = _rows(3000, "crash", prior_c, 0.7, False, np.random.default_rng(1))
    out = fit.apply(p, np.array(["crash"] * y.size))
    assert _ll(y, out) < _ll(y, p)
    assert _ll(y, out) <= _ll(y, q) + 0.01
    t = fit.table()
    assert set(t["regime"]) == set(REGIMES)
    assert t.filter(pl.col("regime") == "crash")["source"][0].startswith("fitted on 600 past rows")


def test_thin_evidence_is_pulled_towards_the_default_and_no_past_means_the_regime_prior():
    rng = np.random.default_rng(2)
    prior = np.array([0.3, 0.4, 0.3])
    good, *_ = _rows(4000, "normal", prior, 0.6, True, rng)
    thin, *_ = _rows(30, "recovery", prior, 0.6, True, rng)  # informative too, but only 30 rows
    fit = sh.fit_shrinkage(pl.concat([good, thin]), {r: prior for r in REGIMES}, prior, 0.05, 200, 1.0)
    t = {r["regime"]: r for r in fit.table().iter_rows(named=True)}
    assert t["normal"]["lambda"] < 0.1  # 4000 rows: about its fitted value
    rec = t["recovery"]
    assert rec["past_rows"] == 30
    assert rec["lambda"] == pytest.approx((30 * rec["lambda_fitted"] + 200 * 1.0) / 230)
    assert rec["lambda"] > 0.8
    none = sh.fit_shrinkage(pl.DataFrame(schema=sh.PAST_SCHEMA), {r: prior for r in REGIMES}, prior, 0.05, 200, 1.0)
    assert all(v == 1.0 for v in none.lam.values())
    p = np.tile([0.1, 0.1, 0.8], (4, 1))
    assert np.allclose(none.apply(p, np.array(["crash"] * 4)), np.tile(prior, (4, 1)))
    trust = sh.fit_shrinkage(pl.DataFrame(schema=sh.PAST_SCHEMA), {r: prior for r in REGIMES}, prior, 0.05, 200, 0.0)
    assert np.allclose(trust.apply(p, np.array(["crash"] * 4)), p)


def test_past_before_keeps_only_rows_whose_labels_closed():
    rng = np.random.default_rng(3)
    past, *_ = _rows(100, "normal", np.array([0.3, 0.4, 0.3]), 0.6, True, rng)
    cut = dt.date(2010, 2, 1)
    kept = sh.past_before(past, cut)
    assert kept.height == 32 and kept["date"].max() <= cut
    assert sh.past_before(past, None).height == 0


def test_mixture_rows_sum_to_one_and_use_each_rows_regime():
    prior = {"crash": np.array([0.5, 0.0, 0.5]), "low_vol": np.array([0.0, 1.0, 0.0])}
    fit = sh.RegimeShrinkage({"crash": 1.0, "low_vol": 0.5}, prior, np.array([1 / 3] * 3))
    p = np.array([[0.2, 0.6, 0.2], [0.2, 0.6, 0.2], [0.2, 0.6, 0.2]])
    out = fit.apply(p, np.array(["crash", "low_vol", "normal"]))
    assert np.allclose(out.sum(axis=1), 1.0)
    assert np.allclose(out[0], [0.5, 0.0, 0.5])
    assert np.allclose(out[1], [0.1, 0.8, 0.1])
    assert np.allclose(out[2], p[2])  # a regime without a weight is left as it is


def test_production_shrinkage_ignores_rows_after_the_last_trainable_date():
    rng = np.random.default_rng(4)
    prior = np.array([0.3, 0.4, 0.3])
    early, y1, p1, _ = _rows(400, "crash", prior, 0.9, False, rng)  # noise: wants lambda 1
    late, y2, p2, _ = _rows(400, "crash", prior, 0.9, True, rng, start=dt.date(2012, 1, 1))  # informative
    def frame(past, y, p):
        return pl.DataFrame({"fold": [0] * y.size, "symbol": [f"S{i}" for i in range(y.size)],
                             "date": past["date"], "regime": past["regime"],
                             "label": [CLASSES[i] for i in y], **{f"p_{c}": p[:, i] for i, c in enumerate(CLASSES)}})
    raw = pl.concat([frame(early, y1, p1), frame(late, y2, p2).with_columns(pl.lit(1, dtype=pl.Int64).alias("fold"))])
    pri = raw.with_columns(*[pl.lit(float(prior[i])).alias(f"p_{c}") for i, c in enumerate(CLASSES)])
    window = pl.DataFrame({"regime": ["crash"] * 10, "label": ["sell", "hold", "buy", "hold", "buy"] * 2})
    only_early = sh.production_shrinkage(raw, pri, window, dt.date(2011, 12, 31), 0.05, 20)
    both = sh.production_shrinkage(raw, pri, window, None, 0.05, 20)
    assert only_early.lam["crash"] >= 0.9
    assert both.lam["crash"] < only_early.lam["crash"]
    assert np.allclose(only_early.prior["crash"], [0.2, 0.4, 0.4])


def test_meta_learner_shrinkage_needs_the_regime_column():
    from regime_assets.core.ensemble import EnsembleError, MetaLearner

    class Const:
        features = ["f_x"]

        def predict_proba(self, df):
            return np.tile([0.2, 0.6, 0.2], (df.height, 1))

    meta = MetaLearner("weighted", ["a"], np.array([1.0]), np.array([0.5]), "accuracy", fitted={"a": Const()})
    meta.shrinkage = sh.RegimeShrinkage({"crash": 1.0}, {"crash": np.array([0.5, 0.0, 0.5])}, np.ones(3) / 3)
    df = pl.DataFrame({"f_x": [1.0, 2.0], "regime": ["crash", "normal"]})
    out = meta.predict_proba(df)
    assert np.allclose(out[0], [0.5, 0.0, 0.5]) and np.allclose(out[1], [0.2, 0.6, 0.2])
    with pytest.raises(EnsembleError, match="regime"):
        meta.predict_proba(df.drop("regime"))
