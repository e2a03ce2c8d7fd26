"""Per run and rank locks: who may touch a run's files, and which runs were left mid-write.

A process that writes a run's files (the writer, compaction, retention, deletion) holds an
exclusive ``flock`` on ``<store>/.active/<run id>.rank<r>.lock`` for as long as it does, and
removes the file when it ends cleanly. So:

- a lock file whose lock can be taken was left by a process that died (the kernel drops flocks
  of dead processes, SIGKILL included): that run/rank needs recovery, and nothing else is writing
  it, so recovery may remove its temporary files and register its finished segments;
- a lock that cannot be taken belongs to a live process: recovery, compaction and deletion leave
  that run alone, however old its temporary files are;
- a store's recovery on open only lists ``.active/`` (usually empty), never the whole store.

Lock files are unlinked while held, so a process that opened one just before may lock a file that
is no longer there; acquire() checks the path still names the locked file and retries if not.
flock works across processes on one machine and over NFSv4 on Linux; stores on file systems
without working locks must not be shared by live writers and `tracker doctor`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tracker.store.backend import RUN_ID, check_run_id
from tracker.store.errors import RunBusyError

ACTIVE = ".active"


@dataclass(frozen=True)
class Marker:
    """A lock file found in .active/: a run and rank some process is (or was) writing."""

    run_id: str
    rank: int
    path: Path


class RunLock:
    """An exclusive, non-blocking lock on one rank of one run; see the module docstring."""

    def __init__(self, root: Path, run_id: str, rank: int, purpose: str) -> None:
        self.run_id = check_run_id(run_id)
        self.rank = int(rank)
        self.purpose = purpose
        self.path = root / ACTIVE / f"{self.run_id}.rank{self.rank}.lock"
        self._fd: int | None = None
        # What the lock file said when we took it: the last holder, if it died holding it.
        self.previous: dict[str, object] = {}

    def __repr__(self) -> str:
        state = "held" if self.held else "free"
        return f"RunLock({self.run_id}, rank={self.rank}, {self.purpose}, {state})"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if no live process holds it; False if one does."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed it after we opened it: try the new one
                os.close(fd)
                continue
            self._fd = fd
            self.previous = _read_info(fd)
            self._describe(fd)
            return True
        return False

    def _describe(self, fd: int) -> None:
        # Who holds it, for `tracker doctor` to report; the lock itself is the flock.
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "since": time.time(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    def release(self, finished: bool = True) -> None:
        """Drop the lock; ``finished`` removes the lock file (nothing left to recover)."""
        if self._fd is None:
            return
        try:
            if finished:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        if not self.acquire():
            raise RunBusyError(
                f"run {self.run_id} rank {self.rank} is being written by a live process "
                f"({holder(self.path)}); try again when it has finished"
            )
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.release(finished=exc_type is None)


def _read_info(fd: int) -> dict[str, object]:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def holder(path: Path) -> str:
    """Who holds a lock file, in words (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "unknown process"
    try:
        info = _read_info(fd)
    finally:
        os.close(fd)
    if not info:
        return "unknown process"
    return f"{info.get('purpose', 'a process')}, pid {info.get('pid')} on {info.get('host')}"


def markers(root: Path) -> list[Marker]:
    """Lock files in .active/: runs being written now, or left unfinished by a dead process."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root / ACTIVE):
            run_id, _, rest = entry.name.partition(".rank")
            rank = rest.removesuffix(".lock")
            if RUN_ID.match(run_id) and rank.isdigit() and rest.endswith(".lock"):
                found.append(Marker(run_id, int(rank), Path(entry.path)))
    return sorted(found, key=lambda m: (m.run_id, m.rank))


@contextlib.contextmanager
def locked_ranks(root: Path, run_id: str, ranks: list[int], purpose: str) -> Iterator[None]:
    """Hold the locks of several ranks of a run, or raise RunBusyError having changed nothing.

    If the body fails, the lock files stay behind (with ``purpose``) for recovery to finish it.
    """
    locks = [RunLock(root, run_id, rank, purpose) for rank in ranks]
    taken: list[RunLock] = []
    for lock in locks:
        if not lock.acquire():
            for other in taken:  # nothing was done under them: leave no marker behind
                other.release(finished=True)
            raise RunBusyError(
                f"run {run_id} rank {lock.rank} is being written by a live process "
                f"({holder(lock.path)}); try again when it has finished"
            )
        taken.append(lock)
    finished = False
    try:
        yield
        finished = True
    finally:
        for lock in taken:
            lock.release(finished=finished)
