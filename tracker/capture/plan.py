"""Step plans: the kernel's job table for a recurring layout of tensors, built once.

A model records the same tensors every step: the same layers, calls, shapes and dtypes. So the job
table that reduce_many() reads (_reduce.c) and the keys of the rows are worked out the first time
a layout is seen; later steps of that layout only fill in data pointers and call the kernel once,
which writes the stats rows itself. Tensors the kernel cannot read (on an accelerator, not
float32, not contiguous, empty), and every tensor when ``stats.CPU_REDUCTION`` is not "kernel",
go through StatsBatch one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tracker.capture import stats
from tracker.capture.block import PendingBlock, StepBlock
from tracker.capture.histogram import N_BINS, sample_stride
from tracker.capture.histrows import HistogramRows
from tracker.capture.step import TensorEntry
from tracker.names import STAT_INDEX, STAT_NAMES

_NAN = STAT_INDEX["nan_count"]
# Layouts kept per worker. A model whose shapes change every step (variable sequence lengths)
# never reuses one; the cache is then cleared when full and each step pays to build its plan.
MAX_PLANS = 64


@dataclass
class StepPlan:
    """What stays the same between steps that record the same layout of tensors (all but
    ``bins_needed``, which runs of the plan raise)."""

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
    hist_count: int  # rows with a histogram
    elements: int  # total elements of the tensors
    histogram: bool
    histogram_max_elements: int | None
    # The kernel's histogram output, reused by every step of the plan (one worker thread runs
    # a Planner): a fresh (h * 512) buffer per step cost a page fault per 4 KiB touched.
    scratch_bins: np.ndarray  # uint16 (kernel_histograms * N_BINS,)
    scratch_counts: np.ndarray  # int64 (same)
    # The most non-empty bins a run has needed: sizes the buffers of runs that keep their own.
    bins_needed: int = 0


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
        hist_count=int((hist_rows >= 0).sum()),
        elements=sum(e.tensor.numel() for e in entries),
        histogram=histogram,
        histogram_max_elements=hist_max,
        scratch_bins=np.empty(jobs.histograms * N_BINS, dtype=np.uint16),
        scratch_counts=np.empty(jobs.histograms * N_BINS, dtype=np.int64),
    )


class Planner:
    """Reduces a step's entries to a StepBlock, reusing the plans of layouts seen before.

    Not thread-safe: plans own scratch buffers, so one thread (the stats worker) uses a Planner,
    and at most one run of a plan is in flight at a time.
    """

    def __init__(self) -> None:
        self._plans: dict[Hashable, StepPlan] = {}
        self.built = 0  # plans built so far (a layout that never repeats shows up here)

    def plan(
        self, entries: Sequence[TensorEntry], histogram: bool, hist_max: int | None
    ) -> StepPlan:
        """The plan of ``entries``' layout, built the first time it is seen."""
        signature = _signature(entries, histogram, hist_max)
        plan = self._plans.get(signature)
        if plan is None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            plan = self._plans[signature] = build_plan(entries, histogram, hist_max)
            self.built += 1
        return plan

    def reduce(
        self, entries: Sequence[TensorEntry], histogram: bool, hist_max: int | None
    ) -> StepBlock:
        """Stats (and histograms, if ``histogram``) of every entry's tensor, one row each."""
        plan = self.plan(entries, histogram, hist_max)
        return run_plan(plan, [e.tensor for e in entries])


@dataclass
class PlanRun:
    """A plan's kernel call, running on the kernel's thread (``ticket``) or already done."""

    plan: StepPlan
    tensors: Sequence[Tensor]  # keeps every pointed-to tensor alive while the kernel reads
    rows: np.ndarray
    kernel: np.ndarray  # the kernel's rows: ``rows`` itself, or a buffer copied into it
    ptr: np.ndarray
    bins: np.ndarray  # the plan's scratch, or the run's own (start_plan(own=True))
    counts: np.ndarray
    ticket: Any = None  # _reduce.Ticket while the kernel's thread may still be reading
    untrusted: int = 0  # rows the kernel could not trust, to recompute (known once done)

    def done(self) -> bool:
        """True once the kernel has read every tensor (finishing will not wait for it)."""
        return self.ticket is None or self.ticket.done()


def run_plan(plan: StepPlan, tensors: Sequence[Tensor]) -> StepBlock:
    """Reduce ``tensors`` (laid out as ``plan`` says) to a StepBlock; blocks until done."""
    block = finish_plan(start_plan(plan, tensors))
    assert block is not None  # nothing to wait for
    return block


