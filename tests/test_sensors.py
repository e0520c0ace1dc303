"""Drift and new-event sensors, the schedules, and the training-runs trigger mapping."""

from __future__ import annotations

import pytest
from dagster import AssetMaterialization, DagsterInstance, SensorResult, SkipReason, build_sensor_context

from regime_assets.assets.runs import trigger_of


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def _drift(instance, score: float):
    instance.report_runless_asset_event(AssetMaterialization(
        asset_key="drift_report", metadata={"drift_score": score, "as_of": "2020-03-20"}))


def _tick(defs, name, instance, cursor=None):
    sensor = defs.resolve_sensor_def(name)
    ctx = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    res = sensor(ctx)
    if isinstance(res, SensorResult):
        return res.run_requests or [], res.cursor, res.skip_reason
    if isinstance(res, SkipReason):
        return [], cursor, res
    return list(res or []), ctx.cursor, None


def test_drift_over_threshold_requests_one_run_then_none(tiny_defs, instance):
    _drift(instance, 0.31)
    runs, cursor, _ = _tick(tiny_defs, "drift_sensor", instance)
    assert len(runs) == 1
    assert runs[0].run_key.startswith("drift_report:")
    assert runs[0].tags["regime_assets/trigger"] == "drift sensor"
    again, cursor2, skip = _tick(tiny_defs, "drift_sensor", instance, cursor)
    assert again == [] and skip is not None
    assert cursor2 == cursor or cursor2 is None


def test_drift_at_threshold_retrains_and_below_skips_with_reason(tiny_defs, instance):
    _drift(instance, 0.15)  # the seeds' threshold: "at least" retrains
    runs, cursor, _ = _tick(tiny_defs, "drift_sensor", instance)
    assert len(runs) == 1
    _drift(instance, 0.1499)
    runs, cursor, skip = _tick(tiny_defs, "drift_sensor", instance, cursor)
    assert runs == []
    assert "0.1499" in skip.skip_message and "0.15" in skip.skip_message


def test_each_drift_record_gets_its_own_run_key(tiny_defs, instance):
    _drift(instance, 0.5)
    _drift(instance, 0.6)
    runs, _, _ = _tick(tiny_defs, "drift_sensor", instance)
    assert len(runs) == 2 and runs[0].run_key != runs[1].run_key


def test_no_drift_record_skips(tiny_defs, instance):
    runs, _, skip = _tick(tiny_defs, "drift_sensor", instance)
    assert runs == [] and "no new drift_report" in skip.skip_message


def test_new_event_sensor_keys_runs_by_event_id(tiny_defs, instance):
    instance.report_runless_asset_event(AssetMaterialization(
        asset_key="new_rare_events", metadata={"new_event_ids": ["captured_2020-02-24_2020-03-20_crash"]}))
    runs, cursor, _ = _tick(tiny_defs, "new_event_sensor", instance)  # a record from before events could grow
    assert [r.run_key for r in runs] == ["captured_2020-02-24_2020-03-20_crash"]
    assert runs[0].tags["regime_assets/trigger"] == "new-event sensor"
    again, _, skip = _tick(tiny_defs, "new_event_sensor", instance, cursor)
    assert again == [] and skip is not None
    instance.report_runless_asset_event(AssetMaterialization(asset_key="new_rare_events",
                                                             metadata={"new_event_ids": []}))
    none, _, skip = _tick(tiny_defs, "new_event_sensor", instance, cursor)
    assert none == [] and "no new event" in skip.skip_message


def test_new_event_sensor_runs_once_per_planned_extent(tiny_defs, instance):
    """An event extended over three materializations: runs only for the planned extents, keyed by extent."""
    eid = "captured_2020-02-24_crash"
    plans = [[{"event_id": eid, "extent_days": 3, "run_key": f"{eid}@3"}],
             [],  # extended to 8 days: below regrow_days, nothing planned
             [{"event_id": eid, "extent_days": 15, "run_key": f"{eid}@15"}]]
    keys, cursor = [], None
    for planned in plans:
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key="new_rare_events", metadata={"new_event_ids": [eid] if planned == plans[0] else [],
                                                   "extended_event_ids": [] if planned == plans[0] else [eid],
                                                   "retrain_runs": planned}))
        runs, cursor, _ = _tick(tiny_defs, "new_event_sensor", instance, cursor)
        keys += [r.run_key for r in runs]
        assert all(r.tags["regime_assets/event_id"] == eid for r in runs)
    assert keys == [f"{eid}@3", f"{eid}@15"]
    assert _tick(tiny_defs, "new_event_sensor", instance, cursor)[0] == []


def test_schedule_cron_and_timezone(tiny_defs):
    sched = tiny_defs.resolve_schedule_def("weekly_retrain_schedule")
    assert sched.cron_schedule == "0 21 * * 6"
    assert sched.execution_timezone == "America/New_York"
    assert sched.job_name == "retrain"
    from dagster import DefaultScheduleStatus

    assert sched.default_status == DefaultScheduleStatus.RUNNING


def test_sensors_on_by_default_and_target_retrain(tiny_defs):
    from dagster import DefaultSensorStatus

    for name in ("drift_sensor", "new_event_sensor"):
        s = tiny_defs.resolve_sensor_def(name)
        assert s.default_status == DefaultSensorStatus.RUNNING
        assert s.job_name == "retrain"


def test_retrain_job_has_max_runtime_and_leaves_monitoring_out(tiny_defs):
    job = tiny_defs.resolve_job_def("retrain")
    assert job.tags["dagster/max_runtime"] == str(4 * 3600)
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert "drift_report" not in keys and "new_rare_events" not in keys
    assert {"raw_prices", "model_lightgbm", "promotion_decision", "training_runs"} <= keys


@pytest.mark.parametrize("tags,expected", [
    ({"regime_assets/trigger": "drift sensor"}, "drift sensor"),
    ({"dagster/schedule_name": "weekly_retrain_schedule"}, "schedule"),
    ({"dagster/sensor_name": "new_event_sensor"}, "new-event sensor"),
    ({"dagster/sensor_name": "drift_sensor"}, "drift sensor"),
    ({}, "manual"),
])
def test_trigger_of(tags, expected):
    assert trigger_of(tags) == expected
