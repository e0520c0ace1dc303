import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings, strategies as st

from regime_assets.core.features import (
    KEY_COLUMNS,
    FeatureError,
    build_features,
    feature_catalog,
    feature_columns,
)
from regime_assets.spec import FeatureSpec

FS = FeatureSpec(dtype="float64")  # exact values: the hand computations below compare at 1e-9..1e-12
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")


def _dates(n: int, start: dt.date = dt.date(2015, 1, 5)) -> list[dt.date]:
    days = pl.date_range(start, start + dt.timedelta(days=2 * n), "1d", eager=True)
    return days.filter(days.dt.weekday() <= 5)[:n].to_list()


def _market(n: int = 800, seed: int = 0, real_from: int | None = None) -> pl.DataFrame:
    real_from = n // 2 if real_from is None else real_from
    rng = np.random.default_rng(seed)
    dates = _dates(n)
    index = 2000 * np.exp(np.cumsum(rng.normal(0.0003, 0.011, n)))
    vix = np.clip(18 + np.cumsum(rng.normal(0, 0.8, n)) * 0.3, 9, None)
    src = ["proxy"] * real_from + ["real"] * (n - real_from)
    return pl.DataFrame({
        "date": dates, "index_close": index, "vix": vix, "vix_source": src,
        "vix_real": [None if s == "proxy" else v for s, v in zip(src, vix)],
        "vix_proxy": vix,
    })


def _prices(ctx: pl.DataFrame, seed: int = 1, volume: bool = False, starts: tuple[int, ...] = (0, 0, 150, 30),
            ends: tuple[int, ...] | None = None) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = ctx.height
    m = np.log(ctx.get_column("index_close").to_numpy())
    mret = np.r_[0.0, np.diff(m)]
    frames = []
    for i, sym in enumerate(SYMBOLS):
        beta = 0.6 + 0.3 * i
        r = beta * mret + rng.normal(0, 0.015, n)
        close = np.round(40 * (i + 1) * np.exp(np.cumsum(r)), 2)
        lo, hi = starts[i], (ends[i] if ends else n)
        f = pl.DataFrame({"symbol": sym, "date": ctx.get_column("date")[lo:hi], "close": close[lo:hi]})
        if volume:
            f = f.with_columns(pl.Series("volume", rng.integers(1_000, 50_000, hi - lo).astype(float)))
        frames.append(f)
    return pl.concat(frames)


SECTORS = pl.DataFrame({"symbol": ["AAA", "BBB", "CCC"], "sector": ["tech", "energy", "tech"]})


@pytest.fixture(scope="module")
def data():
    ctx = _market()
    px = _prices(ctx)
    return px, ctx, build_features(px, ctx, SECTORS, FS)


def _sym(df: pl.DataFrame, sym: str) -> pl.DataFrame:
    return df.filter(pl.col("symbol") == sym).sort("date")


# ------------------------------------------------------------------------------------------------- contract


def test_columns_dtypes_and_catalog(data):
    px, _, f = data
    assert f.columns[:4] == list(KEY_COLUMNS)
    feats = feature_columns(f)
    assert len(feats) >= 100
    assert f.columns == list(KEY_COLUMNS) + feats
    assert all(f.schema[c] == pl.Float64 for c in feats)  # FS asks for float64
    assert f.schema["date"] == pl.Date and f.schema["sector_code"].is_integer()
    assert f.height == px.height
    assert f.select(pl.struct("symbol", "date").is_duplicated().any()).item() is False
    cat = feature_catalog(FS)
    assert cat.columns == ["name", "window", "description"]
    assert cat.get_column("name").to_list() == feats
    assert cat.get_column("description").str.len_chars().min() > 5


