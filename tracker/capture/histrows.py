"""Many binade histograms kept as their non-empty bins (CSR), the way segment files store them.

A tensor fills a few dozen of the 512 binade bins (histogram.py), so dense rows were mostly
zeros: 4 KiB per tensor per recorded step, held by the writer for a whole segment, a fresh page
for the stats worker to fault in each time, and a scan for the non-empty bins when the file was
written. The kernel (_reduce.c) emits this form directly; the segment writes it as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tracker.capture.histogram import N_BINS


@dataclass(frozen=True)
class HistogramRows:
    """``h`` histograms: row ``r``'s non-empty bins are ``bins[ptr[r]:ptr[r + 1]]`` with
    ``counts`` beside them, bins ascending. Treat the arrays as read-only."""

    ptr: np.ndarray  # int64 (h + 1,), ptr[0] == 0
    bins: np.ndarray  # uint16 (nnz,)
    counts: np.ndarray  # int64 (nnz,)

    def __post_init__(self) -> None:
        if self.ptr.ndim != 1 or len(self.ptr) < 1 or self.ptr[0] != 0:
            raise ValueError("ptr must be a 1-D array that starts at 0")
        if self.bins.shape != self.counts.shape or len(self.bins) != self.ptr[-1]:
            raise ValueError(f"bins and counts must have ptr[-1] = {self.ptr[-1]} entries")

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def __getitem__(self, row: int) -> np.ndarray:
        """Row ``row`` as a dense int64 (512,) array."""
        lo, hi = self.ptr[row], self.ptr[row + 1]
        dense = np.zeros(N_BINS, dtype=np.int64)
        dense[self.bins[lo:hi]] = self.counts[lo:hi]
        return dense

    @property
    def nnz(self) -> int:
        """Non-empty bins over all rows."""
        return len(self.bins)

    @classmethod
    def empty(cls) -> HistogramRows:
        return cls(np.zeros(1, dtype=np.int64), _NO_BINS, _NO_COUNTS)

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> HistogramRows:
        """From an (h, 512) array of counts."""
        dense = np.ascontiguousarray(dense, dtype=np.int64).reshape(-1, N_BINS)
        flat = np.flatnonzero(dense)  # row-major, so bins come out ascending within a row
        rows, bins = np.divmod(flat, N_BINS)
        ptr = offsets(np.bincount(rows, minlength=len(dense)))
        return cls(ptr, bins.astype(np.uint16), dense.reshape(-1)[flat])

    @classmethod
    def concat(cls, parts: Sequence[HistogramRows]) -> HistogramRows:
        """The rows of ``parts``, one after another."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        ptr = np.concatenate(
            [np.zeros(1, dtype=np.int64)]
            + [p.ptr[1:] + off for p, off in zip(parts, offsets, strict=True)]
        )
        return cls(
            ptr,
            np.concatenate([p.bins for p in parts]),
            np.concatenate([p.counts for p in parts]),
        )

    def take(self, rows: np.ndarray | Sequence[int]) -> HistogramRows:
        """The histograms of ``rows``, in that order (a copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.ptr[rows], self.ptr[rows + 1] - self.ptr[rows]
        ptr = offsets(lengths)
        # Position k of the result reads start-of-its-row + (k - where its row begins).
        source = np.repeat(starts - ptr[:-1], lengths) + np.arange(ptr[-1], dtype=np.int64)
        return HistogramRows(ptr, self.bins[source], self.counts[source])

    def dense(self) -> np.ndarray:
        """All rows as an (h, 512) int64 array."""
        out = np.zeros((len(self), N_BINS), dtype=np.int64)
        rows = np.repeat(np.arange(len(self)), np.diff(self.ptr))
        out[rows, self.bins.astype(np.int64)] = self.counts
        return out


def offsets(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """CSR pointers of pieces of these lengths: int64 (n + 1,), from 0 to their sum."""
    ptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    return ptr


_NO_BINS = np.zeros(0, dtype=np.uint16)
_NO_COUNTS = np.zeros(0, dtype=np.int64)
