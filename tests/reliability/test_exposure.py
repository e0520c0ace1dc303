"""Exposure: the UI binds to 127.0.0.1, and secrets in the environment of a run end up nowhere it writes."""

from __future__ import annotations

import polars as pl
import pytest

from .conftest import SECRETS


def _ui_argv(monkeypatch, tmp_path, *extra: str) -> list[str]:
    import regime_assets.cli as cli

    calls = []
    monkeypatch.setattr(cli, "run_process_group", lambda cmd, *a, **k: calls.append(list(cmd)) or 0)
    for var in ("DAGSTER_HOME", "REGIME_ASSETS_SPEC", "REGIME_ASSETS_HOME"):
        monkeypatch.setenv(var, "")  # the CLI sets them for its child; restored after the test
        monkeypatch.delenv(var)
    assert cli.main(["ui", "--home", str(tmp_path / "home"), *extra]) == 0
    (cmd,) = calls
    return cmd


def test_ui_command_binds_to_loopback_by_default(monkeypatch, tmp_path):
    cmd = _ui_argv(monkeypatch, tmp_path)
    assert cmd[1:5] == ["-m", "dagster", "dev", "-m"] and cmd[5] == "regime_assets.definitions"
    assert cmd[cmd.index("-h") + 1] == "127.0.0.1"
    assert cmd[cmd.index("-p") + 1] == "3000"
    assert "0.0.0.0" not in cmd


def test_ui_command_uses_the_home_instance(monkeypatch, tmp_path):
    import os

    cmd = _ui_argv(monkeypatch, tmp_path, "--port", "3999")
    assert cmd[cmd.index("-p") + 1] == "3999" and cmd[cmd.index("-h") + 1] == "127.0.0.1"
    assert os.environ["DAGSTER_HOME"] == str((tmp_path / "home" / "dagster").resolve())
    assert (tmp_path / "home" / "dagster" / "dagster.yaml").is_file()


@pytest.mark.slow
def test_secrets_in_the_environment_appear_nowhere_a_run_writes(killed_then_rerun):
    """Three runs (two killed, one complete) had REGIME_ASSETS_TEST_SECRET and AWS_SECRET_ACCESS_KEY set: no
    byte of any file under the home (warehouse, model store, Dagster event logs, compute logs), no event-log
    entry or run tag, and no warehouse cell carries their values."""
    import duckdb
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import serialize_value

    home = killed_then_rerun.home
    values = list(SECRETS.values())
    files = [p for p in home.rglob("*") if p.is_file()]
    assert len(files) > 10
    for p in files:
        data = p.read_bytes()
        assert not any(v.encode() in data for v in values), p
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster"))) as instance:
        runs = instance.get_runs()
        assert len(runs) == 3
        for run in runs:
            text = serialize_value(run) + "".join(serialize_value(e) for e in instance.all_logs(run.run_id))
            assert "dagster/" in text and not any(v in text for v in values), run.run_id
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        tables = [r[0] for r in conn.execute("select table_name from information_schema.tables").fetchall()]
        assert len(tables) > 10
        for t in tables:
            text = pl.DataFrame(conn.sql(f'select * from "{t}"').to_arrow_table()).write_json()
            assert not any(v in text for v in values), t
