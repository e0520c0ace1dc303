"""The model registry: one artifact shape, one loader, the record schemas and the production record.

Every stored model -- a base model (``model_<name>``) and the meta-learner alike -- is one artifact dict::

    {"format": ARTIFACT_FORMAT, "kind": "base" | "ensemble", "model": <object with predict_proba(df)>,
     "oof": <its out-of-fold predictions frame or None>}

saved in the ``ModelStore`` (``core/model_store.py``) with its metadata (``meta.json``) and a model card
(``card.md``, written before ``meta.json``). ``load_registered_model`` reads any version -- also the two older
shapes (a plain model stored as ``{"model", "oof"}``, the meta-learner stored bare) -- and returns a
``RegisteredModel``: ``predict_proba(df)`` ((n, 3) in CLASSES order), ``classes``, ``features``, ``oof``, ``meta``.

Tables: ``MODEL_RECORD_SCHEMA`` is the one-row table each training asset writes (the version it stored);
``REGISTRY_SCHEMA`` is the append-only ``model_versions`` table (one row per decided version, with ``promoted``).
``production_record`` picks the latest promoted row of the registry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from regime_assets.core.model_store import ModelStore, ModelStoreError
from regime_assets.spec import CLASSES

ARTIFACT_FORMAT = "regime_assets.model/1"
CARD_FILE = "card.md"
KINDS = ("base", "ensemble")
META_LEARNER = "meta_learner"
MODEL_PREFIX = "model_"

MODEL_RECORD_SCHEMA = {
    "model_name": pl.Utf8, "version": pl.Utf8, "created_at": pl.Datetime("us", "UTC"), "spec_hash": pl.Utf8,
    "data_hash": pl.Utf8, "rows": pl.Int64, "features": pl.Utf8, "classes": pl.Utf8, "train_seconds": pl.Float64,
    "oof_accuracy": pl.Float64, "oof_balanced_accuracy": pl.Float64, "oof_log_loss": pl.Float64,
    "libraries": pl.Utf8, "estimator": pl.Utf8, "params": pl.Utf8, "calibration": pl.Utf8,
}
REGISTRY_SCHEMA = {
    "model_name": pl.Utf8, "version": pl.Utf8, "created_at": pl.Datetime("us", "UTC"), "spec_hash": pl.Utf8,
    "data_hash": pl.Utf8, "metrics": pl.Utf8, "promoted": pl.Boolean, "reason": pl.Utf8, "as_of": pl.Date,
    "train_start": pl.Date, "train_end": pl.Date, "validation_start": pl.Date, "validation_end": pl.Date,
    "features": pl.Utf8, "run_id": pl.Utf8,
}


class RegistryError(ValueError):
    """A stored model or registry row that cannot be used; the message names it."""


def make_artifact(model: Any, oof: pl.DataFrame | None = None, kind: str | None = None) -> dict[str, Any]:
    """The one stored shape of every registered model."""
    if not hasattr(model, "predict_proba"):
        raise RegistryError(f"registry: {type(model).__name__} has no predict_proba")
    kind = kind or ("ensemble" if hasattr(model, "predict_proba_from") else "base")
    if kind not in KINDS:
        raise RegistryError(f"registry: kind {kind!r}, expected one of {list(KINDS)}")
    return {"format": ARTIFACT_FORMAT, "kind": kind, "model": model, "oof": oof}


def unwrap(obj: Any) -> tuple[Any, pl.DataFrame | None, str]:
    """(model, oof, kind) of a stored object: the artifact dict, the older ``{"model", "oof"}`` dict or a bare
    model (older meta-learner versions)."""
    if isinstance(obj, dict):
        if "model" not in obj:
            raise RegistryError(f"registry: stored dict has no 'model' (keys {sorted(obj)})")
        model = obj["model"]
        kind = obj.get("kind") or ("ensemble" if hasattr(model, "predict_proba_from") else "base")
        return model, obj.get("oof"), kind
    if not hasattr(obj, "predict_proba"):
        raise RegistryError(f"registry: stored {type(obj).__name__} has no predict_proba")
    return obj, None, "ensemble" if hasattr(obj, "predict_proba_from") else "base"


@dataclass
class RegisteredModel:
    """A loaded model version: what every consumer (evaluation, replay buffer, drift, gate) predicts with."""

    name: str
    version: str
    model: Any
    kind: str = "base"
    oof: pl.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(getattr(self.model, "classes", CLASSES))

    @property
    def features(self) -> list[str]:
        f = getattr(self.model, "features", None)
        return list(f) if f else list(self.meta.get("features") or [])

    @property
    def calibration_report(self) -> dict[str, Any]:
        return dict(getattr(self.model, "calibration_report", {}) or {})

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        """(n, 3) class probabilities in CLASSES order (calibrated where the model carries a calibrator)."""
        p = np.asarray(self.model.predict_proba(df), dtype=np.float64)
        if p.ndim != 2 or p.shape != (df.height, len(CLASSES)):
            raise RegistryError(f"registry: {self.name} {self.version} predicted shape {p.shape} for "
                                f"{df.height} rows")
        return p

    def __repr__(self) -> str:
        return f"RegisteredModel({self.name!r}, {self.version!r}, kind={self.kind!r})"


def load_registered_model(store: ModelStore, name: str, version: str | None = None) -> RegisteredModel:
    """The stored version (None = latest complete) of ``name`` as a ``RegisteredModel``."""
    obj = store.load(name, version)
    meta = store.meta(name, version)
    model, oof, kind = unwrap(obj)
    return RegisteredModel(name=name, version=meta.get("version", version), model=model, kind=kind, oof=oof,
                           meta=meta)


def save_model(store: ModelStore, name: str, model: Any, meta: dict[str, Any], oof: pl.DataFrame | None = None,
               card: str | None = None) -> str:
    """Store a model in the one artifact shape, with its card (before meta.json); returns the version."""
    art = make_artifact(model, oof)
    return store.save(name, art, meta, files={CARD_FILE: card} if card is not None else None)


def write_card(store: ModelStore, name: str, version: str, card: str) -> None:
    store.write_file(name, version, CARD_FILE, card)


def read_card(store: ModelStore, name: str, version: str | None = None) -> str | None:
    return store.read_file(name, version, CARD_FILE)


def model_record(**kw: Any) -> pl.DataFrame:
    """One row of ``MODEL_RECORD_SCHEMA`` (missing columns null)."""
    return pl.DataFrame([{k: kw.get(k) for k in MODEL_RECORD_SCHEMA}], schema=MODEL_RECORD_SCHEMA)


def registry_row(**kw: Any) -> pl.DataFrame:
    """One row of ``REGISTRY_SCHEMA`` (missing columns null)."""
    return pl.DataFrame([{k: kw.get(k) for k in REGISTRY_SCHEMA}], schema=REGISTRY_SCHEMA)


def production_record(registry: pl.DataFrame | None) -> dict[str, Any] | None:
    """The latest promoted row of a ``model_versions`` table (``features`` parsed to a list), or None."""
    if registry is None or registry.height == 0 or "promoted" not in registry.columns:
        return None
    promoted = registry.filter(pl.col("promoted").fill_null(False)).sort("created_at")
    if promoted.height == 0:
        return None
    rec = promoted.row(-1, named=True)
    if isinstance(rec.get("features"), str):
        rec["features"] = json.loads(rec["features"])
    return rec


def load_production(store: ModelStore, registry: pl.DataFrame | None
                    ) -> tuple[dict[str, Any] | None, RegisteredModel | None]:
    """(record, model) of the current production version, (None, None) when nothing was promoted; an artifact
    that cannot be loaded is an error naming the version."""
    rec = production_record(registry)
    if rec is None:
        return None, None
    try:
        model = load_registered_model(store, rec["model_name"], rec["version"])
    except (ModelStoreError, RegistryError, OSError) as err:
        raise RegistryError(f"production model {rec['model_name']} {rec['version']} cannot be loaded: {err}") \
            from err
    return rec, model


def model_version_of(asset_name: str, meta_record: pl.DataFrame | None, records: dict[str, pl.DataFrame]
                     | None = None) -> str | None:
    """The version this run stored for ``asset_name`` (``model_<name>`` or ``meta_learner``): from its own
    record, else from the meta-learner record's ``base_versions``."""
    if records and asset_name in records and records[asset_name].height:
        return records[asset_name]["version"][0]
    if meta_record is None or meta_record.height == 0:
        return None
    if asset_name == META_LEARNER:
        return meta_record["version"][0]
    try:
        return json.loads(meta_record["params"][0] or "{}").get("base_versions", {}).get(asset_name)
    except (json.JSONDecodeError, TypeError):
        return None