def test_catalog_follows_the_spec_and_volume():
    ctx = _market(400)
    spec = FeatureSpec(return_windows=[3, 7], vol_windows=[4, 9, 30], ma_windows=[6, 12], drawdown_windows=[15],
                       rsi_windows=[9], bollinger_windows=[11], beta_windows=[40], vix_change_windows=[2],
                       vix_percentile_window=60)
    for volume in (False, True):
        px = _prices(ctx, volume=volume)
        f = build_features(px, ctx, None, spec)
        names = feature_catalog(spec, volume=volume).get_column("name").to_list()
        assert feature_columns(f) == names
        assert ("f_volume_z_9" in names) is volume and ("f_volume_ratio_30" in names) is volume
    assert {"f_ret_3", "f_ret_7", "f_vol_ratio_4_9", "f_vol_ratio_4_30", "f_ma_cross_6_12", "f_rsi_9",
            "f_bb_z_11", "f_beta_40", "f_vix_chg_2", "f_vix_pctile_60", "f_xs_ret_7"} <= set(names)
    assert not any(n.startswith("f_ret_5") for n in names)


def test_sectors_and_codes(data):
    _, _, f = data
    sec = dict(f.select("symbol", "sector").unique().iter_rows())
    assert sec == {"AAA": "tech", "BBB": "energy", "CCC": "tech", "DDD": "unknown"}
    codes = f.select("sector", "sector_code").unique().sort("sector")
    assert codes.get_column("sector_code").to_list() == [0, 1, 2]  # energy, tech, unknown
    assert build_features(data[0], data[1], None, FS).get_column("sector").unique().to_list() == ["unknown"]


def test_no_nan_or_inf_and_warmup_nulls(data):
    px, _, f = data
    feats = feature_columns(f)
    bad = f.select(pl.sum_horizontal((~pl.col(feats).is_finite()).cast(pl.Int64)).sum()).item()
    assert bad == 0  # nulls are not counted: only NaN / inf
    # warm-up: the first w rows of each symbol have no w-day return, every later row has one
    for sym in SYMBOLS:
        s = _sym(f, sym)
        for w in (5, 21):
            col = s.get_column(f"f_ret_{w}")
            assert col[:w].null_count() == w and col[w:].null_count() == 0
        vol = s.get_column("f_vol_21")  # needs 21 daily returns = 22 prices
        assert vol[:21].null_count() == 21 and vol[21:].null_count() == 0
        assert s.get_column("f_ma_gap_200")[:199].null_count() == 199
        assert s.get_column("f_ma_gap_200")[199:].null_count() == 0


def test_division_by_zero_gives_null_not_inf():
    ctx = _market(300)
    px = _prices(ctx).with_columns(  # a flat stretch: zero vol and zero Bollinger std
        pl.when((pl.col("symbol") == "AAA") & (pl.int_range(pl.len()).over("symbol").is_between(100, 160)))
        .then(pl.lit(50.0)).otherwise(pl.col("close")).alias("close"))
    full = build_features(px, ctx, None, FS)
    feats = feature_columns(full)
    assert full.select(pl.sum_horizontal((~pl.col(feats).is_finite()).cast(pl.Int64)).sum()).item() == 0
    f = _sym(full, "AAA")
    row = f.row(150, named=True)
    assert row["f_vol_21"] == 0.0 and row["f_bb_width_20"] == 0.0
    assert row["f_bb_z_20"] is None and row["f_vol_ratio_5_10"] is None
    assert row["f_rsi_14"] is not None and 0 <= row["f_rsi_14"] <= 100


# ------------------------------------------------------------------------------------------------- leakage


