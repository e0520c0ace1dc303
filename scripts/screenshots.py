"""Take the README's UI screenshots from a home with a completed run of the bundled graph.

    uv run regime-assets materialize --home /tmp/ra_bundled      # once (several minutes)
    uv run python scripts/screenshots.py [--home /tmp/ra_bundled] [--out docs/img]

Starts `dagster dev` on 127.0.0.1 (a free port) with REGIME_ASSETS_HOME=<home>, DAGSTER_HOME=<home>/dagster and
the packaged spec, drives headless Chromium (Playwright) and writes

* graph.png       the global asset lineage, every group with its edges,
* evaluation.png  the regime_evaluation asset page with its metric_bars plot open,
* automation.png  the Automation page: the schedules and sensors, running.

By default the home is copied to a temporary folder first and the copy's instance launches no runs
(`concurrency.runs.max_concurrent_runs: 0`): the sensors are on and would otherwise start a `retrain` run in the
home (the bundled drift score is above the threshold). `--in-place` uses the home itself, as `regime-assets ui`
does. The server's whole process group is killed at the end, so no code server or run worker outlives it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1600, "height": 1000}
GROUPS = ("ingest", "regimes", "samples", "training", "evaluation", "monitoring", "automation")
INSTIGATORS = ("weekly_retrain_schedule", "daily_monitoring_schedule", "drift_sensor", "new_event_sensor")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    body = json.dumps({"query": query}).encode()
    req = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def prepare_home(home: Path, in_place: bool, tmp: Path) -> Path:
    if not (home / "warehouse.duckdb").exists() or not (home / "dagster").is_dir():
        raise SystemExit(f"{home} has no completed run (warehouse.duckdb, dagster/); run "
                         f"`uv run regime-assets materialize --home {home}` first")
    if in_place:
        return home
    copy = tmp / "home"
    print(f"copying {home} to {copy}")
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("*.wal", "rewind"))
    cfg_path = copy / "dagster" / "dagster.yaml"
    cfg = (yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else None) or {}
    conc = cfg.get("concurrency") or {}
    cfg["concurrency"] = {**conc, "runs": {**(conc.get("runs") or {}), "max_concurrent_runs": 0}}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    nux = copy / "dagster" / ".nux"  # the "Join the Dagster community" dialog has been seen
    nux.mkdir(exist_ok=True)
    (nux / "nux.yaml").write_text("seen: 1\n")
    return copy


def start_dagster(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "REGIME_ASSETS_SPEC"}
    env.update({"REGIME_ASSETS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                "DAGSTER_DISABLE_TELEMETRY": "1"})
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-m", "regime_assets.definitions",
                                 "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"dagster dev exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                pass
            out = _graphql(url, "{ repositoriesOrError { __typename } }")
            if out.get("data", {}).get("repositoriesOrError", {}).get("__typename") == "RepositoryConnection":
                return
        except Exception:
            pass
        if time.time() > deadline:
            raise SystemExit(f"dagster dev did not come up in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL after 30 s; then SIGKILL whatever of the group is left (a code server
    with a run in progress outlives a graceful `dagster dev` shutdown)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _settle(page, ms: int = 1500) -> None:
    try:
        page.wait_for_load_state("networkidle", timeout=15_000)
    except Exception:  # the UI polls; idle may never come
        pass
    page.wait_for_timeout(ms)


def dismiss_dialogs(page) -> None:
    """The first visit to an instance may open "Join the Dagster community"; skip it."""
    skip = page.get_by_role("dialog").get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=3_000)
        skip.click()
        skip.wait_for(state="hidden")
    except Exception:
        pass


def shoot_graph(page, url: str, out: Path) -> None:
    page.goto(f"{url}/asset-groups")
    dismiss_dialogs(page)
    page.get_by_role("button", name="Materialize all").first.wait_for()
    for g in GROUPS:
        page.get_by_text(g, exact=True).first.wait_for()
    _settle(page, 3000)
    page.screenshot(path=str(out))


def shoot_evaluation(page, url: str, out: Path) -> None:
    page.goto(f"{url}/assets/regime_evaluation")
    row = page.locator("tr", has=page.get_by_text("metric_bars", exact=True))
    row.first.wait_for()
    _settle(page)
    row.first.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    img = dialog.locator("img[src^='data:image/png']").first
    img.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    page.wait_for_timeout(500)
    page.screenshot(path=str(out))


def shoot_automation(page, url: str, out: Path) -> None:
    page.goto(f"{url}/automation")
    for name in INSTIGATORS:
        page.get_by_text(name, exact=True).first.wait_for()
    _settle(page)
    page.screenshot(path=str(out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", default="/tmp/ra_bundled", help="a home with a completed bundled run")
    p.add_argument("--out", default=str(ROOT / "docs" / "img"))
    p.add_argument("--in-place", action="store_true", help="use the home itself, not a copy (sensors may launch runs)")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ra_screens_") as tmp:
        home = prepare_home(Path(args.home).resolve(), args.in_place, Path(tmp))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "dagster_dev.log"
        proc = start_dagster(home, port, log)
        try:
            wait_ready(url, proc, log)
            print(f"dagster dev up on {url}")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_context(viewport=VIEWPORT).new_page()
                    page.set_default_timeout(90_000)
                    for name, shoot in (("graph.png", shoot_graph), ("evaluation.png", shoot_evaluation),
                                        ("automation.png", shoot_automation)):
                        try:
                            shoot(page, url, out / name)
                        except Exception:
                            page.screenshot(path=str(Path(tmp).parent / f"ra_screens_failed_{name}"))
                            raise
                        print(f"wrote {out / name}")
                finally:
                    browser.close()
        finally:
            stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
