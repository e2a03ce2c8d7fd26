"""The local-folder backend: segment files under <store>/runs, written durably (I2)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import h5py

from tracker.errors import InvalidArgumentError, StoreError
from tracker.store.segment import SegmentBuilder, check_header, write_segment

RUN_ID = re.compile(r"^[0-9a-f]{8,32}$")


@dataclass(frozen=True)
class SegmentFile:
    """A segment that is complete and durable on disk, ready to be registered."""

    id: str
    relpath: str  # relative to the store root, with forward slashes
    nbytes: int
    checksum: str  # sha256 of the file's bytes


def check_run_id(run_id: str) -> str:
    """Run ids are lowercase hex; anything else never reaches the file system."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise InvalidArgumentError(f"invalid run id {run_id!r}: expected 8-32 lowercase hex digits")
    return run_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LocalStore:
    """Segment files in a folder: put (durable), open (read-only), delete."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            (root / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store folder {root}: {exc.strerror}") from exc

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / check_run_id(run_id)

    def put_segment(self, builder: SegmentBuilder, tracker_version: str) -> SegmentFile:
        """Write, fsync, rename, fsync the folder: a crash leaves either nothing or a whole file."""
        folder = self.run_dir(builder.run_id) / f"rank{builder.rank}"
        folder.mkdir(parents=True, exist_ok=True)
        seg_id = uuid.uuid4().hex
        name = f"{builder.step_min:012d}-{builder.step_max:012d}-{seg_id[:8]}.h5"
        final = folder / name
        tmp = folder / (name + ".tmp")
        try:
            write_segment(str(tmp), builder, tracker_version)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            _fsync_dir(folder)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        relpath = final.relative_to(self.root).as_posix()
        return SegmentFile(seg_id, relpath, final.stat().st_size, _sha256(final))

    def resolve(self, relpath: str) -> Path:
        """Absolute path of a stored file; refuses anything outside the store."""
        path = (self.root / relpath).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise InvalidArgumentError(f"path {relpath!r} is outside the store")
        return path

    def open(self, relpath: str) -> h5py.File:
        """Open a registered segment read-only and check its header."""
        path = self.resolve(relpath)
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise StoreError(f"cannot read segment {relpath}: {exc}") from exc
        try:
            check_header(f)
        except Exception:
            f.close()
            raise
        return f

    def delete_run(self, run_id: str) -> None:
        """Remove every file of a run."""
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
