"""The object-store backend: segment files as objects in an S3-compatible bucket (via fsspec/s3fs).

    store = Store.open("s3://bucket/team", database_url="postgresql+psycopg://...")

put() writes the file to a local temporary file, checksums it and uploads it with one PUT (one
multipart upload for big files). S3 makes an object visible only once its upload completed, so a
reader never sees half a file (I2), and an interrupted upload publishes nothing. Uploads are
conditional (``If-None-Match: *``): a stored object is never overwritten.

Reads go through a local cache folder bounded in bytes (least recently opened files go first):
h5py needs a local file, segments are immutable and their names never repeat, so a cached copy is
never stale. Evicting a file unlinks it; open handles keep reading it (POSIX).

What stays local, in one folder per store (``$TRACKER_CACHE_DIR/<bucket-prefix>``): the read
cache, temporary files, and the lock files of runs this machine writes (locks.py). Those locks
guard against processes on the same machine only; see docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from tracker.errors import InvalidArgumentError, StoreError
from tracker.store.backend import (
    Backend,
    FileInfo,
    StoredFile,
    check_relpath,
)
from tracker.store.errors import SegmentMissingError
from tracker.store.local import COMPLETE_SUFFIX, file_checksum
from tracker.store.segment import check_header

__all__ = ["ObjectStore", "ReadCache", "is_object_store_url", "state_folder"]

SCHEMES = ("s3://",)
_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[A-Za-z0-9_.\-/]*)?$")
_CHUNK = 8 << 20
# Partial downloads older than this were left by a process that died; trim() removes them.
_STALE_PART_SECONDS = 3600.0


def is_object_store_url(store: object) -> bool:
    """True for an ``s3://bucket[/prefix]`` store location."""
    return isinstance(store, str) and store.startswith(SCHEMES)


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; the prefix may be empty."""
    match = _URL.match(url)
    if match is None:
        raise InvalidArgumentError(
            f"invalid object store URL {url!r}: expected s3://bucket or s3://bucket/prefix"
        )
    prefix = (match.group(2) or "").strip("/")
    if any(part in (".", "..") for part in prefix.split("/")):
        raise InvalidArgumentError(f"invalid object store URL {url!r}: '.' or '..' in the prefix")
    return match.group(1), prefix


def state_folder(cache_dir: Path, url: str) -> Path:
    """The local folder of one object store: read cache, temporary files, lock files."""
    bucket, prefix = parse_url(url)
    slug = "-".join(p for p in (bucket, *prefix.split("/")) if p)
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:8]
    return cache_dir / f"s3-{slug}-{digest}"


class ReadCache:
    """Whole files in a local folder, at most ``max_bytes`` of them, least recently used out."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        if max_bytes < 0:
            raise InvalidArgumentError(f"the read cache size must be >= 0 bytes, not {max_bytes}")
        self.folder = folder
        self.max_bytes = max_bytes
        self.incoming = folder / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ReadCache({str(self.folder)!r}, max_bytes={self.max_bytes})"

    def path(self, relpath: str) -> Path:
        return self.folder / check_relpath(relpath)

    def temporary(self, suffix: str = ".part") -> Path:
        """A fresh path on the cache's file system, for a file about to be cached."""
        return self.incoming / f"{uuid.uuid4().hex}{suffix}"

    def get(self, relpath: str, fetch: Callable[[Path], None]) -> Path:
        """The cached copy of ``relpath``, fetched with ``fetch(tmp)`` if it is not cached."""
        path = self.path(relpath)
        try:
            os.utime(path)  # mark it used: trim() drops the least recently used first
            return path
        except FileNotFoundError:
            pass
        tmp = self.temporary()
        try:
            fetch(tmp)
            self.add(relpath, tmp)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def add(self, relpath: str, local: Path) -> None:
        """Move ``local`` (on the cache's file system) into the cache as ``relpath``."""
        path = self.path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, path)  # atomic: other processes see the whole file or none

    def evict(self, relpath: str) -> None:
        self.path(relpath).unlink(missing_ok=True)

    def size(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[Path, int, float]]:
        found = []
        for folder, dirs, names in os.walk(self.folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                path = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    found.append((path, st.st_size, st.st_mtime))
        return found

    def trim(self, keep: Path | None = None) -> None:
        """Remove least recently used files until the cache fits (never ``keep``)."""
        entries = sorted(self._entries(), key=lambda e: e[2])
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)  # an open handle keeps reading it
            total -= size
        now = time.time()
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.incoming):
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat().st_mtime > _STALE_PART_SECONDS:
                        os.unlink(entry.path)


def s3_filesystem(endpoint_url: str | None = None) -> Any:
    """An s3fs file system; credentials and region from the usual AWS variables and files."""
    try:
        import s3fs
    except ImportError as exc:
        raise StoreError(
            "s3:// stores need s3fs: pip install 'tracker[s3]' (with the constraints file)"
        ) from exc
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    return s3fs.S3FileSystem(**options)


