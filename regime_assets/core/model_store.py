"""Versioned, append-only model store on the local file system or an object store.

Layout: ``<root>/<name>/<version>/model.joblib`` and ``meta.json``. A version is
``YYYYmmddTHHMMSSffffffZ-<8 hex of the model file's sha256>``, so versions sort by time and are never
overwritten. A version is complete only when ``meta.json`` exists, and ``meta.json`` is written last; ``versions``
lists complete versions only and ``cleanup_incomplete`` removes the rest (and stray temporary files).

* A local root (a path): the object is dumped to a temporary file in the model's directory and moved into a new
  version directory (created exclusively, ``mkdir``) with ``os.replace``; ``meta.json`` is written the same way.
* A URL root (``s3://bucket/prefix``, ``gs://…``, any fsspec protocol; via universal-pathlib): the object is dumped
  in memory, then uploaded as one object — an object store's PUT is atomic, readers see the whole
  object or none. No version is overwritten: a version whose objects exist already is skipped, and both objects are
  written with a conditional create (``If-None-Match: *`` on S3; ``mode="create"`` in fsspec), so a writer that lost
  a race gets the next suffix instead of replacing the winner's object. Credentials and endpoint come from the
  environment as the filesystem reads them (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, …) or from
  ``storage_options``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
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


def is_url(root: str | os.PathLike[str]) -> bool:
    """True for an fsspec URL (``s3://…``), False for a local path (``file://`` counts as local)."""
    text = os.fspath(root) if not isinstance(root, str) else root
    return "://" in text and not text.startswith("file://")


class ModelStore:
    """Append-only store of joblib-serialised objects with JSON metadata (a local folder or an fsspec URL)."""

    def __init__(self, root: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
        self._remote: _Remote | None = None
        if is_url(root):
            self._remote = _Remote(str(root), storage_options or {})
            self.root = self._remote.root
        else:
            text = os.fspath(root)
            self.root = Path(text.removeprefix("file://"))

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
        version, vdir = self._complete(name, version)
        if self._remote is not None:
            self._remote.write(f"{name}/{version}/{filename}", text.encode())
            return
        self._write_text(vdir, filename, text)
        _fsync_dir(vdir)

    def read_file(self, name: str, version: str | None, filename: str) -> str | None:
        """A side text file of a complete version (``version`` None = latest), or None when it has none."""
        self._check_file(filename)
        version, vdir = self._complete(name, version)
        if self._remote is not None:
            return self._remote.read_text(f"{name}/{version}/{filename}")
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
        if self._remote is not None:
            return self._remote.save(name, obj, meta, files)
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
        if self._remote is not None:
            return self._remote.versions(name)
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
        if self._remote is not None:
            return sorted(n for n in self._remote.children("") if _NAME.match(n) and self.versions(n))
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)
                      and self.versions(p.name))

    def _complete(self, name: str, version: str | None) -> tuple[str, Path]:
        version = version or self.latest(name)
        if version is None:
            raise ModelStoreError(f"model store: no versions of model {name} under {self.root}")
        vdir = self._vdir(name, version)
        if self._remote is not None:
            if version not in self._remote.versions(name):
                raise ModelStoreError(
                    f"model store: version {version} of model {name} does not exist or is incomplete")
            return version, vdir
        if not (vdir / META_FILE).is_file() or not (vdir / MODEL_FILE).is_file():
            raise ModelStoreError(f"model store: version {version} of model {name} does not exist or is incomplete")
        return version, vdir

    def load(self, name: str, version: str | None = None) -> Any:
        """The stored object (``version`` None = latest complete)."""
        version, vdir = self._complete(name, version)
        if self._remote is not None:
            return joblib.load(io.BytesIO(self._remote.read(f"{name}/{version}/{MODEL_FILE}")))
        return joblib.load(vdir / MODEL_FILE)

    def meta(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The metadata dict of a version (``version`` None = latest complete)."""
        version, vdir = self._complete(name, version)
        try:
            if self._remote is not None:
                return json.loads(self._remote.read(f"{name}/{version}/{META_FILE}"))
            return json.loads((vdir / META_FILE).read_text())
        except json.JSONDecodeError as err:
            raise ModelStoreError(f"model store: {vdir / META_FILE} is not valid JSON ({err})") from None

    def cleanup_incomplete(self) -> list[Path]:
        """Remove version directories without meta.json and stray temporary files; returns what was removed."""
        removed: list[Path] = []
        if self._remote is not None:
            return self._remote.cleanup_incomplete()
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


class _Remote:
    """The store's operations on an fsspec filesystem (object store): whole-object writes, conditional create."""

    def __init__(self, url: str, storage_options: dict[str, Any]) -> None:
        from upath import UPath

        self.root = UPath(url, **storage_options)
        self.fs = self.root.fs
        self.base = self.root.path.rstrip("/")

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def _files(self, rel: str) -> list[str]:
        """Every object under ``rel`` (relative paths), fresh from the store (no cached listing)."""
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        try:
            found = self.fs.find(path)
        except FileNotFoundError:
            return []
        return [str(PurePosixPath(f).relative_to(PurePosixPath(self.base))) for f in found]

    def children(self, rel: str) -> list[str]:
        depth = len(PurePosixPath(rel).parts) if rel else 0
        return sorted({PurePosixPath(f).parts[depth] for f in self._files(rel)
                       if len(PurePosixPath(f).parts) > depth + 1})

    def read(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def _create(self, rel: str, data: bytes) -> None:
        """Write one object that must not exist yet; FileExistsError when it does (checked, then conditional put)."""
        path = self._path(rel)
        if self.fs.exists(path):
            raise FileExistsError(path)
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            raise
        except OSError as err:  # S3 answers a failed If-None-Match with 412 PreconditionFailed
            if "PreconditionFailed" in str(err) or "412" in str(err) or "At least one of the pre-conditions" in \
                    str(err):
                raise FileExistsError(path) from err
            raise

    def write(self, rel: str, data: bytes) -> None:
        """Replace one side object (a single PUT: readers see the old or the new object, never a part)."""
        self.fs.pipe_file(self._path(rel), data)

    def read_text(self, rel: str) -> str | None:
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        return self.fs.cat_file(path).decode() if self.fs.exists(path) else None

    def save(self, name: str, obj: Any, meta: dict[str, Any] | None, files: dict[str, str] | None = None) -> str:
        buf = io.BytesIO()
        joblib.dump(obj, buf)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        base, k = f"{stamp}-{sha[:8]}", 0
        existing = set(self.children(name))
        while True:
            version = base if k == 0 else f"{base}-{k}"
            k += 1
            if version in existing:
                continue
            try:
                self._create(f"{name}/{version}/{MODEL_FILE}", data)
                break
            except FileExistsError:
                continue
        for fname, ftext in (files or {}).items():  # side files before meta.json
            self._create(f"{name}/{version}/{fname}", ftext.encode())
        record = {**(meta or {}), "name": name, "version": version, "sha256": sha,
                  "saved_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        text = json.dumps(record, default=_json_default, indent=2, sort_keys=True)
        self._create(f"{name}/{version}/{META_FILE}", text.encode())  # last: the version is complete from now on
        return version

    def versions(self, name: str) -> list[str]:
        files: dict[str, set[str]] = {}
        for f in self._files(name):
            parts = PurePosixPath(f).parts
            if len(parts) == 3 and _VERSION.match(parts[1]):
                files.setdefault(parts[1], set()).add(parts[2])
        return sorted(v for v, fs in files.items() if {MODEL_FILE, META_FILE} <= fs)

    def cleanup_incomplete(self) -> list[Path]:
        removed: list[Path] = []
        by_version: dict[tuple[str, str], set[str]] = {}
        for f in self._files(""):
            parts = PurePosixPath(f).parts
            if len(parts) >= 2 and parts[-1].startswith(TMP_PREFIX):
                self.fs.rm_file(self._path(f))
                removed.append(self.root / f)
            elif len(parts) == 3 and _VERSION.match(parts[1]):
                by_version.setdefault((parts[0], parts[1]), set()).add(parts[2])
        for (name, version), names in sorted(by_version.items()):
            if META_FILE not in names:
                for n in sorted(names):
                    self.fs.rm_file(self._path(f"{name}/{version}/{n}"))
                removed.append(self.root / name / version)
        return removed
