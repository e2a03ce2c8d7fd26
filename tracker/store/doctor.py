"""`tracker doctor`: check a whole store against its catalog, and repair what can be repaired.

Beyond what recovery on open does (recovery.py) it walks every run, so it also finds: rows whose
file is lost, files whose checksum no longer matches, runs still marked running that no process
writes, and orphan folders of runs the catalog does not know. Orphans are only reported unless
asked to delete them: the likeliest cause is a catalog that is not this store's (a wrong
TRACKER_DATABASE_URL), and deleting would then destroy good data. (An interrupted `tracker rm`
leaves a lock file that makes the next open finish the deletion, so it leaves no orphans.)
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from tracker.store.backend import RUN_ID
from tracker.store.locks import RunLock, holder, markers
from tracker.store.recovery import Finding, inspect_rank, recover_abandoned, repair

if TYPE_CHECKING:
    from tracker.store import Store

_RANK_FOLDER = re.compile(r"^runs/([0-9a-f]+)/rank(\d+)/")


def _on_disk(store: Store) -> dict[str, set[int]]:
    """{run id: ranks} of every folder holding files under runs/."""
    found: dict[str, set[int]] = {}
    for info in store.files.list_files("runs") + store.files.list_incomplete("runs"):
        match = _RANK_FOLDER.match(info.relpath)
        if match and RUN_ID.match(match.group(1)):
            found.setdefault(match.group(1), set()).add(int(match.group(2)))
    return found


def diagnose(
    store: Store, repair_now: bool = False, checksums: bool = True, delete_orphans: bool = False
) -> list[Finding]:
    """Every problem found (each with the repair it calls for); repaired if ``repair_now``.

    Open ``store`` with ``recover=False`` for a dry run: recovery on open repairs things.
    """
    findings: list[Finding] = []
    if repair_now:  # finish what dead processes left, e.g. a half-done `tracker rm`
        findings.extend(recover_abandoned(store))
    else:
        findings.extend(_abandoned(store))
    on_disk = _on_disk(store)
    known = store.catalog.run_ids()
    for run_id in sorted(set(on_disk) - known):
        action = "delete its files" if delete_orphans else "kept (pass --delete-orphans)"
        fix = (lambda r=run_id: store.files.delete_prefix(f"runs/{r}")) if delete_orphans else None
        findings.append(
            Finding("orphan files (no such run in the catalog)", f"runs/{run_id}", action, fix)
        )
    pairs = {
        (run_id, rank) for run_id, ranks in on_disk.items() if run_id in known for rank in ranks
    }
    for run_id in store.catalog.segment_runs():
        pairs.update((run_id, rank) for rank in store.catalog.ranks(run_id))
    for run_id, rank in sorted(pairs):
        lock = RunLock(store.root, run_id, rank, "doctor")
        if not lock.acquire():
            where, who = f"runs/{run_id}/rank{rank}", f"skipped: {holder(lock.path)}"
            findings.append(Finding("being written", where, who, serious=False))
            continue
        found: list[Finding] = []
        try:
            found = inspect_rank(store, run_id, rank, lost_files=True, checksums=checksums)
            if repair_now:
                repair(found)
        finally:
            _release(lock, repair_now and not any(f.error for f in found))
        findings.extend(found)
    findings.extend(_stale_running(store, repair_now))
    if repair_now:
        repair(findings)  # the run-level ones (orphans); rank ones are done already
    return findings


def _stale_running(store: Store, repair_now: bool) -> list[Finding]:
    """Runs marked running whose writer lock is free: their process is gone."""
    findings = []
    for run, _ in store.catalog.runs(status="running"):
        lock = RunLock(store.root, run.id, 0, "doctor")
        if not lock.acquire():
            continue
        _release(lock, repair_now)
        findings.append(
            Finding(
                "run marked running but not being written",
                f"runs/{run.id}",
                "mark it crashed",
                functools.partial(_mark_crashed, store, run.id),
            )
        )
    return findings


def _release(lock: RunLock, repaired: bool) -> None:
    """Drop a lock; keep a dead process's lock file unless we repaired what it left."""
    lock.release(finished=repaired or not lock.previous)


def _abandoned(store: Store) -> list[Finding]:
    """Lock files of dead processes, reported without touching them (a dry run)."""
    findings = []
    for marker in markers(store.root):
        lock = RunLock(store.root, marker.run_id, marker.rank, "doctor")
        if not lock.acquire():
            continue
        purpose = lock.previous.get("purpose", "a process")
        lock.release(finished=False)
        findings.append(
            Finding(
                f"left unfinished by a dead {purpose}",
                f"runs/{marker.run_id}/rank{marker.rank}",
                "recover it (as opening the store does)",
                lambda: None,
            )
        )
    return findings


def _mark_crashed(store: Store, run_id: str) -> None:
    store.catalog.mark_crashed(run_id, "no process is writing this run (found by tracker doctor)")
