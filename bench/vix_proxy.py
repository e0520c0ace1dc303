"""The VIX proxy on the bundled data: its validation against published VIX figures, its out-of-sample fit, and the
regime shares by year it produces -- next to the previous proxy (an affine map of 5/21-day realized vol and
EWMA 0.94, coefficients 6.8406, 0.15352, -0.07909, 0.61127, kept here only for the comparison).

    uv run python bench/vix_proxy.py
"""

from __future__ import annotations

import numpy as np
import polars as pl

from regime_assets.core.market import ANNUAL, build_market_context, load_published, validate_proxy
from regime_assets.core.regimes import label_regimes, regime_shares_by_year
from regime_assets.core.sources import load_source
from regime_assets.spec import REGIMES, Spec

PREVIOUS = (6.8406, 0.15352, -0.07909, 0.61127)


def previous_proxy(index: pl.DataFrame, vix: pl.DataFrame | None) -> pl.DataFrame:
    r = pl.col("close").log().diff()
    c = PREVIOUS
    ctx = index.sort("date").with_columns(r.alias("_r")).with_columns(
        (pl.col("_r").rolling_std(5) * ANNUAL).alias("a"), (pl.col("_r").rolling_std(21) * ANNUAL).alias("b"),
        ((pl.col("_r").fill_null(0) ** 2).ewm_mean(alpha=0.06, adjust=False).sqrt() * ANNUAL).alias("e"))
    ctx = ctx.with_columns(pl.when(pl.col("b").is_null()).then(None).otherwise(
        (c[0] + c[1] * pl.col("a") + c[2] * pl.col("b") + c[3] * pl.col("e")).clip(lower_bound=9.0)).alias("vix_proxy"))
    if vix is not None:
        ctx = ctx.join(vix.rename({"vix": "vix_real"}), on="date", how="left")
    else:
        ctx = ctx.with_columns(pl.lit(None, dtype=pl.Float64).alias("vix_real"))
    return (ctx.with_columns(pl.coalesce("vix_real", "vix_proxy").alias("vix"))
            .filter(pl.col("vix").is_not_null()).select("date", pl.col("close").alias("index_close"), "vix",
                                                        "vix_proxy"))


def main() -> int:
    spec = Spec()
    data = load_source(spec.data)
    ctx, cal = build_market_context(data.index, data.vix, spec.vix_proxy, spec.regimes)
    old = previous_proxy(data.index, data.vix)
    published = load_published()
    table, summary = validate_proxy(ctx, published, spec.regimes)
    old_table, old_summary = validate_proxy(old, published, spec.regimes)
    pl.Config.set_tbl_rows(60)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(220)
    print("published VIX vs the proxy (every figure outside the 2014-2018 fit)")
    print(table.join(old_table.select("kind", "period", pl.col("proxy").alias("previous_proxy")),
                     on=["kind", "period"], how="left"))
    print(f"stress-date MAE: {summary['stress_mae']:.2f} (previous {old_summary['stress_mae']:.2f}); VIX-band "
          f"agreement at the stress dates {summary['stress_band_agreement']:.2f} "
          f"(previous {old_summary['stress_band_agreement']:.2f}); yearly-mean MAE {summary['year_mean_mae']:.2f} "
          f"(previous {old_summary['year_mean_mae']:.2f})")
    print(f"out of sample ({cal.holdout}): corr {cal.oos_corr:.3f}, MAE {cal.oos_mae:.2f}, VIX-band agreement "
          f"{cal.oos_band_agreement:.3f} over {cal.n_holdout} days; in-sample corr {cal.in_sample_corr:.3f}")
    print(f"coefficients {cal.named_coefficients()}")
    new_lab = label_regimes(data.prices, ctx.select("date", "index_close", "vix"), spec.regimes)
    old_lab = label_regimes(data.prices, old.select("date", "index_close", "vix"), spec.regimes)
    a = regime_shares_by_year(old_lab)
    b = regime_shares_by_year(new_lab)
    both = a.join(b, on="year", suffix="_new").select(
        "year", *[pl.col(c).mul(100).round(1) for r in REGIMES for c in (r, f"{r}_new")])
    print("regime shares by year (% of symbol-days): previous proxy | this proxy (_new)")
    print(both)
    yearly = (ctx.group_by(pl.col("date").dt.year().alias("year"))
              .agg(pl.col("vix").mean().round(2).alias("mean_vix"), pl.col("vix").max().round(1).alias("max_vix"))
              .join(old.group_by(pl.col("date").dt.year().alias("year"))
                    .agg(pl.col("vix").mean().round(2).alias("mean_vix_prev"),
                         pl.col("vix").max().round(1).alias("max_vix_prev")), on="year").sort("year"))
    print(yearly.filter(pl.col("year").is_in([1998, 2002, 2008, 2009, 2011, 2020, 2022])))
    return 0 if np.isfinite(summary["stress_mae"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
