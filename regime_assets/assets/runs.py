"""The training-runs log: one append-only row per retraining run, failed runs included."""


import datetime as dt
import json
import time

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from regime_assets.assets._meta import md, num
from regime_assets.resources.settings import RegimeSettings
from regime_assets.resources.warehouse import APPEND_KEY, DEFAULT_SCHEMA, write_table
from regime_assets.sensors.automation import TRIGGER_TAG

RUNS_KEY = ["run_id"]
RUNS_SCHEMA = {
    "run_id": pl.Utf8, "job": pl.Utf8, "trigger": pl.Utf8, "status": pl.Utf8, "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"), "duration_seconds": pl.Float64, "spec_hash": pl.Utf8,
    "as_of": pl.Utf8, "train_rows": pl.Int64, "validation_rows": pl.Int64, "challenger": pl.Utf8,
    "challenger_version": pl.Utf8, "primary_metric": pl.Utf8, "challenger_score": pl.Float64,
    "champion_score": pl.Float64, "promoted": pl.Boolean, "reason": pl.Utf8, "metrics": pl.Utf8, "error": pl.Utf8,
}


def trigger_of(tags: dict[str, str]) -> str:
    """schedule / drift sensor / new-event sensor / manual, from a run's tags."""
    if tags.get(TRIGGER_TAG):
        return tags[TRIGGER_TAG]
    if tags.get("dagster/schedule_name"):
        return "schedule"
    sensor = tags.get("dagster/sensor_name", "")
    if sensor == "drift_sensor":
        return "drift sensor"
    if sensor == "new_event_sensor":
        return "new-event sensor"
    return "manual"


def _run_start(instance, run_id: str) -> dt.datetime:
    rec = instance.get_run_record_by_id(run_id)
    ts = getattr(rec, "start_time", None) if rec is not None else None
    if ts is None:
        ts = getattr(rec, "create_timestamp", None)
        if ts is not None:
            return ts.astimezone(dt.UTC)
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def runs_row(**kw) -> pl.DataFrame:
    base = {k: None for k in RUNS_SCHEMA}
    base.update(kw)
    return pl.DataFrame([base], schema=RUNS_SCHEMA)


@asset(group_name="automation", owners=["team:ml-engineering"], kinds={"duckdb"}, pool="warehouse",
       metadata={APPEND_KEY: RUNS_KEY},
       description="One row per retraining run: run id, trigger (schedule, drift sensor, new-event sensor, manual), "
                   "spec hash, as-of date, rows, duration, headline metrics, promoted or not and why. Append-only; "
                   "failed runs get a row from the failure sensor.")
def training_runs(context: AssetExecutionContext, settings: RegimeSettings, training_set: pl.DataFrame,
                  promotion_decision: pl.DataFrame) -> Output[pl.DataFrame]:
    spec = settings.spec
    tags = context.run.tags if context.run else {}
    started = _run_start(context.instance, context.run.run_id)
    now = dt.datetime.now(dt.UTC)
    d = promotion_decision.row(0, named=True) if promotion_decision.height else {}
    row = runs_row(
        run_id=context.run.run_id, job=context.job_name, trigger=trigger_of(dict(tags)), status="success",
        started_at=started, finished_at=now, duration_seconds=(now - started).total_seconds(),
        spec_hash=spec.spec_hash, as_of=str(training_set["date"].max()),
        train_rows=int((training_set["split"] == "train").sum()),
        validation_rows=int((training_set["split"] == "validation").sum()),
        challenger=d.get("challenger"), challenger_version=d.get("challenger_version"),
        primary_metric=d.get("primary_metric"), challenger_score=d.get("challenger_score"),
        champion_score=d.get("champion_score"), promoted=d.get("promoted"), reason=d.get("reason"),
        metrics=d.get("metrics"))
    return Output(row, metadata={
        "run": md(row.select("run_id", "trigger", "status", "duration_seconds", "promoted", "reason")),
        "trigger": MetadataValue.text(row["trigger"][0]),
        "duration_seconds": num(round(row["duration_seconds"][0], 1)),
        "promoted": MetadataValue.bool(bool(d.get("promoted"))),
    })


def failure_recorder(settings: RegimeSettings):
    """A function for the run-failure sensor: append a 'failure' row for the failed run (idempotent by run id)."""

    def record(context) -> None:
        run = context.dagster_run
        msg = context.failure_event.message if context.failure_event else "failed"
        step_failures = []
        try:
            for ev in context.get_step_failure_events():
                err = ev.event_specific_data.error if ev.event_specific_data else None
                step_failures.append(f"{ev.step_key}: {err.message.strip().splitlines()[0] if err else ''}")
        except Exception:  # older instances: the run message is enough
            pass
        started = _run_start(context.instance, run.run_id)
        now = dt.datetime.now(dt.UTC)
        row = runs_row(run_id=run.run_id, job=run.job_name, trigger=trigger_of(dict(run.tags)), status="failure",
                       started_at=started, finished_at=now, duration_seconds=(now - started).total_seconds(),
                       spec_hash=settings.spec.spec_hash, promoted=False,
                       reason="run failed", error=("; ".join(step_failures) or msg)[:2000],
                       metrics=json.dumps({}))
        for attempt in range(3):
            try:
                with settings.connect() as conn:
                    write_table(conn, DEFAULT_SCHEMA, "training_runs", row, RUNS_KEY)
                return
            except RuntimeError:
                time.sleep(2 * (attempt + 1))

    return record
