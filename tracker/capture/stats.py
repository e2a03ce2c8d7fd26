"""Per-tensor summary statistics, computed on the tensor's device in a few kernels.

Cost model (../shared/PERF.md): an eager op costs ~8 us before any arithmetic, so each tensor
gets only four cheap reductions (sum, dot, aminmax, count_nonzero). Results of a whole step are
stacked and moved to the host once. Rare cases that need more care (NaN/Inf present, float32
overflow, std lost to cancellation because |mean| >> std) are detected on the host and recomputed in
float64 for just those tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from tracker.names import STAT_INDEX, STAT_NAMES

ActivationKind = Literal["relu", "sigmoid", "tanh"] | None
N_STATS = len(STAT_NAMES)
# var < this * mean^2 means float32 sum-of-squares lost most significant digits of var.
_CANCELLATION = 1e-4


def units_axis(ndim: int) -> int:
    """Axis that indexes units: channels for (N, C, ...) images, features for (..., F) tensors."""
    return 1 if ndim >= 4 else ndim - 1


@dataclass
class _Pending:
    tensor: Tensor  # float view of the input, kept until resolve() for the rare precise pass
    numel: int
    device: torch.device
    float_slot: int  # first of sum, sumsq, min, max in the device's float list
    int_slot: int  # nonzero count, then dead units / saturated counts if any
    kind: ActivationKind
    units: int  # number of units for dead_frac, 0 if not computed


class StatsBatch:
    """Collect stats of many tensors; ``resolve()`` returns one row per tensor.

    >>> batch = StatsBatch()
    >>> i = batch.add(torch.tensor([0.0, 1.0, -3.0]))
    >>> batch.resolve()[i][STAT_INDEX["min"]]
    -3.0
    """

    def __init__(self) -> None:
        self._floats: dict[torch.device, list[Tensor]] = {}
        self._ints: dict[torch.device, list[Tensor]] = {}
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
        flat = x.reshape(-1)
        floats = self._floats.setdefault(x.device, [])
        ints = self._ints.setdefault(x.device, [])
        pending = _Pending(x, numel, x.device, len(floats), len(ints), kind, 0)
        lo, hi = torch.aminmax(flat)
        floats.extend((flat.sum(), torch.dot(flat, flat), lo, hi))
        ints.append(torch.count_nonzero(flat))
        if kind == "relu" and x.dim() >= 2:
            axis = units_axis(x.dim())
            others = tuple(d for d in range(x.dim()) if d != axis)
            ints.append(torch.count_nonzero(x.amax(dim=others) <= 0))
            pending.units = x.shape[axis]
        elif kind == "sigmoid":
            ints.append(torch.count_nonzero((x - 0.5).abs_() > 0.49))
        elif kind == "tanh":
            ints.append(torch.count_nonzero(x.abs() > 0.99))
        self._pending.append(pending)
        return len(self._pending) - 1

    def resolve(self) -> list[np.ndarray]:
        """Move every queued result to the host at once; return float64 rows of N_STATS."""
        host_floats = {d: torch.stack(v).double().cpu().numpy() for d, v in self._floats.items()}
        host_ints = {d: torch.stack(v).cpu().numpy() for d, v in self._ints.items()}
        rows = []
        for p in self._pending:
            if p is None:
                rows.append(_empty_row())
                continue
            f = host_floats[p.device][p.float_slot : p.float_slot + 4]
            i = host_ints[p.device][p.int_slot :]
            rows.append(_finish_row(p, f, i))
        self._floats.clear()
        self._ints.clear()
        self._pending.clear()
        return rows


def _empty_row() -> np.ndarray:
    row = np.full(N_STATS, np.nan)
    row[STAT_INDEX["count"]] = 0
    row[STAT_INDEX["nan_count"]] = 0
    row[STAT_INDEX["inf_count"]] = 0
    return row


def _finish_row(p: _Pending, f: np.ndarray, ints: np.ndarray) -> np.ndarray:
    total, sumsq, lo, hi = (float(v) for v in f)
    n = p.numel
    row = np.full(N_STATS, np.nan)
    row[STAT_INDEX["count"]] = n
    row[STAT_INDEX["zero_frac"]] = (n - int(ints[0])) / n
    extra = int(ints[1]) if len(ints) > 1 and p.kind is not None else None
    if p.kind == "relu" and p.units:
        row[STAT_INDEX["dead_frac"]] = extra / p.units if extra is not None else np.nan
    elif p.kind in ("sigmoid", "tanh") and extra is not None:
        row[STAT_INDEX["saturated_frac"]] = extra / n
    if all(math.isfinite(v) for v in (total, sumsq, lo, hi)):
        mean = total / n
        var = max(sumsq / n - mean * mean, 0.0)
        if n > 1 and var < _CANCELLATION * mean * mean:
            return _precise(p.tensor, row)
        row[STAT_INDEX["mean"]] = mean
        row[STAT_INDEX["std"]] = math.sqrt(var)
        row[STAT_INDEX["min"]] = lo
        row[STAT_INDEX["max"]] = hi
        row[STAT_INDEX["norm"]] = math.sqrt(sumsq)
        row[STAT_INDEX["nan_count"]] = 0
        row[STAT_INDEX["inf_count"]] = 0
        return row
    return _precise(p.tensor, row)


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
