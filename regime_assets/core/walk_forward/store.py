"""The fold memo: fold results kept by what they depend on, so nothing is fitted twice for the same inputs.

A key is ``sha256(fold window, hash of the fold's rows, recipe hash)``:

* the fold window: the fold's test and training dates (``plan.Fold.window``);
* the rows hash: every row the fold reads (window, archive, replay and test rows, all columns), hashed with
  polars' row hash in their stored order (symbol, date), together with the polars version (the row hash is stable
  within a polars version);
* the recipe hash: the candidate's settings (model spec as fitted, balancing, weights, sizes, purge, the code's
  ``RECIPE_VERSION``); see ``fit.recipe_hashes``.

An entry is one Parquet file ``<root>/<key>.parquet`` written to a temporary file and renamed, so a killed run
leaves either the whole entry or none. Unchanged data and spec: every key is found and no fold is fitted. New data:
only folds whose rows changed get new keys. ``root=None`` keeps nothing (every run fits).
A recipe index ``<root>/recipes/<spec hash>.json`` records each spec's resolved spec and candidate recipe hashes,
so the gate can find (or recompute) a champion's predictions from the spec it was trained with.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from regime_assets.core.memo import rows_hash  # noqa: F401  (the one row hash; fit.py imports it from here)


def fold_key(window: tuple[str, ...], rows: str, recipe: str) -> str:
    return hashlib.sha256(json.dumps([list(window), rows, recipe]).encode()).hexdigest()[:32]


class FoldStore:
    """Content-keyed Parquet entries under ``root`` (``None``: a store that keeps nothing)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{key}.parquet"

    def get(self, key: str) -> pl.DataFrame | None:
        if self.root is None:
            self.misses += 1
            return None
        p = self._path(key)
        if not p.exists():
            self.misses += 1
            return None
        try:
            out = pl.read_parquet(p)
        except Exception:  # a damaged entry is recomputed
            self.misses += 1
            return None
        self.hits += 1
        return out

    def put(self, key: str, frame: pl.DataFrame) -> None:
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".tmp")
        os.close(fd)
        try:
            frame.write_parquet(tmp)
            os.replace(tmp, self._path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- the recipe index -----------------------------------------------------------------------------------
    def write_recipes(self, spec_hash: str, spec: dict[str, Any], recipes: dict[str, str]) -> None:
        if self.root is None:
            return
        d = self.root / "recipes"
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"spec_hash": spec_hash, "spec": spec, "recipes": recipes}, fh, default=str)
        os.replace(tmp, d / f"{spec_hash}.json")

    def read_recipes(self, spec_hash: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        p = self.root / "recipes" / f"{spec_hash}.json"
        if not p.exists():
            return None
        return json.loads(p.read_text())
