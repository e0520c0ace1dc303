"""Synthetic frames in the ``walk_forward_predictions`` contract, with prices and a market context that agree."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from regime_assets.spec import REGIMES


def business_days(start: dt.date, n: int) -> list[dt.date]:
    days = pl.date_range(start, start + dt.timedelta(days=2 * n + 10), "1d", eager=True)
    return days.filter(days.dt.weekday() <= 5).head(n).to_list()


def synthetic_contract(n_symbols: int = 30, n_days: int = 500, ic: float = 0.0, horizon: int = 5, seed: int = 0,
                       models: tuple[str, ...] = ("meta_learner",), vol: float = 0.01,
                       start: dt.date = dt.date(2015, 1, 5)) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(predictions, prices, market_context). Daily returns are iid normal; each model's score p_buy - p_sell on a
    date is ``ic * z(fwd_return) + sqrt(1 - ic^2) * noise`` across symbols (z = cross-sectional z-score of the
    horizon's forward return), so its expected Pearson IC is ``ic``. The last ``horizon`` dates have no forward
    return (their score is noise)."""
    rng = np.random.default_rng(seed)
    days = business_days(start, n_days + 1)
    r = rng.normal(0.0003, vol, size=(n_symbols, n_days + 1))
    r[:, 0] = 0.0
    close = 100 * np.cumprod(1 + r, axis=1)
    syms = [f"S{i:03d}" for i in range(n_symbols)]
    prices = pl.DataFrame({"symbol": np.repeat(syms, n_days + 1), "date": days * n_symbols,
                           "close": close.ravel()})
    fwd = np.full((n_symbols, n_days), np.nan)
    fwd[:, : n_days - horizon] = close[:, horizon:n_days] / close[:, : n_days - horizon] - 1
    z = np.full_like(fwd, np.nan)
    z[:, : n_days - horizon] = (fwd[:, : n_days - horizon] - fwd[:, : n_days - horizon].mean(axis=0)) \
        / fwd[:, : n_days - horizon].std(axis=0)
    regime_by_date = np.array(REGIMES)[(np.arange(n_days) // 60) % len(REGIMES)]
    frames = []
    for m in models:
        noise = rng.normal(size=(n_symbols, n_days))
        score = np.where(np.isfinite(z), ic * np.nan_to_num(z) + np.sqrt(1 - ic ** 2) * noise, noise)
        a = 0.3 / np.abs(score).max()
        p_buy, p_sell = 1 / 3 + a * score, 1 / 3 - a * score
        frames.append(pl.DataFrame({
            "model": m, "symbol": np.repeat(syms, n_days), "date": days[:n_days] * n_symbols,
            "regime": np.tile(regime_by_date, n_symbols), "fwd_return": fwd.ravel(),
            "p_sell": p_sell.ravel(), "p_hold": np.full(score.size, 1 / 3), "p_buy": p_buy.ravel()}))
    pred = pl.concat(frames).with_columns(
        pl.col("fwd_return").fill_nan(None),
        pl.when(pl.col("fwd_return") > 0.02).then(pl.lit("buy")).when(pl.col("fwd_return") < -0.02)
        .then(pl.lit("sell")).otherwise(pl.lit("hold")).alias("label"),
        pl.col("date").dt.year().cast(pl.Int32).alias("fold"), pl.lit("r0").alias("recipe_hash"))
    pred = pred.with_columns(pl.col("date").min().over("fold").alias("test_start"),
                             pl.col("date").max().over("fold").alias("test_end"))
    index = close.mean(axis=0)
    market = pl.DataFrame({"date": days, "index_close": index, "vix": np.linspace(12, 40, n_days + 1),
                           "vix_source": "proxy"})
    return pred, prices, market
