import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regime_assets.core.replay_buffer import (
    ReplayBufferError,
    after_training_window,
    empty_like,
    error_replay_buffer,
    replay_losses,
)
from regime_assets.spec import CLASSES, ReplayBufferSpec


def _labeled(n: int, seed: int = 0, null_every: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    labels = [CLASSES[i] for i in rng.integers(0, 3, size=n)]
    if null_every:
        labels = [None if i % null_every == 0 else lab for i, lab in enumerate(labels)]
    return pl.DataFrame({
        "symbol": [f"S{i % 3}" for i in range(n)],
        "date": [dt.date(2022, 1, 1) + dt.timedelta(days=i // 3) for i in range(n)],
        "f_x": rng.normal(size=n),
        "regime": ["normal"] * n,
        "label": labels,
    }, schema_overrides={"label": pl.Utf8})


def _proba(n: int, seed: int = 1) -> np.ndarray:
    p = np.random.default_rng(seed).dirichlet([1.0, 1.0, 1.0], size=n)
    return p


def test_selects_worst_rows_by_true_class_probability():
    df = _labeled(200)
    p = _proba(200)
    out = error_replay_buffer(df, p, ReplayBufferSpec(worst_fraction=0.05, max_rows=5000))
    assert out.height == 10
    assert out.columns == [*df.columns, "replay_loss"]
    idx = np.array([CLASSES.index(lab) for lab in df.get_column("label")])
    p_true = p[np.arange(200), idx]
    worst = set(np.argsort(p_true)[:10].tolist())  # lowest p(true) = highest log-loss
    chosen = set(df.with_row_index("i").join(out.select("symbol", "date"), on=["symbol", "date"])
                 .get_column("i").to_list())
    assert chosen == worst
    expected_loss = -np.log(np.sort(p_true)[:10])
    assert np.allclose(np.sort(out.get_column("replay_loss").to_numpy())[::-1], np.sort(expected_loss)[::-1])
    assert out.select("symbol", "date").equals(out.select("symbol", "date").sort("symbol", "date"))


def test_capped_at_max_rows():
    df = _labeled(1000)
    out = error_replay_buffer(df, _proba(1000), ReplayBufferSpec(worst_fraction=0.5, max_rows=7))
    assert out.height == 7


def test_fraction_rounding_is_exact():
    df = _labeled(100)
    out = error_replay_buffer(df, _proba(100), ReplayBufferSpec(worst_fraction=0.07, max_rows=5000))
    assert out.height == 7


def test_no_model_gives_empty_with_schema():
    df = _labeled(30)
    out = error_replay_buffer(df, None, ReplayBufferSpec())
    assert out.height == 0
    assert out.schema == {**df.schema, "replay_loss": pl.Float64}
    assert empty_like(df).schema == out.schema


def test_null_labels_never_chosen():
    df = _labeled(90, null_every=2)
    p = _proba(90)
    p[::2] = [1.0, 0.0, 0.0]  # would be terrible rows, but unlabelled
    out = error_replay_buffer(df, p, ReplayBufferSpec(worst_fraction=1.0, max_rows=5000))
    assert out.height == df.get_column("label").drop_nulls().len()
    assert out.get_column("label").null_count() == 0


def test_zero_probability_is_finite():
    df = _labeled(3).with_columns(pl.Series("label", ["sell", "hold", "buy"]))
    p = np.array([[0.0, 0.5, 0.5], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])
    loss = replay_losses(df.get_column("label"), p)
    assert np.all(np.isfinite(loss)) and loss[0] > loss[1] > loss[2]
    assert loss[1] == pytest.approx(-np.log(0.6))


def test_bad_inputs_raise():
    df = _labeled(10)
    with pytest.raises(ReplayBufferError, match="proba has 9 rows"):
        error_replay_buffer(df, _proba(9), ReplayBufferSpec())
    with pytest.raises(ReplayBufferError, match="shape"):
        error_replay_buffer(df, np.ones((10, 2)) / 2, ReplayBufferSpec())
    bad = _proba(10)
    bad[4, 0] = np.nan
    with pytest.raises(ReplayBufferError, match="row 4"):
        error_replay_buffer(df, bad, ReplayBufferSpec())
    with pytest.raises(ReplayBufferError, match="'up'"):
        error_replay_buffer(df.with_columns(pl.lit("up").alias("label")), _proba(10), ReplayBufferSpec())
    with pytest.raises(ReplayBufferError, match="label"):
        error_replay_buffer(df.drop("label"), _proba(10), ReplayBufferSpec())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.floats(0.01, 1.0), st.integers(0, 50), st.integers(0, 10))
def test_buffer_size_and_ordering_property(n, frac, max_rows, null_every):
    df = _labeled(n, seed=n, null_every=null_every)
    p = _proba(n, seed=n + 1)
    out = error_replay_buffer(df, p, ReplayBufferSpec(worst_fraction=frac, max_rows=max_rows))
    n_valid = df.get_column("label").drop_nulls().len()
    assert out.height == min(math.ceil(round(frac * n_valid, 9)), max_rows, n_valid)
    loss = replay_losses(df.get_column("label"), p)
    finite = np.sort(loss[np.isfinite(loss)])[::-1]
    if out.height:
        # every chosen loss is at least as large as every loss left out
        assert out.get_column("replay_loss").min() >= finite[out.height - 1] - 1e-12
        if out.height < finite.size:
            assert out.get_column("replay_loss").min() >= finite[out.height] - 1e-12


class _WrongInsideModel:
    """Most wrong (p_true ~ 0) on rows up to ``train_end``, close to right after it."""

    def __init__(self, train_end):
        self.train_end = train_end

    def predict_proba(self, df):
        idx = np.array([CLASSES.index(c) for c in df["label"].to_list()])
        inside = (df["date"] <= self.train_end).to_numpy()
        p = np.full((df.height, 3), 0.05)
        p[np.arange(df.height), idx] = np.where(inside, 0.001, 0.6)
        p[np.arange(df.height), (idx + 1) % 3] += np.where(inside, 0.9, 0.0)
        rng = np.random.default_rng(0)
        p[~inside] += rng.uniform(0, 0.3, size=(int((~inside).sum()), 3))
        return p / p.sum(axis=1, keepdims=True)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 300))
