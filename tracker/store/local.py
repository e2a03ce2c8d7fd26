"""The local-folder backend: segment files under <store>/runs, written durably (I2).

put() writes ``<name>.tmp``, fsyncs it, renames it and fsyncs the folder, so after a crash a name
ending in ``.h5`` is always a whole file; a ``.tmp`` is what recovery removes. The checksum is a
CRC-32 read back from the page cache while the fsync runs: sha256 (~2 GB/s here) would cost as
much time as the write itself, and the checksum guards against damage, not against tampering.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py

from tracker.errors import InvalidArgumentError, StoreError
from tracker.store.backend import (
    Backend,
    FileInfo,
    SegmentFile,
    StoredFile,
    check_relpath,
    check_run_id,
)
from tracker.store.errors import SegmentMissingError
from tracker.store.segment import check_header

__all__ = ["LocalStore", "SegmentFile", "check_run_id"]

COMPLETE_SUFFIX = ".h5"
TEMPORARY_SUFFIX = ".tmp"
# Below this size a second thread costs more than overlapping the fsync with the checksum saves.
_PARALLEL_BYTES = 1 << 20


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_checksum(path: Path, algorithm: str = "crc32") -> str:
    """Checksum of a file's bytes: "crc32:<hex>", or a bare sha256 hex digest (older files)."""
    if algorithm not in ("crc32", "sha256"):
        raise InvalidArgumentError(f"unknown checksum algorithm {algorithm!r}")
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            data: bytes | mmap.mmap = b""
        else:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            if algorithm == "sha256":
                return hashlib.sha256(data).hexdigest()
            return f"crc32:{zlib.crc32(data):08x}"
        finally:
            if isinstance(data, mmap.mmap):
                data.close()


def _fsync_and_checksum(path: Path) -> str:
    """fsync ``path`` and checksum it; for big files both at once (both release the GIL)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size < _PARALLEL_BYTES:
            os.fsync(fd)
            return file_checksum(path)
        failure: list[BaseException] = []

        def sync() -> None:
            try:
                os.fsync(fd)
            except BaseException as exc:  # re-raised below, in the caller's thread
                failure.append(exc)

        syncer = threading.Thread(target=sync, name="tracker-fsync", daemon=True)
        syncer.start()
        try:
            checksum = file_checksum(path)
        finally:
            syncer.join()
        if failure:
            raise failure[0]
        return checksum
    finally:
        os.close(fd)


class LocalStore(Backend):
    """Segment files in a folder: put (durable), list, open (read-only), delete."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            (root / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store folder {root}: {exc.strerror}") from exc

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / check_run_id(run_id)

    def resolve(self, relpath: str) -> Path:
        """Absolute path of a stored file; refuses anything outside the store."""
        path = (self.root / relpath).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise InvalidArgumentError(f"path {relpath!r} is outside the store")
        return path

    def put(self, relpath: str, write: Callable[[str], None]) -> StoredFile:
        """Write, fsync, rename, fsync the folder: a crash leaves either nothing or a whole file."""
        check_relpath(relpath)
        if not relpath.endswith(COMPLETE_SUFFIX):
            raise InvalidArgumentError(f"stored files end in {COMPLETE_SUFFIX}: {relpath!r}")
        final = self.resolve(relpath)
        if final.exists():
            raise StoreError(f"{relpath} exists already; stored files are never overwritten")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + TEMPORARY_SUFFIX)
        try:
            write(str(tmp))
            checksum = _fsync_and_checksum(tmp)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredFile(relpath, final.stat().st_size, checksum)

    def _walk(self, prefix: str, suffix: str) -> list[FileInfo]:
        base = self.resolve(check_relpath(prefix))
        found = []
        for folder, _, names in os.walk(base):
            for name in names:
                if not name.endswith(suffix):
                    continue
                path = Path(folder) / name
                try:
                    st = path.stat()
                except FileNotFoundError:  # deleted while we looked
                    continue
                relpath = path.relative_to(self.root.resolve()).as_posix()
                found.append(FileInfo(relpath, st.st_size, st.st_mtime))
        return sorted(found, key=lambda i: i.relpath)

    def list_files(self, prefix: str = "runs") -> list[FileInfo]:
        """Complete segment files under ``prefix``, by path."""
        return self._walk(prefix, COMPLETE_SUFFIX)

    def list_incomplete(self, prefix: str = "runs") -> list[FileInfo]:
        """Temporary files of writes that never finished (or are finishing now)."""
        return self._walk(prefix, TEMPORARY_SUFFIX)

    def open(self, relpath: str) -> h5py.File:
        """Open a registered segment read-only and check its header."""
        path = self.resolve(check_relpath(relpath))
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError as exc:
            raise SegmentMissingError(f"segment {relpath} is gone") from exc
        except OSError as exc:
            if not path.exists():
                raise SegmentMissingError(f"segment {relpath} is gone") from exc
            raise StoreError(f"cannot read segment {relpath}: {exc}") from exc
        try:
            check_header(f)
        except Exception:
            f.close()
            raise
        return f

    def delete(self, relpath: str) -> None:
        """Unlink a file; open readers keep reading it (POSIX), new ones cannot find it."""
        self.resolve(check_relpath(relpath)).unlink(missing_ok=True)

    def checksum(self, relpath: str, algorithm: str = "crc32") -> str:
        path = self.resolve(check_relpath(relpath))
        try:
            return file_checksum(path, algorithm)
        except FileNotFoundError as exc:
            raise SegmentMissingError(f"segment {relpath} is gone") from exc

    def set_aside(self, relpath: str) -> str:
        """Move a damaged file to damaged/<relpath>, out of every listing."""
        target = f"damaged/{check_relpath(relpath)}"
        dest = self.resolve(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.resolve(relpath), dest)
        return target

    def delete_prefix(self, prefix: str) -> None:
        """Remove a folder of files, e.g. one run's."""
        shutil.rmtree(self.resolve(check_relpath(prefix)), ignore_errors=True)

    def exists(self, relpath: str) -> bool:
        return self.resolve(check_relpath(relpath)).is_file()

    def scratch_dir(self, folder: str) -> Path:
        """Scratch files go in the folder itself: recovery removes those a crash leaves."""
        path = self.resolve(check_relpath(folder))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ping(self) -> bool:
        return self.root.is_dir()

    def delete_run(self, run_id: str) -> None:
        """Remove every file of a run."""
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
