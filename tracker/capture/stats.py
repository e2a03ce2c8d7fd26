"""Per-tensor summary statistics, computed on the tensor's device in a few kernels.

Cost model (../shared/PERF.md): an eager op costs ~8 us before any arithmetic, so each tensor
gets only four cheap reductions (sum, dot, aminmax, count_nonzero). Results of a whole step are
stacked and moved to the host once. Rare cases that need more care (NaN/Inf present, float32
overflow, std lost to cancellation because |mean| >> std) are detected on the host and recomputed in
float64 for just those tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from tracker.names import STAT_INDEX, STAT_NAMES

ActivationKind = Literal["relu", "sigmoid", "tanh"] | None
N_STATS = len(STAT_NAMES)
# var < this * mean^2 means float32 sum-of-squares lost most significant digits of var.
_CANCELLATION = 1e-4
_HOST_FLOAT64_MAX = 1 << 12  # elements: biases, norm weights, small layers
# CPU tensors are reduced with NumPy (see _host_pending); tests turn this off to check the
# torch path that accelerators take on the CPU too.
HOST_REDUCTION = True


def units_axis(ndim: int) -> int:
    """Axis that indexes units: channels for (N, C, ...) images, features for (..., F) tensors."""
    return 1 if ndim >= 4 else ndim - 1


@dataclass
class _Pending:
    tensor: Tensor  # float view of the input, kept until resolve() for the rare precise pass
    numel: int
    device: torch.device
    slot: int  # row in the device's float (sum, sumsq, min, max) and zero-count lists
    kind: ActivationKind
    extra_slot: int = -1  # dead units (relu) or saturated elements (sigmoid/tanh), if any
    units: int = 0  # number of units for dead_frac
    # (sum, sumsq, min, max), zero count, extra count: already reduced on the host (CPU tensors)
    host: tuple[np.ndarray, int, int | None] | None = None


@dataclass
class _DeviceLists:
    floats: list[Tensor] = field(default_factory=list)  # 4 per tensor: sum, sumsq, min, max
    zeros: list[Tensor] = field(default_factory=list)  # 1 per tensor
    extras: list[Tensor] = field(default_factory=list)  # 1 per tensor that has one


class StatsBatch:
    """Collect stats of many tensors; ``resolve()`` returns one row per tensor.

    >>> batch = StatsBatch()
    >>> i = batch.add(torch.tensor([0.0, 1.0, -3.0]))
    >>> batch.resolve()[i][STAT_INDEX["min"]]
    -3.0
    """

    def __init__(self) -> None:
        self._devices: dict[torch.device, _DeviceLists] = {}
        self._pending: list[_Pending | None] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, tensor: Tensor, kind: ActivationKind = None) -> int:
        """Queue the reductions for ``tensor``; return the index of its future row."""
        x = tensor.detach()
        if x.dtype != torch.float32:
            x = x.float()  # stats run in float32 even for bf16/fp16/fp64 tensors
        numel = x.numel()
        if numel == 0:
            self._pending.append(None)
            return len(self._pending) - 1
        if HOST_REDUCTION and x.device.type == "cpu":
            self._pending.append(_host_pending(x, kind))
            return len(self._pending) - 1
        flat = x.reshape(-1)
        lists = self._devices.get(x.device)
        if lists is None:
            lists = self._devices[x.device] = _DeviceLists()
        pending = _Pending(x, numel, x.device, len(lists.zeros), kind)
        lo, hi = torch.aminmax(flat)
        lists.floats.extend((flat.sum(), torch.dot(flat, flat), lo, hi))
        # eq().sum() is branch-free: 4-6x faster than count_nonzero on half-zero ReLU outputs.
        lists.zeros.append(torch.eq(flat, 0).sum())
        extra = None
        if kind == "relu" and x.dim() >= 2:
            axis = units_axis(x.dim())
            others = tuple(d for d in range(x.dim()) if d != axis)
            extra = torch.le(x.amax(dim=others), 0).sum()
            pending.units = x.shape[axis]
        elif kind == "sigmoid":
            extra = torch.gt((x - 0.5).abs_(), 0.49).sum()
        elif kind == "tanh":
            extra = torch.gt(x.abs(), 0.99).sum()
        if extra is not None:
            pending.extra_slot = len(lists.extras)
            lists.extras.append(extra)
        self._pending.append(pending)
        return len(self._pending) - 1

    def resolve(self) -> list[np.ndarray]:
        """Move every queued result to the host at once; return float64 rows of N_STATS."""
        host = {}
        for device, lists in self._devices.items():
            floats = torch.stack(lists.floats).double().cpu().numpy().reshape(-1, 4)
            zeros = torch.stack(lists.zeros).cpu().numpy()
            extras = torch.stack(lists.extras).cpu().numpy() if lists.extras else None
            host[device] = (floats, zeros, extras)
        rows = np.full((len(self._pending), N_STATS), np.nan)
        for i, p in enumerate(self._pending):
            if p is None:
                rows[i] = _empty_row()
                continue
            if p.host is not None:  # computed with NumPy in add()
                floats_row, zeros_count, extra = p.host
                _finish_row(rows[i], p, floats_row, zeros_count, extra)
                continue
            floats, zeros, extras = host[p.device]
            extra = None if p.extra_slot < 0 or extras is None else int(extras[p.extra_slot])
            _finish_row(rows[i], p, floats[p.slot], int(zeros[p.slot]), extra)
        self._devices.clear()
        self._pending.clear()
        return list(rows)


def _empty_row() -> np.ndarray:
    row = np.full(N_STATS, np.nan)
    row[STAT_INDEX["count"]] = 0
    row[STAT_INDEX["nan_count"]] = 0
    row[STAT_INDEX["inf_count"]] = 0
    return row


_COUNT, _MEAN, _STD, _MIN, _MAX, _NORM, _ZERO, _NAN, _INF, _DEAD, _SAT = (
    STAT_INDEX[name] for name in STAT_NAMES
)


def _host_pending(x: Tensor, kind: ActivationKind) -> _Pending:
    """Reduce a CPU tensor now, with NumPy on a zero-copy view.

    On the CPU an eager torch op costs ~8 us of dispatch before any arithmetic, a NumPy call
    ~1-2 us, so the five reductions of a small tensor cost a third as much this way
    (bench/README.md); the results are the same float32 reductions.
    """
    a = x.numpy()
    flat = a.reshape(-1)
    pending = _Pending(x, flat.size, x.device, -1, kind)
    extra = None
    # Overflow and NaN are expected input: _finish_row sees them and redoes the row precisely.
    with np.errstate(all="ignore"):
        # Small tensors (weights of norm layers, biases) are summed in float64: copying them is
        # cheaper than an op, and their std is often tiny next to their mean (cancellation).
        wide = flat.astype(np.float64) if flat.size <= _HOST_FLOAT64_MAX else flat
        floats = np.array(
            [wide.sum(), np.einsum("i,i->", wide, wide), flat.min(), flat.max()], dtype=np.float64
        )
        # Counting the zeros of a comparison: 3x faster than count_nonzero of floats (branchy).
        zeros = int(np.count_nonzero(flat == 0))
        if kind == "relu" and a.ndim >= 2:
            axis = units_axis(a.ndim)
            others = tuple(d for d in range(a.ndim) if d != axis)
            extra = int(np.count_nonzero(a.max(axis=others) <= 0))
            pending.units = a.shape[axis]
        elif kind == "sigmoid":
            extra = int(np.count_nonzero(np.abs(flat - np.float32(0.5)) > 0.49))
        elif kind == "tanh":
            extra = int(np.count_nonzero(np.abs(flat) > 0.99))
    if extra is not None:
        pending.extra_slot = 0
    pending.host = (floats, zeros, extra)
    return pending


def _finish_row(row: np.ndarray, p: _Pending, f: np.ndarray, zeros: int, extra: int | None) -> None:
    total, sumsq, lo, hi = f.tolist()
    n = p.numel
    row[_COUNT] = n
    row[_ZERO] = zeros / n
    if extra is not None:
        if p.kind == "relu":
            row[_DEAD] = extra / p.units
        else:
            row[_SAT] = extra / n
    if math.isfinite(total) and math.isfinite(sumsq) and math.isfinite(lo) and math.isfinite(hi):
        mean = total / n
        var = max(sumsq / n - mean * mean, 0.0)
        if n == 1 or var >= _CANCELLATION * mean * mean:
            row[_MEAN] = mean
            row[_STD] = math.sqrt(var)
            row[_MIN] = lo
            row[_MAX] = hi
            row[_NORM] = math.sqrt(sumsq)
            row[_NAN] = 0
            row[_INF] = 0
            return
    _precise(p.tensor, row)


def _precise(x: Tensor, row: np.ndarray) -> np.ndarray:
    """Recompute the moments in float64 over finite elements only, and count NaN/Inf."""
    flat = x.reshape(-1)
    nan = int(torch.isnan(flat).sum())
    inf = int(torch.isinf(flat).sum())
    finite = flat[torch.isfinite(flat)].double() if nan or inf else flat.double()
    row[STAT_INDEX["nan_count"]] = nan
    row[STAT_INDEX["inf_count"]] = inf
    if finite.numel():
        var, mean = torch.var_mean(finite, correction=0)
        lo, hi = torch.aminmax(finite)
        row[STAT_INDEX["mean"]] = float(mean)
        row[STAT_INDEX["std"]] = math.sqrt(max(float(var), 0.0))
        row[STAT_INDEX["min"]] = float(lo)
        row[STAT_INDEX["max"]] = float(hi)
        row[STAT_INDEX["norm"]] = float(torch.linalg.vector_norm(finite))
    return row


def reference_stats(x: np.ndarray, kind: ActivationKind = None) -> np.ndarray:
    """Straightforward float64 NumPy version of the same row, the oracle for tests."""
    a = np.asarray(x, dtype=np.float64)
    flat = a.reshape(-1)
    n = flat.size
    if n == 0:
        return _empty_row()
    finite = flat[np.isfinite(flat)]
    row = np.full(N_STATS, np.nan)
    row[STAT_INDEX["count"]] = n
    row[STAT_INDEX["zero_frac"]] = np.count_nonzero(flat == 0) / n
    row[STAT_INDEX["nan_count"]] = np.isnan(flat).sum()
    row[STAT_INDEX["inf_count"]] = np.isinf(flat).sum()
    if finite.size:
        row[STAT_INDEX["mean"]] = finite.mean()
        row[STAT_INDEX["std"]] = finite.std()
        row[STAT_INDEX["min"]] = finite.min()
        row[STAT_INDEX["max"]] = finite.max()
        row[STAT_INDEX["norm"]] = np.sqrt(np.dot(finite, finite))
    if kind == "relu" and a.ndim >= 2:
        axis = units_axis(a.ndim)
        others = tuple(d for d in range(a.ndim) if d != axis)
        row[STAT_INDEX["dead_frac"]] = np.mean(a.max(axis=others) <= 0)
    elif kind == "sigmoid":
        row[STAT_INDEX["saturated_frac"]] = np.count_nonzero(np.abs(flat - 0.5) > 0.49) / n
    elif kind == "tanh":
        row[STAT_INDEX["saturated_frac"]] = np.count_nonzero(np.abs(flat) > 0.99) / n
    return row
