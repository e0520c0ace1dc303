"""Regime labels per symbol-day, point-in-time.

Rules, applied in this order (thresholds in ``spec.regimes``):

1. VIX band (market-wide): ``vix > crash_vix`` -> crash; ``high_vol_vix <= vix <= crash_vix`` -> high_vol;
   ``normal_vix <= vix < high_vol_vix`` -> normal; ``vix < normal_vix`` -> low_vol.
2. Drop override (per symbol): if the close at t is at least ``drop_pct`` below the highest close of the last
   ``drop_window`` trading days before t (t-drop_window .. t), the day is crash.
3. Recovery override (per symbol): on a day that is not crash, if the symbol had a crash day within the last
   ``recovery_max_days`` trading days and its close is at least ``recovery_pct`` above the lowest close since
   that crash episode began, the day is recovery.

``regime_rule`` says which rule set the regime. Every input at t is known at t.
"""

from __future__ import annotations

import polars as pl

from regime_assets.spec import REGIMES, RegimeSpec

RULES = ("vix_band", "drop_override", "recovery_override")


def vix_band(vix: pl.Expr, rspec: RegimeSpec) -> pl.Expr:
    return (
        pl.when(vix > rspec.crash_vix).then(pl.lit("crash"))
        .when(vix >= rspec.high_vol_vix).then(pl.lit("high_vol"))
        .when(vix >= rspec.normal_vix).then(pl.lit("normal"))
        .otherwise(pl.lit("low_vol"))
    )


def label_regimes(prices: pl.DataFrame, market_context: pl.DataFrame, rspec: RegimeSpec) -> pl.DataFrame:
    """regime_labels: symbol, date, close, regime, regime_rule, vix, drawdown (vs the drop window's max)."""
    df = (
        prices.select("symbol", "date", pl.col("close").cast(pl.Float64))
        .join(market_context.select("date", "vix"), on="date", how="inner")
        .sort("symbol", "date")
    )
    w = rspec.drop_window + 1
    df = df.with_columns(
        (pl.col("close") / pl.col("close").rolling_max(w, min_samples=1).over("symbol") - 1.0).alias("drawdown"),
        pl.int_range(pl.len()).over("symbol").alias("_i"),
    )
    band = vix_band(pl.col("vix"), rspec)
    drop = pl.col("drawdown") <= -rspec.drop_pct
    df = df.with_columns(band.alias("_band"), drop.alias("_drop"))
    df = df.with_columns((pl.col("_band") == "crash").or_(pl.col("_drop")).alias("_crash"))
    # crash episodes: a new episode starts on a crash day that follows a non-crash day
    start = pl.col("_crash") & ~pl.col("_crash").shift(1, fill_value=False).over("symbol")
    df = df.with_columns(start.cast(pl.Int32).cum_sum().over("symbol").alias("_episode"))
    df = df.with_columns(
        pl.when(pl.col("_crash")).then(pl.col("_i")).otherwise(None).forward_fill().over("symbol").alias("_last_crash"),
        pl.when(pl.col("_episode") > 0).then(pl.col("close").cum_min().over("symbol", "_episode"))
        .otherwise(None).alias("_trough"),
    )
    recovery = (
        ~pl.col("_crash")
        & pl.col("_last_crash").is_not_null()
        & ((pl.col("_i") - pl.col("_last_crash")) <= rspec.recovery_max_days)
        & (pl.col("close") >= pl.col("_trough") * (1.0 + rspec.recovery_pct))
    )
    df = df.with_columns(recovery.fill_null(False).alias("_recovery"))
    regime = (
        pl.when(pl.col("_drop") & (pl.col("_band") != "crash")).then(pl.lit("crash"))
        .when(pl.col("_recovery")).then(pl.lit("recovery"))
        .otherwise(pl.col("_band"))
    )
    rule = (
        pl.when(pl.col("_drop") & (pl.col("_band") != "crash")).then(pl.lit("drop_override"))
        .when(pl.col("_recovery")).then(pl.lit("recovery_override"))
        .otherwise(pl.lit("vix_band"))
    )
    out = df.with_columns(regime.alias("regime"), rule.alias("regime_rule"))
    return out.select("symbol", "date", "close", "regime", "regime_rule", "vix", "drawdown")


def regime_shares(labels: pl.DataFrame) -> pl.DataFrame:
    """Share of each regime overall (one row per regime, all five listed)."""
    total = max(labels.height, 1)
    counts = labels.group_by("regime").len()
    base = pl.DataFrame({"regime": list(REGIMES)})
    return (base.join(counts, on="regime", how="left").with_columns(pl.col("len").fill_null(0).alias("rows"))
            .with_columns((pl.col("rows") / total).alias("share")).select("regime", "rows", "share"))


def regime_shares_by_year(labels: pl.DataFrame) -> pl.DataFrame:
    """Share of each regime per year: year + one column per regime."""
    t = (labels.with_columns(pl.col("date").dt.year().alias("year")).group_by("year", "regime").len()
         .with_columns((pl.col("len") / pl.col("len").sum().over("year")).alias("share")))
    wide = t.pivot(on="regime", index="year", values="share").sort("year")
    for r in REGIMES:
        if r not in wide.columns:
            wide = wide.with_columns(pl.lit(0.0).alias(r))
    return wide.select("year", *[pl.col(r).fill_null(0.0).round(4) for r in REGIMES])
