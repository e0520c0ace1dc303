import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings, strategies as st

from regime_assets.core.labels import LABEL_COLUMNS, LabelError, build_labels, forward_returns
from regime_assets.spec import CLASSES, REGIMES, LabelSpec

SYMBOLS = ("AAA", "BBB", "CCC")


def _dates(n: int) -> list[dt.date]:
    days = pl.date_range(dt.date(2016, 1, 4), dt.date(2016, 1, 4) + dt.timedelta(days=2 * n), "1d", eager=True)
    return days.filter(days.dt.weekday() <= 5)[:n].to_list()


def _prices(n: int = 300, seed: int = 0, lengths: tuple[int, ...] | None = None) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    dates = _dates(n)
    frames = []
    for i, sym in enumerate(SYMBOLS):
        k = lengths[i] if lengths else n
        close = np.round(50 * np.exp(np.cumsum(rng.normal(0, 0.015, k))), 2)
        frames.append(pl.DataFrame({"symbol": sym, "date": dates[:k], "close": close}))
    return pl.concat(frames)


def _features(px: pl.DataFrame) -> pl.DataFrame:
    """A features-shaped frame: keys + a couple of f_ columns."""
    return px.sort("symbol", "date").select(
        "symbol", "date", pl.lit("unknown").alias("sector"), pl.lit(0, dtype=pl.Int32).alias("sector_code"),
        (pl.col("close") / pl.col("close").shift(1) - 1).over("symbol").alias("f_ret_1"),
        pl.col("close").log().alias("f_logc"))


def _regimes(px: pl.DataFrame) -> pl.DataFrame:
    return px.select("symbol", "date", "close").with_columns(
        pl.Series("regime", [REGIMES[i % len(REGIMES)] for i in range(px.height)]),
        pl.lit("vix_band").alias("regime_rule"), pl.lit(20.0).alias("vix"), pl.lit(0.0).alias("drawdown"))


def _label(px: pl.DataFrame, spec: LabelSpec) -> pl.DataFrame:
    return build_labels(_features(px), _regimes(px), spec, px)


def test_output_contract():
    px = _prices()
    feats = _features(px)
    out = build_labels(feats, _regimes(px), LabelSpec(), px)
    assert out.columns == feats.columns + list(LABEL_COLUMNS)
    assert out.schema["fwd_return"] == pl.Float64 and out.schema["label"] == pl.Utf8
    assert out.height == feats.height
    assert out.select(feats.columns).equals(feats)
    assert set(out.get_column("label").drop_nulls().unique().to_list()) == set(CLASSES)
    assert set(out.get_column("regime").unique().to_list()) == set(REGIMES)


def test_forward_return_and_null_tail():
    px = _prices(lengths=(300, 250, 40))
    h = 7
    out = _label(px, LabelSpec(horizon=h))
    for sym, n in zip(SYMBOLS, (300, 250, 40)):
        s = out.filter(pl.col("symbol") == sym).sort("date")
        c = px.filter(pl.col("symbol") == sym).get_column("close").to_numpy()
        fwd = s.get_column("fwd_return").to_numpy()
        assert np.allclose(fwd[:-h], c[h:] / c[:-h] - 1, rtol=0, atol=1e-14)
        # the last h rows of each symbol have no full forward window: kept, null, never filled
        assert s.height == n
        assert s.get_column("fwd_return")[-h:].null_count() == h
        assert s.get_column("label")[-h:].null_count() == h
        assert s.get_column("label")[:-h].null_count() == 0


@pytest.mark.parametrize("future, expected", [
    (102.0, "hold"), (102.01, "buy"), (98.0, "hold"), (97.99, "sell"), (100.0, "hold"), (150.0, "buy"),
    (60.0, "sell"),
])
def test_threshold_boundaries_are_strict(future, expected):
    # +2% exactly (100 -> 102) is hold; anything beyond is buy; same for -2% and sell
    px = pl.DataFrame({"symbol": "AAA", "date": _dates(6), "close": [100.0, 100.0, 100.0, 100.0, 100.0, future]})
    out = _label(px, LabelSpec(horizon=5, buy_threshold=0.02, sell_threshold=0.02))
    assert out.get_column("label")[0] == expected
    assert out.get_column("fwd_return")[0] == pytest.approx(future / 100 - 1)
    assert out.get_column("label")[1:].null_count() == 5


def test_asymmetric_thresholds():
    px = pl.DataFrame({"symbol": "AAA", "date": _dates(4), "close": [100.0, 103.0, 97.5, 100.0]})
    out = _label(px, LabelSpec(horizon=1, buy_threshold=0.05, sell_threshold=0.01))
    # 100->103 (+3%) hold under a 5% buy bar; 103->97.5 (-5.3%) sell; 97.5->100 (+2.6%) hold
    assert out.get_column("label").to_list() == ["hold", "sell", "hold", None]


def test_vol_scaled_thresholds():
    px = _prices(seed=4)
    spec = LabelSpec(horizon=5, vol_scaled=True, vol_window=21, vol_multiplier=0.5)
    out = _label(px, spec)
    s = out.filter(pl.col("symbol") == "BBB").sort("date")
    c = px.filter(pl.col("symbol") == "BBB").get_column("close").to_numpy()
    r = c[1:] / c[:-1] - 1
    labels = s.get_column("label").to_list()
    # no full vol window in the first 21 rows (21 daily returns need 22 prices)
    assert all(x is None for x in labels[:21])
    checked = 0
    for i in range(21, len(c) - 5):
        thr = 0.5 * np.std(r[i - 21:i], ddof=1) * np.sqrt(5)
        ratio = c[i + 5] / c[i]
        want = "buy" if ratio > 1 + thr else "sell" if ratio < 1 - thr else "hold"
        assert labels[i] == want, i
        checked += 1
    assert checked > 200
    fixed = _label(px, LabelSpec(horizon=5)).filter(pl.col("symbol") == "BBB").get_column("label")
    assert fixed.to_list() != labels


