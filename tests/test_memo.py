"""The content-keyed memo (core/memo.py) and its use by the training assets: unchanged inputs fit nothing."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from regime_assets.core import memo as memo_core
from regime_assets.core.memo import Memo, memo_key, rows_hash, schema_rows_hash
from regime_assets.spec import EvaluationSpec


def _frame(n: int = 50, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"symbol": [f"S{i % 5}" for i in range(n)], "x": rng.normal(size=n),
                         "label": rng.choice(["sell", "hold", "buy"], size=n)})


def test_keys_follow_content_spec_and_memo_version(monkeypatch):
    f = _frame()
    k = memo_key("t", rows=rows_hash(f), spec=EvaluationSpec())
    assert k == memo_key("t", rows=rows_hash(f.clone()), spec=EvaluationSpec())
    changed = f.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.col("x") + 1e-9).otherwise(pl.col("x"))
                             .alias("x"))
    assert rows_hash(changed) != rows_hash(f)
    assert memo_key("t", rows=rows_hash(f), spec=EvaluationSpec(seed=124)) != k
    assert memo_key("u", rows=rows_hash(f), spec=EvaluationSpec()) != k
    # a dtype change with equal values is a different input
    assert schema_rows_hash(f) != schema_rows_hash(f.with_columns(pl.col("x").cast(pl.Float32).cast(pl.Float64)
                                                                  .alias("x")).cast({"x": pl.Float32}))
    monkeypatch.setattr(memo_core, "MEMO_VERSION", "next")
    assert memo_key("t", rows=rows_hash(f), spec=EvaluationSpec()) != k


def test_entries_round_trip_and_incomplete_entries_are_misses(tmp_path):
    m = Memo(tmp_path)
    f = _frame()
    assert m.get("k", "abc") is None and m.misses == 1
    m.put("k", "abc", {"a": f, "b": f.head(3)}, {"version": "v1"})
    hit = m.get("k", "abc")
    assert hit is not None and hit.info == {"version": "v1"} and hit.frames["a"].equals(f)
    assert hit.frames["b"].height == 3 and m.hits == 1
    # the JSON is written last: without it the entry does not exist
    (tmp_path / "k" / "abc.json").unlink()
    assert m.get("k", "abc") is None
    # a damaged frame is a miss (recomputed), not an error
    m.put("k", "abc", {"a": f}, {})
    (tmp_path / "k" / "abc.a.parquet").write_bytes(b"nope")
    assert m.get("k", "abc") is None
    assert not list((tmp_path / "k").glob("*.tmp"))


def test_frame_computes_once_and_none_root_keeps_nothing(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return _frame(10)

    m = Memo(tmp_path)
    a, reused_a = m.frame("f", "key1", compute)
    b, reused_b = m.frame("f", "key1", compute)
    assert (reused_a, reused_b) == (False, True) and len(calls) == 1 and a.equals(b)
    off = Memo(None)
    off.frame("f", "key1", compute)
    off.frame("f", "key1", compute)
    assert len(calls) == 3 and not off.enabled
    with pytest.raises(ValueError):
        m.put("../x", "k", {})


def test_fit_key_follows_rows_weights_natural_rows_and_params():
    from regime_assets.core.models import fit_key
    from regime_assets.spec import CalibrationSpec, ModelSpec, WeightSpec

    ms = ModelSpec(name="logreg", estimator="sklearn.linear_model.LogisticRegression", params={"C": 0.1})
    train, nat = _frame(60, 1), _frame(40, 2)
    w = np.ones(train.height)
    args = dict(natural=nat, calibration=CalibrationSpec(), wspec=WeightSpec())
    k = fit_key(ms, train, w, ["x"], 0.2, 5, **args)
    assert k == fit_key(ms, train.clone(), w.copy(), ["x"], 0.2, 5, **args)
    w2 = w.copy()
    w2[3] = 1.5
    others = [
        fit_key(ms, train.with_columns(pl.col("x").reverse()), w, ["x"], 0.2, 5, **args),
        fit_key(ms, train, w2, ["x"], 0.2, 5, **args),
        fit_key(ms, train, w, ["x"], 0.2, 5, **{**args, "natural": nat.head(39)}),
        fit_key(ModelSpec(**{**ms.model_dump(), "params": {"C": 0.2}}), train, w, ["x"], 0.2, 5, **args),
        fit_key(ms, train, w, ["x"], 0.25, 5, **args),
        fit_key(ms, train, w, ["x"], 0.2, 5, **{**args, "calibration": CalibrationSpec(seed=6)}),
    ]
    assert k not in others and len(set(others)) == len(others)


MEMOIZED = ("validation_predictions", "regime_evaluation", "walk_forward_evaluation", "shap_importance",
            "walk_forward_predictions", "leave_one_crisis_out_predictions")


def _mats(result, prefix: tuple[str, ...] = ("model_", "meta_learner")) -> dict[str, dict]:
    out = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_MATERIALIZATION":
            m = e.event_specific_data.materialization
            name = m.asset_key.to_user_string()
            if (name.startswith(prefix) and name != "model_versions") or name in MEMOIZED:
                out[name] = {k: getattr(v, "value", v) for k, v in m.metadata.items()}
    return out


@pytest.mark.slow
def test_second_materialize_fits_no_model_and_a_changed_param_refits_only_its_model(home, tmp_path,
                                                                                    tiny_spec_path, monkeypatch):
    import functools

    import duckdb
    import yaml
    from dagster import AssetKey, DagsterInstance

    from regime_assets.core import ensemble, models
    from regime_assets.core.model_store import ModelStore
    from regime_assets.definitions import build_definitions
    from regime_assets.home.paths import models_root
    from regime_assets.resources.warehouse import warehouse_path

    calls: list[str] = []

    def counting(fn, tag):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            calls.append(tag(*a))
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(models, "fit_with_oof", counting(models.fit_with_oof, lambda ms, *a: ms.name))
    monkeypatch.setattr(ensemble, "fit_meta", counting(ensemble.fit_meta, lambda *a: "meta"))
    from regime_assets.assets import training

    monkeypatch.setattr(training, "fit_meta", ensemble.fit_meta)
    defs = build_definitions(spec_path=tiny_spec_path, home=str(home))
    instance = DagsterInstance.ephemeral()
    first = defs.resolve_job_def("materialize_all").execute_in_process(instance=instance, raise_on_error=False)
    assert first.success
    m1 = _mats(first)
    n_models = len([k for k in m1 if k.startswith("model_")])
    assert n_models == 8 and not any(v["reused"] for v in m1.values())
    assert len(calls) > n_models  # the model assets and the walk-forward's folds
    store = ModelStore(models_root(home, None))
    before = {n: store.versions(n) for n in store.names()}
    calls.clear()

    second = defs.resolve_job_def("materialize_all").execute_in_process(instance=instance, raise_on_error=False)
    assert second.success
    m2 = _mats(second)
    assert calls == []  # nothing fitted: not a model, not the meta-learner, not a fold
    assert all(v["reused"] for v in m2.values()), {k: v["reused"] for k, v in m2.items()}
    for k in m1:  # the same metadata as after the computation (diagrams, plots, tables)
        assert set(m2[k]) == set(m1[k]), (k, set(m2[k]) ^ set(m1[k]))
        for name in ("reliability_diagram", "weights", "status", "headline", "folds"):
            if name in m1[k]:
                assert m2[k][name] == m1[k][name], (k, name)
    assert {k: v["version"] for k, v in m2.items() if "version" in v} == \
        {k: v["version"] for k, v in m1.items() if "version" in v}
    for k in m1:
        if "oof_log_loss" in m1[k]:
            assert m2[k]["oof_log_loss"] == m1[k]["oof_log_loss"], k
    assert {n: store.versions(n) for n in store.names()} == before  # same content: no version appended
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        assert conn.execute("select count(*) from model_versions").fetchall()[0][0] == 1

    # one model's params change: only that model and the meta-learner fit again
    data = yaml.safe_load(open(tiny_spec_path))
    for m in data["models"]:
        if m["name"] == "logreg":
            m["params"]["C"] = 0.2
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    defs3 = build_definitions(spec_path=str(p), home=str(home))
    keys = [AssetKey(k) for k in m1 if k.startswith(("model_", "meta_learner"))]
    third = defs3.resolve_job_def("materialize_all").execute_in_process(instance=instance, raise_on_error=False,
                                                                         asset_selection=keys)
    assert third.success
    m3 = _mats(third)
    assert sorted(calls) == ["logreg", "meta"]
    assert {k for k, v in m3.items() if not v["reused"]} == {"model_logreg", "meta_learner"}
    assert len(store.versions("model_logreg")) == 2 and len(store.versions("model_rf")) == 1
