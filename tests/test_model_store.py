import json
import re
import subprocess
import sys

import numpy as np
import pytest

from regime_assets.core import model_store as ms
from regime_assets.core.model_store import META_FILE, MODEL_FILE, ModelStore, ModelStoreError

VERSION = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}(-\d+)?$")


def test_save_load_versions_and_meta(tmp_path):
    store = ModelStore(tmp_path / "models")
    assert store.versions("rf") == [] and store.latest("rf") is None
    v1 = store.save("rf", {"weights": np.arange(5)}, {"accuracy": np.float64(0.61), "n_train": np.int64(40_000)})
    v2 = store.save("rf", {"weights": np.arange(6)}, {"accuracy": 0.63})
    v3 = store.save("rf", {"weights": np.arange(6)}, {"accuracy": 0.63})  # same content: still a new version
    assert all(VERSION.match(v) for v in (v1, v2, v3))
    assert len({v1, v2, v3}) == 3
    assert store.versions("rf") == sorted([v1, v2, v3]) and store.latest("rf") == max(v1, v2, v3)
    np.testing.assert_array_equal(store.load("rf", v1)["weights"], np.arange(5))
    np.testing.assert_array_equal(store.load("rf")["weights"], np.arange(6))
    meta = store.meta("rf", v1)
    assert meta["accuracy"] == 0.61 and meta["n_train"] == 40_000 and meta["version"] == v1 and meta["name"] == "rf"
    assert len(meta["sha256"]) == 64 and v1.endswith(meta["sha256"][:8])
    assert store.names() == ["rf"]
    assert not [p for p in (tmp_path / "models" / "rf").iterdir() if p.name.startswith(".tmp-")]


def test_incomplete_versions_are_invisible_and_cleaned(tmp_path, monkeypatch):
    store = ModelStore(tmp_path)
    good = store.save("lgbm", [1, 2, 3], {"a": 1})

    def broken_mkstemp(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ms.tempfile, "mkstemp", broken_mkstemp)
    with pytest.raises(OSError, match="disk full"):
        store.save("lgbm", [4, 5, 6], {"a": 2})
    monkeypatch.undo()
    dirs = sorted(p.name for p in (tmp_path / "lgbm").iterdir() if p.is_dir())
    assert len(dirs) == 2  # the failed save left a version directory without meta.json
    assert store.versions("lgbm") == [good] and store.latest("lgbm") == good
    broken = next(d for d in dirs if d != good)
    with pytest.raises(ModelStoreError, match="incomplete"):
        store.load("lgbm", broken)
    (tmp_path / "lgbm" / ".tmp-stray").write_bytes(b"x")
    removed = store.cleanup_incomplete()
    assert {p.name for p in removed} == {broken, ".tmp-stray"}
    assert sorted(p.name for p in (tmp_path / "lgbm").iterdir()) == [good]
    assert store.load("lgbm") == [1, 2, 3]
    assert (tmp_path / "lgbm" / good / MODEL_FILE).is_file()
    assert json.loads((tmp_path / "lgbm" / good / META_FILE).read_text())["a"] == 1


def test_errors_name_the_problem(tmp_path):
    store = ModelStore(tmp_path)
    with pytest.raises(ModelStoreError, match="invalid model name '../x'"):
        store.save("../x", 1, {})
    with pytest.raises(ModelStoreError, match="no versions of model rf"):
        store.load("rf")
    store.save("rf", 1, {})
    with pytest.raises(ModelStoreError, match="invalid version 'latest'"):
        store.load("rf", "latest")
    with pytest.raises(ModelStoreError, match="not JSON"):
        store.save("rf", 1, {"bad": object()})


def test_model_store_does_not_import_dagster():
    code = "import sys, regime_assets.core.model_store; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
