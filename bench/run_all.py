"""Run every benchmark and write docs/PERFORMANCE.md from what they measured.

    uv run python bench/run_all.py                        # the full benchmark (tens of minutes)
    uv run python bench/run_all.py --sizes 10,20 --years 5 --e2e-spec tests/specs/tiny.yaml --features-repeat 1

Runs, each as a subprocess writing JSON to ``--json-dir`` (default bench/out/, git-ignored):

* ``bench/features.py`` (polars features vs the pandas reference on the bundled data),
* ``bench/end_to_end.py`` (the whole graph, job materialize_all, into a temporary home),
* ``bench/scale.py`` (the data pipeline at each universe size, one subprocess per size),

then writes ``--out`` (default docs/PERFORMANCE.md): the machine, the commands, the tables and the targets
(met / missed / not measured). A run with other sizes, years or end-to-end spec than the defaults is marked
preliminary at the top of the file, naming what was run. ``--only features,scale`` re-runs some and reuses the
others' JSON from ``--json-dir``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import end_to_end  # noqa: E402
import scale  # noqa: E402
from _proc import cpu_busy_share, machine, omp_probe  # noqa: E402

TARGETS = {"full_graph_s": 300.0, "features_speedup": 5.0, "archive_s": 2.0, "peak_bytes": 6e9,
           "exponent": 1.1, "target_symbols": 500, "target_years": 30.0}
NAMES = ("features", "end_to_end", "scale")


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def commands(args, jd: Path) -> dict[str, list[str]]:
    py = [sys.executable]
    feats = py + ["bench/features.py", "--repeat", str(args.features_repeat), "--json", _rel(jd / "features.json")]
    e2e = py + ["bench/end_to_end.py", "--json", _rel(jd / "end_to_end.json")]
    if args.e2e_spec:
        e2e += ["--spec", args.e2e_spec]
    sc = py + ["bench/scale.py", "--sizes", args.sizes, "--years", f"{args.years:g}", "--json",
               _rel(jd / "scale.json"), "--max-rss-gb", f"{args.max_rss_gb:g}"]
    if not args.no_lightgbm:
        sc.append("--lightgbm")
    return {"features": feats, "end_to_end": e2e, "scale": sc}


def shown(cmd: list[str]) -> str:
    """The command as someone would type it (uv run python ...)."""
    return "uv run python " + " ".join(shlex.quote(c) for c in cmd[1:])


def _load(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _f(x, nd: int = 2) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def targets(feat: dict | None, e2e: dict | None, sc: dict | None) -> list[tuple[str, str, str]]:
    """(target, measured, status) rows."""
    rows = []
    e2e_default = e2e is not None and e2e.get("spec", "").startswith("packaged default")
    # full graph
    if e2e is None:
        rows.append(("full graph (materialize_all, bundled data) ≤ 5 min", "not run", "not measured"))
    else:
        t = e2e["totals"]["run_wall_s"] or e2e["totals"]["total_wall_s"]
        if not e2e["success"]:
            rows.append(("full graph (materialize_all, bundled data) ≤ 5 min",
                         f"run failed after {t:.0f} s: {e2e['failure']}", "missed"))
        elif e2e_default:
            rows.append(("full graph (materialize_all, bundled data) ≤ 5 min", f"{t:.1f} s ({t / 60:.1f} min)",
                         "met" if t <= TARGETS["full_graph_s"] else "missed"))
        else:
            rows.append(("full graph (materialize_all, bundled data) ≤ 5 min",
                         f"{t:.1f} s on spec {e2e['spec']} ({e2e['spec_name']}), not the default",
                         "not measured"))
    # features
    if feat is None:
        rows.append(("features: polars ≥ 5× pandas", "not run", "not measured"))
    else:
        sp = feat["speedup_wall"]
        ok = "met" if sp >= TARGETS["features_speedup"] else "missed"
        if feat["mismatched_columns"]:
            ok += f" (but {len(feat['mismatched_columns'])} columns disagree)"
        st = feat.get("stored")
        if st is not None and not st["rounding_ok"]:
            ok += f" (but the {st['dtype']} frame is not the float64 one rounded)"
        kind = f" ({st['dtype']}, as stored; float64 {feat['speedup_wall_float64']:.1f}×)" if st else ""
        rows.append(("features: polars ≥ 5× pandas",
                     f"{sp:.1f}× wall-clock{kind} ({feat['speedup_cpu']:.1f}× CPU time), {feat['rows']:,} rows, "
                     f"{feat['data']}; all columns agree to {feat['tolerance']:g}"
                     if not feat["mismatched_columns"] else f"{sp:.1f}× wall-clock", ok))
    # archive
    if e2e is not None and "rare_event_archive" in e2e["assets"]:
        a = e2e["assets"]["rare_event_archive"]
        if e2e_default and a["wall_s"] is not None:
            rows.append(("archive: rare_event_archive step on the bundled data ≤ 2 s", f"{a['wall_s']:.2f} s "
                         f"({a['rows']:,} rows, incl. DuckDB load/store)",
                         "met" if a["wall_s"] <= TARGETS["archive_s"] else "missed"))
        elif a["wall_s"] is not None:
            rows.append(("archive: rare_event_archive step on the bundled data ≤ 2 s",
                         f"{a['wall_s']:.2f} s on spec {e2e['spec_name']}", "not measured"))
    full = sc is not None and TARGETS["target_symbols"] in sc["sizes"] and sc["years"] >= TARGETS["target_years"]
    if sc is not None:
        big = max(sc["runs"], key=lambda r: r["symbols"])
        at = f"{big['symbols']} symbols × {big['years']:g} years"
        arch = next((s for s in big["stages"] if s["stage"] == "archive"), None)
        if arch is not None:
            rows.append((f"archive: build_archive at {TARGETS['target_symbols']} × 30 ≤ 2 s",
                         f"{arch['seconds']:.2f} s at {at} ({arch['rows']:,} archive rows)",
                         ("met" if arch["seconds"] <= TARGETS["archive_s"] else "missed") if full and
                         big["symbols"] == TARGETS["target_symbols"] else "not measured (smaller size)"))
        # peak memory
        if big["status"] != "ok":
            rows.append(("500 × 30 through the training set: peak RSS ≤ 6 GB",
                         f"{at}: {big['status']} in stage {big['failed_stage']} ({big['error']})",
                         "missed" if full else "not measured"))
        else:
            pk = big["peak_rss_through_training_set_mib"]
            ok = pk * 2**20 <= TARGETS["peak_bytes"]
            rows.append(("500 × 30 through the training set: peak RSS ≤ 6 GB",
                         f"{pk / 1024:.2f} GiB ({pk * 2**20 / 1e9:.2f} GB) at {at}, "
                         f"{big['symbol_days']:,} symbol-days",
                         ("met" if ok else "missed") if full else "not measured (smaller size)"))
        ex = sc["summary"]["exponent_through_training_set"]
        n_ok = sum(r["status"] == "ok" for r in sc["runs"])
        rows.append(("time grows linearly: exponent of time vs symbol-days ≤ ~1.1",
                     f"{_f(ex)} over {n_ok} sizes ({', '.join(str(s) for s in sc['sizes'])} symbols × "
                     f"{sc['years']:g} years)",
                     ("met" if ex is not None and ex <= TARGETS["exponent"] else "missed") if full
                     else "not measured (small sizes: fixed costs dominate)"))
    return rows


def features_md(feat: dict) -> str:
    r = feat["repeat"]
    st = feat.get("stored")
    size64 = f" ({st['mib_float64']:.0f} MiB)" if st else ""
    return "\n".join([
        f"Data: {feat['data']}: {feat['rows']:,} rows, {feat['symbols']} symbols, {feat['first_date']} .. "
        f"{feat['last_date']}. Best of {r} runs each, the three run in turn in every order (a call right after "
        "the pandas run finds polars' freed pages handed back to the kernel and faults them in again).", "",
        "| implementation | wall s | CPU s | feature columns |", "|---|---:|---:|---:|",
        *([f"| polars `build_features`, {st['dtype']} (the spec's storage dtype; {st['mib']:.0f} MiB) | "
           f"{st['wall_s']:.3f} | {st['cpu_s']:.3f} | {feat['polars']['feature_columns']} |"] if st else []),
        f"| polars `build_features`, float64{size64} | "
        f"{feat['polars']['wall_s']:.3f} | {feat['polars']['cpu_s']:.3f} | {feat['polars']['feature_columns']} |",
        f"| pandas groupby/rolling (bench/pandas_features.py) | {feat['pandas']['wall_s']:.3f} | "
        f"{feat['pandas']['cpu_s']:.3f} | {feat['pandas']['feature_columns']} |", "",
        f"Speed-up {feat['speedup_wall']:.1f}× wall-clock, {feat['speedup_cpu']:.1f}× CPU time "
        + (f"for the {st['dtype']} frame the pipeline stores ({feat['speedup_wall_float64']:.1f}× for float64) "
           if st else "")
        + f"(polars may use all {feat['cores']} cores, pandas one). "
        + (f"One cold call of each after 2 s idle: polars {st['cold_wall_s']:.3f} s, pandas "
           f"{st['pandas_cold_wall_s']:.3f} s ({st['pandas_cold_wall_s'] / st['cold_wall_s']:.1f}×). "
           if st and "cold_wall_s" in st else "")
        + f"Agreement of the float64 frame with pandas on "
        f"{feat['common_columns']} common columns (tolerance {feat['tolerance']:g}): "
        + ("all agree." if not feat["mismatched_columns"] else
           f"**{len(feat['mismatched_columns'])} disagree**: {', '.join(feat['mismatched_columns'])}.")
        + ("" if not st else f" The {st['dtype']} frame "
           + ("equals the float64 frame cast to " + st["dtype"] + ", value for value (one float64 computation, "
              "rounded once at the end)." if st["rounding_ok"] else "**is not** the float64 frame rounded.")),
    ])


def write_doc(path: Path, args, cmds: dict, ran: dict, feat, e2e, sc, mach: dict, busy: float | None,
              probe: dict | None = None) -> None:
    full_scale = sc is not None and TARGETS["target_symbols"] in sc["sizes"] and sc["years"] >= 30
    e2e_default = e2e is not None and e2e.get("spec", "").startswith("packaged default")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = ["# Performance", "",
           f"Measured by `bench/` on {when}; regenerate with `uv run python bench/run_all.py` (see the commands "
           "below). Every figure here comes from that run's JSON (bench/out/).", ""]
    partial = []
    if sc is not None and not full_scale:
        partial.append(f"scale sizes {', '.join(str(s) for s in sc['sizes'])} symbols × {sc['years']:g} years "
                       f"(the target is {TARGETS['target_symbols']} × 30)")
    if e2e is not None and not e2e_default:
        partial.append(f"the end-to-end run on `{e2e['spec']}` (spec `{e2e['spec_name']}`), not the default "
                       "spec on the bundled data")
    if feat is not None and feat["repeat"] < 3:
        partial.append(f"features timed best of {feat['repeat']}")
    missing = [n for n, d in (("features", feat), ("end_to_end", e2e), ("scale", sc)) if d is None]
    if missing:
        partial.append("not run: " + ", ".join(missing))
    if partial:
        out += ["> **Preliminary — small sizes only.** This file was generated from a reduced run: "
                + "; ".join(partial) + ". Targets that need the full sizes say *not measured*. It will be "
                "regenerated from the full benchmark (`uv run python bench/run_all.py`).", ""]
    v = mach["versions"]
    out += ["## Machine", "", "| | |", "|---|---|",
            f"| CPU | {mach['cpu_model']} |",
            f"| cores | {mach['cpu_count']} ({mach['usable_cores']} usable by this process) |",
            f"| RAM | {mach['ram_gib']} GiB |",
            f"| OS | {mach['os']} |",
            f"| Python | {mach['python']} |",
            f"| polars / dagster / duckdb | {v['polars']} / {v['dagster']} / {v['duckdb']} |",
            f"| numpy / pandas / scikit-learn / lightgbm | {v['numpy']} / {v['pandas']} / {v['scikit-learn']} / "
            f"{v['lightgbm']} |",
            f"| POLARS_MAX_THREADS / OMP_WAIT_POLICY | {mach['polars_max_threads']} / {mach['omp_wait_policy']} |",
            f"| load before the run | load average {' / '.join(str(x) for x in mach['load_average'])}; other "
            f"work kept {'-' if busy is None else f'{100 * busy:.0f} %'} of all cores busy over 3 s with "
            "nothing of ours running |"]
    p1, pn = (probe or {}).get("one_thread_s"), (probe or {}).get("default_threads_s")
    if probe:
        out.append(f"| OpenMP probe (one HistGradientBoosting fit, 2,000 × 60, 20 iterations) | {_f(pn)} s with the "
                   f"default threads, {_f(p1)} s with OMP_NUM_THREADS=1 |")
    out.append("")
    if (busy is not None and busy > 0.25) or (p1 and pn and pn > 2 * p1):
        out += ["The machine was shared with other work while this ran, so wall times are higher than on an idle "
                "machine. Steps that use OpenMP (HistGradientBoosting, LightGBM, XGBoost) suffer most: "
                "their threads spin-wait at barriers for a core another process holds"
                + (f" (the probe above: {pn / p1:.0f}× slower with the default threads than with one)"
                   if p1 and pn and pn > 2 * p1 else "")
                + ". `OMP_WAIT_POLICY=passive` in the environment of `bench/run_all.py` avoids the spinning.", ""]
    out += ["## Commands", "", "```bash"]
    for n in NAMES:
        if n in ran:
            out.append(f"{shown(cmds[n])}    # {ran[n]['wall_s']:.0f} s, exit code {ran[n]['rc']}")
        elif n in cmds:
            out.append(f"{shown(cmds[n])}    # not re-run: figures reused from its JSON")
    out += ["```", "", "## Targets", "", "| target | measured | status |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in targets(feat, e2e, sc)]
    out += [""]
    if feat is not None:
        out += ["## Features: polars vs pandas (`bench/features.py`)", "", features_md(feat), ""]
    if e2e is not None:
        out += ["## The whole graph (`bench/end_to_end.py`)", "",
                f"Job `materialize_all` on spec {e2e['spec']} (`{e2e['spec_name']}`, {e2e['data_source']} data), "
                "in-process executor, fresh home. Per step in execution order: wall time from the event log "
                "(STEP_START → STEP_SUCCESS), of it the time to load inputs from DuckDB (STEP_START → last "
                "LOADED_INPUT) and to store outputs (STEP_OUTPUT → HANDLED_OUTPUT), peak RSS while the step ran "
                "(process + children, sampled every 50 ms) and rows per asset (`count(*)` in warehouse.duckdb). "
                "`new_rare_events` also appends to `rare_event_archive`.", "",
                end_to_end.markdown(e2e), ""]
    if sc is not None:
        out += ["## Scaling with the universe (`bench/scale.py`)", "",
                f"The seeded synthetic market, {sc['years']:g} years, each size in a fresh subprocess calling the "
                "core functions the assets call with the default spec's settings (window "
                "3 years, balanced set 40,000 rows); frames are dropped once no later stage needs them. Peak "
                "RSS per stage is VmHWM reset before the stage. "
                + ("The `lightgbm` row fits the spec's LightGBM model (with its out-of-fold fit) on the balanced "
                   "set, whose size is capped by `balance.target_size`, so it does not grow with the universe. "
                   if sc["lightgbm"] else "") + "symbol-days = rows of raw_prices.", "",
                scale.markdown(sc), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", default=scale.DEFAULT_SIZES, help="scale.py sizes (symbols)")
    ap.add_argument("--years", type=float, default=30.0, help="scale.py years")
    ap.add_argument("--e2e-spec", help="spec for end_to_end.py (default: the packaged spec, bundled data)")
    ap.add_argument("--features-repeat", type=int, default=9)
    ap.add_argument("--no-lightgbm", action="store_true", help="scale.py without the LightGBM fit")
    ap.add_argument("--max-rss-gb", type=float, default=12.0, help="scale.py's per-child RSS limit")
    ap.add_argument("--no-probe", action="store_true", help="skip the OpenMP contention probe")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(NAMES)} to run (others: reuse JSON)")
    ap.add_argument("--json-dir", default=str(BENCH / "out"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "PERFORMANCE.md"))
    args = ap.parse_args(argv)
    jd = Path(args.json_dir)
    jd.mkdir(parents=True, exist_ok=True)
    cmds = commands(args, jd)
    only = [x.strip() for x in args.only.split(",")] if args.only else list(NAMES)
    bad = [x for x in only if x not in NAMES]
    if bad:
        ap.error(f"--only: unknown {bad}")
    busy = cpu_busy_share(3.0)
    mach = machine()
    probe = None if args.no_probe else omp_probe()
    print(f"machine: {mach['cpu_model']}, {mach['cpu_count']} cores, {mach['ram_gib']} GiB; other load "
          f"{'-' if busy is None else f'{100 * busy:.0f} %'} of the CPU; OpenMP probe {probe}", flush=True)
    ran = {}
    for name in NAMES:
        if name not in only:
            continue
        out_json = jd / f"{name}.json"
        out_json.unlink(missing_ok=True)
        print(f"\n=== {shown(cmds[name])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmds[name], cwd=ROOT)
        ran[name] = {"rc": rc, "wall_s": time.perf_counter() - t0}
        print(f"=== {name}: exit code {rc} after {ran[name]['wall_s']:.0f} s", flush=True)
    feat, e2e, sc = (_load(jd / f"{n}.json") for n in NAMES)
    write_doc(Path(args.out), args, {n: c for n, c in cmds.items() if n in only or _load(jd / f"{n}.json")},
              ran, feat, e2e, sc, mach, busy, probe)
    print(f"\nwrote {_rel(Path(args.out))}")
    for a, b, c in targets(feat, e2e, sc):
        print(f"  {c:>12}  {a}: {b}")
    return 0 if all(r["rc"] == 0 for r in ran.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