def _perturb_after(px: pl.DataFrame, ctx: pl.DataFrame, t: dt.date, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    after = pl.col("date") > t
    k1 = pl.Series(rng.uniform(0.5, 1.5, px.height))
    px2 = px.with_columns(pl.when(after).then(pl.col("close") * k1).otherwise(pl.col("close")).alias("close"))
    if "volume" in px.columns:
        k2 = pl.Series(rng.uniform(0.1, 10, px.height))
        px2 = px2.with_columns(pl.when(after).then(pl.col("volume") * k2).otherwise(pl.col("volume")))
    k3, k4 = pl.Series(rng.uniform(0.7, 1.3, ctx.height)), pl.Series(rng.uniform(0.5, 2.0, ctx.height))
    ctx2 = ctx.with_columns(
        pl.when(after).then(pl.col("index_close") * k3).otherwise(pl.col("index_close")).alias("index_close"),
        pl.when(after).then(pl.col("vix") * k4).otherwise(pl.col("vix")).alias("vix"),
        pl.when(after).then(pl.lit("real")).otherwise(pl.col("vix_source")).alias("vix_source"),
    )
    return px2, ctx2


@settings(max_examples=8, deadline=None)
@given(cut=st.integers(min_value=5, max_value=590), seed=st.integers(0, 10_000), volume=st.booleans())
def test_no_feature_at_or_before_t_uses_later_data(cut, seed, volume):
    ctx = _market(600, seed=seed % 7)
    px = _prices(ctx, seed=seed, volume=volume)
    t = ctx.get_column("date")[cut]
    base = build_features(px, ctx, SECTORS, FS)
    px2, ctx2 = _perturb_after(px, ctx, t, seed)
    moved = build_features(px2, ctx2, SECTORS, FS)
    before = pl.col("date") <= t
    assert base.filter(before).equals(moved.filter(before))  # exact, nulls included
    # the perturbation is real: later rows do change
    assert not base.filter(~before).equals(moved.filter(~before))


def test_symbol_features_do_not_depend_on_other_symbols(data):
    px, ctx, f = data
    alone = build_features(px.filter(pl.col("symbol") == "CCC"), ctx, SECTORS, FS)
    cols = [c for c in feature_columns(f) if not c.startswith("f_xs_")]
    assert _sym(f, "CCC").select(cols).equals(alone.select(cols))
    # a lone symbol ranks in the middle
    assert alone.get_column("f_xs_ret_5").drop_nulls().unique().to_list() == [0.5]


def test_input_order_does_not_matter(data):
    px, ctx, f = data
    shuffled = px.sample(fraction=1.0, shuffle=True, seed=3)
    assert build_features(shuffled, ctx.reverse(), SECTORS, FS).equals(f)


# ---------------------------------------------------------------------------------------- hand computations


def _rsi_wilder(close: np.ndarray, n: int) -> np.ndarray:
    d = np.diff(close)
    up, dn = np.clip(d, 0, None), np.clip(-d, 0, None)
    out = np.full(len(close), np.nan)
    au, ad = up[0], dn[0]
    for i in range(1, len(d) + 1):
        if i > 1:
            au = au + (up[i - 1] - au) / n
            ad = ad + (dn[i - 1] - ad) / n
        if i >= n:
            out[i] = 50.0 if au + ad == 0 else 100 * au / (au + ad)
    return out


def test_hand_computed_features(data):
    px, ctx, f = data
    s = _sym(f, "BBB")
    c = _sym(px, "BBB").get_column("close").to_numpy()
    i = 400
    assert s.get_column("f_ret_5")[i] == pytest.approx(np.log(c[i] / c[i - 5]), rel=1e-12)
    r = np.diff(np.log(c))
    assert s.get_column("f_vol_21")[i] == pytest.approx(np.std(r[i - 21:i], ddof=1) * np.sqrt(252), rel=1e-10)
    assert s.get_column("f_dd_63")[i] == pytest.approx(c[i] / c[i - 62:i + 1].max() - 1, rel=1e-12)
    assert s.get_column("f_ma_gap_50")[i] == pytest.approx(c[i] / c[i - 49:i + 1].mean() - 1, rel=1e-10)
    win = c[i - 19:i + 1]
    assert s.get_column("f_bb_z_20")[i] == pytest.approx((c[i] - win.mean()) / win.std(), rel=1e-9)
    rsi = _rsi_wilder(c, 14)
    got = s.get_column("f_rsi_14").to_numpy()
    assert np.array_equal(np.isnan(rsi), np.isnan(got))
    assert np.allclose(got[~np.isnan(got)], rsi[~np.isnan(rsi)], rtol=1e-10, atol=1e-10)
    # beta and correlation to the index over 63 days
    m = _market().join(_sym(px, "BBB").select("date"), on="date").get_column("index_close").to_numpy()
    rm = np.diff(np.log(m))
    a, b = r[i - 63:i], rm[i - 63:i]
    assert s.get_column("f_beta_63")[i] == pytest.approx(np.cov(a, b)[0, 1] / np.var(b, ddof=1), rel=1e-9)
    assert s.get_column("f_corr_63")[i] == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-9)
    assert s.get_column("f_rs_21")[i] == pytest.approx(np.log(c[i] / c[i - 21]) - np.log(m[i] / m[i - 21]))
    # MACD line
    ema = lambda x, span: pl.Series(x).ewm_mean(span=span, adjust=False).to_numpy()  # noqa: E731
    assert s.get_column("f_macd_line")[i] == pytest.approx((ema(c, 12)[i] - ema(c, 26)[i]) / c[i], rel=1e-9)
    # market features
    v = ctx.get_column("vix").to_numpy()
    j = 500
    row = f.filter(pl.col("date") == ctx.get_column("date")[j]).row(0, named=True)
    assert row["f_vix"] == v[j]
    assert row["f_vix_pctile_252"] == pytest.approx(np.mean(v[j - 251:j + 1] <= v[j]))
    assert row["f_vix_chg_5"] == pytest.approx(np.log(v[j] / v[j - 5]))
    assert row["f_vix_is_real"] == 1.0 and f.filter(pl.col("date") == ctx["date"][10])["f_vix_is_real"][0] == 0.0
    mi = ctx.get_column("index_close").to_numpy()
    assert row["f_mkt_vol_21"] == pytest.approx(np.std(np.diff(np.log(mi[j - 21:j + 1])), ddof=1) * np.sqrt(252))


