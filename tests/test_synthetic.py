"""The seeded synthetic market: determinism, shape, episodes, VIX response and speed."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import polars as pl
import pytest

from regime_assets.core.sources import validate_prices
from regime_assets.core.synthetic import SECTORS, SyntheticMarket, ar1_filter, generate_synthetic
from regime_assets.spec import DataSpec

M = SyntheticMarket()


@pytest.fixture(scope="module")
def market():
    return generate_synthetic(6, 30, seed=3, start=dt.date(1990, 1, 2))


def _episode_table(data) -> pl.DataFrame:
    """Per episode: state, length, index close before it and at its end, and whether it runs to the data end."""
    idx = data.states.join(data.index, on="date").with_columns(pl.col("close").shift(1).alias("prev"))
    last_ep = idx["episode"].max()
    return idx.group_by("episode", maintain_order=True).agg(
        pl.col("state").first(), pl.len().alias("days"), pl.col("prev").first(), pl.col("close").last().alias("end"),
    ).with_columns((pl.col("episode") == last_ep).alias("truncated"), (pl.col("end") / pl.col("prev")).alias("ratio"))


def test_deterministic_given_seed():
    a = generate_synthetic(4, 3, seed=11)
    b = generate_synthetic(4, 3, seed=11)
    c = generate_synthetic(4, 3, seed=12)
    assert a.prices.equals(b.prices) and a.index.equals(b.index) and a.vix.equals(b.vix)
    assert a.states.equals(b.states) and a.sectors.equals(b.sectors)
    assert not a.prices.equals(c.prices)


def test_shape_calendar_and_ohlc(market):
    p = market.prices
    n_days = round(30 * 252)
    assert p.height == 6 * n_days
    assert p["symbol"].unique().sort().to_list() == [f"SYN{i:03d}" for i in range(6)]
    assert p.columns == ["symbol", "date", "close", "open", "high", "low", "volume"]
    assert not p.select(pl.struct("symbol", "date").is_duplicated().any()).item()
    assert p.equals(p.sort("symbol", "date"))
    assert (p["date"].dt.weekday() <= 5).all()  # polars: Monday=1 .. Sunday=7
    assert p["date"].min() == dt.date(1990, 1, 2)
    days = p.filter(pl.col("symbol") == "SYN000")["date"]
    assert days.equals(market.index["date"]) and days.is_unique().all()
    for col in ("close", "open", "high", "low", "volume"):
        assert p[col].is_finite().all() and (p[col] > 0).all(), col
    assert p.select((pl.col("low") <= pl.min_horizontal("open", "close")).all()).item()
    assert p.select((pl.col("high") >= pl.max_horizontal("open", "close")).all()).item()
    assert market.sectors["sector"].to_list() == [SECTORS[i % len(SECTORS)] for i in range(6)]
    assert set(market.origin) == set(p["symbol"].unique())


def test_wide_symbol_names():
    data = generate_synthetic(1200, 0.6, seed=1)
    names = data.prices["symbol"].unique().sort()
    assert names[0] == "SYN0000" and names[-1] == "SYN1199" and names.len() == 1200


def test_crash_episodes_fall_15_to_40_percent_and_recoveries_rise(market):
    ep = _episode_table(market)
    crashes = ep.filter((pl.col("state") == "crash") & ~pl.col("truncated") & pl.col("prev").is_not_null())
    assert crashes.height >= 2
    lo, hi = M.crash_depth
    assert crashes["ratio"].is_between(1 - hi - 1e-9, 1 - lo + 1e-9).all()
    assert crashes["days"].is_between(M.min_days[2], M.max_days[2]).all()
    recov = ep.filter((pl.col("state") == "recovery") & ~pl.col("truncated"))
    assert recov.height >= 1 and (recov["ratio"] > 1).all()
    # every crash is followed by a recovery
    states = ep["state"].to_list()
    assert all(states[i + 1] == "recovery" for i, s in enumerate(states[:-1]) if s == "crash")
    calm = ep.filter(pl.col("state") == "calm")
    assert calm["days"].mean() > crashes["days"].mean() * 5


def test_vix_responds_to_the_regime(market):
    v = market.states.join(market.vix, on="date")
    by = {r["state"]: r for r in v.group_by("state").agg(
        pl.col("vix").median().alias("median"), (pl.col("vix") > 35).mean().alias("above35")).iter_rows(named=True)}
    assert by["crash"]["above35"] >= 0.9
    assert by["calm"]["median"] < 20 and by["calm"]["above35"] == 0
    assert 25 <= by["volatile"]["median"] <= 35
    assert (v["vix"] >= M.vix_floor).all()


def test_index_tracks_the_stocks(market):
    ew = market.prices.with_columns((pl.col("close").log().diff().over("symbol")).alias("r")).group_by(
        "date").agg(pl.col("r").mean()).sort("date")
    idx = market.index.with_columns(pl.col("close").log().diff().alias("ri"))
    both = ew.join(idx, on="date").drop_nulls()
    assert np.corrcoef(both["r"], both["ri"])[0, 1] > 0.75


def test_passes_validation(market):
    validate_prices(market.prices, market.origin, DataSpec(source="synthetic", allow_future_dates=True))


def test_ar1_filter_matches_the_recursion():
    x = np.random.default_rng(0).standard_normal(300)
    expected, prev = np.empty_like(x), 0.0
    for i, xi in enumerate(x):
        prev = 0.8 * prev + xi
        expected[i] = prev
    assert np.allclose(ar1_filter(x, 0.8), expected, atol=1e-9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_symbols"):
        generate_synthetic(0, 2, seed=1)


def test_500_symbols_30_years_is_fast():
    t = time.perf_counter()
    data = generate_synthetic(500, 30, seed=2)
    elapsed = time.perf_counter() - t
    assert data.prices.height == 500 * 7560
    assert elapsed < 15, f"took {elapsed:.1f}s"
