"""Compaction and retention: replace a run's segments by read-optimised files, atomically.

For each rank, under its lock (never while a live writer holds it):

1. recover the rank (register segments a crash left unregistered, so they are included);
2. write the new files (compacted.py) durably, like any segment; the old ones stay registered;
3. swap in one catalog transaction: insert the new rows, mark the old ones superseded;
4. delete the superseded files, then their rows.

A crash before 3 leaves only unregistered compacted files, which recovery deletes; after 3, only
superseded rows, whose files recovery deletes. Readers that have a superseded file open keep
reading it (POSIX unlink); a reader that finds a registered file gone re-reads the catalog.

Retention (``snapshot_every``) is the same operation with a filter: snapshots at steps that are
not multiples of ``snapshot_every`` are left out of the new files; stats and histograms are kept.
"""

from __future__ import annotations

import bisect
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from tracker.catalog import Segment
from tracker.errors import InvalidArgumentError, NotFoundError
from tracker.store import segment as seg
from tracker.store.backend import check_run_id, new_file_name, rank_folder
from tracker.store.codecs import ARCHIVE_COMPRESSION, check_compression
from tracker.store.compacted import (
    SNAPSHOT_FILE_MAX_BYTES,
    SNAPSHOT_FILE_MIN_BYTES,
    SnapshotPlan,
    SnapshotPlanner,
    StatsGatherer,
    list_snapshots,
    write_snapshots_file,
    write_stats_file,
)
from tracker.store.hdf5image import require_free_space
from tracker.store.locks import RunLock
from tracker.store.recovery import recover_rank
from tracker.version import __version__

if TYPE_CHECKING:
    from tracker.store import Store

log = logging.getLogger("tracker")

# The stats file is read far more often than written. Its stats rows stay uncompressed and
# contiguous: a series is one plain read, 2x np.load of the same array, where blosc-lz4 (3.6x
# smaller) made it 4x (bench/store.py). Histograms are read whole and densified (512 counts
# each), so decompressing them is cheap by comparison, and they are most of the file.
STATS_COMPRESSION = "none"
HISTOGRAM_COMPRESSION = "blosc-lz4"
_OPEN_SOURCES = 64


