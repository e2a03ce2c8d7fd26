"""The HDF5 segment file: an immutable, self-describing batch of steps of one run and rank.

Layout (``schema_version`` 3; no pickles, only numeric datasets and string attributes, I3)::

    /                       attrs: format, schema_version, content, segment_id, run_id, rank,
                                   step_min, step_max, created, stat_names, tracker_version,
                                   layer_shapes (JSON)
    /steps                  int64 (n,)          steps that have tensor data in this file
    /keys                   uint8 (b,)          UTF-8 JSON [[layer, quantity, part], ...]: series k
    /rows/ptr               int64 (K + 1,)      series k's stats rows are rows ptr[k]:ptr[k + 1]
    /rows/index             int64 (r, 3)        step, call, flags of each stats row
    /rows/stats             float64 (r, S)      one row of STAT_NAMES per (step, call)
    /hists/series_ptr       int64 (K + 1,)      series k's histograms: hists rows sp[k]:sp[k + 1]
    /hists/index            int64 (h, 3)        step, call, flags of each histogram
    /hists/ptr              int64 (h + 1,)      histogram i's bins are bins[ptr[i]:ptr[i + 1]]
    /hists/bins             uint16 (nnz,)       non-empty binade bins (histogram.py)
    /hists/counts           int64 (nnz,)
    /snaps/series_ptr       int64 (K + 1,)      series k's snapshots: snaps rows sp[k]:sp[k + 1]
    /snaps/index            int64 (q, 3)        step, call, flags, sorted within a series
    /snaps/info             int64 (q, 3 + 2D)   type, byte offset, ndim, stored shape, full shape
    /snaps/data             uint8 (bytes,)      every snapshot's C-order bytes, one after another
      attrs types: JSON [[dtype name, NumPy dtype], ...] that the type column indexes
    /batch/metrics/<name>/  steps, values, epochs (-1: none), times: the run.log() scalars
    /batch/epochs           int64 (e, 3)        epoch, first step, last step

Every series' rows sit in a few shared tables rather than in datasets of their own: each HDF5
object costs a write ~20-60 us and h5py holds the GIL the training thread needs while it
writes, so a segment of a 36-series model fell from ~370 datasets to ~20 (bench/README.md).
A series is still one contiguous slice of each table, so reading one costs a few small reads.
Schema 2 segments (a group per series under /series, as compacted files still are) stay
readable, and schema 1 ones (before content and batch existed) read as schema 2 segments.

``content`` is "segment" for what the writer produces. Compaction (compacted.py) writes "stats"
files (columnar stats and histograms over a whole run) and "snapshots" files (the snapshots of an
epoch); the read functions here answer the same questions for all three, so the reader does not
care which it has. Schema 1 files (before content and batch existed) read as segments.

The batch repeats what the catalog transaction that registers the file inserts, so recovery can
register a file whose writer died between the rename and the commit without losing its metrics.
Snapshot metadata sits in per-series tables rather than in attributes of each snapshot (schema 1):
three HDF5 attributes cost more than writing a 256 KiB snapshot (bench/store.py).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import h5py
import numpy as np

from tracker.capture.block import StepBlock, Summary
from tracker.capture.histrows import HistogramRows, offsets
from tracker.capture.snapshot import Snapshot, decode_snapshot
from tracker.errors import SchemaVersionError, StoreError
from tracker.names import STAT_NAMES, check_name, check_quantity, decode, encode
from tracker.store.codecs import dataset_options
from tracker.store.hdf5image import write_image

FORMAT = "tracker-segment"
SCHEMA_VERSION = 3
SEGMENT: Final = "segment"  # a batch of steps, as the writer wrote it
STATS: Final = "stats"  # compacted: stats and histograms of a run
SNAPSHOTS: Final = "snapshots"  # compacted: snapshots of an epoch
TOPK: Final = "topk"  # the top-k inputs per channel of one pass (tracker/topk/files.py)
CONTENTS: Final = (SEGMENT, STATS, SNAPSHOTS, TOPK)
SeriesKey = tuple[str, str, str]  # layer, quantity, part
# One metric value of a batch: name, step, value, epoch (None if not given), time.
MetricTuple = tuple[str, int, float, int | None, float]


@dataclass
class SeriesColumns:
    """One series' rows in a segment, in the order they were added."""

    index: np.ndarray  # int64 (r, 3): step, call, flags
    stats: np.ndarray  # float64 (r, S)
    hist_index: np.ndarray  # int64 (h, 3)
    hists: HistogramRows  # h histograms, sparse
    snapshots: dict[tuple[int, int], tuple[int, Snapshot]]  # (step, call) -> (flags, snapshot)


