"""Group `evaluation`: validation predictions, per-regime and per-segment results with intervals, the
walk-forward backtest, the promotion gate and registry, the production model, and SHAP per regime."""


import datetime as dt
import json

import numpy as np
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    asset_check,
    multi_asset,
)

from regime_assets.assets._meta import md, num, plot_md
from regime_assets.assets.state import production_model as load_production, production_record
from regime_assets.assets.training import freeze_metadata, memo_metadata, memo_store, thaw_metadata
from regime_assets.core import model_card as card_core
from regime_assets.core import models as model_core
from regime_assets.core.memo import memo_key, schema_rows_hash
from regime_assets.core import registry
from regime_assets.core import evaluation as ev
from regime_assets.rendering import plots
from regime_assets.assets.walk_forward import (
    PREDICTIONS,
    champion_recipe,
    fold_store,
    read_predictions,
    walk_forward,
    walk_forward_evaluation,
)
from regime_assets.core.gate import decide_promotion, no_candidate_text
from regime_assets.core.shap_tables import regime_comparison, shap_importance as shap_core
from regime_assets.core.walk_forward import BASELINES, CHAMPION, META_MODEL, build_recipe
from regime_assets.resources.settings import RegimeSettings
from regime_assets.resources.warehouse import APPEND_KEY
from regime_assets.spec import REGIMES, Spec

OWNERS = ["team:quant-research"]
GROUP = "evaluation"
KINDS = {"polars", "duckdb"}
KEEP = ["symbol", "date", "sector", "regime", "label", "fwd_return"]
REGISTRY_SCHEMA = registry.REGISTRY_SCHEMA


def _load_models(settings: RegimeSettings, records: dict[str, pl.DataFrame]) -> dict[str, object]:
    """{asset name: registered model} of the versions the records name (one loader for every kind)."""
    out = {}
    for key, rec in records.items():
        row = rec.row(0, named=True)
        out[key] = registry.load_registered_model(settings.model_store, row["model_name"], row["version"])
    return out


def _versions(records: dict[str, pl.DataFrame]) -> dict[str, str]:
    """{asset name: the model version its record names}."""
    return {k: rec.row(0, named=True)["version"] for k, rec in records.items()}


def _predict(models: dict[str, object], rows: pl.DataFrame) -> pl.DataFrame:
    base = rows.select([c for c in KEEP if c in rows.columns]).with_row_index("row_id")
    frames = []
    for name, model in models.items():
        p = np.asarray(model.predict_proba(rows))
        frames.append(base.with_columns(pl.lit(name).alias("model"), pl.Series("p_sell", p[:, 0]),
                                        pl.Series("p_hold", p[:, 1]), pl.Series("p_buy", p[:, 2])))
    return pl.concat(frames, how="vertical_relaxed")


def evaluation_assets(spec: Spec) -> list:
    model_keys = [f"model_{m.name}" for m in spec.enabled_models]
    ins = {k: AssetIn(k) for k in [*model_keys, "meta_learner"]}

    @asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, ins=ins, pool="warehouse",
           description="Class probabilities of every model and the meta-learner on the validation block (the "
                       "same rows for all), the input of every evaluation below.")
    def validation_predictions(context: AssetExecutionContext, settings: RegimeSettings,
                               regime_validation_sets: pl.DataFrame, **records: pl.DataFrame) -> Output[pl.DataFrame]:
        rows = regime_validation_sets.filter(pl.col("label").is_not_null()).sort("symbol", "date")
        # model versions are content-keyed: the same versions on the same rows predict the same probabilities
        key = memo_key("validation_predictions", versions=_versions(records), rows=schema_rows_hash(rows),
                       keep=KEEP)
        out, reused = memo_store(settings).frame(
            "validation_predictions", key, lambda: _predict(_load_models(settings, records), rows))
        return Output(out, metadata={"rows": num(out.height), "models": num(len(records)),
                                     "validation_rows": num(rows.height),
                                     "spec_hash": MetadataValue.text(settings.spec.spec_hash),
                                     **memo_metadata(reused, key)})

    return [validation_predictions, regime_evaluation, segment_evaluation, walk_forward, walk_forward_evaluation,
            promotion, production_model, shap_importance_factory(spec)]


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse",
       description="Per model (and the meta-learner) x regime and overall: n, accuracy, balanced accuracy, "
                   "macro-F1, log-loss and the information coefficient, with 95 % intervals from a stationary "
                   "block bootstrap over dates; baselines (majority class, regime-conditional prior) in the same "
                   "table.")
