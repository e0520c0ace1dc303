"""Versioned, append-only model store on the local file system.

Layout: ``<root>/<name>/<version>/model.joblib`` and ``meta.json``. A version is
``YYYYmmddTHHMMSSffffffZ-<8 hex of the model file's sha256>``, so versions sort by time and are never
overwritten. Writes are atomic: the object is dumped to a temporary file in the model's directory and moved into
a new version directory with ``os.replace``; ``meta.json`` is written the same way and written last. A version
directory is complete only when ``meta.json`` exists; ``versions`` lists complete versions only and
``cleanup_incomplete`` removes the rest (and stray temporary files).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import joblib
import numpy as np

MODEL_FILE = "model.joblib"
META_FILE = "meta.json"
TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}(-\d+)?$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ModelStoreError(ValueError):
    """A name, version or file the store cannot use; the message names it."""


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (dt.date, dt.datetime)):
        return x.isoformat()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (set, frozenset, tuple)):
        return list(x)
    raise TypeError(f"meta value of type {type(x).__name__} is not JSON serialisable")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ModelStore:
    """Append-only store of joblib-serialised objects with JSON metadata."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ModelStoreError(f"model store: invalid model name {name!r}")
        return self.root / name

    def _vdir(self, name: str, version: str) -> Path:
        if not isinstance(version, str) or not _VERSION.match(version):
            raise ModelStoreError(f"model store: invalid version {version!r} for model {name}")
        return self._dir(name) / version

    def _check_file(self, filename: str) -> None:
        if not isinstance(filename, str) or not _FILE.match(filename) or filename in (MODEL_FILE, META_FILE) \
                or filename.startswith(TMP_PREFIX):
            raise ModelStoreError(f"model store: invalid side file name {filename!r}")

    def _write_text(self, vdir: Path, filename: str, text: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=vdir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, vdir / filename)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write_file(self, name: str, version: str, filename: str, text: str) -> None:
        """Atomically (re)write a side text file (e.g. a model card) of a complete version."""
        self._check_file(filename)
        _, vdir = self._complete(name, version)
        self._write_text(vdir, filename, text)
        _fsync_dir(vdir)

    def read_file(self, name: str, version: str | None, filename: str) -> str | None:
        """A side text file of a complete version (``version`` None = latest), or None when it has none."""
        self._check_file(filename)
        _, vdir = self._complete(name, version)
        p = vdir / filename
        return p.read_text() if p.is_file() else None

    def save(self, name: str, obj: Any, meta: dict[str, Any] | None = None,
             files: dict[str, str] | None = None) -> str:
        """Store ``obj`` as a new version of ``name``; returns the version string. ``files``: side text files
        (name -> text) written into the version before ``meta.json``, so every listed version has them."""
        for fname in (files or {}):
            self._check_file(fname)
        mdir = self._dir(name)
        try:
            json.dumps(meta or {}, default=_json_default)
        except (TypeError, ValueError) as err:
            raise ModelStoreError(f"model store: metadata of {name} is not JSON ({err})") from None
        mdir.mkdir(parents=True, exist_ok=True)
        tmp = mdir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with tmp.open("wb") as f:
                joblib.dump(obj, f)
                f.flush()
                os.fsync(f.fileno())
            sha = _sha256(tmp)
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            version, vdir, k = f"{stamp}-{sha[:8]}", None, 0
            while vdir is None:
                cand = mdir / (version if k == 0 else f"{version}-{k}")
                try:
                    cand.mkdir()
                    vdir = cand
                except FileExistsError:
                    k += 1
            version = vdir.name
            os.replace(tmp, vdir / MODEL_FILE)
        finally:
            if tmp.exists():
                tmp.unlink()
        for fname, text in (files or {}).items():
            self._write_text(vdir, fname, text)
        record = {**(meta or {}), "name": name, "version": version, "sha256": sha,
                  "saved_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        text = json.dumps(record, default=_json_default, indent=2, sort_keys=True)
        fd, mtmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=vdir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(mtmp, vdir / META_FILE)
        finally:
            if os.path.exists(mtmp):
                os.unlink(mtmp)
        _fsync_dir(vdir)
        return version

    def versions(self, name: str) -> list[str]:
        """Complete versions of ``name``, oldest first."""
        mdir = self._dir(name)
        if not mdir.is_dir():
            return []
        return sorted(p.name for p in mdir.iterdir()
                      if p.is_dir() and _VERSION.match(p.name) and (p / META_FILE).is_file()
                      and (p / MODEL_FILE).is_file())

    def latest(self, name: str) -> str | None:
        """The newest complete version of ``name``, or None."""
        v = self.versions(name)
        return v[-1] if v else None

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)
                      and self.versions(p.name))

    def _complete(self, name: str, version: str | None) -> tuple[str, Path]:
        version = version or self.latest(name)
        if version is None:
            raise ModelStoreError(f"model store: no versions of model {name} under {self.root}")
        vdir = self._vdir(name, version)
        if not (vdir / META_FILE).is_file() or not (vdir / MODEL_FILE).is_file():
            raise ModelStoreError(f"model store: version {version} of model {name} does not exist or is incomplete")
        return version, vdir

    def load(self, name: str, version: str | None = None) -> Any:
        """The stored object (``version`` None = latest complete)."""
        _, vdir = self._complete(name, version)
        return joblib.load(vdir / MODEL_FILE)

    def meta(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The metadata dict of a version (``version`` None = latest complete)."""
        _, vdir = self._complete(name, version)
        try:
            return json.loads((vdir / META_FILE).read_text())
        except json.JSONDecodeError as err:
            raise ModelStoreError(f"model store: {vdir / META_FILE} is not valid JSON ({err})") from None

    def cleanup_incomplete(self) -> list[Path]:
        """Remove version directories without meta.json and stray temporary files; returns what was removed."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for mdir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for p in sorted(mdir.iterdir()):
                if p.name.startswith(TMP_PREFIX) and p.is_file():
                    p.unlink()
                    removed.append(p)
                elif p.is_dir() and _VERSION.match(p.name) and not (p / META_FILE).is_file():
                    shutil.rmtree(p)
                    removed.append(p)
                elif p.is_dir() and _VERSION.match(p.name):
                    for t in p.glob(f"{TMP_PREFIX}*"):
                        t.unlink()
                        removed.append(t)
        return removed
