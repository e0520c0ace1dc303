"""Shared by the reliability tests: `regime-assets materialize` in subprocesses (killed or not) on a small spec."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY_SPEC = ROOT / "tests" / "specs" / "tiny.yaml"
# every asset a retraining run writes, walk-forward and monitoring aside (cheaper; two tree models below)
GRAPH_SELECTION = "+key:training_runs"
SECRETS = {"REGIME_ASSETS_TEST_SECRET": f"rel-secret-{uuid.uuid4().hex}",
           "AWS_SECRET_ACCESS_KEY": f"AKIA{uuid.uuid4().hex.upper()}"}


def small_spec(path: Path) -> Path:
    """tests/specs/tiny.yaml with two tree models (the graph's shape, a fraction of the cost)."""
    data = yaml.safe_load(TINY_SPEC.read_text())
    data["name"] = "tiny_two_models"
    data["models"] = [m for m in data["models"] if m["name"] in ("rf", "extra_trees")]
    # the walk-forward (the gate's evidence) with the same two models: one arm, no production arms
    data["walk_forward"] = {**data.get("walk_forward", {}), "models": ["rf"], "model_params": {},
                            "arms": ["unweighted"], "production_arms": []}
    path.write_text(yaml.safe_dump(data))
    return path


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DAGSTER_HOME", "REGIME_ASSETS_HOME", "REGIME_ASSETS_SPEC")}
    env.update({"DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1", **(extra or {})})
    return env


def cli_cmd(spec: Path, home: Path, select: str | None = GRAPH_SELECTION) -> list[str]:
    cmd = [sys.executable, "-m", "regime_assets.cli", "materialize", "--spec", str(spec), "--home", str(home)]
    return cmd + (["--select", select] if select else [])


@dataclass
class CliRun:
    returncode: int
    output: str
    seconds: float
    killed_at_step: str | None = None
    steps_started: list[str] = field(default_factory=list)


def run_cli(spec: Path, home: Path, select: str | None = GRAPH_SELECTION, kill_at_step: str | None = None,
            kill_delay: float = 0.3, timeout: float = 240, env: dict[str, str] | None = None) -> CliRun:
    """Run `regime-assets materialize` in its own process group; with ``kill_at_step``, SIGKILL the group
    ``kill_delay`` seconds after that step's STEP_START line appears (the step is then mid-flight)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cli_cmd(spec, home, select), cwd=ROOT, env=cli_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    out, started, killed = [], [], None
    try:
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                raise TimeoutError(f"regime-assets materialize still running after {timeout}s:\n"
                                   + "".join(out[-30:]))
            try:
                line = lines.get(timeout=min(left, 5))
            except queue.Empty:
                continue
            if line is None:
                break
            out.append(line)
            if " - STEP_START - " in line:
                step = line.split(" - STEP_START - ")[0].rsplit(" - ", 1)[-1].strip()
                started.append(step)
                if step == kill_at_step and killed is None:
                    time.sleep(kill_delay)
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = step
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return CliRun(proc.returncode, "".join(out), time.monotonic() - t0, killed, started)


@dataclass
class KilledGraph:
    home: Path
    spec: Path
    runs: list[CliRun]
    planted: list[Path]


@pytest.fixture(scope="session")
def killed_then_rerun(tmp_path_factory) -> KilledGraph:
    """The small graph, SIGKILLed mid-step twice (in a model fit, then in the promotion step that appends to
    model_versions), leftovers of a model-store write planted as a kill in ModelStore.save would leave them,
    then run to the end — all with secret-looking environment variables set."""
    base = tmp_path_factory.mktemp("killed_graph")
    spec, home = small_spec(base / "spec.yaml"), base / "home"
    runs = [run_cli(spec, home, kill_at_step="model_rf", kill_delay=0.5, env=SECRETS)]
    runs.append(run_cli(spec, home, kill_at_step="promotion", kill_delay=0.2, env=SECRETS))
    store = home / "models" / "model_rf"
    store.mkdir(parents=True, exist_ok=True)
    planted = [store / ".tmp-0123456789abcdef", store / "20200101T000000000000Z-deadbeef"]
    planted[0].write_bytes(b"half a joblib")
    planted[1].mkdir()
    (planted[1] / "model.joblib").write_bytes(b"a model without its meta.json")
    runs.append(run_cli(spec, home, env=SECRETS))
    return KilledGraph(home, spec, runs, planted)
