"""Killed runs: SIGKILL in the middle of a step, then run again.

Store level: a process killed inside ModelStore.save (while dumping the artifact; after the artifact, before
meta.json) leaves no version that is listed or loadable, and cleanup_incomplete removes what it left.
Graph level (the ``killed_then_rerun`` fixture, conftest.py): `regime-assets materialize` killed in a model fit
and in the promotion step, then re-run: the re-run finishes, the dead runs are marked failed and their pool
slots freed, append-only tables hold each key once, every registered model version is complete in the store,
no temporary file is left, and the DuckDB file opens with every table readable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from regime_assets.core.model_store import META_FILE, MODEL_FILE, TMP_PREFIX, ModelStore
from regime_assets.resources.warehouse import warehouse_path

ROOT = Path(__file__).resolve().parents[2]
APPEND_ONLY = {"rare_event_archive": ("event_id", "symbol", "date"), "model_versions": ("model_name", "version"),
               "training_runs": ("run_id",)}

SAVER = r"""
import sys, time
from regime_assets.core import model_store as ms

store, phase = ms.ModelStore(sys.argv[1]), sys.argv[2]
store.save("m", {"v": 1}, {"rows": 1})
print("FIRST", flush=True)

class Slow:  # pickled inside joblib.dump: the artifact's temporary file is open and half written
    def __reduce__(self):
        print("PAUSE", flush=True)
        time.sleep(120)
        return (dict, ())

if phase == "dump":
    store.save("m", {"big": bytes(1 << 16), "slow": Slow()}, {})
else:  # "meta": the artifact is in its version directory, meta.json not written yet
    real = ms.tempfile.mkstemp
    def slow_mkstemp(*a, **k):
        r = real(*a, **k)
        print("PAUSE", flush=True)
        time.sleep(120)
        return r
    ms.tempfile.mkstemp = slow_mkstemp
    store.save("m", {"v": 2}, {"rows": 2})
"""


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*")]


@pytest.mark.parametrize("phase", ["dump", "meta"])
def test_kill_inside_model_store_save_leaves_no_usable_partial_version(tmp_path, phase):
    root = tmp_path / "models"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(root), phase], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip() == "PAUSE" or time.monotonic() > deadline:
                break
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store = ModelStore(root)
    left = [p for p in _all_files(root / "m") if p.name.startswith(TMP_PREFIX)
            or (p.is_dir() and not (p / META_FILE).exists())]
    assert left, "the kill should have left a partial write behind"
    (first,) = store.versions("m")  # the half-written version is never listed ...
    assert store.latest("m") == first and store.load("m") == {"v": 1} and store.meta("m")["rows"] == 1
    removed = store.cleanup_incomplete()  # ... and cleanup removes every leftover
    assert set(removed) >= {p for p in left if p.parent == root / "m"}
    assert not [p for p in _all_files(root) if p.name.startswith(TMP_PREFIX)]
    assert [p.name for p in (root / "m").iterdir()] == [first]
    second = store.save("m", {"v": 3}, {})
    assert store.versions("m") == [first, second] and store.load("m") == {"v": 3}


# ---------------------------------------------------------------------------------------------------------------
# graph level


@pytest.mark.slow
def test_killed_runs_then_rerun_succeeds(killed_then_rerun):
    runs = killed_then_rerun.runs
    assert [r.killed_at_step for r in runs] == ["model_rf", "promotion", None]
    assert all(r.returncode == -signal.SIGKILL for r in runs[:2])
    last = runs[-1]
    assert last.returncode == 0, last.output[-3000:]
    # each run found the run killed before it and cleaned up after it
    assert [r.output.count("marked failed, its warehouse slot freed") for r in runs] == [0, 1, 1]
    assert "training_runs" in last.steps_started


@pytest.mark.slow
def test_dead_runs_are_failed_and_hold_no_pool_slot(killed_then_rerun):
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(killed_then_rerun.home / "dagster"))) as instance:
        statuses = sorted(r.status.value for r in instance.get_runs())
        storage = instance.event_log_storage
        claimed = [c for pool in storage.get_concurrency_keys()
                   for c in storage.get_concurrency_info(pool).claimed_slots]
        pending = storage.get_concurrency_run_ids()
    assert statuses == sorted([DagsterRunStatus.FAILURE.value] * 2 + [DagsterRunStatus.SUCCESS.value])
    assert claimed == [] and not pending


@pytest.mark.slow
def test_append_only_tables_hold_each_key_once_and_every_table_reads(killed_then_rerun):
    db = warehouse_path(killed_then_rerun.home)
    with duckdb.connect(str(db), read_only=True) as conn:
        tables = [r[0] for r in conn.execute("select table_name from information_schema.tables").fetchall()]
        counts = {t: conn.execute(f'select count(*) from "{t}"').fetchall()[0][0] for t in tables}
        dupes = {t: conn.execute(f'select count(*) - count(distinct ({", ".join(k)})) from "{t}"').fetchall()[0][0]
                 for t, k in APPEND_ONLY.items()}
        runs = pl.DataFrame(conn.sql("select * from training_runs").to_arrow_table())
        versions = pl.DataFrame(conn.sql("select * from model_versions").to_arrow_table())
    assert set(APPEND_ONLY) <= set(tables) and all(counts[t] > 0 for t in APPEND_ONLY), counts
    assert dupes == {t: 0 for t in APPEND_ONLY}
    assert runs.height == 1 and runs["status"].to_list() == ["success"]
    # the registry names only versions that exist, complete, in the model store
    store = ModelStore(killed_then_rerun.home / "models")
    for name, version in versions.select("model_name", "version").iter_rows():
        assert version in store.versions(name), (name, version)


@pytest.mark.slow
def test_model_store_has_no_partial_version_or_temporary_file(killed_then_rerun):
    root = killed_then_rerun.home / "models"
    assert not any(p.exists() for p in killed_then_rerun.planted)  # removed by the re-run (no run in progress)
    assert not [p for p in root.rglob(f"{TMP_PREFIX}*")]
    store = ModelStore(root)
    for mdir in (p for p in root.iterdir() if p.is_dir()):
        for vdir in mdir.iterdir():
            assert (vdir / MODEL_FILE).is_file() and (vdir / META_FILE).is_file(), vdir
        assert store.versions(mdir.name) == sorted(p.name for p in mdir.iterdir())
    assert store.cleanup_incomplete() == []
