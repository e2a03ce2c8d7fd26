"""Step plans: the kernel's job table for a recurring layout of tensors, built once.

A model records the same tensors every step: the same layers, calls, shapes and dtypes. So the job
table that reduce_many() reads (_reduce.c) and the keys of the rows are worked out the first time
a layout is seen; later steps of that layout only fill in data pointers and call the kernel once,
which writes the stats rows itself. Tensors the kernel cannot read (on an accelerator, not
float32, not contiguous, empty), and every tensor when ``stats.CPU_REDUCTION`` is not "kernel",
go through StatsBatch one by one.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tracker.capture import stats
from tracker.capture.block import StepBlock
from tracker.capture.histogram import N_BINS, sample_stride
from tracker.capture.histrows import HistogramRows
from tracker.capture.step import TensorEntry
from tracker.names import STAT_INDEX, STAT_NAMES

_NAN = STAT_INDEX["nan_count"]
# Layouts kept per worker. A model whose shapes change every step (variable sequence lengths)
# never reuses one; the cache is then cleared when full and each step pays to build its plan.
MAX_PLANS = 64


@dataclass(frozen=True)
class StepPlan:
    """What stays the same between steps that record the same layout of tensors."""

    keys: tuple[tuple[str, str, str], ...]
    calls: np.ndarray  # int64 (n,)
    flags: np.ndarray  # int64 (n,)
    hist_rows: np.ndarray  # int64 (n,): kernel rows' histograms first, then the others'
    kernel_rows: np.ndarray  # int64 (k,): rows the kernel reduces
    other_rows: tuple[int, ...]  # rows StatsBatch reduces
    kinds: tuple[stats.ActivationKind, ...]  # per row, for StatsBatch
    jobs: np.ndarray  # int64 (k, 8): reduce_many()'s table; column 0 (data pointer) per step
    params: np.ndarray  # float64 (k, 2)
    kernel_histograms: int
    histogram: bool
    histogram_max_elements: int | None
    # The kernel's histogram output, reused by every step of the plan (one worker thread runs
    # a Planner): a fresh (h * 512) buffer per step cost a page fault per 4 KiB touched.
    scratch_bins: np.ndarray  # uint16 (kernel_histograms * N_BINS,)
    scratch_counts: np.ndarray  # int64 (same)


def _kind(entry: TensorEntry) -> stats.ActivationKind:
    return entry.kind if entry.quantity == "activation" else None


def _signature(entries: Sequence[TensorEntry], histogram: bool, hist_max: int | None) -> Hashable:
    return (
        histogram,
        hist_max,
        stats.CPU_REDUCTION,
        tuple(
            (
                e.layer,
                e.quantity,
                e.part,
                e.call,
                e.flags,
                e.kind,
                (t := e.tensor).shape,
                t.dtype,
                t.is_cpu and t.is_contiguous(),
            )
            for e in entries
        ),
    )


def _kernel_can_read(t: Tensor) -> bool:
    return (
        stats.CPU_REDUCTION == "kernel"
        and stats.kernel_available()
        and t.is_cpu
        and t.dtype == torch.float32
        and t.is_contiguous()
        and t.numel() > 0
    )


def build_plan(entries: Sequence[TensorEntry], histogram: bool, hist_max: int | None) -> StepPlan:
    """Work out the plan of ``entries``' layout (their tensors' data pointers are not kept)."""
    jobs = stats._KernelJobs()
    kernel_rows, other_rows = [], []
    for i, e in enumerate(entries):
        t = e.tensor
        if not _kernel_can_read(t):
            other_rows.append(i)
            continue
        kind = _kind(e)
        jobs.add(t, kind, sample_stride(t.numel(), hist_max) if histogram else None)
        kernel_rows.append(i)
    n, k = len(entries), len(kernel_rows)
    hist_rows = np.full(n, -1, dtype=np.int64)
    if histogram:
        hist_rows[kernel_rows] = np.arange(k)
        hist_rows[other_rows] = k + np.arange(len(other_rows))
    table = np.array(jobs.jobs, dtype=np.int64).reshape(k, 8)
    table[:, 0] = 0  # this step's pointers must not outlive it
    return StepPlan(
        keys=tuple((e.layer, e.quantity, e.part) for e in entries),
        calls=np.array([e.call for e in entries], dtype=np.int64),
        flags=np.array([e.flags for e in entries], dtype=np.int64),
        hist_rows=hist_rows,
        kernel_rows=np.array(kernel_rows, dtype=np.int64),
        other_rows=tuple(other_rows),
        kinds=tuple(_kind(e) for e in entries),
        jobs=table,
        params=np.array(jobs.params, dtype=np.float64).reshape(k, 2),
        kernel_histograms=jobs.histograms,
        histogram=histogram,
        histogram_max_elements=hist_max,
        scratch_bins=np.empty(jobs.histograms * N_BINS, dtype=np.uint16),
        scratch_counts=np.empty(jobs.histograms * N_BINS, dtype=np.int64),
    )


class Planner:
    """Reduces a step's entries to a StepBlock, reusing the plans of layouts seen before.

    Not thread-safe: plans own scratch buffers, so one thread (the stats worker) uses a Planner.
    """

    def __init__(self) -> None:
        self._plans: dict[Hashable, StepPlan] = {}
        self.built = 0  # plans built so far (a layout that never repeats shows up here)

    def reduce(
        self, entries: Sequence[TensorEntry], histogram: bool, hist_max: int | None
    ) -> StepBlock:
        """Stats (and histograms, if ``histogram``) of every entry's tensor, one row each."""
        signature = _signature(entries, histogram, hist_max)
        plan = self._plans.get(signature)
        if plan is None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            plan = self._plans[signature] = build_plan(entries, histogram, hist_max)
            self.built += 1
        return run_plan(plan, [e.tensor for e in entries])


