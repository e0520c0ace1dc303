"""Small PNG charts for Dagster markdown metadata (matplotlib, Agg backend, no pyplot state).

Every helper returns PNG bytes (about 8 x 3.5 in at 90 dpi, well under 150 KB); on empty or unusable input it
returns a placeholder image that says "no data". ``png_markdown`` turns the bytes into an inline markdown image.
Regime colours are fixed: crash red, recovery green, high_vol orange, normal blue-grey, low_vol light blue.

Input frames beyond the core contracts (column aliases in brackets are accepted too):

* ``eval_long``: ``model, regime, metric, value`` + optional ``ci_low, ci_high`` [lo/hi, lower/upper] and
  ``is_baseline`` (bool; otherwise models named ``baseline*`` count as baselines).
* ``arms_table``: ``arm, regime, diff`` [delta, mean_diff, value] + optional ``ci_low, ci_high``, ``metric``.
* ``shap_long``: ``model, regime, feature, importance`` [mean_abs_shap, shap, value].
* drift ``history``: ``date`` [as_of], ``score`` [drift_score].
* ``timeline``: ``as_of, drift_score, retrain, captured_event, vix``.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib import dates as mdates  # noqa: E402
from matplotlib import rc_context  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from regime_assets.core.capture import existing_windows  # noqa: E402
from regime_assets.spec import CLASSES, REGIMES, DriftSpec  # noqa: E402

REGIME_COLORS = {
    "crash": "#d62728",
    "recovery": "#2ca02c",
    "high_vol": "#ff7f0e",
    "normal": "#8c9bab",
    "low_vol": "#9ecae1",
}
CLASS_COLORS = {"sell": "#d62728", "hold": "#bdbdbd", "buy": "#2ca02c"}
LEVEL_COLORS = {"none": "#8c9bab", "moderate": "#ff7f0e", "major": "#d62728"}
STACK_ORDER = ("crash", "recovery", "high_vol", "normal", "low_vol")
FIGSIZE = (8.0, 3.5)
DPI = 90
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False}
LABEL_CHARS = 28
EVENT_LABEL_CHARS = 40


def _figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def no_data_png(title: str = "", message: str = "no data") -> bytes:
    """The placeholder image every helper returns when it has nothing to draw."""
    with rc_context(STYLE):
        fig = _figure((FIGSIZE[0], FIGSIZE[1] / 2))
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#666666", transform=ax.transAxes)
        if title:
            ax.set_title(title)
        return _png(fig)


def _date_axis(ax: Any) -> None:
    loc = mdates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def png_markdown(png: bytes, alt: str = "chart") -> str:
    """Inline markdown image: ``![alt](data:image/png;base64,...)``."""
    clean = " ".join(str(alt).replace("[", "(").replace("]", ")").split())
    return f"![{clean}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def _pick(df: pl.DataFrame, names: Sequence[str]) -> str | None:
    return next((n for n in names if n in df.columns), None)


def _short(name: str, limit: int = LABEL_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "~"


def _regime_order(values: Iterable[str]) -> list[str]:
    vals = [v for v in dict.fromkeys(values) if v is not None]
    known = [r for r in REGIMES if r in vals]
    return known + sorted(v for v in vals if v not in REGIMES)


# ---------------------------------------------------------------------------------------------------- regimes


def regime_shares_plot(regime_labels: pl.DataFrame, events: Any = None, title: str = "Regime shares by month"
                       ) -> bytes:
    """Stacked area of monthly regime shares (``symbol, date, regime``); events shaded and labelled."""
    if regime_labels is None or regime_labels.height == 0 or not {"date", "regime"} <= set(regime_labels.columns):
        return no_data_png(title)
    monthly = (
        regime_labels.filter(pl.col("regime").is_not_null() & pl.col("date").is_not_null())
        .with_columns(pl.col("date").cast(pl.Date).dt.truncate("1mo").alias("month"))
        .group_by("month", "regime").len()
    )
    if monthly.height == 0:
        return no_data_png(title)
    wide = monthly.pivot(on="regime", index="month", values="len").sort("month").fill_null(0)
    months = wide.get_column("month").to_list()
    counts = np.vstack([wide.get_column(r).to_numpy().astype(float) if r in wide.columns else np.zeros(len(months))
                        for r in STACK_ORDER])
    total = counts.sum(axis=0)
    shares = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    with rc_context(STYLE):
        fig = _figure()
        ax = fig.add_subplot()
        if len(months) == 1:
            bottom = 0.0
            for i, r in enumerate(STACK_ORDER):
                ax.bar(months, shares[i], bottom=bottom, color=REGIME_COLORS[r], label=r, width=20)
                bottom += shares[i]
        else:
            ax.stackplot(months, shares, colors=[REGIME_COLORS[r] for r in STACK_ORDER], labels=list(STACK_ORDER),
                         linewidth=0)
        lo, hi = min(months), max(months) + dt.timedelta(days=31)
        for eid, s, e in existing_windows(events):
            if e < lo or s > hi:
                continue
            ax.axvspan(s, e + dt.timedelta(days=1), color="black", alpha=0.15, linewidth=0)
            ax.text(s, 0.98, _short(eid, EVENT_LABEL_CHARS), rotation=90, va="top", ha="right", fontsize=6,
                    color="black")
        ax.set_xlim(lo, hi)
        _date_axis(ax)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of symbol-days")
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _png(fig)


def class_balance_plot(frame: pl.DataFrame, by: str = "regime", title: str = "Class balance by regime") -> bytes:
    """100% stacked bars of label shares (sell/hold/buy) per ``by`` value, with the row count on top."""
    if frame is None or frame.height == 0 or not {by, "label"} <= set(frame.columns):
        return no_data_png(title)
    t = frame.filter(pl.col("label").is_not_null() & pl.col(by).is_not_null()).group_by(by, "label").len()
    if t.height == 0:
        return no_data_png(title)
    groups = _regime_order(t.get_column(by).cast(pl.Utf8).to_list()) if by == "regime" else \
        sorted(t.get_column(by).cast(pl.Utf8).unique().to_list())
    t = t.with_columns(pl.col(by).cast(pl.Utf8))
    counts = {(g, c): n for g, c, n in t.iter_rows()}
    with rc_context(STYLE):
        fig = _figure()
        ax = fig.add_subplot()
        x = np.arange(len(groups))
        totals = np.array([sum(counts.get((g, c), 0) for c in CLASSES) for g in groups], dtype=float)
        bottom = np.zeros(len(groups))
        for c in CLASSES:
            v = np.array([counts.get((g, c), 0) for g in groups], dtype=float) / np.maximum(totals, 1)
            ax.bar(x, v, bottom=bottom, color=CLASS_COLORS[c], label=c, width=0.7)
            bottom += v
        for xi, n in zip(x, totals):
            ax.text(xi, 1.01, f"n={int(n):,}", ha="center", va="bottom", fontsize=6)
        ax.set_xticks(x, groups)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("share")
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _png(fig)


# ------------------------------------------------------------------------------------------------- evaluation


def _ci(df: pl.DataFrame, value: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    lo_c, hi_c = _pick(df, ("ci_low", "lo", "lower")), _pick(df, ("ci_high", "hi", "upper"))
    if lo_c is None or hi_c is None:
        return None, None
    v = df.get_column(value).cast(pl.Float64).to_numpy()
    lo = df.get_column(lo_c).cast(pl.Float64).to_numpy()
    hi = df.get_column(hi_c).cast(pl.Float64).to_numpy()
    return np.nan_to_num(np.maximum(v - lo, 0.0)), np.nan_to_num(np.maximum(hi - v, 0.0))


def regime_metric_bars(eval_long: pl.DataFrame, metric: str, title: str | None = None) -> bytes:
    """Per regime, grouped bars of each model's ``metric`` with CI error bars; baselines hatched in grey."""
    title = title or f"{metric} by regime"
    if eval_long is None or eval_long.height == 0:
        return no_data_png(title)
    value = _pick(eval_long, ("value", metric))
    if value is None or not {"model", "regime"} <= set(eval_long.columns):
        return no_data_png(title)
    df = eval_long.filter(pl.col("metric") == metric) if "metric" in eval_long.columns else eval_long
    df = df.filter(pl.col(value).is_not_null() & pl.col(value).cast(pl.Float64).is_finite())
    if df.height == 0:
        return no_data_png(title)
    df = df.with_columns(pl.col("regime").cast(pl.Utf8), pl.col("model").cast(pl.Utf8))
    if "is_baseline" in df.columns:
        base = df.get_column("is_baseline").fill_null(False).cast(pl.Boolean)
    else:
        base = df.get_column("model").str.starts_with("baseline")
    df = df.with_columns(base.alias("_base"))
    models = list(dict.fromkeys(df.filter(~pl.col("_base")).get_column("model").to_list()))
    baselines = list(dict.fromkeys(df.filter(pl.col("_base")).get_column("model").to_list()))
    regimes = _regime_order(df.get_column("regime").to_list())
    allm = models + baselines
    width = 0.8 / max(len(allm), 1)
    cmap = matplotlib.colormaps["tab10"]
    greys = ["#636363", "#969696", "#bdbdbd", "#d9d9d9"]
    x = np.arange(len(regimes))
    rpos = {r: i for i, r in enumerate(regimes)}
    with rc_context(STYLE):
        fig = _figure((max(FIGSIZE[0], 1.2 * len(regimes) + 2), FIGSIZE[1]))
        ax = fig.add_subplot()
        for j, m in enumerate(allm):
            sub = df.filter(pl.col("model") == m).unique("regime", keep="first", maintain_order=True)
            pos = np.array([rpos[r] for r in sub.get_column("regime").to_list()]) - 0.4 + width * (j + 0.5)
            v = sub.get_column(value).cast(pl.Float64).to_numpy()
            lo, hi = _ci(sub, value)
            is_base = m in baselines
            color = greys[(j - len(models)) % len(greys)] if is_base else cmap(j % 10)
            ax.bar(pos, v, width=width, color=color, label=m, hatch="//" if is_base else None,
                   edgecolor="white" if is_base else None, linewidth=0)
            if lo is not None:
                ax.errorbar(pos, v, yerr=np.vstack([lo, hi]), fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)
        ax.set_xticks(x, regimes)
        ax.set_ylabel(metric)
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncols=1 if len(allm) <= 12 else 2)
        return _png(fig)


