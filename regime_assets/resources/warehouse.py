"""The warehouse: one DuckDB file, one table per asset (named after the asset key).

``WarehouseIOManager`` is dagster-duckdb's ``DuckDBIOManager`` with two changes that keep stored data whole:

* a table asset is replaced atomically (``CREATE OR REPLACE TABLE ... AS SELECT`` in one statement), so a run
  killed mid-write leaves the previous table, never an empty or half-filled one, and a changed schema (a new
  feature in the spec) simply replaces the table;
* an asset whose definition metadata names ``append_only_key`` is append-only: new rows are inserted in one
  transaction only where their key is not stored yet, so re-materializing adds nothing and history is never
  rewritten.

Every load and store holds an exclusive, cross-process file lock (``warehouse_lock``: ``flock`` on
``<database>.lock``) for the life of its DuckDB connection. DuckDB lets one process at a time open the file, so
steps running in several processes (the multiprocess executor, two runs at once) take turns at the file itself,
whatever the concurrency pools say: an asset whose computation does not touch the file (a model fit) needs no
pool slot, and its load and store still never overlap another process's.

Polars and pandas frames are both accepted; inputs load as polars unless annotated as pandas.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
from dagster import InputContext, MetadataValue, OutputContext, TableColumn, TableSchema
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb.io_manager import DuckDbClient

from regime_assets.home.paths import HOME_ENV, default_home, warehouse_path  # noqa: F401 (kept importable here)

APPEND_KEY = "append_only_key"
DEFAULT_SCHEMA = "main"
LOCK_SUFFIX = ".lock"


class _FileLock:
    """An exclusive flock on one file, re-entrant within a process (threads wait for each other)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.guard = threading.RLock()
        self.depth = 0
        self.fh = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        import fcntl

        with self.guard:
            if self.depth == 0:
                self.fh = open(self.path, "a")  # noqa: SIM115 - closed when the outermost hold ends
                try:
                    fcntl.flock(self.fh, fcntl.LOCK_EX)
                except BaseException:
                    self.fh.close()
                    raise
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0:
                    fcntl.flock(self.fh, fcntl.LOCK_UN)
                    self.fh.close()
                    self.fh = None


_LOCKS: dict[str, _FileLock] = {}
_LOCKS_GUARD = threading.Lock()


def _is_file(database: str) -> bool:
    return database not in ("", ":memory:") and not database.startswith(("md:", "motherduck:"))


@contextmanager
def warehouse_lock(database: str | Path) -> Iterator[None]:
    """Hold the warehouse file's cross-process lock (``<database>.lock``); nothing for a non-file database."""
    database = str(database)
    if not _is_file(database):
        yield
        return
    path = str(Path(database).resolve()) + LOCK_SUFFIX
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path, _FileLock(path))
    with lock.hold():
        yield


