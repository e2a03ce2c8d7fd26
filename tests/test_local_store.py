"""The local folder backend: the shared contract, plus what only a folder does (fsync, .tmp)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from tests.store_contract import FOLDER, StoreContract, builder
from tracker.errors import InvalidArgumentError, StoreError
from tracker.store import LocalStore, Store, check_run_id
from tracker.store.local import file_checksum


class TestLocalStore(StoreContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> LocalStore:
        return LocalStore(tmp_path / "store")


def test_put_is_fsynced_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(("rename", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = LocalStore(tmp_path)
    stored = store.put_segment(builder(), "test")
    final = tmp_path / stored.relpath
    tmp = str(final) + ".tmp"
    assert events == [("fsync", tmp), ("rename", tmp), ("fsync", str(final.parent))]


def test_checksum_is_a_crc32_of_the_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    stored = store.put_segment(builder(), "test")
    data = (tmp_path / stored.relpath).read_bytes()
    assert stored.checksum == f"crc32:{zlib.crc32(data):08x}"
    assert stored.nbytes == len(data)
    # Rows registered before crc32 was used carry sha256 digests; both still verify.
    import hashlib

    assert file_checksum(tmp_path / stored.relpath, "sha256") == hashlib.sha256(data).hexdigest()


def test_a_temporary_file_is_listed_as_incomplete_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    folder = tmp_path / FOLDER
    folder.mkdir(parents=True)
    (folder / "000-001-abc.h5.tmp").write_bytes(b"half")
    assert store.list_files("runs") == []
    assert [i.relpath for i in store.list_incomplete("runs")] == [f"{FOLDER}/000-001-abc.h5.tmp"]


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracker.store.backend as backend  # put_segment, shared by every backend, lives there

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backend, "write_segment", boom)
    with pytest.raises(OSError, match="No space"):
        LocalStore(tmp_path).put_segment(builder(), "test")
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
