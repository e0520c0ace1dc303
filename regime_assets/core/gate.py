"""Promotion gate: a challenger replaces the champion only if it is better on the same validation rows.

Both evaluations are prediction frames on the validation rows (``date, regime, label, p_sell, p_hold, p_buy``
and a row key: ``row_id`` or ``symbol, date``). The gate runs a paired block bootstrap over dates
(``evaluation.paired_difference``) of ``gate.primary_metric`` with ``gate.bootstrap_reps`` replicates and states
every improvement as "higher is better" (for ``log_loss`` the sign is flipped: improvement = champion loss -
challenger loss). Promote only when

1. the challenger was trained on at least ``gate.min_samples`` rows,
2. the overall improvement is > 0 (whether its interval excludes 0 is reported, not required), and
3. in every regime with at least ``gate.min_regime_rows`` validation rows the improvement is >= ``-regime_margin``.

Without a champion the challenger is promoted (reason "no champion") provided rule 1 holds.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from regime_assets.core.evaluation import LOWER_IS_BETTER, OVERALL, paired_difference
from regime_assets.spec import EvaluationSpec, GateSpec

PER_REGIME_SCHEMA = {"regime": pl.Utf8, "n": pl.Int64, "n_dates": pl.Int64, "champion": pl.Float64,
                     "challenger": pl.Float64, "improvement": pl.Float64, "ci_low": pl.Float64,
                     "ci_high": pl.Float64, "checked": pl.Boolean, "passed": pl.Boolean}


def decide_promotion(challenger_eval: pl.DataFrame, champion_eval: pl.DataFrame | None, gspec: GateSpec,
                     n_train: int, espec: EvaluationSpec | None = None) -> dict[str, Any]:
    """Decision dict: promote, reasons, metric, overall_diff, ci, ci_excludes_zero, challenger/champion values,
    per_regime (frame ``regime, n, n_dates, champion, challenger, improvement, ci_low, ci_high, checked, passed``).

    ``espec`` supplies the bootstrap block length, confidence and seed (defaults: ``EvaluationSpec()``); the
    number of replicates is always ``gate.bootstrap_reps``.
    """
    metric = gspec.primary_metric
    espec = (espec or EvaluationSpec()).model_copy(update={"bootstrap_reps": gspec.bootstrap_reps, "min_rows": 1})
    reasons: list[str] = []
    enough = n_train >= gspec.min_samples
    if not enough:
        reasons.append(f"training rows {n_train} < min_samples {gspec.min_samples}")
    result: dict[str, Any] = {"promote": False, "reasons": reasons, "metric": metric, "overall_diff": None,
                              "ci": (None, None), "ci_excludes_zero": None, "challenger_value": None,
                              "champion_value": None, "per_regime": pl.DataFrame(schema=PER_REGIME_SCHEMA)}
    if champion_eval is None:
        if enough:
            reasons.append("no champion")
            result["promote"] = True
        return result

    paired = paired_difference(champion_eval, challenger_eval, metric, espec)  # b - a = challenger - champion
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    lo_col, hi_col = (("ci_high", "ci_low") if sign < 0 else ("ci_low", "ci_high"))
    per = paired.select(
        "regime", "n", "n_dates",
        pl.col("value_a").alias("champion"), pl.col("value_b").alias("challenger"),
        (pl.col("diff") * sign).alias("improvement"),
        (pl.col(lo_col) * sign).alias("ci_low"), (pl.col(hi_col) * sign).alias("ci_high"),
    )
    per = per.with_columns(checked=(pl.col("regime") != OVERALL) & (pl.col("n") >= gspec.min_regime_rows))
    per = per.with_columns(
        passed=pl.when(pl.col("checked")).then(pl.col("improvement").fill_null(0.0) >= -gspec.regime_margin)
        .otherwise(None))
    overall = per.filter(pl.col("regime") == OVERALL).row(0, named=True)
    diff = overall["improvement"]
    lo, hi = overall["ci_low"], overall["ci_high"]
    result.update(overall_diff=diff, ci=(lo, hi), challenger_value=overall["challenger"],
                  champion_value=overall["champion"], per_regime=per.cast(PER_REGIME_SCHEMA))
    excludes = None if lo is None or hi is None else bool(lo > 0 or hi < 0)
    result["ci_excludes_zero"] = excludes

    better = diff is not None and diff > 0
    ci_text = "n/a" if excludes is None else f"[{lo:+.4f}, {hi:+.4f}]"
    if better:
        reasons.append(f"{metric} improves by {diff:+.4f} overall (CI {ci_text}, "
                       f"{'excludes' if excludes else 'does not exclude'} 0)")
    else:
        reasons.append(f"{metric} does not improve overall ({'n/a' if diff is None else f'{diff:+.4f}'}, "
                       f"CI {ci_text})")
    failed = per.filter(pl.col("checked") & ~pl.col("passed"))
    for r in failed.iter_rows(named=True):
        reasons.append(f"regime {r['regime']}: {metric} worse by {-r['improvement']:.4f} "
                       f"> margin {gspec.regime_margin} ({r['n']} rows)")
    unchecked = per.filter(~pl.col("checked") & (pl.col("regime") != OVERALL))["regime"].to_list()
    if unchecked:
        reasons.append(f"regimes not checked (< {gspec.min_regime_rows} rows): {', '.join(unchecked)}")
    result["promote"] = bool(enough and better and failed.height == 0)
    return result
