"""Group `ingest`: raw prices, the market index and VIX, sectors, and the market context."""


import datetime as dt

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetOut,
    Failure,
    MetadataValue,
    Output,
    asset,
    asset_check,
    multi_asset,
)

from regime_assets.assets._meta import base_meta, md, num
from regime_assets.core import sources
from regime_assets.core.market import build_market_context, dd_names, load_published, validate_proxy
from regime_assets.resources.settings import RegimeSettings

OWNERS = ["team:quant-research"]
GROUP = "ingest"


@multi_asset(
    outs={
        "raw_prices": AssetOut(
            description="Daily closes (and OHLCV where the source has them) per symbol-day, validated on the way "
                        "in: long table symbol, date, close.",
            group_name=GROUP, owners=OWNERS, kinds={"polars", "duckdb"}, is_required=True),
        "index_prices": AssetOut(
            description="The market index close per date, and real VIX where the source has it.",
            group_name=GROUP, owners=OWNERS, kinds={"polars", "duckdb"}),
        "sectors": AssetOut(
            description="GICS sector per symbol ('unknown' where the source does not say).",
            group_name=GROUP, owners=OWNERS, kinds={"polars", "duckdb"}),
    },
    name="ingest_prices",
    pool="warehouse",
)
def ingest_prices(context: AssetExecutionContext, settings: RegimeSettings):
    """Load the spec's data source, validate it, and write prices, index and sectors."""
    spec = settings.spec
    try:
        data = sources.load_source(spec.data, today=dt.date.today())
    except sources.PriceValidationError as err:
        raise Failure(description=f"bad input: {err}", metadata={"error": MetadataValue.text(str(err))},
                      allow_retries=False) from None
    prices = data.prices
    index = data.index.rename({"close": "index_close"}) if "close" in data.index.columns else data.index
    if data.vix is not None:
        index = index.join(data.vix.rename({"vix": "vix_real"}), on="date", how="left")
    else:
        index = index.with_columns(pl.lit(None, dtype=pl.Float64).alias("vix_real"))
    sectors = data.sectors
    jumps = sources.large_jumps(prices, spec.data.max_abs_log_return)
    if jumps.height:
        context.log.warning(f"{jumps.height} daily close move(s) beyond |log return| "
                            f"{spec.data.max_abs_log_return:.3f}: " + "; ".join(
                                f"symbol {r['symbol']}, date {r['date']}: {r['problem']}"
                                for r in jumps.head(5).iter_rows(named=True)))
    n_sym = prices["symbol"].n_unique()
    meta = base_meta(prices, spec.spec_hash)
    meta.update({
        "symbols": num(n_sym),
        "first_date": MetadataValue.text(str(prices["date"].min())),
        "last_date": MetadataValue.text(str(prices["date"].max())),
        "source": MetadataValue.text(spec.data.source),
        "large_jumps": num(jumps.height),
        "rows_per_symbol": md(prices.group_by("symbol").agg(pl.len().alias("rows"), pl.col("date").min().alias(
            "first"), pl.col("date").max().alias("last")).sort("symbol"), 30),
    })
    yield Output(prices, output_name="raw_prices", metadata=meta)
    yield Output(index, output_name="index_prices", metadata={
        **base_meta(index, spec.spec_hash),
        "real_vix_days": num(int(index["vix_real"].is_not_null().sum())),
    })
    yield Output(sectors, output_name="sectors", metadata={
        **base_meta(sectors, spec.spec_hash, 30),
        "sector_counts": md(sectors.group_by("sector").len().sort("len", descending=True)),
    })


