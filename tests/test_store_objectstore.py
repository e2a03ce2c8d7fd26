"""The object-store backend on moto's S3 server over loopback: the store contract, the read
cache, Store.open("s3://...") and a training run written to S3, compacted and read back."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tracker
from tests.store_contract import FOLDER, StoreContract, builder, write_bytes
from tracker.errors import InvalidArgumentError, StoreError
from tracker.store import Store
from tracker.store.objectstore import ObjectStore, ReadCache, parse_url
from tracker.store.segment import read_stats

KEY = ("enc/0", "activation", "output")


@pytest.fixture
def objects(s3_store_url: str, s3_fs, tmp_path: Path) -> ObjectStore:  # type: ignore[no-untyped-def]
    """A fresh ObjectStore on an empty bucket, with a 1 GiB read cache."""
    return ObjectStore(s3_store_url, ReadCache(tmp_path / "objects", 1 << 30), s3_fs)


class TestObjectStoreContract(StoreContract):
    @pytest.fixture
    def backend(self, objects: ObjectStore) -> ObjectStore:
        return objects


def _cached(cache: ReadCache) -> list[str]:
    return sorted(p.relative_to(cache.folder).as_posix() for p, _, _ in cache._entries())


def test_objects_live_under_the_url_prefix(objects: ObjectStore) -> None:
    stored = objects.put_segment(builder(), "test")
    bucket = objects.url.removeprefix("s3://").split("/")[0]
    assert objects.fs.find(bucket) == [f"{bucket}/team/{stored.relpath}"]


def test_open_reads_the_cached_copy_without_the_network(objects: ObjectStore) -> None:
    stored = objects.put_segment(builder(), "test")
    assert _cached(objects.cache) == [stored.relpath]  # put keeps the writer's copy
    objects.fs.rm_file(f"{objects.base}/{stored.relpath}")  # behind the store's back
    with objects.open(stored.relpath) as f:  # names never repeat, so a copy is never stale
        assert read_stats(f, KEY)[0][:, 0].tolist() == [3, 4, 5]


def test_a_cold_cache_downloads_and_keeps_the_file(objects: ObjectStore) -> None:
    stored = objects.put_segment(builder(), "test")
    objects.cache.evict(stored.relpath)
    assert _cached(objects.cache) == []
    with objects.open(stored.relpath) as f:
        assert f.attrs["segment_id"] == stored.id
    assert _cached(objects.cache) == [stored.relpath]
    assert objects.cache.path(stored.relpath).stat().st_size == stored.nbytes


def test_the_cache_keeps_within_its_bound_least_recently_used_out(objects: ObjectStore) -> None:
    a = objects.put_segment(builder(range(0, 3)), "test")
    size = a.nbytes
    objects.cache.max_bytes = 2 * size + size // 2  # room for two files
    b = objects.put_segment(builder(range(3, 6)), "test")
    objects.open(b.relpath).close()
    objects.open(a.relpath).close()  # a is now more recently used than b
    os.utime(objects.cache.path(b.relpath), (1, 1))  # and b clearly older (coarse mtimes)
    c = objects.put_segment(builder(range(6, 9)), "test")
    assert _cached(objects.cache) == sorted([a.relpath, c.relpath])
    assert objects.cache.size() <= objects.cache.max_bytes
    with objects.open(b.relpath) as f:  # evicted files are downloaded again
        assert read_stats(f, KEY)[0][:, 0].tolist() == [3, 4, 5]


def test_an_open_handle_survives_eviction(objects: ObjectStore) -> None:
    stored = objects.put_segment(builder(), "test")
    with objects.open(stored.relpath) as f:
        objects.cache.max_bytes = 0
        objects.cache.trim()
        assert _cached(objects.cache) == []
        assert read_stats(f, KEY)[0][:, 0].tolist() == [3, 4, 5]


def test_a_zero_byte_cache_still_opens_files(objects: ObjectStore) -> None:
    objects.cache.max_bytes = 0
    stored = objects.put_segment(builder(), "test")
    assert _cached(objects.cache) == [stored.relpath]  # the file just used is kept
    other = objects.put_segment(builder(range(7, 9)), "test")
    assert _cached(objects.cache) == [other.relpath]
    with objects.open(stored.relpath) as f:
        assert f.attrs["segment_id"] == stored.id


def test_put_is_conditional_even_when_the_check_is_raced(
    objects: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects.put(f"{FOLDER}/x.h5", write_bytes(b"first"))
    # as if another writer created it after our check
    monkeypatch.setattr(objects.fs, "exists", lambda key: False)
    with pytest.raises(StoreError, match="never overwritten"):
        objects.put(f"{FOLDER}/x.h5", write_bytes(b"second"))
    assert objects.fs.cat(f"{objects.base}/{FOLDER}/x.h5") == b"first"


def test_checksum_reads_the_stored_bytes_not_the_cache(objects: ObjectStore) -> None:
    stored = objects.put_segment(builder(), "test")
    objects.cache.path(stored.relpath).write_bytes(b"damaged cache copy")
    assert objects.checksum(stored.relpath) == stored.checksum
    assert len(objects.checksum(stored.relpath, "sha256")) == 64


@pytest.mark.parametrize(
    "url", ["s3://", "s3://UPPER/x", "s3://bucket/../x", "s3://bucket/a b", "file:///tmp/x"]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="object store URL"):
        parse_url(url)


def test_an_object_store_needs_a_catalog_url(s3_store_url: str) -> None:
    with pytest.raises(StoreError, match="needs a catalog: set TRACKER_DATABASE_URL"):
        Store.open(s3_store_url)


def test_store_open_keeps_local_state_in_the_cache_dir(
    s3_store_url: str, tmp_path: Path, database_url: str
) -> None:
    with Store.open(s3_store_url, database_url) as store:
        assert isinstance(store.files, ObjectStore) and store.location == s3_store_url
        assert store.root.is_relative_to(tmp_path / "cache") and store.files.ping()
        with store.lock("0123456789abcdef", 0, "test"):
            assert (store.root / ".active" / "0123456789abcdef.rank0.lock").exists()
        assert repr(store) == f"Store({s3_store_url!r})"


def _train(store: str, database_url: str | None) -> str:
    from tracker.demo import digits_cnn, load_digits_tensors

    images, labels = load_digits_tensors()
    torch.manual_seed(0)
    model = digits_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with tracker.init(project="s3", name="cnn", store=store, database_url=database_url) as run:
        run.watch(model, every=1, histogram_every=2, snapshot_every=2)
        for step in range(6):
            x, y = images[step * 16 : (step + 1) * 16], labels[step * 16 : (step + 1) * 16]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()}, step=step, epoch=step // 3)
    return run.id


def test_a_run_on_s3_compacts_and_reads_back_as_on_a_folder(
    s3_store_url: str, tmp_path: Path
) -> None:
    local_id = _train(str(tmp_path / "local"), None)
    s3_db = f"sqlite:///{tmp_path / 's3.db'}"
    s3_id = _train(s3_store_url, s3_db)
    with Store.open(s3_store_url, s3_db) as store:
        rows = store.catalog.segments(s3_id)
        kinds = {row.kind for row in rows}
        assert "segment" not in kinds and "stats" in kinds  # compacted at finish
        listed = {i.relpath for i in store.files.list_files(f"runs/{s3_id}")}
        assert listed == {row.path for row in rows}  # superseded objects deleted
    with (
        Store.open(tmp_path / "local") as local,
        Store.open(s3_store_url, s3_db) as remote,
        tracker.open_run(local_id, store=local) as want,
        tracker.open_run(s3_id, store=remote) as got,
    ):
        assert got.metrics("loss")[1].tolist() == want.metrics("loss")[1].tolist()
        for layer in ("conv1", "conv2", "fc1"):
            for quantity in ("activation", "activation_grad", "weight_grad"):
                for stat in ("mean", "max", "norm"):
                    w, g = want.series(layer, quantity, stat), got.series(layer, quantity, stat)
                    np.testing.assert_array_equal(g[0], w[0])
                    np.testing.assert_array_equal(g[1], w[1])
            for step in (0, 2, 4):
                np.testing.assert_array_equal(
                    got.tensor(layer, "activation", step), want.tensor(layer, "activation", step)
                )
