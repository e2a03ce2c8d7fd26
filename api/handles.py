"""Open HDF5 files kept across requests: a bounded LRU of read-only handles per worker process.

Segment files never change once registered, so a handle opened for one request serves the next
ones: a tensor or series read then costs a catalog query and the read, not an open (parse the
superblock, check the header). gunicorn's workers are processes (h5py holds a global lock) and
the app is built in each (no preload), so every worker has its own cache and no handle crosses a
fork.

A handle leaves the cache when it is the least recently used one past ``max_files``, or when its
file is no longer a live registered file (compacted away, run deleted): a sweep at the end of a
request, at most every ``sweep_seconds``, asks the catalog. Handles are closed only when no
request of this process is running, so a thread of the dev server never loses a file under it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import h5py
from sqlalchemy import select

from tracker.catalog import Segment
from tracker.store import Store

MAX_FILES = 64  # per worker: a page's plots read a few files of a few runs
SWEEP_SECONDS = 10.0


class OpenFiles:
    """A bounded, process-wide LRU of read-only h5py handles keyed by store-relative path."""

    def __init__(
        self, store: Store, max_files: int = MAX_FILES, sweep_seconds: float = SWEEP_SECONDS
    ) -> None:
        self._store = store
        self.max_files = max_files
        self.sweep_seconds = sweep_seconds
        self._files: OrderedDict[str, h5py.File] = OrderedDict()
        self._retired: list[h5py.File] = []
        self._lock = threading.Lock()
        self._active = 0
        self._swept = time.monotonic()
        self.opens = 0  # files opened (misses), for tests and benchmarks

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, relpath: object) -> bool:
        return relpath in self._files

    def open(self, relpath: str) -> h5py.File:
        """The cached handle of ``relpath``, opening it on a miss."""
        with self._lock:
            f = self._files.get(relpath)
            if f is not None:
                self._files.move_to_end(relpath)
                return f
        f = self._store.files.open(relpath)  # outside the lock: an open can take a while
        with self._lock:
            if relpath in self._files:  # another thread opened it meanwhile
                self._retired.append(f)
                return self._files[relpath]
            self.opens += 1
            self._files[relpath] = f
            while len(self._files) > self.max_files:
                self._retired.append(self._files.popitem(last=False)[1])
        return f

    def begin(self) -> None:
        """A request of this process started."""
        with self._lock:
            self._active += 1

    def end(self, began: bool = True) -> None:
        """A request ended (one that called begin() if ``began``): sweep if due, and close
        retired handles if no request is running."""
        with self._lock:
            self._active -= began
            due = time.monotonic() - self._swept >= self.sweep_seconds
        if due:
            self.sweep()
        with self._lock:
            if self._active == 0:
                retired, self._retired = self._retired, []
            else:
                retired = []
        for f in retired:
            f.close()

    def sweep(self) -> None:
        """Retire handles of files that are no longer live registered files."""
        with self._lock:
            paths = list(self._files)
            self._swept = time.monotonic()
        if not paths:
            return
        with self._store.catalog.read() as s:
            live = set(
                s.scalars(
                    select(Segment.path).where(
                        Segment.path.in_(paths), Segment.superseded_at.is_(None)
                    )
                )
            )
        with self._lock:
            for path in paths:
                if path not in live and path in self._files:
                    self._retired.append(self._files.pop(path))

    def close(self) -> None:
        """Close every handle (the app's store is closing)."""
        with self._lock:
            handles = list(self._files.values()) + self._retired
            self._files.clear()
            self._retired = []
        for f in handles:
            f.close()
