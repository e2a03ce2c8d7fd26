"""A store: segment files in a backend (a local folder) plus the SQL catalog that registers them."""

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

__all__ = [
    "Backend",
    "FileInfo",
    "LocalStore",
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

    def __init__(self, root: Path, database_url: str | None = None, recover: bool = True) -> None:
        if root.exists() and not root.is_dir():
            raise StoreError(
                f"the store path {root} is a file; give a folder (it is created if missing)"
            )
        self.root = root
        self.files: LocalStore = LocalStore(root)
        self.writable = os.access(root, os.W_OK)
        self.catalog = Catalog(database_url or sqlite_url(root), lock_path=root / ".catalog.lock")
        if recover and self.writable:
            self.recover()

    @classmethod
    def open(
        cls, store: str | os.PathLike[str] | None = None, database_url: str | None = None
    ) -> Store:
        """Open (creating and migrating if new) the store at ``store`` or $TRACKER_STORE."""
        root = resolve_store_path(store)
        url = database_url or Settings.from_env().database_url
        return cls(root, url)

    def recover(self) -> None:
        """Finish or undo what dead processes left (never raises: doctor says more)."""
        from tracker.store.recovery import recover_abandoned

        try:
            recover_abandoned(self)
        except Exception as exc:
            log.warning("tracker: recovery of %s failed: %s", self.root, exc)

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
        return f"Store({str(self.root)!r})"
