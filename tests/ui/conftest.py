"""A real `dagster dev` on 127.0.0.1 (free port, temporary DAGSTER_HOME and results home, the tiny synthetic spec)
and a headless Chromium driven by Playwright. The server is shut down on every outcome. Chromium is Debian's
package, installed with apt-get where it is missing (tests/_system.py); where it cannot be had the browser tests
fail with one line that says what to install."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _system import ensure_program

ROOT = Path(__file__).resolve().parents[2]
TINY_SPEC = ROOT / "tests" / "specs" / "tiny.yaml"
CHROMIUM = "/usr/bin/chromium"


def instance_yaml(dagster_home: Path) -> str:
    """The CLI's instance config (pool-safe event log included), run monitoring off for a short-lived server."""
    from regime_assets.cli import instance_yaml as cli_yaml

    text = cli_yaml(dagster_home)
    return text.replace("run_monitoring:\n  enabled: true\n  poll_interval_seconds: 30\n", "run_monitoring:\n  enabled: false\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path, shots: Path) -> None:
        self.url, self.proc, self.log, self.shots = url, proc, log, shots

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            out = json.loads(r.read())
        assert "errors" not in out, out
        return out["data"]


@pytest.fixture(scope="session")
def dagster_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui")
    dhome = base / "dagster_home"
    dhome.mkdir()
    (dhome / "dagster.yaml").write_text(instance_yaml(dhome))
    assert "run_monitoring:\n  enabled: false" in (dhome / "dagster.yaml").read_text()
    (dhome / ".nux").mkdir()
    (dhome / ".nux" / "nux.yaml").write_text("seen: 1\n")  # no onboarding dialog over the page
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(dhome), "REGIME_ASSETS_HOME": str(base / "home"),
           "REGIME_ASSETS_SPEC": str(TINY_SPEC), "DAGSTER_DISABLE_TELEMETRY": "1"}
    log = base / "dagster_dev.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-m", "regime_assets.definitions",
                                 "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = Server(url, proc, log, base / "screenshots")
    server.shots.mkdir()
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                    pass
                server.graphql("{ repositoriesOrError { __typename } }")
                break
            except Exception:
                if time.time() > deadline:
                    raise RuntimeError(f"dagster dev did not come up: {log.read_text()[-3000:]}") from None
                time.sleep(1)
        yield server
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        # a code server or run worker can outlive a clean `dagster dev` exit: end the whole group regardless
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def chromium() -> str:
    return ensure_program("chromium", "chromium", (CHROMIUM,))


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True,
                              args=["--no-sandbox", "--headless", "--disable-gpu",
                                    "--disable-background-networking"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        ctx.close()
