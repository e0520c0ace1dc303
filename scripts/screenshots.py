"""Screenshots of the Dagster UI on a finished run, for docs/img/.

    uv run regime-assets materialize --home /tmp/ra_bundled      # the bundled run to show
    uv run python scripts/screenshots.py --home /tmp/ra_bundled  # writes docs/img/{graph,evaluation,automation}.png

Starts `dagster dev` on 127.0.0.1 (free port) against that home's instance (DAGSTER_HOME=<home>/dagster) and
drives Debian's Chromium with Playwright; the server is stopped on every outcome.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _skip_onboarding(page) -> None:
    skip = page.locator("[role=dialog]", has_text="Join the Dagster community").get_by_role("button", name="Skip")
    if skip.count() and skip.first.is_visible():
        skip.first.click()
        page.wait_for_timeout(500)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="/tmp/ra_bundled")
    ap.add_argument("--spec", default=None)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args()
    home = Path(args.home).resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DAGSTER_HOME": str(home / "dagster"), "REGIME_ASSETS_HOME": str(home)}
    if args.spec:
        env["REGIME_ASSETS_SPEC"] = str(Path(args.spec).resolve())
    proc = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-m", "regime_assets.definitions", "-h",
                             "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=5)
                break
            except Exception:
                time.sleep(1)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                  args=["--no-sandbox", "--headless", "--disable-gpu",
                                        "--disable-background-networking"])
            page = b.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{url}/asset-groups")
            page.locator("button", has_text="Materialize all").first.wait_for()
            for g in ("training", "evaluation"):  # open two groups so assets show, not only group boxes
                page.get_by_text(g, exact=True).first.wait_for()
            page.wait_for_timeout(3000)
            _skip_onboarding(page)
            page.screenshot(path=str(out / "graph.png"))
            page.goto(f"{url}/assets/regime_evaluation")
            page.get_by_text("metric_bars").first.wait_for()
            _skip_onboarding(page)
            page.locator("tr", has_text="metric_bars").get_by_text("Show Markdown").first.click()
            page.locator("img[src^='data:image/png']").first.wait_for()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "evaluation.png"))
            page.goto(f"{url}/automation")
            page.get_by_text("drift_sensor", exact=True).first.wait_for()
            page.wait_for_timeout(1500)
            _skip_onboarding(page)
            page.screenshot(path=str(out / "automation.png"))
            b.close()
        print(f"wrote {out / 'graph.png'}, {out / 'evaluation.png'}, {out / 'automation.png'}")
        return 0
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    raise SystemExit(main())
