"""Repeated triggers: one drift record / one event id seen by many sensor ticks starts one run.

The sensors key their run requests (``drift_report:<storage id>``, the event id); Dagster's sensor daemon skips a
request whose run key already has a run. Here the real daemon iteration (``execute_sensor_iteration``) evaluates
the sensors against an instance whose run coordinator only queues runs (nothing executes), with the sensor's
cursor reset before every tick, as after a daemon crash between launching runs and storing the cursor.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from dagster import AssetMaterialization, DagsterInstance, RunsFilter, SensorResult, build_sensor_context
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._time import get_current_datetime

TICKS = 6
EVENT = "captured_2020-02-24_2020-03-20_crash"


@pytest.fixture
def queued_instance(tmp_path):
    """A persistent instance whose runs are only queued (no daemon dequeues them, nothing executes)."""
    overrides = {"run_coordinator": {"module": "dagster._core.run_coordinator",
                                     "class": "QueuedRunCoordinator"},
                 "telemetry": {"enabled": False}}
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster"), overrides=overrides) as inst:
        yield inst


@pytest.fixture
def workspace(queued_instance, tmp_path, home, tiny_spec_path):
    code = tmp_path / "location.py"
    code.write_text("from regime_assets.definitions import build_definitions\n"
                    f"defs = build_definitions({tiny_spec_path!r}, {str(home)!r})\n")
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(code), attribute="defs"))
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), queued_instance) as ctx:
        yield ctx


def _ticks(workspace, instance, sensor_name: str, n: int) -> None:
    """``n`` daemon iterations, minutes apart, with the sensor's cursor cleared before each."""
    start = get_current_datetime()
    for i in range(n):
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.name == sensor_name and state.instigator_data is not None:
                instance.update_instigator_state(state.with_data(state.instigator_data._replace(cursor=None)))
        with freeze_time(start + dt.timedelta(minutes=5 * (i + 1))):
            list(execute_sensor_iteration(workspace, logging.getLogger("test_sensor_daemon"), None, None))


def _runs_of(instance, sensor_name: str):
    return instance.get_runs(filters=RunsFilter(tags={SENSOR_NAME_TAG: sensor_name}))


def _sensor_ticks(instance, sensor_name: str):
    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
              if s.name == sensor_name]
    assert len(states) == 1
    return instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id)


def test_one_drift_record_seen_by_many_ticks_starts_one_run(workspace, queued_instance):
    queued_instance.report_runless_asset_event(AssetMaterialization(
        asset_key="drift_report", metadata={"drift_score": 0.42, "as_of": "2020-03-20"}))
    _ticks(workspace, queued_instance, "drift_sensor", TICKS)
    runs = _runs_of(queued_instance, "drift_sensor")
    assert len(runs) == 1, [r.tags for r in runs]
    assert runs[0].tags[RUN_KEY_TAG].startswith("drift_report:")
    assert runs[0].job_name == "retrain" and runs[0].tags["regime_assets/trigger"] == "drift sensor"
    ticks = _sensor_ticks(queued_instance, "drift_sensor")
    assert len(ticks) == TICKS  # every tick did evaluate the record again ...
    assert sum(1 for t in ticks if t.status == TickStatus.SUCCESS) == 1  # ... and only the first launched
    assert all(t.status == TickStatus.SKIPPED for t in ticks if t.run_ids == [])


def test_one_event_id_in_two_captures_and_many_ticks_starts_one_run(workspace, queued_instance):
    for _ in range(2):  # e.g. a re-executed monitoring run that reports the same capture again
        queued_instance.report_runless_asset_event(AssetMaterialization(
            asset_key="new_rare_events", metadata={"new_event_ids": [EVENT]}))
    _ticks(workspace, queued_instance, "new_event_sensor", TICKS)
    runs = _runs_of(queued_instance, "new_event_sensor")
    assert [r.tags[RUN_KEY_TAG] for r in runs] == [EVENT]
    assert runs[0].tags["regime_assets/event_id"] == EVENT


def test_sensor_requests_are_stable_across_repeated_evaluations(tiny_defs):
    """Without the daemon: the same records evaluated again (cursor not advanced) give the same run keys."""
    with DagsterInstance.ephemeral() as instance:
        for score in (0.2, 0.9):
            instance.report_runless_asset_event(AssetMaterialization(
                asset_key="drift_report", metadata={"drift_score": score}))
        sensor = tiny_defs.resolve_sensor_def("drift_sensor")
        keys = []
        for _ in range(TICKS):
            res = sensor(build_sensor_context(instance=instance, cursor=None, definitions=tiny_defs))
            assert isinstance(res, SensorResult)
            keys.append(tuple(r.run_key for r in res.run_requests))
    assert len(set(keys)) == 1 and len(keys[0]) == 2 and len(set(keys[0])) == 2