@dataclass
class Batch:
    """The catalog side of a segment: metrics, epochs and layer shapes of its steps."""

    metrics: list[MetricTuple] = field(default_factory=list)
    epochs: dict[int, tuple[int, int]] = field(default_factory=dict)
    shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)


class SegmentBuilder:
    """Accumulates step records in memory until the writer rolls them into one file.

    Steps are kept as the column blocks the stats worker made (block.py) and cut into series
    only when the file is written: blocks of one layout are stacked and sliced per series in a
    few NumPy calls, instead of a Python append per tensor per step.
    """

    def __init__(self, run_id: str, rank: int = 0) -> None:
        self.run_id = run_id
        self.rank = rank
        self.steps: list[int] = []
        self.nbytes = 0
        self.started = time.monotonic()
        self.batch = Batch()
        self._blocks: list[tuple[int, StepBlock]] = []

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def step_min(self) -> int:
        return min(self.steps)

    @property
    def step_max(self) -> int:
        return max(self.steps)

    def add(self, step: int, summaries: list[Summary]) -> None:
        """Append the summaries of one step, given as objects."""
        if summaries:
            self.add_block(step, StepBlock.from_summaries(summaries))

    def add_block(self, step: int, block: StepBlock) -> None:
        """Append a block of one step's summaries (kept, not copied: do not change it after)."""
        if not len(block):
            return
        if not self.steps or self.steps[-1] != step:
            self.steps.append(step)
        self._blocks.append((step, block))
        self.nbytes += 24 * len(block) + block.stats.nbytes + block.snapshot_bytes()
        if len(block.hists):  # as stored: 10 bytes per non-empty bin, 8 + 24 per histogram
            self.nbytes += 32 * len(block.hists) + 10 * block.hists.nnz

    def series(self) -> dict[SeriesKey, SeriesColumns]:
        """Every series' rows, in the order they were added (a step logged twice keeps the
        first snapshot of each call: one dataset per step and call)."""
        pieces: dict[SeriesKey, list[tuple[Any, ...]]] = {}
        width = max((len(b) for _, b in self._blocks), default=0)
        for keys, members in self._layouts().items():
            seq = np.array(members, dtype=np.int64)
            blocks = [self._blocks[i][1] for i in members]
            steps = np.array([self._blocks[i][0] for i in members], dtype=np.int64)
            stats = np.stack([b.stats for b in blocks])  # (m, n, S)
            calls = np.stack([b.calls for b in blocks])
            flags = np.stack([b.flags for b in blocks])
            per_key_hists = _histograms_by_row(blocks)
            for j, key in enumerate(keys):
                index = np.stack([steps, calls[:, j], flags[:, j]], axis=1)
                has, hists = per_key_hists(j)
                pieces.setdefault(key, []).append(
                    (seq * width + j, index, stats[:, j], seq[has] * width + j, index[has], hists)
                )
        snapshots = self._snapshots()
        out = {}
        for key, parts in pieces.items():
            if len(parts) == 1:  # one layout holds the series: its rows are in order already
                columns = list(parts[0])
            else:
                columns = [np.concatenate([p[c] for p in parts]) for c in range(5)]
                rows = np.argsort(columns[0], kind="stable")
                hist_rows = np.argsort(columns[3], kind="stable")
                columns[1:3] = [columns[1][rows], columns[2][rows]]
                columns[4] = columns[4][hist_rows]
                columns.append(HistogramRows.concat([p[5] for p in parts]).take(hist_rows))
            out[key] = SeriesColumns(
                columns[1], columns[2], columns[4], columns[5], snapshots.get(key, {})
            )
        return out

    def _layouts(self) -> dict[tuple[SeriesKey, ...], list[int]]:
        """Indices of the blocks of each layout (keys tuple): most steps share one (plan.py)."""
        groups: dict[tuple[SeriesKey, ...], list[int]] = {}
        for i, (_, block) in enumerate(self._blocks):
            groups.setdefault(block.keys, []).append(i)
        return groups

    def _snapshots(self) -> dict[SeriesKey, dict[tuple[int, int], tuple[int, Snapshot]]]:
        found: dict[SeriesKey, dict[tuple[int, int], tuple[int, Snapshot]]] = {}
        for step, block in self._blocks:
            if block.snapshots is None:
                continue
            for j, snap in enumerate(block.snapshots):
                if snap is not None:
                    mine = found.setdefault(block.keys[j], {})
                    mine.setdefault((step, int(block.calls[j])), (int(block.flags[j]), snap))
        return found


