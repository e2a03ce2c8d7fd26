"""The read-optimised files compaction writes: one stats file per run, snapshot files per epoch.

A stats file (content "stats") holds every stats row and histogram of a run and rank::

    /series/<layer>/<quantity>/<part>/
        steps, calls, flags int64 (r,)    the rows, default rows first (see below)
        order               int64 (r,)    each stored row's position among the rows as written
        stats               float64 (S, r) one row per stat: one stat over the run is contiguous
        latest              float64 (S,)  attrs step: what reader.latest() found in the segments
                                          (the newest one's last default row), for the layer table
        hist_index, hist_ptr, hist_bins, hist_counts   as in a segment, rows as written
      attrs default_rows [m, first, stride]: the first m stored rows are exactly what a read
      with call=None, probe=False selects (reader._select_rows), in step order; their steps are
      first, first + stride, ... when they form such a range (stride 0: they do not)

so a series over 100,000 steps is one contiguous read instead of one read per segment file, and
``order`` restores the written order for every other selection, which then matches the segments
row for row. A snapshots file (content "snapshots") holds the snapshots of an epoch (short epochs
share one, long ones are split) in the segment layout, each compressed on its own.

Histograms stay in the run-level file because they are read whole (a steps x bins heatmap);
snapshots are read one step at a time, which the catalog finds by step range, and retention
rewrites them an epoch at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tracker.names import STAT_NAMES, encode
from tracker.store.codecs import dataset_options
from tracker.store.segment import (
    STATS,
    SeriesKey,
    content,
    put_array,
    read_histograms_sparse,
    read_snapshot_raw,
    read_stats,
    series_keys,
    snapshot_entries,
    snapshot_sizes,
    stored_latest,
    write_snapshots,
)

# Snapshot files hold an epoch each, but short epochs share a file of at least MIN bytes, and long
# ones are split at MAX, so retention rewrites bounded files and a run is not thousands of files.
SNAPSHOT_FILE_MIN_BYTES = 32 << 20
SNAPSHOT_FILE_MAX_BYTES = 256 << 20
_BUFFER_BYTES = 64 << 20  # rows gathered in memory before they spill to a scratch file
_CHUNK_ROWS = 1 << 16

Selector = Callable[[np.ndarray], np.ndarray]  # index (r, 3) -> default rows (reader)


@dataclass
class _Rows:
    """Rows of one series gathered so far, in the order written."""

    index: list[np.ndarray] = field(default_factory=list)
    stats: list[np.ndarray] = field(default_factory=list)
    hist_index: list[np.ndarray] = field(default_factory=list)
    hist_lengths: list[np.ndarray] = field(default_factory=list)
    hist_bins: list[np.ndarray] = field(default_factory=list)
    hist_counts: list[np.ndarray] = field(default_factory=list)
    latest: tuple[int, np.ndarray] | None = None  # the newest file's last default row

    def parts(self) -> dict[str, list[np.ndarray]]:
        return {
            "index": self.index,
            "stats": self.stats,
            "hist_index": self.hist_index,
            "hist_lengths": self.hist_lengths,
            "hist_bins": self.hist_bins,
            "hist_counts": self.hist_counts,
        }


_EMPTY: dict[str, np.ndarray] = {
    "index": np.empty((0, 3), np.int64),
    "stats": np.empty((0, len(STAT_NAMES)), np.float64),
    "hist_index": np.empty((0, 3), np.int64),
    "hist_lengths": np.empty(0, np.int64),
    "hist_bins": np.empty(0, np.uint16),
    "hist_counts": np.empty(0, np.int64),
}


class StatsGatherer:
    """Collects the stats rows and histograms of many files, in bounded memory.

    Rows stay in memory up to _BUFFER_BYTES, then spill to ``scratch`` (an HDF5 file that
    recovery deletes like any temporary file if the process dies).
    """

    def __init__(self, scratch: Path, select_default: Selector) -> None:
        self.scratch_path = scratch
        self._select = select_default
        self._scratch: h5py.File | None = None
        self._rows: dict[SeriesKey, _Rows] = {}
        self._order: list[SeriesKey] = []
        self._buffered = 0
        self.steps: set[int] = set()

    def add_file(self, f: h5py.File) -> None:
        """Append every series' rows of one segment or stats file."""
        for key in series_keys(f):
            stats = read_stats(f, key)
            hists = read_histograms_sparse(f, key)
            if stats is None and hists is None:
                continue
            rows = self._rows.get(key)
            if rows is None:
                rows = self._rows[key] = _Rows()
                self._order.append(key)
            if content(f) == STATS:
                rows.latest = stored_latest(f, key) or rows.latest
            elif stats is not None and len(chosen := self._select(stats[0])):
                rows.latest = (int(stats[0][chosen[-1], 0]), stats[1][chosen[-1]].copy())
            if stats is not None:
                rows.index.append(stats[0])
                rows.stats.append(stats[1])
                self.steps.update(np.unique(stats[0][:, 0]).tolist())
                self._buffered += stats[0].nbytes + stats[1].nbytes
            if hists is not None:
                index, ptr, bins, counts = hists
                rows.hist_index.append(index)
                rows.hist_lengths.append(np.diff(ptr))
                rows.hist_bins.append(bins)
                rows.hist_counts.append(counts)
                self.steps.update(np.unique(index[:, 0]).tolist())
                self._buffered += index.nbytes + ptr.nbytes + bins.nbytes + counts.nbytes
        if self._buffered > _BUFFER_BYTES:
            self._spill()

    def _spill(self) -> None:
        if self._scratch is None:
            self._scratch = h5py.File(self.scratch_path, "w", libver=("v110", "latest"))
        for i, key in enumerate(self._order):
            group = self._scratch.require_group(str(i))
            for name, parts in self._rows[key].parts().items():
                if not parts:
                    continue
                data = np.concatenate(parts)
                parts.clear()
                if name not in group:
                    shape = (0, *data.shape[1:])
                    group.create_dataset(
                        name, shape=shape, maxshape=(None, *data.shape[1:]), dtype=data.dtype,
                        chunks=(max(1, min(_CHUNK_ROWS, len(data))), *data.shape[1:]),
                    )  # fmt: skip
                d = group[name]
                d.resize(d.shape[0] + len(data), axis=0)
                d[-len(data) :] = data
        self._buffered = 0

    def select_default(self, index: np.ndarray) -> np.ndarray:
        """Rows a read with call=None, probe=False selects (the reader's own rule)."""
        return self._select(index)

    def series(self) -> list[SeriesKey]:
        """Series keys in the order first seen."""
        return list(self._order)

    def latest(self, key: SeriesKey) -> tuple[int, np.ndarray] | None:
        """What reader.latest() would find for ``key`` among the files added."""
        return self._rows[key].latest

    def take(self, key: SeriesKey) -> dict[str, np.ndarray]:
        """All rows of one series, in the order added (spilled ones first, as they came first)."""
        rows = self._rows[key]
        out: dict[str, np.ndarray] = {}
        spilled = None
        if self._scratch is not None:
            spilled = self._scratch.get(str(self._order.index(key)))
        for name, parts in rows.parts().items():
            pieces = []
            if spilled is not None and name in spilled:
                pieces.append(spilled[name][()])
            pieces.extend(parts)
            out[name] = np.concatenate(pieces) if pieces else _EMPTY[name]
        return out

    def close(self) -> None:
        """Close and delete the scratch file."""
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
        self.scratch_path.unlink(missing_ok=True)


