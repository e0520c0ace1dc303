"""Benchmark: how the data pipeline grows with the universe, on the seeded synthetic market.

    uv run python bench/scale.py                                  # 50, 100, 250, 500 symbols x 30 years
    uv run python bench/scale.py --sizes 10,20 --years 5          # a quick check
    uv run python bench/scale.py --lightgbm --json bench/out/scale.json

Each size runs in a fresh subprocess (``bench/scale.py --one N``), so every peak is that size's own. The child
calls the core functions the assets call, with the spec's settings (``--spec``; default the packaged spec, its
``data`` section replaced by ``source: synthetic, synthetic_symbols: N, synthetic_years: Y``):

    generate        sources.load_synthetic (core/synthetic.generate_synthetic)   -- inside load_source
    validate        the rest of sources.load_source (validation, index, sectors)  -- ingest_prices
    market_context  market.build_market_context                                  -- market_context
    regimes         regimes.label_regimes                                         -- regime_labels
    features        features.build_features                                       -- features
    labels          labels.build_labels                                           -- labeled_samples
    archive         archive.build_archive (the spec's seeded events)              -- rare_event_archive
    training_set    training_set.build_training_set (empty replay buffer)         -- training_set
    balanced        sampling.balanced_sample                                      -- balanced_training_set
    weights         weights.sample_weights                                        -- sample_weights
    lightgbm        models.fit_with_oof, the spec's lightgbm model (--lightgbm)   -- model_lightgbm

Frames are dropped as soon as no later stage needs them (as the asset steps load only their inputs). Per stage:
wall time, output rows and the peak RSS while it ran (VmHWM of /proc/self/status, reset before each stage
through /proc/self/clear_refs). The parent prints a table per size and per stage, and the least-squares slope
of log(time) against log(symbol-days) over the sizes (about 1 = linear), plus seconds per million symbol-days.

``--graph`` runs the WHOLE graph instead (job ``materialize_all`` through ``bench/end_to_end.py`` in a fresh
subprocess and home per size, the spec's ``data`` section replaced as above): wall time, the slowest steps and
the peak RSS of the process (ru_maxrss and the RSS sampled every 50 ms), with the same RSS watchdog (the parent
polls the child's VmRSS every second):

    uv run python bench/scale.py --graph --sizes 500 --years 30 --max-rss-gb 12 --json bench/out/scale_graph.json

A watchdog stops a child whose RSS passes ``--max-rss-gb`` (default 12) and the parent reports the stage it was
in, with the peaks of the stages before it; a child killed from outside (OOM killer) is reported the same way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _proc import MIB, machine, reset_peak, status_kib  # noqa: E402

STAGES = ("generate", "validate", "market_context", "regimes", "features", "labels", "archive", "training_set",
          "balanced", "weights", "lightgbm")
THROUGH_TRAINING_SET = STAGES[: STAGES.index("training_set") + 1]
DATA_STAGES = STAGES[: STAGES.index("weights") + 1]  # the lightgbm fit is capped by the balanced set's size
DEFAULT_SIZES = "50,100,250,500"


# ------------------------------------------------------------------------------------------------- the child


class Recorder:
    """Appends one JSON line per event to ``path`` (flushed), so a killed child still leaves its progress."""

    def __init__(self, path: Path):
        self.fh = open(path, "a", buffering=1)
        self.current: str | None = None
        self.stages: list[dict] = []

    def write(self, **kw) -> None:
        self.fh.write(json.dumps(kw, default=str) + "\n")
        self.fh.flush()

    def stage(self, name: str, fn, rows=lambda out: None):
        self.current = name
        rss0 = (status_kib("VmRSS") or 0) / MIB
        self.write(event="start", stage=name, rss_mib=rss0, t=time.time())
        reset_peak()
        t0 = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t0
        rec = {"stage": name, "seconds": secs, "rows": rows(out), "rss_before_mib": rss0,
               "peak_rss_mib": (status_kib("VmHWM") or 0) / MIB, "rss_after_mib": (status_kib("VmRSS") or 0) / MIB}
        self.stages.append(rec)
        self.write(event="end", **rec)
        self.current = None
        return out


def watchdog(rec: Recorder, limit_mib: float, interval: float = 0.1) -> None:
    def loop():
        while True:
            rss = (status_kib("VmRSS") or 0) / MIB
            if rss > limit_mib:
                rec.write(event="abort", stage=rec.current, rss_mib=rss,
                          reason=f"RSS {rss:,.0f} MiB passed the --max-rss-gb limit ({limit_mib:,.0f} MiB)")
                os._exit(3)
            time.sleep(interval)

    threading.Thread(target=loop, daemon=True, name="rss-watchdog").start()


def run_one(n_symbols: int, years: float, spec_path: str | None, lightgbm: bool, out: Path,
            max_rss_mib: float) -> int:
    import regime_assets  # noqa: F401  first, as in the pipeline (its environment defaults apply)
    import polars as pl

    from regime_assets.core import archive as archive_core
    from regime_assets.core import models as model_core
    from regime_assets.core import replay_buffer as replay_core
    from regime_assets.core import sources
    from regime_assets.core.features import build_features
    from regime_assets.core.labels import build_labels
    from regime_assets.core.market import build_market_context
    from regime_assets.core.regimes import label_regimes
    from regime_assets.core.sampling import balanced_sample
    from regime_assets.core.training_set import build_training_set
    from regime_assets.core.weights import sample_weights
    from regime_assets.spec import load_spec

    rec = Recorder(out)
    if max_rss_mib > 0:
        watchdog(rec, max_rss_mib)
    t_imp = time.perf_counter()  # libraries the stages import lazily, so their import is not timed as work
    import pandera.polars  # noqa: F401  (sources.price_schema)

    if lightgbm:
        import lightgbm as _lgb  # noqa: F401
        import sklearn.ensemble  # noqa: F401
    imports_s = time.perf_counter() - t_imp
    spec = load_spec(spec_path)
    ds = spec.data.model_copy(update={"source": "synthetic", "synthetic_symbols": n_symbols,
                                      "synthetic_years": years, "symbols": None, "start": None, "end": None})
    rec.write(event="begin", symbols=n_symbols, years=years, spec=spec_path or "packaged default",
              spec_name=spec.name, rss_mib=(status_kib("VmRSS") or 0) / MIB, pid=os.getpid(),
              lazy_imports_s=imports_s)

    # generate / validate: time load_source's call of the synthetic loader separately from the rest of it
    original = sources.load_synthetic

    def timed_load_synthetic(data_spec):
        out = rec.stage("generate", lambda: original(data_spec), lambda d: d.prices.height)
        reset_peak()  # the validate peak starts here
        return out

    sources.load_synthetic = timed_load_synthetic
    try:
        t0 = time.perf_counter()
        data = sources.load_source(ds, today=dt.date.today())
        whole = time.perf_counter() - t0
    finally:
        sources.load_synthetic = original
    gen = rec.stages[-1]
    # the validate record: load_source minus the generator (its peak: VmHWM since the generator's end)
    val = {"stage": "validate", "seconds": whole - gen["seconds"], "rows": data.prices.height,
           "rss_before_mib": gen["rss_after_mib"], "peak_rss_mib": (status_kib("VmHWM") or 0) / MIB,
           "rss_after_mib": (status_kib("VmRSS") or 0) / MIB}
    rec.stages.append(val)
    rec.write(event="end", **val)
    prices, sectors = data.prices, data.sectors
    symbol_days = prices.height

    ctx, _cal = rec.stage("market_context", lambda: build_market_context(data.index, data.vix, spec.vix_proxy),
                          lambda o: o[0].height)
    del data
    regimes = rec.stage("regimes", lambda: label_regimes(prices, ctx, spec.regimes), lambda o: o.height)
    feats = rec.stage("features", lambda: build_features(prices, ctx, sectors, spec.features), lambda o: o.height)
    labeled = rec.stage("labels", lambda: build_labels(feats, regimes, spec.labels, prices), lambda o: o.height)
    del feats, regimes, prices, ctx
    archive, _summary = rec.stage("archive", lambda: archive_core.build_archive(labeled, list(spec.events)),
                                  lambda o: o[0].height)
    replay = replay_core.empty_like(labeled)  # no production model yet: the asset's empty buffer
    ts, info = rec.stage("training_set", lambda: build_training_set(labeled, archive, replay, spec.training_set,
                                                                    spec.labels.horizon), lambda o: o[0].height)
    del labeled, archive, replay
    train_rows = int((ts["split"] == "train").sum())
    balanced, _bs = rec.stage("balanced", lambda: balanced_sample(ts, spec.balance), lambda o: o[0].height)
    del ts
    weights = rec.stage("weights", lambda: sample_weights(balanced, spec.weights), lambda o: o.height)
    if lightgbm:
        mspec = next((m for m in spec.models if m.name == "lightgbm"), None)
        if mspec is None:
            from regime_assets.spec import DEFAULT_MODELS

            mspec = next(m for m in DEFAULT_MODELS if m.name == "lightgbm")
        joined = balanced.join(weights.select("row_id", "weight"), on="row_id", how="inner").sort("row_id")
        train, w = joined.drop("weight"), joined["weight"].to_numpy()
        feat_cols = model_core.feature_columns(train)
        rec.stage("lightgbm", lambda: model_core.fit_with_oof(mspec, train, w, feat_cols,
                                                              spec.meta.inner_holdout_fraction, spec.labels.horizon),
                  lambda o: train.height)
    rec.write(event="done", symbol_days=symbol_days, train_rows=train_rows,
              feature_columns=len([c for c in balanced.columns if c.startswith("f_")]),
              as_of=str(info.get("as_of")), polars_threads=pl.thread_pool_size())
    return 0


# ------------------------------------------------------------------------------------------------ the parent


def read_progress(path: Path) -> dict:
    """The child's JSON lines -> one result dict (also for a child that died part-way)."""
    res: dict = {"stages": [], "status": "failed", "failed_stage": None, "error": None}
    started = None
    if not path.exists():
        return res
    for line in path.read_text().splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = ev.pop("event")
        if kind == "begin":
            res.update({k: ev.get(k) for k in ("symbols", "years", "spec", "spec_name", "lazy_imports_s")})
        elif kind == "start":
            started = ev
        elif kind == "end":
            res["stages"].append(ev)
            started = None
        elif kind == "abort":
            res["status"], res["failed_stage"], res["error"] = "aborted", ev.get("stage"), ev.get("reason")
        elif kind == "done":
            res.update(ev)
            res["status"] = "ok"
    if res["status"] != "ok" and res["failed_stage"] is None and started is not None:
        res["failed_stage"] = started["stage"]
    return res