@contextmanager
def locked_connection(database: str | Path, read_only: bool = False, config: dict | None = None,
                      retries: int = 20) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection opened and closed under ``warehouse_lock``; opening is retried while a process that
    does not take the lock (a notebook, the duckdb shell) holds the file."""
    with warehouse_lock(database):
        delay = 0.2
        for attempt in range(retries):
            try:
                conn = duckdb.connect(str(database), read_only=read_only, config=config or {})
                break
            except duckdb.IOException as err:
                if attempt == retries - 1:
                    raise RuntimeError(
                        f"the warehouse {database} is locked by another process (another run is writing); "
                        f"tried {retries} times: {err}") from err
                time.sleep(delay)
                delay = min(delay * 1.5, 5.0)
        try:
            yield conn
        finally:
            conn.close()


DUCKDB_MEMORY_LIMIT = "3GB"


def _qualified(table_slice: TableSlice) -> str:
    return f'"{table_slice.schema}"."{table_slice.table}"'


def write_table(connection: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pl.DataFrame,
                append_key: Sequence[str] | None = None) -> int:
    """Replace (or, with ``append_key``, append new keys to) a table atomically; returns rows inserted."""
    arrow = frame.to_arrow()  # noqa: F841  (referenced by name in the SQL below)
    qual = f'"{schema}"."{table}"'
    connection.execute(f'create schema if not exists "{schema}"')
    if not append_key:
        connection.execute(f"create or replace table {qual} as select * from arrow")
        return frame.height
    keys = list(append_key)
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise ValueError(f"append-only table {table}: key columns {missing} missing from the output")
    connection.execute("begin transaction")
    try:
        connection.execute(f"create table if not exists {qual} as select * from arrow limit 0")
        _add_new_columns(connection, schema, table, frame)
        before = connection.execute(f"select count(*) from {qual}").fetchall()[0][0]
        cond = " and ".join(f't."{k}" is not distinct from n."{k}"' for k in keys)
        # dedupe the incoming frame on the key too, then insert only keys not stored yet
        connection.execute(
            f"insert into {qual} by name select * exclude (_rn) from ("
            f"select *, row_number() over (partition by {', '.join(chr(34) + k + chr(34) for k in keys)}) as _rn "
            f"from arrow) n where _rn = 1 and not exists (select 1 from {qual} t where {cond})"
        )
        after = connection.execute(f"select count(*) from {qual}").fetchall()[0][0]
        connection.execute("commit")
    except BaseException:
        connection.execute("rollback")
        raise
    return int(after - before)


def _add_new_columns(connection: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pl.DataFrame) -> None:
    """An append-only table whose rows gained columns (a newer version of the asset) gets them added, null for
    the rows stored before; nothing stored is changed."""
    stored = {r[0] for r in connection.execute(
        "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
        [schema, table]).fetchall()}
    new = [c for c in frame.columns if c not in stored]
    if not new:
        return
    arrow = frame.select(new).head(0).to_arrow()  # noqa: F841  (referenced by name in the SQL below)
    for name, sql_type, *_ in connection.execute("describe select * from arrow").fetchall():
        connection.execute(f'alter table "{schema}"."{table}" add column "{name}" {sql_type}')


def read_table(connection: duckdb.DuckDBPyConnection, schema: str, table: str) -> pl.DataFrame | None:
    try:
        return pl.DataFrame(connection.sql(f'select * from "{schema}"."{table}"').to_arrow_table())
    except duckdb.CatalogException:
        return None


class _Handler(DbTypeHandler):
    frame_type: type = pl.DataFrame

    def _to_polars(self, obj) -> pl.DataFrame:
        return obj

    def _from_polars(self, df: pl.DataFrame):
        return df

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj, connection):
        frame = self._to_polars(obj)
        key = (context.definition_metadata or {}).get(APPEND_KEY)
        inserted = write_table(connection, table_slice.schema, table_slice.table, frame, key)
        meta = {
            "table": MetadataValue.text(f"{table_slice.schema}.{table_slice.table}"),
            "dataframe_columns": MetadataValue.table_schema(
                TableSchema(columns=[TableColumn(name=n, type=str(t)) for n, t in frame.schema.items()])),
        }
        if key:
            total = connection.execute(f"select count(*) from {_qualified(table_slice)}").fetchall()[0][0]
            meta.update({"rows_appended": inserted, "row_count": int(total), "append_only_key": ", ".join(key)})
        else:
            meta["row_count"] = frame.height
        context.add_output_metadata(meta)

    def load_input(self, context: InputContext, table_slice: TableSlice, connection):
        df = read_table(connection, table_slice.schema, table_slice.table)
        if df is None:
            raise FileNotFoundError(
                f"table {table_slice.schema}.{table_slice.table} does not exist yet: materialize "
                f"{table_slice.table} first")
        if table_slice.columns:
            df = df.select(table_slice.columns)
        return self._from_polars(df)

    @property
    def supported_types(self):
        return [self.frame_type]


class PolarsHandler(_Handler):
    frame_type = pl.DataFrame


class PandasHandler(_Handler):
    frame_type = pd.DataFrame

    def _to_polars(self, obj: pd.DataFrame) -> pl.DataFrame:
        return pl.from_pandas(obj)

    def _from_polars(self, df: pl.DataFrame) -> pd.DataFrame:
        return df.to_pandas()


class _SafeClient(DuckDbClient):
    """The stock client deletes a table's rows before the write; ours replaces atomically instead, and holds the
    warehouse's file lock for the life of each connection."""

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        return None

    @staticmethod
    @contextmanager
    def connect(context, _):
        config = {"custom_user_agent": "dagster", **(context.resource_config.get("connection_config") or {})}
        with locked_connection(context.resource_config["database"], config=config) as conn:
            # DuckDB's own buffers: bounded (it spills to disk beyond), not the default 80 % of the machine's RAM
            conn.execute(f"set memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
            yield conn


class WarehouseIOManager(DuckDBIOManager):
    """DuckDB IO manager for polars and pandas frames with atomic replace and append-only tables."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PolarsHandler(), PandasHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pl.DataFrame

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=_SafeClient(),
            database=self.database,
            schema=self.schema_ or DEFAULT_SCHEMA,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseIOManager",
        )
