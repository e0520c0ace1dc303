"""Calibration on natural rows corrects the priors that balancing distorts; reliability tables."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from regime_assets.core import calibration as cal
from regime_assets.core.models import encode_labels, fit_with_oof
from regime_assets.spec import CLASSES, CalibrationSpec, ModelSpec

PRIORS = np.array([0.15, 0.70, 0.15])


def _natural(n: int, seed: int, start: dt.date = dt.date(2010, 1, 1), symbols: int = 10) -> pl.DataFrame:
    """Rows with the natural class mix PRIORS; two weakly informative features; ``symbols`` rows per date."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=PRIORS)
    centers = np.array([[-0.4, 0.3], [0.0, 0.0], [0.4, -0.3]])
    X = centers[y] + rng.normal(size=(n, 2))
    dates = [start + dt.timedelta(days=int(i // symbols)) for i in range(n)]
    return pl.DataFrame({"row_id": np.arange(n, dtype=np.int64), "symbol": [f"S{i % symbols}" for i in range(n)],
                         "date": dates, "regime": ["normal"] * n, "source": ["window"] * n,
                         "label": [CLASSES[k] for k in y], "f_a": X[:, 0], "f_b": X[:, 1]})


def _oversampled(natural: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The balanced resample the pipeline trains on: every class drawn to the same count (minorities repeated)."""
    parts = []
    size = natural.height // 2
    for k, c in enumerate(CLASSES):
        part = natural.filter(pl.col("label") == c)
        parts.append(part.sample(size, with_replacement=True, seed=seed + k))
    out = pl.concat(parts).sort("date")
    return out.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("row_id"))


LOGREG = ModelSpec(name="logreg", estimator="sklearn.linear_model.LogisticRegression", params={"C": 1.0},
                   scale=True, shap="linear")


@pytest.mark.parametrize("method", ["temperature", "vector", "matrix"])
def test_calibration_brings_a_prior_shifted_model_below_the_prior(method):
    window = _natural(12_000, seed=1)
    balanced = _oversampled(window, seed=2)
    test = _natural(6_000, seed=3, start=dt.date(2015, 1, 1))
    cspec = CalibrationSpec(method=method, min_rows=100)
    fitted, oof = fit_with_oof(LOGREG, balanced, None, ["f_a", "f_b"], 0.3, 5, natural=window, calibration=cspec)
    y = encode_labels(test["label"])
    prior = cal.prior_log_loss(y, encode_labels(window["label"]))
    raw = cal.log_loss(y, fitted.raw_proba_matrix(fitted.matrix(test)))
    calibrated = cal.log_loss(y, fitted.predict_proba(test))
    assert raw > prior, (raw, prior)  # the balanced fit's probabilities are worse than the class frequencies
    assert calibrated < prior, (calibrated, prior)
    assert fitted.calibrator is not None and fitted.calibrator.method == method
    rep = fitted.calibration_report
    assert rep["log_loss_after"] < rep["log_loss_before"]
    assert rep["late_log_loss_after"] < rep["late_log_loss_before"]
    # calibrated buy share near the true 15 %, the balanced fit's far above it
    assert abs(fitted.predict_proba(test)[:, 2].mean() - PRIORS[2]) < 0.03
    assert fitted.raw_proba_matrix(fitted.matrix(test))[:, 2].mean() > 0.25
    # OOF rows are the natural holdout rows, calibrated, with the raw columns beside them
    assert oof.height < window.height and oof["date"].min() > window["date"].min()
    assert {"raw_p_sell", "raw_p_hold", "raw_p_buy", "weight"} <= set(oof.columns)
    assert not np.allclose(oof.select("p_buy").to_numpy(), oof.select("raw_p_buy").to_numpy())


def test_oof_rows_are_purged_from_the_inner_fit():
    window = _natural(6_000, seed=4)
    balanced = _oversampled(window, seed=5)
    _, oof = fit_with_oof(LOGREG, balanced, None, ["f_a", "f_b"], 0.25, 5, natural=window,
                          calibration=CalibrationSpec(min_rows=50))
    dates = window["date"].unique().sort()
    n_hold = int(np.ceil(0.25 * dates.len()))
    assert oof["date"].min() == dates[dates.len() - n_hold]


def test_disabled_calibration_and_override():
    window = _natural(4_000, seed=6)
    balanced = _oversampled(window, seed=7)
    fitted, oof = fit_with_oof(LOGREG, balanced, None, ["f_a", "f_b"], 0.3, 5, natural=window,
                               calibration=CalibrationSpec(enabled=False))
    assert fitted.calibrator is None
    assert np.allclose(oof.select("p_buy").to_numpy(), oof.select("raw_p_buy").to_numpy())
    own = LOGREG.model_copy(update={"calibration": "none"})
    fitted, _ = fit_with_oof(own, balanced, None, ["f_a", "f_b"], 0.3, 5, natural=window,
                             calibration=CalibrationSpec())
    assert fitted.calibrator is None and fitted.calibration_report["requested"] == "none"


def test_calibrator_identity_when_too_few_rows_and_rows_sum_to_one():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=30)
    y = rng.integers(0, 3, size=30)
    c = cal.fit_calibrator(p, y, "vector", min_rows=50)
    assert c.method == "none" and "identity" in c.report["status"]
    assert np.allclose(c.transform(p), p)
    c = cal.fit_calibrator(np.vstack([p] * 10), np.concatenate([y] * 10), "matrix", min_rows=50)
    out = c.transform(p)
    assert np.allclose(out.sum(axis=1), 1.0) and (out > 0).all()
    with pytest.raises(cal.CalibrationError, match="unknown method"):
        cal.fit_calibrator(p, y, "isotonic")


def test_reliability_table_reports_every_bin_and_finds_miscalibration():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), size=20_000)
    y = np.array([rng.choice(3, p=row) for row in p])  # calibrated by construction
    t = cal.reliability_table(y, p, 10)
    assert t.height == 30 and t.group_by("class").agg(pl.col("n").sum())["n"].to_list() == [20_000] * 3
    ece = cal.expected_calibration_error(t)
    assert ece["ece"].max() < 0.02
    squashed = np.full_like(p, 1 / 3) * 0.5 + p * 0.5  # under-confident: observed frequencies spread wider
    assert cal.expected_calibration_error(cal.reliability_table(y, squashed, 10))["ece"].min() > 0.05
    empty = cal.reliability_table(np.array([0, 1]), np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05]]), 5)
    assert empty.filter(pl.col("n") == 0).height > 0
    assert empty.filter(pl.col("n") == 0)["observed"].null_count() == empty.filter(pl.col("n") == 0).height


def test_bias_anchored_to_the_window_frequencies():
    """The holdout months' class mix differs from the window's: the anchored map averages the window's mix."""
    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.ones(3) * 3, size=3_000)
    y = np.array([rng.choice(3, p=row) for row in p])
    window = np.array([0.25, 0.45, 0.30])
    free = cal.fit_calibrator(p, y, "vector", min_rows=100)
    anchored = cal.fit_calibrator(p, y, "vector", min_rows=100, prior=window)
    assert np.allclose(anchored.transform(p).mean(axis=0), window, atol=1e-4)
    assert not np.allclose(free.transform(p).mean(axis=0), window, atol=1e-2)
    assert np.allclose(anchored.W, free.W)  # the scales are kept, only the bias moves
    assert "anchored" in anchored.report["status"]


def test_meta_learner_weighted_fit_and_optional_ensemble_map():
    from regime_assets.core.ensemble import fit_meta, meta_oof
    from regime_assets.spec import MetaSpec

    window = _natural(8_000, seed=9)
    balanced = _oversampled(window, seed=10)
    cspec = CalibrationSpec(min_rows=100)
    fits = {}
    for name, C in (("a", 1.0), ("b", 0.01)):
        ms = LOGREG.model_copy(update={"name": name, "params": {"C": C}})
        fits[name] = fit_with_oof(ms, balanced, None, ["f_a", "f_b"], 0.3, 5, natural=window, calibration=cspec)
    oofs = {n: o.with_columns(pl.Series("weight", np.where(o["label"] == "buy", 5.0, 1.0)))
            for n, (_, o) in fits.items()}
    models = {n: f for n, (f, _) in fits.items()}
    for method in ("weighted", "stacking"):
        plain = fit_meta(oofs, MetaSpec(method=method, weight_metric="log_loss", use_sample_weights=False),
                         models=models, calibration=cspec)
        heavy = fit_meta(oofs, MetaSpec(method=method, weight_metric="log_loss"), models=models,
                         calibration=cspec)
        assert heavy.weighted_fit and not plain.weighted_fit
        assert not np.allclose(heavy.oof_metric, plain.oof_metric)  # weighted OOF scores differ
        assert plain.calibrator is None and plain.calibration_report["method"] == "inputs"
    both = fit_meta(oofs, MetaSpec(), models=models, calibration=cspec.model_copy(update={"ensemble": True}))
    assert both.calibrator is not None and both.calibration_report["anchored_to"]
    test = _natural(3_000, seed=11, start=dt.date(2016, 1, 1))
    assert np.allclose(both.predict_proba(test).sum(axis=1), 1.0)
    frame = meta_oof(both, oofs)
    assert {"p_buy", "raw_p_buy", "weight"} <= set(frame.columns) and frame.height == oofs["a"].height