def regime_evaluation(context: AssetExecutionContext, settings: RegimeSettings,
                      validation_predictions: pl.DataFrame, training_set: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    train = training_set.filter(pl.col("split") == "train").select("label", "regime")
    # a seeded bootstrap: a deterministic function of the predictions, the training rows' labels and the spec
    key = memo_key("regime_evaluation", predictions=schema_rows_hash(validation_predictions),
                   train=schema_rows_hash(train), evaluation=spec.evaluation)
    long, reused = memo_store(settings).frame(
        "regime_evaluation", key, lambda: ev.regime_metrics_with_ci(validation_predictions, spec.evaluation,
                                                                    train=train))
    wide = ev.metrics_wide(long)
    meta: dict = {"rows": num(long.height), "spec_hash": MetadataValue.text(spec.spec_hash),
                  **memo_metadata(reused, key)}
    primary = spec.gate.primary_metric
    overall = long.filter((pl.col("regime") == "overall") & (pl.col("metric") == primary))
    best = (overall.filter(~pl.col("model").str.starts_with("baseline") & (pl.col("model") != "meta_learner"))
            .sort("value", descending=primary != "log_loss").head(1))
    best_name = best["model"][0] if best.height else None
    show = ["meta_learner", *([best_name] if best_name else []), ev.BASELINE_MAJORITY, ev.BASELINE_REGIME_PRIOR]
    table = (long.filter(pl.col("model").is_in(show) & pl.col("metric").is_in([primary, "accuracy", "ic"]))
             .select("model", "regime", "metric", "n", "value", "ci_low", "ci_high"))
    meta["headline"] = md(table.sort("metric", "regime", "model"), 80)
    meta["best_single_model"] = MetadataValue.text(str(best_name))
    for r in overall.iter_rows(named=True):
        meta[f"{r['model']}_{primary}"] = num(r["value"])
    for regime in ["overall", *REGIMES]:
        v = long.filter((pl.col("model") == "meta_learner") & (pl.col("regime") == regime)
                        & (pl.col("metric") == primary))
        if v.height:
            meta[f"meta_{primary}_{regime}"] = num(v["value"][0])
    meta["all_models"] = md(wide, 80) if wide.height else md(long, 40)
    meta["metric_bars"] = plot_md(plots.png_markdown(
        plots.regime_metric_bars(long.filter(pl.col("model").is_in(show)), primary),
        f"{primary} per regime with 95% CI"))
    return Output(long, metadata=meta)


@asset_check(asset=regime_evaluation, description="Every interval contains its point estimate.")
def intervals_contain_estimates(regime_evaluation: pl.DataFrame) -> AssetCheckResult:
    bad = regime_evaluation.filter(pl.col("ci_low").is_not_null() & pl.col("value").is_not_nan() & (
        (pl.col("ci_low") > pl.col("value") + 1e-9) | (pl.col("ci_high") < pl.col("value") - 1e-9)))
    return AssetCheckResult(passed=bad.height == 0, severity=AssetCheckSeverity.WARN,
                            metadata={"bad_rows": num(bad.height)})


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse",
       description="Headline metrics per sector and per symbol for every model on the validation block.")
def segment_evaluation(context: AssetExecutionContext, settings: RegimeSettings,
                       validation_predictions: pl.DataFrame) -> Output[pl.DataFrame]:
    by_sector = ev.segment_metrics(validation_predictions, "sector").rename({"sector": "segment"}).with_columns(
        pl.lit("sector").alias("segment_type"))
    by_symbol = ev.segment_metrics(validation_predictions, "symbol").rename({"symbol": "segment"}).with_columns(
        pl.lit("symbol").alias("segment_type"))
    out = pl.concat([by_sector, by_symbol], how="vertical_relaxed")
    meta_rows = out.filter(pl.col("model") == "meta_learner") if "model" in out.columns else out
    return Output(out, metadata={
        "rows": num(out.height), "meta_learner_by_sector": md(meta_rows.filter(pl.col("segment_type") == "sector")),
        "meta_learner_by_symbol": md(meta_rows.filter(pl.col("segment_type") == "symbol"), 40)})


def _gate_inputs(settings: RegimeSettings, evaluation: pl.DataFrame) -> tuple[str, int]:
    """(challenger candidate, number of candidates it was chosen from) per ``gate.challenger``."""
    spec = settings.spec
    if spec.gate.challenger == "meta_learner":
        return META_MODEL, 1
    primary = spec.gate.primary_metric
    names = [m.name for m in spec.enabled_models]
    o = evaluation.filter((pl.col("table") == "metrics") & (pl.col("regime") == "overall")
                          & (pl.col("year") == "all") & (pl.col("metric") == primary) & pl.col("model").is_in(names)
                          & pl.col("value").is_not_null())
    if o.height == 0:
        raise RuntimeError(f"gate: no walk-forward {primary} for any of the models {names}")
    return o.sort("value", descending=primary not in ev.LOWER_IS_BETTER)["model"][0], len(names)