def walk_forward_arms_plot(arms_table: pl.DataFrame, metric: str | None = None,
                           title: str = "Walk-forward arms: paired difference vs reference") -> bytes:
    """Per regime, each arm's paired difference with its interval, against a zero line."""
    if arms_table is None or arms_table.height == 0:
        return no_data_png(title)
    value = _pick(arms_table, ("diff", "delta", "mean_diff", "value"))
    if value is None or not {"arm", "regime"} <= set(arms_table.columns):
        return no_data_png(title)
    df = arms_table
    if "metric" in df.columns:
        if metric is None:
            ms = df.get_column("metric").drop_nulls()
            metric = ms[0] if ms.len() else None
        if metric is not None:
            df = df.filter(pl.col("metric") == metric)
    df = df.filter(pl.col(value).is_not_null() & pl.col(value).cast(pl.Float64).is_finite())
    if df.height == 0:
        return no_data_png(title)
    df = df.with_columns(pl.col("regime").cast(pl.Utf8), pl.col("arm").cast(pl.Utf8))
    arms = list(dict.fromkeys(df.get_column("arm").to_list()))
    regimes = _regime_order(df.get_column("regime").to_list())
    rpos = {r: i for i, r in enumerate(regimes)}
    step = 0.8 / max(len(arms), 1)
    cmap = matplotlib.colormaps["tab10"]
    with rc_context(STYLE):
        fig = _figure()
        ax = fig.add_subplot()
        ax.axhline(0.0, color="black", linewidth=0.8)
        for j, a in enumerate(arms):
            sub = df.filter(pl.col("arm") == a).unique("regime", keep="first", maintain_order=True)
            pos = np.array([rpos[r] for r in sub.get_column("regime").to_list()]) - 0.4 + step * (j + 0.5)
            v = sub.get_column(value).cast(pl.Float64).to_numpy()
            lo, hi = _ci(sub, value)
            ax.errorbar(pos, v, yerr=None if lo is None else np.vstack([lo, hi]), fmt="o", markersize=3.5,
                        color=cmap(j % 10), label=a, elinewidth=1.0, capsize=2)
        for i in range(1, len(regimes)):
            ax.axvline(i - 0.5, color="#dddddd", linewidth=0.6)
        ax.set_xticks(np.arange(len(regimes)), regimes)
        ax.set_xlim(-0.5, len(regimes) - 0.5)
        ax.set_ylabel(f"difference{f' in {metric}' if metric else ''}")
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _png(fig)


