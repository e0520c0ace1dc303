"""Two `regime-assets materialize` processes against the same home at the same time.

The assets use the `warehouse` pool and the CLI's instance limits every pool to one slot, so the two runs take
turns step by step: no two warehouse steps of different runs ever overlap. Either both runs succeed or one
fails with a clear message (never a traceback alone); the DuckDB file opens afterwards and every table reads,
and the append-only archive holds each key once.
"""

from __future__ import annotations

import threading

import duckdb
import pytest

from regime_assets.resources.warehouse import warehouse_path

from .conftest import run_cli, small_spec

SELECTION = "+key:rare_event_archive"


def _pool_steps(spec, home) -> set[str]:
    from regime_assets.definitions import build_definitions

    defs = build_definitions(spec_path=str(spec), home=str(home))
    return {a.op.name for a in defs.assets if getattr(a, "op", None) is not None and a.op.pool == "warehouse"}


def _step_intervals(instance, run_id: str, steps: set[str]) -> list[tuple[float, float, str]]:
    start: dict[str, float] = {}
    out = []
    for entry in instance.all_logs(run_id):
        ev = entry.dagster_event
        if ev is None or ev.step_key not in steps:
            continue
        if ev.event_type_value == "STEP_START":
            start[ev.step_key] = entry.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            out.append((start[ev.step_key], entry.timestamp, ev.step_key))
    return out


@pytest.mark.slow
def test_two_processes_on_one_home_take_turns_and_leave_a_sound_warehouse(tmp_path):
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    spec, home = small_spec(tmp_path / "spec.yaml"), tmp_path / "home"
    results = [None, None]

    def go(i: int) -> None:
        results[i] = run_cli(spec, home, select=SELECTION, timeout=300)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results)
    ok = [r for r in results if r.returncode == 0]
    assert ok, "\n\n".join(r.output[-2000:] for r in results)
    for r in results:
        if r.returncode != 0:  # allowed, with a clear message naming the cause
            assert "error:" in r.output and ("locked" in r.output or "failed" in r.output), r.output[-3000:]

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster"))) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2
        steps = _pool_steps(spec, home)
        spans = {r.run_id: _step_intervals(instance, r.run_id, steps) for r in runs}
    (a, sa), (b, sb) = spans.items()
    assert sa and sb
    # the runs did run at the same time (each started before the other ended) ...
    assert min(x[0] for x in sa) < max(y[1] for y in sb) and min(y[0] for y in sb) < max(x[1] for x in sa)
    assert any("blocked by limit for pool warehouse" in r.output for r in results)
    # ... and took turns at the warehouse
    overlaps = [(x, y) for x in sa for y in sb if x[0] < y[1] and y[0] < x[1]]
    assert overlaps == [], f"warehouse steps of two runs overlapped: {overlaps}"

    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        tables = [r[0] for r in conn.execute("select table_name from information_schema.tables").fetchall()]
        for t in tables:  # every table reads in full
            conn.execute(f'select * from "{t}"').fetchall()
        dupes = conn.execute("select count(*) - count(distinct (event_id, symbol, date)) from "
                             "rare_event_archive").fetchall()[0][0]
    assert {"raw_prices", "features", "labeled_samples", "rare_event_archive"} <= set(tables)
    assert dupes == 0
