"""Processes that start together on a fresh Dagster home and take the one slot of a pool in turns.

    python tests/reliability/pool_stress.py DAGSTER_HOME WORKERS CYCLES [plain]

The home gets the dagster.yaml `regime-assets` writes (pool default limit 1, the pool-safe event log), or with
``plain`` the same without the ``event_log_storage`` entry (Dagster's own SqliteEventLogStorage). Every worker
first initialises the pool to its default limit, as the executor does on a pool's first use, then claims the
slot (retrying until granted), creates a marker file with O_EXCL while it holds it (a second holder finds the
marker: a double claim), removes it and frees the slot. Prints one JSON line: claims, double claims and the
pool's slot count at the end (more than 1: the first-use initialisation raced).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time

POOL = "warehouse"


def _instance(home: str):
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    os.environ["DAGSTER_HOME"] = home
    return DagsterInstance.from_ref(InstanceRef.from_dir(home))


def worker(home: str, wid: int, cycles: int, start, out) -> None:
    instance = _instance(home)
    storage = instance.event_log_storage
    marker = os.path.join(home, "holder")
    doubles = claims = 0
    start.wait()
    storage.initialize_concurrency_limit_to_default(POOL)  # what the executor does on the pool's first use
    for i in range(cycles):
        run_id, step = f"w{wid}-{i}", "step"
        deadline = time.monotonic() + 60
        while not storage.claim_concurrency_slot(POOL, run_id, step).is_claimed:
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {wid} waited 60 s for the slot")
            pass  # retry at once: the tightest race
        claims += 1
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            doubles += 1
            fd = None
        time.sleep(0.002)  # hold the slot a little, like a step
        if fd is not None:
            os.close(fd)
            os.remove(marker)
        storage.free_concurrency_slot_for_step(run_id, step)
    out.put((claims, doubles))
    instance.dispose()


def main(home: str, workers: int, cycles: int, plain: bool) -> dict:
    """Run the stress; the caller's DAGSTER_HOME is as it was afterwards (tests call this in-process)."""
    before = os.environ.get("DAGSTER_HOME")
    try:
        return _stress(home, workers, cycles, plain)
    finally:
        if before is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = before


def _stress(home: str, workers: int, cycles: int, plain: bool) -> dict:
    from regime_assets.cli import instance_yaml

    os.makedirs(home, exist_ok=True)
    text = instance_yaml(home)
    if plain:
        start_at = text.index("# Dagster's SQLite event log")
        text = text[:start_at] + text[text.index("telemetry:"):]
    with open(os.path.join(home, "dagster.yaml"), "w") as fh:
        fh.write(text)
    _instance(home).dispose()  # create the storage once, before the race
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(home, w, cycles, start, out)) for w in range(workers)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    instance = _instance(home)
    info = instance.event_log_storage.get_concurrency_info(POOL)
    kind = type(instance.event_log_storage).__name__
    instance.dispose()
    return {"workers": workers, "cycles": cycles, "storage": kind, "claims": sum(r[0] for r in results),
            "double_claims": sum(r[1] for r in results), "slots": info.slot_count,
            "exit_codes": [p.exitcode for p in procs]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), len(sys.argv) > 4 and sys.argv[4] == "plain")))