def shap_top_features_plot(shap_long: pl.DataFrame, model: str, top_k: int,
                           title: str | None = None) -> bytes:
    """Small multiples, one per regime side by side: the model's ``top_k`` features by mean |SHAP|."""
    title = title or f"Top features by mean |SHAP| - {model}"
    if shap_long is None or shap_long.height == 0:
        return no_data_png(title)
    value = _pick(shap_long, ("importance", "mean_abs_shap", "shap", "value"))
    if value is None or not {"regime", "feature"} <= set(shap_long.columns):
        return no_data_png(title)
    df = shap_long.filter(pl.col("model") == model) if "model" in shap_long.columns else shap_long
    df = df.filter(pl.col(value).is_not_null()).with_columns(pl.col("regime").cast(pl.Utf8),
                                                             pl.col(value).cast(pl.Float64).alias("_v"))
    if df.height == 0 or top_k < 1:
        return no_data_png(title)
    regimes = _regime_order(df.get_column("regime").to_list())
    n = len(regimes)
    height = max(2.5, 0.17 * top_k + 1.0)
    with rc_context(STYLE):
        fig = _figure((max(FIGSIZE[0], 2.8 * n), height))
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, r in zip(axes, regimes):
            sub = df.filter(pl.col("regime") == r).sort("_v", descending=True).head(top_k)
            names = [_short(f) for f in sub.get_column("feature").to_list()][::-1]
            vals = sub.get_column("_v").to_numpy()[::-1]
            ax.barh(np.arange(len(vals)), vals, color=REGIME_COLORS.get(r, "#636363"))
            ax.set_yticks(np.arange(len(vals)), names, fontsize=6)
            ax.set_title(r)
            ax.tick_params(axis="x", labelsize=6)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        return _png(fig)


