"""Group `training`: one asset per model in the spec (built by one factory) and the meta-learner."""


import datetime as dt
import json
import time

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, RetryPolicy, asset

from regime_assets.assets.shrinkage import production_shrinkage
from regime_assets.assets._meta import md, num, plot_md
from regime_assets.core import calibration as cal_core
from regime_assets.core import model_card as card_core
from regime_assets.core import models as model_core
from regime_assets.core import registry
from regime_assets.core.ensemble import fit_meta, meta_oof
from regime_assets.core.memo import Entry, Memo, memo_key
from regime_assets.rendering import calibration as cal_plots
from regime_assets.resources.settings import RegimeSettings
from regime_assets.spec import CLASSES, ModelSpec, Spec

OWNERS = ["team:ml-engineering"]
GROUP = "training"
RECORD_SCHEMA = registry.MODEL_RECORD_SCHEMA


def memo_store(settings: RegimeSettings) -> Memo:
    """The home's content-keyed memo (``memo/``), or one that keeps nothing when ``memo.enabled`` is off."""
    return Memo(settings.home_path / "memo" if settings.spec.memo.enabled else None)


def reused_version(memo: Memo, kind: str, key: str, store, name: str) -> Entry | None:
    """The memo entry of a fit with ``key`` whose model version is still complete in the model store, else None
    (a version that is gone, or a store elsewhere, means a new fit)."""
    hit = memo.get(kind, key)
    if hit is None:
        return None
    try:
        meta = store.meta(name, hit.info.get("version"))
    except Exception:  # noqa: BLE001 - not in this store (removed, another root): fit again
        return None
    if meta.get("memo_key") != key:
        return None
    return hit


_METADATA_TYPES = {"TextMetadataValue": MetadataValue.text, "MarkdownMetadataValue": MetadataValue.md,
                   "JsonMetadataValue": MetadataValue.json, "FloatMetadataValue": MetadataValue.float,
                   "IntMetadataValue": MetadataValue.int, "BoolMetadataValue": MetadataValue.bool}


def freeze_metadata(meta: dict) -> dict:
    """Asset metadata as JSON ({key: [type, value]}) for a memo entry; ``thaw_metadata`` is its inverse."""
    out = {}
    for k, v in meta.items():
        t = type(v).__name__
        out[k] = [t, v.value] if t in _METADATA_TYPES else ["TextMetadataValue", str(getattr(v, "value", v))]
    return out


def thaw_metadata(frozen: dict) -> dict:
    return {k: _METADATA_TYPES[t](v) for k, (t, v) in frozen.items()}


def _scalars(report: dict) -> dict:
    """The JSON-scalar entries of a calibration report (what its metadata shows)."""
    return {k: (float(v) if isinstance(v, float) else v) for k, v in (report or {}).items()
            if isinstance(v, (str, int, float, bool)) or v is None}


def memo_metadata(reused: bool, key: str, key_seconds: float | None = None) -> dict:
    out = {"reused": MetadataValue.bool(reused), "memo_key": MetadataValue.text(key)}
    if key_seconds is not None:
        out["memo_key_seconds"] = num(round(key_seconds, 3))
    return out


def _record(**kw) -> pl.DataFrame:
    return registry.model_record(**kw)


def _train_frame(balanced: pl.DataFrame, weights: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    joined = balanced.join(weights.select("row_id", "weight"), on="row_id", how="inner").sort("row_id")
    if joined.height != balanced.height:
        raise ValueError(f"sample_weights covers {joined.height} of {balanced.height} balanced rows")
    return joined.drop("weight"), joined["weight"].to_numpy()


def natural_rows(training_set: pl.DataFrame) -> pl.DataFrame:
    """The training window's own rows as they occur (train split, source window, labelled): the calibration and
    out-of-fold rows, with a row_id that every model asset assigns the same way."""
    nat = training_set.filter((pl.col("split") == "train") & (pl.col("source") == "window")
                              & pl.col("label").is_not_null())
    return nat.sort("symbol", "date").with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))


def _oof_metrics(oof: pl.DataFrame) -> dict[str, float]:
    from regime_assets.core.evaluation import metrics

    if oof.height == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "log_loss": float("nan")}
    y = model_core.encode_labels(oof["label"])
    proba = oof.select("p_sell", "p_hold", "p_buy").to_numpy()
    return metrics(y, proba)


