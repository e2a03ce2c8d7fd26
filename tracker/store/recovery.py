"""Bringing one rank of a run back to a clean state after a crash; and recovery on open.

What a crash can leave in a rank's folder, and what recovery does with it (I2: nothing committed
is lost, and nothing complete is thrown away):

- ``*.tmp``: a write that never finished. Deleted.
- a complete segment the catalog does not know (the writer died between rename and commit):
  registered, with the metrics and epochs it carries, as the commit would have.
- a complete compacted file the catalog does not know (compaction died before its swap): its
  sources are all still registered, so it is a redundant copy. Deleted.
- a superseded row (compaction died after its swap): its file is deleted, then the row.
- a file that does not open as a segment: moved under damaged/ (never deleted).

Only a process holding the rank's lock (locks.py) runs this, so no live writer is touched. A
store runs it on open for the lock files left in ``.active/`` only, which keeps opening cheap;
``tracker doctor`` runs it for every run, and also checks for lost files and checksums.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from tracker.catalog import MetricRow, Segment
from tracker.errors import SchemaVersionError, StoreError
from tracker.store import segment as seg
from tracker.store.backend import StoredFile, checksum_algorithm, rank_folder
from tracker.store.locks import RunLock, markers

if TYPE_CHECKING:
    from tracker.store import Store

log = logging.getLogger("tracker")


@dataclass
class Finding:
    """One problem in the store, and what repairing it does."""

    problem: str  # e.g. "temporary file", "unregistered segment"
    path: str  # a stored file's relative path, or a run's folder
    action: str  # what repair does, in words ("" when nothing is to be done)
    fix: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    done: bool = False
    error: str | None = None
    serious: bool = True  # False for what is only reported (a run being written now)

    def __str__(self) -> str:
        if self.error:
            return f"{self.problem}: {self.path}: could not {self.action}: {self.error}"
        if self.fix is None:
            return f"{self.problem}: {self.path}" + (f" ({self.action})" if self.action else "")
        verb = "done" if self.done else "would"
        return f"{self.problem}: {self.path}: {verb}: {self.action}"


def repair(findings: list[Finding]) -> bool:
    """Apply every finding's fix; True if all that had one succeeded."""
    ok = True
    for finding in findings:
        if finding.fix is None or finding.done:
            continue
        try:
            finding.fix()
            finding.done = True
        except Exception as exc:  # report it and go on with the rest
            finding.error = f"{type(exc).__name__}: {exc}"
            ok = False
    return ok


def inspect_rank(
    store: Store, run_id: str, rank: int, lost_files: bool = False, checksums: bool = False
) -> list[Finding]:
    """What recovery would do to one rank of a run (the caller holds its lock).

    ``lost_files`` also reports rows whose file is gone, ``checksums`` verifies every file: both
    are for `tracker doctor`, not for recovery on open.
    """
    folder = rank_folder(run_id, rank)
    files = {info.relpath: info for info in store.files.list_files(folder)}
    rows = {row.path: row for row in store.catalog.segments(run_id, rank, superseded=True)}
    run_known = store.catalog.get_run(run_id) is not None
    findings = [
        Finding("temporary file", info.relpath, "delete", _deleter(store, info.relpath))
        for info in store.files.list_incomplete(folder)
    ]
    for relpath in sorted(set(files) - set(rows)):
        findings.append(_unregistered(store, relpath, run_id, rank, run_known))
    for row in rows.values():
        if row.superseded_at is not None:
            findings.append(
                Finding("superseded file", row.path, "delete it and its row", _retire(store, row))
            )
        elif row.path not in files and lost_files:
            findings.append(
                Finding(
                    "lost file", row.path, "forget its row (its data is gone)", _forget(store, row)
                )
            )
        elif row.path in files and checksums:
            found = store.files.checksum(row.path, checksum_algorithm(row.checksum))
            if found != row.checksum:
                findings.append(
                    Finding(
                        "checksum mismatch",
                        row.path,
                        "move it under damaged/ and forget its row",
                        _set_aside(store, row.path, row.id),
                    )
                )
    return findings


def _deleter(store: Store, relpath: str) -> Callable[[], None]:
    return lambda: store.files.delete(relpath)


def _forget(store: Store, row: Segment) -> Callable[[], None]:
    return lambda: store.catalog.forget_segments([row.id])


def _retire(store: Store, row: Segment) -> Callable[[], None]:
    def fix() -> None:
        store.files.delete(row.path)  # file first: dying in between leaves the row to retry
        store.catalog.forget_segments([row.id])

    return fix


def _set_aside(store: Store, relpath: str, row_id: str | None = None) -> Callable[[], None]:
    def fix() -> None:
        store.files.set_aside(relpath)
        if row_id is not None:
            store.catalog.forget_segments([row_id])

    return fix


