"""The training group with Dagster's multiprocess executor: model assets hold no pool slot, so they train side by
side, and the warehouse's file lock keeps every DuckDB load and store to one process at a time. A multiprocess run
on the tiny spec gives the same tables and the same predictions as the in-process run."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest
from dagster import AssetSelection, DagsterInstance

from regime_assets.resources.warehouse import warehouse_lock, warehouse_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "specs" / "tiny.yaml"
UPSTREAM = "+key:sample_weights or +key:regime_validation_sets"
SELECTION = "group:training or key:validation_predictions"
# differ by construction between two runs: store versions, clocks, timings
VOLATILE = {"version", "created_at", "train_seconds", "saved_at", "params"}


def _tables(home: Path) -> dict[str, pl.DataFrame]:
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        names = [r[0] for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'main'").fetchall()]
        out = {}
        for n in names:
            df = pl.DataFrame(conn.sql(f'select * from main."{n}"').to_arrow_table())
            df = df.drop([c for c in df.columns if c in VOLATILE])
            out[n] = df.sort(df.columns) if df.width else df
        return out


def _intervals(instance, run_id: str) -> dict[str, tuple[float, float]]:
    start, out = {}, {}
    for e in instance.all_logs(run_id):
        ev = e.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            start[ev.step_key] = e.timestamp
        elif ev.event_type_value == "STEP_SUCCESS":
            out[ev.step_key] = (start[ev.step_key], e.timestamp)
    return out


def _home(path: Path, monkeypatch):
    from regime_assets.home.instance import prepare_environment

    for var in ("DAGSTER_HOME", "REGIME_ASSETS_HOME", "REGIME_ASSETS_SPEC", "REGIME_ASSETS_EXECUTOR"):
        monkeypatch.setenv(var, "")  # restored after the test (prepare_environment and the helper set them)
        monkeypatch.delenv(var)
    home, dagster_home = prepare_environment(str(TINY), str(path))
    return home, dagster_home


@pytest.mark.timeout(600)
def test_multiprocess_training_matches_in_process_and_runs_models_side_by_side(tmp_path, monkeypatch):
    from regime_assets.definitions import build_definitions
    from regime_assets.execution import execute_multiprocess

    a, _ = _home(tmp_path / "in_process", monkeypatch)
    defs = build_definitions(spec_path=str(TINY), home=str(a))
    graph, job = defs.resolve_asset_graph(), defs.resolve_implicit_global_asset_job_def()
    with DagsterInstance.get() as inst:
        up = job.get_subset(asset_selection=AssetSelection.from_string(UPSTREAM).resolve(graph))
        assert up.execute_in_process(instance=inst).success
    b = tmp_path / "multiprocess"
    b.mkdir()
    shutil.copy(warehouse_path(a), warehouse_path(b))  # the same inputs for both
    with DagsterInstance.get() as inst:
        sel = AssetSelection.from_string(SELECTION).resolve(graph)
        assert job.get_subset(asset_selection=sel).execute_in_process(instance=inst).success

    b, _ = _home(b, monkeypatch)
    with DagsterInstance.get() as inst:
        res = execute_multiprocess(inst, TINY, b, selection=SELECTION, max_concurrent=2)
        assert res.success
        steps = _intervals(inst, res.run_id)
    models = sorted(k for k in steps if k.startswith("model_"))
    assert len(models) == 8 and "meta_learner" in steps and "validation_predictions" in steps
    # side by side: some two model steps ran at the same time
    overlaps = [(x, y) for i, x in enumerate(models) for y in models[i + 1:]
                if steps[x][0] < steps[y][1] and steps[y][0] < steps[x][1]]
    assert overlaps, steps

    ta, tb = _tables(a), _tables(b)
    assert sorted(ta) == sorted(tb)
    assert {f"model_{m}" for m in ("rf", "svm")} <= set(ta) and "validation_predictions" in ta
    for name in ta:
        assert ta[name].equals(tb[name]), f"table {name} differs between the in-process and multiprocess runs"
    preds = ta["validation_predictions"]
    assert preds.height > 0 and {"p_sell", "p_hold", "p_buy"} <= set(preds.columns)


def _hold(path: str, ready, seconds: float) -> None:
    from regime_assets.resources.warehouse import warehouse_lock

    with warehouse_lock(path):
        ready.set()
        time.sleep(seconds)


def test_the_warehouse_lock_is_exclusive_across_processes_and_reentrant_within_one(tmp_path):
    db = str(tmp_path / "warehouse.duckdb")
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(db, ready, 1.5))
    proc.start()
    try:
        assert ready.wait(60)
        t0 = time.perf_counter()
        with warehouse_lock(db), warehouse_lock(db):  # nested in one thread: passes
            waited = time.perf_counter() - t0
    finally:
        proc.join(60)
    assert waited > 0.5, f"the lock was taken while another process held it (waited {waited:.2f} s)"
    assert Path(db + ".lock").exists()


def test_the_executor_comes_from_the_environment(monkeypatch, tmp_path):
    from dagster import in_process_executor, multiprocess_executor

    from regime_assets.definitions import EXECUTOR_ENV, build_definitions, executor_from_env

    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    assert executor_from_env() is in_process_executor
    monkeypatch.setenv(EXECUTOR_ENV, "multiprocess")
    defs = build_definitions(spec_path=str(TINY), home=str(tmp_path))
    assert defs.resolve_job_def("retrain").executor_def is multiprocess_executor
    assert defs.resolve_implicit_global_asset_job_def().executor_def is multiprocess_executor
    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    with pytest.raises(ValueError, match="REGIME_ASSETS_EXECUTOR='celery'"):
        executor_from_env()
    # the model assets hold no pool slot; the other warehouse assets keep theirs
    pools = {a.key.to_user_string(): a.op.pool for a in defs.assets if getattr(a, "op", None) is not None
             and len(a.keys) == 1}
    assert pools["model_rf"] is None and pools["features"] == "warehouse"
