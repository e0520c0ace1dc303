"""The Dagster instance of a home: its dagster.yaml, the lock around its creation, the process environment.

``regime-assets`` takes the instance from ``$DAGSTER_HOME/dagster.yaml`` (default ``<home>/dagster``). A new home
gets ``INSTANCE_YAML``: Dagster's SQLite storage with the pool-safe event log (``event_log.py``) and every pool
limited to one slot. A dagster.yaml someone wrote (``postgres_instance_yaml``: run, event-log and schedule
storage on PostgreSQL) is used as it is; only unedited configs of earlier releases are upgraded.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from regime_assets.home.paths import HOME_ENV, default_home

LOCK_FILE = ".regime_assets.lock"

INSTANCE_YAML = """# Dagster instance for regime_assets (written by `regime-assets`; edit freely).
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
concurrency:
  pools:
    default_limit: 1
# Dagster's SQLite event log (its default place), with pool-slot claims serialised across processes
event_log_storage:
  module: regime_assets.home.event_log
  class: PoolSafeSqliteEventLogStorage
  config:
    base_dir: {event_log_dir}
telemetry:
  enabled: false
"""
# what homes created by earlier releases hold: replaced by INSTANCE_YAML when found unedited
_OLD_INSTANCE_YAMLS = ("""# Dagster instance for regime_assets (written by `regime-assets`; edit freely).
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
""",)
# the previous INSTANCE_YAML named the event log by its earlier module path (still importable, see
# regime_assets/instance_storage.py); an unedited one is rewritten with today's path
_PREVIOUS_MODULE = "regime_assets.instance_storage"

POSTGRES_INSTANCE_YAML = """# Dagster instance for regime_assets on PostgreSQL (run, event-log and schedule storage).
storage:
  postgres:
    postgres_db:
      hostname: {hostname}
      port: {port}
      username: {username}
      password: {password}
      db_name: {db_name}
      # dagster-postgres installs psycopg2; SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3
      scheme: postgresql+psycopg2
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def _event_log_dir(dagster_home: Path) -> str:
    return json.dumps(str(Path(dagster_home).resolve() / "history" / "runs"))


def instance_yaml(dagster_home: Path | str) -> str:
    """The dagster.yaml of a new home (event logs where Dagster's default SQLite storage keeps them)."""
    return INSTANCE_YAML.replace("{event_log_dir}", _event_log_dir(Path(dagster_home)))


def _upgradable(dagster_home: Path) -> tuple[str, ...]:
    previous = instance_yaml(dagster_home).replace("regime_assets.home.event_log", _PREVIOUS_MODULE)
    return (*_OLD_INSTANCE_YAMLS, previous)


def postgres_instance_yaml(hostname: str = "localhost", port: int = 5432, username: str = "dagster",
                           password: str | None = None, db_name: str = "dagster", pool_limit: int = 1) -> str:
    """A dagster.yaml with run, event-log and schedule storage on PostgreSQL (dagster-postgres) and every pool
    limited to ``pool_limit`` slots. Without ``password`` the password is read from $DAGSTER_PG_PASSWORD when the
    instance loads (Dagster's ``env:`` form), so none is written to the file."""
    pw = json.dumps(password) if password is not None else "\n        env: DAGSTER_PG_PASSWORD"
    text = POSTGRES_INSTANCE_YAML.format(hostname=json.dumps(hostname), port=int(port),
                                         username=json.dumps(username), password=pw, db_name=json.dumps(db_name))
    return text.replace("default_limit: 1", f"default_limit: {int(pool_limit)}")


@contextmanager
def instance_lock(dagster_home: Path):
    """Exclusive lock while the instance config and storage are created: two processes starting on a fresh home
    at once would otherwise both run the storage migrations (two alembic heads: an instance that no command
    or UI can open again) or read a half-written dagster.yaml."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(Path(dagster_home) / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


WAREHOUSE_POOL = "warehouse"


def pin_pool_limits(instance, pools: tuple[str, ...] = (WAREHOUSE_POOL,)) -> dict[str, int]:
    """On a non-SQLite event log (PostgreSQL), set each pool's limit explicitly to the instance's
    ``concurrency.pools.default_limit`` (the dagster.yaml stays the source of the number). Returns what was set.

    Dagster fills a pool's limit from ``default_limit`` lazily, at the first claim, with an INSERT that falls back
    to an UPDATE when the row exists (``initialize_concurrency_limit_to_default``). On PostgreSQL the failed INSERT
    aborts the transaction and the UPDATE then fails with ``InFailedSqlTransaction`` (Dagster issue #33552): a run
    crashes when two processes initialise a pool at once, or whenever ``default_limit`` changed since the pool was
    first used. An explicitly set limit (``set_concurrency_slots``, as the UI's "edit pool limit" does) is never
    re-initialised, so that path is never taken. SQLite homes keep the lazy default (its INSERT failure leaves the
    transaction usable)."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    storage = instance.event_log_storage
    limit = instance.global_op_concurrency_default_limit
    if isinstance(storage, SqliteEventLogStorage) or limit is None or not storage.supports_global_concurrency_limits:
        return {}
    current = {p.name: p for p in storage.get_pool_limits()}
    done = {}
    for pool in pools:
        have = current.get(pool)
        if have is None or have.from_default or have.limit != limit:
            storage.set_concurrency_slots(pool, int(limit))
            done[pool] = int(limit)
    return done


def prepare_environment(spec: str | None, home: str | None) -> tuple[Path, Path]:
    """Set REGIME_ASSETS_SPEC / REGIME_ASSETS_HOME / DAGSTER_HOME for this process and its children, write the
    home's dagster.yaml when there is none (or an unedited one of an earlier release), and open the instance once
    so its storage exists (on PostgreSQL the pool limits are set explicitly, ``pin_pool_limits``). Returns
    (home, DAGSTER_HOME)."""
    from regime_assets.spec import SPEC_ENV

    if spec:
        os.environ[SPEC_ENV] = str(Path(spec).resolve())
    if home:
        os.environ[HOME_ENV] = str(Path(home).resolve())
    home_path = default_home()
    home_path.mkdir(parents=True, exist_ok=True)
    os.environ[HOME_ENV] = str(home_path)
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home_path / "dagster").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    cfg = dagster_home / "dagster.yaml"
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with instance_lock(dagster_home):
        if not cfg.exists() or cfg.read_text() in _upgradable(dagster_home):
            cfg.write_text(instance_yaml(dagster_home))
        from dagster import DagsterInstance

        with DagsterInstance.get() as instance:  # opening creates and migrates the instance's storage
            pin_pool_limits(instance)
    return home_path, dagster_home