@dataclass
class CompactionResult:
    """What compaction did to one run."""

    run_id: str
    files_before: int = 0
    bytes_before: int = 0
    files_after: int = 0
    bytes_after: int = 0
    snapshots_dropped: int = 0
    changed: bool = False

    def __str__(self) -> str:
        if not self.changed:
            return f"{self.run_id}: nothing to do ({self.files_before} files)"
        dropped = f", {self.snapshots_dropped} snapshots dropped" if self.snapshots_dropped else ""
        return (
            f"{self.run_id}: {self.files_before} files ({_mib(self.bytes_before)}) -> "
            f"{self.files_after} files ({_mib(self.bytes_after)}){dropped}"
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class _Sources:
    """The files being compacted, opened on demand, a bounded number at a time."""

    def __init__(self, store: Store, rows: Sequence[Segment]) -> None:
        self._store = store
        self.rows = list(rows)
        self._open: OrderedDict[int, h5py.File] = OrderedDict()

    def __call__(self, i: int) -> h5py.File:
        f = self._open.get(i)
        if f is None:
            f = self._open[i] = self._store.files.open(self.rows[i].path)
            while len(self._open) > _OPEN_SOURCES:
                self._open.popitem(last=False)[1].close()
        self._open.move_to_end(i)
        return f

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


def compact_run(
    store: Store,
    run_id: str,
    ranks: Sequence[int] | None = None,
    snapshot_every: int | None = None,
    snapshot_compression: str = ARCHIVE_COMPRESSION,
    stats_compression: str = STATS_COMPRESSION,
) -> CompactionResult:
    """Compact (and with ``snapshot_every``, thin) a run; RunBusyError if it is being written."""
    check_run_id(run_id)
    check_compression(snapshot_compression)
    check_compression(stats_compression)
    if snapshot_every is not None and (
        isinstance(snapshot_every, bool)
        or not isinstance(snapshot_every, int)
        or snapshot_every < 1
    ):
        raise InvalidArgumentError(f"snapshot_every must be an int >= 1, got {snapshot_every!r}")
    if store.catalog.get_run(run_id) is None:
        raise NotFoundError(f"no run with id {run_id!r}")
    result = CompactionResult(run_id)
    for rank in store.catalog.ranks(run_id) if ranks is None else ranks:
        with RunLock(store.root, run_id, rank, "compaction"):
            recover_rank(store, run_id, rank)
            # HDF5 crashes the process on a full disk (hdf5image.py): never start one that would.
            sources = sum(r.nbytes for r in store.catalog.segments(run_id, rank))
            scratch = store.files.scratch_dir(rank_folder(run_id, rank))
            require_free_space(scratch, sources, f"compacting run {run_id}")
            _compact_rank(
                store, run_id, rank, result, snapshot_every, snapshot_compression, stats_compression
            )
    return result


def _epoch_finder(store: Store, run_id: str) -> Callable[[int], int | None]:
    epochs = sorted((e.first_step, e.last_step, e.epoch) for e in store.catalog.epochs(run_id))
    firsts = [e[0] for e in epochs]

    def epoch_of(step: int) -> int | None:
        i = bisect.bisect_right(firsts, step) - 1
        if i >= 0 and step <= epochs[i][1]:
            return epochs[i][2]
        return None

    return epoch_of


def _compact_rank(
    store: Store,
    run_id: str,
    rank: int,
    result: CompactionResult,
    snapshot_every: int | None,
    snapshot_compression: str,
    stats_compression: str,
) -> None:
    rows = store.catalog.segments(run_id, rank)
    result.files_before += len(rows)
    result.bytes_before += sum(r.nbytes for r in rows)
    keep: Callable[[int], bool] = lambda step: True  # noqa: E731
    if snapshot_every is not None:
        every = snapshot_every
        keep = lambda step: step % every == 0  # noqa: E731
    sources = _Sources(store, rows)
    new_rows: list[dict[str, Any]] = []
    swapping = False
    try:
        stats_sources = [i for i, r in enumerate(rows) if r.kind in (seg.SEGMENT, seg.STATS)]
        if all(rows[i].kind == seg.STATS for i in stats_sources) and len(stats_sources) < 2:
            stats_sources = []  # one stats file already: nothing to merge
        snapshot_sources = [
            i
            for i, r in enumerate(rows)
            if r.kind == seg.SEGMENT
            or (r.kind == seg.SNAPSHOTS and snapshot_every is not None and _drops(sources(i), keep))
        ]
        replaced = sorted(set(stats_sources) | set(snapshot_sources))
        if not replaced:
            result.files_after += len(rows)
            result.bytes_after += sum(r.nbytes for r in rows)
            return
        if stats_sources:
            new_rows += _write_stats(store, run_id, rank, sources, stats_sources, stats_compression)
        planner = SnapshotPlanner(
            _epoch_finder(store, run_id), SNAPSHOT_FILE_MIN_BYTES, SNAPSHOT_FILE_MAX_BYTES
        )
        for i in snapshot_sources:
            for group in list_snapshots(sources(i), i):
                kept = [ref for ref in group if keep(ref.step)]
                result.snapshots_dropped += len(group) - len(kept)
                if kept:
                    planner.add(kept)
        for plan in planner.plans():
            new_rows.append(
                _write_snapshots(store, run_id, rank, sources, plan, snapshot_compression)
            )
        swapping = True
        store.catalog.swap_segments(run_id, new_rows, [rows[i].id for i in replaced])
    except BaseException:
        # Unregistered new files go now; if the swap itself failed we cannot know whether it
        # committed, so they stay for recovery, which asks the catalog (the lock file remains).
        if not swapping:
            for row in new_rows:
                store.files.delete(row["path"])
        raise
    finally:
        sources.close()
    result.changed = True
    for i in replaced:
        store.files.delete(rows[i].path)
    store.catalog.forget_segments([rows[i].id for i in replaced])
    gone = set(replaced)
    kept_rows = [r for i, r in enumerate(rows) if i not in gone]
    result.files_after += len(kept_rows) + len(new_rows)
    result.bytes_after += sum(r.nbytes for r in kept_rows) + sum(r["nbytes"] for r in new_rows)


def _write_snapshots(
    store: Store, run_id: str, rank: int, sources: _Sources, plan: SnapshotPlan, compression: str
) -> dict[str, Any]:
    file_id, name = new_file_name(plan.step_min, plan.step_max, "snapshots")
    relpath = f"{rank_folder(run_id, rank)}/{name}"
    attrs = seg.root_attrs(
        seg.SNAPSHOTS, run_id, rank, plan.step_min, plan.step_max, file_id, __version__
    )
    stored = store.files.put(
        relpath, lambda path: write_snapshots_file(path, plan, sources, attrs, compression)
    )
    row = _row(file_id, rank, seg.SNAPSHOTS, plan.step_min, plan.step_max, plan.n_steps)
    return row | {"path": relpath, "nbytes": stored.nbytes, "checksum": stored.checksum}


def _drops(f: h5py.File, keep: Callable[[int], bool]) -> bool:
    """True if a snapshots file holds any step ``keep`` rejects."""
    for key in seg.series_keys(f):
        steps = seg.snapshot_entries(f, key)[:, 0]
        if not all(keep(int(s)) for s in np.unique(steps)):
            return True
    return False


def _row(file_id: str, rank: int, kind: str, lo: int, hi: int, n_steps: int) -> dict[str, Any]:
    return {
        "id": file_id,
        "rank": rank,
        "kind": kind,
        "step_min": lo,
        "step_max": hi,
        "n_steps": n_steps,
        "schema_version": seg.SCHEMA_VERSION,
    }


def _write_stats(
    store: Store,
    run_id: str,
    rank: int,
    sources: _Sources,
    stats_sources: list[int],
    compression: str,
) -> list[dict[str, Any]]:
    # The reader's own selection, so the precomputed default rows are exactly what it would pick.
    from tracker.reader import _select_rows

    folder = store.files.scratch_dir(rank_folder(run_id, rank))
    scratch = folder / f"scratch-{uuid.uuid4().hex[:8]}.h5.tmp"
    gatherer = StatsGatherer(scratch, lambda index: _select_rows(index, None))
    try:
        for i in stats_sources:
            gatherer.add_file(sources(i))
        if not gatherer.steps:
            return []
        lo, hi = min(gatherer.steps), max(gatherer.steps)
        file_id, name = new_file_name(lo, hi, "stats")
        relpath = f"{rank_folder(run_id, rank)}/{name}"
        attrs = seg.root_attrs(seg.STATS, run_id, rank, lo, hi, file_id, __version__)
        stored = store.files.put(
            relpath,
            lambda path: write_stats_file(
                path, gatherer, attrs, compression, HISTOGRAM_COMPRESSION
            ),
        )
    finally:
        gatherer.close()
    row = _row(file_id, rank, seg.STATS, lo, hi, len(gatherer.steps))
    return [row | {"path": relpath, "nbytes": stored.nbytes, "checksum": stored.checksum}]


def compact_after_finish(store: Store, run_id: str, rank: int) -> CompactionResult | None:
    """Compact a run's rank as it finishes; never raises (I1), logs instead."""
    started = time.monotonic()
    try:
        result = compact_run(store, run_id, ranks=[rank])
    except Exception as exc:
        log.warning("tracker: could not compact run %s (tracker compact retries): %s", run_id, exc)
        return None
    log.info("tracker: compacted %s in %.1f s", result, time.monotonic() - started)
    return result


def retention_candidates(store: Store, older_than_days: float) -> list[str]:
    """Runs that ended more than ``older_than_days`` ago (running runs never qualify)."""
    if older_than_days < 0:
        raise InvalidArgumentError(f"older_than_days must be >= 0, got {older_than_days!r}")
    cutoff = datetime.now(timezone.utc) - timedelta(days=older_than_days)
    return [
        run.id
        for run, _ in store.catalog.runs()
        if run.status != "running" and (run.ended_at or run.updated_at) <= cutoff
    ]


def count_droppable(store: Store, run_id: str, snapshot_every: int) -> int:
    """How many snapshots retention with ``snapshot_every`` would remove from a run (read-only)."""
    dropped = 0
    for row in store.catalog.segments(run_id, kinds=(seg.SEGMENT, seg.SNAPSHOTS)):
        with store.files.open(row.path) as f:
            for key in seg.series_keys(f):
                steps = seg.snapshot_entries(f, key)[:, 0]
                dropped += int(np.count_nonzero(steps % snapshot_every))
    return dropped
