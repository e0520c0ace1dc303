"""The warehouse: one DuckDB file, one table per asset (named after the asset key).

``WarehouseIOManager`` is dagster-duckdb's ``DuckDBIOManager`` with two changes that keep stored data whole:

* a table asset is replaced atomically (``CREATE OR REPLACE TABLE ... AS SELECT`` in one statement), so a run
  killed mid-write leaves the previous table, never an empty or half-filled one, and a changed schema (a new
  feature in the spec) simply replaces the table;
* an asset whose definition metadata names ``append_only_key`` is append-only: new rows are inserted in one
  transaction only where their key is not stored yet, so re-materializing adds nothing and history is never
  rewritten.

Polars and pandas frames are both accepted; inputs load as polars unless annotated as pandas.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
from dagster import InputContext, MetadataValue, OutputContext, TableColumn, TableSchema
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb.io_manager import DuckDbClient

HOME_ENV = "REGIME_ASSETS_HOME"
APPEND_KEY = "append_only_key"
DEFAULT_SCHEMA = "main"


def default_home() -> Path:
    """$REGIME_ASSETS_HOME, else `.regime_assets/` in the project (the folder with pyproject.toml), else cwd."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    project = Path(__file__).resolve().parents[2]
    if (project / "pyproject.toml").exists():
        return project / ".regime_assets"
    return Path.cwd() / ".regime_assets"


def warehouse_path(home: Path | str) -> Path:
    return Path(home) / "warehouse.duckdb"


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
    """The stock client deletes a table's rows before the write; ours replaces atomically instead."""

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        return None

    @staticmethod
    @contextmanager
    def connect(context, _):
        with DuckDbClient.connect(context, _) as conn:
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
