"""A store: segment files in a backend (a folder or an object store) plus the SQL catalog."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tracker.catalog import Catalog
from tracker.catalog.db import sqlite_url
from tracker.config import Settings, resolve_store_path
from tracker.errors import StoreError
from tracker.store.backend import Backend, FileInfo, SegmentFile, StoredFile, check_run_id
from tracker.store.local import LocalStore
from tracker.store.locks import RunLock
from tracker.store.objectstore import (
    ObjectStore,
    ReadCache,
    is_object_store_url,
    s3_filesystem,
    state_folder,
)

__all__ = [
    "Backend",
    "FileInfo",
    "LocalStore",
    "ObjectStore",
    "RunLock",
    "SegmentFile",
    "Store",
    "StoredFile",
    "check_run_id",
]

log = logging.getLogger("tracker")


class Store:
    """The files and the catalog of one store; open with :meth:`Store.open`.

    Opening a writable store recovers what processes that died left unfinished (see
    tracker/store/recovery.py); that looks only at the lock files they left, so it is cheap.
    """

    def __init__(
        self,
        root: Path,
        database_url: str | None = None,
        recover: bool = True,
        files: Backend | None = None,
    ) -> None:
        if root.exists() and not root.is_dir():
            raise StoreError(
                f"the store path {root} is a file; give a folder (it is created if missing)"
            )
        # The local folder: the files themselves, or (object stores) cache and lock files.
        self.root = root
        self.files: Backend = files if files is not None else LocalStore(root)
        # Where the files are, as a user gives it: a folder, or s3://bucket/prefix.
        self.location = getattr(self.files, "url", str(root))
        root.mkdir(parents=True, exist_ok=True)
        self.writable = os.access(root, os.W_OK)
        self.catalog = Catalog(database_url or sqlite_url(root), lock_path=root / ".catalog.lock")
        if recover and self.writable:
            self.recover()

    @classmethod
    def open(
        cls,
        store: str | os.PathLike[str] | None = None,
        database_url: str | None = None,
        recover: bool = True,
    ) -> Store:
        """Open (creating and migrating if new) the store at ``store`` or $TRACKER_STORE.

        ``store`` is a folder, or ``s3://bucket/prefix`` (segment objects in S3 or MinIO); an
        object store needs a catalog URL (``database_url`` or $TRACKER_DATABASE_URL).
        """
        settings = Settings.from_env()
        url = database_url or settings.database_url
        chosen = os.fspath(store) if store is not None else settings.store
        if is_object_store_url(chosen):
            return cls._open_object_store(chosen, url, settings, recover)
        return cls(resolve_store_path(store), url, recover)

    @classmethod
    def _open_object_store(
        cls, location: str, database_url: str | None, settings: Settings, recover: bool
    ) -> Store:
        if not database_url:
            raise StoreError(
                f"the object store {location} needs a catalog: set TRACKER_DATABASE_URL "
                "(postgresql+psycopg://... for a team; sqlite:////path/catalog.db for one machine)"
            )
        state = state_folder(Path(settings.cache_dir).expanduser().resolve(), location)
        cache = ReadCache(state / "objects", settings.cache_bytes)
        files = ObjectStore(location, cache, s3_filesystem(settings.s3_endpoint_url))
        return cls(state, database_url, recover, files)

    def recover(self) -> None:
        """Finish or undo what dead processes left (never raises: doctor says more)."""
        from tracker.store.recovery import recover_abandoned

        try:
            recover_abandoned(self)
        except Exception as exc:
            log.warning("tracker: recovery of %s failed: %s", self.location, exc)

    def lock(self, run_id: str, rank: int, purpose: str) -> RunLock:
        """The lock a process holds while it writes one rank of a run (see locks.py)."""
        return RunLock(self.root, run_id, rank, purpose)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.location!r})"
