"""A PostgreSQL-backed Dagster instance (dagster-postgres: run, event-log and schedule storage) on a real server
started by the test (tests/_postgres.py): the tiny graph through `regime-assets materialize`, a schedule tick and
a sensor-triggered run, and the pool limits (Dagster issue #33552)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    asset,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from regime_assets.home.instance import pin_pool_limits, postgres_instance_yaml
from tests._postgres import start_postgres

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "specs" / "tiny.yaml"


@pytest.fixture(scope="module")
def pg():
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def pg_home(pg, tmp_path, request, monkeypatch):
    """A DAGSTER_HOME whose dagster.yaml puts every storage on a new database of the test server (password from
    $DAGSTER_PG_PASSWORD, as the docs' config does; the server trusts 127.0.0.1)."""
    db = pg.create_database(re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:60])
    dhome = tmp_path / "dagster"
    dhome.mkdir()
    (dhome / "dagster.yaml").write_text(postgres_instance_yaml(hostname=pg.host, port=pg.port, username=pg.user,
                                                               db_name=db))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused-with-trust")
    return dhome


def _instance(dhome: Path) -> DagsterInstance:
    return DagsterInstance.from_config(str(dhome))


def _env(monkeypatch, home: Path, dhome: Path | None = None) -> None:
    for var, val in (("REGIME_ASSETS_SPEC", str(TINY)), ("REGIME_ASSETS_HOME", str(home))):
        monkeypatch.setenv(var, val)
    monkeypatch.delenv("REGIME_ASSETS_EXECUTOR", raising=False)
    if dhome is not None:
        monkeypatch.setenv("DAGSTER_HOME", str(dhome))  # restored after the test (the CLI sets it too)