def calibration_metadata(oof: pl.DataFrame, report: dict, bins: int, title: str) -> dict:
    """Metadata of a model's calibration: report, reliability tables before/after on its OOF rows, the diagram."""
    meta: dict = {"calibration": MetadataValue.json({k: v for k, v in report.items()
                                                     if isinstance(v, (str, int, float, bool)) or v is None})}
    if oof.height == 0:
        return meta
    y = model_core.encode_labels(oof["label"])
    after = oof.select(model_core.PROBA_COLUMNS).to_numpy()
    raw_cols = [c for c in model_core.RAW_COLUMNS if c in oof.columns]
    tables = {"after": cal_core.reliability_table(y, after, bins)}
    if len(raw_cols) == len(model_core.RAW_COLUMNS):
        tables = {"before": cal_core.reliability_table(y, oof.select(raw_cols).to_numpy(), bins), **tables}
    ece = pl.concat([cal_core.expected_calibration_error(t).with_columns(pl.lit(k).alias("curve"))
                     for k, t in tables.items()]).select("curve", "class", "n", "ece")
    meta["expected_calibration_error"] = md(ece)
    meta["reliability_table"] = md(pl.concat([t.with_columns(pl.lit(k).alias("curve")) for k, t in tables.items()])
                                   .filter(pl.col("n") > 0), 60)
    meta["reliability_diagram"] = plot_md(cal_plots.png_markdown(cal_plots.reliability_diagram(tables, title),
                                                                  title))
    for k in ("log_loss_before", "log_loss_after", "log_loss_prior", "late_log_loss_before", "late_log_loss_after"):
        if k in report:
            meta[f"calibration_{k}"] = num(report[k])
    return meta


def build_model_asset(mspec: ModelSpec):
    """One asset per model spec: fit with sample weights + honest out-of-fold predictions; a new store version."""

    @asset(
        name=f"model_{mspec.name}", group_name=GROUP, owners=OWNERS,
        kinds={"scikit-learn" if mspec.estimator.startswith("sklearn") else mspec.estimator.split(".")[0], "duckdb"},
        # no pool: the fit never touches the warehouse file (the IO manager's load and store hold its file lock),
        # so with the multiprocess executor the model assets train side by side
        retry_policy=RetryPolicy(max_retries=1),
        tags={"model": mspec.name},
        description=f"{mspec.name}: {mspec.estimator} trained with the sample weights"
                    f"{' (standardised features)' if mspec.scale else ''}"
                    f"{' (sigmoid probability wrapper)' if mspec.calibrate else ''}; probabilities calibrated on "
                    "the training window's natural rows after a purged inner split (spec calibration), whose "
                    "out-of-fold predictions feed the meta-learner. A fit stores a new version with its card; "
                    "unchanged training rows, weights and recipe reuse the stored version (memo, no fit).",
    )
    def _model(context: AssetExecutionContext, settings: RegimeSettings, balanced_training_set: pl.DataFrame,
               sample_weights: pl.DataFrame, training_set: pl.DataFrame) -> Output[pl.DataFrame]:
        spec = settings.spec
        name = f"model_{mspec.name}"
        train, w = _train_frame(balanced_training_set, sample_weights)
        natural = natural_rows(training_set)
        feats = model_core.feature_columns(train)
        memo = memo_store(settings)
        t_key = time.perf_counter()
        key = model_core.fit_key(mspec, train, w, feats, spec.meta.inner_holdout_fraction, spec.labels.horizon,
                                 natural=natural, calibration=spec.calibration, wspec=spec.weights)
        key_secs = time.perf_counter() - t_key
        hit = reused_version(memo, "models", key, settings.model_store, name)
        if hit is not None:
            rec, oof = hit.frames["record"], hit.frames["oof"]
            rec = rec.with_columns(pl.lit(spec.spec_hash).alias("spec_hash"))
            r = rec.row(0, named=True)
            version, card, info = r["version"], hit.info["card"], hit.info
            secs, cpu = info["train_seconds"], info["train_cpu_seconds"]
            om = {"accuracy": r["oof_accuracy"], "balanced_accuracy": r["oof_balanced_accuracy"],
                  "log_loss": r["oof_log_loss"]}
            dhash, libs, calib = r["data_hash"], json.loads(r["libraries"]), info["calibration"]
            cal_meta = (thaw_metadata(info["calibration_metadata"]) if "calibration_metadata" in info else
                        calibration_metadata(oof, calib, spec.calibration.reliability_bins,
                                             f"reliability on the calibration rows: {mspec.name}"))
            context.log.info(f"{name}: inputs and recipe unchanged (memo key {key}): reusing version {version}, "
                             "no fit")
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            fitted, oof = model_core.fit_with_oof(mspec, train, w, feats, spec.meta.inner_holdout_fraction,
                                                  spec.labels.horizon, natural=natural,
                                                  calibration=spec.calibration, wspec=spec.weights)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0  # cpu: every thread of the process
            om = _oof_metrics(oof)
            dhash = model_core.data_hash(train)
            libs = model_core.library_versions()
            calib = fitted.calibration_report
            meta = {
                "spec_hash": spec.spec_hash, "data_hash": dhash, "features": feats, "classes": list(CLASSES),
                "libraries": libs, "train_seconds": secs, "rows": train.height, "estimator": mspec.estimator,
                "params": mspec.params, "oof_metrics": om, "calibration": calib, "kind": "base",
                "train_start": str(train["date"].min()), "train_end": str(train["date"].max()), "memo_key": key,
            }
            card = card_core.model_card({**meta, "name": name}, None)
            version = registry.save_model(settings.model_store, name, fitted, meta, oof=oof, card=card)
            card = card.replace(f"# Model card: {name}", f"# Model card: {name} {version}", 1)
            registry.write_card(settings.model_store, name, version, card)
            rec = _record(model_name=name, version=version, created_at=dt.datetime.now(dt.UTC),
                          spec_hash=spec.spec_hash, data_hash=dhash, rows=train.height, features=json.dumps(feats),
                          classes=json.dumps(list(CLASSES)), train_seconds=secs, oof_accuracy=om["accuracy"],
                          oof_balanced_accuracy=om["balanced_accuracy"], oof_log_loss=om["log_loss"],
                          libraries=json.dumps(libs), estimator=mspec.estimator, params=json.dumps(mspec.params),
                          calibration=json.dumps(calib, default=str))
            cal_meta = calibration_metadata(oof, calib, spec.calibration.reliability_bins,
                                            f"reliability on the calibration rows: {mspec.name}")
            memo.put("models", key, {"record": rec, "oof": oof},
                     {"name": name, "version": version, "card": card, "train_seconds": secs,
                      "train_cpu_seconds": cpu, "calibration": _scalars(calib),
                      "calibration_metadata": freeze_metadata(cal_meta)})
        return Output(rec, metadata={
            "version": MetadataValue.text(version), "spec_hash": MetadataValue.text(spec.spec_hash),
            "data_hash": MetadataValue.text(dhash), "train_rows": num(train.height), "features": num(len(feats)),
            "train_seconds": num(round(secs, 2)), "train_cpu_seconds": num(round(cpu, 2)),
            "oof_rows": num(oof.height),
            "oof_accuracy": num(om["accuracy"]), "oof_balanced_accuracy": num(om["balanced_accuracy"]),
            "oof_log_loss": num(om["log_loss"]), "libraries": MetadataValue.json(libs),
            "params": MetadataValue.json(mspec.params),
            **cal_meta,
            "model_card": MetadataValue.md(card),
            **memo_metadata(hit is not None, key, key_secs),
        })

    return _model


