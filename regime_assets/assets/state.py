"""Reads of stored state that is not a graph edge: captured events and the current production model.

These are read from the warehouse directly (not as asset inputs) so the graph stays acyclic: the archive
includes events captured by the monitoring group, and the replay buffer and drift report use the production
model chosen by an earlier run.
"""


import datetime as dt

import polars as pl

from regime_assets.core import registry
from regime_assets.resources.settings import RegimeSettings
from regime_assets.resources.warehouse import DEFAULT_SCHEMA, read_table
from regime_assets.spec import EventSpec, Spec


def stored_table(settings: RegimeSettings, table: str) -> pl.DataFrame | None:
    if not settings.database.exists():
        return None
    with settings.connect() as conn:
        return read_table(conn, DEFAULT_SCHEMA, table)


def captured_events(settings: RegimeSettings) -> list[EventSpec]:
    """Events appended by `new_rare_events` (its table is append-only, keyed by event_id)."""
    df = stored_table(settings, "new_rare_events")
    if df is None or df.height == 0:
        return []
    seeded = {e.id for e in settings.spec.events}
    out = []
    for r in df.unique("event_id", keep="first").sort("start").iter_rows(named=True):
        if r["event_id"] in seeded:
            continue
        out.append(EventSpec(id=r["event_id"], start=r["start"], end=r["end"], regime=r["regime"],
                             weight=float(r["weight"]), description=f"captured ({r.get('trigger', '')})"))
    return out


def production_record(settings: RegimeSettings) -> dict | None:
    """The current production model's registry row, or None when no model was promoted yet."""
    return registry.production_record(stored_table(settings, "model_versions"))


def production_model(settings: RegimeSettings) -> tuple[dict | None, registry.RegisteredModel | None]:
    """(registry row, loaded model) of the current production version; (None, None) before any promotion."""
    return registry.load_production(settings.model_store, stored_table(settings, "model_versions"))


def recent_labeled(labeled: pl.DataFrame, spec: Spec, as_of: dt.date | None = None) -> pl.DataFrame:
    """Labelled rows of the rolling training window ending at the as-of date."""
    lab = labeled.filter(pl.col("label").is_not_null())
    if lab.height == 0:
        return lab
    end = as_of or spec.training_set.as_of or lab["date"].max()
    start = end - dt.timedelta(days=int(round(spec.training_set.window_years * 365.25)))
    return lab.filter((pl.col("date") > start) & (pl.col("date") <= end))
