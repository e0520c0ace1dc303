"""A seeded regime-switching market: N symbols over Y years, an index and a VIX-like series.

A Markov chain over four market states drives a common factor:

==========  ===============  ==================  =====================================================
state       daily drift      daily vol           typical length
==========  ===============  ==================  =====================================================
calm        +0.05 %          0.7 %               ~ 1 year
volatile    -0.02 %          1.6 %               ~ 2 months
crash       -1.4 %           3.5 %               ~ 3 weeks (a 15-40 % fall)
recovery    +0.45 %          2.0 %               ~ 2 months
==========  ===============  ==================  =====================================================

Each symbol has a beta to the factor and idiosyncratic noise (with rare single-name jumps). The index is the
factor itself; the VIX-like series follows the state's volatility with a lag and noise, so crashes sit above
35, volatile spells 25-35 and calm ones below 15-20. Open/high/low/volume are derived for the stocks.
Everything is vectorised numpy and deterministic given the seed.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

STATES = ("calm", "volatile", "crash", "recovery")
DRIFT = np.array([0.0005, -0.0002, -0.014, 0.0045])
VOL = np.array([0.007, 0.016, 0.035, 0.020])
VIX_LEVEL = np.array([13.0, 28.0, 48.0, 24.0])
# transition matrix (rows: from, cols: to); expected durations ~ 1 / (1 - p_stay)
TRANSITIONS = np.array([
    [0.9960, 0.0032, 0.0008, 0.0000],
    [0.0160, 0.9750, 0.0060, 0.0030],
    [0.0000, 0.0000, 0.9500, 0.0500],
    [0.0150, 0.0050, 0.0000, 0.9800],
])
SECTORS = ("Information Technology", "Financials", "Health Care", "Energy", "Consumer Staples",
           "Consumer Discretionary", "Industrials", "Utilities", "Materials", "Communication Services",
           "Real Estate")


def business_days(start: dt.date, n: int) -> np.ndarray:
    """The first n weekdays from ``start`` (as numpy datetime64[D])."""
    first = np.datetime64(start, "D")
    span = np.arange(first, first + np.timedelta64(int(n * 1.45) + 10, "D"))
    wd = (span.astype("datetime64[D]").view("int64") - 4) % 7  # 1970-01-01 was a Thursday -> 0 = Monday
    return span[wd < 5][:n]


def market_states(n_days: int, rng: np.random.Generator) -> np.ndarray:
    """A path of state indices from the Markov chain (starting calm)."""
    u = rng.random(n_days)
    cum = np.cumsum(TRANSITIONS, axis=1)
    states = np.empty(n_days, dtype=np.int8)
    s = 0
    for t in range(n_days):  # one scalar step per day: 7,800 steps for 30 years, microseconds each
        states[t] = s
        s = int(np.searchsorted(cum[s], u[t], side="right"))
        s = min(s, len(STATES) - 1)
    return states


def generate_synthetic(n_symbols: int, years: float, seed: int, start: dt.date = dt.date(2005, 1, 3)):
    """SourceData for a synthetic market of ``n_symbols`` stocks over ``years`` years of business days."""
    from regime_assets.core.sources import SourceData

    rng = np.random.default_rng(seed)
    n_days = int(round(years * 252))
    dates = business_days(start, n_days)
    states = market_states(n_days, rng)
    factor = DRIFT[states] + VOL[states] * rng.standard_normal(n_days)
    index_close = 1000.0 * np.exp(np.cumsum(factor))

    # VIX: exponential approach to the state's level plus noise, floored at 9
    target = VIX_LEVEL[states] * np.exp(0.08 * rng.standard_normal(n_days))
    vix = np.empty(n_days)
    level = target[0]
    alpha = 0.25
    for t in range(n_days):
        level = level + alpha * (target[t] - level)
        vix[t] = level
    vix = np.maximum(vix + 0.8 * rng.standard_normal(n_days), 9.0)

    betas = rng.uniform(0.6, 1.5, n_symbols)
    idio_vol = rng.uniform(0.008, 0.022, n_symbols)
    noise = rng.standard_normal((n_days, n_symbols)) * idio_vol
    jumps = (rng.random((n_days, n_symbols)) < 0.0008) * rng.normal(-0.08, 0.06, (n_days, n_symbols))
    rets = factor[:, None] * betas[None, :] + noise + jumps
    start_px = rng.uniform(20, 200, n_symbols)
    close = start_px[None, :] * np.exp(np.cumsum(rets, axis=0))
    day_range = np.abs(rng.standard_normal((n_days, n_symbols))) * (VOL[states][:, None] * 0.6 + idio_vol * 0.5)
    open_ = close * np.exp(rng.standard_normal((n_days, n_symbols)) * 0.003)
    high = np.maximum(open_, close) * (1 + day_range)
    low = np.minimum(open_, close) * (1 - day_range)
    volume = (rng.lognormal(13, 0.4, (n_days, n_symbols)) * (1 + 2 * (states[:, None] >= 1))).round()

    symbols = np.array([f"SYN{i:03d}" for i in range(n_symbols)])
    # symbol-major order (already sorted by symbol, date): transpose the (day, symbol) matrices
    sym_idx = np.repeat(np.arange(n_symbols, dtype=np.uint32), n_days)
    prices = pl.DataFrame({
        "symbol": pl.Series(symbols.tolist(), dtype=pl.Utf8).gather(sym_idx),
        "date": pl.Series(np.tile(dates, n_symbols)).cast(pl.Date),
        "open": open_.T.ravel(), "high": high.T.ravel(), "low": low.T.ravel(), "close": close.T.ravel(),
        "volume": volume.T.ravel(),
    })
    index = pl.DataFrame({"date": dates, "close": index_close}).with_columns(pl.col("date").cast(pl.Date))
    vix_df = pl.DataFrame({"date": dates, "vix": vix}).with_columns(pl.col("date").cast(pl.Date))
    sectors = pl.DataFrame({"symbol": symbols, "sector": [SECTORS[i % len(SECTORS)] for i in range(n_symbols)]})
    state_df = pl.DataFrame({"date": dates, "state": np.array(STATES)[states]}).with_columns(
        pl.col("date").cast(pl.Date))
    origin = {s: "synthetic" for s in symbols}
    return SourceData(prices=prices, index=index, vix=vix_df, sectors=sectors, origin=origin, states=state_df)