def _write_card(settings: RegimeSettings, model_name: str, version: str | None, regime_evaluation: pl.DataFrame,
                extra: dict, decision: dict) -> str | None:
    """The registered version's card (its stored metadata + the validation table by regime next to the baselines),
    rewritten into the model store beside meta.json; None when the version is not in the store."""
    if version is None:
        return None
    store = settings.model_store
    try:
        info = store.meta(model_name, version)
    except Exception:  # a version the store does not hold: no card to write
        return None
    ev = regime_evaluation.filter(pl.col("model").is_in([model_name, *card_core.BASELINES]))
    card = card_core.model_card({**info, **extra}, ev, model=model_name, min_rows=settings.spec.gate.min_regime_rows,
                                decision=decision, evaluation_name="walk-forward (out of sample, purged folds)")
    registry.write_card(store, model_name, version, card)
    return card


@multi_asset(
    outs={
        "promotion_decision": AssetOut(group_name=GROUP, owners=OWNERS, kinds=KINDS,
                                       description="The gate on the walk-forward, paired on the same out-of-sample "
                                                   "rows: promote only if the challenger beats both baselines "
                                                   "(interval's lower bound above 0, corrected for a best-of-K "
                                                   "choice), its log-loss is no worse than the regime prior's, it "
                                                   "beats the champion's recipe and loses no regime with enough "
                                                   "rows by more than the margin. Nothing promoted is a valid "
                                                   "outcome; the reason names every rule with its figures."),
        "model_versions": AssetOut(group_name=GROUP, owners=OWNERS, kinds=KINDS, metadata={
            APPEND_KEY: ["model_name", "version"]},
            description="The registry: one row per decided model version (spec hash, data hash, metrics, "
                        "promoted, reason). Append-only; versions are never overwritten."),
    },
    ins={"meta_learner": AssetIn("meta_learner"), "walk_forward_evaluation": AssetIn("walk_forward_evaluation")},
    deps=[PREDICTIONS],
    name="promotion", pool="warehouse",
)
def promotion(context: AssetExecutionContext, settings: RegimeSettings, training_set: pl.DataFrame,
              meta_learner: pl.DataFrame, walk_forward_evaluation: pl.DataFrame):
    spec = settings.spec
    primary = spec.gate.primary_metric
    name, k = _gate_inputs(settings, walk_forward_evaluation)
    store = fold_store(settings)
    champ_rec, _, champ_hash = champion_recipe(settings, store)
    current = build_recipe(spec, with_arms=False).hashes
    want = [name, *BASELINES]
    champ_model = None
    if champ_rec is not None and champ_hash is not None:
        cand = str(champ_rec["model_name"]).removeprefix("model_")
        champ_model = cand if current.get(cand) == champ_hash else CHAMPION
        want.append(champ_model)
    preds = read_predictions(settings, list(dict.fromkeys(want)))
    champ = preds.get(champ_model) if champ_model is not None else None
    if champ is not None and champ.height == 0:
        champ = None
    tie = champ is not None and current.get(name) == champ_hash
    n_train = int((training_set["split"] == "train").sum())
    decision = decide_promotion(preds[name], {b: preds[b] for b in BASELINES}, champ, spec.gate, n_train,
                                spec.evaluation, challenger_name=name, n_candidates=k, tie=tie,
                                champion_name=None if champ_rec is None else champ_rec["model_name"])
    if champ_rec is not None and champ is None:
        decision["reasons"].insert(0, f"champion {champ_rec['model_name']} {champ_rec['version']} has no walk-forward "
                                      f"predictions (its spec is not in the fold store's recipe index)")
    reason = "; ".join(decision["reasons"])
    if not decision["promote"]:
        reason = no_candidate_text(decision, name) + " \u2014 " + reason
    model_name = META_MODEL if name == META_MODEL else f"model_{name}"
    # the version this run stored (the meta-learner record names every base version it combined)
    version = registry.model_version_of(model_name, meta_learner) or settings.model_store.latest(model_name)
    train_rows = training_set.filter(pl.col("split") == "train")
    val = training_set.filter((pl.col("split") == "validation") & pl.col("label").is_not_null())
    overall = walk_forward_evaluation.filter((pl.col("table") == "metrics") & (pl.col("model") == name)
                                             & (pl.col("regime") == "overall") & (pl.col("year") == "all"))
    metrics = {r["metric"]: r["value"] for r in overall.iter_rows(named=True)}
    now = dt.datetime.now(dt.UTC)
    decision_row = pl.DataFrame([{
        "challenger": model_name, "challenger_version": version, "primary_metric": primary,
        "challenger_score": decision["challenger_value"],
        "champion": None if champ_rec is None else champ_rec["model_name"],
        "champion_version": None if champ_rec is None else champ_rec["version"],
        "champion_score": decision["champion_value"], "improvement": decision["overall_diff"],
        "ci_low": decision["ci"][0], "ci_high": decision["ci"][1], "promoted": bool(decision["promote"]),
        "reason": reason, "metrics": json.dumps(metrics), "decided_at": now, "n_train": n_train,
        "candidates": k, "correction": decision["correction"], "tie": decision["tie"],
        "challenger_recipe": current.get(name), "champion_recipe": champ_hash,
    }])
    registry_row = pl.DataFrame([{
        "model_name": model_name, "version": version, "created_at": now, "spec_hash": spec.spec_hash,
        "data_hash": meta_learner["data_hash"][0], "metrics": json.dumps(metrics),
        "promoted": bool(decision["promote"]), "reason": reason, "as_of": training_set["date"].max(),
        "train_start": train_rows["date"].min(), "train_end": train_rows["date"].max(),
        "validation_start": val["date"].min(), "validation_end": val["date"].max(),
        "features": meta_learner["features"][0], "run_id": context.run.run_id,
    }], schema=REGISTRY_SCHEMA)
    wf_table = (walk_forward_evaluation.filter((pl.col("table") == "metrics") & (pl.col("year") == "all")
                                               & pl.col("model").is_in([name, *BASELINES]))
                .with_columns(pl.when(pl.col("model") == name).then(pl.lit(model_name)).otherwise(pl.col("model"))
                              .alias("model")))
    card = _write_card(settings, model_name, version, wf_table, {
        "validation_start": str(val["date"].min()), "validation_end": str(val["date"].max())},
        {"promoted": bool(decision["promote"]), "reason": reason})
    yield Output(decision_row, output_name="promotion_decision", metadata={
        "promoted": MetadataValue.bool(bool(decision["promote"])), "reason": MetadataValue.text(reason),
        "rules": md(decision["rules"].select("rule", "passed", "against", "value", "ci_low", "ci_high")),
        "reasons": MetadataValue.md("\n".join(f"- {r}" for r in decision["reasons"])),
        "challenger": MetadataValue.text(f"{model_name} {version} (best of {k})" if k > 1 else
                                         f"{model_name} {version}"),
        "champion": MetadataValue.text("none" if champ_rec is None else
                                       f"{champ_rec['model_name']} {champ_rec['version']}"),
        "correction": MetadataValue.text(decision["correction"]),
        "primary_metric": MetadataValue.text(primary),
        "improvement": num(decision["overall_diff"]), "per_regime": md(decision["per_regime"]),
    })
    yield Output(registry_row, output_name="model_versions", metadata={
        "version": MetadataValue.text(str(version)), "model": MetadataValue.text(model_name),
        "model_card": MetadataValue.md(card or "_no card: the version is not in the model store_")})