def run_plan(plan: StepPlan, tensors: Sequence[Tensor]) -> StepBlock:
    """Reduce ``tensors`` (laid out as ``plan`` says) to a StepBlock; blocks until done."""
    n = len(tensors)
    histograms = []
    if len(plan.kernel_rows) == n:  # the usual case: the kernel's rows are the block's
        rows = np.empty((n, len(STAT_NAMES)), dtype=np.float64)
        kernel = rows
    else:
        rows = np.full((n, len(STAT_NAMES)), np.nan)
        kernel = np.empty((len(plan.kernel_rows), len(STAT_NAMES)), dtype=np.float64)
    if len(plan.kernel_rows):
        jobs = plan.jobs.copy()
        jobs[:, 0] = [tensors[i].data_ptr() for i in plan.kernel_rows]
        ptr = np.empty(plan.kernel_histograms + 1, dtype=np.int64)
        bins, counts = plan.scratch_bins, plan.scratch_counts
        # `tensors` keeps every pointed-to tensor alive until the call returns.
        stats._reduce.reduce_many(jobs, plan.params, kernel, ptr, bins, counts)
        for j in np.flatnonzero(np.isnan(kernel[:, _NAN])):  # NaN/Inf or cancellation: redo
            stats._precise(tensors[plan.kernel_rows[j]].detach(), kernel[j])
        if kernel is not rows:
            rows[plan.kernel_rows] = kernel
        if plan.kernel_histograms:
            nnz = int(ptr[-1])  # copied out of the scratch, which the next step overwrites
            histograms.append(HistogramRows(ptr, bins[:nnz].copy(), counts[:nnz].copy()))
    if plan.other_rows:
        batch = stats.StatsBatch()
        for i in plan.other_rows:
            batch.add(
                tensors[i],
                plan.kinds[i],
                histogram=plan.histogram,
                histogram_max_elements=plan.histogram_max_elements,
            )
        result = batch.resolve()
        rows[list(plan.other_rows)] = result.rows
        if plan.histogram:
            dense = np.array(result.histograms, dtype=np.int64).reshape(-1, N_BINS)
            histograms.append(HistogramRows.from_dense(dense))
    hists = HistogramRows.concat(histograms) if plan.histogram else HistogramRows.empty()
    return StepBlock(plan.keys, plan.calls, plan.flags, rows, plan.hist_rows, hists)
