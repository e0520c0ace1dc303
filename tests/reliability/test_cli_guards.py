"""CLI guards found by the reliability tests: a run whose process died gives back its pool slot, and a
--select that matches nothing (or only part of a multi-asset) does not run the whole graph."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from regime_assets.cli import HOST_TAG, PID_TAG, main, reclaim_dead_runs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def pooled_instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    overrides = {"concurrency": {"pools": {"default_limit": 1}}, "telemetry": {"enabled": False}}
    with DagsterInstance.local_temp(str(tmp_path / "dagster"), overrides=overrides) as inst:
        inst.event_log_storage.set_concurrency_slots("warehouse", 1)
        yield inst


def _started_run(instance, pid: int, host: str | None = None):
    run = create_run_for_test(instance, job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED,
                              tags={PID_TAG: str(pid), HOST_TAG: host or socket.gethostname()})
    claim = instance.event_log_storage.claim_concurrency_slot("warehouse", run.run_id, "model_rf")
    assert claim.is_claimed
    return run


def _claimed(instance) -> set[str]:
    return {c.run_id for c in instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots}


def test_a_dead_run_is_failed_and_its_slot_freed_a_live_one_is_left_alone(pooled_instance, tmp_path):
    dead = _started_run(pooled_instance, _dead_pid())
    assert _claimed(pooled_instance) == {dead.run_id}
    store = tmp_path / "models" / "model_rf"
    store.mkdir(parents=True)
    (store / ".tmp-leftover").write_bytes(b"x")
    assert reclaim_dead_runs(pooled_instance, tmp_path) == [dead.run_id]
    assert pooled_instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert _claimed(pooled_instance) == set()
    assert not (store / ".tmp-leftover").exists()  # nothing in progress: the store's leftovers are removed

    live = _started_run(pooled_instance, os.getpid())
    (store / ".tmp-in-flight").write_bytes(b"x")
    assert reclaim_dead_runs(pooled_instance, tmp_path) == []
    assert pooled_instance.get_run_by_id(live.run_id).status == DagsterRunStatus.STARTED
    assert _claimed(pooled_instance) == {live.run_id}
    assert (store / ".tmp-in-flight").exists()  # a run is in progress: its temporary files are not touched


def test_runs_of_another_host_or_without_a_pid_are_left_alone(pooled_instance):
    other = _started_run(pooled_instance, _dead_pid(), host="another-host.invalid")
    assert reclaim_dead_runs(pooled_instance) == []
    assert pooled_instance.get_run_by_id(other.run_id).status == DagsterRunStatus.STARTED
    assert _claimed(pooled_instance) == {other.run_id}


@pytest.mark.parametrize("selection,expected", [
    ("key:no_such_asset", "matches no asset"),
    ("key:((", "Invalid selection"),
])
def test_a_selection_that_selects_nothing_is_an_error_not_the_whole_graph(selection, expected, tmp_path,
                                                                          tiny_spec_path, monkeypatch, capsys):
    for var in ("DAGSTER_HOME", "REGIME_ASSETS_SPEC", "REGIME_ASSETS_HOME"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    home = tmp_path / "home"
    rc = main(["materialize", "--spec", tiny_spec_path, "--home", str(home), "--select", selection])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err, err
    assert not (home / "warehouse.duckdb").exists()


def test_selecting_one_output_of_a_multi_asset_brings_its_siblings(tiny_defs):
    from dagster import AssetSelection

    keys = AssetSelection.from_string("key:promotion_decision").required_multi_asset_neighbors().resolve(
        tiny_defs.resolve_asset_graph())
    assert {k.to_user_string() for k in keys} == {"promotion_decision", "model_versions"}
    tiny_defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)  # no subset error