@settings(max_examples=15, deadline=None)
@given(cut=st.integers(min_value=1, max_value=180), seed=st.integers(0, 10_000), h=st.integers(1, 15),
       vol_scaled=st.booleans())
def test_labels_only_change_within_the_horizon_before_t(cut, seed, h, vol_scaled):
    px = _prices(n=200, seed=seed)
    t = _dates(200)[cut]
    spec = LabelSpec(horizon=h, vol_scaled=vol_scaled, vol_window=10)
    base = _label(px, spec)
    rng = np.random.default_rng(seed)
    k = pl.Series(rng.uniform(0.5, 1.5, px.height))
    px2 = px.with_columns(pl.when(pl.col("date") > t).then(pl.col("close") * k).otherwise(pl.col("close")))
    moved = _label(px2, spec)
    idx = pl.int_range(pl.len()).over("symbol")
    key = ["symbol", "date", "fwd_return", "label"]
    a = base.sort("symbol", "date").with_columns(idx.alias("i"))
    b = moved.sort("symbol", "date").with_columns(idx.alias("i"))
    # rows whose forward window ends at or before t (i + h <= idx(t)) are untouched
    safe = pl.col("i") <= cut - h
    assert a.filter(safe).select(key).equals(b.filter(safe).select(key))
    # rows whose forward window reaches past t do see the change
    late = (pl.col("i") > cut - h) & (pl.col("i") < 200 - h)
    assert not a.filter(late).get_column("fwd_return").equals(b.filter(late).get_column("fwd_return"))


@settings(max_examples=25, deadline=None)
@given(prices=st.lists(st.floats(1.0, 1000.0), min_size=2, max_size=40), h=st.integers(1, 5),
       thr=st.floats(0.001, 0.3))
def test_label_agrees_with_forward_return(prices, h, thr):
    px = pl.DataFrame({"symbol": "AAA", "date": _dates(len(prices)), "close": prices})
    out = forward_returns(px, LabelSpec(horizon=h, buy_threshold=thr, sell_threshold=thr))
    for fwd, lab in out.select("fwd_return", "label").iter_rows():
        assert (fwd is None) == (lab is None)
        if lab == "buy":
            assert fwd > thr - 1e-12
        elif lab == "sell":
            assert fwd < -thr + 1e-12
        elif lab == "hold":
            assert -thr - 1e-12 <= fwd <= thr + 1e-12
    assert out.get_column("label").null_count() == min(h, len(prices))


def test_rows_without_regime_are_dropped():
    px = _prices()
    reg = _regimes(px).filter(pl.col("date") != _dates(300)[50])
    out = build_labels(_features(px), reg, LabelSpec(), px)
    assert out.height == px.height - 3
    assert out.filter(pl.col("date") == _dates(300)[50]).height == 0
    assert out.get_column("regime").null_count() == 0


def test_errors_name_the_problem():
    px = _prices()
    feats, reg = _features(px), _regimes(px)
    with pytest.raises(LabelError, match=r"regime 'panic' for symbol AAA on 2016-01-04"):
        build_labels(feats, reg.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("panic"))
                                             .otherwise(pl.col("regime")).alias("regime")), LabelSpec(), px)
    with pytest.raises(LabelError, match=r"features row for symbol CCC on .* has no price row"):
        build_labels(feats, reg, LabelSpec(), px.filter(~((pl.col("symbol") == "CCC")
                                                        & (pl.col("date") == _dates(300)[9]))))
    with pytest.raises(LabelError, match=r"features already has columns \['label'\]"):
        build_labels(feats.with_columns(pl.lit("x").alias("label")), reg, LabelSpec(), px)
    with pytest.raises(LabelError, match=r"prices is missing columns \['close'\]"):
        build_labels(feats, reg, LabelSpec(), px.drop("close"))
    with pytest.raises(LabelError, match=r"close must be finite and > 0; symbol BBB"):
        build_labels(feats, reg, LabelSpec(), px.with_columns(
            pl.when((pl.col("symbol") == "BBB") & (pl.col("date") == _dates(300)[3])).then(0.0)
            .otherwise(pl.col("close")).alias("close")))
    with pytest.raises(LabelError, match="regime_labels has duplicate rows for symbol AAA"):
        build_labels(feats, pl.concat([reg, reg.head(1)]), LabelSpec(), px)


def test_unsorted_inputs_give_the_same_labels_in_features_order():
    px = _prices(seed=2)
    feats, reg = _features(px), _regimes(px)
    base = build_labels(feats, reg, LabelSpec(), px)
    shuffled = feats.sample(fraction=1.0, shuffle=True, seed=1)
    out = build_labels(shuffled, reg.sample(fraction=1.0, shuffle=True, seed=2), LabelSpec(),
                       px.sample(fraction=1.0, shuffle=True, seed=3))
    assert out.select(shuffled.columns).equals(shuffled)  # rows stay in the order of the features
    assert out.sort("symbol", "date").equals(base)


def test_duplicate_prices_or_features_raise():
    px = _prices()
    feats, reg = _features(px), _regimes(px)
    with pytest.raises(LabelError, match="prices has duplicate rows for symbol BBB"):
        build_labels(feats, reg, LabelSpec(), pl.concat([px, px.filter(pl.col("symbol") == "BBB").head(1)]))
    with pytest.raises(LabelError, match="features has duplicate rows for symbol CCC"):
        build_labels(pl.concat([feats, feats.tail(1)]), reg, LabelSpec(), px)
