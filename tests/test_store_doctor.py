"""`tracker doctor`: every kind of damage is found; a dry run changes nothing; repair fixes it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests import synthetic
from tracker.store import Store
from tracker.store.doctor import diagnose

RUN = "00000000000000f1"
ORPHAN = "00000000000000f2"


def state(store: Store) -> tuple[dict[str, str], list[tuple[str, bool]], list[str]]:
    """Every file's content hash, every segment row, every run's status: what must not change."""
    files = {
        p.relative_to(store.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in store.root.rglob("*")
        if p.is_file() and not p.name.startswith("catalog.db")
    }
    rows = sorted(
        (s.path, s.superseded_at is None) for s in store.catalog.segments(RUN, superseded=True)
    )
    return files, rows, [r.status for r, _ in store.catalog.runs()]


@pytest.fixture
def damaged(store: Store) -> Store:
    """A store with one of every problem doctor knows."""
    synthetic.create_run(store, RUN)
    synthetic.write_steps(store, RUN, range(21))  # segments 0-6, 7-13, 14-20
    first, second, third = store.catalog.segments(RUN)
    store.files.delete(first.path)  # a lost file
    path = store.files.resolve(second.path)  # a flipped bit
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    tmp = store.files.resolve(f"runs/{RUN}/rank0/000000000021-000000000027-dead.h5.tmp")
    tmp.write_bytes(b"half")  # a temporary file (no lock file: nobody is writing)
    orphan = store.files.resolve(f"runs/{ORPHAN}/rank0")  # files of a run the catalog lacks
    orphan.mkdir(parents=True)
    (orphan / "000000000000-000000000001-aaaaaaaa.h5").write_bytes(third.path.encode())
    return store  # and RUN is still marked running, with no process writing it


def test_a_dry_run_reports_every_problem_and_changes_nothing(damaged: Store) -> None:
    before = state(damaged)
    findings = diagnose(damaged, repair_now=False)
    problems = sorted(f.problem for f in findings)
    assert problems == [
        "checksum mismatch",
        "lost file",
        "orphan files (no such run in the catalog)",
        "run marked running but not being written",
        "temporary file",
    ]
    assert not any(f.done for f in findings)
    assert state(damaged) == before
    assert "would" in str(findings[0]) or "kept" in str(findings[0])


def test_repair_fixes_everything_but_orphans_unless_asked(damaged: Store) -> None:
    findings = diagnose(damaged, repair_now=True)
    assert all(f.done for f in findings if f.fix is not None)
    rows = damaged.catalog.segments(RUN)
    assert len(rows) == 1  # the lost and the damaged file's rows are gone
    assert [i.relpath for i in damaged.files.list_files(f"runs/{RUN}")] == [rows[0].path]
    assert len(damaged.files.list_files("damaged")) == 1  # the damaged bytes are kept aside
    assert damaged.catalog.get_run(RUN).status == "crashed"
    assert damaged.files.list_incomplete("runs") == []
    # what is left: the orphan, only reported
    (left,) = diagnose(damaged, repair_now=True)
    assert left.problem.startswith("orphan") and left.fix is None
    diagnose(damaged, repair_now=True, delete_orphans=True)
    assert diagnose(damaged, repair_now=False) == []
    assert not Path(damaged.files.resolve(f"runs/{ORPHAN}")).exists()


def test_a_run_being_written_is_skipped(damaged: Store) -> None:
    live = damaged.lock(RUN, 0, "writer")
    assert live.acquire()
    try:
        findings = diagnose(damaged, repair_now=True)
        (busy,) = [f for f in findings if f.problem == "being written"]
        assert not busy.serious and "writer" in busy.action
        assert damaged.files.list_incomplete("runs")  # its temporary file was not touched
        assert damaged.catalog.get_run(RUN).status == "running"
    finally:
        live.release()


def test_a_dry_run_leaves_a_dead_process_lock_file_for_recovery(damaged: Store) -> None:
    dead = damaged.lock(RUN, 0, "writer")
    assert dead.acquire()
    dead.release(finished=False)  # its writer died
    findings = diagnose(damaged, repair_now=False)
    assert "left unfinished by a dead writer" in [f.problem for f in findings]
    assert dead.path.exists()  # still there: the next open (or repair) recovers the run
    diagnose(damaged, repair_now=True)
    assert not dead.path.exists()
    assert damaged.catalog.get_run(RUN).status == "crashed"
