"""Promotion gate on the walk-forward: a challenger is promoted only if it beats the baselines and the champion
on the same out-of-sample rows.

Inputs are walk-forward prediction frames (``symbol, date, regime, label, p_sell, p_hold, p_buy``) of the
challenger, the two baselines (``baseline_prior``, ``baseline_regime_prior``) and, when there is one, the champion's
recipe on the same folds. Every comparison is a paired block bootstrap over dates (``evaluation.paired_difference``,
``gate.bootstrap_reps`` replicates, block length and seed from ``evaluation``) and every improvement is stated as
"higher is better" (for a lower-is-better metric such as ``log_loss`` the sign is flipped).

Rules (all must hold; the reasons name each with its figures):

0. the challenger was trained on at least ``gate.min_samples`` rows;
a. it beats **both** baselines on ``gate.primary_metric``: the lower bound of the paired improvement's interval is
   above 0. The interval's level is ``gate.confidence``; when the challenger is the best of ``K`` candidates
   (``gate.challenger: best_model``) it is Bonferroni-adjusted to ``1 - (1 - confidence) / K`` (Holm's first step:
   the best of K must clear alpha / K), which corrects for picking the best;
b. its log-loss overall is no worse than the regime prior's (by at most ``gate.max_log_loss_excess``);
c. it beats the champion: improvement > 0 on the primary metric overall (the interval is reported). Without a
   champion the rule does not apply. When the champion's recipe hash equals the challenger's the two are the same
   recipe (the challenger is the champion retrained): a tie, decided by the stated rule that a retrained champion
   recipe is promoted when rules 0, a, b, d and e hold, so production follows the newest data;
d. in every regime with at least ``gate.min_regime_rows`` rows the improvement over the champion (over the regime
   prior when there is no champion or a tie) is at least ``-gate.regime_margin``;
e. in every regime with at least ``gate.min_regime_rows`` rows its log-loss is no worse than the regime prior's
   (by at most ``gate.regime_log_loss_margin``): probabilities a regime's own class frequencies beat are not
   promoted, whatever the primary metric says.

"No candidate beats the baselines" is a valid outcome: nothing is promoted and the reasons say why.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from regime_assets.core.evaluation import OVERALL, improvement_sign, paired_difference
from regime_assets.spec import EvaluationSpec, GateSpec

BASELINE_PRIOR = "baseline_prior"
BASELINE_REGIME_PRIOR = "baseline_regime_prior"
PER_REGIME_SCHEMA = {"regime": pl.Utf8, "against": pl.Utf8, "n": pl.Int64, "n_dates": pl.Int64,
                     "reference": pl.Float64, "challenger": pl.Float64, "improvement": pl.Float64,
                     "ci_low": pl.Float64, "ci_high": pl.Float64, "checked": pl.Boolean, "passed": pl.Boolean}
RULES_SCHEMA = {"rule": pl.Utf8, "passed": pl.Boolean, "against": pl.Utf8, "value": pl.Float64,
                "ci_low": pl.Float64, "ci_high": pl.Float64, "text": pl.Utf8}


def _f(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def improvement(reference: pl.DataFrame, challenger: pl.DataFrame, metric: str, espec: EvaluationSpec
                ) -> pl.DataFrame:
    """Per regime and overall: ``regime, n, n_dates, reference, challenger, improvement, ci_low, ci_high`` with
    improvement = challenger better than reference (sign flipped for lower-is-better metrics)."""
    paired = paired_difference(reference, challenger, metric, espec)  # value_b - value_a = challenger - reference
    sign = improvement_sign(metric)
    lo_col, hi_col = ("ci_high", "ci_low") if sign < 0 else ("ci_low", "ci_high")
    return paired.select(
        "regime", "n", "n_dates", pl.col("value_a").alias("reference"), pl.col("value_b").alias("challenger"),
        (pl.col("diff") * sign).alias("improvement"), (pl.col(lo_col) * sign).alias("ci_low"),
        (pl.col(hi_col) * sign).alias("ci_high"))


def _overall(t: pl.DataFrame) -> dict[str, Any]:
    return t.filter(pl.col("regime") == OVERALL).row(0, named=True)


def decide_promotion(challenger: pl.DataFrame, baselines: dict[str, pl.DataFrame], champion: pl.DataFrame | None,
                     gspec: GateSpec, n_train: int, espec: EvaluationSpec | None = None, *,
                     challenger_name: str = "challenger", n_candidates: int = 1, tie: bool = False,
                     champion_name: str | None = None) -> dict[str, Any]:
    """Decision dict: ``promote``, ``reasons`` (one sentence per rule), ``rules`` (frame), ``per_regime`` (frame),
    ``metric``, ``challenger_value``, ``champion_value``, ``overall_diff`` and ``ci`` (vs the champion, else vs the
    regime prior), ``confidence_a`` (the level of rule a's interval), ``correction``."""
    metric = gspec.primary_metric
    missing = [b for b in (BASELINE_PRIOR, BASELINE_REGIME_PRIOR) if b not in baselines]
    if missing:
        raise ValueError(f"gate: baseline predictions missing for {missing}")
    k = max(int(n_candidates), 1)
    base_espec = (espec or EvaluationSpec()).model_copy(
        update={"bootstrap_reps": gspec.bootstrap_reps, "min_rows": 1, "confidence": gspec.confidence})
    conf_a = 1.0 - (1.0 - gspec.confidence) / k
    a_espec = base_espec.model_copy(update={"confidence": conf_a})
    correction = (f"Bonferroni over {k} candidates (Holm's first step): rule a uses the {100 * conf_a:.2f} % "
                  f"interval" if k > 1 else f"one pre-specified challenger: rule a uses the "
                                            f"{100 * gspec.confidence:.0f} % interval")
    rules: list[dict[str, Any]] = []
    m_name = metric.replace("_", " ")

    # 0. training rows
    ok0 = n_train >= gspec.min_samples
    rules.append({"rule": "0 training rows", "passed": ok0, "against": None, "value": float(n_train),
                  "ci_low": None, "ci_high": None,
                  "text": f"rule 0 (training rows): {n_train} {'>=' if ok0 else '<'} gate.min_samples "
                          f"{gspec.min_samples} \u2014 {'passed' if ok0 else 'failed'}"})

    # a. both baselines, multiplicity-adjusted interval
    vs_base = {}
    for b in (BASELINE_PRIOR, BASELINE_REGIME_PRIOR):
        t = improvement(baselines[b], challenger, metric, a_espec)
        vs_base[b] = t
        o = _overall(t)
        ok = o["ci_low"] is not None and o["ci_low"] > 0
        rules.append({"rule": "a beats baselines", "passed": ok, "against": b, "value": o["improvement"],
                      "ci_low": o["ci_low"], "ci_high": o["ci_high"],
                      "text": f"rule a ({challenger_name} vs {b}): {m_name} {_f(o['challenger'], False)} vs "
                              f"{_f(o['reference'], False)}, improvement {_f(o['improvement'])}, "
                              f"{100 * conf_a:.2f} % interval [{_f(o['ci_low'])}, {_f(o['ci_high'])}]; lower bound "
                              f"{'>' if ok else '<='} 0 \u2014 {'passed' if ok else 'failed'} "
                              f"({o['n']} rows, {o['n_dates']} dates)"})

    # b. log-loss against the regime prior
    ll = improvement(baselines[BASELINE_REGIME_PRIOR], challenger, "log_loss", base_espec)
    o = _overall(ll)
    okb = o["challenger"] is not None and o["reference"] is not None and \
        o["challenger"] <= o["reference"] + gspec.max_log_loss_excess
    rules.append({"rule": "b log-loss vs regime prior", "passed": okb, "against": BASELINE_REGIME_PRIOR,
                  "value": o["challenger"], "ci_low": o["ci_low"], "ci_high": o["ci_high"],
                  "text": f"rule b (log-loss overall): {challenger_name} {_f(o['challenger'], False)} vs regime "
                          f"prior {_f(o['reference'], False)} (allowed excess {gspec.max_log_loss_excess}; "
                          f"improvement {_f(o['improvement'])}, interval [{_f(o['ci_low'])}, {_f(o['ci_high'])}])"
                          f" \u2014 {'passed' if okb else 'failed'}"})

    # c. the champion
    vs_champ = None
    result_diff, result_ci, champ_value = None, (None, None), None
    if champion is None:
        rules.append({"rule": "c beats champion", "passed": True, "against": None, "value": None, "ci_low": None,
                      "ci_high": None, "text": "rule c (champion): no champion with walk-forward predictions "
                                               "\u2014 does not apply"})
    elif tie:
        rules.append({"rule": "c beats champion", "passed": True, "against": champion_name, "value": 0.0,
                      "ci_low": None, "ci_high": None,
                      "text": f"rule c (champion {champion_name}): tie \u2014 the champion's recipe hash equals the "
                              f"challenger's (the same recipe retrained); stated rule: a retrained champion recipe "
                              f"is promoted when rules 0, a, b, d and e hold \u2014 passed"})
    else:
        vs_champ = improvement(champion, challenger, metric, base_espec)
        oc = _overall(vs_champ)
        okc = oc["improvement"] is not None and oc["improvement"] > 0
        result_diff, result_ci, champ_value = oc["improvement"], (oc["ci_low"], oc["ci_high"]), oc["reference"]
        rules.append({"rule": "c beats champion", "passed": okc, "against": champion_name, "value": oc["improvement"],
                      "ci_low": oc["ci_low"], "ci_high": oc["ci_high"],
                      "text": f"rule c ({challenger_name} vs champion {champion_name}): {m_name} "
                              f"{_f(oc['challenger'], False)} vs {_f(oc['reference'], False)}, improvement "
                              f"{_f(oc['improvement'])} {'>' if okc else '<='} 0 (interval [{_f(oc['ci_low'])}, "
                              f"{_f(oc['ci_high'])}]) \u2014 {'passed' if okc else 'failed'}"})

    # d. every regime with enough rows
    against = champion_name if vs_champ is not None else BASELINE_REGIME_PRIOR
    ref = vs_champ if vs_champ is not None else improvement(baselines[BASELINE_REGIME_PRIOR], challenger, metric,
                                                            base_espec)
    per = ref.with_columns(pl.lit(against).alias("against"),
                           checked=(pl.col("regime") != OVERALL) & (pl.col("n") >= gspec.min_regime_rows))
    per = per.with_columns(passed=pl.when(pl.col("checked")).then(
        pl.col("improvement").fill_null(0.0) >= -gspec.regime_margin).otherwise(None))
    per = per.select(list(PER_REGIME_SCHEMA)).cast(PER_REGIME_SCHEMA)
    failed = per.filter(pl.col("checked") & ~pl.col("passed"))
    checked = per.filter(pl.col("checked"))
    unchecked = per.filter(~pl.col("checked") & (pl.col("regime") != OVERALL))
    okd = failed.height == 0
    parts = [f"{r['regime']} {_f(r['improvement'])} ({r['n']} rows)" for r in checked.iter_rows(named=True)]
    text = (f"rule d (every regime with >= {gspec.min_regime_rows} rows, vs {against}, margin "
            f"{gspec.regime_margin}): " + (", ".join(parts) if parts else "no regime has enough rows"))
    if unchecked.height:
        text += "; not checked (too few rows): " + ", ".join(
            f"{r['regime']} ({r['n']} rows)" for r in unchecked.iter_rows(named=True))
    if failed.height:
        text += "; worse than the margin in " + ", ".join(failed["regime"].to_list())
    rules.append({"rule": "d regimes", "passed": okd, "against": against, "value": None, "ci_low": None,
                  "ci_high": None, "text": text + f" \u2014 {'passed' if okd else 'failed'}"})

    # e. log-loss in every regime with enough rows against the regime prior
    lr = ll.filter((pl.col("regime") != OVERALL) & (pl.col("n") >= gspec.min_regime_rows))
    bad_e = lr.filter(pl.col("challenger").is_null() | pl.col("reference").is_null()
                      | (pl.col("challenger") > pl.col("reference") + gspec.regime_log_loss_margin))
    oke = bad_e.height == 0
    parts_e = [f"{r['regime']} {_f(r['challenger'], False)} vs {_f(r['reference'], False)} ({r['n']} rows)"
               for r in lr.iter_rows(named=True)]
    text_e = (f"rule e (log-loss in every regime with >= {gspec.min_regime_rows} rows vs the regime prior, allowed "
              f"excess {gspec.regime_log_loss_margin}): " + (", ".join(parts_e) if parts_e else
                                                              "no regime has enough rows"))
    if bad_e.height:
        text_e += "; worse than the regime prior in " + ", ".join(bad_e["regime"].to_list())
    rules.append({"rule": "e regime log-loss", "passed": oke, "against": BASELINE_REGIME_PRIOR,
                  "value": None, "ci_low": None, "ci_high": None,
                  "text": text_e + f" \u2014 {'passed' if oke else 'failed'}"})

    promote = all(r["passed"] for r in rules)
    if result_diff is None:
        o = _overall(vs_base[BASELINE_REGIME_PRIOR])
        result_diff, result_ci = o["improvement"], (o["ci_low"], o["ci_high"])
    overall_challenger = _overall(vs_base[BASELINE_PRIOR])["challenger"]
    return {"promote": bool(promote), "reasons": [r["text"] for r in rules],
            "rules": pl.DataFrame(rules, schema=RULES_SCHEMA), "per_regime": per, "metric": metric,
            "challenger_value": overall_challenger, "champion_value": champ_value, "overall_diff": result_diff,
            "ci": result_ci, "ci_excludes_zero": None if result_ci[0] is None else bool(result_ci[0] > 0),
            "confidence_a": conf_a, "correction": correction, "tie": bool(tie)}


def no_candidate_text(decision: dict[str, Any], challenger_name: str) -> str:
    """The plain sentence for a refusal: which rules failed."""
    failed = decision["rules"].filter(~pl.col("passed"))["rule"].unique(maintain_order=True).to_list()
    return f"nothing promoted: {challenger_name} fails rule(s) {', '.join(failed)}"