def _histograms_by_row(
    blocks: list[StepBlock],
) -> Callable[[int], tuple[np.ndarray, HistogramRows]]:
    """For blocks of one layout: row j -> (which blocks have its histogram, those histograms).

    All the blocks' histograms are joined once; each row's are then taken out of the join by
    index (plans give a step a histogram for every row, in row order, or none: plan.py).
    """
    hist_rows = np.stack([b.hist_rows for b in blocks])  # (m, n)
    first = np.cumsum([0] + [len(b.hists) for b in blocks[:-1]])
    everything = HistogramRows.concat([b.hists for b in blocks if len(b.hists)])

    def by_row(j: int) -> tuple[np.ndarray, HistogramRows]:
        has = hist_rows[:, j] >= 0
        if not has.any():
            return has, HistogramRows.empty()
        return has, everything.take((first + hist_rows[:, j])[has])

    return by_row


# -- writing --------------------------------------------------------------------------------------


def root_attrs(
    content: str,
    run_id: str,
    rank: int,
    step_min: int,
    step_max: int,
    segment_id: str,
    tracker_version: str,
) -> dict[str, Any]:
    """The attributes every stored file carries (I3: what it is, whose, which steps)."""
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "content": content,
        "segment_id": segment_id,
        "run_id": run_id,
        "rank": rank,
        "step_min": step_min,
        "step_max": step_max,
        "created": time.time(),
        "stat_names": ",".join(STAT_NAMES),
        "tracker_version": tracker_version,
    }


def put_array(
    group: h5py.Group, name: str, data: np.ndarray, options: dict[str, Any] | None = None
) -> h5py.Dataset:
    """Create dataset ``name`` holding ``data`` and return it (see write_array)."""
    data = np.ascontiguousarray(data)
    if data.ndim == 0 or data.size == 0 or options:
        return _put_with_h5py(group, name, data, options)
    return h5py.Dataset(_create_raw(group, name, data))


def write_array(
    group: h5py.Group, name: str, data: np.ndarray, options: dict[str, Any] | None = None
) -> None:
    """Create dataset ``name`` holding ``data``; uncompressed ones skip h5py's Python layers.

    h5py's create_dataset costs ~45 us per call and its Dataset wrapper alone ~25 us, HDF5 itself
    ~18 us; a segment has hundreds of small datasets, so the low-level path, without a wrapper
    nobody reads, is what lets a segment write keep up with raw writes. Names must be ASCII
    (they are URL-quoted, I5).
    """
    data = np.ascontiguousarray(data)
    if data.ndim == 0 or data.size == 0 or options:
        _put_with_h5py(group, name, data, options)
    else:
        _create_raw(group, name, data)


def _put_with_h5py(
    group: h5py.Group, name: str, data: np.ndarray, options: dict[str, Any] | None
) -> h5py.Dataset:
    if options and data.ndim and data.size:
        return group.create_dataset(name, data=data, chunks=data.shape, **options)
    return group.create_dataset(name, data=data)


# HDF5 type ids of the dtypes stored, made once: py_create costs ~10 us a call. They are
# in-memory types, not tied to a file.
_TYPE_IDS: dict[np.dtype, Any] = {}


def _create_raw(group: h5py.Group, name: str, data: np.ndarray) -> Any:
    tid = _TYPE_IDS.get(data.dtype)
    if tid is None:
        tid = _TYPE_IDS[data.dtype] = h5py.h5t.py_create(data.dtype, logical=True)
    space = h5py.h5s.create_simple(data.shape)
    dsid = h5py.h5d.create(group.id, name.encode("ascii"), tid, space)
    dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data)
    return dsid


def write_segment(
    path: str,
    builder: SegmentBuilder,
    tracker_version: str,
    segment_id: str = "",
    compression: str = "none",
) -> None:
    """Write ``builder`` as a complete segment file at ``path`` (the caller makes it durable)."""
    snapshot_options = dataset_options(compression)

    def build(f: h5py.File) -> None:
        f.attrs.update(
            root_attrs(
                SEGMENT,
                builder.run_id,
                builder.rank,
                builder.step_min,
                builder.step_max,
                segment_id,
                tracker_version,
            )
        )
        f.attrs["layer_shapes"] = json.dumps(builder.batch.shapes)
        write_array(f, "steps", np.asarray(builder.steps, dtype=np.int64))
        _write_tables(f, builder.series(), snapshot_options)
        _write_batch(f, builder.batch)

    # A full disk must be an OSError here, not a crash inside HDF5 (hdf5image.py).
    write_image(path, build, builder.nbytes)


