"""`regime-assets ui` stops its whole process group on SIGTERM and SIGINT: `dagster dev`, its webserver, daemon
and code server all end, none is left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from regime_assets.cli import group_members

ROOT = Path(__file__).resolve().parents[2]
TINY_SPEC = ROOT / "tests" / "specs" / "tiny.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _descendants(pid: int) -> set[int]:
    kids, out, todo = _children(), set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_stops_its_whole_process_group(sig, tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1"}
    env.pop("DAGSTER_HOME", None)
    log = tmp_path / "ui.log"
    with open(log, "w") as fh:
        cli = subprocess.Popen([sys.executable, "-m", "regime_assets.cli", "ui", "--spec", str(TINY_SPEC),
                                "--home", str(tmp_path / "home"), "--host", "127.0.0.1", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            assert cli.poll() is None, f"regime-assets ui exited early: {log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    break
            except OSError:
                assert time.time() < deadline, f"the UI did not come up: {log.read_text()[-2000:]}"
                time.sleep(1)
        time.sleep(3)  # let the daemon and the code server start too
        family = _descendants(cli.pid)
        groups = {int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[2]) for p in family
                  if _alive(p)}
        assert len(family) >= 3, f"expected dagster dev, its webserver and daemon: {family}"
        assert cli.pid not in groups, "dagster dev runs in its own process group"
        cli.send_signal(sig)
        rc = cli.wait(timeout=90)
        assert rc == 128 + sig, (rc, log.read_text()[-2000:])
        time.sleep(0.5)
        left = [p for p in family if _alive(p)]
        assert left == [], f"processes left after {sig.name}: {left}"
        assert all(group_members(g) == [] for g in groups), {g: group_members(g) for g in groups}
    finally:
        for p in [cli.pid, *_descendants(cli.pid)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        cli.wait(timeout=10)