# ------------------------------------------------------------------------------------------------- monitoring


def drift_plot(feature_table: pl.DataFrame, score: float | None, history: pl.DataFrame | None = None,
               dspec: DriftSpec | None = None, title: str = "Feature drift") -> bytes:
    """Left: the most drifted features' PSI with the moderate/major lines. Right: the drift score over time
    (``history``: date, score) or the current score against the retrain threshold."""
    dspec = dspec or DriftSpec()
    has_table = feature_table is not None and feature_table.height > 0 and {"feature", "psi"} <= set(
        feature_table.columns)
    hist = None
    if history is not None and history.height > 0:
        dcol, scol = _pick(history, ("date", "as_of")), _pick(history, ("score", "drift_score"))
        if dcol and scol:
            hist = history.select(pl.col(dcol).alias("date"), pl.col(scol).cast(pl.Float64).alias("score")) \
                .drop_nulls().sort("date")
            hist = hist if hist.height else None
    has_score = score is not None and np.isfinite(score)
    if not has_table and hist is None and not has_score:
        return no_data_png(title)
    with rc_context(STYLE):
        fig = _figure()
        ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
        top = (feature_table.filter(pl.col("psi").is_not_null()).sort("psi", descending=True)
               .head(dspec.top_features)) if has_table else None
        if top is not None and top.height:
            names = [_short(f) for f in top.get_column("feature").to_list()][::-1]
            vals = top.get_column("psi").cast(pl.Float64).to_numpy()[::-1]
            levels = (top.get_column("level").to_list() if "level" in top.columns else ["none"] * top.height)[::-1]
            ax.barh(np.arange(len(vals)), vals, color=[LEVEL_COLORS.get(lv, "#8c9bab") for lv in levels])
            ax.set_yticks(np.arange(len(vals)), names, fontsize=6)
            ax.axvline(dspec.psi_moderate, color=LEVEL_COLORS["moderate"], linestyle="--", linewidth=0.8,
                       label=f"moderate {dspec.psi_moderate:g}")
            ax.axvline(dspec.psi_major, color=LEVEL_COLORS["major"], linestyle="--", linewidth=0.8,
                       label=f"major {dspec.psi_major:g}")
            ax.set_xlabel("PSI")
            ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False)
        else:
            ax.axis("off")
            ax.text(0.5, 0.5, "no data", ha="center", va="center", color="#666666", transform=ax.transAxes)
        ax.set_title(title, loc="left")
        if hist is not None:
            ax2.plot(hist.get_column("date").to_list(), hist.get_column("score").to_numpy(), marker="o",
                     markersize=2.5, color="#1f77b4", linewidth=1)
            _date_axis(ax2)
            ax2.set_title("drift score" + (f" (now {score:.3f})" if has_score else ""))
        else:
            ax2.bar([0], [score if has_score else 0.0], color="#1f77b4", width=0.5)
            ax2.set_xticks([])
            ax2.set_xlim(-1, 1)
            ax2.set_title(f"drift score {score:.3f}" if has_score else "drift score: no data")
        ax2.axhline(dspec.retrain_threshold, color="#d62728", linestyle="--", linewidth=0.8,
                    label=f"retrain {dspec.retrain_threshold:g}")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper left", frameon=False)
        fig.tight_layout()
        return _png(fig)


