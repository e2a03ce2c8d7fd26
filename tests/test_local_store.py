"""The local folder backend: durable writes, no stray temp files, nothing outside the store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tracker.capture.step import Summary
from tracker.errors import InvalidArgumentError, StoreError
from tracker.names import STAT_NAMES
from tracker.store import LocalStore, Store, check_run_id
from tracker.store.segment import SegmentBuilder

RUN = "0123456789abcdef"


def _builder() -> SegmentBuilder:
    b = SegmentBuilder(RUN)
    b.add(5, [Summary("l", "weight", "weight", 0, 3, np.ones(len(STAT_NAMES)))])
    return b


def test_put_segment_is_complete_and_checksummed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    f = store.put_segment(_builder(), "test")
    path = tmp_path / f.relpath
    assert path.is_file() and path.suffix == ".h5"
    assert f.nbytes == path.stat().st_size
    assert f.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not list(tmp_path.rglob("*.tmp"))
    with store.open(f.relpath) as h5:
        assert h5.attrs["step_min"] == 5


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracker.store.local as local

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local, "write_segment", boom)
    with pytest.raises(OSError, match="No space"):
        LocalStore(tmp_path).put_segment(_builder(), "test")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("bad", ["../etc", "ABCDEF01", "abc", "0123456789abcdef/..", "", "x" * 40])
def test_run_ids_never_reach_the_file_system_unchecked(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_run_id(bad)


def test_paths_outside_the_store_are_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    with pytest.raises(InvalidArgumentError, match="outside the store"):
        store.open("../../etc/passwd")


def test_store_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store.open(path)
