"""Group `regimes`: per symbol-day regime labels."""


import polars as pl
from dagster import AssetCheckResult, AssetExecutionContext, MetadataValue, Output, asset, asset_check

from regime_assets.assets._meta import base_meta, md, num, plot_md
from regime_assets.rendering import plots
from regime_assets.core.regimes import RULES, label_regimes, regime_shares, regime_shares_by_year
from regime_assets.resources.settings import RegimeSettings
from regime_assets.spec import REGIMES

OWNERS = ["team:quant-research"]


@asset(
    group_name="regimes", owners=OWNERS, kinds={"polars", "duckdb"}, pool="warehouse",
    description="Per symbol-day regime in {crash, recovery, high_vol, normal, low_vol} and the rule that set it "
                "(vix_band, drop_override, recovery_override). Point-in-time; rules in docs/ARCHITECTURE.md.",
)
def regime_labels(context: AssetExecutionContext, settings: RegimeSettings, raw_prices: pl.DataFrame,
                  market_context: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    labels = label_regimes(raw_prices, market_context, spec.regimes)
    shares = regime_shares(labels)
    meta = base_meta(labels, spec.spec_hash)
    for row in shares.iter_rows(named=True):
        meta[f"share_{row['regime']}"] = num(round(row["share"], 4))
    meta["regime_shares"] = md(shares)
    meta["regime_shares_by_year"] = md(regime_shares_by_year(labels), 60)
    meta["rules"] = md(labels.group_by("regime_rule").len().sort("regime_rule"))
    meta["regime_shares_plot"] = plot_md(plots.png_markdown(plots.regime_shares_plot(labels, spec.events),
                                                            "regime shares over time"))
    return Output(labels, metadata=meta)


@asset_check(asset=regime_labels, blocking=True, description="Every row has one of the five regimes and a rule.")
def regimes_valid(regime_labels: pl.DataFrame) -> AssetCheckResult:
    bad = regime_labels.filter(~pl.col("regime").is_in(list(REGIMES)) | ~pl.col("regime_rule").is_in(list(RULES)))
    return AssetCheckResult(passed=bad.height == 0, metadata={"bad_rows": num(bad.height)})


@asset_check(asset=regime_labels, description="Each regime occurs at least once (warns if a regime never occurs).")
def regimes_all_present(regime_labels: pl.DataFrame) -> AssetCheckResult:
    present = set(regime_labels["regime"].unique().to_list())
    missing = [r for r in REGIMES if r not in present]
    from dagster import AssetCheckSeverity

    return AssetCheckResult(passed=not missing, severity=AssetCheckSeverity.WARN,
                            metadata={"missing": MetadataValue.text(", ".join(missing) or "none")})
