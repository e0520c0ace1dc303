"""The model store on an object store: a local S3 endpoint (moto's server, tests/_s3.py) with the store's
guarantees — never overwritten (conditional create), written atomically (one PUT per object, meta.json last), a
version without meta.json never listed — and the training graph with its model store on s3://."""

from __future__ import annotations

import datetime as dt
import types
from pathlib import Path

import duckdb
import pytest

from regime_assets.core import model_store as ms
from regime_assets.core.model_store import MODEL_FILE, ModelStore, ModelStoreError
from regime_assets.home.paths import MODEL_STORE_ENV
from regime_assets.resources.warehouse import warehouse_path
from tests._s3 import start_s3

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "specs" / "tiny.yaml"


@pytest.fixture(scope="module")
def s3():
    server = start_s3()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3, monkeypatch, request):
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    name = "store-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    s3.create_bucket(name)
    return name


def test_save_load_list_on_s3(bucket):
    store = ModelStore(f"s3://{bucket}/models")
    assert store.versions("rf") == [] and store.names() == [] and store.latest("rf") is None
    v1 = store.save("rf", {"w": [1, 2]}, {"rows": 10, "when": dt.date(2020, 1, 2)})
    v2 = store.save("rf", {"w": [1, 2]}, {"rows": 10})  # same object: a new version, the first one kept
    assert v1 != v2 and store.versions("rf") == sorted([v1, v2]) and store.latest("rf") == max(v1, v2)
    assert store.load("rf", v1) == {"w": [1, 2]} and store.meta("rf", v1)["when"] == "2020-01-02"
    assert store.meta("rf")["version"] == store.latest("rf")
    assert store.names() == ["rf"]
    with pytest.raises(ModelStoreError, match="invalid model name"):
        store.save("../x", 1, {})
    with pytest.raises(ModelStoreError, match="does not exist or is incomplete"):
        store.load("rf", "20000101T000000000000Z-deadbeef")


def test_a_version_without_meta_is_never_listed_and_cleanup_removes_it(bucket):
    store = ModelStore(f"s3://{bucket}/models")
    good = store.save("m", {"v": 1}, {})
    partial = "29990101T000000000000Z-0badc0de"  # sorts after every real version: would be "latest" if listed
    fs = store._remote.fs
    fs.pipe_file(f"{bucket}/models/m/{partial}/{MODEL_FILE}", b"not a model")
    assert store.versions("m") == [good] and store.latest("m") == good
    with pytest.raises(ModelStoreError, match="incomplete"):
        store.load("m", partial)
    removed = store.cleanup_incomplete()
    assert [p.name for p in removed] == [partial]
    assert not fs.exists(f"{bucket}/models/m/{partial}/{MODEL_FILE}")
    assert store.versions("m") == [good] and store.load("m") == {"v": 1}


def test_a_writer_that_loses_the_race_never_overwrites(bucket, monkeypatch):
    """Two writers picking the same version name (same microsecond, same bytes): the second one's listing and
    existence check both miss the first one's object (as in a race), and the conditional create is what refuses
    the overwrite; the second writer takes the next suffix."""
    store = ModelStore(f"s3://{bucket}/models")
    fixed = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    monkeypatch.setattr(ms, "dt", types.SimpleNamespace(datetime=Frozen, timezone=dt.timezone, date=dt.date))
    first = store.save("m", {"v": 1}, {"writer": 1})
    fs = store._remote.fs
    before = fs.cat_file(f"{bucket}/models/m/{first}/{MODEL_FILE}")
    monkeypatch.setattr(ms._Remote, "children", lambda self, rel: [])
    real_exists = type(fs).exists
    monkeypatch.setattr(type(fs), "exists", lambda self, path, **kw: False)
    second = store.save("m", {"v": 1}, {"writer": 2})
    monkeypatch.setattr(type(fs), "exists", real_exists)
    assert second == f"{first}-1"
    assert fs.cat_file(f"{bucket}/models/m/{first}/{MODEL_FILE}") == before
    assert store.meta("m", first)["writer"] == 1 and store.meta("m", second)["writer"] == 2


@pytest.mark.timeout(400)
def test_training_graph_with_the_model_store_on_s3(bucket, tmp_path, monkeypatch):
    """`regime-assets materialize` with REGIME_ASSETS_MODEL_STORE=s3://…: every model version is written to the
    bucket, the meta-learner and the validation predictions load them back from it, nothing under the home."""
    from regime_assets import cli

    for var in ("DAGSTER_HOME", "REGIME_ASSETS_HOME", "REGIME_ASSETS_SPEC"):
        monkeypatch.setenv(var, "")  # restored after the test (the CLI sets them)
        monkeypatch.delenv(var)
    url = f"s3://{bucket}/models"
    monkeypatch.setenv(MODEL_STORE_ENV, url)
    home = tmp_path / "home"
    assert cli.main(["materialize", "--spec", str(TINY), "--home", str(home), "--select",
                     "+key:validation_predictions"]) == 0
    assert not (home / "models").exists()
    store = ModelStore(url)
    names = store.names()
    assert "meta_learner" in names and len([n for n in names if n.startswith("model_")]) == 8
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        rf = conn.execute("select version from model_rf").fetchall()[0][0]
        preds = conn.execute("select count(*), count(distinct model) from validation_predictions").fetchall()[0]
    assert store.latest("model_rf") == rf and store.meta("model_rf")["rows"] > 0
    assert preds[0] > 0 and preds[1] >= 9


def test_side_files_on_s3_are_written_before_meta_and_can_be_rewritten(bucket, monkeypatch):
    """A model card (side file) goes into the version before meta.json, reads back, and a registered version's card
    can be rewritten (one PUT) without touching the artifact."""
    store = ModelStore(f"s3://{bucket}/models")
    order: list[str] = []
    real = ms._Remote._create

    def spy(self, rel, data):
        order.append(rel.rsplit("/", 1)[-1])
        return real(self, rel, data)

    monkeypatch.setattr(ms._Remote, "_create", spy)
    v = store.save("rf", {"w": 1}, {"rows": 1}, files={"card.md": "# card v1"})
    assert order == [MODEL_FILE, "card.md", "meta.json"]
    assert store.read_file("rf", v, "card.md") == "# card v1"
    store.write_file("rf", v, "card.md", "# card v2")
    assert store.read_file("rf", v, "card.md") == "# card v2" and store.load("rf", v) == {"w": 1}
    assert store.read_file("rf", v, "notes.md") is None