def _peak(stages: list[dict], names) -> float | None:
    vals = [s["peak_rss_mib"] for s in stages if s["stage"] in names]
    return max(vals) if vals else None


def _sum(stages: list[dict], names) -> float | None:
    vals = [s["seconds"] for s in stages if s["stage"] in names]
    return sum(vals) if vals else None


def run_size(n: int, years: float, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="regime_bench_scale_") as tmp:
        prog = Path(tmp) / "progress.jsonl"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(n), "--years", str(years),
               "--progress", str(prog), "--max-rss-gb", str(args.max_rss_gb)]
        if args.spec:
            cmd += ["--spec", args.spec]
        if args.lightgbm:
            cmd.append("--lightgbm")
        env = {k: v for k, v in os.environ.items() if k != "REGIME_ASSETS_SPEC"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout or None)
            rc, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, err = "timeout", (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        wall = time.perf_counter() - t0
        res = read_progress(prog)
    res.setdefault("symbols", n)
    res.setdefault("years", years)
    res["returncode"] = rc
    res["process_wall_s"] = wall
    if res["status"] != "ok":
        if res["error"] is None:
            if rc == -9:
                res["error"] = "killed by SIGKILL (likely the kernel's OOM killer)"
            elif rc == "timeout":
                res["error"] = f"timed out after {args.timeout} s"
            else:
                tail = [ln for ln in (err or "").strip().splitlines() if ln.strip()][-3:]
                res["error"] = f"exit code {rc}: " + " | ".join(tail)
    st = res["stages"]
    res["seconds_through_training_set"] = _sum(st, THROUGH_TRAINING_SET)
    res["seconds_data_stages"] = _sum(st, DATA_STAGES)
    res["peak_rss_through_training_set_mib"] = _peak(st, THROUGH_TRAINING_SET)
    res["peak_rss_mib"] = _peak(st, STAGES)
    if res.get("symbol_days") is None:
        gen = next((s for s in st if s["stage"] == "generate"), None)
        res["symbol_days"] = gen["rows"] if gen else None
    return res


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts)


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["status"] == "ok"]
    per_stage = {}
    for name in STAGES:
        xs, ys = [], []
        for r in ok:
            s = next((s for s in r["stages"] if s["stage"] == name), None)
            if s is not None:
                xs.append(r["symbol_days"])
                ys.append(s["seconds"])
        if not xs:
            continue
        big = max(ok, key=lambda r: r["symbol_days"])
        sb = next(s for s in big["stages"] if s["stage"] == name)
        per_stage[name] = {"exponent": slope(xs, ys), "s_per_million_rows": sb["seconds"] / big["symbol_days"] * 1e6,
                           "seconds_at_largest": sb["seconds"], "peak_rss_mib_at_largest": sb["peak_rss_mib"],
                           "rows_out_at_largest": sb["rows"]}
    xs = [r["symbol_days"] for r in ok]
    return {
        "exponent_through_training_set": slope(xs, [r["seconds_through_training_set"] for r in ok]),
        "exponent_data_stages": slope(xs, [r["seconds_data_stages"] for r in ok]),
        "exponent_peak_rss": slope(xs, [r["peak_rss_through_training_set_mib"] for r in ok]),
        "per_stage": per_stage,
    }