@asset(group_name=GROUP, owners=OWNERS, kinds=KINDS, pool="warehouse",
       deps=["model_versions"],
       description="The current production model: the registry's latest promoted version (one row), with its "
                   "training and validation windows; the replay buffer and drift report read it. When nothing was "
                   "ever promoted it is one row with model_name 'none' and the reason.")
def production_model(context: AssetExecutionContext, settings: RegimeSettings,
                     promotion_decision: pl.DataFrame) -> Output[pl.DataFrame]:
    rec = production_record(settings)
    d = promotion_decision.row(0, named=True)
    if rec is None:
        out = pl.DataFrame([{"model_name": "none", "promoted": False,
                             "reason": f"no production model: {d.get('reason')}", "evaluated_as": "none"}],
                           schema={**REGISTRY_SCHEMA, "evaluated_as": pl.Utf8})
        return Output(out, metadata={"model": MetadataValue.text("none: no candidate was ever promoted"),
                                     "promoted_this_run": MetadataValue.bool(False),
                                     "reason": MetadataValue.text(str(d.get("reason")))})
    rec = {k: rec.get(k) for k in REGISTRY_SCHEMA}
    rec["features"] = json.dumps(rec["features"]) if isinstance(rec["features"], list) else rec["features"]
    evaluated = str(rec["model_name"]).removeprefix("model_")
    out = pl.DataFrame([rec], schema=REGISTRY_SCHEMA).with_columns(pl.lit(evaluated).alias("evaluated_as"))
    try:
        card = registry.read_card(settings.model_store, rec["model_name"], rec["version"])
    except Exception:  # an older version without a card, or one no longer in the store
        card = None
    return Output(out, metadata={
        "model_card": MetadataValue.md(card or "_no card stored for this version_"),
        "model": MetadataValue.text(f"{rec['model_name']} {rec['version']}"),
        "promoted_this_run": MetadataValue.bool(bool(d.get("promoted"))),
        "this_run": MetadataValue.text(str(d.get("reason"))),
        "reason": MetadataValue.text(str(rec["reason"])),
        "spec_hash": MetadataValue.text(str(rec["spec_hash"])),
        "metrics": MetadataValue.json(json.loads(rec["metrics"] or "{}")),
    })


