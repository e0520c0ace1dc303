"""The features of ``regime_assets.core.features`` written the usual pandas way (groupby + rolling/transform).

Used by ``bench/features.py`` as the reference implementation and the speed baseline. Same definitions,
same windows (from the FeatureSpec), same column names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from regime_assets.spec import FeatureSpec

ANN = np.sqrt(252)


def _ws(x) -> list[int]:
    return sorted(set([x] if isinstance(x, int) else x))


def _pairs(ws: list[int]) -> list[tuple[int, int]]:
    return list(zip(ws[:-1], ws[1:])) + [(a, ws[-1]) for a in ws[:-2]]


def market_features(ctx: pd.DataFrame, fs: FeatureSpec) -> pd.DataFrame:
    mk = ctx.sort_values("date").reset_index(drop=True)
    ic, vix = mk["index_close"].astype(float), mk["vix"].astype(float)
    m = np.log(ic / ic.shift(1))
    out = pd.DataFrame({"date": mk["date"], "_m": m})
    for n in _ws(fs.return_windows):
        out[f"f_mkt_ret_{n}"] = np.log(ic / ic.shift(n))
    for n in _ws(fs.vol_windows):
        out[f"f_mkt_vol_{n}"] = m.rolling(n).std() * ANN
    for n in _ws(fs.drawdown_windows):
        out[f"f_mkt_dd_{n}"] = ic / ic.rolling(n).max() - 1
    out["f_vix"] = vix
    for n in _ws(fs.vix_change_windows):
        out[f"f_vix_chg_{n}"] = np.log(vix / vix.shift(n))
    w = fs.vix_percentile_window
    out[f"f_vix_pctile_{w}"] = vix.rolling(w).apply(lambda x: (x <= x[-1]).mean(), raw=True)
    out["f_vix_is_real"] = (mk["vix_source"] == "real").astype(float)
    for n in _ws(fs.vol_windows):
        out[f"f_vix_premium_{n}"] = vix / 100 - m.rolling(n).std() * ANN
    return out


def pandas_features(prices: pd.DataFrame, ctx: pd.DataFrame, fs: FeatureSpec) -> pd.DataFrame:
    df = prices[["symbol", "date", "close"]].sort_values(["symbol", "date"]).reset_index(drop=True)
    df = df.merge(market_features(ctx, fs), on="date", how="left")
    g = df.groupby("symbol")
    df["_r"] = g["close"].transform(lambda s: np.log(s / s.shift(1)))
    df["_d"] = g["close"].diff()
    g = df.groupby("symbol")

    for n in _ws(fs.return_windows):
        df[f"f_ret_{n}"] = g["close"].transform(lambda s: np.log(s / s.shift(n)))
    vol = {n: g["_r"].transform(lambda s: s.rolling(n).std()) for n in _ws(fs.vol_windows)}
    for n, v in vol.items():
        df[f"f_vol_{n}"] = v * ANN
    for a, b in _pairs(_ws(fs.vol_windows)):
        df[f"f_vol_ratio_{a}_{b}"] = vol[a] / vol[b]
    for n in _ws(fs.drawdown_windows):
        df[f"f_dd_{n}"] = df["close"] / g["close"].transform(lambda s: s.rolling(n).max()) - 1
    for n in _ws(fs.drawdown_windows):
        df[f"f_rally_{n}"] = df["close"] / g["close"].transform(lambda s: s.rolling(n).min()) - 1
    ma = {n: g["close"].transform(lambda s: s.rolling(n).mean())
          for n in sorted(set(_ws(fs.ma_windows)) | set(_ws(fs.bollinger_windows)))}
    for n in _ws(fs.ma_windows):
        df[f"f_ma_gap_{n}"] = df["close"] / ma[n] - 1
    for a, b in _pairs(_ws(fs.ma_windows)):
        df[f"f_ma_cross_{a}_{b}"] = ma[a] / ma[b] - 1
    df["_up"] = df["_d"].clip(lower=0)
    df["_dn"] = (-df["_d"]).clip(lower=0)
    g = df.groupby("symbol")
    for n in _ws(fs.rsi_windows):
        up = g["_up"].transform(lambda s: s.ewm(alpha=1 / n, adjust=False, min_periods=n).mean())
        dn = g["_dn"].transform(lambda s: s.ewm(alpha=1 / n, adjust=False, min_periods=n).mean())
        df[f"f_rsi_{n}"] = np.where(up + dn == 0, 50.0, 100 * up / (up + dn))
        df.loc[up.isna() | dn.isna(), f"f_rsi_{n}"] = np.nan
    fast = g["close"].transform(lambda s: s.ewm(span=12, adjust=False, min_periods=26).mean())
    slow = g["close"].transform(lambda s: s.ewm(span=26, adjust=False, min_periods=26).mean())
    df["_macd"] = fast - slow
    sig = df.groupby("symbol")["_macd"].transform(lambda s: s.ewm(span=9, adjust=False, min_periods=9).mean())
    df["f_macd_line"] = df["_macd"] / df["close"]
    df["f_macd_signal"] = sig / df["close"]
    df["f_macd_hist"] = df["f_macd_line"] - df["f_macd_signal"]
    for n in _ws(fs.bollinger_windows):
        sd = g["close"].transform(lambda s: s.rolling(n).std(ddof=0))
        df[f"f_bb_z_{n}"] = (df["close"] - ma[n]) / sd
        df[f"f_bb_width_{n}"] = sd / ma[n]
    df["_rb"] = df["_r"].where(df["_m"].notna())
    df["_mb"] = df["_m"].where(df["_r"].notna())
    g = df.groupby("symbol", group_keys=False)
    for n in _ws(fs.beta_windows):
        cov = g[["_rb", "_mb"]].apply(lambda x: x["_rb"].rolling(n).cov(x["_mb"]))
        var_m = g["_mb"].transform(lambda s: s.rolling(n).var())
        var_r = g["_rb"].transform(lambda s: s.rolling(n).var())
        corr = g[["_rb", "_mb"]].apply(lambda x: x["_rb"].rolling(n).corr(x["_mb"]))
        df[f"f_beta_{n}"] = cov / var_m
        df[f"f_corr_{n}"] = corr
        df[f"f_idio_vol_{n}"] = np.sqrt((var_r * (1 - corr ** 2)).clip(lower=0)) * ANN
    for n in _ws(fs.return_windows):
        df[f"f_rs_{n}"] = df[f"f_ret_{n}"] - df[f"f_mkt_ret_{n}"]
    df["f_dow"] = (df["date"].dt.dayofweek + 1).astype(float)
    df["f_month"] = df["date"].dt.month.astype(float)
    df = df.replace([np.inf, -np.inf], np.nan)
    ranked = ([f"f_ret_{n}" for n in _ws(fs.return_windows)] + [f"f_vol_{n}" for n in _ws(fs.vol_windows)]
              + [f"f_dd_{n}" for n in _ws(fs.drawdown_windows)])
    gd = df.groupby("date")
    for c in ranked:
        df["f_xs_" + c[2:]] = (gd[c].rank(method="average") - 0.5) / gd[c].transform("count")
    return df[["symbol", "date"] + [c for c in df.columns if c.startswith("f_")]]
