"""The HDF5 segment file: an immutable, self-describing batch of steps of one run and rank.

Layout (``schema_version`` 1; no pickles, only numeric datasets and string attributes, I3)::

    /                       attrs: format, schema_version, run_id, rank, step_min, step_max,
                                   created, stat_names, tracker_version
    /steps                  int64 (n,)          steps that have tensor data in this file
    /series/<layer>/<quantity>/<part>/          names URL-quoted (I5)
        index               int64 (r, 3)        step, call, flags of each stats row
        stats               float64 (r, S)      one row of STAT_NAMES per (step, call)
        hist_index          int64 (h, 3)        step, call, flags of each histogram
        hist_ptr            int64 (h + 1,)      row i's bins are hist_bins[ptr[i]:ptr[i+1]]
        hist_bins           uint16 (nnz,)       non-empty binade bins (histogram.py)
        hist_counts         int64 (nnz,)
        snapshots/<step>.<call>                 the tensor slice; attrs dtype, full_shape, flags

Stats are columnar per layer x quantity x part, so a series read is one dataset per file.
Histograms are stored sparsely: a tensor fills ~60 of the 512 bins, and writing the zeros (or
compressing them while holding the GIL) would cost training time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import h5py
import numpy as np

from tracker.capture.histogram import N_BINS
from tracker.capture.snapshot import Snapshot, decode_snapshot
from tracker.capture.step import Summary
from tracker.errors import SchemaVersionError, StoreError
from tracker.names import STAT_NAMES, decode, encode

FORMAT = "tracker-segment"
SCHEMA_VERSION = 1
SeriesKey = tuple[str, str, str]  # layer, quantity, part


@dataclass
class _SeriesBuffer:
    index: list[tuple[int, int, int]] = field(default_factory=list)
    stats: list[np.ndarray] = field(default_factory=list)
    hist_index: list[tuple[int, int, int]] = field(default_factory=list)
    hists: list[np.ndarray] = field(default_factory=list)
    snapshots: dict[tuple[int, int, int], Snapshot] = field(default_factory=dict)


class SegmentBuilder:
    """Accumulates step records in memory until the writer rolls them into one file."""

    def __init__(self, run_id: str, rank: int = 0) -> None:
        self.run_id = run_id
        self.rank = rank
        self.series: dict[SeriesKey, _SeriesBuffer] = {}
        self.steps: list[int] = []
        self.nbytes = 0
        self.started = time.monotonic()

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def step_min(self) -> int:
        return min(self.steps)

    @property
    def step_max(self) -> int:
        return max(self.steps)

    def add(self, step: int, summaries: list[Summary]) -> None:
        """Append the summaries of one step."""
        if not summaries:
            return
        if not self.steps or self.steps[-1] != step:
            self.steps.append(step)
        for s in summaries:
            buf = self.series.setdefault((s.layer, s.quantity, s.part), _SeriesBuffer())
            key = (step, s.call, s.flags)
            buf.index.append(key)
            buf.stats.append(s.stats)
            self.nbytes += 24 + s.stats.nbytes
            if s.histogram is not None:
                buf.hist_index.append(key)
                buf.hists.append(s.histogram)
                self.nbytes += 24 + 10 * int(np.count_nonzero(s.histogram))
            if s.snapshot is not None:
                buf.snapshots[key] = s.snapshot
                self.nbytes += s.snapshot.data.nbytes


def write_segment(path: str, builder: SegmentBuilder, tracker_version: str) -> None:
    """Write ``builder`` as a complete segment file at ``path`` (the caller makes it durable)."""
    with h5py.File(path, "w", libver=("v110", "latest")) as f:
        f.attrs.update(
            {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "run_id": builder.run_id,
                "rank": builder.rank,
                "step_min": builder.step_min,
                "step_max": builder.step_max,
                "created": time.time(),
                "stat_names": ",".join(STAT_NAMES),
                "tracker_version": tracker_version,
            }
        )
        f.create_dataset("steps", data=np.asarray(builder.steps, dtype=np.int64))
        series = f.create_group("series")
        for (layer, quantity, part), buf in builder.series.items():
            g = (
                series.require_group(encode(layer))
                .require_group(quantity)
                .create_group(encode(part))
            )
            g.create_dataset("index", data=np.asarray(buf.index, dtype=np.int64).reshape(-1, 3))
            g.create_dataset("stats", data=np.stack(buf.stats).astype(np.float64))
            if buf.hists:
                _write_histograms(g, buf)
            if buf.snapshots:
                snaps = g.create_group("snapshots")
                for (step, call, flags), snap in buf.snapshots.items():
                    d = snaps.create_dataset(f"{step}.{call}", data=snap.data)
                    d.attrs["dtype"] = snap.dtype
                    d.attrs["full_shape"] = np.asarray(snap.full_shape, dtype=np.int64)
                    d.attrs["flags"] = flags


def _write_histograms(g: h5py.Group, buf: _SeriesBuffer) -> None:
    bins, counts, ptr = [], [], [0]
    for h in buf.hists:
        nz = np.flatnonzero(h)
        bins.append(nz.astype(np.uint16))
        counts.append(h[nz].astype(np.int64))
        ptr.append(ptr[-1] + nz.size)
    g.create_dataset("hist_index", data=np.asarray(buf.hist_index, dtype=np.int64).reshape(-1, 3))
    g.create_dataset("hist_ptr", data=np.asarray(ptr, dtype=np.int64))
    g.create_dataset("hist_bins", data=np.concatenate(bins))
    g.create_dataset("hist_counts", data=np.concatenate(counts))


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


def _group(f: h5py.File, key: SeriesKey) -> h5py.Group | None:
    layer, quantity, part = key
    path = f"series/{encode(layer)}/{quantity}/{encode(part)}"
    g = f.get(path)
    return g if isinstance(g, h5py.Group) else None


def series_keys(f: h5py.File) -> Iterator[SeriesKey]:
    """Every (layer, quantity, part) with data in the file."""
    series = f.get("series")
    if series is None:
        return
    for layer, lg in series.items():
        for quantity, qg in lg.items():
            for part in qg:
                yield decode(layer), quantity, decode(part)


def read_stats(f: h5py.File, key: SeriesKey) -> tuple[np.ndarray, np.ndarray] | None:
    """(index (r, 3), stats (r, S)) of a series in this file, or None if absent."""
    g = _group(f, key)
    if g is None:
        return None
    return g["index"][()], g["stats"][()]


def read_histograms(f: h5py.File, key: SeriesKey) -> tuple[np.ndarray, np.ndarray] | None:
    """(hist_index (h, 3), dense counts (h, 512)) of a series in this file, or None."""
    g = _group(f, key)
    if g is None or "hist_index" not in g:
        return None
    index = g["hist_index"][()]
    ptr, bins, counts = g["hist_ptr"][()], g["hist_bins"][()], g["hist_counts"][()]
    dense = np.zeros((len(index), N_BINS), dtype=np.int64)
    rows = np.repeat(np.arange(len(index)), np.diff(ptr))
    dense[rows, bins.astype(np.int64)] = counts
    return index, dense


def snapshot_index(f: h5py.File, key: SeriesKey) -> list[tuple[int, int]]:
    """(step, call) pairs that have a snapshot of this series in the file."""
    g = _group(f, key)
    if g is None or "snapshots" not in g:
        return []
    out = []
    for name in g["snapshots"]:
        step, call = name.split(".")
        out.append((int(step), int(call)))
    return sorted(out)


def read_snapshot(
    f: h5py.File, key: SeriesKey, step: int, call: int
) -> tuple[np.ndarray, dict] | None:
    """(array, meta) of one snapshot, bfloat16 widened to float32; None if absent."""
    g = _group(f, key)
    name = f"{step}.{call}"
    if g is None or "snapshots" not in g or name not in g["snapshots"]:
        return None
    d = g["snapshots"][name]
    dtype = str(d.attrs["dtype"])
    meta = {
        "dtype": dtype,
        "full_shape": [int(x) for x in d.attrs["full_shape"]],
        "flags": int(d.attrs.get("flags", 0)),
    }
    return decode_snapshot(d[()], dtype), meta
