import datetime as dt

import numpy as np
import polars as pl
import pytest
from threadpoolctl import threadpool_limits

from regime_assets.core.ensemble import EnsembleError, MetaLearner, fit_meta
from regime_assets.core.evaluation import metrics
from regime_assets.core.models import fit_with_oof
from regime_assets.spec import CLASSES, REGIMES, MetaSpec, ModelSpec


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Single-threaded native code keeps the tests fast on a busy 2-core machine."""
    with threadpool_limits(limits=1):
        yield

LOGREG = ModelSpec(name="logreg", estimator="sklearn.linear_model.LogisticRegression", params={"C": 0.1},
                   scale=True, shap="linear")
MEMO = ModelSpec(name="memo", estimator="sklearn.tree.DecisionTreeClassifier", params={"random_state": 0})


def make_frame(n=3000, n_features=10, n_dates=250, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    score = X[:, 0] + 0.7 * X[:, 1] + 1.5 * rng.normal(size=n)
    y = np.where(score > 0.6, 2, np.where(score < -0.6, 0, 1))
    days = np.sort(rng.integers(0, n_dates, n))
    return pl.DataFrame({f"f_{j}": X[:, j] for j in range(n_features)}).with_columns(
        date=pl.Series([dt.date(2016, 1, 1) + dt.timedelta(days=int(d)) for d in days]).cast(pl.Date),
        regime=pl.Series(np.array(REGIMES)[rng.integers(0, 5, n)]),
        label=pl.Series(np.array(CLASSES)[y]),
    ).with_row_index("row_id")


@pytest.fixture(scope="module")
def fitted():
    df = make_frame()
    w = np.ones(df.height)
    out = {}
    for m in (LOGREG, MEMO):
        out[m.name] = fit_with_oof(m, df, w, None, 0.25, 5)
    return df, out


def _codes(df):
    return df["label"].replace_strict(list(CLASSES), [0, 1, 2]).to_numpy()


def test_memorising_model_gets_no_extra_weight(fitted):
    df, out = fitted
    models = {k: v[0] for k, v in out.items()}
    oofs = {k: v[1] for k, v in out.items()}
    # on the training rows the memoriser looks far better ...
    train_acc = {k: (m.predict_proba(df).argmax(1) == _codes(df)).mean() for k, m in models.items()}
    assert train_acc["memo"] > 0.99 > train_acc["logreg"] + 0.2
    for metric in ("accuracy", "balanced_accuracy", "log_loss"):
        meta = fit_meta(oofs, MetaSpec(method="weighted", weight_metric=metric), models)
        wt = dict(zip(*meta.weights_table().select("model", "weight").to_dict(as_series=False).values()))
        # ... but its out-of-fold weight is not larger than the honest model's
        assert wt["memo"] <= wt["logreg"], metric
        assert sum(wt.values()) == pytest.approx(1.0)


def test_weighted_weights_follow_oof_metric_and_predict(fitted):
    df, out = fitted
    models = {k: v[0] for k, v in out.items()}
    oofs = {k: v[1] for k, v in out.items()}
    meta = fit_meta(oofs, MetaSpec(method="weighted", weight_metric="accuracy"), models)
    table = meta.weights_table()
    assert table.columns == ["model", "oof_metric", "weight"]
    acc = {k: metrics(o["label"], o.select("p_sell", "p_hold", "p_buy").to_numpy())["accuracy"]
           for k, o in oofs.items()}
    rows = {r["model"]: r for r in table.iter_rows(named=True)}
    for k in acc:
        assert rows[k]["oof_metric"] == pytest.approx(acc[k])
        assert rows[k]["weight"] == pytest.approx(acc[k] / sum(acc.values()))
    probs = {k: m.predict_proba(df.head(50)) for k, m in models.items()}
    expected = sum(rows[k]["weight"] * probs[k] for k in probs)
    np.testing.assert_allclose(meta.predict_proba_from(probs), expected)
    np.testing.assert_allclose(meta.predict_proba(df.head(50)), expected)


def test_stacking_on_oof(fitted):
    df, out = fitted
    models = {k: v[0] for k, v in out.items()}
    oofs = {k: v[1] for k, v in out.items()}
    meta = fit_meta(oofs, MetaSpec(method="stacking"), models)
    p = meta.predict_proba(df)
    assert p.shape == (df.height, 3)
    np.testing.assert_allclose(p.sum(1), 1.0)
    w = dict(zip(*meta.weights_table().select("model", "weight").to_dict(as_series=False).values()))
    assert w["logreg"] > w["memo"]
    # the stacked OOF log loss is no worse than the better base model's (in-sample for the stacker)
    oof_probs = {k: o.select("p_sell", "p_hold", "p_buy").to_numpy() for k, o in oofs.items()}
    stacked = metrics(oofs["logreg"]["label"], meta.predict_proba_from(oof_probs))["log_loss"]
    best = min(metrics(o["label"], oof_probs[k])["log_loss"] for k, o in oofs.items())
    assert stacked <= best + 1e-6


def test_meta_errors(fitted):
    _, out = fitted
    oofs = {k: v[1] for k, v in out.items()}
    with pytest.raises(EnsembleError, match="no OOF predictions"):
        fit_meta({}, MetaSpec())
    shifted = dict(oofs, memo=oofs["memo"].head(10))
    with pytest.raises(EnsembleError, match="predict different rows"):
        fit_meta(shifted, MetaSpec())
    with pytest.raises(EnsembleError, match="missing columns.*p_buy"):
        fit_meta(dict(oofs, memo=oofs["memo"].drop("p_buy")), MetaSpec())
    meta = fit_meta(oofs, MetaSpec())
    assert isinstance(meta, MetaLearner)
    with pytest.raises(EnsembleError, match="holds no fitted models"):
        meta.predict_proba(make_frame(n=10))
    with pytest.raises(EnsembleError, match=r"missing for models \['memo'\]"):
        meta.predict_proba_from({"logreg": np.full((3, 3), 1 / 3)})