def test_cross_sectional_rank(data):
    _, ctx, f = data
    ref = f.select(
        "symbol", "date",
        ((pl.col("f_ret_21").rank("average").over("date") - 0.5) / pl.col("f_ret_21").count().over("date"))
        .alias("ref"), "f_ret_21", "f_xs_ret_21", "f_xs_dd_21", "f_dd_21")
    assert ref.get_column("ref").equals(ref.get_column("f_xs_ret_21"), check_names=False)
    day = ref.filter(pl.col("date") == ctx.get_column("date")[160]).sort("f_ret_21")
    vals = day.get_column("f_xs_ret_21").drop_nulls().to_list()
    assert vals == sorted(vals) and len(vals) == 3  # CCC starts later: no 21-day return yet
    # ties share the average rank: several symbols at a new 21-day high have drawdown 0
    ties = ref.filter(pl.col("f_dd_21") == 0).group_by("date").agg(pl.len(), pl.col("f_xs_dd_21").n_unique())
    multi = ties.filter(pl.col("len") > 1)
    assert multi.height > 0 and (multi.get_column("f_xs_dd_21") == 1).all()


def test_market_dates_missing_give_null_market_features():
    ctx = _market(400)
    px = _prices(ctx)
    gap = ctx.get_column("date")[300]
    f = build_features(px, ctx.filter(pl.col("date") != gap), None, FS)
    row = f.filter((pl.col("date") == gap) & (pl.col("symbol") == "AAA")).row(0, named=True)
    assert row["f_vix"] is None and row["f_mkt_ret_5"] is None and row["f_rs_5"] is None
    assert row["f_ret_5"] is not None and row["f_vol_21"] is not None


def test_volume_features():
    ctx = _market(300)
    px = _prices(ctx, volume=True)
    f = _sym(build_features(px, ctx, None, FS), "AAA")
    v = _sym(px, "AAA").get_column("volume").to_numpy()
    i = 200
    assert f.get_column("f_volume_ratio_21")[i] == pytest.approx(v[i] / v[i - 20:i + 1].mean())
    lv = np.log1p(v[i - 20:i + 1])
    assert f.get_column("f_volume_z_21")[i] == pytest.approx((lv[-1] - lv.mean()) / lv.std(ddof=1))