def _put_column(
    group: h5py.Group, name: str, data: np.ndarray, options: dict[str, Any]
) -> h5py.Dataset:
    """A dataset contiguous if not compressed, else chunked along the axis of rows (the last
    axis of the (S, r) stats, the first of an (h, 3) index) so one stat is its own chunks."""
    if not options or data.size == 0:
        return put_array(group, name, data)
    if data.ndim == 2 and data.shape[1] == 3:  # an index: rows are the first axis
        chunks: tuple[int, ...] = (min(len(data), _CHUNK_ROWS), 3)
    else:
        chunks = (*([1] * (data.ndim - 1)), min(data.shape[-1], _CHUNK_ROWS))
    return group.create_dataset(name, data=data, chunks=chunks, **options)


def _default_rows(steps: np.ndarray) -> np.ndarray:
    """[m, first, stride], stride 0 unless ``steps`` is an arithmetic range (stats every k steps:
    the usual case, which then needs no read of the steps at all)."""
    m = len(steps)
    first = int(steps[0]) if m else 0
    stride = int(steps[1] - steps[0]) if m > 1 else 1
    if m > 1 and (stride <= 0 or not np.array_equal(steps, first + stride * np.arange(m))):
        stride = 0
    return np.asarray([m, first, stride], dtype=np.int64)


def write_stats_file(
    path: str,
    gathered: StatsGatherer,
    attrs: dict[str, Any],
    compression: str,
    histogram_compression: str,
) -> None:
    """Write everything ``gathered`` as a compacted stats file (layout in the module docstring).

    ``compression`` applies to the stats rows, ``histogram_compression`` to the histograms.
    """
    options = dataset_options(compression)
    hist_options = dataset_options(histogram_compression)
    with h5py.File(path, "w", libver=("v110", "latest")) as f:
        f.attrs.update(attrs)
        series = f.create_group("series")
        for key in gathered.series():
            layer, quantity, part = key
            rows = gathered.take(key)
            g = (
                series.require_group(encode(layer))
                .require_group(quantity)
                .create_group(encode(part))
            )
            index, stats = rows["index"], rows["stats"]
            default = gathered.select_default(index)
            rest = np.setdiff1d(np.arange(len(index)), default, assume_unique=True)
            order = np.concatenate([default, rest]).astype(np.int64)
            stored = index[order]
            g.attrs["default_rows"] = _default_rows(stored[: len(default), 0])
            for i, name in enumerate(("steps", "calls", "flags")):
                _put_column(g, name, stored[:, i], options)
            _put_column(g, "order", order, options)
            _put_column(g, "stats", np.ascontiguousarray(stats[order].T), options)
            found = gathered.latest(key)
            if found is not None:
                latest = put_array(g, "latest", found[1])
                latest.attrs["step"] = found[0]
            if len(rows["hist_index"]):
                ptr = np.concatenate([[0], np.cumsum(rows["hist_lengths"])]).astype(np.int64)
                _put_column(g, "hist_index", rows["hist_index"], hist_options)
                _put_column(g, "hist_ptr", ptr, hist_options)
                _put_column(g, "hist_bins", rows["hist_bins"], hist_options)
                _put_column(g, "hist_counts", rows["hist_counts"], hist_options)


