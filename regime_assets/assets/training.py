"""Group `training`: one asset per model in the spec (built by one factory) and the meta-learner."""


import datetime as dt
import json
import time

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, RetryPolicy, asset

from regime_assets.assets._meta import md, num
from regime_assets.core import models as model_core
from regime_assets.core.ensemble import fit_meta
from regime_assets.resources.settings import RegimeSettings
from regime_assets.spec import CLASSES, ModelSpec, Spec

OWNERS = ["team:ml-engineering"]
GROUP = "training"
RECORD_SCHEMA = {
    "model_name": pl.Utf8, "version": pl.Utf8, "created_at": pl.Datetime("us", "UTC"), "spec_hash": pl.Utf8,
    "data_hash": pl.Utf8, "rows": pl.Int64, "features": pl.Utf8, "classes": pl.Utf8, "train_seconds": pl.Float64,
    "oof_accuracy": pl.Float64, "oof_balanced_accuracy": pl.Float64, "oof_log_loss": pl.Float64,
    "libraries": pl.Utf8, "estimator": pl.Utf8, "params": pl.Utf8,
}


def _record(**kw) -> pl.DataFrame:
    return pl.DataFrame([kw], schema=RECORD_SCHEMA)


def _train_frame(balanced: pl.DataFrame, weights: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    joined = balanced.join(weights.select("row_id", "weight"), on="row_id", how="inner").sort("row_id")
    if joined.height != balanced.height:
        raise ValueError(f"sample_weights covers {joined.height} of {balanced.height} balanced rows")
    return joined.drop("weight"), joined["weight"].to_numpy()


def _oof_metrics(oof: pl.DataFrame) -> dict[str, float]:
    from regime_assets.core.evaluation import metrics

    if oof.height == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "log_loss": float("nan")}
    y = model_core.encode_labels(oof["label"])
    proba = oof.select("p_sell", "p_hold", "p_buy").to_numpy()
    return metrics(y, proba)


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
                    f"{' (calibrated probabilities)' if mspec.calibrate else ''}; out-of-fold predictions on the "
                    "latest purged share of training dates feed the meta-learner. Each run stores a new version.",
    )
    def _model(context: AssetExecutionContext, settings: RegimeSettings, balanced_training_set: pl.DataFrame,
               sample_weights: pl.DataFrame) -> Output[pl.DataFrame]:
        spec = settings.spec
        train, w = _train_frame(balanced_training_set, sample_weights)
        feats = model_core.feature_columns(train)
        t0, c0 = time.perf_counter(), time.process_time()
        fitted, oof = model_core.fit_with_oof(mspec, train, w, feats, spec.meta.inner_holdout_fraction,
                                              spec.labels.horizon)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0  # cpu: every thread of the process
        om = _oof_metrics(oof)
        dhash = model_core.data_hash(train)
        libs = model_core.library_versions()
        meta = {
            "spec_hash": spec.spec_hash, "data_hash": dhash, "features": feats, "classes": list(CLASSES),
            "libraries": libs, "train_seconds": secs, "rows": train.height, "estimator": mspec.estimator,
            "params": mspec.params, "oof_metrics": om,
            "train_start": str(train["date"].min()), "train_end": str(train["date"].max()),
        }
        version = settings.model_store.save(f"model_{mspec.name}", {"model": fitted, "oof": oof}, meta)
        rec = _record(model_name=f"model_{mspec.name}", version=version, created_at=dt.datetime.now(dt.UTC),
                      spec_hash=spec.spec_hash, data_hash=dhash, rows=train.height, features=json.dumps(feats),
                      classes=json.dumps(list(CLASSES)), train_seconds=secs, oof_accuracy=om["accuracy"],
                      oof_balanced_accuracy=om["balanced_accuracy"], oof_log_loss=om["log_loss"],
                      libraries=json.dumps(libs), estimator=mspec.estimator, params=json.dumps(mspec.params))
        return Output(rec, metadata={
            "version": MetadataValue.text(version), "spec_hash": MetadataValue.text(spec.spec_hash),
            "data_hash": MetadataValue.text(dhash), "train_rows": num(train.height), "features": num(len(feats)),
            "train_seconds": num(round(secs, 2)), "train_cpu_seconds": num(round(cpu, 2)),
            "oof_rows": num(oof.height),
            "oof_accuracy": num(om["accuracy"]), "oof_balanced_accuracy": num(om["balanced_accuracy"]),
            "oof_log_loss": num(om["log_loss"]), "libraries": MetadataValue.json(libs),
            "params": MetadataValue.json(mspec.params),
        })

    return _model


def build_meta_asset(spec: Spec):
    names = [m.name for m in spec.enabled_models]

    @asset(
        name="meta_learner", group_name=GROUP, owners=OWNERS, kinds={"scikit-learn", "duckdb"}, pool="warehouse",
        ins={f"model_{n}": AssetIn(f"model_{n}") for n in names},
        description="Ensemble of the models: accuracy-weighted average of probabilities with weights from "
                    "out-of-fold performance (never training accuracy), or a stacking logistic regression on the "
                    "out-of-fold probabilities (spec meta.method).",
    )
    def meta_learner(context: AssetExecutionContext, settings: RegimeSettings, **records: pl.DataFrame):
        spec_ = settings.spec
        store = settings.model_store
        fitted, oofs, versions = {}, {}, {}
        for key, rec in records.items():
            row = rec.row(0, named=True)
            art = store.load(row["model_name"], row["version"])
            fitted[key.removeprefix("model_")] = art["model"]
            oofs[key.removeprefix("model_")] = art["oof"]
            versions[key] = row["version"]
        t0 = time.perf_counter()
        meta = fit_meta(oofs, spec_.meta, models=fitted)
        secs = time.perf_counter() - t0
        wt = meta.weights_table()
        first = next(iter(records.values())).row(0, named=True)
        info = {"spec_hash": spec_.spec_hash, "data_hash": first["data_hash"], "base_versions": versions,
                "method": spec_.meta.method, "classes": list(CLASSES), "features": json.loads(first["features"]),
                "libraries": model_core.library_versions(), "train_seconds": secs, "rows": first["rows"]}
        version = store.save("meta_learner", meta, info)
        rec = _record(model_name="meta_learner", version=version, created_at=dt.datetime.now(dt.UTC),
                      spec_hash=spec_.spec_hash, data_hash=first["data_hash"], rows=first["rows"],
                      features=first["features"], classes=json.dumps(list(CLASSES)), train_seconds=secs,
                      oof_accuracy=None, oof_balanced_accuracy=None, oof_log_loss=None,
                      libraries=json.dumps(model_core.library_versions()), estimator=f"ensemble:{spec_.meta.method}",
                      params=json.dumps({"base_versions": versions, "weight_metric": spec_.meta.weight_metric}))
        return Output(rec, metadata={
            "version": MetadataValue.text(version), "method": MetadataValue.text(spec_.meta.method),
            "weights": md(wt), "base_versions": MetadataValue.json(versions),
            "spec_hash": MetadataValue.text(spec_.spec_hash),
        })

    return meta_learner


def training_assets(spec: Spec) -> list:
    return [build_model_asset(m) for m in spec.enabled_models] + [build_meta_asset(spec)]
