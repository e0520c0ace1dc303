"""Point-in-time features per symbol-day, computed in polars, vectorised over batches of whole symbols.

Conventions (every window counts trading rows of the symbol, or of the index for market features):

* returns are **log** returns: ``f_ret_w = ln(close_t / close_{t-w})``, daily ``r_t = ln(close_t / close_{t-1})``;
* volatility is the sample standard deviation (ddof=1) of the last ``w`` daily returns, annualised by
  ``sqrt(TRADING_DAYS)``;
* RSI uses **Wilder** smoothing: an exponential mean with ``alpha = 1/w`` (no bias adjustment, started at the
  symbol's first price change) of the up and down moves of the close; ``RSI = 100 * up / (up + down)``, 50 when
  both are 0;
* MACD is fast/slow/signal = 12/26/9 by default (spec features.macd_*; exponential means with ``span``, no bias adjustment), divided by the close;
* Bollinger position is the z-score of the close against its ``w``-day mean and population std (ddof=0);
* beta/correlation/idiosyncratic vol regress the symbol's daily log return on the index's over ``w`` rows;
* vol ratios and MA crossovers pair consecutive windows and each window with the longest (short / long);
* volume features (``volume`` column only) use the vol windows: volume / its mean, z-score of ``log(1+volume)``;
* cross-sectional ranks (of the returns, vols and drawdowns) are ``(rank - 0.5) / n`` among the symbols that
  have the value on that date (average rank for ties; in (0, 1)).

Storage: every value is computed in float64 and rounded once to ``features.dtype`` (float32 by default) at the
end; symbols are computed in batches of whole symbols (``features.batch_rows``), which bounds the float64
intermediates and changes no value.

How (performance only; no value depends on it): per batch, a first polars plan computes what the ranks read
(returns, vols, drawdowns), a second one the rest. A background thread computes the market frame, the
exponential means (MACD, RSI: ``scipy.signal.lfilter`` per symbol) while polars runs, and the cross-sectional
ranks (numpy) while the last batch's second plan runs. Shifts and rolling max/min run on the whole column and
are nulled in each symbol's first rows (exact: they read only the window's rows); rolling sums and exponential
means run per symbol, so a symbol's values depend on its own rows only.

A value at date t uses rows up to t only. Warm-up rows (fewer rows than the window needs) are null and kept;
so are values from a division by zero (no NaN or inf is ever returned). Market features (index, VIX) are
computed on the market-context series and joined by date; symbol rows on dates the market context lacks get
null market features. Volume features exist only when ``prices`` has a ``volume`` column.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.signal import lfilter

from regime_assets.spec import FeatureSpec

TRADING_DAYS = 252  # annualisation convention (as in core.market)
PREFIX = "f_"
KEY_COLUMNS = ("symbol", "date", "sector", "sector_code")
UNKNOWN_SECTOR = "unknown"
_ANN = math.sqrt(TRADING_DAYS)
_XS_BLOCK = 1 << 18  # matrix cells ranked per block (performance only)


class FeatureError(ValueError):
    """Inputs that features cannot be computed from; the message names the frame, column, symbol or date."""


@dataclass(frozen=True)
class _Feat:
    name: str
    window: int | None
    description: str
    expr: pl.Expr
    finite: bool = False  # True: cannot be NaN/inf for valid prices, so the finiteness guard is skipped
    # True: |value| is bounded far below float32's largest (log returns and vols of float64 prices, drawdowns,
    # close/MA ratios <= window, RSI, ranks, calendar), so rounding to float32 cannot overflow: no guard after it
    bounded: bool = False


def feature_columns(df: pl.DataFrame) -> list[str]:
    """The feature columns of a frame (named ``f_*``)."""
    return [c for c in df.columns if c.startswith(PREFIX)]


# --------------------------------------------------------------------------------------------------- windows


def _windows(fspec: FeatureSpec, field: str, lowest: int) -> list[int]:
    ws = getattr(fspec, field)
    ws = [ws] if isinstance(ws, int) else list(ws)
    bad = [w for w in ws if w < lowest]
    if bad:
        raise FeatureError(f"features.{field}: every window must be >= {lowest}, got {bad}")
    return sorted(set(ws))


def _pairs(ws: list[int]) -> list[tuple[int, int]]:
    """Consecutive pairs plus every window against the longest (short / long)."""
    out = list(zip(ws[:-1], ws[1:]))
    out += [(a, ws[-1]) for a in ws[:-2]]
    return out


@dataclass(frozen=True)
class _W:
    ret: list[int]
    vol: list[int]
    ma: list[int]
    dd: list[int]
    rsi: list[int]
    bb: list[int]
    beta: list[int]
    vix_chg: list[int]
    vix_pct: int
    macd: tuple[int, int, int]


def _all_windows(fspec: FeatureSpec) -> _W:
    return _W(
        ret=_windows(fspec, "return_windows", 1),
        vol=_windows(fspec, "vol_windows", 2),
        ma=_windows(fspec, "ma_windows", 1),
        dd=_windows(fspec, "drawdown_windows", 1),
        rsi=_windows(fspec, "rsi_windows", 1),
        bb=_windows(fspec, "bollinger_windows", 2),
        beta=_windows(fspec, "beta_windows", 3),
        vix_chg=_windows(fspec, "vix_change_windows", 1),
        vix_pct=_windows(fspec, "vix_percentile_window", 2)[0],
        macd=(fspec.macd_fast, fspec.macd_slow, fspec.macd_signal),
    )


# ----------------------------------------------------------------------------------------------- definitions

def _sym(e: pl.Expr) -> pl.Expr:
    """``e`` evaluated per symbol (the frame is sorted by symbol, date)."""
    return e.over("symbol")


def _from_row(k: int, e: pl.Expr) -> pl.Expr:
    """``e`` evaluated on the whole column, kept from each symbol's row ``k`` (0-based, column ``_i``) on,
    null before.

    For expressions whose value at a row depends only on the ``k + 1`` rows ending there (shifts, differences,
    rolling max/min over ``k + 1`` rows) this equals ``_sym(e)`` value for value: from row ``k`` on, the rows
    read are the symbol's own. It skips the per-symbol grouping, which costs more than such a window itself.
    Not for rolling sums or exponential means: their running state would carry across symbols."""
    return pl.when(pl.col("_i") >= k).then(e)


def _market_defs(w: _W) -> list[_Feat]:
    """Features of the market-context series (one row per date, sorted by date)."""
    ic, vix = pl.col("_ic"), pl.col("vix")
    feats = [_Feat(f"f_mkt_ret_{n}", n, f"index log return over {n} days", (ic / ic.shift(n)).log(),
                   bounded=True) for n in w.ret]
    feats += [_Feat(f"f_mkt_vol_{n}", n, f"index realized vol over {n} days (annualised)",
                    pl.col("_m").rolling_std(n, min_samples=n) * _ANN, bounded=True) for n in w.vol]
    feats += [_Feat(f"f_mkt_dd_{n}", n, f"index drawdown from its {n}-day high",
                    ic / ic.rolling_max(n, min_samples=n) - 1.0, bounded=True) for n in w.dd]
    feats.append(_Feat("f_vix", None, "VIX level (real, else proxy)", vix))
    feats += [_Feat(f"f_vix_chg_{n}", n, f"VIX log change over {n} days", (vix / vix.shift(n)).log(),
                    bounded=True) for n in w.vix_chg]
    feats.append(_Feat(f"f_vix_pctile_{w.vix_pct}", w.vix_pct,
                       f"share of the last {w.vix_pct} VIX values (incl. today) <= today's", pl.col("_vix_pct"),
                       bounded=True))
    feats.append(_Feat("f_vix_is_real", None, "1 if the VIX value is real, 0 if proxy",
                       (pl.col("vix_source") == "real").cast(pl.Float64), bounded=True))
    feats += [_Feat(f"f_vix_premium_{n}", n, f"VIX/100 minus index realized vol over {n} days",
                    vix / 100.0 - pl.col("_m").rolling_std(n, min_samples=n) * _ANN) for n in w.vol]
    return feats


def _base_stages(w: _W) -> list[list[pl.Expr]]:
    """The intermediate per-symbol columns the cross-sectionally ranked features need: daily log return ``_r``
    and the rolling std of it ``_vol_n``; computed first (``_base_plan``), in dependency order."""
    c, r = pl.col("close"), pl.col("_r")
    return [[_from_row(1, (c / c.shift(1)).log()).alias("_r")],
            [_sym(r.rolling_std(n, min_samples=n)).alias(f"_vol_{n}") for n in w.vol]]


def _temp_stages(w: _W, has_volume: bool) -> list[list[pl.Expr]]:
    """The other intermediate per-symbol columns (named ``_*``), in dependency order, on top of
    ``_base_stages`` and ``_exp_means``; dropped from the output."""
    c, r = pl.col("close"), pl.col("_r")
    s2 = [_sym(c.rolling_mean(n, min_samples=n)).alias(f"_ma_{n}") for n in sorted(set(w.ma) | set(w.bb))]
    s2 += [_sym(c.rolling_std(n, min_samples=n, ddof=0)).alias(f"_sd0_{n}") for n in w.bb]
    s2 += [
        # paired daily returns of the symbol and the index (both present) for beta/correlation
        pl.when(pl.col("_m").is_not_null()).then(r).alias("_rb"),
        pl.when(r.is_not_null()).then(pl.col("_m")).alias("_mb"),
    ]
    if has_volume:
        s2.append(pl.col("_v").log1p().alias("_lv"))
    s3 = []
    rb, mb = pl.col("_rb"), pl.col("_mb")
    for n in w.beta:
        s3 += [
            _sym(rb.rolling_mean(n, min_samples=n)).alias(f"_er_{n}"),
            _sym(mb.rolling_mean(n, min_samples=n)).alias(f"_em_{n}"),
            _sym((rb * mb).rolling_mean(n, min_samples=n)).alias(f"_erm_{n}"),
            _sym(rb.rolling_var(n, min_samples=n, ddof=0)).alias(f"_vr_{n}"),
            _sym(mb.rolling_var(n, min_samples=n, ddof=0)).alias(f"_vm_{n}"),
        ]
    if has_volume:
        v, lv = pl.col("_v"), pl.col("_lv")
        for n in w.vol:
            s3 += [_sym(v.rolling_mean(n, min_samples=n)).alias(f"_vmean_{n}"),
                   _sym(lv.rolling_mean(n, min_samples=n)).alias(f"_lvmean_{n}"),
                   _sym(lv.rolling_std(n, min_samples=n)).alias(f"_lvstd_{n}")]
    s4 = [(pl.col(f"_erm_{n}") - pl.col(f"_er_{n}") * pl.col(f"_em_{n}")).alias(f"_cov_{n}") for n in w.beta]
    return [s2, s3, s4]


def _symbol_defs(w: _W, has_volume: bool) -> list[_Feat]:
    MACD_FAST, MACD_SLOW, MACD_SIGNAL = w.macd
    """Features of each symbol's own series (and its joint series with the index)."""
    c = pl.col("close")
    feats = [_Feat(f"f_ret_{n}", n, f"log return over {n} days", _from_row(n, (c / c.shift(n)).log()), True, True)
             for n in w.ret]
    feats += [_Feat(f"f_vol_{n}", n, f"realized vol of daily log returns over {n} days (annualised)",
                    pl.col(f"_vol_{n}") * _ANN, True, True) for n in w.vol]
    feats += [_Feat(f"f_vol_ratio_{a}_{b}", a, f"vol over {a} days / vol over {b} days",
                    pl.col(f"_vol_{a}") / pl.col(f"_vol_{b}")) for a, b in _pairs(w.vol)]
    feats += [_Feat(f"f_dd_{n}", n, f"drawdown of the close from its {n}-day high",
                    c / _from_row(n - 1, c.rolling_max(n, min_samples=n)) - 1.0, True, True) for n in w.dd]
    feats += [_Feat(f"f_rally_{n}", n, f"rise of the close from its {n}-day low",
                    c / _from_row(n - 1, c.rolling_min(n, min_samples=n)) - 1.0, True) for n in w.dd]
    feats += [_Feat(f"f_ma_gap_{n}", n, f"close / {n}-day moving average - 1", c / pl.col(f"_ma_{n}") - 1.0, True, True)
              for n in w.ma]
    feats += [_Feat(f"f_ma_cross_{a}_{b}", a, f"{a}-day MA / {b}-day MA - 1",
                    pl.col(f"_ma_{a}") / pl.col(f"_ma_{b}") - 1.0, True, True) for a, b in _pairs(w.ma)]
    for n in w.rsi:
        up, dn = pl.col(f"_up_{n}"), pl.col(f"_dn_{n}")
        rsi = pl.when((up + dn) == 0).then(pl.lit(50.0)).otherwise(100.0 * up / (up + dn))
        feats.append(_Feat(f"f_rsi_{n}", n, f"RSI over {n} days (Wilder smoothing, 0-100)", rsi, True, True))
    line, sig = pl.col("_macd") / c, pl.col("_macd_sig") / c
    feats += [
        _Feat("f_macd_line", MACD_SLOW, f"MACD line (EMA{MACD_FAST} - EMA{MACD_SLOW}) / close", line, True),
        _Feat("f_macd_signal", MACD_SLOW, f"MACD signal (EMA{MACD_SIGNAL} of the line) / close", sig, True),
        _Feat("f_macd_hist", MACD_SLOW, "MACD histogram (line - signal) / close", line - sig, True),
    ]
    for n in w.bb:
        ma, sd = pl.col(f"_ma_{n}"), pl.col(f"_sd0_{n}")
        feats.append(_Feat(f"f_bb_z_{n}", n, f"Bollinger position: (close - {n}-day MA) / {n}-day std",
                           (c - ma) / sd))
        feats.append(_Feat(f"f_bb_width_{n}", n, f"Bollinger width: {n}-day std / {n}-day MA", sd / ma))
    if has_volume:
        for n in w.vol:
            feats.append(_Feat(f"f_volume_ratio_{n}", n, f"volume / its {n}-day mean",
                               pl.col("_v") / pl.col(f"_vmean_{n}")))
            feats.append(_Feat(f"f_volume_z_{n}", n, f"z-score of log(1+volume) over {n} days",
                               (pl.col("_lv") - pl.col(f"_lvmean_{n}")) / pl.col(f"_lvstd_{n}")))
    for n in w.beta:
        cov, var_r, var_m = pl.col(f"_cov_{n}"), pl.col(f"_vr_{n}"), pl.col(f"_vm_{n}")
        resid = (var_r - cov * cov / var_m).clip(lower_bound=0.0) * (n / (n - 1))
        feats += [
            _Feat(f"f_beta_{n}", n, f"beta of daily returns to the index over {n} days", cov / var_m),
            _Feat(f"f_corr_{n}", n, f"correlation of daily returns with the index over {n} days",
                  cov / (var_r * var_m).sqrt()),
            _Feat(f"f_idio_vol_{n}", n, f"residual vol after the index beta over {n} days (annualised)",
                  resid.sqrt() * _ANN),
        ]
    feats += [_Feat(f"f_rs_{n}", n, f"log return minus index log return over {n} days",
                    pl.col(f"f_ret_{n}") - pl.col(f"f_mkt_ret_{n}"), True, True) for n in w.ret]
    feats += [
        _Feat("f_dow", None, "day of week (1 = Monday)", pl.col("date").dt.weekday().cast(pl.Float64), True, True),
        _Feat("f_month", None, "month of year (1-12)", pl.col("date").dt.month().cast(pl.Float64), True, True),
    ]
    return feats