def _execute_requested(instance, job_name: str, request):
    """Create the run a schedule or sensor asked for on ``instance`` and execute it, as a run launcher would: the
    job reconstructed from the code location (regime_assets.execution:env_definitions)."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run

    recon = ReconstructableRepository.for_module("regime_assets.execution", "env_definitions",
                                                 working_directory=str(ROOT)).get_reconstructable_job(job_name)
    job_def = recon.get_definition()
    run = instance.create_run_for_job(job_def=job_def, run_config=request.run_config,
                                      tags={**job_def.run_tags, **request.tags}, job_code_origin=recon.get_python_origin())
    result = execute_run(recon, run, instance)
    return run, result


def _record_tick(instance, name: str, kind, run_ids: list[str], run_keys: list[str]):
    from dagster._core.scheduler.instigation import TickData, TickStatus

    tick = instance.create_tick(TickData(
        instigator_origin_id=f"regime_assets:{name}", instigator_name=name, instigator_type=kind,
        status=TickStatus.STARTED, timestamp=dt.datetime.now(dt.UTC).timestamp(), selector_id=f"selector:{name}"))
    for i, run_id in enumerate(run_ids):
        tick = tick.with_run_info(run_id, run_keys[i] if i < len(run_keys) else None)
    instance.update_tick(tick.with_status(TickStatus.SUCCESS))
    return instance.get_ticks(f"regime_assets:{name}", f"selector:{name}")


def test_postgres_instance_pool_limits_are_set_explicitly_and_hold(pg_home):
    """Issue #33552 in the locked Dagster: a pool whose limit came from `default_limit` is re-initialised when the
    default changes (or by two processes at once) with an INSERT-then-UPDATE that aborts the PostgreSQL
    transaction. pin_pool_limits sets the limit explicitly, and runs then claim and hold it."""

    @asset(pool="warehouse")
    def pooled() -> int:
        return 1

    with _instance(pg_home) as inst:
        assert type(inst.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(inst.run_storage).__name__ == "PostgresRunStorage"
        assert type(inst.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert materialize([pooled], instance=inst).success  # the first claim fills the limit from the default
        assert {(p.name, p.limit, p.from_default) for p in inst.event_log_storage.get_pool_limits()} == {
            ("warehouse", 1, True)}
    (pg_home / "dagster.yaml").write_text((pg_home / "dagster.yaml").read_text().replace("default_limit: 1",
                                                                                         "default_limit: 2"))
    with _instance(pg_home) as inst:
        failed = materialize([pooled], instance=inst, raise_on_error=False)
        text = " ".join(str(e.event_specific_data) for e in failed.all_events if e.is_failure)
        # the locked version still has the bug; when this no longer fails, Dagster fixed #33552
        assert not failed.success and "InFailedSqlTransaction" in text, "Dagster #33552 no longer reproduces"
        assert pin_pool_limits(inst) == {"warehouse": 2}
        assert pin_pool_limits(inst) == {}  # set once; nothing to do after
        assert materialize([pooled], instance=inst).success
        storage = inst.event_log_storage
        assert {(p.name, p.limit, p.from_default) for p in storage.get_pool_limits()} == {("warehouse", 2, False)}
        storage.free_concurrency_slots_for_run("a")
        assert storage.claim_concurrency_slot("warehouse", "a", "s1").is_claimed
        assert storage.claim_concurrency_slot("warehouse", "a", "s2").is_claimed
        assert not storage.claim_concurrency_slot("warehouse", "b", "s3").is_claimed  # two slots, both held
        storage.free_concurrency_slots_for_run("a")
        assert storage.claim_concurrency_slot("warehouse", "b", "s3").is_claimed


@pytest.mark.timeout(300)
def test_the_tiny_graph_through_the_cli_on_postgres(pg_home, tmp_path, monkeypatch):
    from regime_assets import cli

    home = tmp_path / "home"
    _env(monkeypatch, home, pg_home)
    assert cli.main(["materialize", "--spec", str(TINY), "--home", str(home)]) == 0
    assert (pg_home / "dagster.yaml").read_text().startswith("# Dagster instance for regime_assets on PostgreSQL")
    with _instance(pg_home) as inst:
        runs = inst.get_run_records(filters=RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
        assert len(runs) == 1 and runs[0].dagster_run.tags["regime_assets/trigger"] == "manual"
        for key in ("raw_prices", "model_rf", "meta_learner", "validation_predictions", "model_versions",
                    "drift_report", "training_runs"):
            assert inst.get_latest_materialization_event(_key(key)) is not None, key
        # prepare_environment pinned the warehouse pool on PostgreSQL
        assert [(p.name, p.from_default) for p in inst.event_log_storage.get_pool_limits()] == [("warehouse", False)]


def _key(name: str):
    from dagster import AssetKey

    return AssetKey(name)


@pytest.mark.timeout(300)
def test_a_schedule_tick_and_its_run_on_postgres(pg_home, tmp_path, monkeypatch):
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus

    from regime_assets.definitions import build_definitions

    home = tmp_path / "home"
    _env(monkeypatch, home)
    defs = build_definitions(spec_path=str(TINY), home=str(home))
    schedule = defs.resolve_schedule_def("daily_monitoring_schedule")
    with _instance(pg_home) as inst:
        when = dt.datetime(2026, 12, 1, 18, 30, tzinfo=dt.UTC)
        ctx = build_schedule_context(instance=inst, scheduled_execution_time=when)
        data = schedule.evaluate_tick(ctx)
        assert len(data.run_requests) == 1
        req = data.run_requests[0]
        assert req.tags["regime_assets/trigger"] == "schedule"
        run, result = _execute_requested(inst, schedule.job_name, req)
        assert result.success
        assert inst.get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS
        assert inst.get_latest_materialization_event(_key("drift_report")).run_id == run.run_id
        ticks = _record_tick(inst, schedule.name, InstigatorType.SCHEDULE, [run.run_id], [])
        assert [(t.status, list(t.run_ids)) for t in ticks] == [(TickStatus.SUCCESS, [run.run_id])]


@pytest.mark.timeout(300)
def test_a_sensor_triggered_run_on_postgres(pg_home, tmp_path, monkeypatch):
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus

    from regime_assets.definitions import build_definitions

    home = tmp_path / "home"
    _env(monkeypatch, home)
    defs = build_definitions(spec_path=str(TINY), home=str(home))
    sensor = defs.resolve_sensor_def("drift_sensor")
    with _instance(pg_home) as inst:
        inst.report_runless_asset_event(AssetMaterialization(
            asset_key="drift_report", metadata={"drift_score": 0.4, "as_of": "2020-03-20"}))
        ctx = build_sensor_context(instance=inst, definitions=defs)
        data = sensor.evaluate_tick(ctx)  # reads the drift record back from the PostgreSQL event log
        assert len(data.run_requests) == 1
        req = data.run_requests[0]
        assert req.run_key.startswith("drift_report:") and req.tags["regime_assets/trigger"] == "drift sensor"
        run, result = _execute_requested(inst, sensor.job_name, req)
        assert result.success
        stored = inst.get_run_by_id(run.run_id)
        assert stored.status == DagsterRunStatus.SUCCESS and stored.tags["regime_assets/trigger"] == "drift sensor"
        assert inst.get_latest_materialization_event(_key("meta_learner")).run_id == run.run_id
        ticks = _record_tick(inst, sensor.name, InstigatorType.SENSOR, [run.run_id], [req.run_key])
        assert [(t.status, list(t.run_keys)) for t in ticks] == [(TickStatus.SUCCESS, [req.run_key])]
        # the cursor moved past the record: the next tick asks for nothing
        again = sensor.evaluate_tick(build_sensor_context(instance=inst, definitions=defs, cursor=data.cursor))
        assert again.run_requests == []