def _write_tables(
    f: h5py.File, series: dict[SeriesKey, SeriesColumns], snapshot_options: dict[str, Any]
) -> None:
    """Every series' rows, histograms and snapshots as slices of shared tables (see above)."""
    keys = list(series)
    columns = list(series.values())
    write_array(f, "keys", np.frombuffer(json.dumps(keys).encode(), dtype=np.uint8))
    rows = f.create_group("rows")
    write_array(rows, "ptr", offsets([len(c.index) for c in columns]))
    write_array(rows, "index", _stack([c.index for c in columns], (0, 3), np.int64))
    write_array(rows, "stats", _stack([c.stats for c in columns], (0, len(STAT_NAMES)), np.float64))
    if any(len(c.hists) for c in columns):
        g = f.create_group("hists")
        write_array(g, "series_ptr", offsets([len(c.hists) for c in columns]))
        write_array(g, "index", _stack([c.hist_index for c in columns], (0, 3), np.int64))
        joined = HistogramRows.concat([c.hists for c in columns])
        write_array(g, "ptr", joined.ptr)
        write_array(g, "bins", joined.bins)
        write_array(g, "counts", joined.counts)
    if any(c.snapshots for c in columns):
        _write_packed_snapshots(f.create_group("snaps"), columns, snapshot_options)


def _write_packed_snapshots(
    g: h5py.Group, columns: list[SeriesColumns], options: dict[str, Any]
) -> None:
    entries = [sorted(c.snapshots.items()) for c in columns]
    write_array(g, "series_ptr", offsets([len(e) for e in entries]))
    flat = [(st, c, fl, snap) for series in entries for (st, c), (fl, snap) in series]
    ndim = max(snap.data.ndim for *_, snap in flat)
    info = np.zeros((len(flat), 3 + 2 * ndim), dtype=np.int64)
    types: list[tuple[str, str]] = []
    offset = 0
    for i, (_, _, _, snap) in enumerate(flat):
        kind = (snap.dtype, snap.data.dtype.str)
        if kind not in types:
            types.append(kind)
        d = snap.data.ndim
        info[i, :3] = types.index(kind), offset, d
        info[i, 3 : 3 + d] = snap.data.shape
        info[i, 3 + ndim : 3 + ndim + d] = snap.full_shape
        offset += snap.data.nbytes
    index = np.array([e[:3] for e in flat], dtype=np.int64).reshape(-1, 3)
    write_array(g, "index", index)
    write_array(g, "info", info)
    # Compressed, it is chunked, so reading one snapshot decompresses only its chunks.
    chunks = (min(offset, 1 << 18),) if options and offset else None
    data = g.create_dataset("data", shape=(offset,), dtype=np.uint8, chunks=chunks, **options)
    _fill(data, [snap.data for *_, snap in flat])
    g.attrs["types"] = json.dumps(types)


# Snapshots under this size are gathered into one buffer per write; bigger ones are written
# where they are. One write per tiny snapshot costs more than copying it, and copying a big one
# costs a fresh page per 4 KiB (~3 us each on this VM) that writing in place does not.
_GATHER_BELOW = 1 << 18


def _fill(data: h5py.Dataset, arrays: list[np.ndarray]) -> None:
    """Write ``arrays``' bytes one after another into the uint8 dataset ``data``."""
    pending: list[np.ndarray] = []
    start = position = 0

    def flush() -> None:
        if pending:
            data[start:position] = np.concatenate(pending) if len(pending) > 1 else pending[0]
            pending.clear()

    for array in arrays:
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        if len(raw) >= _GATHER_BELOW:
            flush()
            data[position : position + len(raw)] = raw
            position += len(raw)
            start = position
            continue
        if position - start + len(raw) > _GATHER_BELOW:
            flush()
            start = position
        pending.append(raw)
        position += len(raw)
    flush()


def _stack(parts: list[np.ndarray], empty: tuple[int, int], dtype: type) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(empty, dtype)


