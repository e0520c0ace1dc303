"""Dagster event-log storage for regime_assets homes: SQLite, with pool-slot changes serialised across processes.

Dagster's SQL storage claims a pool slot by reading a free slot row (``SELECT ... FOR UPDATE SKIP LOCKED``) and
then writing it (``UPDATE ... WHERE id = ?``). SQLite ignores ``FOR UPDATE`` and runs the read outside a write
transaction, so two processes that claim at the same moment can both read the same free row and both "claim"
it: two runs then hold the one ``warehouse`` slot and their DuckDB steps overlap (seen in
tests/reliability/test_concurrency.py, about one run in four). Here every call that changes slots or the
pending-step queue runs under an exclusive ``flock`` on a file next to the index database, so each
read-then-write is atomic across every process that opens the home (CLI runs, ``dagster dev``, its daemon).

``regime-assets`` writes this class into the dagster.yaml of a new home (``event_log_storage``, module
``regime_assets.home.event_log``, ``base_dir`` the home's ``history/runs``: where Dagster's default SQLite storage
keeps them, so a home can switch between the two). ``regime_assets.instance_storage``, the module path of earlier
releases, still names the same class.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

LOCK_NAME = ".regime_assets_pools.lock"


class PoolSafeSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose slot claims, frees and pending-step assignments hold an exclusive,
    cross-process file lock (re-entrant within a process)."""

    def __init__(self, base_dir: str, inst_data: Any = None):
        super().__init__(base_dir, inst_data=inst_data)
        self._pool_path = os.path.join(self._base_dir, LOCK_NAME)
        self._pool_guard = threading.RLock()
        self._pool_depth = 0
        self._pool_fh = None

    @classmethod
    def config_type(cls) -> dict:
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: dict) -> PoolSafeSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def pool_lock(self) -> Iterator[None]:
        """Exclusive across processes (``flock``) and threads; a nested call in the same thread passes."""
        import fcntl

        with self._pool_guard:
            if self._pool_depth == 0:
                if self._pool_fh is None:
                    self._pool_fh = open(self._pool_path, "a")  # noqa: SIM115 - held for the storage's life
                fcntl.flock(self._pool_fh, fcntl.LOCK_EX)
            self._pool_depth += 1
            try:
                yield
            finally:
                self._pool_depth -= 1
                if self._pool_depth == 0:
                    fcntl.flock(self._pool_fh, fcntl.LOCK_UN)

    def dispose(self) -> None:
        if self._pool_fh is not None:
            self._pool_fh.close()
            self._pool_fh = None
        super().dispose()

    # every call that reads slots or the queue and then writes them
    def claim_concurrency_slot(self, *args: Any, **kwargs: Any):
        with self.pool_lock():
            return super().claim_concurrency_slot(*args, **kwargs)

    def free_concurrency_slots_for_run(self, *args: Any, **kwargs: Any):
        with self.pool_lock():
            return super().free_concurrency_slots_for_run(*args, **kwargs)

    def free_concurrency_slot_for_step(self, *args: Any, **kwargs: Any):
        with self.pool_lock():
            return super().free_concurrency_slot_for_step(*args, **kwargs)

    def assign_pending_steps(self, *args: Any, **kwargs: Any):
        with self.pool_lock():
            return super().assign_pending_steps(*args, **kwargs)

    def set_concurrency_slots(self, *args: Any, **kwargs: Any):
        with self.pool_lock():
            return super().set_concurrency_slots(*args, **kwargs)

    def delete_concurrency_limit(self, *args: Any, **kwargs: Any):
        with self.pool_lock():
            return super().delete_concurrency_limit(*args, **kwargs)

    def initialize_concurrency_limit_to_default(self, *args: Any, **kwargs: Any):
        with self.pool_lock():
            return super().initialize_concurrency_limit_to_default(*args, **kwargs)
