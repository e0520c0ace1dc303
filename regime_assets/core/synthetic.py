"""A seeded regime-switching market: N stocks over Y years, an index and a VIX-like series.

A Markov chain over market episodes drives a common factor (the index):

===========  =============================================  ====================
episode      factor path                                    length (bus. days)
===========  =============================================  ====================
calm         +0.04 %/day drift, 0.75 % daily vol            150 - 750
volatile     -0.04 %/day drift, 1.7 % daily vol             20 - 90
crash        a fall of 15 - 40 % (exact), 3 % daily vol     8 - 30
recovery     regains 40 - 100 % of the crash's fall         40 - 130
===========  =============================================  ====================

A crash is always followed by a recovery. Each stock has a beta to the factor, a sector factor, idiosyncratic
noise that widens in stressed episodes, and rare single-name jumps. The VIX-like series follows the episode's
volatility level (calm 11-17, volatile 25-33, crash 42-75, recovery decaying from the crash level towards
20-28) through an exponential filter with log-AR(1) noise. Open/high/low/volume are derived for the stocks.
Everything is vectorised numpy (one Python step per episode, a few dozen over 30 years) and deterministic
given the seed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from regime_assets.core.sources.data import SourceData

STATES: tuple[str, ...] = ("calm", "volatile", "crash", "recovery")
CALM, VOLATILE, CRASH, RECOVERY = range(4)
SECTORS: tuple[str, ...] = (
    "Information Technology", "Financials", "Health Care", "Energy", "Consumer Staples", "Consumer Discretionary",
    "Industrials", "Utilities", "Materials", "Communication Services", "Real Estate",
)


@dataclass(frozen=True)
class SyntheticMarket:
    """Parameters of the generated market; per-state tuples are ordered as ``STATES``."""

    # episode chain: row = from, column = to (no self-transitions; a crash always leads to a recovery)
    transitions: tuple[tuple[float, ...], ...] = (
        (0.00, 0.72, 0.28, 0.00),
        (0.62, 0.00, 0.38, 0.00),
        (0.00, 0.00, 0.00, 1.00),
        (0.75, 0.25, 0.00, 0.00),
    )
    min_days: tuple[int, ...] = (150, 20, 8, 40)
    max_days: tuple[int, ...] = (750, 90, 30, 130)
    drift: tuple[float, ...] = (0.0004, -0.0004, 0.0, 0.0)  # crash/recovery drift comes from their targets
    vol: tuple[float, ...] = (0.0075, 0.017, 0.030, 0.015)
    crash_depth: tuple[float, float] = (0.15, 0.40)
    recovery_share: tuple[float, float] = (0.4, 1.0)
    index_start: float = 1000.0
    # VIX-like series
    vix_low: tuple[float, ...] = (11.0, 25.0, 42.0, 20.0)
    vix_high: tuple[float, ...] = (17.0, 33.0, 75.0, 28.0)
    vix_recovery_half_life: float = 10.0
    vix_smoothing: float = 0.6
    vix_noise: float = 0.04
    vix_noise_ar: float = 0.8
    vix_floor: float = 9.0
    # stocks
    beta: tuple[float, float] = (0.6, 1.5)
    alpha_annual_sd: float = 0.03
    idio_vol: tuple[float, float] = (0.008, 0.020)
    stress_multiplier: tuple[float, ...] = (1.0, 1.4, 2.0, 1.3)  # idiosyncratic/sector vol and volume
    sector_vol: float = 0.004
    jump_probability: float = 0.0005
    jump_mean: float = -0.04
    jump_sd: float = 0.08
    start_price: tuple[float, float] = (10.0, 300.0)
    gap_vol_share: float = 0.3
    range_vol_share: float = 0.5
    log_volume_mean: float = 13.0
    log_volume_sd: float = 0.8
    volume_noise: float = 0.3
    volume_return_sensitivity: float = 20.0


DEFAULT_MARKET = SyntheticMarket()


def business_days(start: dt.date, n: int) -> np.ndarray:
    """The first ``n`` weekdays on or after ``start`` (numpy datetime64[D])."""
    first = np.busday_offset(np.datetime64(start, "D"), 0, roll="forward")
    return np.busday_offset(first, np.arange(n), roll="forward")


def episode_path(n_days: int, rng: np.random.Generator, m: SyntheticMarket = DEFAULT_MARKET) -> np.ndarray:
    """Daily state indices (into ``STATES``) from the episode chain, starting part-way through a calm spell."""
    trans = np.asarray(m.transitions, dtype=float)
    trans = trans / trans.sum(axis=1, keepdims=True)
    lo, hi = np.asarray(m.min_days), np.asarray(m.max_days)
    states, lengths = [CALM], [int(rng.integers(lo[CALM], hi[CALM] + 1) * rng.uniform(0.2, 1.0)) + 1]
    total = lengths[0]
    while total < n_days:  # one step per episode
        s = int(rng.choice(len(STATES), p=trans[states[-1]]))
        d = int(rng.integers(lo[s], hi[s] + 1))
        states.append(s)
        lengths.append(d)
        total += d
    return np.repeat(np.asarray(states, dtype=np.int8), lengths)[:n_days]


def _episodes(states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Episode id per day, and per episode: state, first day, length."""
    change = np.r_[True, states[1:] != states[:-1]]
    ep = np.cumsum(change) - 1
    first = np.flatnonzero(change)
    length = np.diff(np.r_[first, len(states)])
    return ep, states[first], first, length