def _xs_defs(w: _W) -> list[_Feat]:
    """Cross-sectional ranks per date (same-date values of all symbols); computed by ``_xs_ranks``."""
    feats = [_Feat(f"f_xs_ret_{n}", n, f"cross-sectional rank of f_ret_{n} on the date", pl.col(f"f_ret_{n}"))
             for n in w.ret]
    feats += [_Feat(f"f_xs_vol_{n}", n, f"cross-sectional rank of f_vol_{n} on the date", pl.col(f"f_vol_{n}"))
              for n in w.vol]
    feats += [_Feat(f"f_xs_dd_{n}", n, f"cross-sectional rank of f_dd_{n} on the date", pl.col(f"f_dd_{n}"))
              for n in w.dd]
    return feats


def _ordered(w: _W, has_volume: bool) -> tuple[list[_Feat], list[_Feat], list[_Feat]]:
    return _market_defs(w), _symbol_defs(w, has_volume), _xs_defs(w)


def feature_catalog(fspec: FeatureSpec, volume: bool = False) -> pl.DataFrame:
    """Every feature column ``build_features`` produces, in column order: name, window, description.

    ``volume`` says whether the prices have a ``volume`` column (volume features exist only then).
    """
    market, symbol, xs = _ordered(_all_windows(fspec), volume)
    feats = symbol + market + xs
    return pl.DataFrame(
        {"name": [f.name for f in feats], "window": [f.window for f in feats],
         "description": [f.description for f in feats]},
        schema={"name": pl.Utf8, "window": pl.Int64, "description": pl.Utf8},
    )


