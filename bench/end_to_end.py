"""Benchmark: materialize the whole graph (job ``materialize_all``) into a temporary home and time every step.

    uv run python bench/end_to_end.py                                   # the default spec: bundled data
    uv run python bench/end_to_end.py --spec tests/specs/tiny.yaml --json bench/out/end_to_end.json
    uv run python bench/end_to_end.py --home /tmp/bench_home --keep     # keep the home to look at it
    uv run python bench/end_to_end.py --warm     # cold run, then a warm re-run in the same home
    uv run python bench/end_to_end.py --rerun --home /tmp/bench_home    # one more run in a kept home
    uv run python bench/end_to_end.py --select '+key:training_set or key:drift_report'   # a part of the graph

Runs in this process with the in-process executor (as ``regime-assets materialize`` does), on a fresh home
(``--home`` must not hold a warehouse yet, so no earlier run's production model or captured events change what
the run does) with its own Dagster instance. Prints, per step in execution order (from the run's event log):
whether the memo reused its result (metadata ``reused``), wall time (STEP_START -> STEP_SUCCESS), the part
spent loading inputs from DuckDB and storing outputs to it,
the peak RSS while the step ran (this process + its child processes, sampled every 50 ms) and rows per asset
(``count(*)`` of its table in warehouse.duckdb); then the total wall time and the peak RSS (ru_maxrss of this
process and of its children). ``--json PATH`` writes the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _proc import MIB, RssSampler, machine, rusage_peaks_mib, status_kib  # noqa: E402


def _ev_type(entry) -> str | None:
    """The event's DagsterEventType name (STEP_START, RUN_START, ...; RUN_* are stored as PIPELINE_*)."""
    ev = entry.dagster_event
    return None if ev is None else ev.event_type.name


def step_table(entries, sampler: RssSampler | None) -> list[dict]:
    """One dict per step, in order of start: step, kind, assets, checks, status, wall/load/store seconds."""
    steps: dict[str, dict] = {}
    outputs: dict[tuple[str, str], float] = {}
    for e in entries:
        et, key = _ev_type(e), e.step_key
        if et is None or key is None:
            continue
        s = steps.setdefault(key, {"step": key, "start": None, "end": None, "status": "not started",
                                   "assets": [], "checks": [], "last_input": None, "store_s": 0.0,
                                   "reused": None})
        ev = e.dagster_event
        data = ev.event_specific_data
        if et == "STEP_START":
            s["start"], s["status"] = e.timestamp, "running"
        elif et in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED", "STEP_UP_FOR_RETRY"):
            s["end"] = e.timestamp
            s["status"] = {"STEP_SUCCESS": "ok", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped",
                           "STEP_UP_FOR_RETRY": "retry"}[et]
        elif et == "LOADED_INPUT":
            s["last_input"] = e.timestamp
        elif et == "STEP_OUTPUT":
            outputs[(key, data.step_output_handle.output_name)] = e.timestamp
        elif et == "HANDLED_OUTPUT":
            t_out = outputs.get((key, data.output_name))
            if t_out is not None:
                s["store_s"] += e.timestamp - t_out
        elif et == "ASSET_MATERIALIZATION":
            name = ev.asset_key.to_user_string()
            flag = data.materialization.metadata.get("reused")
            if flag is not None:  # the memo's flag: the result came from memo/ (or the model store), not computed
                s["reused"] = bool(getattr(flag, "value", flag)) and s["reused"] is not False
            if name not in s["assets"]:
                s["assets"].append(name)
        elif et == "ASSET_CHECK_EVALUATION":
            s["checks"].append(data.asset_check_key.name)
    out = []
    for s in sorted(steps.values(), key=lambda x: (x["start"] is None, x["start"] or 0.0)):
        wall = (s["end"] - s["start"]) if s["start"] is not None and s["end"] is not None else None
        load = (s["last_input"] - s["start"]) if s["last_input"] and s["start"] else 0.0
        peak = sampler.peak_mib(s["start"], s["end"]) if sampler and s["start"] and s["end"] else {}
        out.append({
            "step": s["step"], "kind": "asset" if s["assets"] else ("check" if s["checks"] else "op"),
            "assets": s["assets"], "checks": s["checks"], "status": s["status"],
            "wall_s": wall, "load_s": load, "store_s": s["store_s"],
            "compute_s": None if wall is None else max(wall - load - s["store_s"], 0.0),
            "peak_rss_mib": peak.get("total"), "start": s["start"], "end": s["end"], "reused": s["reused"],
        })
    return out


