"""Model cards: one markdown page per model version (stored beside meta.json and shown as asset metadata).

``model_card(info, evaluation, ...)`` is pure: ``info`` is the version's metadata dict (as stored in meta.json:
``name, version, estimator, spec_hash, data_hash, train_start, train_end, rows, features, calibration`` ...; any
key may be missing) and ``evaluation`` a generic out-of-sample frame ``model, regime, metric, value, ci_low,
ci_high`` (+ optional ``n``) -- e.g. ``regime_evaluation`` or a walk-forward table -- holding the model's rows and
the baselines' rows. The card lists the training window and hashes, the features, the calibration and its effect
(log-loss before/after on its calibration rows, and honestly on the later half of them), the out-of-sample table
by regime next to the baselines, and the known limits (regimes without rows, thin regimes, regimes where the model
loses to the regime prior, calibration left at the identity).
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from regime_assets.spec import REGIMES

OVERALL = "overall"
BASELINES = ("baseline_prior", "baseline_regime_prior", "baseline_majority")
CARD_METRICS = ("log_loss", "balanced_accuracy", "accuracy", "rank_ic", "ic", "brier", "ece")
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece"})


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "—"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    ci = "" if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)) else f" [{_f(lo, 3)}, {_f(hi, 3)}]"
    return f"{_f(r.get('value'))}{ci}"


def _table(ev: pl.DataFrame, model: str, baselines: list[str], metric: str, regimes: list[str]) -> list[str]:
    cols = [model, *baselines]
    lines = [f"| regime | n | {' | '.join(cols)} |", "|---|---|" + "---|" * len(cols)]
    sub = ev.filter(pl.col("metric") == metric)
    for regime in regimes:
        cells, n = [], None
        for m in cols:
            hit = sub.filter((pl.col("model") == m) & (pl.col("regime") == regime))
            r = hit.row(0, named=True) if hit.height else None
            if m == model and r is not None and "n" in hit.columns:
                n = r.get("n")
            cells.append(_cell(r))
        lines.append(f"| {regime} | {_f(n)} | {' | '.join(cells)} |")
    return lines


def known_limits(evaluation: pl.DataFrame | None, model: str, min_rows: int, calibration: dict[str, Any] | None,
                 regimes: tuple[str, ...] = REGIMES) -> list[str]:
    """Plain sentences on what the evaluation cannot show or where the model is weak."""
    out: list[str] = []
    cal = calibration or {}
    if cal:
        method = cal.get("method")
        if method in (None, "none"):
            out.append(f"probabilities are not calibrated ({cal.get('status') or 'calibration disabled'})")
        lb, la = cal.get("late_log_loss_before"), cal.get("late_log_loss_after")
        if lb is not None and la is not None and la > lb:
            out.append(f"calibration fitted on the earlier half of its rows raised the later half's log-loss "
                       f"({_f(lb)} -> {_f(la)}): the map may not transfer")
    if evaluation is None or evaluation.height == 0:
        out.append("no out-of-sample evaluation yet")
        return out
    mine = evaluation.filter(pl.col("model") == model)
    if mine.height == 0:
        out.append(f"the evaluation holds no rows of {model}")
        return out
    present = set(mine["regime"].to_list())
    missing = [r for r in regimes if r not in present]
    if missing:
        out.append(f"no out-of-sample rows in regime(s) {', '.join(missing)}: nothing is known there")
    if "n" in mine.columns:
        thin = (mine.filter((pl.col("regime") != OVERALL) & (pl.col("n") < min_rows))
                .unique("regime").sort("regime"))
        for r in thin.iter_rows(named=True):
            out.append(f"regime {r['regime']}: only {r['n']} rows (< {min_rows}); its figures are noisy")
    prior = next((b for b in ("baseline_regime_prior", "baseline_prior") if
                  evaluation.filter(pl.col("model") == b).height), None)
    if prior is not None:
        ll = evaluation.filter(pl.col("metric") == "log_loss")
        a = ll.filter(pl.col("model") == model).select("regime", pl.col("value").alias("m"))
        b = ll.filter(pl.col("model") == prior).select("regime", pl.col("value").alias("p"))
        worse = a.join(b, on="regime").filter(pl.col("m") > pl.col("p")).sort("regime")
        for r in worse.iter_rows(named=True):
            out.append(f"{r['regime']}: log-loss {_f(r['m'])} above the {prior} {_f(r['p'])}")
    return out


def model_card(info: dict[str, Any], evaluation: pl.DataFrame | None = None, model: str | None = None,
               baselines: tuple[str, ...] = BASELINES, metrics: tuple[str, ...] = CARD_METRICS,
               min_rows: int = 200, decision: dict[str, Any] | None = None, evaluation_name: str = "validation",
               ) -> str:
    """The markdown card of one model version (see the module docstring)."""
    name = info.get("name") or model or "model"
    model = model or name
    feats = list(info.get("features") or [])
    cal = info.get("calibration") or {}
    lines = [f"# Model card: {name} {info.get('version', '')}".rstrip(), ""]
    lines += ["## Identity", "",
              f"- estimator: `{info.get('estimator', 'n/a')}`",
              f"- spec hash: `{info.get('spec_hash', 'n/a')}`; data hash: `{info.get('data_hash', 'n/a')}`",
              f"- training rows: {info.get('train_start', 'n/a')} .. {info.get('train_end', 'n/a')} "
              f"({_f(info.get('rows'))} rows: rolling window + archive events + replay buffer)"]
    if info.get("validation_start"):
        lines.append(f"- validation window: {info.get('validation_start')} .. {info.get('validation_end')}")
    if info.get("base_versions"):
        lines.append("- base models: " + ", ".join(f"{k} `{v}`" for k, v in sorted(info["base_versions"].items())))
    if info.get("libraries"):
        libs = info["libraries"]
        lines.append("- libraries: " + ", ".join(f"{k} {libs[k]}" for k in sorted(libs)))
    lines += ["", f"## Features ({len(feats)})", "",
              (", ".join(f"`{f}`" for f in feats[:200]) + (" ..." if len(feats) > 200 else "")) or "n/a", ""]
    lines += ["## Calibration", ""]
    if cal:
        lines.append(f"- method: {cal.get('method', 'none')} (requested {cal.get('requested', cal.get('method'))}; "
                     f"{cal.get('status', '')})")
        if cal.get("rows") is not None:
            lines.append(f"- calibration rows: {_f(cal.get('rows'))} natural rows of the training window from "
                         f"{cal.get('holdout_start', 'n/a')} (inner fit on rows before {cal.get('purge_start', 'n/a')})")
            lines.append(f"- log-loss on them: before {_f(cal.get('log_loss_before'))}, after "
                         f"{_f(cal.get('log_loss_after'))}, class prior {_f(cal.get('log_loss_prior'))}")
        if cal.get("anchored_to"):
            lines.append(f"- class bias anchored to the training window's class frequencies {cal['anchored_to']}")
        if cal.get("late_rows"):
            lines.append(f"- honest check (map fitted on the earlier half, scored on the later {cal['late_rows']} "
                         f"rows): before {_f(cal.get('late_log_loss_before'))}, after "
                         f"{_f(cal.get('late_log_loss_after'))}, prior {_f(cal.get('late_log_loss_prior'))}")
    else:
        lines.append("- none recorded")
    shr = info.get("regime_shrinkage")
    if shr:
        lam = shr.get("lambda") or {}
        lines.append("- regime shrinkage towards the regime prior (weights from the walk-forward's out-of-sample "
                     "rows before the training end): " + ", ".join(f"{r} {v:.2f}" for r, v in lam.items()))
    lines += ["", f"## Out-of-sample ({evaluation_name}) by regime, next to the baselines", ""]
    if evaluation is None or evaluation.height == 0:
        lines.append("_not evaluated yet: the card is completed when the version is registered_")
    else:
        ev = evaluation
        present_b = [b for b in baselines if ev.filter(pl.col("model") == b).height]
        regimes = [OVERALL, *REGIMES]
        for metric in metrics:
            if ev.filter((pl.col("metric") == metric) & (pl.col("model") == model)).height == 0:
                continue
            better = "lower" if metric in LOWER_IS_BETTER else "higher"
            lines += [f"**{metric}** ({better} is better; value [interval])", ""]
            lines += _table(ev, model, present_b, metric, regimes)
            lines.append("")
    if decision:
        lines += ["## Registry decision", "", f"- promoted: {bool(decision.get('promoted'))}",
                  f"- reason: {decision.get('reason', '')}", ""]
    lines += ["## Known limits", ""]
    limits = known_limits(evaluation, model, min_rows, cal)
    lines += [f"- {x}" for x in limits] or ["- none found"]
    return "\n".join(lines) + "\n"