def market_factor(states: np.ndarray, rng: np.random.Generator,
                  m: SyntheticMarket = DEFAULT_MARKET) -> tuple[np.ndarray, np.ndarray]:
    """Daily log returns of the market factor and the per-episode target log return (NaN where free)."""
    ep, ep_state, _, ep_len = _episodes(states)
    vol, drift = np.asarray(m.vol), np.asarray(m.drift)
    noise = rng.standard_normal(len(states)) * vol[states]
    n_ep = len(ep_state)
    depth = rng.uniform(*m.crash_depth, n_ep)
    share = rng.uniform(*m.recovery_share, n_ep)
    target = np.full(n_ep, np.nan)
    crash = ep_state == CRASH
    target[crash] = np.log1p(-depth[crash])
    prev_target = np.r_[np.nan, target[:-1]]
    rec = (ep_state == RECOVERY) & np.isfinite(prev_target)
    target[rec] = -share[rec] * prev_target[rec]
    mean_noise = np.bincount(ep, weights=noise, minlength=n_ep) / ep_len
    pinned = np.isfinite(target)[ep]
    # pinned episodes: noise with its episode mean removed plus the target spread evenly (exact total)
    factor = np.where(pinned, noise - mean_noise[ep] + np.nan_to_num(target)[ep] / ep_len[ep],
                      noise + drift[states])
    return factor, target


def ar1_filter(x: np.ndarray, decay: float, tol: float = 1e-12) -> np.ndarray:
    """``y[t] = decay * y[t-1] + x[t]`` (``y[-1] = 0``) as a truncated convolution (weights below ``tol`` dropped)."""
    taps = 1 if decay <= 0 else max(1, int(np.ceil(np.log(tol) / np.log(decay))))
    return np.convolve(x, decay ** np.arange(taps))[: len(x)]


def vix_series(states: np.ndarray, rng: np.random.Generator, m: SyntheticMarket = DEFAULT_MARKET) -> np.ndarray:
    """A VIX-like level per day that follows the episode's volatility regime."""
    ep, ep_state, ep_first, _ = _episodes(states)
    level = rng.uniform(np.asarray(m.vix_low)[ep_state], np.asarray(m.vix_high)[ep_state])
    prev_level = np.r_[level[0], level[:-1]]
    day_in = np.arange(len(states)) - ep_first[ep]
    decay = 0.5 ** (day_in / m.vix_recovery_half_life)
    excess = np.where(ep_state == RECOVERY, np.maximum(prev_level - level, 0.0), 0.0)
    target = level[ep] + excess[ep] * decay
    a = m.vix_smoothing
    pad = int(np.ceil(np.log(1e-12) / np.log(1.0 - a))) if a < 1 else 0  # start in equilibrium at target[0]
    smooth = ar1_filter(a * np.r_[np.full(pad, target[0]), target], 1.0 - a)[pad:]
    ar = ar1_filter(rng.standard_normal(len(states)) * m.vix_noise, m.vix_noise_ar)
    return np.maximum(smooth * np.exp(ar), m.vix_floor)


