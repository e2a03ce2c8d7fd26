"""A store: segment files in a folder plus the SQL catalog that registers them."""

from __future__ import annotations

import os
from pathlib import Path

from tracker.catalog import Catalog
from tracker.catalog.db import sqlite_url
from tracker.config import Settings, resolve_store_path
from tracker.errors import StoreError
from tracker.store.local import LocalStore, SegmentFile, check_run_id

__all__ = ["LocalStore", "SegmentFile", "Store", "check_run_id"]


class Store:
    """The files and the catalog of one store; open with :meth:`Store.open`."""

    def __init__(self, root: Path, database_url: str | None = None) -> None:
        if root.exists() and not root.is_dir():
            raise StoreError(
                f"the store path {root} is a file; give a folder (it is created if missing)"
            )
        self.root = root
        self.files = LocalStore(root)
        if not os.access(root, os.W_OK):
            self.writable = False
        else:
            self.writable = True
        self.catalog = Catalog(database_url or sqlite_url(root), lock_path=root / ".catalog.lock")

    @classmethod
    def open(
        cls, store: str | os.PathLike[str] | None = None, database_url: str | None = None
    ) -> Store:
        """Open (creating and migrating if new) the store at ``store`` or $TRACKER_STORE."""
        root = resolve_store_path(store)
        url = database_url or Settings.from_env().database_url
        return cls(root, url)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"