def _unregistered(store: Store, relpath: str, run_id: str, rank: int, run_known: bool) -> Finding:
    """Classify a complete file the catalog does not know, and say what to do with it."""
    try:
        with store.files.open(relpath) as f:
            kind = seg.content(f)
            owner = (str(f.attrs.get("run_id")), int(f.attrs.get("rank", -1)))
    except SchemaVersionError:
        return Finding("file from a newer tracker", relpath, "left alone: upgrade tracker")
    except (StoreError, OSError, KeyError, ValueError) as exc:
        return Finding(
            "unreadable file",
            relpath,
            f"move it under damaged/ ({exc})",
            _set_aside(store, relpath),
        )
    if owner != (run_id, rank):
        return Finding(
            "misplaced file",
            relpath,
            f"move it under damaged/ (it belongs to run {owner[0]} rank {owner[1]})",
            _set_aside(store, relpath),
        )
    if kind == seg.TOPK:
        if not run_known:
            return Finding("orphan top-k file", relpath, "kept: its run is not in the catalog")
        return Finding(
            "unregistered top-k file",
            relpath,
            "register it",
            lambda: register_top_k(store, relpath, run_id, rank),
        )
    if kind != seg.SEGMENT:
        return Finding(
            "unregistered compacted file",
            relpath,
            "delete (compaction was interrupted; its sources are still registered)",
            _deleter(store, relpath),
        )
    if not run_known:
        return Finding("orphan segment", relpath, "kept: its run is not in the catalog")
    return Finding(
        "unregistered segment",
        relpath,
        "register it with its metrics",
        lambda: register_segment(store, relpath, run_id, rank),
    )


def register_segment(store: Store, relpath: str, run_id: str, rank: int) -> None:
    """Register a complete segment file and the batch it carries, as its writer would have."""
    with store.files.open(relpath) as f:
        attrs = f.attrs
        segment = {
            "id": str(attrs.get("segment_id") or "") or uuid.uuid4().hex,
            "rank": rank,
            "step_min": int(attrs["step_min"]),
            "step_max": int(attrs["step_max"]),
            "n_steps": int(f["steps"].shape[0]),
            "path": relpath,
            "schema_version": int(attrs["schema_version"]),
            "kind": seg.SEGMENT,
            "nbytes": int(f.id.get_filesize()),
        }
        batch = seg.read_batch(f)
    segment["checksum"] = store.files.checksum(relpath)
    metrics = [MetricRow(*m) for m in batch.metrics]
    commit = store.catalog.commit_batch
    try:
        commit(run_id, segment, metrics, batch.epochs, batch.shapes, {}, overwrite_metrics=False)
    except IntegrityError:  # its id is taken (a copied file): register it under a new one
        segment["id"] = uuid.uuid4().hex
        commit(run_id, segment, metrics, batch.epochs, batch.shapes, {}, overwrite_metrics=False)


def register_top_k(store: Store, relpath: str, run_id: str, rank: int) -> None:
    """Register a complete top-k file whose writer died before registering it."""
    from tracker.topk.files import registration

    with store.files.open(relpath) as f:
        file_id = str(f.attrs.get("segment_id") or "") or uuid.uuid4().hex
        step = int(f.attrs["step_min"])
        nbytes = int(f.id.get_filesize())
    info = StoredFile(relpath, nbytes, store.files.checksum(relpath))
    store.catalog.swap_segments(run_id, [registration(file_id, rank, step, info)], [])


def recover_rank(store: Store, run_id: str, rank: int) -> list[Finding]:
    """Inspect and repair one rank (the caller holds its lock); raise if a repair failed."""
    findings = inspect_rank(store, run_id, rank)
    if not repair(findings):
        failed = "; ".join(str(f) for f in findings if f.error)
        raise StoreError(f"could not recover run {run_id} rank {rank}: {failed}")
    return findings


def recover_abandoned(store: Store) -> list[Finding]:
    """Recover every run/rank whose lock file a dead process left in .active/ (cheap: no walk)."""
    from tracker.store.delete import erase_run

    findings: list[Finding] = []
    for marker in markers(store.root):
        lock = RunLock(store.root, marker.run_id, marker.rank, "recovery")
        if not lock.acquire():
            continue  # a live process holds it
        finished = False
        try:
            purpose = lock.previous.get("purpose")
            if purpose == "deletion":  # `tracker rm` died part way: finish it
                erase_run(store, marker.run_id)
                findings.append(Finding("interrupted deletion", marker.run_id, "finish", done=True))
            else:
                findings.extend(recover_rank(store, marker.run_id, marker.rank))
                if purpose == "writer" and marker.rank == 0:
                    reason = "the process writing this run ended without finishing it"
                    if store.catalog.mark_crashed(marker.run_id, reason):
                        findings.append(
                            Finding("dead writer", marker.run_id, "mark the run crashed", done=True)
                        )
            finished = True
        except Exception as exc:  # never stop a store from opening; doctor will say more
            log.warning("tracker: could not recover run %s: %s", marker.run_id, exc)
        finally:
            lock.release(finished=finished)
    for finding in findings:
        if finding.done:
            log.info("tracker: recovery: %s", finding)
    return findings