# --------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("mutate, match", [
    (lambda px: px.drop("close"), r"prices is missing columns \['close'\]"),
    (lambda px: px.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(-1.0).otherwise(pl.col("close"))
                                .alias("close")), r"symbol AAA on 2015-01-14 has -1\.0"),
    (lambda px: pl.concat([px, px.head(1)]), r"duplicate rows for symbol AAA on 2015-01-05"),
    (lambda px: px.with_columns(pl.col("date").cast(pl.Utf8)), r"prices\.date must be pl\.Date"),
])
def test_bad_prices_raise(mutate, match):
    ctx = _market(100)
    with pytest.raises(FeatureError, match=match):
        build_features(mutate(_prices(ctx, starts=(0, 0, 0, 0))), ctx, None, FS)


def test_bad_market_context_and_spec_raise():
    ctx = _market(100)
    px = _prices(ctx, starts=(0, 0, 0, 0))
    with pytest.raises(FeatureError, match="market_context is missing columns"):
        build_features(px, ctx.drop("vix"), None, FS)
    with pytest.raises(FeatureError, match="market_context has duplicate rows"):
        build_features(px, pl.concat([ctx, ctx.tail(1)]), None, FS)
    with pytest.raises(FeatureError, match="sectors lists symbol AAA more than once"):
        build_features(px, ctx, pl.DataFrame({"symbol": ["AAA", "AAA"], "sector": ["x", "y"]}), FS)
    with pytest.raises(FeatureError, match=r"features\.vol_windows"):
        build_features(px, ctx, None, FeatureSpec(vol_windows=[1, 5]))


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_row_ranks_match_scipy(rows, cols, seed):
    from scipy.stats import rankdata

    from regime_assets.core.features import _rank_rows

    rng = np.random.default_rng(seed)
    m = rng.integers(0, 4, (rows, cols)).astype(float)  # many ties
    m[rng.random((rows, cols)) < 0.25] = np.nan
    got = _rank_rows(m.copy())
    for i in range(rows):
        ok = ~np.isnan(m[i])
        assert np.isnan(got[i][~ok]).all()
        if ok.any():
            want = (rankdata(m[i][ok], method="average") - 0.5) / ok.sum()
            assert np.array_equal(got[i][ok], want)


def test_cross_sectional_blocks_do_not_change_ranks(data, monkeypatch):
    import regime_assets.core.features as features_module

    px, ctx, f = data
    monkeypatch.setattr(features_module, "_XS_BLOCK", 12)  # 3 dates per block
    assert build_features(px, ctx, SECTORS, FS).equals(f)


# ------------------------------------------------------------------------------------------ storage dtype


def test_default_storage_is_float32_and_is_the_float64_frame_rounded(data):
    px, ctx, f64 = data
    assert FeatureSpec().dtype == "float32"
    f32 = build_features(px, ctx, SECTORS, FeatureSpec())
    cols = feature_columns(f32)
    assert cols == feature_columns(f64) and f32.columns == f64.columns
    assert all(f32.schema[c] == pl.Float32 for c in cols)
    assert f32.schema["sector_code"] == f64.schema["sector_code"]
    # one float64 computation rounded once: cross-sectional ranks too (they rank the float64 values)
    assert f64.with_columns(pl.col(cols).cast(pl.Float32)).equals(f32)
    assert f32.estimated_size() < 0.6 * f64.estimated_size()


def test_values_float32_cannot_hold_become_null():
    ctx = _market(400)
    px = _prices(ctx)
    # a close that jumps by 1e300 makes moving-average gaps and rallies huge but finite in float64
    big = px.with_columns(pl.when((pl.col("symbol") == "AAA") & (pl.col("date") >= ctx["date"][300]))
                          .then(pl.col("close") * 1e300).otherwise(pl.col("close")).alias("close"))
    f64 = build_features(big, ctx, None, FS)
    f32 = build_features(big, ctx, None, FeatureSpec())
    cols = feature_columns(f32)
    odd = f32.select(pl.any_horizontal(pl.col(cols).is_nan() | pl.col(cols).is_infinite()).any()).item()
    assert not odd
    # somewhere a finite float64 value is beyond float32's range: it is null in float32, kept in float64
    over = f64.select(pl.any_horizontal((pl.col(cols).abs() > 3.4e38).fill_null(False)).any()).item()
    assert over
    mask = f64.select(pl.col(cols).abs() > 3.4e38)
    nulls32 = f32.select(pl.col(cols).is_null())
    assert all((mask[c].fill_null(False) & ~nulls32[c]).sum() == 0 for c in cols)


