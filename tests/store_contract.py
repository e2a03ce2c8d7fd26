"""The contract every segment backend passes (I8), zarr-style: subclass and provide ``backend``.

class TestLocalStore(StoreContract):
    @pytest.fixture
    def backend(self, tmp_path):
        return LocalStore(tmp_path)
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tracker.capture.block import Summary
from tracker.capture.snapshot import Snapshot
from tracker.errors import InvalidArgumentError, StoreError
from tracker.names import STAT_NAMES
from tracker.store.backend import Backend, checksum_algorithm
from tracker.store.errors import SegmentMissingError
from tracker.store.segment import SegmentBuilder, read_snapshot, read_stats

RUN = "0123456789abcdef"
FOLDER = f"runs/{RUN}/rank0"


def builder(steps: range = range(3, 6), run: str = RUN) -> SegmentBuilder:
    """A segment with one stats row and one float32 snapshot per step, values from the step."""
    b = SegmentBuilder(run)
    for step in steps:
        snap = Snapshot(np.arange(6, dtype=np.float32).reshape(2, 3) * step, "float32", (4, 3))
        stats = np.linspace(0, 1, len(STAT_NAMES)) + step
        b.add(step, [Summary("enc/0", "activation", "output", 0, 3, stats, None, snap)])
    return b


def write_bytes(payload: bytes):  # type: ignore[no-untyped-def]
    """A put() callback writing ``payload`` as a (non-HDF5) file."""

    def write(path: str) -> None:
        with open(path, "wb") as fh:
            fh.write(payload)

    return write


class StoreContract:
    """Behaviour every Backend must have; subclasses provide the ``backend`` fixture."""

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError("subclasses return a fresh, empty backend")

    def test_put_segment_reads_back_bit_exact(self, backend: Backend) -> None:
        stored = backend.put_segment(builder(), "test")
        assert stored.relpath.startswith(FOLDER + "/") and stored.relpath.endswith(".h5")
        assert [i.relpath for i in backend.list_files(FOLDER)] == [stored.relpath]
        with backend.open(stored.relpath) as f:
            assert f.attrs["segment_id"] == stored.id
            index, stats = read_stats(f, ("enc/0", "activation", "output"))
            assert index[:, 0].tolist() == [3, 4, 5]
            np.testing.assert_array_equal(stats[1], np.linspace(0, 1, len(STAT_NAMES)) + 4)
            data, meta = read_snapshot(f, ("enc/0", "activation", "output"), 5, 0)
            np.testing.assert_array_equal(data, np.arange(6, dtype=np.float32).reshape(2, 3) * 5)
            assert meta["full_shape"] == [4, 3]

    def test_listing_reports_size_and_checksum_matches(self, backend: Backend) -> None:
        stored = backend.put_segment(builder(), "test")
        (info,) = backend.list_files(FOLDER)
        assert info.nbytes == stored.nbytes > 0
        algorithm = checksum_algorithm(stored.checksum)
        assert backend.checksum(stored.relpath, algorithm) == stored.checksum

    def test_a_failed_put_publishes_nothing(self, backend: Backend) -> None:
        def half_then_fail(path: str) -> None:
            with open(path, "wb") as fh:
                fh.write(b"\x89HDF half a file")
            raise OSError(28, "No space left on device")

        with pytest.raises(OSError, match="No space"):
            backend.put(f"{FOLDER}/x.h5", half_then_fail)
        assert backend.list_files("runs") == []
        assert backend.list_incomplete("runs") == []
        with pytest.raises(SegmentMissingError):
            backend.open(f"{FOLDER}/x.h5")

    def test_put_never_overwrites(self, backend: Backend) -> None:
        stored = backend.put_segment(builder(), "test")
        before = backend.checksum(stored.relpath)
        with pytest.raises(StoreError, match="exists"):
            backend.put(stored.relpath, write_bytes(b"other bytes"))
        assert backend.checksum(stored.relpath) == before

    def test_list_filters_by_prefix_and_sorts(self, backend: Backend) -> None:
        a = backend.put_segment(builder(range(10, 12)), "test")
        b = backend.put_segment(builder(range(0, 2)), "test")
        c = backend.put_segment(builder(range(0, 2), run="fedcba9876543210"), "test")
        assert [i.relpath for i in backend.list_files(FOLDER)] == sorted([a.relpath, b.relpath])
        assert [i.relpath for i in backend.list_files("runs/fedcba9876543210")] == [c.relpath]
        assert len(backend.list_files("runs")) == 3

    def test_delete_is_idempotent_and_final(self, backend: Backend) -> None:
        stored = backend.put_segment(builder(), "test")
        backend.delete(stored.relpath)
        backend.delete(stored.relpath)
        assert backend.list_files("runs") == []
        with pytest.raises(SegmentMissingError, match="gone"):
            backend.open(stored.relpath)

    def test_an_open_file_survives_its_deletion(self, backend: Backend) -> None:
        stored = backend.put_segment(builder(), "test")
        with backend.open(stored.relpath) as f:
            backend.delete(stored.relpath)
            assert read_stats(f, ("enc/0", "activation", "output")) is not None

    def test_delete_prefix_removes_a_run(self, backend: Backend) -> None:
        backend.put_segment(builder(range(0, 2)), "test")
        backend.put_segment(builder(range(2, 4)), "test")
        backend.delete_prefix(f"runs/{RUN}")
        assert backend.list_files("runs") == []

    def test_a_file_that_is_not_a_segment_is_refused(self, backend: Backend) -> None:
        backend.put(f"{FOLDER}/junk.h5", write_bytes(b"not hdf5 at all"))
        with pytest.raises(StoreError):
            backend.open(f"{FOLDER}/junk.h5")

        def plain_hdf5(path: str) -> None:
            with h5py.File(path, "w") as f:
                f["x"] = np.zeros(3)

        backend.put(f"{FOLDER}/plain.h5", plain_hdf5)
        with pytest.raises(StoreError, match="not a tracker segment"):
            backend.open(f"{FOLDER}/plain.h5")

    def test_set_aside_keeps_the_bytes_out_of_listings(self, backend: Backend) -> None:
        stored = backend.put_segment(builder(), "test")
        moved = backend.set_aside(stored.relpath)
        assert moved.startswith("damaged/") and backend.list_files("runs") == []
        assert [i.relpath for i in backend.list_files("damaged")] == [moved]

    @pytest.mark.parametrize(
        "bad", ["../outside.h5", "/etc/passwd", "runs/../../x.h5", "runs/a b.h5", "other/x.h5"]
    )
    def test_paths_outside_the_store_are_refused(self, backend: Backend, bad: str) -> None:
        with pytest.raises(InvalidArgumentError, match="outside the store"):
            backend.put(bad, write_bytes(b"x"))
        with pytest.raises(InvalidArgumentError):
            backend.open(bad)
        with pytest.raises(InvalidArgumentError):
            backend.delete(bad)
