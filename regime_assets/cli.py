"""`regime-assets`: materialize the graph, replay history, open the UI.

    uv run regime-assets materialize [--spec PATH] [--select SELECTION] [--home DIR]
    uv run regime-assets replay --start 2019-06-01 --end 2020-12-31 --every week
    uv run regime-assets ui [--port 3000]
    uv run regime-assets spec [--spec PATH]          # print the resolved spec and its hash
    uv run regime-assets signals [--date D] [--top K] [--format table|csv|json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# the home (results folder, Dagster instance, dead runs) lives in regime_assets.home; these names stay importable
# from here
from regime_assets.home.instance import (  # noqa: F401
    _OLD_INSTANCE_YAMLS,
    INSTANCE_YAML,
    instance_yaml,
    prepare_environment,
)
from regime_assets.home.instance import instance_lock as _instance_lock  # noqa: F401
from regime_assets.home.paths import HOME_ENV
from regime_assets.home.runs import HOST_TAG, PID_TAG, process_tags, reclaim_dead_runs  # noqa: F401
from regime_assets.spec import SPEC_ENV, SpecError, dump_spec, load_spec

def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_materialize(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.spec)
    except SpecError as err:
        return _fail(str(err))
    home, dagster_home = prepare_environment(args.spec, args.home)
    from dagster import DagsterInstance

    from regime_assets.definitions import build_definitions
    from regime_assets.summary import print_summary

    defs = build_definitions(spec_path=os.environ.get(SPEC_ENV), home=str(home))
    job = defs.resolve_job_def("materialize_all")
    instance = DagsterInstance.get()
    selection = args.select
    if selection:
        from dagster import AssetSelection

        try:
            # an asset of a multi-asset (e.g. promotion_decision) brings its siblings (model_versions) along
            sel = AssetSelection.from_string(selection).required_multi_asset_neighbors()
            keys = sel.resolve(defs.resolve_asset_graph())
        except Exception as err:  # noqa: BLE001 - any selection error is the user's input
            return _fail(f"--select {selection!r}: {err}")
        if not keys:  # an empty subset would run the whole graph
            return _fail(f"--select {selection!r} matches no asset")
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)
    reclaim_dead_runs(instance, home)
    t0 = time.perf_counter()
    tags = {"regime_assets/trigger": "manual", **process_tags()}
    try:
        result = job.execute_in_process(instance=instance, raise_on_error=False, tags=tags)
    except SpecError as err:
        return _fail(str(err))
    elapsed = time.perf_counter() - t0
    if not result.success:
        msg = _first_failure(result)
        print(f"error: run {result.run_id} failed: {msg}", file=sys.stderr)
        return 1
    print_summary(defs, home, spec, result, elapsed)
    print(f"run {result.run_id} (DAGSTER_HOME={dagster_home}) finished in {elapsed:.1f} s")
    return 0


def _first_failure(result) -> str:
    for ev in result.all_events:
        if ev.is_failure and ev.event_specific_data is not None:
            err = getattr(ev.event_specific_data, "error", None)
            step = ev.step_key or ""
            if err is not None:
                cause = err
                while getattr(cause, "cause", None) is not None and "Failure" not in cause.cls_name:
                    cause = cause.cause
                text = (cause.message or "").strip().splitlines()
                return f"{step}: {text[0] if text else cause.cls_name}"
            return step
    return "unknown failure"


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.spec)
    except SpecError as err:
        return _fail(str(err))
    from regime_assets.replay import run_replay

    home, _ = prepare_environment(args.spec, args.home)
    start = dt.date.fromisoformat(args.start)
    end = dt.date.fromisoformat(args.end)
    out = Path(args.out) if args.out else home / "replay"
    t0 = time.perf_counter()
    timeline = run_replay(spec, start, end, args.every, out, verbose=True)
    from dagster import DagsterInstance

    from regime_assets.assets.monitoring import report_replay

    report_replay(DagsterInstance.get(), home, spec, timeline, time.perf_counter() - t0, start, end, args.every)
    print(f"table replay_timeline in {home / 'warehouse.duckdb'}; materialization reported to the Dagster "
          f"instance (asset replay_timeline in the UI)")
    return 0


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc (empty where there is no /proc:
    then ``os.killpg(pgid, 0)`` decides)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    out = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


def end_group(pgid: int, grace: float) -> None:
    """SIGTERM every process left in group ``pgid``, then SIGKILL what is still there after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not group_members(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


def run_process_group(cmd: list[str], grace: float = 20.0) -> int:
    """Run ``cmd`` as the leader of its own session and process group. SIGTERM and SIGINT received here are
    forwarded to the whole group; when the leader has exited (or ``grace`` seconds after a signal) whatever is
    left of the group (a daemon, a code server) is stopped too. Returns the leader's exit code, or 128 + the
    signal number when stopped by a signal."""
    proc = subprocess.Popen(cmd, start_new_session=True)
    received: list[tuple[int, float]] = []  # (signal, when)

    def forward(signum, _frame):
        received.append((signum, time.monotonic()))
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if received and time.monotonic() - received[0][1] > grace:
                    os.killpg(proc.pid, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        end_group(proc.pid, grace)
    return 128 + received[0][0] if received else rc


def cmd_ui(args: argparse.Namespace) -> int:
    prepare_environment(args.spec, args.home)
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "regime_assets.definitions", "-h", args.host,
           "-p", str(args.port)]
    print("starting:", " ".join(cmd), f"(DAGSTER_HOME={os.environ['DAGSTER_HOME']})", flush=True)
    return run_process_group(cmd)


def cmd_spec(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.spec)
    except SpecError as err:
        return _fail(str(err))
    print(dump_spec(spec))
    print(f"# spec_hash: {spec.spec_hash}")
    return 0


def cmd_signals(args: argparse.Namespace) -> int:
    """Print the stored signals of one date (default: the latest) from the warehouse, opened read-only."""
    import duckdb
    import polars as pl

    from regime_assets.resources.warehouse import DEFAULT_SCHEMA, read_table, warehouse_path
    from regime_assets.summary import has_promoted, table_text

    if args.home:
        os.environ[HOME_ENV] = str(Path(args.home).resolve())
    db = warehouse_path(default_home())
    if not db.exists():
        return _fail(f"no warehouse at {db}: run `regime-assets materialize` first")
    try:
        with duckdb.connect(str(db), read_only=True) as conn:
            sig = read_table(conn, DEFAULT_SCHEMA, "signals")
            prod = read_table(conn, DEFAULT_SCHEMA, "production_model")
    except duckdb.IOException as err:
        return _fail(f"cannot open {db} read-only: {err}")
    if sig is None or sig.height == 0:
        why = "no promoted model: no signals" if not has_promoted(prod) else "no signals table yet"
        return _fail(f"{why} in {db} (materialize the graph with a promoted model first)")
    dates = sig["date"].unique().sort()
    if args.date:
        try:
            day = dt.date.fromisoformat(args.date)
        except ValueError:
            return _fail(f"--date {args.date!r}: expected YYYY-MM-DD")
        if day not in dates.to_list():
            return _fail(f"--date {day}: no signals for that date; stored dates: "
                         f"{', '.join(str(d) for d in dates.to_list())}")
    else:
        day = dates.max()
    rows = sig.filter(pl.col("date") == day).sort("rank", "symbol")
    if args.top is not None:
        if args.top < 1:
            return _fail("--top must be at least 1")
        from regime_assets.core.signals import top_bottom

        top, bottom = top_bottom(rows, args.top)
        rows = pl.concat([top, bottom.sort("score", "symbol", descending=[True, False])]).unique(
            "symbol", keep="first", maintain_order=True)
    if args.format == "csv":
        sys.stdout.write(rows.write_csv())
    elif args.format == "json":
        sys.stdout.write(rows.write_json() + "\n")
    else:
        r = rows.row(0, named=True)
        print(f"signals for {day} (as of {r['as_of']}): model {r['model_name']} {r['model_version']}, spec "
              f"{r['spec_hash']}, VIX {r['vix_source']}; {rows.height} of {r['n_symbols']} symbols")
        print(table_text(rows.select("rank", "symbol", "score", "action", "p_sell", "p_hold", "p_buy", "regime"),
                         max_rows=10_000))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="regime-assets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("materialize", help="materialize the graph (default: all of it) and print a summary")
    m.add_argument("--spec", help="spec YAML (default: the packaged spec.yaml)")
    m.add_argument("--select", help="Dagster asset selection, e.g. 'group:samples' or 'key:features+'")
    m.add_argument("--home", help=f"results folder (default ${HOME_ENV} or .regime_assets/)")
    m.set_defaults(func=cmd_materialize)
    r = sub.add_parser("replay", help="step an as-of date through history and print the monitoring timeline")
    r.add_argument("--spec")
    r.add_argument("--start", default="2019-06-01")
    r.add_argument("--end", default="2020-12-31")
    r.add_argument("--every", default="week", choices=["day", "week", "month"])
    r.add_argument("--out", help="folder for the timeline CSV and plot (default: <home>/replay)")
    r.add_argument("--home", help=f"results folder (default ${HOME_ENV} or .regime_assets/)")
    r.set_defaults(func=cmd_replay)
    u = sub.add_parser("ui", help="open the Dagster UI on this project's instance (127.0.0.1)")
    u.add_argument("--spec")
    u.add_argument("--home")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=3000)
    u.set_defaults(func=cmd_ui)
    s = sub.add_parser("spec", help="print the resolved spec and its hash")
    s.add_argument("--spec")
    s.set_defaults(func=cmd_spec)
    g = sub.add_parser("signals", help="print the production model's stored signals (read-only warehouse)")
    g.add_argument("--date", help="YYYY-MM-DD (default: the latest stored date)")
    g.add_argument("--top", type=int, help="only the top K and bottom K symbols by score")
    g.add_argument("--format", default="table", choices=["table", "csv", "json"])
    g.add_argument("--home", help=f"results folder (default ${HOME_ENV} or .regime_assets/)")
    g.set_defaults(func=cmd_signals)
    args = p.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
