"""The home module: paths, the instance config (old module path still loads), the Postgres config's shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from regime_assets.home import instance as home_instance
from regime_assets.home.paths import MODEL_STORE_ENV, models_root, warehouse_path


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("DAGSTER_HOME", "REGIME_ASSETS_HOME", "REGIME_ASSETS_SPEC"):
        monkeypatch.setenv(var, "")  # set-then-delete: restored after the test (prepare_environment sets them)
        monkeypatch.delenv(var)
    return monkeypatch


def _storage_kind(dagster_home: Path) -> str:
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        return type(instance.event_log_storage).__module__ + "." + type(instance.event_log_storage).__name__


def test_a_config_naming_the_earlier_module_path_still_loads_the_pool_safe_storage(tmp_path, clean_env):
    dhome = tmp_path / "home" / "dagster"
    dhome.mkdir(parents=True)
    earlier = home_instance.instance_yaml(dhome).replace("regime_assets.home.event_log",
                                                         "regime_assets.instance_storage")
    edited = earlier.replace("poll_interval_seconds: 30", "poll_interval_seconds: 31")  # someone's own config
    (dhome / "dagster.yaml").write_text(edited)
    assert _storage_kind(dhome) == "regime_assets.home.event_log.PoolSafeSqliteEventLogStorage"
    _, got = home_instance.prepare_environment(None, str(tmp_path / "home"))
    assert got == dhome.resolve() and (dhome / "dagster.yaml").read_text() == edited  # theirs: left as it is


def test_an_unedited_config_of_the_earlier_release_is_rewritten_with_todays_module_path(tmp_path, clean_env):
    dhome = tmp_path / "home" / "dagster"
    dhome.mkdir(parents=True)
    earlier = home_instance.instance_yaml(dhome).replace("regime_assets.home.event_log",
                                                         "regime_assets.instance_storage")
    (dhome / "dagster.yaml").write_text(earlier)
    home_instance.prepare_environment(None, str(tmp_path / "home"))
    text = (dhome / "dagster.yaml").read_text()
    assert text == home_instance.instance_yaml(dhome) and "regime_assets.instance_storage" not in text


def test_the_cli_and_the_old_module_name_the_same_objects():
    from regime_assets import cli, instance_storage
    from regime_assets.home import event_log, runs

    assert instance_storage.PoolSafeSqliteEventLogStorage is event_log.PoolSafeSqliteEventLogStorage
    assert cli.reclaim_dead_runs is runs.reclaim_dead_runs and cli.prepare_environment is \
        home_instance.prepare_environment


def test_model_store_root_default_override_and_url(tmp_path, monkeypatch):
    monkeypatch.delenv(MODEL_STORE_ENV, raising=False)
    assert models_root(tmp_path) == str(tmp_path / "models")
    assert models_root(tmp_path, "s3://bucket/models") == "s3://bucket/models"
    monkeypatch.setenv(MODEL_STORE_ENV, str(tmp_path / "elsewhere"))
    assert models_root(tmp_path) == str((tmp_path / "elsewhere").resolve())
    assert warehouse_path(tmp_path) == tmp_path / "warehouse.duckdb"


def test_postgres_config_sets_storage_and_the_pool_limit_and_keeps_the_password_out():
    cfg = yaml.safe_load(home_instance.postgres_instance_yaml(hostname="127.0.0.1", port=6543, pool_limit=2))
    db = cfg["storage"]["postgres"]["postgres_db"]
    assert db["hostname"] == "127.0.0.1" and db["port"] == 6543
    assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert cfg["concurrency"]["pools"]["default_limit"] == 2