# -- snapshots ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotRef:
    """Where one snapshot is now: source file number, series, step, call, flags, size."""

    source: int
    key: SeriesKey
    step: int
    call: int
    flags: int
    nbytes: int


@dataclass
class SnapshotPlan:
    """The snapshots that will go into one snapshots file."""

    bucket: int | None  # epoch of the last snapshot added (None: outside any logged epoch)
    refs: list[SnapshotRef] = field(default_factory=list)
    nbytes: int = 0

    @property
    def step_min(self) -> int:
        return min(r.step for r in self.refs)

    @property
    def step_max(self) -> int:
        return max(r.step for r in self.refs)

    @property
    def n_steps(self) -> int:
        return len({r.step for r in self.refs})


def list_snapshots(f: h5py.File, source: int) -> Iterator[list[SnapshotRef]]:
    """The snapshots of a file, grouped by (series, step): a group never splits across files."""
    for key in series_keys(f):
        entries = snapshot_entries(f, key)
        if not len(entries):
            continue
        sizes = snapshot_sizes(f, key)
        refs = [
            SnapshotRef(source, key, int(step), int(call), int(flags), int(nbytes))
            for (step, call, flags), nbytes in zip(entries, sizes, strict=True)
        ]
        for _, same_step in itertools.groupby(refs, key=lambda r: r.step):
            yield list(same_step)


class SnapshotPlanner:
    """Assigns snapshots to files: epoch by epoch in step order, a new file at an epoch boundary
    once the current one holds ``min_bytes`` (so short epochs share a file) and whenever it would
    exceed ``max_bytes`` (so long epochs are split).

    A (series, step) group is never split. A second copy of a (series, step) from another source
    (a step logged twice) goes to a file of its own, created after: the reader takes a step from
    the first file that has it, as it did from the segments.
    """

    def __init__(
        self, epoch_of: Callable[[int], int | None], min_bytes: int, max_bytes: int
    ) -> None:
        self._epoch_of = epoch_of
        self._min_bytes = min_bytes
        self._max_bytes = max_bytes
        self._groups: list[list[SnapshotRef]] = []
        self._again: list[list[SnapshotRef]] = []
        self._seen: set[tuple[SeriesKey, int]] = set()

    def add(self, group: list[SnapshotRef]) -> None:
        first = group[0]
        if (first.key, first.step) in self._seen:
            self._again.append(group)
        else:
            self._seen.add((first.key, first.step))
            self._groups.append(group)

    def plans(self) -> list[SnapshotPlan]:
        """The files to write, in order."""

        def where(group: list[SnapshotRef]) -> tuple[int, int, int]:
            epoch = self._epoch_of(group[0].step)
            return (epoch is None, -1 if epoch is None else epoch, group[0].step)

        plans: list[SnapshotPlan] = []
        current: SnapshotPlan | None = None
        for group in sorted(self._groups, key=where):  # stable: sources' order within a step
            epoch = self._epoch_of(group[0].step)
            size = sum(r.nbytes for r in group)
            if (
                current is None
                or (current.refs and current.nbytes + size > self._max_bytes)
                or (epoch != current.bucket and current.nbytes >= self._min_bytes)
            ):
                current = SnapshotPlan(epoch)
                plans.append(current)
            current.bucket = epoch
            current.refs.extend(group)
            current.nbytes += size
        for group in self._again:
            again = SnapshotPlan(self._epoch_of(group[0].step), list(group))
            again.nbytes = sum(r.nbytes for r in group)
            plans.append(again)
        return plans


def write_snapshots_file(
    path: str,
    plan: SnapshotPlan,
    open_source: Callable[[int], h5py.File],
    attrs: dict[str, Any],
    compression: str,
) -> None:
    """Copy the planned snapshots into a snapshots file, compressing them with ``compression``."""
    options = dataset_options(compression)
    by_key: dict[SeriesKey, list[SnapshotRef]] = {}
    for ref in plan.refs:
        by_key.setdefault(ref.key, []).append(ref)
    with h5py.File(path, "w", libver=("v110", "latest")) as f:
        f.attrs.update(attrs)
        series = f.create_group("series")
        for (layer, quantity, part), refs in by_key.items():
            g = (
                series.require_group(encode(layer))
                .require_group(quantity)
                .create_group(encode(part))
            )
            entries = []
            for ref in refs:
                found = read_snapshot_raw(open_source(ref.source), ref.key, ref.step, ref.call)
                if found is None:
                    raise FileNotFoundError(f"snapshot {ref} vanished from its source")
                entries.append((ref.step, ref.call, ref.flags, found[0]))
            write_snapshots(g, entries, options)