def build_meta_asset(spec: Spec):
    names = [m.name for m in spec.enabled_models]

    @asset(
        name="meta_learner", group_name=GROUP, owners=OWNERS, kinds={"scikit-learn", "duckdb"}, pool="warehouse",
        ins={f"model_{n}": AssetIn(f"model_{n}") for n in names},
        deps=["walk_forward_predictions", "training_set"],
        description="Ensemble of the models: accuracy-weighted average of probabilities with weights from "
                    "out-of-fold performance (never training accuracy), or a stacking logistic regression on the "
                    "out-of-fold probabilities (spec meta.method); fitted with the rows' sample weights and "
                    "calibrated on the same out-of-fold rows; then shrunk towards the regime prior per regime by "
                    "weights chosen on its recipe's own walk-forward (out-of-sample) predictions before the "
                    "training set's last train date (spec meta.regime_shrinkage).",
    )
    def meta_learner(context: AssetExecutionContext, settings: RegimeSettings, **records: pl.DataFrame):
        spec_ = settings.spec
        store = settings.model_store
        versions = {key: rec.row(0, named=True)["version"] for key, rec in records.items()}
        memo = memo_store(settings)
        # the base versions are content-keyed (a version is reused only for the same inputs and recipe) and hold
        # the out-of-fold rows the ensemble is fitted on
        shrink = production_shrinkage(settings)
        shrink_params = None if shrink is None else shrink.params()
        key = memo_key("meta_learner", base_versions=versions, meta=spec_.meta, calibration=spec_.calibration,
                       libraries=model_core.library_versions(), shrinkage=shrink_params)
        hit = reused_version(memo, "meta_learner", key, store, "meta_learner")
        first = next(iter(records.values())).row(0, named=True)
        if hit is not None:
            rec, moof, wt = hit.frames["record"], hit.frames["oof"], hit.frames["weights"]
            rec = rec.with_columns(pl.lit(spec_.spec_hash).alias("spec_hash"))
            version, card = rec["version"][0], hit.info["card"]
            weighted_fit, calib_report = hit.info["weighted_fit"], hit.info["calibration"]
            cal_meta = (thaw_metadata(hit.info["calibration_metadata"]) if "calibration_metadata" in hit.info else
                        calibration_metadata(moof, calib_report, spec_.calibration.reliability_bins,
                                             "reliability on the out-of-fold rows: meta_learner"))
            om = {"log_loss": rec["oof_log_loss"][0], "balanced_accuracy": rec["oof_balanced_accuracy"][0]}
            context.log.info(f"meta_learner: base versions and recipe unchanged (memo key {key}): reusing version "
                             f"{version}, no fit")
        else:
            fitted, oofs = {}, {}
            for key_, rec in records.items():
                row = rec.row(0, named=True)
                reg = registry.load_registered_model(store, row["model_name"], row["version"])
                fitted[key_.removeprefix("model_")] = reg.model
                oofs[key_.removeprefix("model_")] = reg.oof
            t0 = time.perf_counter()
            meta = fit_meta(oofs, spec_.meta, models=fitted, calibration=spec_.calibration)
            meta.shrinkage = shrink
            secs = time.perf_counter() - t0
            moof = meta_oof(meta, oofs)
            om = _oof_metrics(moof)
            wt = meta.weights_table()
            weighted_fit, calib_report = meta.weighted_fit, meta.calibration_report
            first_meta = store.meta(first["model_name"], first["version"])
            libs = model_core.library_versions()
            info = {"spec_hash": spec_.spec_hash, "data_hash": first["data_hash"], "base_versions": versions,
                    "method": spec_.meta.method, "classes": list(CLASSES), "features": json.loads(first["features"]),
                    "libraries": libs, "train_seconds": secs, "rows": first["rows"], "kind": "ensemble",
                    "estimator": f"ensemble:{spec_.meta.method}", "weighted_fit": meta.weighted_fit,
                    "calibration": meta.calibration_report, "oof_metrics": om,
                    "train_start": first_meta.get("train_start"), "train_end": first_meta.get("train_end"),
                    "memo_key": key, "regime_shrinkage": shrink_params}
            card = card_core.model_card({**info, "name": "meta_learner"}, None)
            version = registry.save_model(store, "meta_learner", meta, info, oof=moof, card=card)
            card = card.replace("# Model card: meta_learner", f"# Model card: meta_learner {version}", 1)
            registry.write_card(store, "meta_learner", version, card)
            rec = _record(model_name="meta_learner", version=version, created_at=dt.datetime.now(dt.UTC),
                          spec_hash=spec_.spec_hash, data_hash=first["data_hash"], rows=first["rows"],
                          features=first["features"], classes=json.dumps(list(CLASSES)), train_seconds=secs,
                          oof_accuracy=om["accuracy"], oof_balanced_accuracy=om["balanced_accuracy"],
                          oof_log_loss=om["log_loss"],
                          libraries=json.dumps(libs), estimator=f"ensemble:{spec_.meta.method}",
                          params=json.dumps({"base_versions": versions, "weight_metric": spec_.meta.weight_metric,
                                             "weighted_fit": meta.weighted_fit}),
                          calibration=json.dumps(meta.calibration_report, default=str))
            cal_meta = calibration_metadata(moof, calib_report, spec_.calibration.reliability_bins,
                                            "reliability on the out-of-fold rows: meta_learner")
            memo.put("meta_learner", key, {"record": rec, "oof": moof, "weights": wt},
                     {"version": version, "card": card, "weighted_fit": weighted_fit,
                      "calibration": _scalars(calib_report), "calibration_metadata": freeze_metadata(cal_meta)})
        return Output(rec, metadata={
            "version": MetadataValue.text(version), "method": MetadataValue.text(spec_.meta.method),
            "weights": md(wt), "base_versions": MetadataValue.json(versions),
            "weighted_fit": MetadataValue.bool(weighted_fit),
            "spec_hash": MetadataValue.text(spec_.spec_hash),
            "oof_rows": num(moof.height), "oof_log_loss": num(om["log_loss"]),
            "oof_balanced_accuracy": num(om["balanced_accuracy"]),
            **cal_meta,
            "model_card": MetadataValue.md(card),
            "regime_shrinkage": (md(shrink.table()) if shrink is not None
                                 else MetadataValue.text("off (spec meta.regime_shrinkage)")),
            **memo_metadata(hit is not None, key),
        })

    return meta_learner


def training_assets(spec: Spec) -> list:
    return [build_model_asset(m) for m in spec.enabled_models] + [build_meta_asset(spec)]