def _f(x, nd: int = 2) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def markdown(res: dict) -> str:
    runs, summ = res["runs"], res["summary"]
    lines = ["| symbols | years | symbol-days | status | s through training set | s all data stages | "
             "s / M symbol-days | peak RSS MiB through training set | peak RSS MiB (all stages) |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        per_m = (r["seconds_through_training_set"] / r["symbol_days"] * 1e6
                 if r["status"] == "ok" and r["symbol_days"] else None)
        status = r["status"] if r["status"] == "ok" else f"{r['status']} in {r['failed_stage']}: {r['error']}"
        lines.append(f"| {r['symbols']} | {r['years']:g} | {r['symbol_days'] or 0:,} | {status} | "
                     f"{_f(r['seconds_through_training_set'])} | {_f(r['seconds_data_stages'])} | {_f(per_m)} | "
                     f"{_f(r['peak_rss_through_training_set_mib'], 0)} | {_f(r['peak_rss_mib'], 0)} |")
    sizes = [r for r in runs]
    head = "| stage | " + " | ".join(f"s @ {r['symbols']}" for r in sizes) + \
        " | exponent | s / M symbol-days (largest) | peak RSS MiB @ " + " / ".join(str(r["symbols"]) for r in sizes) + \
        " | rows out (largest) |"
    lines += ["", head, "|---|" + "---:|" * (len(sizes) + 4)]
    for name in STAGES:
        cells = []
        peaks = []
        seen = False
        for r in sizes:
            s = next((s for s in r["stages"] if s["stage"] == name), None)
            seen |= s is not None
            if s is None and r["status"] != "ok" and r["failed_stage"] == name:
                cells.append("**died here**")
                peaks.append("**died**")
            else:
                cells.append(_f(s["seconds"]) if s else "-")
                peaks.append(_f(s["peak_rss_mib"], 0) if s else "-")
        if not seen and not any(r["failed_stage"] == name for r in sizes):
            continue
        ps = summ["per_stage"].get(name, {})
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_f(ps.get('exponent'))} | "
                     f"{_f(ps.get('s_per_million_rows'))} | {' / '.join(peaks)} | "
                     f"{'-' if ps.get('rows_out_at_largest') is None else format(ps['rows_out_at_largest'], ',')} |")
    lines += ["", f"Exponent (slope of log time vs log symbol-days): through the training set "
                  f"{_f(summ['exponent_through_training_set'])}, all data stages {_f(summ['exponent_data_stages'])}"
                  f"; peak RSS {_f(summ['exponent_peak_rss'])}. About 1 is linear; below 1 at small sizes means "
                  "fixed costs still dominate."]
    return "\n".join(lines)