@pytest.mark.parametrize("batch_rows", [1, 700, 1500, 10**9])
def test_symbol_batches_do_not_change_values(data, batch_rows):
    px, ctx, f64 = data
    spec = FeatureSpec(dtype="float64", batch_rows=batch_rows)
    assert build_features(px, ctx, SECTORS, spec).equals(f64)
    f32 = build_features(px, ctx, SECTORS, FeatureSpec(batch_rows=batch_rows))
    assert f32.equals(build_features(px, ctx, SECTORS, FeatureSpec()))


# ------------------------------------------------------------------------------------ how they are computed


def test_whole_column_windows_equal_per_symbol_windows(data):
    """Shifts and rolling max/min run on the whole column, nulled in each symbol's first rows: value for value
    what the per-symbol computation gives (symbols start at different rows here)."""
    from regime_assets.core.features import _from_row, _row_in_symbol, _symbol_starts

    px, _, _ = data
    px = px.sort("symbol", "date")
    px = px.with_columns(_row_in_symbol(_symbol_starts(px.get_column("symbol")), px.height))
    c = pl.col("close")
    for n in (1, 5, 63, 252):
        pairs = [((c / c.shift(n)).log(), n), (c.rolling_max(n, min_samples=n), n - 1),
                 (c.rolling_min(n, min_samples=n), n - 1), (c.diff(), 1)]
        for e, k in pairs:
            got = px.select(_from_row(k, e).alias("x")).get_column("x")
            want = px.select(e.over("symbol").alias("x")).get_column("x")
            assert got.equals(want), (n, k)
            assert got.null_count() >= k * px.get_column("symbol").n_unique()


def test_exponential_means_match_polars_per_symbol():
    from regime_assets.core.features import _ewm_by_symbol

    rng = np.random.default_rng(5)
    sizes = [1, 3, 40, 400]
    x = np.concatenate([100 + np.cumsum(rng.normal(0, 1, n)) for n in sizes])
    x[0] = np.nan  # a symbol with nothing
    x[1] = np.nan  # leading NaN are skipped
    bounds = np.cumsum([0, *sizes])
    sym = np.repeat(np.arange(len(sizes)), sizes)
    frame = pl.DataFrame({"s": sym, "x": x}).with_columns(pl.col("x").fill_nan(None))
    for alpha, min_samples in ((0.1, 1), (2 / 13, 26), (1 / 14, 14), (0.5, 3)):
        got = _ewm_by_symbol(x, bounds, alpha, min_samples)
        want = frame.select(pl.col("x").ewm_mean(alpha=alpha, adjust=False, min_samples=min_samples).over("s"))
        want = want.get_column("x").fill_null(np.nan).to_numpy()
        assert np.array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        assert ok.sum() > 300
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12)
    # each symbol alone gives the same values (no state crosses a symbol boundary)
    alone = _ewm_by_symbol(x[bounds[3]:], np.array([0, sizes[3]]), 0.1, 5)
    assert np.array_equal(alone, _ewm_by_symbol(x, bounds, 0.1, 5)[bounds[3]:], equal_nan=True)


def test_exponential_mean_rejects_a_gap():
    from regime_assets.core.features import _ewm_by_symbol

    x = np.array([1.0, 2.0, np.nan, 4.0])
    with pytest.raises(FeatureError, match="gap"):
        _ewm_by_symbol(x, np.array([0, 4]), 0.5, 1)


def test_background_errors_reach_the_caller(data, monkeypatch):
    import regime_assets.core.features as features_module

    px, ctx, _ = data

    def broken(*args, **kwargs):
        raise FeatureError("features: ranks failed on purpose")

    monkeypatch.setattr(features_module, "_xs_ranks", broken)
    with pytest.raises(FeatureError, match="on purpose"):
        build_features(px, ctx, SECTORS, FS)
