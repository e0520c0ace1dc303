"""One registry: artifact shape, loader (also for older shapes), production record, model cards."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from regime_assets.core import registry
from regime_assets.core.model_card import known_limits, model_card
from regime_assets.core.model_store import ModelStore, ModelStoreError
from regime_assets.spec import CLASSES


class _Const:
    """A stand-in model: constant probabilities."""

    classes = CLASSES
    features = ["f_a"]

    def __init__(self, p=(0.2, 0.5, 0.3)):
        self.p = np.asarray(p)

    def predict_proba(self, df):
        return np.tile(self.p, (df.height, 1))


class _Ens(_Const):
    def predict_proba_from(self, probs):
        return np.mean(list(probs.values()), axis=0)


def test_one_loader_for_new_and_older_shapes(tmp_path):
    store = ModelStore(tmp_path)
    oof = pl.DataFrame({"row_id": [0], "p_sell": [0.2]})
    v_new = registry.save_model(store, "model_a", _Const(), {"features": ["f_a"]}, oof=oof, card="# card\n")
    v_old_dict = store.save("model_a", {"model": _Const(), "oof": oof}, {"features": ["f_a"]})
    v_bare = store.save("meta_learner", _Ens(), {"features": ["f_a", "f_b"]})
    df = pl.DataFrame({"f_a": [1.0, 2.0]})
    for name, v, kind in (("model_a", v_new, "base"), ("model_a", v_old_dict, "base"),
                          ("meta_learner", v_bare, "ensemble")):
        r = registry.load_registered_model(store, name, v)
        assert r.kind == kind and r.version == v and r.classes == CLASSES
        assert r.predict_proba(df).shape == (2, 3)
    assert store.load("model_a", v_new)["format"] == registry.ARTIFACT_FORMAT
    assert registry.load_registered_model(store, "model_a", v_new).oof.equals(oof)
    assert registry.load_registered_model(store, "meta_learner").oof is None
    assert registry.read_card(store, "model_a", v_new) == "# card\n"
    assert registry.read_card(store, "model_a", v_old_dict) is None
    registry.write_card(store, "model_a", v_old_dict, "# later\n")
    assert registry.read_card(store, "model_a", v_old_dict) == "# later\n"
    with pytest.raises(registry.RegistryError, match="no predict_proba"):
        registry.make_artifact(object())
    with pytest.raises(ModelStoreError, match="invalid side file"):
        store.write_file("model_a", v_new, "meta.json", "{}")


def test_card_is_written_before_meta(tmp_path, monkeypatch):
    """A version listed by the store always has its card: a save that fails before meta.json lists nothing."""
    store = ModelStore(tmp_path)
    calls = []
    orig = store._write_text

    def spy(vdir, filename, text):
        calls.append(filename)
        return orig(vdir, filename, text)

    monkeypatch.setattr(store, "_write_text", spy)
    v = registry.save_model(store, "m", _Const(), {}, card="# c\n")
    assert calls == [registry.CARD_FILE] and (tmp_path / "m" / v / "meta.json").is_file()


def test_production_record_and_loading(tmp_path):
    store = ModelStore(tmp_path)
    v1 = registry.save_model(store, "model_a", _Const(), {})
    v2 = registry.save_model(store, "meta_learner", _Ens(), {})
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = pl.concat([
        registry.registry_row(model_name="model_a", version=v1, created_at=t0, promoted=True, features='["f_a"]'),
        registry.registry_row(model_name="meta_learner", version=v2, created_at=t0 + dt.timedelta(days=1),
                              promoted=False, features='["f_a"]'),
    ])
    rec, model = registry.load_production(store, rows)
    assert rec["model_name"] == "model_a" and rec["features"] == ["f_a"] and model.version == v1
    assert registry.load_production(store, rows.filter(pl.col("promoted").not_())) == (None, None)
    assert registry.production_record(None) is None
    gone = rows.with_columns(pl.lit("20240101T000000000000Z-deadbeef").alias("version"))
    with pytest.raises(registry.RegistryError, match="cannot be loaded"):
        registry.load_production(store, gone)
    meta_rec = registry.model_record(model_name="meta_learner", version=v2,
                                     params='{"base_versions": {"model_a": "%s"}}' % v1)
    assert registry.model_version_of("model_a", meta_rec) == v1
    assert registry.model_version_of("meta_learner", meta_rec) == v2
    assert registry.model_version_of("model_zz", meta_rec) is None


def _eval_frame() -> pl.DataFrame:
    rows = []
    for model, ll in (("model_a", 1.00), ("baseline_regime_prior", 1.05), ("baseline_majority", 20.0)):
        for regime, n, shift in (("overall", 900, 0.0), ("normal", 700, 0.0), ("crash", 40, 0.2),
                                 ("high_vol", 160, -0.01)):
            v = ll + (shift if model == "model_a" else 0.0)
            rows.append({"model": model, "regime": regime, "metric": "log_loss", "n": n, "value": v,
                         "ci_low": v - 0.02, "ci_high": v + 0.02})
            rows.append({"model": model, "regime": regime, "metric": "balanced_accuracy", "n": n, "value": 0.4,
                         "ci_low": 0.38, "ci_high": 0.42})
    return pl.DataFrame(rows)


def test_model_card_names_window_hashes_calibration_table_and_limits():
    info = {"name": "model_a", "version": "v1", "estimator": "x.Y", "spec_hash": "abc", "data_hash": "def",
            "train_start": "2020-01-01", "train_end": "2022-06-30", "rows": 1234, "features": ["f_a", "f_b"],
            "calibration": {"method": "vector", "requested": "vector", "status": "fitted", "rows": 500,
                            "log_loss_before": 1.2, "log_loss_after": 1.0, "log_loss_prior": 1.05,
                            "late_rows": 250, "late_log_loss_before": 1.21, "late_log_loss_after": 1.02}}
    card = model_card(info, _eval_frame(), min_rows=100, decision={"promoted": True, "reason": "ok"})
    for text in ("2020-01-01 .. 2022-06-30", "`abc`", "`def`", "`f_b`", "vector", "1.2000", "1.0000",
                 "baseline_regime_prior", "| crash | 40 |", "promoted: True"):
        assert text in card, text
    limits = known_limits(_eval_frame(), "model_a", 100, info["calibration"])
    joined = " ".join(limits)
    assert "low_vol" in joined and "recovery" in joined  # regimes without rows are said, not dropped
    assert "crash: only 40 rows" in joined
    assert "crash: log-loss 1.2000 above the baseline_regime_prior" in joined
    assert "high_vol: log-loss" not in joined  # better than the prior there
    bare = model_card({"name": "m", "calibration": {"method": "none", "status": "identity (one class only)"}})
    assert "not evaluated yet" in bare and "not calibrated" in bare
