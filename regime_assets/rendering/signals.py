"""Charts of the signal backtest (PNG bytes for Dagster markdown metadata; helpers from ``rendering.plots``).

* :func:`cumulative_returns_plot` - cumulative net return of the candidate's books against the benchmarks, with
  the market regime of each date shaded behind (input: ``core.backtest`` daily frame).
* :func:`rank_ic_by_year_plot` - mean rank IC per year with intervals (input: the metrics table).
* :func:`regime_bars_plot` - one metric per market regime, models side by side with intervals.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib import rc_context

from regime_assets.rendering.plots import (
    FIGSIZE,
    REGIME_COLORS,
    STYLE,
    _date_axis,
    _figure,
    _png,
    no_data_png,
    regime_metric_bars,
)

LINE_COLORS = {"long_short": "#1f77b4", "long_only": "#2ca02c", "equal_weight": "#636363", "index": "#000000",
               "regime_prior": "#ff7f0e"}


def _regime_runs(dates: pl.Series, regimes: pl.Series) -> pl.DataFrame:
    """Contiguous runs of one market regime: ``regime, start, end`` (end = the next run's first date)."""
    df = pl.DataFrame({"date": dates, "regime": regimes}).drop_nulls("regime").sort("date")
    if df.height == 0:
        return pl.DataFrame(schema={"regime": pl.Utf8, "start": pl.Date, "end": pl.Date})
    df = df.with_columns((pl.col("regime") != pl.col("regime").shift(1)).fill_null(True).cum_sum().alias("_run"))
    runs = df.group_by("_run", maintain_order=True).agg(pl.col("regime").first(), pl.col("date").first().alias("start"))
    return runs.with_columns(pl.col("start").shift(-1).fill_null(df["date"].max()).alias("end")).drop("_run")


def cumulative_returns_plot(daily: pl.DataFrame, candidate: str, baseline: str = "baseline_regime_prior",
                            title: str | None = None) -> bytes:
    """Cumulative net return of ``candidate`` (long-short and long-only) vs equal weight, the index and the
    regime-prior long-short, with market regimes shaded."""
    title = title or f"Cumulative net return: {candidate} vs benchmarks"
    need = {"model", "date", "valid"}
    if daily is None or daily.height == 0 or not need <= set(daily.columns):
        return no_data_png(title)
    d = daily.filter(pl.col("valid"))
    cand = d.filter(pl.col("model") == candidate).sort("date")
    if cand.height < 2:
        return no_data_png(title)
    lines: list[tuple[str, pl.Series, np.ndarray, str]] = []

    def wealth(x: pl.Series) -> np.ndarray:
        return np.cumprod(1.0 + x.fill_null(0.0).to_numpy()) - 1.0

    lines.append((f"{candidate} long-short", cand["date"], wealth(cand["ls_net"]), LINE_COLORS["long_short"]))
    lines.append((f"{candidate} long-only", cand["date"], wealth(cand["lo_net"]), LINE_COLORS["long_only"]))
    for name, col, color in (("equal_weight", "bench", LINE_COLORS["equal_weight"]),
                             ("index", "bench", LINE_COLORS["index"])):
        b = d.filter(pl.col("model") == name).sort("date")
        b = b.filter(pl.col("date").is_between(cand["date"].min(), cand["date"].max()))
        if b.height > 1:
            lines.append((name, b["date"], wealth(b[col]), color))
    base = d.filter(pl.col("model") == baseline).sort("date")
    if base.height > 1 and baseline != candidate:
        lines.append((f"{baseline} long-short", base["date"], wealth(base["ls_net"]), LINE_COLORS["regime_prior"]))
    with rc_context(STYLE):
        fig = _figure()
        ax = fig.add_subplot()
        if "market_regime" in cand.columns:
            shown: set[str] = set()
            for r, s, e in _regime_runs(cand["date"], cand["market_regime"]).iter_rows():
                ax.axvspan(s, e, color=REGIME_COLORS.get(r, "#eeeeee"), alpha=0.18, linewidth=0,
                           label=None if r in shown else f"regime: {r}")
                shown.add(r)
        for label, x, y, color in lines:
            ax.plot(x.to_list(), y, label=label, color=color, linewidth=1.1 if "long" in label else 0.9,
                    linestyle="--" if label.startswith(baseline) else "-")
        ax.axhline(0.0, color="#999999", linewidth=0.6)
        _date_axis(ax)
        ax.set_ylabel("cumulative return after costs")
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _png(fig)


def rank_ic_by_year_plot(metrics: pl.DataFrame, models: list[str], title: str = "Rank IC by year") -> bytes:
    """Grouped bars of the mean rank IC per calendar year with intervals, one bar per model."""
    if metrics is None or metrics.height == 0 or not {"group_type", "metric", "model"} <= set(metrics.columns):
        return no_data_png(title)
    t = metrics.filter((pl.col("group_type") == "year") & (pl.col("metric") == "rank_ic")
                       & pl.col("model").is_in(models) & pl.col("value").is_not_null())
    if t.height == 0:
        return no_data_png(title)
    years = sorted(t["group"].unique().to_list())
    pos = {y: i for i, y in enumerate(years)}
    present = [m for m in models if m in set(t["model"].to_list())]
    width = 0.8 / max(len(present), 1)
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    with rc_context(STYLE):
        fig = _figure((max(FIGSIZE[0], 0.45 * len(years) + 3), FIGSIZE[1]))
        ax = fig.add_subplot()
        for j, m in enumerate(present):
            sub = t.filter(pl.col("model") == m)
            x = np.array([pos[g] for g in sub["group"].to_list()]) - 0.4 + width * (j + 0.5)
            v = sub["value"].to_numpy()
            lo = np.nan_to_num(np.maximum(v - sub["ci_low"].cast(pl.Float64).fill_null(float("nan")).to_numpy(), 0))
            hi = np.nan_to_num(np.maximum(sub["ci_high"].cast(pl.Float64).fill_null(float("nan")).to_numpy() - v, 0))
            ax.bar(x, v, width=width, color=cmap(j % 10), label=m)
            ax.errorbar(x, v, yerr=np.vstack([lo, hi]), fmt="none", ecolor="black", elinewidth=0.6, capsize=1.2)
        ax.axhline(0.0, color="black", linewidth=0.7)
        ax.set_xticks(np.arange(len(years)), years, rotation=45 if len(years) > 10 else 0)
        ax.set_ylabel("mean rank IC")
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _png(fig)


def regime_bars_plot(metrics: pl.DataFrame, metric: str, strategy: str, models: list[str],
                     title: str | None = None) -> bytes:
    """``metric`` of ``strategy`` per market regime for ``models`` (benchmarks among them: their buy-and-hold),
    intervals as error bars, via the regime bars of ``rendering.plots``."""
    title = title or f"{metric} ({strategy}) by market regime"
    if metrics is None or metrics.height == 0 or not {"group_type", "metric", "strategy"} <= set(metrics.columns):
        return no_data_png(title)
    t = (metrics.filter((pl.col("group_type") == "regime") & (pl.col("metric") == metric)
                        & pl.col("strategy").is_in([strategy, "buy_and_hold"]) & pl.col("model").is_in(models))
         .select("model", pl.col("group").alias("regime"), "metric", "value", "ci_low", "ci_high"))
    return regime_metric_bars(t, metric, title)