def table_rows(database: Path) -> dict[str, int]:
    """count(*) of every table in the warehouse (schema main)."""
    import duckdb

    if not database.exists():
        return {}
    conn = duckdb.connect(str(database), read_only=True)
    try:
        names = [r[0] for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'main' order by 1").fetchall()]
        return {n: int(conn.execute(f'select count(*) from main."{n}"').fetchall()[0][0]) for n in names}
    finally:
        conn.close()


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def markdown(res: dict) -> str:
    lines = ["| # | step | assets (rows) | status | memo | wall s | load s | store s | compute s | peak RSS MiB |",
             "|---:|---|---|---|---|---:|---:|---:|---:|---:|"]
    for i, s in enumerate(res["steps"], 1):
        if s["assets"]:
            what = ", ".join(f"`{a}` ({res['rows'].get(a, '-'):,})" if isinstance(res["rows"].get(a), int)
                             else f"`{a}` (-)" for a in s["assets"])
        elif s["checks"]:
            what = "check " + ", ".join(f"`{c}`" for c in s["checks"])
        else:
            what = "-"
        memo = {None: "-", True: "reused", False: "computed"}[s.get("reused")]
        lines.append(f"| {i} | {s['step']} | {what} | {s['status']} | {memo} | {_f(s['wall_s'])} | {_f(s['load_s'])} | "
                     f"{_f(s['store_s'])} | {_f(s['compute_s'])} | {_f(s['peak_rss_mib'], 0)} |")
    t = res["totals"]
    lines += [
        "",
        "| total | value |", "|---|---:|",
        f"| run wall time (RUN_START -> RUN_SUCCESS) | {_f(t['run_wall_s'], 1)} s |",
        f"| sum of step wall times | {_f(t['steps_wall_s'], 1)} s |",
        f"| of which loading inputs / storing outputs (DuckDB) | {_f(t['load_s'], 1)} s / {_f(t['store_s'], 1)} s |",
        f"| loading the definitions | {_f(t['definitions_s'], 1)} s |",
        f"| total wall time (definitions + run) | {_f(t['total_wall_s'], 1)} s |",
        f"| peak RSS of this process (ru_maxrss) | {_f(t['peak_rss_self_mib'], 0)} MiB |",
        f"| peak RSS of finished child processes (ru_maxrss, RUSAGE_CHILDREN) | "
        f"{_f(t['peak_rss_children_mib'], 0)} MiB |",
        f"| peak sampled RSS, process + live children | {_f(t['peak_rss_sampled_total_mib'], 0)} MiB |",
        f"| warehouse.duckdb size | {_f(t['warehouse_mib'], 1)} MiB |",
    ]
    slow = sorted((s for s in res["steps"] if s["wall_s"] is not None), key=lambda s: -s["wall_s"])[:5]
    if slow and t["steps_wall_s"]:
        lines += ["", "Slowest steps: " + "; ".join(
            f"{s['step']} {s['wall_s']:.1f} s ({100 * s['wall_s'] / t['steps_wall_s']:.0f} %)" for s in slow)]
    return "\n".join(lines)


def run(spec: str | None, home: Path, verbose: bool = False, warm: bool = False, select: str | None = None) -> dict:
    os.environ.pop("DAGSTER_HOME", None)  # the instance goes under the bench home, not the user's
    if spec is None:
        os.environ.pop("REGIME_ASSETS_SPEC", None)  # the packaged default spec (bundled data)
    from regime_assets.cli import prepare_environment
    from regime_assets.resources.warehouse import warehouse_path
    from regime_assets.spec import SPEC_ENV, load_spec

    spec_obj = load_spec(spec)
    home_path, dagster_home = prepare_environment(spec, str(home))
    if warehouse_path(home_path).exists() and not warm:
        raise SystemExit(f"error: {warehouse_path(home_path)} exists; give an empty --home (the benchmark measures "
                         "a first run)")
    from dagster import DagsterInstance

    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    from regime_assets.definitions import build_definitions

    defs = build_definitions(spec_path=os.environ.get(SPEC_ENV), home=str(home_path))
    job = defs.resolve_job_def("materialize_all")
    if select:  # as `regime-assets materialize --select`: a multi-asset's siblings come along
        from dagster import AssetSelection

        keys = AssetSelection.from_string(select).required_multi_asset_neighbors().resolve(defs.resolve_asset_graph())
        if not keys:
            raise SystemExit(f"error: --select {select!r} matches no asset")
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)
    t_defs = time.perf_counter() - t0
    instance = DagsterInstance.get()
    run_config = {} if verbose else {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config,
                                    tags={"regime_assets/trigger": "bench"})
    total = time.perf_counter() - t0
    sampler.stop()
    entries = instance.all_logs(result.run_id)
    steps = step_table(entries, sampler)
    run_start = next((e.timestamp for e in entries if _ev_type(e) == "RUN_START"), None)
    run_end = next((e.timestamp for e in entries if _ev_type(e) in ("RUN_SUCCESS", "RUN_FAILURE")), None)
    if run_start is None:  # fall back to the steps
        run_start = min((s["start"] for s in steps if s["start"]), default=None)
    failure = None
    if not result.success:
        from regime_assets.cli import _first_failure

        failure = _first_failure(result)
    db = warehouse_path(home_path)
    rows = table_rows(db)
    ru = rusage_peaks_mib()
    done = [s for s in steps if s["wall_s"] is not None]
    totals = {
        "run_wall_s": (run_end - run_start) if run_start and run_end else None,
        "steps_wall_s": sum(s["wall_s"] for s in done),
        "load_s": sum(s["load_s"] for s in done), "store_s": sum(s["store_s"] for s in done),
        "definitions_s": t_defs, "total_wall_s": total,
        "peak_rss_self_mib": ru["self_maxrss_mib"], "peak_rss_children_mib": ru["children_maxrss_mib"],
        "peak_rss_sampled_total_mib": sampler.peak_mib()["total"],
        "peak_rss_vmhwm_mib": (status_kib("VmHWM") or 0) / MIB,
        "warehouse_mib": db.stat().st_size / 2**20 if db.exists() else None,
    }
    assets: dict[str, dict] = {}
    for s in steps:  # an asset's own step is the first that materializes it (new_rare_events appends to the archive)
        for a in s["assets"]:
            if a in assets:
                assets[a]["also_materialized_by"].append(s["step"])
                continue
            assets[a] = {"step": s["step"], "wall_s": s["wall_s"], "rows": rows.get(a),
                         "shared_step": len(s["assets"]) > 1, "also_materialized_by": []}
    return {"spec": spec or "packaged default (bundled data)", "spec_name": spec_obj.name,
            "spec_hash": spec_obj.spec_hash, "select": select, "data_source": spec_obj.data.source, "home": str(home_path),
            "dagster_home": str(dagster_home), "run_id": result.run_id, "success": result.success,
            "failure": failure, "steps": steps, "assets": assets, "rows": rows, "totals": totals,
            "machine": machine()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", help="spec YAML (default: the packaged spec, bundled data)")
    ap.add_argument("--home", help="results folder (default: a new temporary folder, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary home")
    ap.add_argument("--json", help="write the figures to this JSON file")
    ap.add_argument("--verbose", action="store_true", help="keep Dagster's DEBUG console log")
    ap.add_argument("--warm", action="store_true",
                    help="after the cold run, run materialize_all again in the same home (unchanged data and spec: "
                         "fits, folds and evaluation tables come from the memo and the fold store) and time it too")
    ap.add_argument("--rerun", action="store_true",
                    help="only re-run materialize_all in an existing --home that an earlier run filled, and time it")
    ap.add_argument("--select", help="run only this Dagster asset selection (as `regime-assets materialize "
                                     "--select`), e.g. '+key:training_set'")
    args = ap.parse_args(argv)
    if args.rerun:
        if not args.home:
            raise SystemExit("error: --rerun needs the --home of an earlier run")
        res = run(args.spec, Path(args.home), args.verbose, warm=True)
        print(f"\nre-run of materialize_all in {args.home}:")
        print(markdown(res))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        return 0 if res["success"] else 1
    if args.home:
        home, temp = Path(args.home), False
    else:
        home, temp = Path(tempfile.mkdtemp(prefix="regime_bench_e2e_")), True
    try:
        res = run(args.spec, home, args.verbose, select=args.select)
        if args.warm and res["success"]:
            res["warm"] = run(args.spec, home, args.verbose, warm=True, select=args.select)
    finally:
        if temp and not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    res["home_kept"] = not temp or args.keep
    print(f"\n{'materialize_all' if not args.select else repr(args.select)} on spec {res['spec']} ({res['spec_name']}, {res['data_source']} data) "
          f"-> {res['home']}{'' if res['home_kept'] else ' (removed)'}")
    print(markdown(res))
    if "warm" in res:
        print("\nwarm re-run (same home, unchanged data and spec):")
        print(markdown(res["warm"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"wrote {args.json}")
    if not res["success"]:
        print(f"error: run {res['run_id']} failed: {res['failure']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
