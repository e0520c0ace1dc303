import datetime as dt

import numpy as np
import polars as pl
import pytest
from threadpoolctl import threadpool_limits
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from regime_assets.core.models import (
    OOF_COLUMNS,
    FittedModel,
    ModelError,
    build_estimator,
    data_hash,
    fit_model,
    fit_with_oof,
    inner_split,
    library_versions,
)
from regime_assets.spec import CLASSES, DEFAULT_MODELS, REGIMES, ModelSpec


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Single-threaded native code keeps the tests fast on a busy 2-core machine."""
    with threadpool_limits(limits=1):
        yield

SMALL = {"n_estimators": 40, "max_iter": 40, "n_jobs": 1}


def small(m: ModelSpec) -> ModelSpec:
    """A default model with fewer trees / iterations for fast tests."""
    p = dict(m.params)
    for k, v in SMALL.items():
        if k in p and (k == "n_jobs" or m.name not in ("logreg", "svm")):
            p[k] = v
    return m.model_copy(update={"params": p})


def make_frame(n=3000, n_features=10, n_dates=250, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    score = X[:, 0] + 0.7 * X[:, 1] - 0.5 * X[:, 2] + noise * rng.normal(size=n)
    y = np.where(score > 0.6, 2, np.where(score < -0.6, 0, 1))
    days = np.sort(rng.integers(0, n_dates, n))
    start = dt.date(2015, 1, 1)
    df = pl.DataFrame({f"f_{j}": X[:, j] for j in range(n_features)}).with_columns(
        date=pl.Series([start + dt.timedelta(days=int(d)) for d in days]).cast(pl.Date),
        symbol=pl.Series(np.array(["AAA", "BBB", "CCC", "DDD"])[rng.integers(0, 4, n)]),
        regime=pl.Series(np.array(REGIMES)[rng.integers(0, 5, n)]),
        label=pl.Series(np.array(CLASSES)[y]),
        fwd_return=pl.Series(0.01 * score),
    ).with_row_index("row_id")
    return df, rng.uniform(0.5, 2.0, n)


def codes(df):
    return df["label"].replace_strict(list(CLASSES), [0, 1, 2]).to_numpy()


def test_build_estimator_wraps_scaling_and_calibration():
    svm = next(m for m in DEFAULT_MODELS if m.name == "svm")
    est = build_estimator(svm)
    assert isinstance(est, Pipeline)
    assert isinstance(est.steps[0][1], StandardScaler)
    cal = est.steps[-1][1]
    assert isinstance(cal, CalibratedClassifierCV) and cal.method == "sigmoid" and cal.cv == 3
    assert type(cal.estimator).__name__ == "SGDClassifier" and cal.estimator.loss == "hinge"
    mlp = build_estimator(next(m for m in DEFAULT_MODELS if m.name == "mlp"))
    assert mlp.steps[-1][1].hidden_layer_sizes == (64, 32)
    rf = build_estimator(next(m for m in DEFAULT_MODELS if m.name == "rf"))
    assert not isinstance(rf, Pipeline) and rf.max_depth == 8 and rf.max_samples == 0.5


def test_build_estimator_errors_name_the_model():
    with pytest.raises(ModelError, match="model bad.*no attribute 'Nope'"):
        build_estimator(ModelSpec(name="bad", estimator="sklearn.ensemble.Nope"))
    with pytest.raises(ModelError, match="model bad2.*bad params"):
        build_estimator(ModelSpec(name="bad2", estimator="sklearn.linear_model.LogisticRegression",
                                  params={"not_a_param": 1}))


def _conflict_frame(seed=1, n=1200):
    """Half the rows say buy when f_0 > 0, the other half (duplicated features) say sell."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    truth = np.where(X[:, 0] > 0, 2, 0)
    Xb = np.vstack([X, X])
    y = np.r_[truth, 2 - truth]
    w = np.r_[np.ones(n), np.full(n, 1e-3)]
    df = pl.DataFrame({f"f_{j}": Xb[:, j] for j in range(3)}).with_columns(
        label=pl.Series(np.array(CLASSES)[y]))
    return df, w, truth, X


@pytest.mark.parametrize("name", [m.name for m in DEFAULT_MODELS])
def test_sample_weights_reach_the_final_estimator(name):
    mspec = small(next(m for m in DEFAULT_MODELS if m.name == name))
    df, w, truth, X = _conflict_frame()
    test = pl.DataFrame({f"f_{j}": X[:, j] for j in range(3)})
    weighted = fit_model(mspec, df, w).predict_proba(test).argmax(1)
    reversed_w = fit_model(mspec, df, w[::-1].copy()).predict_proba(test).argmax(1)
    assert (weighted == truth).mean() > 0.85
    assert (reversed_w == 2 - truth).mean() > 0.85


def test_sample_weights_with_metadata_routing_enabled():
    df, w, truth, X = _conflict_frame()
    test = pl.DataFrame({f"f_{j}": X[:, j] for j in range(3)})
    for name in ("svm", "logreg", "mlp"):
        mspec = small(next(m for m in DEFAULT_MODELS if m.name == name))
        with sklearn.config_context(enable_metadata_routing=True):
            pred = fit_model(mspec, df, w[::-1].copy()).predict_proba(test).argmax(1)
        assert (pred == 2 - truth).mean() > 0.85, name


