"""Benchmark: polars ``build_features`` vs the pandas reference on the bundled data.

    uv run python bench/features.py [--repeat N] [--tolerance 1e-9]

Prints both timings (best of N), the speed ratio, and checks that every common feature column agrees
(nulls at the same rows, |polars - pandas| <= tolerance * max(1, |pandas|)). Exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pandas_features import pandas_features  # noqa: E402

from regime_assets.core.features import build_features, feature_columns  # noqa: E402
from regime_assets.spec import FeatureSpec  # noqa: E402

DATA = ROOT / "regime_assets" / "data"
PROXY_WINDOW = 21


def load() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """prices, a simple market context (real VIX where present, else 21-day index realized vol in VIX points)
    and sectors (all 'unknown')."""
    prices = pl.read_parquet(DATA / "sp500_stocks.parquet").select("symbol", "date", "close").sort("symbol", "date")
    index = pl.read_parquet(DATA / "sp500_index.parquet").sort("date")
    vix = pl.read_parquet(DATA / "vix.parquet").select("date", pl.col("vix").alias("vix_real"))
    r = (pl.col("index_close") / pl.col("index_close").shift(1)).log()
    ctx = (index.select("date", pl.col("close").alias("index_close"))
           .with_columns((r.rolling_std(PROXY_WINDOW) * 100 * np.sqrt(252)).alias("vix_proxy"))
           .join(vix, on="date", how="left")
           .with_columns(pl.coalesce("vix_real", "vix_proxy").alias("vix"),
                         pl.when(pl.col("vix_real").is_not_null()).then(pl.lit("real")).otherwise(pl.lit("proxy"))
                         .alias("vix_source"))
           .filter(pl.col("vix").is_not_null())
           .select("date", "index_close", "vix", "vix_source", "vix_real", "vix_proxy"))
    sectors = prices.select(pl.col("symbol").unique().sort(), pl.lit("unknown").alias("sector"))
    return prices, ctx, sectors


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def compare(pl_out: pl.DataFrame, pd_out: pl.DataFrame, tol: float) -> pl.DataFrame:
    """Per common feature column: rows where exactly one side is null, and the max abs/rel difference."""
    cols = [c for c in feature_columns(pl_out) if c in pd_out.columns]
    j = pl_out.select("symbol", "date", *cols).join(
        pd_out.select("symbol", "date", *[pl.col(c).fill_nan(None).alias(c + "__pd") for c in cols]),
        on=["symbol", "date"], how="full", coalesce=True)
    rows = []
    for c in cols:
        a, b = j.get_column(c).to_numpy().astype(float), j.get_column(c + "__pd").to_numpy().astype(float)
        na, nb = np.isnan(a), np.isnan(b)
        both = ~na & ~nb
        diff = np.abs(a[both] - b[both])
        rel = diff / np.maximum(1.0, np.abs(b[both]))
        rows.append({"column": c, "null_mismatch": int((na != nb).sum()),
                     "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                     "max_scaled_diff": float(rel.max()) if rel.size else 0.0,
                     "non_null": int(both.sum())})
    res = pl.DataFrame(rows)
    return res.with_columns(((pl.col("null_mismatch") == 0) & (pl.col("max_scaled_diff") <= tol)).alias("ok"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per implementation; the best time is reported")
    ap.add_argument("--tolerance", type=float, default=1e-9)
    args = ap.parse_args(argv)
    prices, ctx, sectors = load()
    fspec = FeatureSpec()
    print(f"data: {prices.height:,} rows, {prices['symbol'].n_unique()} symbols, "
          f"{prices['date'].min()}..{prices['date'].max()}")

    t_pl, out_pl = best_of(lambda: build_features(prices, ctx, sectors, fspec), args.repeat)
    p_prices, p_ctx = prices.to_pandas(), ctx.to_pandas()
    t_pd, out_pd = best_of(lambda: pandas_features(p_prices, p_ctx, fspec), args.repeat)
    out_pd = pl.from_pandas(out_pd).with_columns(pl.col("date").cast(pl.Date))

    res = compare(out_pl, out_pd, args.tolerance)
    n_feat = len(feature_columns(out_pl))
    summary = pl.DataFrame({
        "implementation": ["polars build_features", "pandas groupby/rolling"],
        "seconds (best of %d)" % args.repeat: [round(t_pl, 3), round(t_pd, 3)],
        "rows": [out_pl.height, out_pd.height],
        "feature columns": [n_feat, len(feature_columns(out_pd))],
    })
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_rows=200, tbl_width_chars=120):
        print(summary)
        print(f"speed-up: {t_pd / t_pl:.1f}x")
        worst = res.sort("max_scaled_diff", descending=True).head(8)
        print(f"agreement on {res.height} common columns (tolerance {args.tolerance:g}); worst columns:")
        print(worst)
    bad = res.filter(~pl.col("ok"))
    if bad.height:
        print(f"MISMATCH in {bad.height} columns: {bad['column'].to_list()}")
        return 1
    print("all common columns agree")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