def generate_synthetic(n_symbols: int, years: float, seed: int, start: dt.date = dt.date(2005, 1, 3),
                       market: SyntheticMarket = DEFAULT_MARKET):
    """SourceData of a synthetic market: ``n_symbols`` stocks ("SYN000", ...) over ``years`` x 252 business days.

    prices: symbol, date, close, open, high, low, volume (sorted by symbol, date); index: date, close;
    vix: date, vix; sectors: symbol, sector; states: date, state, episode (the true market episode per date).
    """
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1 (got {n_symbols})")
    n_days = int(round(years * 252))
    if n_days < 2:
        raise ValueError(f"years must give at least 2 business days (got {years})")
    m = market
    rng = np.random.default_rng(seed)
    dates = business_days(start, n_days)
    states = episode_path(n_days, rng, m)
    factor, _ = market_factor(states, rng, m)
    index_close = m.index_start * np.exp(np.cumsum(factor))
    vix = vix_series(states, rng, m)

    # stocks, symbol-major (n_symbols, n_days): alpha + beta * factor + sector factor + idiosyncratic + jumps
    shape = (n_symbols, n_days)
    stress = np.asarray(m.stress_multiplier)[states][None, :]
    sector_idx = np.arange(n_symbols) % len(SECTORS)
    betas = rng.uniform(*m.beta, n_symbols)[:, None]
    alphas = rng.normal(0.0, m.alpha_annual_sd, n_symbols)[:, None] / 252.0
    idio = rng.uniform(*m.idio_vol, n_symbols)[:, None]
    sector_f = rng.standard_normal((len(SECTORS), n_days)) * m.sector_vol * stress
    day_vol = idio * stress
    rets = alphas + betas * factor[None, :] + sector_f[sector_idx] + rng.standard_normal(shape) * day_vol
    jumps = rng.random(shape) < m.jump_probability
    rets[jumps] += rng.normal(m.jump_mean, m.jump_sd, int(jumps.sum()))
    close = rng.uniform(*m.start_price, n_symbols)[:, None] * np.exp(np.cumsum(rets, axis=1))

    total_vol = np.sqrt((np.asarray(m.vol)[states][None, :] * betas) ** 2 + day_vol ** 2)
    prev_close = np.hstack([close[:, :1], close[:, :-1]])
    open_ = prev_close * np.exp(rng.standard_normal(shape) * total_vol * m.gap_vol_share)
    top, bottom = np.maximum(open_, close), np.minimum(open_, close)
    high = top * np.exp(np.abs(rng.standard_normal(shape)) * total_vol * m.range_vol_share)
    low = bottom * np.exp(-np.abs(rng.standard_normal(shape)) * total_vol * m.range_vol_share)
    base_volume = np.exp(rng.normal(m.log_volume_mean, m.log_volume_sd, n_symbols))[:, None]
    volume = np.round(base_volume * stress * (1.0 + m.volume_return_sensitivity * np.abs(rets))
                      * np.exp(rng.standard_normal(shape) * m.volume_noise))

    width = max(3, len(str(n_symbols - 1)))
    symbols = [f"SYN{i:0{width}d}" for i in range(n_symbols)]
    date_s = pl.Series("date", dates).cast(pl.Date)
    prices = pl.DataFrame({
        "symbol": pl.Series("symbol", symbols, dtype=pl.Utf8).gather(np.repeat(np.arange(n_symbols), n_days)),
        "date": date_s.gather(np.tile(np.arange(n_days), n_symbols)),
        "close": close.ravel(), "open": open_.ravel(), "high": high.ravel(), "low": low.ravel(),
        "volume": volume.ravel(),
    })
    index = pl.DataFrame({"date": date_s, "close": index_close})
    vix_df = pl.DataFrame({"date": date_s, "vix": vix})
    sectors = pl.DataFrame({"symbol": symbols, "sector": [SECTORS[i] for i in sector_idx]})
    ep, _, _, _ = _episodes(states)
    state_df = pl.DataFrame({"date": date_s, "state": pl.Series(np.asarray(STATES)[states]).cast(pl.Utf8),
                             "episode": ep.astype(np.int32)})
    return SourceData(prices=prices, index=index, vix=vix_df, sectors=sectors,
                      origin={s: "synthetic" for s in symbols}, states=state_df)