def write_snapshots(
    group: h5py.Group,
    entries: list[tuple[int, int, int, Snapshot]],
    options: dict[str, Any] | None = None,
) -> None:
    """Store one series' snapshots (step, call, flags, snapshot): data and metadata tables."""
    entries = sorted(entries, key=lambda e: (e[0], e[1]))
    snaps = group.create_group("snapshots")
    dtypes: list[str] = []
    ndim = max(len(e[3].full_shape) for e in entries)
    info = np.zeros((len(entries), 2 + ndim), dtype=np.int64)
    for i, (step, call, _, snap) in enumerate(entries):
        write_array(snaps, f"{step}.{call}", snap.data, options)
        if snap.dtype not in dtypes:
            dtypes.append(snap.dtype)
        info[i, :2] = dtypes.index(snap.dtype), len(snap.full_shape)
        info[i, 2 : 2 + len(snap.full_shape)] = snap.full_shape
    index = np.asarray([e[:3] for e in entries], dtype=np.int64)
    write_array(group, "snapshot_index", index)
    write_array(group, "snapshot_info", info)
    group.attrs["snapshot_dtypes"] = ",".join(dtypes)


def _write_batch(f: h5py.File, batch: Batch) -> None:
    if not batch.metrics and not batch.epochs:
        return
    g = f.create_group("batch")
    by_name: dict[str, list[MetricTuple]] = {}
    for m in batch.metrics:
        by_name.setdefault(m[0], []).append(m)
    metrics = g.create_group("metrics")
    for name, rows in by_name.items():
        mg = metrics.create_group(encode(name))
        write_array(mg, "steps", np.asarray([r[1] for r in rows], dtype=np.int64))
        write_array(mg, "values", np.asarray([r[2] for r in rows], dtype=np.float64))
        epochs = [-1 if r[3] is None else r[3] for r in rows]
        write_array(mg, "epochs", np.asarray(epochs, dtype=np.int64))
        write_array(mg, "times", np.asarray([r[4] for r in rows], dtype=np.float64))
    rows_e = [(e, lo, hi) for e, (lo, hi) in sorted(batch.epochs.items())]
    write_array(g, "epochs", np.asarray(rows_e, dtype=np.int64).reshape(-1, 3))


# -- reading --------------------------------------------------------------------------------------


def check_header(f: h5py.File) -> None:
    """Raise unless ``f`` is a segment this version of the tracker can read."""
    if f.attrs.get("format") != FORMAT:
        raise StoreError(f"{f.filename} is not a tracker segment file")
    version = int(f.attrs.get("schema_version", -1))
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{f.filename} has schema_version {version}; this tracker reads up to "
            f"{SCHEMA_VERSION}. Upgrade tracker to read it."
        )
    if content(f) not in CONTENTS:
        raise StoreError(f"{f.filename} has unknown content {content(f)!r}")


def content(f: h5py.File) -> str:
    """What a file holds: SEGMENT, STATS or SNAPSHOTS (schema 1 files are segments)."""
    return str(f.attrs.get("content", SEGMENT))


def read_batch(f: h5py.File) -> Batch:
    """The metrics, epochs and layer shapes a segment was committed with (empty if none)."""
    batch = Batch(shapes=json.loads(str(f.attrs.get("layer_shapes", "{}"))))
    g = f.get("batch")
    if not isinstance(g, h5py.Group):
        return batch
    for name, mg in g["metrics"].items():
        steps, values = mg["steps"][()], mg["values"][()]
        epochs, times = mg["epochs"][()], mg["times"][()]
        for i in range(len(steps)):
            epoch = None if epochs[i] < 0 else int(epochs[i])
            batch.metrics.append(
                (decode(name), int(steps[i]), float(values[i]), epoch, float(times[i]))
            )
    for e, lo, hi in g["epochs"][()]:
        batch.epochs[int(e)] = (int(lo), int(hi))
    return batch


def _group(f: h5py.File, key: SeriesKey) -> h5py.Group | None:
    layer, quantity, part = key
    path = f"series/{encode(layer)}/{quantity}/{encode(part)}"
    g = f.get(path)
    return g if isinstance(g, h5py.Group) else None


def series_keys(f: h5py.File) -> Iterator[SeriesKey]:
    """Every (layer, quantity, part) with data in the file."""
    slots = _packed_slots(f)
    if slots is not None:
        yield from slots
        return
    series = f.get("series")
    if series is None:
        return
    for layer, lg in series.items():
        for quantity, qg in lg.items():
            for part in qg:
                yield decode(layer), quantity, decode(part)


