"""Recorded steps reduced without the stats worker: the usual case of a model on the CPU.

The stats worker (engine.py) is a Python thread. Each step it wakes, runs Python, calls the kernel
and runs Python again, and every time it needs the GIL the training thread, which holds it between
torch ops, first waits for the worker to take it and then to give it back. On the demo CNN
recording every step, those round trips cost the training step more than the kernel's arithmetic
(bench/README.md). So when a step needs nothing but the kernel, the training thread does its
few lines of Python itself, inside ``run.log()``:

1. the parameters and their gradients are reduced at once, on the training thread (GIL released
   while the kernel reads; small parameter sets only, see ``eligible_plans``), so the next
   optimizer step or gradient accumulation never has to wait for them;
2. the activations and their gradients go to the kernel's own thread (``reduce_many_async``),
   which never takes the GIL;
3. at the next ``log()`` or flush, the results (long since ready) become a StepRecord for the
   writer, in step order.

Steps that need more (snapshots, GradScaler, problem detectors, accelerator tensors, tensors the
kernel cannot read, big parameter sets) go to the worker as before.
"""

from __future__ import annotations

from collections import Counter
from functools import partial

from tracker.capture import stats
from tracker.capture.block import PendingBlock
from tracker.capture.plan import Planner, PlanRun, StepPlan, pending_plan, start_plan
from tracker.capture.step import TensorEntry, WatchCapture

PARAM_QUANTITIES = ("weight", "weight_grad")
# Parameters (and gradients) reduced on the training thread, at most: ~0.2 ms of kernel at
# ~0.7 ns per element. A bigger model's parameters are read on the worker, beside training.
MAX_PARAM_ELEMENTS = 1 << 18


def _simple(capture: WatchCapture) -> bool:
    """True if the capture needs only the kernel: no snapshot, loss scale, detector or device."""
    return (
        not capture.snapshots
        and capture.grad_scale is None
        and capture.scale_after is None
        and capture.detector is None
        and not capture.ready
    )


def split_params(capture: WatchCapture) -> tuple[list[TensorEntry], list[TensorEntry]]:
    """(parameters and their gradients, the rest) of a capture, each in capture order."""
    params = [e for e in capture.entries if e.quantity in PARAM_QUANTITIES]
    others = [e for e in capture.entries if e.quantity not in PARAM_QUANTITIES]
    return params, others


class DirectStep:
    """One step's captures on their way through the kernel, owned by the training thread."""

    def __init__(
        self, runs: list[tuple[list[TensorEntry], PlanRun]], blocks: list[PendingBlock]
    ) -> None:
        self._runs = runs
        self._blocks = blocks

    @classmethod
    def start(
        cls, captures: list[WatchCapture], planner: Planner, counters: Counter[str]
    ) -> DirectStep | None:
        """Read the parameters now and start the rest on the kernel's thread; None (having
        done nothing) if one of ``captures`` needs the worker."""
        if (
            stats.CPU_REDUCTION != "kernel"
            or not stats.kernel_available()
            or not all(_simple(c) for c in captures)
        ):
            return None
        planned = []
        for capture in captures:
            params, others = split_params(capture)
            hist, hist_max = capture.histograms, capture.histogram_max_elements
            param_plan = planner.plan(params, hist, hist_max) if params else None
            other_plan = planner.plan(others, hist, hist_max) if others else None
            if not eligible_plans(param_plan, other_plan):
                return None
            planned.append((params, param_plan, others, other_plan))
        blocks: list[PendingBlock] = []
        runs = []
        for params, param_plan, others, other_plan in planned:
            if param_plan is not None:
                run = start_plan(param_plan, [e.tensor for e in params], own=True)
                _keep(blocks, pending_plan(run, None, partial(torn_rows, params, counters)))
            if other_plan is not None:
                run = start_plan(other_plan, [e.tensor for e in others], background=True, own=True)
                runs.append((others, run))
        return cls(runs, blocks)

    def done(self) -> bool:
        """True once the kernel's thread has read every tensor."""
        return all(run.done() for _, run in self._runs)

    def finish(self, counters: Counter[str], timeout: float | None) -> list[PendingBlock] | None:
        """The step's blocks, parameters first, to be assembled by the writer; None if the
        kernel was not done within ``timeout`` seconds (then keep this object, and so the
        tensors, alive)."""
        while self._runs:
            entries, run = self._runs[0]
            pending = pending_plan(run, timeout, partial(torn_rows, entries, counters))
            if pending is None:
                return None
            self._runs.pop(0)
            _keep(self._blocks, pending)
        return self._blocks


def eligible_plans(param_plan: StepPlan | None, other_plan: StepPlan | None) -> bool:
    """True if the kernel reads every tensor and the parameters are small enough to read on
    the training thread."""
    for plan in (param_plan, other_plan):
        if plan is not None and plan.other_rows:
            return False
    return param_plan is None or param_plan.elements <= MAX_PARAM_ELEMENTS


def torn_rows(entries: list[TensorEntry], counters: Counter[str]) -> list[int]:
    """Rows whose tensor was written in place since it was captured (so while being read),
    counted as torn reads. TensorEntry.mutated(), inlined: this runs per entry per step."""
    torn = [
        i
        for i, e in enumerate(entries)
        if e.version_of is not None and e.version_of._version != e.version
    ]
    counters["torn_reads"] += len(torn)
    return torn


def _keep(blocks: list[PendingBlock], pending: PendingBlock | None) -> None:
    if pending is not None and len(pending):
        blocks.append(pending)