class ObjectStore(Backend):
    """Segment files as objects under ``s3://bucket/prefix``; reads through a ReadCache."""

    def __init__(self, url: str, cache: ReadCache, fs: Any = None) -> None:
        bucket, prefix = parse_url(url)
        self.url = url
        self.base = f"{bucket}/{prefix}" if prefix else bucket
        self.cache = cache
        self.fs = fs if fs is not None else s3_filesystem()

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    def _key(self, relpath: str) -> str:
        return f"{self.base}/{check_relpath(relpath)}"

    def _relpath(self, key: str) -> str:
        return key.removeprefix(self.base + "/")

    def exists(self, relpath: str) -> bool:
        return bool(self.fs.exists(self._key(relpath)))

    def ping(self) -> bool:
        """True if the bucket answers."""
        try:
            self.fs.ls(self.base.split("/", 1)[0], refresh=True)
        except Exception:
            return False
        return True

    def put(self, relpath: str, write: Callable[[str], None]) -> StoredFile:
        """Write locally, checksum, upload with one conditional PUT; keep the copy in the cache."""
        key = self._key(relpath)
        if not relpath.endswith(COMPLETE_SUFFIX):
            raise InvalidArgumentError(f"stored files end in {COMPLETE_SUFFIX}: {relpath!r}")
        if self.fs.exists(key):
            raise StoreError(f"{relpath} exists already; stored files are never overwritten")
        tmp = self.cache.temporary(".tmp")
        try:
            write(str(tmp))
            checksum = file_checksum(tmp)
            nbytes = tmp.stat().st_size
            try:
                self.fs.put_file(str(tmp), key, mode="create")
            except FileExistsError as exc:  # lost a race with another writer of the same name
                raise StoreError(
                    f"{relpath} exists already; stored files are never overwritten"
                ) from exc
            self.cache.add(relpath, tmp)  # the writer's own files are read back by compaction
        finally:
            tmp.unlink(missing_ok=True)
        self.cache.trim(keep=self.cache.path(relpath))
        return StoredFile(relpath, nbytes, checksum)

    def list_files(self, prefix: str = "runs") -> list[FileInfo]:
        """Complete files under ``prefix`` (every object is complete), by path."""
        folder = self._key(prefix)
        try:
            found = self.fs.find(folder, detail=True)
        except FileNotFoundError:
            return []
        infos = []
        for key, info in found.items():
            relpath = self._relpath(key)
            if not relpath.startswith(prefix + "/") or not relpath.endswith(COMPLETE_SUFFIX):
                continue
            modified = info.get("LastModified")
            mtime = modified.timestamp() if hasattr(modified, "timestamp") else 0.0
            infos.append(FileInfo(relpath, int(info["size"]), mtime))
        return sorted(infos, key=lambda i: i.relpath)

    def _download(self, relpath: str, local: Path) -> None:
        try:
            self.fs.get_file(self._key(relpath), str(local))
        except FileNotFoundError as exc:
            raise SegmentMissingError(f"segment {relpath} is gone") from exc

    def open(self, relpath: str) -> h5py.File:
        """Open a file read-only from the cache (downloading it first if needed)."""
        path = self.cache.get(relpath, lambda local: self._download(relpath, local))
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise StoreError(f"cannot read segment {relpath}: {exc}") from exc
        try:
            check_header(f)
        except Exception:
            f.close()
            raise
        self.cache.trim(keep=path)
        return f

    def delete(self, relpath: str) -> None:
        """Delete the object and the local cached copy; a missing object is not an error."""
        key = self._key(relpath)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(key)
        self.cache.evict(relpath)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (batched deletes)."""
        relpaths = [info.relpath for info in self.list_files(prefix)]
        if relpaths:
            self.fs.rm([self._key(r) for r in relpaths])
        for relpath in relpaths:
            self.cache.evict(relpath)

    def checksum(self, relpath: str, algorithm: str = "crc32") -> str:
        """Checksum of the stored object's bytes, streamed from the store (not the cache)."""
        if algorithm not in ("crc32", "sha256"):
            raise InvalidArgumentError(f"unknown checksum algorithm {algorithm!r}")
        digest = hashlib.sha256()
        crc = 0
        try:
            with self.fs.open(self._key(relpath), "rb", block_size=_CHUNK) as fh:
                while chunk := fh.read(_CHUNK):
                    if algorithm == "sha256":
                        digest.update(chunk)
                    else:
                        crc = zlib.crc32(chunk, crc)
        except FileNotFoundError as exc:
            raise SegmentMissingError(f"segment {relpath} is gone") from exc
        return digest.hexdigest() if algorithm == "sha256" else f"crc32:{crc:08x}"

    def set_aside(self, relpath: str) -> str:
        """Copy a damaged object to damaged/<relpath>, then delete the original."""
        target = f"damaged/{check_relpath(relpath)}"
        try:
            self.fs.copy(self._key(relpath), self._key(target))
        except FileNotFoundError as exc:
            raise SegmentMissingError(f"segment {relpath} is gone") from exc
        self.delete(relpath)
        return target

    def scratch_dir(self, folder: str) -> Path:
        """Scratch files (compaction) live in the local cache folder, never in the bucket."""
        return self.cache.incoming