# Series slots of packed segments recently read, by (file name, segment id, created): the files
# are immutable, and a reader asks one file for many series.
_SLOTS: OrderedDict[tuple[str, str, float], dict[SeriesKey, int]] = OrderedDict()
_SLOTS_LOCK = threading.Lock()
_SLOTS_KEPT = 256


def _packed_slots(f: h5py.File) -> dict[SeriesKey, int] | None:
    """{series key: k} of a schema 3 segment, None for any other file."""
    if "keys" not in f:
        return None
    ident = (f.filename, str(f.attrs.get("segment_id", "")), float(f.attrs.get("created", 0)))
    with _SLOTS_LOCK:
        found = _SLOTS.get(ident)
        if found is not None:
            _SLOTS.move_to_end(ident)
            return found
    keys = json.loads(f["keys"][()].tobytes().decode())
    found = {(str(a), str(b), str(c)): k for k, (a, b, c) in enumerate(keys)}
    with _SLOTS_LOCK:
        _SLOTS[ident] = found
        while len(_SLOTS) > _SLOTS_KEPT:
            _SLOTS.popitem(last=False)
    return found


def check_tables(f: h5py.File) -> None:
    """Raise StoreError unless a packed segment's tables agree with each other (for files that
    come from elsewhere: an upload must not leave the server a file its reads trip over)."""
    if "keys" not in f:
        return
    try:
        keys = json.loads(f["keys"][()].tobytes().decode())
    except (ValueError, UnicodeDecodeError, TypeError):
        raise StoreError("its series keys are not UTF-8 JSON") from None
    if not isinstance(keys, list) or not all(
        isinstance(k, list) and len(k) == 3 and all(isinstance(x, str) for x in k) for k in keys
    ):
        raise StoreError("its series keys must be a list of [layer, quantity, part] strings")
    for layer, quantity, part in keys:
        check_name(layer, "layer name")
        check_quantity(quantity)
        check_name(part, "part name")
    if len({tuple(k) for k in keys}) != len(keys):
        raise StoreError("a series key appears twice")
    _check_ptr(f, "rows/ptr", len(keys), len(f["rows/index"]), len(f["rows/stats"]))
    if "hists" in f:
        n_hists = len(f["hists/index"])
        _check_ptr(f, "hists/series_ptr", len(keys), n_hists, len(f["hists/ptr"]) - 1)
        _check_ptr(f, "hists/ptr", n_hists, len(f["hists/bins"]), len(f["hists/counts"]))
    if "snaps" in f:
        _check_ptr(f, "snaps/series_ptr", len(keys), len(f["snaps/index"]), len(f["snaps/info"]))
        info, size = f["snaps/info"][()], f["snaps/data"].shape[0]
        types = json.loads(str(f["snaps"].attrs["types"]))
        ndim = (info.shape[1] - 3) // 2 if info.ndim == 2 else -1
        if ndim < 0 or ((info[:, 0] < 0) | (info[:, 0] >= len(types))).any():
            raise StoreError("its snapshot table is malformed")
        for row in info:
            if not 0 <= row[2] <= ndim:
                raise StoreError("a snapshot lies outside the snapshot data")
            _, dtype, start, shape, _ = _decode_info(row, types)
            end = start + dtype.itemsize * math.prod(shape)
            if start < 0 or min(shape, default=0) < 0 or end > size:
                raise StoreError("a snapshot lies outside the snapshot data")


def _check_ptr(f: h5py.File, name: str, n: int, *rows: int) -> None:
    """``name`` must be n + 1 non-decreasing offsets from 0 to ``rows`` (each table's length)."""
    ptr = f[name][()]
    if (
        ptr.shape != (n + 1,)
        or ptr[0] != 0
        or (np.diff(ptr) < 0).any()
        or set(rows) != {int(ptr[-1])}
    ):
        raise StoreError(f"its {name} does not match its tables")


def _packed_range(f: h5py.File, table: str, key: SeriesKey) -> tuple[int, int] | None:
    """(first, stop) rows of ``key`` in a packed table ("rows/ptr", "hists/series_ptr", ...);
    None if the file is not packed or the series has none there."""
    slots = _packed_slots(f)
    if slots is None or key not in slots or table not in f:
        return None
    k = slots[key]
    lo, hi = (int(x) for x in f[table][k : k + 2])
    return (lo, hi) if hi > lo else None


