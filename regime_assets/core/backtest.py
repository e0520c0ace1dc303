"""What the out-of-sample predictions would have earned: a cost-aware portfolio backtest and the signal's IC.

Inputs (polars frames):

* ``predictions``: the ``walk_forward_predictions`` contract (``model, fold, symbol, date, regime, fwd_return,
  p_sell, p_hold, p_buy``; other columns are ignored). A (model, symbol, date) that several folds predict keeps
  the row of the latest fold.
* ``prices``: ``symbol, date, close`` (raw_prices). The daily return of a symbol held over the close of date t is
  ``close(next row of the symbol) / close(t) - 1`` (:func:`next_day_returns`); the backtest is exact on these,
  ``fwd_return`` (the label horizon's return) is used only for the IC.
* ``market``: ``date, index_close`` (+ ``vix``) (market_context), for the index benchmark and the VIX band.

Portfolio arithmetic (vectorised: per model dense date x symbol matrices, no loop over dates or symbols):

* score = ``p_buy - p_sell``. On each date the long leg is the top k by score, the short leg the bottom k
  (k = min(``top_k``, n // 2) for the long-short book, min(``top_k``, n) for long-only), equal weight 1/k per leg.
  Ties at the cut share the remaining weight equally, so the weights never depend on the row order (a signal
  that ties every symbol - the regime prior on a one-regime date - takes no long-short position).
* Overlapping books: a book formed at the close of date t with the target weights W_t is held h days
  (``holding_days``, default ``labels.horizon``) with 1/h of the capital, at constant weights (the documented
  equivalent of rebalancing a fixed-weight book daily). The position after the close of t is
  ``H_t = (1/h) * sum_{j<h} W_{t-j}`` (books that do not exist yet are cash), and it earns the next-day returns:
  ``gross_t = sum_s H_ts * r_ts``. "Days" are the model's prediction dates in order.
* Trades at the close of t are ``H_t - H_{t-1}`` (H before the first date = cash; positions are not liquidated
  after the last date). Opening = growing a position's size (including a sign flip's new side), closing =
  shrinking it (including a sign flip's old side); ``turnover_t = sum_s |H_t - H_{t-1}|`` = opened + closed, and
  ``net_t = gross_t - (open_cost_bps * opened_t + close_cost_bps * closed_t) / 1e4`` exactly.
* Long-only: the top-k book alone; its active return is net minus the equal-weight universe (all symbols with a
  prediction on the date, rebalanced daily, no costs). The long-short book is dollar-neutral, so its benchmark is
  cash and its active return is its own net return (its information ratio equals its Sharpe ratio).
* Benchmarks: ``equal_weight`` (the universe of the predictions, equal weight, daily rebalanced) and ``index``
  (``index_close`` close to close), both without costs; the regime-prior signal is the predictions' own model
  ``baseline_regime_prior``.

Metrics over a set of days (annualised with ``periods_per_year``; the definitions of empyrical, which the tests
check against): ``annual_return`` = compounded (CAGR), ``annual_volatility`` = sd (ddof 1) * sqrt(P),
``sharpe`` = mean / sd * sqrt(P), ``information_ratio`` = the same of the active return, ``max_drawdown`` of the
compounded path, ``hit_rate`` = share of days with a positive active return, ``turnover`` = mean daily turnover,
``cost_drag`` = annualised mean cost, ``gross_annual_return``. Signal metrics per date (rows with a forward
return, at least 3): ``ic`` = Pearson and ``rank_ic`` = Spearman correlation of score and ``fwd_return`` across
symbols, averaged over dates; ``icir`` / ``rank_icir`` = mean / sd (ddof 1) of the daily values (as Qlib).

Groups: ``overall``, by market regime of the date (``backtest.market_regime``: the most common symbol regime of
the date, ties to the more severe - crash, recovery, high_vol, normal, low_vol - or the VIX band), by calendar
year of the date. A regime group is not contiguous in time: its days are compounded in date order.

Intervals: a stationary bootstrap over the ordered days of the group (``arch``; mean block
``block_length_days``, ``bootstrap_reps`` replicates, seed ``seed``, the same draws for every model on the same
days); every metric is recomputed on each resampled path (drawdown included) and the percentile interval at
``confidence`` is reported. Groups with fewer than ``min_days`` days have no interval (and no ICIR).
"""

