import datetime as dt

import numpy as np
import polars as pl
import pytest
from threadpoolctl import threadpool_limits

from regime_assets.core.models import fit_model
from regime_assets.core.shap_tables import (
    IMPORTANCE_SCHEMA,
    STATUS_SCHEMA,
    explain,
    regime_comparison,
    shap_importance,
)
from regime_assets.spec import CLASSES, DEFAULT_MODELS, REGIMES, ModelSpec, ShapSpec


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Single-threaded native code keeps the tests fast on a busy 2-core machine."""
    with threadpool_limits(limits=1):
        yield

SSPEC = ShapSpec(rows_per_regime=60, kernel_rows=12, kernel_background=10, top_k=3, seed=11)
N_FEATURES = 6


def make_frame(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    regime = np.array(REGIMES)[rng.integers(0, len(REGIMES), n)]
    # f_0 drives the label everywhere; f_1 only matters in crash rows
    score = X[:, 0] + np.where(regime == "crash", 2.0 * X[:, 1], 0.0) + 0.5 * rng.normal(size=n)
    y = np.where(score > 0.5, 2, np.where(score < -0.5, 0, 1))
    df = pl.DataFrame({f"f_{j}": X[:, j] for j in range(N_FEATURES)}).with_columns(
        date=pl.Series([dt.date(2019, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 200, n)]),
        regime=pl.Series(regime), label=pl.Series(np.array(CLASSES)[y]))
    return df.with_columns(f_2=pl.when(pl.col("f_3") > 1.5).then(None).otherwise(pl.col("f_2")))


def spec(name, **params):
    m = next(m for m in DEFAULT_MODELS if m.name == name)
    return m.model_copy(update={"params": {**m.params, **params}})


@pytest.fixture(scope="module")
def data():
    df = make_frame()
    return df, {r: df.filter(pl.col("regime") == r) for r in REGIMES}


@pytest.fixture(scope="module")
def models(data):
    df, _ = data
    specs = {"rf": spec("rf", n_estimators=30, max_depth=6, n_jobs=1),
             "lightgbm": spec("lightgbm", n_estimators=40, n_jobs=1),
             "logreg": spec("logreg"), "mlp": spec("mlp", max_iter=50, hidden_layer_sizes=[16])}
    return {k: fit_model(m, df, None) for k, m in specs.items()}


@pytest.mark.parametrize("name", ["rf", "lightgbm", "logreg", "mlp"])
def test_importance_shape_ranks_and_status(data, models, name):
    _, by_regime = data
    imp, status = shap_importance(models[name], by_regime, SSPEC)
    assert imp.schema == pl.Schema(IMPORTANCE_SCHEMA) and status.schema == pl.Schema(STATUS_SCHEMA)
    assert imp.height == len(REGIMES) * N_FEATURES
    assert status["regime"].to_list() == list(REGIMES) and (status["status"] == "ok").all()
    limit = SSPEC.kernel_rows if models[name].shap_kind == "kernel" else SSPEC.rows_per_regime
    assert (status["rows"] == limit).all()
    for _, g in imp.group_by("regime"):
        assert sorted(g["rank"].to_list()) == list(range(1, N_FEATURES + 1))
        top = g.sort("rank")["feature"][0]
        assert top in ("f_0", "f_1")
    assert (imp["mean_abs_shap"] >= 0).all()
    crash = imp.filter(pl.col("regime") == "crash").sort("rank")["feature"].to_list()
    assert set(crash[:2]) == {"f_0", "f_1"}


def test_tree_shap_is_additive(data, models):
    df, _ = data
    X = models["rf"].matrix(df.head(40))
    vals, base, name = explain(models["rf"], X, "tree")
    assert name == "TreeExplainer" and vals.shape == (40, N_FEATURES, 3)
    # forests: SHAP values add up to the predicted probability of each class
    np.testing.assert_allclose(vals.sum(axis=1) + base, models["rf"].predict_proba_matrix(X), atol=1e-6)
    # boosting: they add up to the raw margin per class
    lgb = models["lightgbm"]
    v2, b2, _ = explain(lgb, X, "tree")
    np.testing.assert_allclose(v2.sum(axis=1) + b2, lgb.final_estimator.predict(X, raw_score=True), atol=1e-6)
    # model-agnostic: additive on probabilities relative to the background mean
    v3, b3, name3 = explain(models["mlp"], X[:5], "kernel", background=X[5:25])
    assert name3 == "Permutation"
    np.testing.assert_allclose(v3.sum(axis=1) + b3, models["mlp"].predict_proba_matrix(X[:5]), atol=1e-6)


def test_status_rows_for_unsupported_missing_and_fallback(data, models):
    _, by_regime = data
    frames = dict(by_regime, crash=by_regime["crash"].head(0))
    imp, status = shap_importance(models["logreg"], frames, SSPEC, kind="none")
    assert imp.height == 0 and (status["status"] == "not supported").all() and status.height == len(REGIMES)
    imp, status = shap_importance(models["rf"], frames, SSPEC)
    crash = status.filter(pl.col("regime") == "crash").row(0, named=True)
    assert crash["status"] == "no rows" and crash["rows"] == 0
    assert imp["regime"].n_unique() == len(REGIMES) - 1
    # asking for a tree explainer on a neural net falls back to the model-agnostic one, and says so
    imp, status = shap_importance(models["mlp"], {"normal": by_regime["normal"]}, SSPEC, kind="tree")
    assert status["status"][0].startswith("ok (fallback:") and status["explainer"][0] == "Permutation"
    assert imp.height == N_FEATURES


def test_sampling_is_seeded(data, models):
    _, by_regime = data
    a, _ = shap_importance(models["lightgbm"], by_regime, SSPEC)
    b, _ = shap_importance(models["lightgbm"], by_regime, SSPEC)
    assert a.equals(b)
    c, _ = shap_importance(models["lightgbm"], by_regime, SSPEC.model_copy(update={"seed": 99}))
    assert not a.equals(c)


def test_regime_comparison():
    rows = []
    ranks = {"low_vol": ["a", "b", "c", "d"], "crash": ["d", "a", "b", "c"]}
    for regime, order in ranks.items():
        for i, f in enumerate(order):
            rows.append({"model": "m", "regime": regime, "feature": f, "mean_abs_shap": 1.0 / (i + 1), "rank": i + 1})
    table = pl.DataFrame(rows, schema=IMPORTANCE_SCHEMA)
    comp = regime_comparison(table, top_k=1)
    assert comp.columns == ["model", "feature", "rank_low_vol", "rank_crash", "max_rank_change"]
    assert comp["feature"].to_list() == ["d", "a"]
    assert comp["max_rank_change"].to_list() == [3, 1]
    assert regime_comparison(table, top_k=4).height == 4


def test_unknown_kind_is_rejected(models):
    with pytest.raises(ValueError, match="unknown SHAP kind 'deep'"):
        shap_importance(models["rf"], {}, SSPEC, kind="deep")


def test_constant_model_gets_status_not_values(data):
    df, by_regime = data
    only_buy = df.filter(pl.col("label") == "buy")
    fm = fit_model(ModelSpec(name="c", estimator="sklearn.tree.DecisionTreeClassifier"), only_buy, None)
    imp, status = shap_importance(fm, by_regime, SSPEC)
    assert imp.height == 0 and status["status"].str.starts_with("not supported").all()
