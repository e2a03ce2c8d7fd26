"""Run locks: one holder at a time, freed when the holder dies; lock files mark unfinished work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tracker.store.errors import RunBusyError
from tracker.store.locks import RunLock, locked_ranks, markers

RUN = "00000000000000d1"


def test_one_holder_at_a_time_and_the_lock_file_marks_unfinished_work(tmp_path: Path) -> None:
    first = RunLock(tmp_path, RUN, 0, "writer")
    assert first.acquire()
    assert not RunLock(tmp_path, RUN, 0, "compaction").acquire()
    assert RunLock(tmp_path, RUN, 1, "writer").acquire()  # ranks are independent
    first.release(finished=False)  # e.g. died part way: the file stays
    assert [(m.run_id, m.rank) for m in markers(tmp_path)] == [(RUN, 0), (RUN, 1)]
    second = RunLock(tmp_path, RUN, 0, "recovery")
    assert second.acquire()
    assert second.previous["purpose"] == "writer" and second.previous["pid"] == os.getpid()
    second.release(finished=True)
    assert [(m.run_id, m.rank) for m in markers(tmp_path)] == [(RUN, 1)]


def test_a_lock_held_by_a_killed_process_is_free(tmp_path: Path) -> None:
    lock = RunLock(tmp_path, RUN, 0, "test")
    lock.path.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock.path)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert not lock.acquire()
        with pytest.raises(RunBusyError, match="live process"):
            RunLock(tmp_path, RUN, 0, "compaction").__enter__()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert lock.acquire()  # the kernel released the dead holder's flock
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
        lock.release()


def test_a_lock_file_removed_while_opened_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = RunLock(tmp_path, RUN, 0, "writer")
    assert holder.acquire()
    stale_fd = os.open(holder.path, os.O_RDWR)
    holder.release(finished=True)  # finished: the file is unlinked; stale_fd still names it
    real_open = os.open
    opened = [stale_fd]  # acquire()'s first open happens to be the one made before the unlink

    def racing_open(path: object, flags: int, mode: int = 0o777) -> int:
        return opened.pop() if opened else real_open(path, flags, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", racing_open)
    again = RunLock(tmp_path, RUN, 0, "compaction")
    assert again.acquire()
    monkeypatch.undo()
    # It holds the lock of the file at the path, not of the unlinked one it was handed first.
    assert again._fd is not None and again._fd != stale_fd
    assert os.fstat(again._fd).st_ino == os.stat(again.path).st_ino
    assert not RunLock(tmp_path, RUN, 0, "other").acquire()
    again.release()


def test_locking_several_ranks_is_all_or_nothing(tmp_path: Path) -> None:
    busy = RunLock(tmp_path, RUN, 1, "writer")
    assert busy.acquire()
    with pytest.raises(RunBusyError), locked_ranks(tmp_path, RUN, [0, 1, 2], "deletion"):
        pass
    assert [m.rank for m in markers(tmp_path)] == [1]  # no deletion marker was left behind
    busy.release()
    with pytest.raises(RuntimeError), locked_ranks(tmp_path, RUN, [0, 1], "deletion"):
        raise RuntimeError("died part way")
    assert [m.rank for m in markers(tmp_path)] == [0, 1]  # left for recovery to finish


def test_markers_ignore_files_that_are_not_lock_files(tmp_path: Path) -> None:
    (tmp_path / ".active").mkdir()
    for name in ("../x.rank0.lock", "notes.txt", "ABC.rank0.lock", f"{RUN}.rankX.lock"):
        (tmp_path / ".active" / name.replace("/", "_")).write_text("")
    assert markers(tmp_path) == []