from __future__ import annotations

import dataclasses
import warnings
from functools import lru_cache

import numpy as np
import polars as pl

from regime_assets.spec import REGIMES, BacktestSpec, RegimeSpec

SEVERITY: tuple[str, ...] = ("crash", "recovery", "high_vol", "normal", "low_vol")
STRATEGIES: tuple[str, ...] = ("long_short", "long_only", "signal", "buy_and_hold")
RETURN_METRICS: tuple[str, ...] = ("annual_return", "annual_volatility", "sharpe", "information_ratio",
                                   "max_drawdown", "hit_rate", "turnover", "cost_drag", "gross_annual_return")
SIGNAL_METRICS: tuple[str, ...] = ("ic", "icir", "rank_ic", "rank_icir")
BENCHMARK_EW = "equal_weight"
BENCHMARK_INDEX = "index"
BASELINE_REGIME_PRIOR = "baseline_regime_prior"
MIN_IC_ROWS = 3
PRED_COLUMNS = ("model", "symbol", "date", "regime", "fwd_return", "p_sell", "p_hold", "p_buy")
METRICS_SCHEMA = {"model": pl.Utf8, "kind": pl.Utf8, "strategy": pl.Utf8, "group_type": pl.Utf8, "group": pl.Utf8,
                  "n_days": pl.Int64, "metric": pl.Utf8, "value": pl.Float64, "ci_low": pl.Float64,
                  "ci_high": pl.Float64}


class BacktestError(ValueError):
    """Inputs the backtest cannot use; the message names the frame, column, symbol or row."""


@dataclasses.dataclass(frozen=True)
class BacktestResult:
    metrics: pl.DataFrame  # METRICS_SCHEMA, long
    daily: pl.DataFrame    # one row per (model, date): returns, costs, turnover, IC; benchmarks as models


# ------------------------------------------------------------------------------------------------ inputs


