"""Group `signals`: today's signals of the production model, and the cost-aware backtest of the out-of-sample
predictions (``core/signals.py``, ``core/backtest.py``; charts in ``rendering/signals.py``)."""

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, AssetKey, Failure, MetadataValue, Output, asset

from regime_assets.assets._meta import md, num, plot_md
from regime_assets.assets import state
from regime_assets.core import registry
from regime_assets.core import backtest as bt
from regime_assets.core.signals import build_signals, signal_dates, signal_rows, top_bottom
from regime_assets.rendering import plots
from regime_assets.rendering import signals as signal_plots
from regime_assets.resources import tables
from regime_assets.resources.settings import RegimeSettings

OWNERS = ["team:quant-research"]
GROUP = "signals"
KINDS = {"polars", "duckdb"}
NO_MODEL = "no promoted model: no signals"
UPSTREAM_PREDICTIONS = "walk_forward_predictions"


def load_production_model(settings: RegimeSettings) -> tuple[object, dict] | None:
    """(loaded model, registry row) of the current production model through the registry's one loader, or None
    when none was promoted."""
    try:
        rec, model = state.production_model(settings)
    except registry.RegistryError as err:  # the registry names a version whose artifact is gone: say which
        raise Failure(description=f"production model cannot be loaded: {err}", allow_retries=False) from None
    if rec is None or model is None:
        return None
    return model, rec


def signal_feature_rows(settings: RegimeSettings, n_dates: int) -> tuple[list, pl.DataFrame]:
    """(``signal_dates``, ``signal_rows``) of the stored features, reading only the rows of those dates."""
    with tables.connect(settings) as conn:
        tables.require(conn, "features")
        dates = signal_dates(tables.query(conn, f"select distinct date from {tables.qualified('features')}"),
                             n_dates)
        rows = tables.rows(conn, "features", "date between ? and ?", [dates[0], dates[-1]], order="")
    return dates, signal_rows(rows, dates)


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse", deps=["production_model", "features"],
       output_required=False,
       description="The production model on the latest dates with features (spec signals.n_dates; the last one is "
                   "the as-of date), one row per date x symbol: P(sell), P(hold), P(buy), score = P(buy) - P(sell), "
                   "its cross-sectional rank, the action, the symbol's regime and the date's VIX source, model "
                   "version, spec hash, as-of date. Without a promoted model it fails (or, with "
                   "signals.without_model 'skip', is skipped) with that reason. Reads only the features of those "
                   "dates.")
def signals(context: AssetExecutionContext, settings: RegimeSettings,
            regime_labels: pl.DataFrame, market_context: pl.DataFrame):
    spec = settings.spec
    loaded = load_production_model(settings)
    if loaded is None:
        if spec.signals.without_model == "fail":
            raise Failure(description=NO_MODEL, allow_retries=False)
        context.log.warning(f"{NO_MODEL} (signals.without_model: skip; no table written)")
        return

    model, rec = loaded
    dates, rows = signal_feature_rows(settings, spec.signals.n_dates)
    if "regime" not in rows.columns:  # as in labeled_samples, for a model that reads the regime
        rows = rows.join(regime_labels.select("symbol", "date", "regime"), on=["symbol", "date"], how="left")
    proba = np.asarray(model.predict_proba(rows))
    rows = rows.select("symbol", "date")
    out = build_signals(rows, proba, regime_labels, market_context, spec.signals, rec["model_name"],
                        rec["version"], spec.spec_hash)
    top, bottom = top_bottom(out, spec.signals.top)
    show = ["symbol", "score", "rank", "action", "p_sell", "p_hold", "p_buy", "regime"]
    last = out.filter(pl.col("date") == out["date"].max())
    meta = {
        "rows": num(out.height), "as_of": MetadataValue.text(str(out["as_of"].max())),
        "dates": num(len(dates)), "model": MetadataValue.text(f"{rec['model_name']} {rec['version']}"),
        "spec_hash": MetadataValue.text(spec.spec_hash),
        "vix_source": MetadataValue.text(str(last["vix_source"].drop_nulls().first() if last.height else None)),
        "actions": md(last.group_by("action").len().sort("action")),
        "top": md(top.select(show)), "bottom": md(bottom.select(show)),
        "as_of_signals": md(last.select(show), 60),
    }
    yield Output(out, metadata=meta)


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse", deps=[UPSTREAM_PREDICTIONS],
       description="Cost-aware backtest of the out-of-sample predictions of every model, the baselines and the "
                   "ablation arms: long-short top/bottom k and long-only top k (overlapping books held the label "
                   "horizon, costs per side from the spec), benchmarks equal weight and the index; annualized "
                   "return and volatility, Sharpe, information ratio, max drawdown, hit rate, turnover, IC/ICIR/"
                   "rank IC/rank ICIR overall, by market regime and by year, with stationary block-bootstrap "
                   "intervals. Reads the predictions one model at a time.")
