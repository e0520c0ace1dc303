"""The home: the one folder a run writes (warehouse, model store, Dagster instance) and how it is opened.

* ``paths``     — where things are: ``$REGIME_ASSETS_HOME`` (``default_home``), ``warehouse_path``, the model store
  root (``models_root``: a folder in the home, or ``$REGIME_ASSETS_MODEL_STORE``, which may be an object-store URL);
* ``instance``  — the Dagster instance of the home: its ``dagster.yaml`` (SQLite with the pool-safe event log, or a
  PostgreSQL one from ``postgres_instance_yaml``), the lock that serialises its creation, ``prepare_environment``;
* ``runs``      — runs this software started (pid/host tags) and ``reclaim_dead_runs`` after a killed process;
* ``event_log`` — ``PoolSafeSqliteEventLogStorage`` (``regime_assets.instance_storage`` is kept as an alias module
  so dagster.yaml files that name it keep working).

Only ``paths`` is imported here: it needs nothing but the standard library (the others import Dagster).
"""

from regime_assets.home.paths import HOME_ENV, MODEL_STORE_ENV, default_home, models_root, warehouse_path

__all__ = ["HOME_ENV", "MODEL_STORE_ENV", "default_home", "models_root", "warehouse_path"]
