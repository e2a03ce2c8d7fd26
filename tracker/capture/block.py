"""A step's summaries column-wise: what the stats worker hands the writer and the alerts.

One row per tensor. A recorded step of a small model has dozens of tensors, and per-row Python
objects cost the stats worker, the alerts and the writer microseconds each, on the GIL the
training thread needs. As columns, the worker fills a step with a few NumPy calls, and the writer
stacks the steps of a segment and cuts them per series once, when it writes the file. Steps with
the same layout (the usual case: the same layers, calls and shapes every step) share one ``keys``
tuple and one ``calls``/``flags`` array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import InitVar, dataclass

import numpy as np

from tracker.capture.histrows import HistogramRows
from tracker.capture.snapshot import Snapshot
from tracker.names import STAT_NAMES

SeriesKey = tuple[str, str, str]  # layer, quantity, part


@dataclass
class Summary:
    """Host-side results for one tensor of one step: a row of a StepBlock, as an object."""

    layer: str
    quantity: str
    part: str
    call: int
    flags: int
    stats: np.ndarray
    histogram: np.ndarray | None = None
    snapshot: Snapshot | None = None


@dataclass
class StepBlock:
    """Summaries of some tensors of one step, one row each. Treat the arrays as read-only:
    ``keys``, ``calls``, ``flags`` and ``hist_rows`` may be shared with other steps."""

    keys: tuple[SeriesKey, ...]  # (layer, quantity, part) of each row
    calls: np.ndarray  # int64 (n,): which forward call of the module in the step
    flags: np.ndarray  # int64 (n,): GRAD_ENABLED | TRAINING_MODE | PROBE bits (step.py)
    stats: np.ndarray  # float64 (n, len(STAT_NAMES))
    hist_rows: np.ndarray  # int64 (n,): the row's histogram in ``hists``, -1 if none
    hists: HistogramRows  # h histograms, sparse
    snapshots: list[Snapshot | None] | None = None  # per row, or None if no row has one
    # How many hist_rows are >= 0, if the caller knows (a step plan does): counting them costs
    # NumPy calls, which are slow on the training thread (plan.finish_plan).
    hist_count: InitVar[int | None] = None

    def __post_init__(self, hist_count: int | None) -> None:
        n = len(self.keys)
        if self.stats.shape != (n, len(STAT_NAMES)):
            raise ValueError(f"stats must be ({n}, {len(STAT_NAMES)}), got {self.stats.shape}")
        if self.calls.shape != (n,) or self.flags.shape != (n,) or self.hist_rows.shape != (n,):
            raise ValueError(f"calls, flags and hist_rows must have {n} entries")
        if hist_count is None:
            hist_count = int((self.hist_rows >= 0).sum())
        if len(self.hists) != hist_count:
            raise ValueError(f"{len(self.hists)} histograms for {hist_count} rows")
        if self.snapshots is not None and len(self.snapshots) != n:
            raise ValueError(f"snapshots must have {n} entries")

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_summaries(cls, summaries: Sequence[Summary]) -> StepBlock:
        """The block of ``summaries``, in their order."""
        hists = [s.histogram for s in summaries if s.histogram is not None]
        hist_rows, next_row = [], 0
        for s in summaries:
            hist_rows.append(next_row if s.histogram is not None else -1)
            next_row += s.histogram is not None
        snapshots = [s.snapshot for s in summaries]
        return cls(
            tuple((s.layer, s.quantity, s.part) for s in summaries),
            np.array([s.call for s in summaries], dtype=np.int64),
            np.array([s.flags for s in summaries], dtype=np.int64),
            np.array([s.stats for s in summaries], dtype=np.float64).reshape(
                len(summaries), len(STAT_NAMES)
            ),
            np.array(hist_rows, dtype=np.int64),
            HistogramRows.from_dense(np.array(hists)) if hists else HistogramRows.empty(),
            snapshots if any(s is not None for s in snapshots) else None,
        )

    def summaries(self) -> list[Summary]:
        """The rows as objects (for tests and tools; the hot path stays column-wise)."""
        return [
            Summary(
                *self.keys[i],
                int(self.calls[i]),
                int(self.flags[i]),
                self.stats[i],
                self.hists[self.hist_rows[i]] if self.hist_rows[i] >= 0 else None,
                None if self.snapshots is None else self.snapshots[i],
            )
            for i in range(len(self))
        ]

    def without(self, rows: Sequence[int]) -> StepBlock:
        """A copy without ``rows`` (histograms of the others are kept, renumbered)."""
        keep = np.ones(len(self), dtype=bool)
        keep[list(rows)] = False
        kept_hist = self.hist_rows[keep]
        has = kept_hist >= 0
        renumbered = np.full(len(kept_hist), -1, dtype=np.int64)
        renumbered[has] = np.arange(int(has.sum()))
        return StepBlock(
            tuple(k for k, ok in zip(self.keys, keep, strict=True) if ok),
            self.calls[keep],
            self.flags[keep],
            self.stats[keep],
            renumbered,
            self.hists.take(kept_hist[has]),
            None
            if self.snapshots is None
            else [s for s, ok in zip(self.snapshots, keep, strict=True) if ok],
        )

    def snapshot_bytes(self) -> int:
        """Bytes of the snapshots this block carries."""
        if self.snapshots is None:
            return 0
        return sum(s.data.nbytes for s in self.snapshots if s is not None)


@dataclass
class PendingBlock:
    """A StepBlock that the kernel has filled in but nobody has assembled yet.

    On the training thread every NumPy call costs ~3-40 us, because its code and data are cold
    after the step's torch ops (plan.py). Assembling a block takes a dozen of them, so a step
    reduced there (direct.py) hands its blocks on like this and the writer thread assembles
    them, warm, a batch of steps at a time. ``bins``/``counts`` may be longer than ``ptr[-1]``.
    """

    keys: tuple[SeriesKey, ...]
    calls: np.ndarray
    flags: np.ndarray
    stats: np.ndarray
    hist_rows: np.ndarray
    ptr: np.ndarray
    bins: np.ndarray
    counts: np.ndarray
    hist_count: int
    drop: tuple[int, ...] = ()  # rows to leave out (written in place while being read)
    snapshots: None = None

    def __len__(self) -> int:
        return len(self.keys) - len(self.drop)

    def snapshot_bytes(self) -> int:
        return 0

    def block(self) -> StepBlock:
        """The assembled block (histograms copied to their exact length)."""
        if self.hist_count:
            nnz = int(self.ptr[-1])
            hists = HistogramRows(self.ptr, self.bins[:nnz].copy(), self.counts[:nnz].copy())
        else:
            hists = HistogramRows.empty()
        block = StepBlock(
            self.keys,
            self.calls,
            self.flags,
            self.stats,
            self.hist_rows,
            hists,
            hist_count=self.hist_count,
        )
        return block.without(self.drop) if self.drop else block
