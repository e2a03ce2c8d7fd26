"""Per-tensor summary statistics and binade histograms, computed where the tensor lives.

Cost model (../shared/PERF.md): an eager torch op costs ~8 us before any arithmetic and a NumPy
call 1-2 us, and a small model's step has dozens of small tensors. So a step's CPU tensors go to
one call of a C kernel (_reduce.c) that reads each tensor once for all its moments, bins it if
asked, and runs with the GIL released so the training thread never waits for it. Where the kernel
is not built (no C compiler at install), NumPy reduces them, five calls per tensor. Accelerator
tensors get four torch reductions each, stacked and moved to the host once per step.
Rare cases that need more care (NaN/Inf present, float32 overflow, std lost to cancellation
because |mean| >> std) are detected on the host and recomputed in float64 for just those tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from tracker.capture.histogram import N_BINS, binade_histogram, numpy_histogram, sample_stride
from tracker.capture.histrows import HistogramRows
from tracker.names import STAT_INDEX, STAT_NAMES

_REBUILD = "reinstall tracker with a C compiler present (pip install -e . in a checkout)"
try:  # built by `pip install` from _reduce.c; optional (setup.py)
    from tracker.capture import _reduce

    KERNEL_STATUS = "built"
except ImportError:  # pragma: no cover - exercised only on installs without a C compiler
    _reduce = None  # type: ignore[assignment]
    KERNEL_STATUS = f"not built, so stats are reduced with NumPy (several times slower): {_REBUILD}"
# The kernel writes stats rows itself, takes sparse histogram buffers (API 2) and runs them on its
# own thread too (API 3, reduce_many_async); a build from
# an older _reduce.c would not match, and is ignored rather than called wrongly.
_KERNEL_API = 3
if _reduce is not None and (
    getattr(_reduce, "STAT_COLUMNS", None) != STAT_NAMES
    or getattr(_reduce, "API_VERSION", None) != _KERNEL_API
):  # pragma: no cover - a stale build
    KERNEL_STATUS = (
        f"stale (built from an older _reduce.c, API {getattr(_reduce, 'API_VERSION', 1)}, "
        f"this tracker needs {_KERNEL_API}), so stats are reduced with NumPy: {_REBUILD}"
    )
    _reduce = None  # type: ignore[assignment]

ActivationKind = Literal["relu", "sigmoid", "tanh"] | None
Reduction = Literal["kernel", "numpy", "torch"]
N_STATS = len(STAT_NAMES)
# var < this * mean^2 means float32 sum-of-squares lost most significant digits of var (the
# kernel's CANCELLATION, _reduce.c, is the same).
_CANCELLATION = 1e-4
_HOST_FLOAT64_MAX = 1 << 12  # elements: biases, norm weights, small layers
# How CPU tensors are reduced. Tests switch it to check every path on the CPU, including the
# torch ops that accelerators take.
CPU_REDUCTION: Reduction = "kernel" if _reduce is not None else "numpy"
# |x - centre| > threshold counts as saturated, per output kind.
_SATURATION = {"sigmoid": (0.5, 0.49), "tanh": (0.0, 0.99)}
_COUNT, _MEAN, _STD, _MIN, _MAX, _NORM, _ZERO, _NAN, _INF, _DEAD, _SAT = (
    STAT_INDEX[name] for name in STAT_NAMES
)


def units_axis(ndim: int) -> int:
    """Axis that indexes units: channels for (N, C, ...) images, features for (..., F) tensors."""
    return 1 if ndim >= 4 else ndim - 1


def kernel_available() -> bool:
    """True if the compiled reductions (_reduce.c) were built at install time."""
    return _reduce is not None


class Results(NamedTuple):
    """What ``StatsBatch.resolve()`` returns: one stats row per tensor, and its histogram
    (int64, 512 binade bins) where one was asked for, else None."""

    rows: list[np.ndarray]
    histograms: list[np.ndarray | None]


@dataclass
class _Pending:
    tensor: Tensor  # float view of the input, kept until resolve() for the rare precise pass
    numel: int
    device: torch.device
    slot: int  # row in the device's float (sum, sumsq, min, max) and zero-count lists
    kind: ActivationKind
    extra_slot: int = -1  # dead units (relu) or saturated elements (sigmoid/tanh), if any
    units: int = 0  # number of units for dead_frac
    # (sum, sumsq, min, max), zero count, extra count: already reduced on the host (NumPy path)
    host: tuple[np.ndarray, int, int | None] | None = None
    kernel_slot: int = -1  # row in the kernel's job table (kernel path)
    histogram: np.ndarray | None = None  # NumPy path: computed in add()
    hist_slot: int = -1  # torch path: row in the device's histogram list


@dataclass
class _DeviceLists:
    floats: list[Tensor] = field(default_factory=list)  # 4 per tensor: sum, sumsq, min, max
    zeros: list[Tensor] = field(default_factory=list)  # 1 per tensor
    extras: list[Tensor] = field(default_factory=list)  # 1 per tensor that has one
    histograms: list[Tensor] = field(default_factory=list)  # (512,) per tensor that wants one


@dataclass
class _KernelJobs:
    """A step's CPU tensors, in the layout reduce_many() reads (see _reduce.c)."""

    tensors: list[Tensor] = field(default_factory=list)  # contiguous float32; alive for the call
    jobs: list[tuple[int, int, int, int, int, int, int, int]] = field(default_factory=list)
    params: list[tuple[float, float]] = field(default_factory=list)
    histograms: int = 0

    def add(self, x: Tensor, kind: ActivationKind, stride: int | None) -> tuple[int, int]:
        """Queue ``x`` (float32, CPU); return (job row, histogram row or -1)."""
        if not x.is_contiguous():
            x = x.contiguous()
        hist_row = -1
        if stride is not None:
            hist_row, self.histograms = self.histograms, self.histograms + 1
        extra, shape = 0, (1, 1, x.numel())
        centre, threshold = 0.0, 0.0
        if kind == "relu" and x.dim() >= 2:
            axis = units_axis(x.dim())
            outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1 :])
            extra, shape = 1, (outer, x.shape[axis], inner)
        elif kind in _SATURATION:
            extra = 2
            centre, threshold = _SATURATION[kind]
        self.tensors.append(x)
        self.jobs.append((x.data_ptr(), x.numel(), hist_row, stride or 1, extra, *shape))
        self.params.append((centre, threshold))
        return len(self.jobs) - 1, hist_row

    def run(self) -> tuple[np.ndarray, np.ndarray]:
        """(stats rows (n, N_STATS) float64, histograms (h, 512) int64): one call, GIL released
        inside. Rows the kernel could not trust have nan_count NaN (see _precise)."""
        n = len(self.jobs)
        out = np.empty((n, N_STATS), dtype=np.float64)
        if not n:
            return out, np.zeros((0, N_BINS), dtype=np.int64)
        if _reduce is None:
            raise RuntimeError("the compiled reductions are not installed; use the NumPy path")
        ptr = np.empty(self.histograms + 1, dtype=np.int64)
        bins = np.empty(self.histograms * N_BINS, dtype=np.uint16)
        counts = np.empty(self.histograms * N_BINS, dtype=np.int64)
        _reduce.reduce_many(
            np.array(self.jobs, dtype=np.int64).reshape(n, 8),
            [job[0] for job in self.jobs],
            np.array(self.params, dtype=np.float64).reshape(n, 2),
            out,
            ptr,
            bins,
            counts,
        )
        nnz = int(ptr[-1])
        return out, HistogramRows(ptr, bins[:nnz], counts[:nnz]).dense()


