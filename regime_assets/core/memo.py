"""Content-keyed memo: results kept by what they depend on, so an unchanged input is never recomputed.

The idea of a dbt incremental model, for whole results: a key is ``sha256(MEMO_VERSION, kind, parts)`` where the
parts are everything the result depends on -- the spec sections that change it, the seeds, the library versions
that change results, and content hashes of the input frames (``rows_hash``). Same key => same inputs => the same
output a recomputation would give, so the stored entry is returned instead. ``MEMO_VERSION`` is part of every key:
bump it when an algorithm behind a memoized result changes.

An entry is ``<root>/<kind>/<key>.json`` (small JSON info) plus one Parquet file per frame
``<root>/<kind>/<key>.<frame>.parquet``; every file is written to a temporary file and renamed, the JSON last, so
an entry without its JSON is incomplete and never read. Deleting the folder only costs a recomputation.
``root=None`` keeps nothing (every call computes). Nothing here knows of Dagster.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

MEMO_VERSION = "1"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def rows_hash(*frames: pl.DataFrame) -> str:
    """sha256 (24 hex) of the frames' content in their row order (row hashes + shapes + column names and dtypes),
    with the polars version (polars' row hash is stable within a version)."""
    h = hashlib.sha256(f"polars={pl.__version__}".encode())
    for f in frames:
        h.update(f"|{f.height}|{','.join(f.columns)}|".encode())
        if f.height:
            h.update(np.ascontiguousarray(f.hash_rows(seed=0).to_numpy()).tobytes())
    return h.hexdigest()[:24]


def schema_rows_hash(*frames: pl.DataFrame) -> str:
    """``rows_hash`` that also tells dtypes apart (Float32 vs Float64 columns with equal values)."""
    h = hashlib.sha256(rows_hash(*frames).encode())
    for f in frames:
        h.update("|".join(f"{c}:{t}" for c, t in f.schema.items()).encode())
    return h.hexdigest()[:24]


def array_hash(*arrays: np.ndarray) -> str:
    """sha256 (24 hex) of numpy arrays' bytes, dtypes and shapes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def _canonical(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _canonical(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_canonical(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "model_dump"):  # a pydantic spec section
        return _canonical(x.model_dump(mode="json"))
    return x


def memo_key(kind: str, /, **parts: Any) -> str:
    """sha256 (32 hex) of (MEMO_VERSION, kind, parts) in canonical JSON (sorted keys; spec sections dumped)."""
    payload = json.dumps([MEMO_VERSION, kind, _canonical(parts)], sort_keys=True, separators=(",", ":"),
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass
class Entry:
    """A stored result: its frames and its JSON info."""

    key: str
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Memo:
    """Content-keyed entries under ``root`` (``None``: a memo that keeps nothing). Counts hits and misses."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _dir(self, kind: str) -> Path:
        assert self.root is not None
        if not kind or not set(kind) <= _NAME_OK:
            raise ValueError(f"memo: invalid kind {kind!r}")
        return self.root / kind

    def get(self, kind: str, key: str) -> Entry | None:
        """The complete entry of ``key`` or None (missing, incomplete or unreadable: recomputed by the caller)."""
        if self.root is None:
            self.misses += 1
            return None
        d = self._dir(kind)
        p = d / f"{key}.json"
        try:
            info = json.loads(p.read_text())
            frames = {n: pl.read_parquet(d / f"{key}.{n}.parquet") for n in info.get("_frames", [])}
        except (OSError, ValueError, pl.exceptions.PolarsError):
            self.misses += 1
            return None
        self.hits += 1
        info.pop("_frames", None)
        return Entry(key, frames, info)

    def put(self, kind: str, key: str, frames: dict[str, pl.DataFrame] | None = None,
            info: dict[str, Any] | None = None) -> None:
        """Store an entry: every frame first, the JSON info last (the entry is complete from then on)."""
        if self.root is None:
            return
        frames = frames or {}
        for n in frames:
            if not n or not set(n) <= _NAME_OK:
                raise ValueError(f"memo: invalid frame name {n!r}")
        d = self._dir(kind)
        d.mkdir(parents=True, exist_ok=True)
        for n, f in frames.items():
            _atomic_write(d / f"{key}.{n}.parquet", f.write_parquet)
        text = json.dumps({**(info or {}), "_frames": list(frames)}, default=str, sort_keys=True)

        def _write(tmp: str) -> None:
            with open(tmp, "w") as fh:
                fh.write(text)

        _atomic_write(d / f"{key}.json", _write)

    def frame(self, kind: str, key: str, compute: Callable[[], pl.DataFrame]) -> tuple[pl.DataFrame, bool]:
        """(the frame of ``key``, reused?): the stored one, else ``compute()`` stored under ``key``."""
        hit = self.get(kind, key)
        if hit is not None and "frame" in hit.frames:
            return hit.frames["frame"], True
        out = compute()
        self.put(kind, key, {"frame": out})
        return out, False
