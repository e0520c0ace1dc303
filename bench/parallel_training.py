"""Benchmark: the training group in-process vs with the multiprocess executor, and what more cores would give.

    uv run python bench/parallel_training.py                                     # tiny spec, max_concurrent 2
    nice -n 10 uv run python bench/parallel_training.py --spec regime_assets/specs/synthetic_small.yaml \\
        --max-concurrent 2 --json bench/out/parallel_training.json

On a fresh home: the upstream assets (``+key:sample_weights``) once in-process, then the ``training`` group
(every ``model_*`` and ``meta_learner``) ``--repeat`` times each way, alternating: in-process
(``execute_in_process``) and multiprocess (``regime_assets.execution.execute_multiprocess``: one process per
step, forked from a forkserver that preloads the libraries). Prints the wall time of every run, the step wall
times (STEP_START -> STEP_SUCCESS) and per model its fit wall time and CPU time (``train_seconds``,
``train_cpu_seconds`` of the materialization), and the estimate for a machine with enough cores to run every
model step at once: the longest model step plus the meta-learner step (the critical path of the group).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _steps(instance, run_id: str) -> dict[str, float]:
    start, out = {}, {}
    for entry in instance.all_logs(run_id):
        ev = entry.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            start[ev.step_key] = entry.timestamp
        elif ev.event_type_value == "STEP_SUCCESS" and ev.step_key in start:
            out[ev.step_key] = entry.timestamp - start[ev.step_key]
    return out


def _worker_startup(instance, run_id: str) -> dict[str, float]:
    """Per step of a multiprocess run: STEP_WORKER_STARTING -> STEP_START (Dagster's start-up of the step process)."""
    start, out = {}, {}
    for entry in instance.all_logs(run_id):
        ev = entry.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_WORKER_STARTING":
            start[ev.step_key] = entry.timestamp
        elif ev.event_type_value == "STEP_START" and ev.step_key in start:
            out[ev.step_key] = entry.timestamp - start[ev.step_key]
    return out


def _fits(instance, run_id: str) -> dict[str, dict[str, float]]:
    out = {}
    for entry in instance.all_logs(run_id):
        ev = entry.dagster_event
        if ev is None or ev.event_type_value != "ASSET_MATERIALIZATION":
            continue
        mat = ev.event_specific_data.materialization
        name = mat.asset_key.to_user_string()
        md = {k: v.value for k, v in mat.metadata.items() if k in ("train_seconds", "train_cpu_seconds")}
        if md:
            out[name] = md
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "tests" / "specs" / "tiny.yaml"))
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="parallel_training-"))
    for var in ("DAGSTER_HOME",):
        os.environ.pop(var, None)
    from dagster import AssetSelection, DagsterInstance

    from regime_assets.definitions import build_definitions
    from regime_assets.execution import execute_multiprocess
    from regime_assets.home.instance import prepare_environment

    home, _ = prepare_environment(args.spec, str(base / "home"))
    instance = DagsterInstance.get()
    defs = build_definitions(spec_path=os.environ["REGIME_ASSETS_SPEC"], home=str(home))
    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    t0 = time.perf_counter()
    up = job.get_subset(asset_selection=AssetSelection.from_string("+key:sample_weights").resolve(graph))
    assert up.execute_in_process(instance=instance).success
    print(f"upstream (in-process, once): {time.perf_counter() - t0:.1f} s")
    training = job.get_subset(asset_selection=AssetSelection.groups("training").resolve(graph))
    runs = []
    for i in range(args.repeat):
        for mode in ("in_process", "multiprocess") if i % 2 == 0 else ("multiprocess", "in_process"):
            t = time.perf_counter()
            if mode == "in_process":
                res = training.execute_in_process(instance=instance)
            else:
                res = execute_multiprocess(instance, None, home, selection="group:training",
                                           max_concurrent=args.max_concurrent)
            wall = time.perf_counter() - t
            assert res.success, f"{mode} run {res.run_id} failed"
            steps, fits = _steps(instance, res.run_id), _fits(instance, res.run_id)
            startup = _worker_startup(instance, res.run_id)
            runs.append({"mode": mode, "wall_seconds": wall, "steps": steps, "fits": fits, "worker_startup": startup,
                         "load_average": os.getloadavg()})
            print(f"{mode:>12}: {wall:6.1f} s wall (load {os.getloadavg()[0]:.1f}); steps " + ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(steps.items())))
            if startup:
                print(f"{'':>12}  step process start-up (STEP_WORKER_STARTING -> STEP_START): mean "
                      f"{sum(startup.values()) / len(startup):.1f} s, max {max(startup.values()):.1f} s")
    ip = [r for r in runs if r["mode"] == "in_process"]
    mp = [r for r in runs if r["mode"] == "multiprocess"]
    fits = ip[-1]["fits"]
    print("\nper model (in-process run): fit wall s / fit CPU s")
    for k, v in sorted(fits.items(), key=lambda kv: -kv[1].get("train_cpu_seconds", 0)):
        print(f"  {k:<24} {v.get('train_seconds', float('nan')):7.2f} {v.get('train_cpu_seconds', float('nan')):7.2f}")
    cpu = sum(v.get("train_cpu_seconds", 0) for v in fits.values())
    startups = [x for r in mp for x in r["worker_startup"].values()]
    longest = max(v.get("train_cpu_seconds", 0) for v in fits.values())
    ip_wall = min(r["wall_seconds"] for r in ip)
    mp_wall = min(r["wall_seconds"] for r in mp)
    model_steps = [v for k, v in mp[-1]["steps"].items() if k.startswith("model_")]
    meta_step = mp[-1]["steps"].get("meta_learner", 0.0)
    critical = max(model_steps) + meta_step
    summary = {
        "spec": args.spec, "max_concurrent": args.max_concurrent, "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(), "in_process_wall_s": ip_wall, "multiprocess_wall_s": mp_wall,
        "speedup": ip_wall / mp_wall, "sum_model_fit_cpu_s": cpu, "longest_model_fit_cpu_s": longest,
        "fit_share_of_in_process_wall": cpu / ip_wall,
        "critical_path_s(all model steps at once: longest model step + meta step, multiprocess)": critical,
        "mean_step_process_startup_s": sum(startups) / max(len(startups), 1),
        "runs": runs,
    }
    print(f"\nin-process {ip_wall:.1f} s, multiprocess (max_concurrent {args.max_concurrent}) {mp_wall:.1f} s: "
          f"x{ip_wall / mp_wall:.2f}; model fits: {cpu:.1f} CPU s in all, longest {longest:.1f} s")
    print(f"every model step at once (>= {len(model_steps)} cores): the group's critical path is {critical:.1f} s "
          f"(longest model step {max(model_steps):.1f} s + meta_learner {meta_step:.1f} s) -> "
          f"x{ip_wall / critical:.2f} over in-process")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