def _require(df: pl.DataFrame, cols, frame: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise BacktestError(f"{frame}: missing columns {missing} (has {df.columns})")


def next_day_returns(prices: pl.DataFrame) -> pl.DataFrame:
    """``symbol, date, ret_next``: close of the symbol's next row over the close of the date, minus 1 (null on the
    symbol's last row)."""
    _require(prices, ("symbol", "date", "close"), "prices")
    px = prices.select("symbol", pl.col("date").cast(pl.Date), pl.col("close").cast(pl.Float64)).sort("symbol", "date")
    bad = px.filter(~(pl.col("close") > 0) | pl.col("close").is_null() | ~pl.col("close").is_finite())
    if bad.height:
        r = bad.row(0, named=True)
        raise BacktestError(f"prices: close must be a finite positive number; symbol {r['symbol']} on {r['date']} "
                            f"has {r['close']} ({bad.height} such rows)")
    dup = px.select(pl.struct("symbol", "date").is_duplicated().any()).item()
    if dup:
        r = px.filter(pl.struct("symbol", "date").is_duplicated()).row(0, named=True)
        raise BacktestError(f"prices: symbol {r['symbol']} has two rows on {r['date']}")
    return px.with_columns((pl.col("close").shift(-1).over("symbol") / pl.col("close") - 1).alias("ret_next")) \
        .select("symbol", "date", "ret_next")


def index_next_returns(market: pl.DataFrame) -> pl.DataFrame:
    """``date, ret_next`` of ``index_close`` (next date's close over this one's, minus 1)."""
    _require(market, ("date", "index_close"), "market_context")
    m = market.select(pl.col("date").cast(pl.Date), pl.col("index_close").cast(pl.Float64)).sort("date")
    return m.with_columns((pl.col("index_close").shift(-1) / pl.col("index_close") - 1).alias("ret_next")) \
        .select("date", "ret_next")


def prepare_predictions(predictions: pl.DataFrame) -> pl.DataFrame:
    """Contract rows reduced to one per (model, symbol, date) (the latest fold wins) with ``score``."""
    _require(predictions, PRED_COLUMNS, "walk_forward_predictions")
    sort = [c for c in ("fold", "test_start") if c in predictions.columns]
    p = predictions
    if sort:
        p = p.sort(sort)
    p = (p.select(*PRED_COLUMNS).with_columns(pl.col("date").cast(pl.Date), pl.col("fwd_return").cast(pl.Float64),
                                              *[pl.col(c).cast(pl.Float64) for c in ("p_sell", "p_hold", "p_buy")])
         .unique(["model", "symbol", "date"], keep="last", maintain_order=True))
    bad = p.filter(pl.any_horizontal(pl.col("p_sell", "p_hold", "p_buy").is_null()
                                     | ~pl.col("p_sell", "p_hold", "p_buy").is_finite()))
    if bad.height:
        r = bad.row(0, named=True)
        raise BacktestError(f"walk_forward_predictions: non-finite probability for model {r['model']}, symbol "
                            f"{r['symbol']} on {r['date']} ({bad.height} such rows)")
    return p.with_columns((pl.col("p_buy") - pl.col("p_sell")).alias("score")).sort("model", "date", "symbol")


def market_regimes(predictions: pl.DataFrame, market: pl.DataFrame | None, bspec: BacktestSpec,
                   rspec: RegimeSpec | None = None) -> pl.DataFrame:
    """``date, market_regime`` for every prediction date (see the module docstring)."""
    dates = predictions.select(pl.col("date").cast(pl.Date)).unique()
    if bspec.market_regime == "vix_band":
        from regime_assets.core.regimes import vix_band

        if market is None or "vix" not in market.columns:
            raise BacktestError("market_context: column 'vix' is needed for backtest.market_regime 'vix_band'")
        band = market.select(pl.col("date").cast(pl.Date), vix_band(pl.col("vix"), rspec or RegimeSpec())
                             .alias("market_regime"))
        return dates.join(band, on="date", how="left").sort("date")
    sev = {r: i for i, r in enumerate(SEVERITY)}
    counts = (predictions.select("symbol", pl.col("date").cast(pl.Date), "regime").unique(["symbol", "date"])
              .group_by("date", "regime").len()
              .with_columns(pl.col("regime").replace_strict(sev, default=len(sev), return_dtype=pl.Int32).alias("_s")))
    return (counts.sort(["date", "len", "_s"], descending=[False, True, False])
            .unique("date", keep="first", maintain_order=True)
            .select("date", pl.col("regime").alias("market_regime")))


# ------------------------------------------------------------------------------------------------ weights


def _leg(k: np.ndarray, rank_min: np.ndarray, rank_max: np.ndarray) -> np.ndarray:
    """Weight of a row in an equal-weight leg of the k best ranks; rows tied at the cut share what is left."""
    kf = np.maximum(k, 1).astype(np.float64)
    share = (kf - (rank_min - 1)) / ((rank_max - rank_min + 1) * kf)
    w = np.where(rank_max <= k, 1.0 / kf, np.where(rank_min <= k, share, 0.0))
    return np.where(k > 0, w, 0.0)


def _tied_ranks(group: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """For rows sorted by (group, score): the group size and each row's lowest and highest ascending rank among
    equal scores (ties span a run), computed from run boundaries (no per-group window)."""
    n = group.size
    idx = np.arange(n)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = group[1:] != group[:-1]
    new_run = new_group.copy()
    new_run[1:] |= score[1:] != score[:-1]
    g_start = np.maximum.accumulate(np.where(new_group, idx, 0))
    r_start = np.maximum.accumulate(np.where(new_run, idx, 0))
    end_group = np.ones(n, dtype=bool)
    end_group[:-1] = new_group[1:]
    end_run = np.ones(n, dtype=bool)
    end_run[:-1] = new_run[1:]
    g_end = np.minimum.accumulate(np.where(end_group, idx, n - 1)[::-1])[::-1]
    r_end = np.minimum.accumulate(np.where(end_run, idx, n - 1)[::-1])[::-1]
    size = g_end - g_start + 1
    return size, r_start - g_start + 1, r_end - g_start + 1


def target_weights(pred: pl.DataFrame, top_k: int) -> pl.DataFrame:
    """Per (model, date, symbol) the target weights of a new book: ``w_ls`` (long-short), ``w_lo`` (long-only),
    ``w_ew`` (equal-weight universe). Returned sorted by model, date, score."""
    p = pred.sort("model", "date", "score", "symbol")
    group = p.select(pl.struct("model", "date").rank("dense")).to_series().to_numpy()
    n, a_min, a_max = _tied_ranks(group, p["score"].to_numpy())
    d_min, d_max = n - a_max + 1, n - a_min + 1  # descending ranks
    k_ls = np.minimum(top_k, n // 2)
    k_lo = np.minimum(top_k, n)
    return p.with_columns(pl.Series("w_ls", _leg(k_ls, d_min, d_max) - _leg(k_ls, a_min, a_max)),
                          pl.Series("w_lo", _leg(k_lo, d_min, d_max)), pl.Series("w_ew", 1.0 / n))


def _books(W: np.ndarray, h: int) -> np.ndarray:
    """H_t = (1/h) sum_{j<h} W_{t-j} along axis 0 (missing earlier books = 0), as an exact windowed sum."""
    pad = np.concatenate([np.zeros((h - 1, *W.shape[1:])), W], axis=0)
    return np.lib.stride_tricks.sliding_window_view(pad, h, axis=0).sum(axis=-1) / h


def _trades(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per day the size opened and closed (summed over symbols) by moving from H_{t-1} to H_t."""
    prev = np.vstack([np.zeros((1, H.shape[1])), H[:-1]])
    same = np.sign(prev) * np.sign(H) >= 0
    a_new, a_old = np.abs(H), np.abs(prev)
    opened = np.where(same, np.maximum(a_new - a_old, 0.0), a_new)
    closed = np.where(same, np.maximum(a_old - a_new, 0.0), a_old)
    return opened.sum(axis=1), closed.sum(axis=1)


def _daily_ic(pred: pl.DataFrame) -> pl.DataFrame:
    ok = pred.filter(pl.col("fwd_return").is_not_null() & pl.col("fwd_return").is_finite())
    ic = (ok.group_by("model", "date")
          .agg(pl.corr("score", "fwd_return").alias("ic"), pl.corr("score", "fwd_return", method="spearman")
               .alias("rank_ic"), pl.len().alias("_n"), pl.col("score").n_unique().alias("_u"),
               pl.col("fwd_return").n_unique().alias("_v"))
          # a score that ties every symbol has no correlation (polars' Pearson gives ~1e-17 noise instead of NaN)
          .with_columns([pl.when((pl.col("_n") >= MIN_IC_ROWS) & (pl.col("_u") > 1) & (pl.col("_v") > 1)
                                 & pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c)
                         for c in ("ic", "rank_ic")]))
    return ic.drop("_n", "_u", "_v")


def daily_portfolio(predictions: pl.DataFrame, prices: pl.DataFrame, bspec: BacktestSpec, horizon: int,
                    market: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per (model, date): ``ls_gross, ls_net, ls_opened, ls_closed, ls_turnover`` and the same ``lo_*``,
    ``ew`` (the model's universe), ``n_symbols``, ``valid`` (a next-day return exists), ``ic, rank_ic``; then the
    benchmarks as models ``equal_weight`` and ``index`` (``ls_*``/``lo_*`` null, their return in ``bench``)."""
    pred = predictions if "score" in predictions.columns else prepare_predictions(predictions)
    rets = next_day_returns(prices)
    daily = model_daily(pred, rets, bspec, horizon)
    return with_benchmarks(daily, pred.select("symbol", "date").unique(), rets, market)


def model_daily(pred: pl.DataFrame, rets: pl.DataFrame, bspec: BacktestSpec, horizon: int) -> pl.DataFrame:
    """The models' rows of ``daily_portfolio`` (no benchmarks) from prepared predictions and
    ``next_day_returns``; each model's rows depend on its own predictions only."""
    h = int(bspec.holding_days or horizon)
    syms = pl.concat([pred["symbol"], rets["symbol"]]).unique().sort()
    sym_idx = {s: i for i, s in enumerate(syms.to_list())}
    S = len(sym_idx)
    weights = target_weights(pred, bspec.top_k).with_columns(
        pl.col("symbol").replace_strict(sym_idx, return_dtype=pl.Int64).alias("_s"))
    rets = rets.with_columns(pl.col("symbol").replace_strict(sym_idx, return_dtype=pl.Int64).alias("_s"))
    o, c = bspec.open_cost_bps / 1e4, bspec.close_cost_bps / 1e4
    frames = []
    for model, g in weights.group_by("model", maintain_order=True):  # one dense block per model
        dates = g["date"].unique().sort()
        D = dates.len()
        di = dates.search_sorted(g["date"])
        si = g["_s"].to_numpy()
        W = np.zeros((D, S, 2))
        W[di.to_numpy(), si, 0] = g["w_ls"].to_numpy()
        W[di.to_numpy(), si, 1] = g["w_lo"].to_numpy()
        EW = np.zeros((D, S))
        EW[di.to_numpy(), si] = g["w_ew"].to_numpy()
        r = rets.filter(pl.col("date").is_in(dates.implode()))
        R = np.zeros((D, S))
        valid = np.zeros(D, dtype=bool)
        rd = dates.search_sorted(r["date"]).to_numpy()
        rv = r["ret_next"].to_numpy()
        has = np.isfinite(rv)
        R[rd[has], r["_s"].to_numpy()[has]] = rv[has]
        valid[rd[has]] = True
        H = _books(W, h)
        out = {"model": [model[0]] * D, "date": dates, "valid": valid,
               "n_symbols": np.bincount(di.to_numpy(), minlength=D)}
        for j, pre in enumerate(("ls", "lo")):
            gross = (H[:, :, j] * R).sum(axis=1)
            opened, closed = _trades(H[:, :, j])
            out[f"{pre}_gross"] = gross
            out[f"{pre}_net"] = gross - (o * opened + c * closed)
            out[f"{pre}_opened"] = opened
            out[f"{pre}_closed"] = closed
            out[f"{pre}_turnover"] = opened + closed
        out["ew"] = (EW * R).sum(axis=1)
        frames.append(pl.DataFrame(out))
    daily = pl.concat(frames, how="vertical") if frames else pl.DataFrame()
    return daily.join(_daily_ic(pred), on=["model", "date"], how="left")


def with_benchmarks(daily: pl.DataFrame, universe: pl.DataFrame, rets: pl.DataFrame,
                    market: pl.DataFrame | None) -> pl.DataFrame:
    """``daily`` (the models' rows) + the benchmarks on ``universe`` (``symbol, date``: every symbol-day with a
    prediction of any model, unique): the equal-weight universe and the index."""
    universe = universe.join(rets.select("symbol", "date", "ret_next"), on=["symbol", "date"], how="left")
    ew = universe.group_by("date").agg(pl.col("ret_next").fill_nan(None).mean().alias("bench"),
                                       pl.col("ret_next").is_not_null().any().alias("valid"),
                                       pl.len().cast(pl.Int64).alias("n_symbols"))
    benches = [ew.with_columns(pl.lit(BENCHMARK_EW).alias("model"))]
    if market is not None and "index_close" in market.columns:
        idx = index_next_returns(market).rename({"ret_next": "bench"})
        benches.append(ew.select("date", "n_symbols").join(idx, on="date", how="left").with_columns(
            pl.col("bench").is_not_null().alias("valid"), pl.lit(BENCHMARK_INDEX).alias("model")))
    bench = pl.concat([b.with_columns(pl.col("bench").fill_null(0.0)) for b in benches], how="diagonal_relaxed")
    daily = pl.concat([daily.with_columns(pl.lit(None, pl.Float64).alias("bench")), bench], how="diagonal_relaxed")
    return daily.with_columns(pl.col("n_symbols").cast(pl.Int64)).sort("model", "date")


# ------------------------------------------------------------------------------------------------ metrics


@lru_cache(maxsize=64)
def bootstrap_indices(n: int, reps: int, block: float, seed: int) -> np.ndarray:
    """(reps, n) positions of a stationary bootstrap over n ordered days (``arch``), cached per (n, settings)."""
    from arch.bootstrap import StationaryBootstrap

    out = np.zeros((reps, n), dtype=np.int64)
    if n == 0:
        return out
    bs = StationaryBootstrap(block, np.arange(n), seed=seed)
    for i, (pos, _) in enumerate(bs.bootstrap(reps)):
        out[i] = pos[0]
    out.setflags(write=False)
    return out


def _sd(x: np.ndarray) -> np.ndarray:
    """Sample sd (ddof 1) along the last axis, NaN left out; NaN with fewer than 2 values."""
    if x.shape[-1] < 2:
        return np.full(x.shape[:-1], np.nan)
    if np.isfinite(x).all():
        return np.std(x, axis=-1, ddof=1)
    n = np.sum(np.isfinite(x), axis=-1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.where(n > 1, np.nanstd(x, axis=-1, ddof=1), np.nan)


def _nanmean(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] and np.isfinite(x).all():
        return x.mean(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=-1) if x.shape[-1] else np.full(x.shape[:-1], np.nan)


def _ratio(x: np.ndarray, ppy: int) -> np.ndarray:
    sd = _sd(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, _nanmean(x) / np.where(sd > 0, sd, 1.0) * np.sqrt(ppy), np.nan)


def annual_return(r: np.ndarray, ppy: int) -> np.ndarray:
    """Compounded annual growth of daily returns along the last axis (empyrical's ``annual_return``)."""
    n = r.shape[-1]
    if n == 0:
        return np.full(r.shape[:-1], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        lg = np.log1p(np.maximum(r, -1.0)).sum(axis=-1)
        return np.where(np.isfinite(lg), np.expm1(lg * ppy / n), -1.0)


def max_drawdown(r: np.ndarray) -> np.ndarray:
    """Largest fall of the compounded path from its running peak (start value included), along the last axis."""
    if r.shape[-1] == 0:
        return np.full(r.shape[:-1], np.nan)
    wealth = np.cumprod(1.0 + r, axis=-1)
    start = np.ones((*r.shape[:-1], 1))
    path = np.concatenate([start, wealth], axis=-1)
    peak = np.maximum.accumulate(path, axis=-1)
    return (path / peak - 1.0).min(axis=-1)


def _hit_rate(active: np.ndarray) -> np.ndarray:
    n = np.isfinite(active).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (active > 0).sum(axis=-1) / np.where(n > 0, n, 1), np.nan)


def return_metrics(net: np.ndarray, active: np.ndarray | None, gross: np.ndarray | None = None,
                   turnover: np.ndarray | None = None, ppy: int = 252) -> dict[str, np.ndarray]:
    """Every return metric along the last axis (a 1-D series or (replicates, days))."""
    active = net if active is None else active
    nan = np.full(net.shape[:-1], np.nan)
    out = {
        "annual_return": annual_return(net, ppy),
        "annual_volatility": _sd(net) * np.sqrt(ppy),
        "sharpe": _ratio(net, ppy),
        "information_ratio": _ratio(active, ppy),
        "max_drawdown": max_drawdown(net),
        "hit_rate": _hit_rate(active),
        "turnover": turnover.mean(axis=-1) if turnover is not None and net.shape[-1] else nan,
        "cost_drag": (gross - net).mean(axis=-1) * ppy if gross is not None and net.shape[-1] else nan,
        "gross_annual_return": annual_return(gross, ppy) if gross is not None else nan,
    }
    return out


def signal_metrics(ic: np.ndarray) -> dict[str, np.ndarray]:
    """Mean of daily ICs and the ICIR (mean / sd, ddof 1) along the last axis, NaN days left out."""
    with np.errstate(invalid="ignore", divide="ignore"):
        m = _nanmean(ic)
        sd = _sd(ic)
        return {"ic": m, "icir": np.where(sd > 0, m / np.where(sd > 0, sd, 1.0), np.nan)}


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size < 2:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return float(lo), float(hi)


def _kind(model: str, candidate: str) -> str:
    if model in (BENCHMARK_EW, BENCHMARK_INDEX):
        return "benchmark"
    if model == candidate:
        return "candidate"
    if model.startswith("baseline"):
        return "baseline"
    if model.startswith("arm:"):
        return "arm"
    return "model"


def _rows(model: str, kind: str, strategy: str, gtype: str, group: str, n: int, point: dict, reps: dict | None,
          conf: float) -> list[dict]:
    rows = []
    for metric, v in point.items():
        lo, hi = _interval(reps[metric], conf) if reps is not None else (float("nan"), float("nan"))
        v = float(v)
        rows.append({"model": model, "kind": kind, "strategy": strategy, "group_type": gtype, "group": group,
                     "n_days": n, "metric": metric, "value": None if not np.isfinite(v) else v,
                     "ci_low": None if not np.isfinite(lo) else lo, "ci_high": None if not np.isfinite(hi) else hi})
    return rows


def _groups(days: pl.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(group_type, group, boolean mask over the rows of ``days``) for overall, each regime and each year."""
    out = [("overall", "overall", np.ones(days.height, dtype=bool))]
    reg = days["market_regime"].to_numpy()
    for r in [*REGIMES, *sorted(set(x for x in reg if x is not None) - set(REGIMES))]:
        m = reg == r
        if m.any():
            out.append(("regime", r, m))
    yr = days["date"].dt.year().to_numpy()
    for y in np.unique(yr):
        out.append(("year", str(int(y)), yr == y))
    return out


def metrics_table(daily: pl.DataFrame, regimes: pl.DataFrame, bspec: BacktestSpec) -> pl.DataFrame:
    """The long metrics table (METRICS_SCHEMA) from :func:`daily_portfolio` and :func:`market_regimes`."""
    ppy, conf = bspec.periods_per_year, bspec.confidence
    daily = daily.join(regimes, on="date", how="left")
    ew = daily.filter(pl.col("model") == BENCHMARK_EW).select("date", pl.col("bench").alias("_ew"))
    rows: list[dict] = []

    def boot(n: int) -> np.ndarray | None:
        if n < bspec.min_days:
            return None
        return bootstrap_indices(n, bspec.bootstrap_reps, bspec.block_length_days, bspec.seed)

    def arrays(frame: pl.DataFrame, cols: list[str]) -> dict[str, np.ndarray]:
        return {c: frame[c].cast(pl.Float64).fill_null(float("nan")).to_numpy() for c in cols if c in frame.columns}

    series = [f"{p}_{x}" for p in ("ls", "lo") for x in ("net", "gross", "turnover")] + ["ew", "bench", "_ew"]
    for (model,), g in daily.group_by("model", maintain_order=True):
        kind = _kind(model, bspec.candidate)
        ret_days = g.filter(pl.col("valid"))
        if kind == "benchmark":
            ret_days = ret_days.join(ew, on="date", how="left")
        cols = arrays(ret_days, series)
        for gtype, group, mask in _groups(ret_days):
            d = {c: v[mask] for c, v in cols.items()}
            n = int(mask.sum())
            idx = boot(n)
            if kind == "benchmark":
                b = d["bench"]
                act = np.full(n, np.nan) if model == BENCHMARK_EW else b - np.nan_to_num(d["_ew"])
                point = return_metrics(b, act, b, None, ppy)
                rep = None if idx is None else return_metrics(b[idx], act[idx], b[idx], None, ppy)
                rows += _rows(model, kind, "buy_and_hold", gtype, group, n, point, rep, conf)
                continue
            for pre, strategy in (("ls", "long_short"), ("lo", "long_only")):
                net, gross, to = (d[f"{pre}_{x}"] for x in ("net", "gross", "turnover"))
                act = net if pre == "ls" else net - d["ew"]
                point = return_metrics(net, act, gross, to, ppy)
                rep = None if idx is None else return_metrics(net[idx], act[idx], gross[idx], to[idx], ppy)
                rows += _rows(model, kind, strategy, gtype, group, n, point, rep, conf)
        if kind == "benchmark":
            continue
        for col in ("ic", "rank_ic"):  # each over the days on which it is defined
            ic_days = g.filter(pl.col(col).is_not_null())
            values = ic_days[col].cast(pl.Float64).to_numpy()
            for gtype, group, mask in _groups(ic_days):
                x = values[mask]
                idx = boot(x.size)
                point = signal_metrics(x)
                if x.size < bspec.min_days:  # a ratio over a handful of days says nothing
                    point["icir"] = np.float64("nan")
                rep = None if idx is None else signal_metrics(x[idx])
                rows += _rows(model, kind, "signal", gtype, group, x.size,
                              {k.replace("ic", col, 1): v for k, v in point.items()},
                              None if rep is None else {k.replace("ic", col, 1): v for k, v in rep.items()}, conf)
    return pl.DataFrame(rows, schema=METRICS_SCHEMA)


def run_backtest(predictions: pl.DataFrame, prices: pl.DataFrame, market: pl.DataFrame | None,
                 bspec: BacktestSpec, horizon: int, rspec: RegimeSpec | None = None) -> BacktestResult:
    """The whole backtest: daily returns per model and benchmark, and the metrics table with intervals."""
    if predictions.height == 0:
        raise BacktestError("walk_forward_predictions: no rows to backtest")
    pred = prepare_predictions(predictions)
    daily = daily_portfolio(pred, prices, bspec, horizon, market)
    return _result(daily, market_regimes(pred, market, bspec, rspec), bspec)


def run_backtest_by_model(models: list[str], load, universe: pl.DataFrame, prices: pl.DataFrame,
                          market: pl.DataFrame | None, bspec: BacktestSpec, horizon: int,
                          rspec: RegimeSpec | None = None) -> BacktestResult:
    """``run_backtest`` reading one model's predictions at a time: ``load(model)`` gives that model's rows,
    ``universe`` the ``symbol, date, regime`` of every symbol-day with a prediction (unique per symbol, date).
    Only the small per-model daily rows are kept; the result equals ``run_backtest`` on all the rows."""
    if not models or universe.height == 0:
        raise BacktestError("walk_forward_predictions: no rows to backtest")
    rets = next_day_returns(prices)
    parts = []
    for m in models:
        pred = prepare_predictions(load(m))
        if pred.height:
            parts.append(model_daily(pred, rets, bspec, horizon))
        del pred
    universe = universe.select("symbol", pl.col("date").cast(pl.Date), "regime")
    daily = with_benchmarks(pl.concat(parts, how="vertical") if parts else pl.DataFrame(),
                            universe.select("symbol", "date"), rets, market)
    return _result(daily, market_regimes(universe, market, bspec, rspec), bspec)


def _result(daily: pl.DataFrame, regimes: pl.DataFrame, bspec: BacktestSpec) -> BacktestResult:
    metrics = metrics_table(daily, regimes, bspec)
    order = {"candidate": 0, "model": 1, "arm": 2, "baseline": 3, "benchmark": 4}
    metrics = (metrics.with_columns(pl.col("kind").replace_strict(order, default=9, return_dtype=pl.Int32).alias("_o"))
               .sort("_o", "model", "strategy", "group_type", "group", maintain_order=True).drop("_o"))
    return BacktestResult(metrics=metrics, daily=daily.join(regimes, on="date", how="left"))


def headline(metrics: pl.DataFrame, strategy: str = "long_short", group_type: str = "overall") -> pl.DataFrame:
    """One row per model: the after-cost headline metrics with their intervals as ``value [lo, hi]`` columns."""
    want_ret = ["annual_return", "information_ratio", "max_drawdown", "turnover"]
    want_sig = ["rank_ic", "rank_icir"]
    t = metrics.filter((pl.col("group_type") == group_type) & (
        ((pl.col("strategy") == strategy) & pl.col("metric").is_in(want_ret))
        | ((pl.col("strategy") == "buy_and_hold") & pl.col("metric").is_in(want_ret))
        | ((pl.col("strategy") == "signal") & pl.col("metric").is_in(want_sig))))
    if t.height == 0:
        return pl.DataFrame()
    cell = (pl.when(pl.col("ci_low").is_not_null())
            .then(pl.format("{} [{}, {}]", pl.col("value").round(3), pl.col("ci_low").round(3),
                            pl.col("ci_high").round(3)))
            .otherwise(pl.col("value").round(3).cast(pl.Utf8)))
    wide = (t.with_columns(cell.alias("cell")).pivot(on="metric", index=["model", "kind", "group"], values="cell",
                                                      aggregate_function="first"))
    cols = [c for c in [*want_ret, *want_sig] if c in wide.columns]
    return wide.select("model", "kind", "group", *cols)
