"""The one Definitions object of the code location: assets, checks, jobs, schedules, sensors, resources.

The spec is read when the definitions load ($REGIME_ASSETS_SPEC, else the packaged spec.yaml) because the
model list in the spec decides which model assets exist.

The executor is in-process unless $REGIME_ASSETS_EXECUTOR says ``multiprocess`` (Dagster's
``multiprocess_executor``: one process per step, ``max_concurrent`` from the run config, default the CPU count):
then the model assets, which hold no pool slot, train side by side.
"""

from __future__ import annotations

import os

from dagster import Definitions, ExecutorDefinition, in_process_executor, load_asset_checks_from_modules, \
    multiprocess_executor

from regime_assets.assets import evaluation, ingest, monitoring, regimes, runs, samples, signals, training
from regime_assets.home.paths import default_home, warehouse_path
from regime_assets.resources.settings import RegimeSettings
from regime_assets.resources.warehouse import WarehouseIOManager
from regime_assets.sensors.automation import build_jobs, build_schedules, build_sensors
from regime_assets.spec import SPEC_ENV, load_spec

EXECUTOR_ENV = "REGIME_ASSETS_EXECUTOR"
EXECUTORS: dict[str, ExecutorDefinition] = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}


def executor_from_env(name: str | None = None) -> ExecutorDefinition:
    """``name`` (else $REGIME_ASSETS_EXECUTOR, else in_process) as an executor definition."""
    name = (name or os.environ.get(EXECUTOR_ENV) or "in_process").strip().replace("-", "_")
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


def build_definitions(spec_path: str | None = None, home: str | None = None, executor: str | None = None
                      ) -> Definitions:
    spec_path = spec_path or os.environ.get(SPEC_ENV)
    executor_def = executor_from_env(executor)
    spec = load_spec(spec_path)
    home_path = default_home() if home is None else __import__("pathlib").Path(home).resolve()
    settings = RegimeSettings(spec_path=spec_path, home=str(home_path))
    assets = [
        ingest.ingest_prices, ingest.market_context,
        regimes.regime_labels,
        samples.features, samples.labeled_samples, samples.rare_event_archive, samples.error_replay_buffer,
        samples.training_set, samples.regime_validation_sets, samples.balanced_training_set,
        samples.sample_weights,
        *training.training_assets(spec),
        *evaluation.evaluation_assets(spec),
        monitoring.drift_report, monitoring.new_rare_events, monitoring.replay_timeline,
        runs.training_runs,
    ]
    assets += signals.signals_assets(assets)  # signal_backtest joins once walk_forward_predictions exists
    checks = load_asset_checks_from_modules([ingest, regimes, samples, evaluation])
    materialize_all, retrain, monitoring_job = build_jobs(spec, executor_def)
    schedules = build_schedules(spec, retrain, monitoring_job)
    sensors = build_sensors(spec, retrain, runs.failure_recorder(settings), [retrain, materialize_all])
    home_path.mkdir(parents=True, exist_ok=True)
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[materialize_all, retrain, monitoring_job],
        schedules=schedules,
        sensors=sensors,
        resources={
            "settings": settings,
            "io_manager": WarehouseIOManager(database=str(warehouse_path(home_path))),
        },
        executor=executor_def,
    )


defs = build_definitions()
