"""Where a home keeps things. Standard library only (imported by the CLI before Dagster loads)."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "REGIME_ASSETS_HOME"
# the model store's root when it is not <home>/models: a folder or an fsspec URL (s3://bucket/prefix, gs://...)
MODEL_STORE_ENV = "REGIME_ASSETS_MODEL_STORE"


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
    """The DuckDB file of a home."""
    return Path(home) / "warehouse.duckdb"


def models_root(home: Path | str, override: str | None = None) -> str:
    """The model store's root: ``override``, else $REGIME_ASSETS_MODEL_STORE, else ``<home>/models``.

    A plain path is made absolute; a URL (``s3://…``, ``gs://…``, ``memory://…``) is returned as given."""
    root = override or os.environ.get(MODEL_STORE_ENV) or ""
    if not root:
        return str(Path(home) / "models")
    if "://" in root:
        return root
    return str(Path(root).expanduser().resolve())