def signal_backtest(context: AssetExecutionContext, settings: RegimeSettings, raw_prices: pl.DataFrame,
                    market_context: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    try:
        with tables.connect(settings) as conn:
            have = tables.require(conn, UPSTREAM_PREDICTIONS)
            bt.prepare_predictions(pl.DataFrame(schema={c: pl.Utf8 for c in have}).head(0))  # the columns, first
            src = tables.qualified(UPSTREAM_PREDICTIONS)
            models = [r[0] for r in conn.execute(f"select distinct model from {src} order by model").fetchall()]
            universe = tables.query(conn, f"select symbol, date, any_value(regime) as regime from {src} "
                                          "group by symbol, date order by symbol, date")
            cols = ", ".join(f'"{c}"' for c in [*bt.PRED_COLUMNS, "fold", "test_start"])

            def load(m: str) -> pl.DataFrame:
                return tables.query(conn, f"select {cols} from {src} where model = ? order by fold, date, symbol",
                                    [m])

            res = bt.run_backtest_by_model(models, load, universe, raw_prices, market_context, spec.backtest,
                                           spec.labels.horizon, spec.regimes)
    except bt.BacktestError as err:
        raise Failure(description=f"bad input: {err}", allow_retries=False) from None
    metrics = res.metrics
    models = metrics["model"].unique().to_list()
    cand = spec.backtest.candidate if spec.backtest.candidate in models else next(
        (m for m in metrics.filter(pl.col("kind") != "benchmark")["model"].to_list()), spec.backtest.candidate)
    head = bt.headline(metrics)
    compare = [m for m in [cand, "lightgbm", bt.BASELINE_REGIME_PRIOR] if m in models]
    by_regime = bt.headline(metrics, group_type="regime").filter(pl.col("model").is_in(compare))
    meta = {
        "rows": num(metrics.height), "candidate": MetadataValue.text(cand),
        "spec_hash": MetadataValue.text(spec.spec_hash),
        "costs_bps": MetadataValue.text(f"open {spec.backtest.open_cost_bps}, close {spec.backtest.close_cost_bps}"),
        "headline_long_short": md(head, 60),
        "headline_long_only": md(bt.headline(metrics, strategy="long_only"), 60),
        "by_regime": md(by_regime, 60),
        "cumulative_plot": plot_md(plots.png_markdown(signal_plots.cumulative_returns_plot(res.daily, cand),
                                                      "cumulative net return vs benchmarks")),
        "rank_ic_by_year_plot": plot_md(plots.png_markdown(signal_plots.rank_ic_by_year_plot(metrics, compare),
                                                           "rank IC by year")),
        "sharpe_by_regime_plot": plot_md(plots.png_markdown(signal_plots.regime_bars_plot(
            metrics, "sharpe", "long_short", [*compare, bt.BENCHMARK_INDEX]), "Sharpe by market regime")),
    }
    for metric in ("annual_return", "information_ratio", "max_drawdown", "turnover"):
        v = metrics.filter((pl.col("model") == cand) & (pl.col("strategy") == "long_short")
                           & (pl.col("group_type") == "overall") & (pl.col("metric") == metric))
        if v.height:
            meta[f"candidate_{metric}"] = num(v["value"][0])
    return Output(metrics, metadata=meta)


def signals_assets(existing: list) -> list:
    """The group's assets for a definitions list: ``signals`` always; ``signal_backtest`` only when an asset named
    ``walk_forward_predictions`` is among ``existing`` (its upstream)."""
    key = AssetKey(UPSTREAM_PREDICTIONS)
    has_predictions = any(key in getattr(a, "keys", ()) for a in existing)
    return [signals, *([signal_backtest] if has_predictions else [])]
