"""The interface every place that holds segment files implements (I8): put, list, open, delete.

A backend knows files, not runs: it publishes a file all at once under a relative path, lists the
complete files under a prefix, opens one for reading and deletes one. Which files make up a run is
the catalog's business. Relative paths look like ``runs/<run id>/rank<r>/<name>.h5``.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py

from tracker.errors import InvalidArgumentError
from tracker.store.segment import SegmentBuilder, write_segment

RUN_ID = re.compile(r"^[0-9a-f]{8,32}$")
_RELPATH = re.compile(r"^(runs|damaged)(/[A-Za-z0-9_.-]+)*$")


@dataclass(frozen=True)
class StoredFile:
    """A complete, durable file in a backend."""

    relpath: str  # relative to the store root, with forward slashes
    nbytes: int
    checksum: str  # "crc32:<8 hex digits>" (older files: sha256 hex digest)


@dataclass(frozen=True)
class SegmentFile:
    """A segment that is complete and durable, ready to be registered."""

    id: str
    relpath: str
    nbytes: int
    checksum: str


@dataclass(frozen=True)
class FileInfo:
    """A listed file: where, how big, last modified (seconds since the epoch)."""

    relpath: str
    nbytes: int
    mtime: float


def check_run_id(run_id: str) -> str:
    """Run ids are lowercase hex; anything else never reaches the file system."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise InvalidArgumentError(f"invalid run id {run_id!r}: expected 8-32 lowercase hex digits")
    return run_id


def check_relpath(relpath: str) -> str:
    """Refuse paths that could leave the store: absolute, '..', odd characters."""
    if (
        not isinstance(relpath, str)
        or not _RELPATH.match(relpath)
        or any(part in (".", "..") for part in relpath.split("/"))
    ):
        raise InvalidArgumentError(f"path {relpath!r} is outside the store")
    return relpath


def rank_folder(run_id: str, rank: int) -> str:
    """Relative folder of one rank's files of a run."""
    return f"runs/{check_run_id(run_id)}/rank{int(rank)}"


def new_file_name(step_min: int, step_max: int, tag: str = "") -> tuple[str, str]:
    """(id, file name) for a new file; names sort by first step and never collide."""
    file_id = uuid.uuid4().hex
    middle = f"-{tag}" if tag else ""
    return file_id, f"{step_min:012d}-{step_max:012d}{middle}-{file_id[:8]}.h5"


class Backend(ABC):
    """Segment files somewhere: a local folder, an object store, a server."""

    @abstractmethod
    def put(self, relpath: str, write: Callable[[str], None]) -> StoredFile:
        """Publish at ``relpath`` the file ``write(local_path)`` creates: all of it or nothing."""

    @abstractmethod
    def list_files(self, prefix: str = "runs") -> list[FileInfo]:
        """Complete files under ``prefix``, by path; never a half-written one."""

    @abstractmethod
    def open(self, relpath: str) -> h5py.File:
        """Open a file read-only (raises SegmentMissingError if it is gone)."""

    @abstractmethod
    def delete(self, relpath: str) -> None:
        """Remove a file (complete or temporary); removing a missing file is not an error."""

    @abstractmethod
    def checksum(self, relpath: str, algorithm: str = "crc32") -> str:
        """Checksum of a stored file's bytes, in the form put() returns."""

    @abstractmethod
    def set_aside(self, relpath: str) -> str:
        """Move a damaged file under damaged/, keeping its bytes; return its new path."""

    def list_incomplete(self, prefix: str = "runs") -> list[FileInfo]:
        """Files an interrupted put() left behind (none where puts are atomic)."""
        return []

    def delete_prefix(self, prefix: str) -> None:
        """Remove every file under ``prefix``."""
        for info in self.list_files(prefix) + self.list_incomplete(prefix):
            self.delete(info.relpath)

    def exists(self, relpath: str) -> bool:
        """True if a complete file is stored at ``relpath``."""
        return any(i.relpath == relpath for i in self.list_files(relpath.rsplit("/", 1)[0]))

    def scratch_dir(self, folder: str) -> Path:
        """A local folder for scratch files while building a file to store under ``folder``."""
        return Path(tempfile.gettempdir())

    def ping(self) -> bool:
        """True if the backend can be reached (for health checks)."""
        return True

    def put_segment(
        self, builder: SegmentBuilder, tracker_version: str, compression: str = "none"
    ) -> SegmentFile:
        """Write a segment durably (through put) under its run and rank; return its row."""
        seg_id, name = new_file_name(builder.step_min, builder.step_max)
        relpath = f"{rank_folder(builder.run_id, builder.rank)}/{name}"
        stored = self.put(
            relpath,
            lambda path: write_segment(path, builder, tracker_version, seg_id, compression),
        )
        return SegmentFile(seg_id, stored.relpath, stored.nbytes, stored.checksum)


def checksum_algorithm(value: str) -> str:
    """The algorithm a stored checksum was made with."""
    return value.split(":", 1)[0] if ":" in value else "sha256"