def test_predict_proba_shape_missing_class_and_median_fill():
    df, w = make_frame(n=1500)
    no_hold = df.filter(pl.col("label") != "hold")
    lgb = small(next(m for m in DEFAULT_MODELS if m.name == "lightgbm"))
    fm = fit_model(lgb, no_hold, np.ones(no_hold.height))
    p = fm.predict_proba(df)
    assert p.shape == (df.height, 3)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.all(p[:, 1] == 0.0) and p[:, 0].max() > 0.5 and p[:, 2].max() > 0.5
    # nulls and NaN are filled with the training medians
    holed = df.with_columns(f_0=pl.when(pl.col("row_id") % 3 == 0).then(None).otherwise(pl.col("f_0")),
                            f_1=pl.when(pl.col("row_id") % 5 == 0).then(float("nan")).otherwise(pl.col("f_1")))
    filled = df.with_columns(
        f_0=pl.when(pl.col("row_id") % 3 == 0).then(fm.medians[0]).otherwise(pl.col("f_0")),
        f_1=pl.when(pl.col("row_id") % 5 == 0).then(fm.medians[1]).otherwise(pl.col("f_1")))
    np.testing.assert_allclose(fm.predict_proba(holed), fm.predict_proba(filled))
    assert fm.medians[0] == pytest.approx(np.median(no_hold["f_0"].to_numpy()))


def test_single_class_training_gives_constant_model():
    df, _ = make_frame(n=300)
    only_buy = df.filter(pl.col("label") == "buy")
    fm = fit_model(small(DEFAULT_MODELS[0]), only_buy, None)
    p = fm.predict_proba(df)
    assert isinstance(fm, FittedModel) and np.all(p[:, 2] == 1.0)


def test_fit_model_input_errors():
    df, w = make_frame(n=300)
    lr = next(m for m in DEFAULT_MODELS if m.name == "logreg")
    with pytest.raises(ModelError, match="unknown labels.*'up'"):
        fit_model(lr, df.with_columns(label=pl.lit("up")), w)
    with pytest.raises(ModelError, match="299 sample weights for 300"):
        fit_model(lr, df, w[:-1])
    with pytest.raises(ModelError, match="null labels"):
        fit_model(lr, df.with_columns(label=pl.lit(None, dtype=pl.Utf8)), w)
    fm = fit_model(lr, df, w)
    with pytest.raises(ModelError, match=r"missing feature columns \['f_3'\]"):
        fm.predict_proba(df.drop("f_3"))


def test_inner_split_holds_out_latest_dates_and_purges_horizon():
    dates = pl.Series([dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(100)] * 2).cast(pl.Date)
    fit, hold = inner_split(dates, 0.2, 5)
    d = dates.to_numpy()
    assert hold.sum() == 40 and fit.sum() == 150
    assert d[hold].min() == np.datetime64("2020-03-21")  # day 80
    assert d[fit].max() == np.datetime64("2020-03-15")  # day 74: days 75..79 purged
    with pytest.raises(ModelError, match="too few"):
        inner_split(dates[:10], 0.4, 8)


def test_fit_with_oof_is_honest_and_deterministic():
    df, w = make_frame()
    rf = small(next(m for m in DEFAULT_MODELS if m.name == "rf"))
    final, oof = fit_with_oof(rf, df, w, None, 0.2, 5)
    # the contract columns first; then the rows' weights and the probabilities before calibration
    assert oof.columns == [*OOF_COLUMNS, "weight", "raw_p_sell", "raw_p_hold", "raw_p_buy"]
    cutoff = sorted(df["date"].unique().to_list())[-int(np.ceil(0.2 * df["date"].n_unique()))]
    assert oof["date"].min() == cutoff and oof.height == df.filter(pl.col("date") >= cutoff).height
    assert final.n_train == df.height
    _, oof2 = fit_with_oof(rf, df, w, None, 0.2, 5)
    assert oof.select(OOF_COLUMNS[:4]).equals(oof2.select(OOF_COLUMNS[:4]))
    np.testing.assert_allclose(oof.select(OOF_COLUMNS[4:]).to_numpy(), oof2.select(OOF_COLUMNS[4:]).to_numpy(),
                               rtol=1e-12, atol=1e-12)  # threaded tree sums: same up to rounding
    # a memorising model: perfect on its training rows, chance level out of fold on pure noise
    noise = df.with_columns(label=pl.Series(np.array(CLASSES)[np.random.default_rng(5).integers(0, 3, df.height)]))
    tree = ModelSpec(name="memo", estimator="sklearn.tree.DecisionTreeClassifier", params={"random_state": 0})
    memo, oof_noise = fit_with_oof(tree, noise, None, None, 0.2, 5)
    train_acc = (memo.predict_proba(noise).argmax(1) == codes(noise)).mean()
    oof_acc = (oof_noise.select("p_sell", "p_hold", "p_buy").to_numpy().argmax(1) == codes(oof_noise)).mean()
    assert train_acc > 0.99 and oof_acc < 0.45


def test_data_hash_is_order_invariant_and_content_sensitive():
    df, _ = make_frame(n=400)
    h = data_hash(df)
    assert h == data_hash(df.reverse()) == data_hash(df.select(df.columns[::-1]))
    changed = df.with_columns(f_0=pl.when(pl.col("row_id") == 7).then(pl.col("f_0") + 1e-9).otherwise(pl.col("f_0")))
    assert data_hash(changed) != h
    assert data_hash(df.with_columns(symbol=pl.col("symbol").str.replace("AAA", "AAB"))) != h


def test_library_versions():
    v = library_versions()
    assert v["scikit-learn"] == sklearn.__version__ and "python" in v and "lightgbm" in v