def test_buffer_never_holds_a_row_of_the_champions_training_window(offset):
    df = _labeled(1200)
    train_end = dt.date(2022, 1, 1) + dt.timedelta(days=offset)
    model = _WrongInsideModel(train_end)
    cand = after_training_window(df, train_end)
    proba = model.predict_proba(cand) if cand.height else None
    out = error_replay_buffer(cand, proba, ReplayBufferSpec(worst_fraction=0.1, max_rows=5000), train_end)
    assert out.filter(pl.col("date") <= train_end).height == 0
    assert out["label"].null_count() == 0
    if cand.height:
        assert out.height == math.ceil(0.1 * cand.height)
    # the in-sample errors are the worst ones: fed the whole frame, the buffer would be all training rows
    whole = error_replay_buffer(df.filter(pl.col("label").is_not_null()),
                                model.predict_proba(df.filter(pl.col("label").is_not_null())),
                                ReplayBufferSpec(worst_fraction=0.1, max_rows=5000))
    if offset >= 100:
        assert whole.filter(pl.col("date") <= train_end).height == whole.height


def test_buffer_refuses_training_rows_and_needs_a_training_end():
    df = _labeled(60)
    train_end = dt.date(2022, 1, 10)
    with pytest.raises(ReplayBufferError, match="training window"):
        error_replay_buffer(df, _proba(60), ReplayBufferSpec(), train_end)
    assert after_training_window(df, None).height == 0
    assert after_training_window(df, train_end, as_of=dt.date(2022, 1, 12))["date"].max() == dt.date(2022, 1, 12)