class StatsBatch:
    """Collect stats (and optionally histograms) of many tensors; ``resolve()`` returns them.

    >>> batch = StatsBatch()
    >>> i = batch.add(torch.tensor([0.0, 1.0, -3.0]), histogram=True)
    >>> results = batch.resolve()
    >>> results.rows[i][STAT_INDEX["min"]], int(results.histograms[i].sum())
    (-3.0, 3)
    """

    def __init__(self) -> None:
        self._devices: dict[torch.device, _DeviceLists] = {}
        self._kernel = _KernelJobs()
        self._pending: list[_Pending | None] = []
        self._wants_histogram: list[bool] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self,
        tensor: Tensor,
        kind: ActivationKind = None,
        *,
        histogram: bool = False,
        histogram_max_elements: int | None = None,
    ) -> int:
        """Queue the reductions for ``tensor``; return the index of its future row.

        With ``histogram``, also its binade histogram; tensors over ``histogram_max_elements``
        are binned on an evenly strided sample, scaled up (histogram.py).
        """
        # Every torch op releases and retakes the GIL, which the training thread then waits for:
        # the common case (a float32 tensor outside autograd) calls none.
        x = tensor.detach() if tensor.requires_grad else tensor
        if x.dtype != torch.float32:
            x = x.float()  # stats run in float32 even for bf16/fp16/fp64 tensors
        numel = x.numel()
        self._wants_histogram.append(histogram)
        if numel == 0:
            self._pending.append(None)
            return len(self._pending) - 1
        stride = sample_stride(numel, histogram_max_elements) if histogram else None
        if x.device.type == "cpu" and CPU_REDUCTION == "kernel":
            pending = _Pending(x, numel, x.device, -1, kind)
            pending.kernel_slot, pending.hist_slot = self._kernel.add(x, kind, stride)
            self._pending.append(pending)
            return len(self._pending) - 1
        if x.device.type == "cpu" and CPU_REDUCTION == "numpy":
            pending = _host_pending(x, kind)
            if stride is not None:
                pending.histogram = numpy_histogram(x.numpy(), stride)
            self._pending.append(pending)
            return len(self._pending) - 1
        self._pending.append(self._add_torch(x, kind, histogram_max_elements if histogram else 0))
        return len(self._pending) - 1

    def _add_torch(self, x: Tensor, kind: ActivationKind, hist_max: int | None) -> _Pending:
        """Queue torch reductions (on the tensor's device); hist_max 0: no histogram."""
        flat = x.reshape(-1)
        lists = self._devices.get(x.device)
        if lists is None:
            lists = self._devices[x.device] = _DeviceLists()
        pending = _Pending(x, x.numel(), x.device, len(lists.zeros), kind)
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
        elif kind in _SATURATION:
            centre, threshold = _SATURATION[kind]
            extra = torch.gt((x - centre).abs_(), threshold).sum()
        if extra is not None:
            pending.extra_slot = len(lists.extras)
            lists.extras.append(extra)
        if hist_max != 0:
            pending.hist_slot = len(lists.histograms)
            lists.histograms.append(binade_histogram(x, hist_max))
        return pending

    def resolve(self) -> Results:
        """Finish every queued reduction (one host transfer per device); float64 rows."""
        host = {}
        for device, lists in self._devices.items():
            floats = torch.stack(lists.floats).double().cpu().numpy().reshape(-1, 4)
            zeros = torch.stack(lists.zeros).cpu().numpy()
            extras = torch.stack(lists.extras).cpu().numpy() if lists.extras else None
            hists = torch.stack(lists.histograms).cpu().numpy() if lists.histograms else None
            host[device] = (floats, zeros, extras, hists)
        kernel_rows, kernel_hists = self._kernel.run()
        rows = np.full((len(self._pending), N_STATS), np.nan)
        histograms: list[np.ndarray | None] = [None] * len(self._pending)
        for i, p in enumerate(self._pending):
            if p is None:
                rows[i] = _empty_row()
                if self._wants_histogram[i]:
                    histograms[i] = np.zeros(N_BINS, dtype=np.int64)
                continue
            if p.kernel_slot >= 0:
                rows[i] = kernel_rows[p.kernel_slot]
                if np.isnan(rows[i, _NAN]):  # non-finite values or cancellation: redo precisely
                    _precise(p.tensor, rows[i])
                if p.hist_slot >= 0:
                    histograms[i] = kernel_hists[p.hist_slot]
                continue
            if p.host is not None:  # computed with NumPy in add()
                floats_row, zeros_count, extra = p.host
                _finish_row(rows[i], p, floats_row, zeros_count, extra)
                histograms[i] = p.histogram
                continue
            floats, zeros, extras, hists = host[p.device]
            extra = None if p.extra_slot < 0 or extras is None else int(extras[p.extra_slot])
            _finish_row(rows[i], p, floats[p.slot], int(zeros[p.slot]), extra)
            if p.hist_slot >= 0 and hists is not None:
                histograms[i] = hists[p.hist_slot]
        self._devices.clear()
        self._kernel = _KernelJobs()
        self._pending.clear()
        self._wants_histogram.clear()
        return Results(list(rows), histograms)


def _empty_row() -> np.ndarray:
    row = np.full(N_STATS, np.nan)
    row[STAT_INDEX["count"]] = 0
    row[STAT_INDEX["nan_count"]] = 0
    row[STAT_INDEX["inf_count"]] = 0
    return row


def _host_pending(x: Tensor, kind: ActivationKind) -> _Pending:
    """Reduce a CPU tensor now, with NumPy on a zero-copy view (when the kernel is not built).

    On the CPU an eager torch op costs ~8 us of dispatch before any arithmetic, a NumPy call
    ~1-2 us, so the five reductions of a small tensor cost a third as much this way; the
    results are the same float32 reductions.
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
        elif kind in _SATURATION:
            centre, threshold = _SATURATION[kind]
            extra = int(np.count_nonzero(np.abs(flat - np.float32(centre)) > np.float32(threshold)))
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
