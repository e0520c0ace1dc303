"""Jobs, the weekly retraining schedule, the drift and new-event sensors, and the failed-run recorder."""


import json
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    run_failure_sensor,
    sensor,
)

from regime_assets.spec import Spec

TRIGGER_TAG = "regime_assets/trigger"
TRIGGERS = ("schedule", "drift sensor", "new-event sensor", "manual")
MONITORING_ASSETS = ["drift_report", "new_rare_events"]
RESEARCH_ASSETS: list[str] = []
DATA_ASSETS = ["raw_prices", "index_prices", "sectors", "market_context", "regime_labels", "features",
               "labeled_samples"]


def build_jobs(spec: Spec, executor_def=in_process_executor):
    """The three jobs, all on ``executor_def`` (in-process unless the definitions choose another)."""
    run_tags = {"dagster/max_runtime": str(spec.automation.max_runtime_seconds)}
    materialize_all = define_asset_job(
        "materialize_all", selection=AssetSelection.all(), executor_def=executor_def, tags=run_tags,
        description="The whole graph: ingest through training, evaluation, promotion, SHAP and monitoring.")
    retrain = define_asset_job(
        "retrain", selection=AssetSelection.all() - AssetSelection.assets(*MONITORING_ASSETS, *RESEARCH_ASSETS),
        executor_def=executor_def, tags=run_tags,
        description="Refresh the data and retrain: ingest through evaluation, promotion and the training-runs log "
                    "(the monitoring assets are left out so a retraining run never re-triggers itself; the "
                    "walk-forward runs here too: the gate decides on it, and unchanged folds come from the fold "
                    "store).")
    monitoring = define_asset_job(
        "monitoring", selection=AssetSelection.assets(*DATA_ASSETS, *MONITORING_ASSETS),
        executor_def=executor_def, tags=run_tags,
        description="Refresh the data, the drift report and new rare events (the sensors act on the results).")
    return materialize_all, retrain, monitoring


def build_schedules(spec: Spec, retrain_job, monitoring_job) -> list[ScheduleDefinition]:
    a = spec.automation
    status = DefaultScheduleStatus.RUNNING if a.schedule_enabled else DefaultScheduleStatus.STOPPED
    return [
        ScheduleDefinition(
            name="weekly_retrain_schedule", job=retrain_job, cron_schedule=a.schedule_cron,
            execution_timezone=a.timezone, default_status=status, tags={TRIGGER_TAG: "schedule"},
            description=f"Retrain every week ({a.schedule_cron}, {a.timezone})."),
        ScheduleDefinition(
            name="daily_monitoring_schedule", job=monitoring_job, cron_schedule=a.monitoring_cron,
            execution_timezone=a.timezone, default_status=status, tags={TRIGGER_TAG: "schedule"},
            description=f"Refresh prices, drift and rare events after the close ({a.monitoring_cron})."),
    ]


def _records(context: SensorEvaluationContext, key: str, limit: int = 50):
    after = int(context.cursor) if context.cursor else None
    res = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(key), after_storage_id=after), limit=limit, ascending=True)
    return res.records


def _meta_value(mat, name: str) -> Any:
    v = mat.metadata.get(name)
    return None if v is None else v.value


def drift_decisions(records, threshold: float) -> tuple[list[RunRequest], list[str], int | None]:
    """Run requests for drift_report records whose score is at least the threshold; reasons for the others."""
    runs, skips, last = [], [], None
    for rec in records:
        last = rec.storage_id
        mat = rec.asset_materialization
        score = _meta_value(mat, "drift_score") if mat else None
        if score is None or isinstance(score, str):
            skips.append(f"drift_report record {rec.storage_id} has no drift score")
            continue
        if float(score) >= threshold:
            runs.append(RunRequest(
                run_key=f"drift_report:{rec.storage_id}",
                tags={TRIGGER_TAG: "drift sensor", "regime_assets/drift_score": f"{float(score):.4f}",
                      "regime_assets/drift_record": str(rec.storage_id)}))
        else:
            skips.append(f"drift score {float(score):.4f} < retrain threshold {threshold} "
                         f"(record {rec.storage_id})")
    return runs, skips, last


def event_decisions(records) -> tuple[list[RunRequest], int | None]:
    """One run request per planned run of a new_rare_events record (``retrain_runs``: a new event, or one grown
    by ``capture.regrow_days``), run key ``event_id@extent_days`` -- the same extent never starts two runs.
    A record written before events could grow names only ``new_event_ids`` (run key = the event id)."""
    runs, last = [], None
    for rec in records:
        last = rec.storage_id
        mat = rec.asset_materialization
        planned = _meta_value(mat, "retrain_runs") if mat else None
        if isinstance(planned, str):
            planned = json.loads(planned)
        if planned is None:
            ids = _meta_value(mat, "new_event_ids") if mat else None
            if isinstance(ids, str):
                ids = json.loads(ids)
            planned = [{"event_id": str(e), "extent_days": None, "run_key": str(e)} for e in ids or []]
        for p in planned:
            tags = {TRIGGER_TAG: "new-event sensor", "regime_assets/event_id": str(p["event_id"])}
            if p.get("extent_days") is not None:
                tags["regime_assets/event_extent_days"] = str(p["extent_days"])
            runs.append(RunRequest(run_key=str(p["run_key"]), tags=tags))
    return runs, last


def build_sensors(spec: Spec, retrain_job, record_failure, monitored_jobs: list) -> list:
    a = spec.automation
    status = DefaultSensorStatus.RUNNING if a.sensors_enabled else DefaultSensorStatus.STOPPED
    threshold = spec.drift.retrain_threshold

    @sensor(name="drift_sensor", job=retrain_job, minimum_interval_seconds=a.sensor_interval_seconds,
            default_status=status,
            description=f"Retrains when a new drift_report has drift_score >= {threshold} (run_key = the "
                        "materialization's storage id, so one record never starts two runs).")
    def drift_sensor(context: SensorEvaluationContext):
        records = _records(context, "drift_report")
        if not records:
            return SkipReason("no new drift_report materialization")
        runs, skips, last = drift_decisions(records, threshold)
        if not runs:
            return SensorResult(skip_reason=SkipReason("; ".join(skips)), cursor=str(last))
        return SensorResult(run_requests=runs, cursor=str(last))

    @sensor(name="new_event_sensor", job=retrain_job, minimum_interval_seconds=a.sensor_interval_seconds,
            default_status=status,
            description="Retrains when new_rare_events captures a new event or an event grows by "
                        f"{spec.capture.regrow_days} trading days (run_key = event id @ extent in trading days).")
    def new_event_sensor(context: SensorEvaluationContext):
        records = _records(context, "new_rare_events")
        if not records:
            return SkipReason("no new new_rare_events materialization")
        runs, last = event_decisions(records)
        if not runs:
            return SensorResult(skip_reason=SkipReason("no new event and no event grown enough in the latest captures"), cursor=str(last))
        return SensorResult(run_requests=runs, cursor=str(last))

    @run_failure_sensor(name="training_run_failure_recorder", monitored_jobs=monitored_jobs,
                        default_status=status, minimum_interval_seconds=a.sensor_interval_seconds,
                        description="Leaves a row in training_runs for every failed retraining run.")
    def failure_recorder(context: RunFailureSensorContext):
        record_failure(context)

    return [drift_sensor, new_event_sensor, failure_recorder]