def read_stats(f: h5py.File, key: SeriesKey) -> tuple[np.ndarray, np.ndarray] | None:
    """(index (r, 3), stats (r, S)) of a series in this file, rows as written, or None."""
    if "keys" in f:
        found = _packed_range(f, "rows/ptr", key)
        if found is None:
            return None
        lo, hi = found
        return f["rows/index"][lo:hi], f["rows/stats"][lo:hi]
    g = _group(f, key)
    if g is None or content(f) == SNAPSHOTS:
        return None
    if content(f) == SEGMENT:
        return g["index"][()], g["stats"][()]
    # A compacted file stores its rows reordered (see compacted.py); undo that.
    stored = np.stack([g["steps"][()], g["calls"][()], g["flags"][()]], axis=1)
    original = np.argsort(g["order"][()], kind="stable")
    return stored[original], g["stats"][()].T[original]


def read_default_stats(
    f: h5py.File, key: SeriesKey, column: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, stats (m, S) or one column (m,)) of the rows a default read selects.

    Only compacted stats files keep these precomputed (compacted.py), as their first m rows, so
    a series over a long run is one or two contiguous reads; None for any other file or series.
    """
    g = _group(f, key)
    if g is None or content(f) != STATS:
        return None
    m, first, stride = (int(x) for x in g.attrs["default_rows"])
    if stride:  # the steps are a range: no need to read them
        steps = np.arange(first, first + stride * m, stride, dtype=np.int64)
    else:
        steps = g["steps"][:m]
    if column is None:
        return steps, g["stats"][:, :m].T
    return steps, g["stats"][column, :m]


def stored_latest(f: h5py.File, key: SeriesKey) -> tuple[int, np.ndarray] | None:
    """(step, stats row) of the last default row, precomputed in compacted stats files."""
    g = _group(f, key)
    if g is None or content(f) != STATS or "latest" not in g:
        return None
    return int(g["latest"].attrs["step"]), g["latest"][()]


def read_histograms_sparse(
    f: h5py.File, key: SeriesKey
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(hist_index (h, 3), ptr (h + 1,), bins, counts) of a series, as stored, or None."""
    if "keys" in f:
        found = _packed_range(f, "hists/series_ptr", key)
        if found is None:
            return None
        lo, hi = found
        ptr = f["hists/ptr"][lo : hi + 1]
        first, stop = int(ptr[0]), int(ptr[-1])
        bins, counts = f["hists/bins"][first:stop], f["hists/counts"][first:stop]
        return f["hists/index"][lo:hi], ptr - first, bins, counts
    g = _group(f, key)
    if g is None or "hist_index" not in g:
        return None
    return g["hist_index"][()], g["hist_ptr"][()], g["hist_bins"][()], g["hist_counts"][()]


def read_histograms(f: h5py.File, key: SeriesKey) -> tuple[np.ndarray, np.ndarray] | None:
    """(hist_index (h, 3), dense counts (h, 512)) of a series in this file, or None."""
    found = read_histograms_sparse(f, key)
    if found is None:
        return None
    index, ptr, bins, counts = found
    return index, HistogramRows(ptr, bins, counts).dense()


def snapshot_entries(f: h5py.File, key: SeriesKey) -> np.ndarray:
    """(step, call, flags) of every snapshot of this series in the file, as an int64 (k, 3)."""
    if "keys" in f:
        found = _packed_range(f, "snaps/series_ptr", key)
        if found is None:
            return np.empty((0, 3), dtype=np.int64)
        return f["snaps/index"][found[0] : found[1]]
    g = _group(f, key)
    if g is None or "snapshots" not in g:
        return np.empty((0, 3), dtype=np.int64)
    if "snapshot_index" in g:
        return g["snapshot_index"][()]
    pairs = []  # schema 1: walk the names; flags are in each snapshot's stats row
    for name in g["snapshots"]:
        step, call = name.split(".")
        pairs.append((int(step), int(call)))
    pairs.sort()
    flags = {(int(a), int(b)): int(c) for a, b, c in g["index"][()]} if "index" in g else {}
    rows = [(st, c, flags.get((st, c), 0)) for st, c in pairs]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def snapshot_sizes(f: h5py.File, key: SeriesKey) -> np.ndarray:
    """Stored bytes of each snapshot of this series, in snapshot_entries() order (int64)."""
    if "keys" in f:
        found = _packed_range(f, "snaps/series_ptr", key)
        if found is None:
            return np.zeros(0, dtype=np.int64)
        info = f["snaps/info"][found[0] : found[1]]
        types = json.loads(str(f["snaps"].attrs["types"]))
        ndim = (info.shape[1] - 3) // 2
        itemsize = np.array([np.dtype(t[1]).itemsize for t in types], dtype=np.int64)
        # Unused trailing shape columns are 0: count only the snapshot's own dimensions.
        dims = np.where(np.arange(ndim) < info[:, 2:3], info[:, 3 : 3 + ndim], 1)
        return itemsize[info[:, 0]] * dims.prod(axis=1)
    g = _group(f, key)
    entries = snapshot_entries(f, key)
    if g is None or not len(entries):
        return np.zeros(0, dtype=np.int64)
    snaps = g["snapshots"]
    return np.array([snaps[f"{s}.{c}"].nbytes for s, c, _ in entries], dtype=np.int64)


