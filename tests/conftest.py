"""Shared fixtures: the tiny synthetic spec, an isolated home, and the Definitions built on them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_SPEC = ROOT / "tests" / "specs" / "tiny.yaml"
SMALL_SPEC = ROOT / "regime_assets" / "specs" / "synthetic_small.yaml"


@pytest.fixture(autouse=True)
def _no_leaked_dagster_home():
    """A test that leaves DAGSTER_HOME set (the CLI sets it in os.environ for its children) fails: every later
    test's subprocess would inherit that home and write its Dagster events there."""
    before = os.environ.get("DAGSTER_HOME")
    yield
    after = os.environ.get("DAGSTER_HOME")
    if after != before:
        if before is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = before
        pytest.fail(f"the test left DAGSTER_HOME={after!r} (was {before!r})")


@pytest.fixture(autouse=True)
def _isolated_env(_no_leaked_dagster_home, monkeypatch, tmp_path_factory):
    """No test reads the developer's home or spec by accident."""
    monkeypatch.delenv("REGIME_ASSETS_SPEC", raising=False)
    monkeypatch.setenv("REGIME_ASSETS_HOME", str(tmp_path_factory.mktemp("default_home")))
    yield


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def tiny_spec_path() -> str:
    return str(TINY_SPEC)


@pytest.fixture
def tiny_defs(home, tiny_spec_path):
    from regime_assets.definitions import build_definitions

    return build_definitions(spec_path=tiny_spec_path, home=str(home))


def pytest_configure(config):
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
