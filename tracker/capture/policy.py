"""What to record and how often: the knobs of run.watch()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tracker.errors import InvalidArgumentError

SnapshotDtype = Literal["float16", "bfloat16"] | None
_SNAPSHOT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class WatchPolicy:
    """Cadences (in steps; 0 turns a kind off) and size bounds of what a watch records."""

    # Stats are a few scalars per tensor, but a recorded step still costs the hooks' Python per
    # watched module, on the training thread: on a tiny CNN every step costs ~1.45x, every 10th
    # ~1.1x (bench/README.md). Steps that record nothing take the hooks off. every=1 records each
    # step when that is wanted.
    every: int = 10
    # Histograms bin every element (or a 1M sample) of each tensor: trends, not per-step detail.
    histogram_every: int = 50
    # Snapshots are the tensors themselves: rare, bounded, for the layer explorer.
    snapshot_every: int = 100
    # Activations keep the first k samples of the batch: enough for an image grid.
    snapshot_samples: int = 8
    # Per tensor, so one huge layer cannot fill the disk (64k floats = 256 KiB).
    snapshot_max_elements: int = 65536
    # float16/bfloat16 halve snapshot size; None keeps each tensor's own dtype (exact).
    snapshot_dtype: SnapshotDtype = None
    # A module called more often in one step (loops, validation passes) records only this many.
    max_calls: int = 8
    # Histograms of bigger tensors bin an evenly strided sample of this many elements: binning
    # costs ~0.7 ns per element, and 1M already shows the shape; stats stay exact regardless.
    histogram_max_elements: int = 1 << 20

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise InvalidArgumentError(f"every must be an int >= 1, got {self.every!r}")
        for name in ("histogram_every", "snapshot_every", "snapshot_samples", "max_calls"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"{name} must be an int >= 0, got {value!r}")
        if not isinstance(self.histogram_max_elements, int) or self.histogram_max_elements < 1:
            raise InvalidArgumentError(
                f"histogram_max_elements must be an int >= 1, got {self.histogram_max_elements!r}"
            )
        if not isinstance(self.snapshot_max_elements, int) or self.snapshot_max_elements < 1:
            raise InvalidArgumentError(
                f"snapshot_max_elements must be an int >= 1, got {self.snapshot_max_elements!r}"
            )
        if self.snapshot_dtype is not None and self.snapshot_dtype not in _SNAPSHOT_DTYPES:
            raise InvalidArgumentError(
                f"snapshot_dtype must be None, 'float16' or 'bfloat16', got {self.snapshot_dtype!r}"
            )

    def torch_snapshot_dtype(self) -> torch.dtype | None:
        """The torch dtype snapshots are stored in, or None to keep each tensor's own."""
        return _SNAPSHOT_DTYPES[self.snapshot_dtype] if self.snapshot_dtype else None

    def cadence(self, step: int) -> tuple[bool, bool, bool]:
        """(stats, histogram, snapshot) wanted at ``step``; histograms and snapshots imply stats."""
        hist = self.histogram_every > 0 and step % self.histogram_every == 0
        snap = self.snapshot_every > 0 and step % self.snapshot_every == 0
        return (step % self.every == 0) or hist or snap, hist, snap