def snapshot_index(f: h5py.File, key: SeriesKey) -> list[tuple[int, int]]:
    """(step, call) pairs that have a snapshot of this series in the file."""
    return [(int(s), int(c)) for s, c, _ in snapshot_entries(f, key)]


def read_snapshot_raw(
    f: h5py.File, key: SeriesKey, step: int, call: int
) -> tuple[Snapshot, int] | None:
    """(the snapshot as stored, its flags), or None: for copying it into another file."""
    if "keys" in f:
        return _read_packed_snapshot(f, key, step, call)
    g = _group(f, key)
    name = f"{step}.{call}"
    if g is None or "snapshots" not in g or name not in g["snapshots"]:
        return None
    d = g["snapshots"][name]
    if "snapshot_index" not in g:  # schema 1: metadata in attributes of the dataset
        full_shape = tuple(int(x) for x in d.attrs["full_shape"])
        snap = Snapshot(data=d[()], dtype=str(d.attrs["dtype"]), full_shape=full_shape)
        return snap, int(d.attrs.get("flags", 0))
    index = g["snapshot_index"][()]
    (row,) = np.flatnonzero((index[:, 0] == step) & (index[:, 1] == call))
    info = g["snapshot_info"][row]
    dtype = str(g.attrs["snapshot_dtypes"]).split(",")[info[0]]
    full_shape = tuple(int(x) for x in info[2 : 2 + info[1]])
    return Snapshot(data=d[()], dtype=dtype, full_shape=full_shape), int(index[row, 2])


def _decode_info(row: np.ndarray, types: list) -> tuple[str, np.dtype, int, tuple, tuple]:
    """(dtype name, stored NumPy dtype, byte offset, stored shape, full shape) of one
    /snaps/info row (see the layout above)."""
    ndim, d = (len(row) - 3) // 2, int(row[2])
    name, numpy_dtype = types[int(row[0])]
    shape = tuple(int(x) for x in row[3 : 3 + d])
    full_shape = tuple(int(x) for x in row[3 + ndim : 3 + ndim + d])
    return str(name), np.dtype(numpy_dtype), int(row[1]), shape, full_shape


def _read_packed_snapshot(
    f: h5py.File, key: SeriesKey, step: int, call: int
) -> tuple[Snapshot, int] | None:
    found = _packed_range(f, "snaps/series_ptr", key)
    if found is None:
        return None
    index = f["snaps/index"][found[0] : found[1]]
    hits = np.flatnonzero((index[:, 0] == step) & (index[:, 1] == call))
    if not len(hits):
        return None
    row = found[0] + int(hits[0])
    types = json.loads(str(f["snaps"].attrs["types"]))
    name, dtype, start, shape, full_shape = _decode_info(f["snaps/info"][row], types)
    raw = f["snaps/data"][start : start + dtype.itemsize * math.prod(shape)]
    data = raw.view(dtype).reshape(shape)
    return Snapshot(data=data, dtype=name, full_shape=full_shape), int(index[hits[0], 2])


def read_snapshot(
    f: h5py.File, key: SeriesKey, step: int, call: int
) -> tuple[np.ndarray, dict] | None:
    """(array, meta) of one snapshot, bfloat16 widened to float32; None if absent."""
    found = read_snapshot_raw(f, key, step, call)
    if found is None:
        return None
    snap, flags = found
    meta = {"dtype": snap.dtype, "full_shape": list(snap.full_shape), "flags": flags}
    return decode_snapshot(snap.data, snap.dtype), meta
