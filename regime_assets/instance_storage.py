"""Earlier module path of the home's event-log storage, kept so dagster.yaml files that name it keep working:

    event_log_storage:
      module: regime_assets.instance_storage
      class: PoolSafeSqliteEventLogStorage

The storage lives in ``regime_assets/home/event_log.py``."""

from regime_assets.home.event_log import LOCK_NAME, PoolSafeSqliteEventLogStorage

__all__ = ["LOCK_NAME", "PoolSafeSqliteEventLogStorage"]