# ------------------------------------------------------------------------------------------------ validation


def _require(df: pl.DataFrame, cols: tuple[str, ...], frame: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise FeatureError(f"features: {frame} is missing columns {missing} (has {df.columns})")
    if "date" in cols and df.schema["date"] != pl.Date:
        raise FeatureError(f"features: {frame}.date must be pl.Date, got {df.schema['date']}")


def _check_sorted_prices(px: pl.DataFrame) -> None:
    """``px`` sorted by symbol, date: no (symbol, date) twice."""
    same = (pl.col("symbol") == pl.col("symbol").shift(1)) & (pl.col("date") == pl.col("date").shift(1))
    dup = px.filter(same.fill_null(False))
    if dup.height:
        s, d = dup.select("symbol", "date").row(0)
        raise FeatureError(f"features: prices has duplicate rows for symbol {s} on {d}")


def _check_inputs(prices: pl.DataFrame, ctx: pl.DataFrame, sectors: pl.DataFrame | None) -> None:
    _require(prices, ("symbol", "date", "close"), "prices")
    _require(ctx, ("date", "index_close", "vix", "vix_source"), "market_context")
    bad = prices.filter(pl.col("symbol").is_null() | pl.col("date").is_null())
    if bad.height:
        raise FeatureError(f"features: prices has {bad.height} rows with a null symbol or date")
    close = pl.col("close").cast(pl.Float64)
    bad = prices.filter(close.is_null() | ~close.is_finite() | (close <= 0))
    if bad.height:
        s, d, v = bad.select("symbol", "date", "close").row(0)
        raise FeatureError(f"features: prices.close must be finite and > 0; symbol {s} on {d} has {v!r} "
                           f"({bad.height} bad rows)")
    if ctx.get_column("date").is_duplicated().any():
        d = ctx.filter(pl.col("date").is_duplicated()).get_column("date")[0]
        raise FeatureError(f"features: market_context has duplicate rows for {d}")
    ic = pl.col("index_close").cast(pl.Float64)
    bad = ctx.filter(ic.is_not_null() & (~ic.is_finite() | (ic <= 0)))
    if bad.height:
        raise FeatureError(f"features: market_context.index_close must be finite and > 0; "
                           f"{bad.get_column('date')[0]} has {bad.get_column('index_close')[0]!r}")
    if sectors is not None:
        _require(sectors, ("symbol", "sector"), "sectors")
        dup = sectors.filter(pl.col("symbol").is_duplicated())
        if dup.height:
            raise FeatureError(f"features: sectors lists symbol {dup.get_column('symbol')[0]} more than once")


# ----------------------------------------------------------------------------------------------------- build


def _rolling_share_le_last(values: np.ndarray, window: int) -> np.ndarray:
    """Share of the last ``window`` values (incl. the current one) <= the current value; NaN in warm-up or
    when the window holds a missing value."""
    out = np.full(len(values), np.nan)
    if len(values) < window:
        return out
    win = np.lib.stride_tricks.sliding_window_view(values, window)
    share = (win <= win[:, -1:]).mean(axis=1)
    share[np.isnan(win).any(axis=1)] = np.nan
    out[window - 1:] = share
    return out


def _market_frame(ctx: pl.DataFrame, w: _W, feats: list[_Feat]) -> pl.DataFrame:
    m = (ctx.select("date", pl.col("index_close").cast(pl.Float64).alias("_ic"), pl.col("vix").cast(pl.Float64),
                    pl.col("vix_source").cast(pl.Utf8))
         .sort("date")
         .with_columns((pl.col("_ic") / pl.col("_ic").shift(1)).log().alias("_m")))
    pct = _rolling_share_le_last(m.get_column("vix").fill_null(np.nan).to_numpy().astype(float), w.vix_pct)
    m = m.with_columns(pl.Series("_vix_pct", pct).fill_nan(None))
    return m.select("date", "_m", *[f.expr.alias(f.name) for f in feats]).with_columns(
        _finite(f.name) for f in feats)


def _rank_rows(m: np.ndarray) -> np.ndarray:
    """Per row of ``m``: ``(rank - 0.5) / n`` among the row's non-NaN values (average rank for ties)."""
    nd, ns = m.shape
    # flat positions of each row's values in sorted order (NaN sorts last)
    order = (np.argsort(m, axis=1) + (np.arange(nd) * ns)[:, None]).ravel()
    srt = m.ravel()[order].reshape(nd, ns)
    tie = np.zeros((nd, ns), dtype=bool)
    np.equal(srt[:, 1:], srt[:, :-1], out=tie[:, 1:])  # equal to the previous value (NaN never is)
    pos = np.arange(ns, dtype=np.float64)
    if tie.any():  # tied runs share the mean of their positions
        mid = np.broadcast_to(pos, (nd, ns)).copy()
        member = tie.copy()
        member[:, :-1] |= tie[:, 1:]
        idx = np.flatnonzero(member)
        run = np.cumsum(~tie.ravel()[idx]) - 1
        mid.ravel()[idx] = (np.bincount(run, weights=(idx % ns).astype(np.float64)) / np.bincount(run))[run]
    else:
        mid = pos[None, :]
    valid = ~np.isnan(srt)
    count = valid.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rank = np.where(valid, (mid + 0.5) / count, np.nan)
    out = np.empty(nd * ns)
    out[order] = rank.ravel()
    return out.reshape(nd, ns)


def _xs_ranks(df: pl.DataFrame, feats: list[_Feat], dtype: type[pl.DataType] = pl.Float64) -> list[pl.Series]:
    """Cross-sectional ranks of the columns ``feats`` rank (``df`` sorted by symbol, date), as ``dtype``.

    Each column goes into a (dates x symbols) matrix ranked along the symbol axis, in blocks of dates small
    enough to stay in cache: a few vectorised sorts instead of one small sort per date. The float64 ranks are
    rounded to ``dtype`` in numpy (the same round-to-nearest as a polars cast, at a fraction of its cost).
    """
    np_t = np.float32 if dtype == pl.Float32 else np.float64
    if not feats:
        return []
    if df.height == 0:
        return [pl.Series(f.name, [], dtype=dtype) for f in feats]
    di = df.get_column("date").rank("dense").to_numpy().astype(np.int64) - 1
    sym = df.get_column("symbol")
    si = (sym != sym.shift(1)).fill_null(True).cum_sum().to_numpy().astype(np.int64) - 1
    nd, ns = int(di.max()) + 1, int(si.max()) + 1
    flat = di * ns + si
    step = max(1, _XS_BLOCK // ns)

    def rank(f: _Feat) -> pl.Series:
        m = np.full(nd * ns, np.nan)
        m[flat] = df.get_column(f.expr.meta.output_name()).fill_null(np.nan).to_numpy()  # nulls as NaN
        m = m.reshape(nd, ns)
        for a in range(0, nd, step):
            m[a:a + step] = _rank_rows(m[a:a + step])
        return pl.Series(f.name, m.ravel()[flat].astype(np_t, copy=False), nan_to_null=True)

    # numpy releases the GIL in sorts and indexing: rank the columns on all cores
    with ThreadPoolExecutor(max_workers=max(1, min(len(feats), os.cpu_count() or 1))) as pool:
        return list(pool.map(rank, feats))


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    """Collect with the in-memory engine: much cheaper than streaming for window-heavy plans (older polars
    without the engine choice collect as usual)."""
    try:
        return lf.collect(engine="in-memory")
    except (TypeError, ValueError):
        return lf.collect()


def _finite(name: str, expr: pl.Expr | None = None) -> pl.Expr:
    """``expr`` (default the column ``name``) with NaN and +-inf replaced by null, named ``name``."""
    x = pl.col(name) if expr is None else expr
    return pl.when(x.is_finite()).then(x).otherwise(None).alias(name)


def storage_dtype(fspec: FeatureSpec) -> type[pl.DataType]:
    """The dtype of the ``f_*`` columns ``build_features`` returns (spec ``features.dtype``)."""
    return pl.Float32 if fspec.dtype == "float32" else pl.Float64


def _symbol_starts(sym: pl.Series) -> np.ndarray:
    """Row numbers where a symbol starts (``sym`` sorted, symbols contiguous)."""
    return np.flatnonzero((sym != sym.shift(1)).fill_null(True).to_numpy())


def _symbol_batches(px: pl.DataFrame, batch_rows: int) -> list[pl.DataFrame]:
    """``px`` (sorted by symbol, date) cut into zero-copy slices of whole symbols: a batch closes at the first
    symbol start at or past ``batch_rows`` rows (one loop step per symbol, not per row)."""
    if px.height <= batch_rows:
        return [px]
    starts = _symbol_starts(px.get_column("symbol"))
    cuts, first = [], 0
    for s in starts[1:].tolist():
        if s - first >= batch_rows:
            cuts.append((first, s))
            first = s
    cuts.append((first, px.height))
    return [px.slice(a, b - a) for a, b in cuts]


def _ewm_by_symbol(x: np.ndarray, bounds: np.ndarray, alpha: float, min_samples: int) -> np.ndarray:
    """Exponential mean without bias adjustment, per symbol (rows ``bounds[k]:bounds[k+1]``): ``y = x`` at the
    symbol's first non-NaN value, then ``y_t = alpha * x_t + (1 - alpha) * y_{t-1}``; NaN before the
    ``min_samples``-th value. A symbol's leading NaN are skipped; the series this runs on have none after.

    One ``scipy.signal.lfilter`` call per symbol (the recursion runs in C), so a symbol's values depend on its
    own rows only, whatever else is in the batch."""
    out = np.full(len(x), np.nan)
    b, a = np.array([alpha]), np.array([1.0, alpha - 1.0])
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        ok = np.flatnonzero(~np.isnan(x[lo:hi]))
        if not ok.size:
            continue
        f = lo + int(ok[0])
        if ok.size != hi - f:
            raise FeatureError(f"features: an exponential mean's input has a gap after its first value "
                               f"(rows {f}..{hi - 1} of the sorted prices)")
        y = np.empty(hi - f)
        y[0] = x[f]
        if hi - f > 1:
            y[1:] = lfilter(b, a, x[f + 1:hi], zi=np.array([(1.0 - alpha) * x[f]]))[0]
        y[:min_samples - 1] = np.nan
        out[f:hi] = y
    return out


def _exp_means(px: pl.DataFrame, starts: np.ndarray, w: _W) -> pl.DataFrame:
    """The per-symbol exponential means, aligned with ``px`` (sorted by symbol, date): MACD line ``_macd``
    (EMA fast - EMA slow of the close, both from the slow window's row on) and signal ``_macd_sig``, and RSI's
    Wilder-smoothed up and down moves of the close ``_up_n``/``_dn_n``. In numpy/scipy, in the background
    while polars runs the base plans: polars' per-symbol ``ewm_mean`` cost several times as much CPU.
    ``starts``: ``_symbol_starts`` of ``px``."""
    fast, slow, signal = w.macd
    c = px.get_column("close").to_numpy()
    bounds = np.r_[starts, len(c)]
    macd = _ewm_by_symbol(c, bounds, 2.0 / (fast + 1), slow) - _ewm_by_symbol(c, bounds, 2.0 / (slow + 1), slow)
    cols = {"_macd": macd, "_macd_sig": _ewm_by_symbol(macd, bounds, 2.0 / (signal + 1), signal)}
    d = np.empty_like(c)
    d[1:] = c[1:] - c[:-1]
    d[starts] = np.nan  # a symbol's first row has no move
    up, dn = np.maximum(d, 0.0), np.maximum(-d, 0.0)  # NaN stays NaN
    for n in w.rsi:
        cols[f"_up_{n}"] = _ewm_by_symbol(up, bounds, 1.0 / n, n)
        cols[f"_dn_{n}"] = _ewm_by_symbol(dn, bounds, 1.0 / n, n)
    return pl.DataFrame([pl.Series(k, v, nan_to_null=True) for k, v in cols.items()])


def _row_in_symbol(starts: np.ndarray, n: int) -> pl.Series:
    """``_i``: each of ``n`` rows' 0-based position within its symbol (``starts``: ``_symbol_starts``)."""
    first = np.repeat(starts, np.diff(np.r_[starts, n]))
    return pl.Series("_i", np.arange(n, dtype=np.int64) - first)


def _base_plan(px: pl.DataFrame, starts: np.ndarray, w: _W, sources: list[_Feat]) -> pl.LazyFrame:
    """The first plan of one batch of symbols: its price columns, row-in-symbol ``_i``, ``_base_stages`` and
    the ``sources`` features (those the cross-sectional ranks read), all float64."""
    lf = (px.with_columns(_row_in_symbol(starts, px.height)).lazy()
          .with_columns(pl.col("symbol").set_sorted()))  # lets the per-symbol windows use sorted groups
    for stage in _base_stages(w):
        lf = lf.with_columns(stage)
    return lf.with_columns(f.expr.alias(f.name) for f in sources)


def _symbol_plan(base: pl.DataFrame, mkt: pl.DataFrame, sec: pl.DataFrame | None, w: _W, has_volume: bool,
                 symbol: list[_Feat], market: list[_Feat], out_t: type[pl.DataType], done: set[str]) -> pl.LazyFrame:
    """The second plan of one batch: from its ``_base_plan`` frame (which holds the ``done`` features) to symbol,
    date, sector + every symbol and market feature, rounded to ``out_t``."""
    lf = (base.lazy().join(mkt.lazy(), on="date", how="left", maintain_order="left")
          .with_columns(pl.col("symbol").set_sorted()))
    for stage in _temp_stages(w, has_volume):
        lf = lf.with_columns(stage)
    todo = [f for f in symbol if f.name not in done]
    lf = lf.with_columns(*[f.expr.alias(f.name) for f in todo if not f.name.startswith("f_rs_")])
    lf = lf.with_columns(*[f.expr.alias(f.name) for f in todo if f.name.startswith("f_rs_")])
    if sec is not None:
        lf = lf.join(sec.lazy(), on="symbol", how="left", maintain_order="left")
    else:
        lf = lf.with_columns(pl.lit(None, dtype=pl.Utf8).alias("sector"))
    lf = lf.with_columns(pl.col("sector").fill_null(UNKNOWN_SECTOR))

    # rounded inside the plan (the float64 frame never exists whole); NaN/inf are nulled afterwards, only in the
    # columns that hold any (``_null_non_finite``): a guard on every column here cost more than the features
    return lf.select("symbol", "date", "sector", *[pl.col(f.name).cast(out_t) for f in symbol],
                     *[pl.col(f.name).cast(out_t) for f in market])


def _null_non_finite(df: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    """``df`` with NaN and +-inf in ``cols`` replaced by null: one parallel scan finds the columns that hold any,
    and only those are rewritten (column by column, in place)."""
    if not cols or df.height == 0:
        return df
    bad = df.select((~pl.col(c).is_finite()).any().alias(c) for c in cols).row(0, named=True)
    for c in [c for c, b in bad.items() if b]:
        df.replace_column(df.get_column_index(c), df.get_column(c).to_frame().select(_finite(c)).to_series())
    return df


def build_features(prices: pl.DataFrame, market_context: pl.DataFrame, sectors: pl.DataFrame | None,
                   fspec: FeatureSpec) -> pl.DataFrame:
    """features: symbol, date, sector, sector_code + the catalog's ``f_*`` columns, sorted by symbol, date;
    one row per price row. See the module docstring for the definitions.

    Every value is computed in float64 and rounded once to ``features.dtype`` (float32 by default) on its way
    out: the float32 frame equals the float64 frame cast to float32, cross-sectional ranks included (they rank
    the float64 values). A value that is finite in float64 but not representable in float32 becomes null."""
    _check_inputs(prices, market_context, sectors)
    w = _all_windows(fspec)
    has_volume = "volume" in prices.columns
    market, symbol, xs = _ordered(w, has_volume)
    background = ThreadPoolExecutor(max_workers=1)  # overlaps numpy/polars work the main thread does not need yet
    try:
        return _build(prices, market_context, sectors, fspec, w, has_volume, (market, symbol, xs), background)
    finally:
        background.shutdown(wait=True, cancel_futures=True)


def _build(prices: pl.DataFrame, market_context: pl.DataFrame, sectors: pl.DataFrame | None, fspec: FeatureSpec,
           w: _W, has_volume: bool, defs: tuple[list[_Feat], list[_Feat], list[_Feat]],
           background: ThreadPoolExecutor) -> pl.DataFrame:
    """``build_features`` after the input checks. ``background`` runs the market frame while the base plans
    run, and the cross-sectional ranks (numpy, which releases the GIL) while polars computes the rest."""
    market, symbol, xs = defs
    mkt_job = background.submit(_market_frame, market_context, w, market)

    cols = [pl.col("symbol").cast(pl.Utf8), "date", pl.col("close").cast(pl.Float64)]
    if has_volume:
        cols.append(pl.col("volume").cast(pl.Float64).alias("_v"))
    px = prices.select(cols).sort("symbol", "date")
    _check_sorted_prices(px)
    sec = None
    if sectors is not None and sectors.height:
        sec = sectors.select(pl.col("symbol").cast(pl.Utf8), pl.col("sector").cast(pl.Utf8))
    out_t = storage_dtype(fspec)
    ranked = {f.expr.meta.output_name() for f in xs}
    sources = [f for f in symbol if f.name in ranked]
    # whole symbols per batch: each batch's float64 intermediates (~2x the output's width) exist only while
    # that batch is computed; the per-symbol values do not depend on the batching
    batches = _symbol_batches(px, fspec.batch_rows)
    del px
    sources_parts: list[pl.DataFrame] = []
    parts = []
    ranks_job = None
    for k in range(len(batches)):
        batch = batches[k]
        starts = _symbol_starts(batch.get_column("symbol"))
        ewm_job = background.submit(_exp_means, batch, starts, w)  # numpy, while polars runs the base plan
        base = _collect(_base_plan(batch, starts, w, sources))
        sources_parts.append(base.select("symbol", "date", *ranked))
        base = base.hstack(ewm_job.result().get_columns())
        if k == len(batches) - 1:
            # every symbol's ranked sources are there: the ranks run while polars computes the last batch
            ranks_job = background.submit(_xs_ranks, pl.concat(sources_parts, how="vertical", rechunk=False),
                                          xs, out_t)
            sources_parts = []
        parts.append(_collect(_symbol_plan(base, mkt_job.result(), sec, w, has_volume, symbol, market, out_t,
                                           ranked)))
        del base, batch
        batches[k] = None  # released with its batch
    out = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical", rechunk=False)
    n_parts = len(parts)
    del parts  # before the rechunk: the batch frames must not keep the old chunks alive
    if n_parts > 1:  # one contiguous chunk per column, one column copied at a time (not a second frame)
        for i, c in enumerate(out.columns):
            out.replace_column(i, out.get_column(c).rechunk())
    out = out.hstack(ranks_job.result() if ranks_job is not None else [])
    # symbol columns that can be NaN/inf (divisions), or overflow float32; market columns were guarded on the
    # market frame in float64 and can only overflow
    check = [f.name for f in symbol if not f.finite or (out_t != pl.Float64 and not f.bounded)]
    if out_t != pl.Float64:
        check += [f.name for f in market if not f.bounded]
    out = _null_non_finite(out, check)
    codes = {s: i for i, s in enumerate(sorted(out.get_column("sector").unique().to_list()))}
    code = out.get_column("sector").replace_strict(codes, return_dtype=pl.Int32).alias("sector_code")
    return out.insert_column(3, code)