def _check_result(problems: pl.DataFrame, what: str,
                  severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> AssetCheckResult:
    ok = problems.height == 0
    meta = {"offending_rows": num(problems.height)}
    if not ok:
        meta["first_offending_rows"] = md(problems, 10)
    return AssetCheckResult(passed=ok, severity=severity, metadata=meta,
                            description=f"{what}: ok" if ok else f"{what}: {problems.height} offending rows")


@asset_check(asset="raw_prices", blocking=True, description="Every close is finite and > 0.")
def prices_finite_positive(raw_prices: pl.DataFrame) -> AssetCheckResult:
    return _check_result(sources.nonpositive_or_nonfinite(raw_prices), "prices finite and > 0")


@asset_check(asset="raw_prices", blocking=True, description="(symbol, date) is unique.")
def prices_unique(raw_prices: pl.DataFrame) -> AssetCheckResult:
    return _check_result(sources.duplicate_rows(raw_prices), "(symbol, date) unique")


@asset_check(asset="raw_prices", blocking=True, description="Dates are sorted within each symbol.")
def prices_sorted(raw_prices: pl.DataFrame) -> AssetCheckResult:
    return _check_result(sources.unsorted_rows(raw_prices), "dates sorted per symbol")


@asset_check(asset="raw_prices", blocking=True, required_resource_keys={"settings"},
             description="No symbol has less history than the spec's minimum.")
def prices_min_history(context, raw_prices: pl.DataFrame) -> AssetCheckResult:
    spec = context.resources.settings.spec
    return _check_result(sources.short_history(raw_prices, spec.data.min_history_days),
                         f"at least {spec.data.min_history_days} rows per symbol")


@asset_check(asset="raw_prices", blocking=True, required_resource_keys={"settings"},
             description="No calendar gap longer than the spec allows.")
def prices_no_long_gaps(context, raw_prices: pl.DataFrame) -> AssetCheckResult:
    spec = context.resources.settings.spec
    return _check_result(sources.long_gaps(raw_prices, spec.data.max_gap_days),
                         f"no gap over {spec.data.max_gap_days} days")


@asset_check(asset="raw_prices", blocking=False, required_resource_keys={"settings"},
             description="No daily |log return| of a close beyond data.max_abs_log_return (ln 5): a warning "
                         "(data.jump_action warn) naming symbol and date; with reject the input never loads.")
def prices_no_large_jumps(context, raw_prices: pl.DataFrame) -> AssetCheckResult:
    limit = context.resources.settings.spec.data.max_abs_log_return
    return _check_result(sources.large_jumps(raw_prices, limit), f"no daily |log return| over {limit:.3f}",
                         AssetCheckSeverity.WARN)


@asset(
    group_name=GROUP, owners=OWNERS, kinds={"polars", "duckdb"}, pool="warehouse",
    description="Per date: index close, VIX and vix_source ('real' or 'proxy'). Where real VIX is missing, a "
                "point-in-time proxy: ln VIX on the square root of the index's 5/10/21/63-day realized volatility "
                "and its drawdowns from the 1-month and 52-week highs; validated against published VIX closes.",
)
def market_context(context: AssetExecutionContext, settings: RegimeSettings,
                   index_prices: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    index = index_prices.select("date", pl.col("index_close").alias("close"))
    vix = index_prices.select("date", pl.col("vix_real").alias("vix")).drop_nulls()
    ctx, cal = build_market_context(index, vix if vix.height else None, spec.vix_proxy, spec.regimes)
    table, check = validate_proxy(ctx, load_published(), spec.regimes)
    meta = base_meta(ctx, spec.spec_hash)
    meta.update({
        "proxy_oos_corr": num(cal.oos_corr),
        "proxy_oos_mae": num(cal.oos_mae),
        "proxy_oos_band_agreement": num(cal.oos_band_agreement),
        "proxy_holdout": MetadataValue.text(cal.holdout),
        "proxy_in_sample_corr": num(cal.in_sample_corr),
        "proxy_overlap_days": num(cal.n_overlap),
        "proxy_holdout_days": num(cal.n_holdout),
        "proxy_coefficients": MetadataValue.json(cal.named_coefficients()),
        "proxy_drawdown_clip": MetadataValue.json(dict(zip(dd_names(spec.vix_proxy), cal.drawdown_clip))),
        "proxy_fitted_on": MetadataValue.text(cal.fitted_on),
        "proxy_stress_mae": num(check["stress_mae"]),
        "proxy_stress_band_agreement": num(check["stress_band_agreement"]),
        "proxy_year_mean_mae": num(check["year_mean_mae"]),
        "proxy_validation": md(table, 40),
        "real_vix_share": num((ctx["vix_source"] == "real").fill_null(False).mean() if ctx.height else None),
    })
    if cal.notes:
        meta["proxy_notes"] = MetadataValue.text("; ".join(cal.notes))
    return Output(ctx, metadata=meta)