def replay_timeline_plot(timeline: pl.DataFrame, threshold: float | None = None,
                         title: str = "Drift score, retrains and captured events") -> bytes:
    """Drift score over ``as_of`` (left axis) with VIX (right axis), retrain weeks marked, captured events drawn."""
    if timeline is None or timeline.height == 0 or not {"as_of", "drift_score"} <= set(timeline.columns):
        return no_data_png(title)
    df = timeline.sort("as_of")
    x = df.get_column("as_of").to_list()
    y = df.get_column("drift_score").cast(pl.Float64).to_numpy()
    with rc_context(STYLE):
        fig = _figure()
        ax = fig.add_subplot()
        if "vix" in df.columns and df.get_column("vix").drop_nulls().len():
            axv = ax.twinx()
            axv.plot(x, df.get_column("vix").cast(pl.Float64).to_numpy(), color="#bdbdbd", linewidth=1, label="VIX")
            axv.set_ylabel("VIX", color="#969696")
            axv.spines["right"].set_visible(True)
            ax.set_zorder(axv.get_zorder() + 1)
            ax.patch.set_visible(False)
        ax.plot(x, y, color="#1f77b4", linewidth=1.2, marker="o", markersize=2, label="drift score")
        if threshold is not None:
            ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
        if "retrain" in df.columns:
            mask = df.get_column("retrain").fill_null(False).cast(pl.Boolean).to_numpy()
            if mask.any():
                ax.scatter(np.array(x, dtype=object)[mask], y[mask], marker="^", color="#d62728", s=22, zorder=3,
                           label="retrain")
        if "captured_event" in df.columns:
            for d, ev in df.filter(pl.col("captured_event").is_not_null()).select("as_of", "captured_event") \
                    .iter_rows():
                ax.axvline(d, color="#2ca02c", linestyle=":", linewidth=1)
                ax.text(d, 0.98, _short(str(ev), EVENT_LABEL_CHARS), rotation=90, va="top", ha="right", fontsize=6,
                        transform=ax.get_xaxis_transform())
        finite = y[np.isfinite(y)]
        ax.set_ylim(0, max(1.0, float(finite.max()) if finite.size else 1.0))
        ax.set_ylabel("drift score")
        _date_axis(ax)
        ax.set_title(title)
        ax.legend(loc="upper left", frameon=False)
        return _png(fig)