def start_plan(
    plan: StepPlan, tensors: Sequence[Tensor], background: bool = False, own: bool = False
) -> PlanRun:
    """Start reducing ``tensors``: here, or with ``background`` on the kernel's own thread,
    which never takes the GIL (_reduce.c). Histograms go to the plan's scratch buffers (in use
    until finish_plan() returns: run one plan once at a time), or with ``own`` to buffers of the
    run's own, sized from the plan's earlier runs, which pending_plan() hands on uncopied."""
    n = len(tensors)
    if len(plan.kernel_rows) == n:  # the usual case: the kernel's rows are the block's
        rows = np.empty((n, len(STAT_NAMES)), dtype=np.float64)
        kernel = rows
    else:
        rows = np.full((n, len(STAT_NAMES)), np.nan)
        kernel = np.empty((len(plan.kernel_rows), len(STAT_NAMES)), dtype=np.float64)
    ptr = np.empty(plan.kernel_histograms + 1, dtype=np.int64)
    bins, counts = plan.scratch_bins, plan.scratch_counts
    if own and plan.kernel_histograms:
        # Room for a quarter more bins than ever needed: a run that needs more is redone.
        needed = plan.bins_needed
        size = needed + needed // 4 + 64 if needed else len(bins)
        bins, counts = np.empty(size, dtype=np.uint16), np.empty(size, dtype=np.int64)
    run = PlanRun(plan, tensors, rows, kernel, ptr, bins, counts)
    if len(plan.kernel_rows):
        args = (plan.jobs, _pointers(run), plan.params, kernel, ptr, bins, counts)
        if background:  # the ticket holds the tensors until the kernel is done with them
            run.ticket = stats._reduce.reduce_many_async(*args, tensors)
        else:
            run.untrusted = stats._reduce.reduce_many(*args)
    return run


def _pointers(run: PlanRun) -> list[int]:
    tensors, rows = run.tensors, run.plan.kernel_rows
    if len(rows) == len(tensors):
        return [t.data_ptr() for t in tensors]
    return [tensors[i].data_ptr() for i in rows]


def _settle(run: PlanRun, timeout: float | None) -> bool:
    """Wait for the kernel, then do what it left: histograms that did not fit the run's own
    buffers (rerun into the scratch) and rows it could not trust. False on timeout.

    This runs on the training thread for most steps (direct.py), where each NumPy call costs
    ~3-40 us (its code and data are cold after the step's torch ops): the usual case calls few.
    """
    if run.ticket is not None:
        untrusted = run.ticket.wait(timeout)
        if untrusted is None:
            return False
        run.ticket, run.untrusted = None, untrusted
    plan, tensors = run.plan, run.tensors
    if not len(plan.kernel_rows):
        return True
    if plan.kernel_histograms:
        nnz = int(run.ptr[-1])
        own = run.bins is not plan.scratch_bins
        if nnz > len(run.bins):  # more bins than ever before: redo it with room for all
            run.untrusted = stats._reduce.reduce_many(
                plan.jobs, _pointers(run), plan.params, run.kernel, run.ptr,
                plan.scratch_bins, plan.scratch_counts,
            )  # fmt: skip
            run.bins, run.counts = plan.scratch_bins, plan.scratch_counts
            if own:  # the scratch is the next run's: this one keeps a copy
                hists = _kernel_histograms(run)
                run.bins, run.counts = hists.bins, hists.counts
        plan.bins_needed = max(plan.bins_needed, nnz)
    if run.untrusted:  # NaN/Inf or cancellation: redo those rows precisely
        for j in np.flatnonzero(np.isnan(run.kernel[:, _NAN])):
            stats._precise(tensors[plan.kernel_rows[j]].detach(), run.kernel[j])
    if run.kernel is not run.rows:
        run.rows[plan.kernel_rows] = run.kernel
    return True


def _kernel_histograms(run: PlanRun) -> HistogramRows:
    """The kernel's histograms, copied out of the scratch (which the next run overwrites) or
    trimmed from the run's own buffers."""
    nnz = int(run.ptr[-1])
    bins = np.empty(nnz, dtype=np.uint16)
    counts = np.empty(nnz, dtype=np.int64)
    stats._reduce.copy_prefix(run.bins, bins)
    stats._reduce.copy_prefix(run.counts, counts)
    return HistogramRows(run.ptr, bins, counts)


def finish_plan(run: PlanRun, timeout: float | None = None) -> StepBlock | None:
    """The block of a started run, once the kernel is done; None if it was not done within
    ``timeout`` seconds (the run is still in flight: keep it, and its tensors, alive)."""
    if not _settle(run, timeout):
        return None
    plan, tensors, rows = run.plan, run.tensors, run.rows
    histograms = []
    if len(plan.kernel_rows) and plan.kernel_histograms:
        histograms.append(_kernel_histograms(run))
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
    if len(histograms) == 1:
        hists = histograms[0]
    else:
        hists = HistogramRows.concat(histograms) if plan.histogram else HistogramRows.empty()
    return StepBlock(
        plan.keys, plan.calls, plan.flags, rows, plan.hist_rows, hists, hist_count=plan.hist_count
    )


def pending_plan(
    run: PlanRun,
    timeout: float | None = None,
    drop: Callable[[], Sequence[int]] | None = None,
) -> PendingBlock | None:
    """Like finish_plan() for a run of a plan the kernel reads whole (no ``other_rows``), but
    the block is assembled later, by whoever calls PendingBlock.block(): the training thread
    only waits, checks and lets go of the tensors. ``drop``, called once the kernel is done
    reading: the rows to leave out (written in place while being read)."""
    plan = run.plan
    if plan.other_rows:
        raise ValueError("pending_plan() needs a plan the kernel reads whole")
    if not _settle(run, timeout):
        return None
    dropped = tuple(drop()) if drop is not None else ()
    run.tensors = ()
    return PendingBlock(
        plan.keys,
        plan.calls,
        plan.flags,
        run.rows,
        plan.hist_rows,
        run.ptr,
        run.bins,
        run.counts,
        plan.hist_count,
        dropped,
    )
