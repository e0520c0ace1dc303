"""Runs this software starts carry their host and pid; after a killed process, ``reclaim_dead_runs`` cleans up."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

PID_TAG = "regime_assets/pid"
HOST_TAG = "regime_assets/host"
_ACTIVE = ("STARTING", "STARTED", "CANCELING")


def process_tags() -> dict[str, str]:
    """The tags that let ``reclaim_dead_runs`` tell a run whose process is gone."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def reclaim_dead_runs(instance, home: Path | None = None, models: str | None = None) -> list[str]:
    """Clean up after runs whose process died (SIGKILL, OOM, power loss) so the next run does not wait forever.

    A run this CLI started carries its host and pid as tags; one that is still STARTING/STARTED/CANCELING while
    its process on this host is gone is marked failed. Concurrency slots (the ``warehouse`` pool) claimed by runs
    that are no longer in progress are freed: Dagster frees them only when the step ends, so a killed run would
    otherwise hold the one slot forever. When no run is left in progress, nothing can be writing the model store,
    and its incomplete versions and temporary files are removed (``ModelStore.cleanup_incomplete``; the store is
    ``models`` or the home's, see ``paths.models_root``). Returns the ids of the runs marked failed."""
    from dagster import DagsterRunStatus, RunsFilter

    active = [DagsterRunStatus[s] for s in _ACTIVE]
    host = socket.gethostname()
    dead: list[str] = []
    for rec in instance.get_run_records(filters=RunsFilter(statuses=active)):
        run = rec.dagster_run
        pid = run.tags.get(PID_TAG)
        if run.tags.get(HOST_TAG) != host or not (pid or "").isdigit() or _pid_alive(int(pid)):
            continue
        instance.report_run_failed(run, f"run process {pid} on {host} is gone (killed or crashed); marked failed "
                                        "by regime-assets before the next run")
        dead.append(run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = set(storage.get_concurrency_run_ids())
        for pool in storage.get_concurrency_keys():
            holders |= {c.run_id for c in storage.get_concurrency_info(pool).claimed_slots}
        still = {r.dagster_run.run_id for r in instance.get_run_records(
            filters=RunsFilter(run_ids=sorted(holders), statuses=active))} if holders else set()
        for run_id in sorted(holders - still):
            storage.free_concurrency_slots_for_run(run_id)
    for run_id in dead:
        print(f"note: run {run_id} was left running by a process that is gone: marked failed, its warehouse "
              "slot freed", file=sys.stderr)
    if home is not None and not instance.get_run_records(filters=RunsFilter(statuses=active), limit=1):
        from regime_assets.core.model_store import ModelStore
        from regime_assets.home.paths import models_root

        ModelStore(models_root(home, models)).cleanup_incomplete()
    return dead