def _vmrss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_graph(n: int, years: float, args) -> dict:
    """materialize_all on the synthetic market of ``n`` symbols x ``years`` in a fresh home (a subprocess)."""
    import yaml

    from regime_assets.spec import load_spec

    spec = load_spec(args.spec).resolved()
    spec["data"].update({"source": "synthetic", "synthetic_symbols": n, "synthetic_years": years, "symbols": None,
                         "start": None, "end": None})
    with tempfile.TemporaryDirectory(prefix="regime_bench_graph_") as tmp:
        sp, out, home = Path(tmp) / "spec.yaml", Path(tmp) / "e2e.json", Path(tmp) / "home"
        sp.write_text(yaml.safe_dump(spec, sort_keys=False))
        cmd = [sys.executable, str(Path(__file__).resolve().with_name("end_to_end.py")), "--spec", str(sp),
               "--home", str(home), "--json", str(out), "--verbose",
               *(["--select", args.select] if args.select else [])]
        env = {k: v for k, v in os.environ.items() if k != "REGIME_ASSETS_SPEC"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak, killed = 0.0, None
        import threading

        lines: list[str] = []
        step = {"name": None, "peaks": {}}

        def read():
            for ln in proc.stdout:
                if "STEP_START" in ln:
                    parts = [x.strip() for x in ln.split(" - ")]
                    prev = step["name"]
                    step["name"] = parts[parts.index("STEP_START") - 1] if "STEP_START" in parts else ln[-80:]
                    done = f" (previous step {prev}: peak {step['peaks'].get(prev, 0):,.0f} MiB)" if prev else ""
                    print(f"  [{time.perf_counter() - t0:7.1f} s] {step['name']}{done}", flush=True)
                lines.append(ln)
                del lines[:-50]

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while proc.poll() is None:
            rss = _vmrss_mib(proc.pid)
            peak = max(peak, rss)
            if step["name"]:
                step["peaks"][step["name"]] = max(step["peaks"].get(step["name"], 0.0), rss)
            if args.max_rss_gb and rss > args.max_rss_gb * 1024:
                killed = (f"stopped by the watchdog at {rss:,.0f} MiB > --max-rss-gb {args.max_rss_gb} "
                          f"in step {step['name']}")
                proc.kill()
            if args.timeout and time.perf_counter() - t0 > args.timeout:
                killed = f"timed out after {args.timeout} s"
                proc.kill()
            time.sleep(1.0)
        reader.join(timeout=5)
        wall = time.perf_counter() - t0
        res = json.loads(out.read_text()) if out.exists() else None
    r = {"symbols": n, "years": years, "process_wall_s": wall, "returncode": proc.returncode,
         "polled_peak_rss_mib": peak, "status": "ok" if res and res.get("success") else "failed",
         "error": killed or (None if res and res.get("success") else "".join(lines[-5:])[-2000:]),
         "polled_peak_rss_by_step_mib": step["peaks"]}
    if res:
        t = res["totals"]
        steps = sorted((s for s in res["steps"] if s.get("wall_s") is not None), key=lambda s: -s["wall_s"])
        r.update({"run_wall_s": t["run_wall_s"], "total_wall_s": t["total_wall_s"],
                  "peak_rss_self_mib": t["peak_rss_self_mib"], "peak_rss_sampled_mib": t["peak_rss_sampled_total_mib"],
                  "symbol_days": res["rows"].get("raw_prices"),
                  "slowest_steps": [{"step": s["step"], "wall_s": s["wall_s"], "peak_rss_mib": s.get("peak_rss_mib")}
                                    for s in steps[:8]], "failure": res.get("failure"),
                  "steps": [{"step": s["step"], "status": s["status"], "wall_s": s.get("wall_s"),
                             "load_s": s.get("load_s"), "store_s": s.get("store_s"),
                             "peak_rss_mib": s.get("peak_rss_mib")} for s in res["steps"]]})
    return r


def graph_markdown(runs: list[dict]) -> str:
    lines = ["| symbols | years | symbol-days | status | run wall s | total wall s (with definitions) | "
             "peak RSS MiB (ru_maxrss) | peak RSS MiB (sampled) | slowest steps (s) |", "|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in runs:
        slow = ", ".join(f"{s['step']} {s['wall_s']:.0f}" for s in r.get("slowest_steps", [])[:5])
        lines.append(f"| {r['symbols']} | {r['years']:g} | {r.get('symbol_days') or 0:,} | "
                     f"{r['status'] if r['status'] == 'ok' else 'failed: ' + str(r['error'])[:200]} | "
                     f"{_f(r.get('run_wall_s'), 1)} | {_f(r.get('total_wall_s'), 1)} | "
                     f"{_f(r.get('peak_rss_self_mib'), 0)} | {_f(r.get('peak_rss_sampled_mib'), 0)} | {slow} |")
    return "\n".join(lines)


def steps_markdown(r: dict) -> str:
    """Per step of one size's graph run, in execution order: status, wall time, DuckDB load/store, peak RSS."""
    lines = [f"| step ({r['symbols']} symbols x {r['years']:g} years) | status | wall s | load s | store s | "
             "peak RSS MiB |", "|---|---|---:|---:|---:|---:|"]
    for s in r.get("steps", []):
        lines.append(f"| {s['step']} | {s['status']} | {_f(s['wall_s'])} | {_f(s['load_s'])} | {_f(s['store_s'])} | "
                     f"{_f(s['peak_rss_mib'], 0)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated symbol counts")
    ap.add_argument("--years", type=float, default=30.0, help="years of synthetic history")
    ap.add_argument("--spec", help="spec whose non-data settings to use (default: the packaged spec)")
    ap.add_argument("--lightgbm", action="store_true", help="also fit the spec's lightgbm model on the balanced set")
    ap.add_argument("--max-rss-gb", type=float, default=12.0,
                    help="stop a child whose RSS passes this (0 = no limit); default 12, twice the 6 GB target")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per size (0 = none)")
    ap.add_argument("--json", help="write the figures to this JSON file")
    ap.add_argument("--graph", action="store_true", help="run the whole graph (materialize_all) per size")
    ap.add_argument("--select", help="with --graph: only this asset selection (bench/end_to_end.py --select)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode: one size
    ap.add_argument("--progress", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None:
        os.environ.pop("REGIME_ASSETS_SPEC", None)
        prog = Path(args.progress) if args.progress else Path(tempfile.mkstemp(suffix=".jsonl")[1])
        rc = run_one(args.one, args.years, args.spec, args.lightgbm, prog, args.max_rss_gb * 1024)
        if not args.progress:
            print(json.dumps(read_progress(prog), indent=1, default=str))
        return rc

    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if args.graph:
        runs = []
        for n in sizes:
            print(f"whole graph: {n} symbols x {args.years:g} years ...", flush=True)
            runs.append(run_graph(n, args.years, args))
            print(graph_markdown(runs[-1:]), flush=True)
            if runs[-1].get("steps"):
                print(steps_markdown(runs[-1]), flush=True)
        res = {"mode": "graph", "sizes": sizes, "years": args.years, "spec": args.spec or "packaged default",
               "max_rss_gb": args.max_rss_gb, "runs": runs, "machine": machine()}
        print()
        print(graph_markdown(runs))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=1, default=str))
            print(f"wrote {args.json}")
        return 0 if all(r["status"] == "ok" for r in runs) else 1
    runs = []
    for n in sizes:
        print(f"running {n} symbols x {args.years:g} years ...", flush=True)
        r = run_size(n, args.years, args)
        runs.append(r)
        if r["status"] == "ok":
            print(f"  {r['symbol_days']:,} symbol-days: {r['seconds_data_stages']:.1f} s, peak "
                  f"{r['peak_rss_mib']:,.0f} MiB", flush=True)
        else:
            print(f"  {r['status']} in stage {r['failed_stage']}: {r['error']}", flush=True)
    res = {"sizes": sizes, "years": args.years, "spec": args.spec or "packaged default",
           "lightgbm": args.lightgbm, "max_rss_gb": args.max_rss_gb, "runs": runs, "summary": summarise(runs),
           "machine": machine()}
    print()
    print(markdown(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