def shap_importance_factory(spec: Spec):
    model_keys = [f"model_{m.name}" for m in spec.enabled_models]
    kinds = {f"model_{m.name}": m.shap for m in spec.enabled_models}

    @asset(name="shap_importance", group_name=GROUP, owners=OWNERS, kinds={"shap", "duckdb"}, pool="warehouse",
           ins={k: AssetIn(k) for k in model_keys},
           description="Per model x regime: mean |SHAP| per feature and its rank on a bounded, seeded sample of "
                       "validation rows (TreeExplainer for trees, LinearExplainer for linear models, a permutation "
                       "explainer on a small sample for the SVM and MLP); a status row per model x regime.")
    def shap_importance(context: AssetExecutionContext, settings: RegimeSettings,
                        regime_validation_sets: pl.DataFrame, **records: pl.DataFrame) -> Output[pl.DataFrame]:
        sspec = settings.spec.shap
        memo = memo_store(settings)
        frames = {r: regime_validation_sets.filter(pl.col("regime") == r) for r in REGIMES}
        rows = schema_rows_hash(*frames.values())
        libs = model_core.library_versions()
        tables, statuses, reused, mkeys = [], [], {}, []
        for key, version in _versions(records).items():
            # per model: its (content-keyed) version, its explainer, the validation rows and the shap spec
            mkey = memo_key("shap", model=key, version=version, kind=kinds.get(key), shap=sspec, rows=rows,
                            libraries=libs)
            mkeys.append(mkey)
            hit = memo.get("shap", mkey)
            if hit is not None:
                t, s = hit.frames["table"], hit.frames["status"]
            else:
                fitted = registry.load_registered_model(settings.model_store, key, version)
                t, s = shap_core(fitted.model, frames, sspec, kinds.get(key))
                memo.put("shap", mkey, {"table": t, "status": s}, {"model": key, "version": version})
            reused[key] = hit is not None
            tables.append(t)
            statuses.append(s)
        models = records
        table = pl.concat(tables, how="vertical_relaxed")
        status = pl.concat(statuses, how="vertical_relaxed")
        # the metadata (comparison, plots) is a function of the tables: kept under the models' keys too
        meta_key = memo_key("shap_metadata", models=mkeys, top_k=sspec.top_k)
        meta_hit = memo.get("shap_metadata", meta_key) if all(reused.values()) else None
        if meta_hit is not None:
            meta = thaw_metadata(meta_hit.info["metadata"])
            meta.update(reused=MetadataValue.bool(True), reused_models=MetadataValue.json(reused))
            return Output(table, metadata=meta)
        comp = regime_comparison(table, sspec.top_k)
        top = table.filter(pl.col("rank") <= 5).sort("model", "regime", "rank")
        meta = {
            "rows": num(table.height), "status": md(status, 60), "regime_comparison": md(comp, 40),
            "top5_per_model_regime": md(top, 80),
            "seconds_total": num(round(float(status["seconds"].sum()), 2)),
            "reused": MetadataValue.bool(bool(reused) and all(reused.values())),
            "reused_models": MetadataValue.json(reused),
        }
        for key in models:
            name = key.removeprefix("model_")
            meta[f"plot_{name}"] = plot_md(plots.png_markdown(plots.shap_top_features_plot(
                table, name if table.filter(pl.col("model") == name).height else key, sspec.top_k),
                f"SHAP top features per regime: {name}"))
        memo.put("shap_metadata", meta_key, {}, {"metadata": freeze_metadata(meta)})
        return Output(table, metadata=meta)

    return shap_importance
