"""The stats worker: turns a closed step's tensor references into host-side summaries.

It runs on its own thread so that the training thread only pays for taking references (watch.py).
Steps that need nothing but the C kernel skip it (direct.py): their parameters are reduced inside
``run.log()`` and the rest on the kernel's own thread, which never takes the GIL. The worker keeps
the steps that need Python or torch: snapshots, GradScaler, problem detectors, accelerators.
Parameters are read first, because the next optimizer step overwrites them: a global optimizer
step-pre-hook waits until the previous step's parameters have been read (normally already done).
Parameters changed by anything else while being read are detected by their version counter and that
reading is dropped and counted, never stored half-updated.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.optim.optimizer as optim_hooks

from tracker.capture.block import PendingBlock, StepBlock, Summary
from tracker.capture.device import SideStreams
from tracker.capture.direct import DirectStep, split_params, torn_rows
from tracker.capture.plan import Planner
from tracker.capture.snapshot import Snapshot, take_snapshot
from tracker.capture.step import PROBE, TensorEntry, WatchCapture

# Bound on how long an optimizer step waits for the worker before going ahead regardless (I1).
PARAMS_WAIT_SECONDS = 10.0
# Bound on how long log() waits for the kernel's thread to finish the step before (I1); it takes
# well under a millisecond per million elements, so this is only reached if something is broken.
DIRECT_WAIT_SECONDS = 60.0
# A step reduced directly that nothing collects (no log(), no flush) is handed over by the worker
# after this long, so that a pause in training does not keep it from the writer.
DIRECT_IDLE_SECONDS = 0.5


def _already_set() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


# The params_read of steps without tensors (most steps, at the default cadence): one shared event,
# already set, instead of building a Condition per step on the training thread.
_NOTHING_TO_READ = _already_set()


@dataclass
class StepItem:
    """One closed step on its way to the worker: metrics always, tensors if any were captured."""

    step: int
    epoch: int | None
    time: float
    metrics: dict[str, float]
    captures: list[WatchCapture] = field(default_factory=list)
    # Set once the worker has read the step's parameters (submit() gives steps with tensors
    # their own event).
    params_read: threading.Event = _NOTHING_TO_READ


@dataclass
class StepRecord:
    """What the writer receives for one step: its tensors' summaries come in column blocks."""

    step: int
    epoch: int | None
    time: float
    metrics: dict[str, float]
    # Steps reduced on the training thread (direct.py) carry PendingBlocks, which the receiver
    # (the writer thread) assembles: assembled_blocks().
    blocks: list[StepBlock | PendingBlock]
    layer_shapes: dict[str, dict[str, list[int]]]

    def assembled_blocks(self) -> list[StepBlock]:
        """The blocks, every PendingBlock assembled (once: they are replaced)."""
        self.blocks = [b.block() if isinstance(b, PendingBlock) else b for b in self.blocks]
        return self.blocks  # type: ignore[return-value]

    @property
    def summaries(self) -> list[Summary]:
        """Every row of every block as an object (for tests and tools, not the hot path)."""
        return [s for block in self.assembled_blocks() for s in block.summaries()]


class Engine:
    """A daemon thread with a short queue of closed steps, summarized in order.

    Steps that need only the kernel skip the queue (direct.py): submit() reads their parameters,
    starts the rest on the kernel's own thread and hands the step over at the next submit() or
    flush(). At most one such step is in flight, and only while the queue is empty, so records
    still reach the sink in step order.
    """

    def __init__(
        self,
        sink: Callable[[StepRecord], None],
        on_error: Callable[[str, BaseException], None],
        max_pending: int = 1,
        max_wait: float = 5.0,
        direct: bool = True,
    ) -> None:
        """``sink`` must not block: it is also called on the training thread. ``direct``: let
        steps that need only the kernel skip the worker (direct.py)."""
        self._sink = sink
        self._on_error = on_error
        # One step waiting while another is summarized bounds the tensors held to two steps.
        self._max_pending = max_pending
        self._max_wait = max_wait
        self._queue: deque[StepItem] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._last_item: StepItem | None = None
        self.counters: Counter[str] = Counter()
        self._planner = Planner()
        self._allow_direct = direct
        self._direct_planner = Planner()  # the training thread's: plans own scratch buffers
        self._direct: tuple[StepItem, DirectStep, float] | None = None
        self._stuck: list[DirectStep] = []  # never finished by the kernel: kept alive (I1)
        self._streams = SideStreams()
        self._hook = optim_hooks.register_optimizer_step_pre_hook(self._before_optimizer_step)
        self._thread = threading.Thread(target=self._loop, name="tracker-stats", daemon=True)
        self._thread.start()

    def submit(self, item: StepItem) -> None:
        """Queue a closed step. If the worker is behind, wait for it (back-pressure) at most
        ``max_wait`` seconds, then drop the step's tensors but keep its metrics (I1).

        A step without tensors goes straight to the sink when nothing is queued before it:
        waking the worker for it would be a thread switch, and a GIL handoff, every step. So
        does a step that needs only the kernel (direct.py)."""
        with self._cond:
            self._finish_direct()  # the step before goes first
            if item.captures and self._queued_with_tensors() >= self._max_pending:
                deadline = time.monotonic() + self._max_wait
                while self._queued_with_tensors() >= self._max_pending and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._thread.is_alive():
                        break
                    self._cond.wait(remaining)
                if self._queued_with_tensors() >= self._max_pending:
                    self.counters["dropped_steps"] += 1
                    item.captures = []
            self._last_item = item
            if self._stopping:
                self.counters["late_steps"] += 1
                return
            idle = not self._queue and not self._busy
            if item.captures:
                if idle and self._start_direct(item):
                    return
                item.params_read = threading.Event()
            elif idle:
                # In order: nothing is ahead of it. Under the lock, so nothing overtakes it.
                self._hand_over(StepRecord(item.step, item.epoch, item.time, item.metrics, [], {}))
                return
            self._queue.append(item)
            if item.captures:  # a step without tensors waits for the worker to get to it
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued step has been handed to the sink; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._finish_direct()
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._thread.is_alive():
                    return False
                self._cond.wait(remaining if remaining is not None else 1.0)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Finish queued work (up to ``timeout``), then stop the thread and the optimizer hook."""
        done = self.flush(timeout)
        with self._cond:
            self._finish_direct()
            self._stopping = True
            for item in self._queue:
                item.params_read.set()
            self._cond.notify_all()
        self._hook.remove()
        self._thread.join(timeout=5.0)
        return done

    # -- internals --------------------------------------------------------------------------------

    def _queued_with_tensors(self) -> int:
        return sum(1 for i in self._queue if i.captures)

    def wait_params_read(self) -> None:
        """Block until the last step's parameters and gradients have been read (bounded, I1).

        Called just before anything writes them in place: an optimizer step, or a backward pass
        about to accumulate into ``.grad``. Normally the worker finished long before.
        """
        item = self._last_item
        if item is None or item.params_read.is_set():
            return
        if not item.params_read.wait(PARAMS_WAIT_SECONDS):
            self.counters["params_wait_timeouts"] += 1

    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.wait_params_read()

    def _start_direct(self, item: StepItem) -> bool:
        """Take ``item`` without the worker if it needs only the kernel (direct.py); False if
        it needs the worker."""
        if not self._allow_direct:
            return False
        try:
            step = DirectStep.start(item.captures, self._direct_planner, self.counters)
        except Exception as exc:  # I1: as on the worker, the step keeps its metrics only
            self._on_error("summarizing a step", exc)
            self.counters["lost_steps"] += 1
            item.captures = []
            self._hand_over(StepRecord(item.step, item.epoch, item.time, item.metrics, [], {}))
            return True
        if step is None:
            return False
        # Not waking the worker (a GIL handoff): it looks in every DIRECT_IDLE_SECONDS (_loop).
        self._direct = (item, step, time.monotonic())
        return True

    def _finish_direct(self) -> None:
        """Hand over the step started by _start_direct, if any (called with the lock held)."""
        if self._direct is None:
            return
        item, step, _ = self._direct
        self._direct = None
        blocks: list[StepBlock | PendingBlock] = []
        try:
            finished = step.finish(self.counters, DIRECT_WAIT_SECONDS)
        except Exception as exc:
            self._on_error("summarizing a step", exc)
            self.counters["lost_steps"] += 1
        else:
            if finished is None:  # the kernel's thread still reads the tensors: keep them
                self._stuck.append(step)
                self._on_error(
                    "summarizing a step",
                    TimeoutError(f"the stats kernel took over {DIRECT_WAIT_SECONDS:.0f} s"),
                )
                self.counters["lost_steps"] += 1
            else:
                blocks.extend(finished)
        shapes = self._close_captures(item)
        self._hand_over(StepRecord(item.step, item.epoch, item.time, item.metrics, blocks, shapes))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    direct = self._direct
                    # Nothing has collected it (a pause in training): hand it over from here.
                    if (
                        direct is not None
                        and time.monotonic() - direct[2] >= DIRECT_IDLE_SECONDS
                        and direct[1].done()
                    ):
                        self._finish_direct()
                    self._cond.wait(DIRECT_IDLE_SECONDS)
                if not self._queue:
                    return
                item = self._queue.popleft()
                self._busy = True
                self._cond.notify_all()  # a producer waiting for queue space may go on
            try:
                try:
                    record = self._summarize(item)
                except Exception as exc:
                    self._on_error("summarizing a step", exc)
                    self.counters["lost_steps"] += 1
                    # The metrics of the step must survive a failure to summarize its tensors.
                    record = StepRecord(item.step, item.epoch, item.time, item.metrics, [], {})
                self._hand_over(record)
            finally:
                item.params_read.set()
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _hand_over(self, record: StepRecord) -> None:
        try:
            self._sink(record)
        except Exception as exc:  # I1
            self._on_error("handing a step to the writer", exc)

    def _summarize(self, item: StepItem) -> StepRecord:
        blocks: list[StepBlock | PendingBlock] = []
        split = []
        for capture in item.captures:
            params, others = split_params(capture)
            param_block = self._block(capture, params)
            split.append((capture, others, param_block))
            if param_block is not None:
                blocks.append(param_block)
        item.params_read.set()
        metrics = dict(item.metrics)
        for capture, others, param_block in split:
            _unscale(capture, others, metrics)
            mine = self._block(capture, others)
            if mine is not None:
                blocks.append(mine)
            if capture.detector is not None:
                seen = [b for b in (param_block, mine) if b is not None]
                try:
                    capture.detector.observe(item.step, seen)  # type: ignore[attr-defined]
                except Exception as exc:  # I1
                    self._on_error("checking for training problems", exc)
        shapes = self._close_captures(item)
        return StepRecord(item.step, item.epoch, item.time, metrics, blocks, shapes)

    def _close_captures(self, item: StepItem) -> dict[str, dict[str, list[int]]]:
        """Count what the watches dropped, gather the layers' shapes and let go of the tensors."""
        shapes: dict[str, dict[str, list[int]]] = {}
        for capture in item.captures:
            self.counters["dropped_inplace"] += capture.dropped_inplace
            self.counters["skipped_calls"] += capture.skipped_calls
            for layer, parts in capture.layer_shapes.items():
                shapes.setdefault(layer, {}).update(parts)
        item.captures = []
        return shapes

    def _block(self, capture: WatchCapture, entries: list[TensorEntry]) -> StepBlock | None:
        if not entries:
            return None
        with self._streams.after(capture.ready):
            return self._block_here(capture, entries)

    def _block_here(self, capture: WatchCapture, entries: list[TensorEntry]) -> StepBlock | None:
        snaps: list[Snapshot | None] | None = None
        if capture.snapshots:
            snaps = [
                take_snapshot(
                    e.tensor,
                    _sample_limit(capture, e),
                    capture.snapshot_max_elements,
                    capture.snapshot_dtype,  # type: ignore[arg-type]
                )
                for e in entries
            ]
        # Blocking: the snapshot copies above are complete after it.
        block = self._planner.reduce(entries, capture.histograms, capture.histogram_max_elements)
        block.snapshots = snaps
        # Overwritten while we read it: drop rather than store a mix.
        torn = torn_rows(entries, self.counters)
        if torn:
            block = block.without(torn)
        return block if len(block) else None


def _sample_limit(capture: WatchCapture, entry: TensorEntry) -> int | None:
    """Samples kept in a snapshot: none cut from weights or from the (small, fixed) probe batch."""
    if not entry.quantity.startswith("activation") or entry.flags & PROBE:
        return None
    return capture.snapshot_samples


def _unscale(capture: WatchCapture, entries: list[TensorEntry], metrics: dict[str, float]) -> None:
    """Undo GradScaler's loss scale on activation gradients; log the scale and any overflow.

    Parameter gradients need nothing: scaler.step() unscales them in place before we read them.
    The scale is a power of two, so dividing by it is exact (in float32, which stats use anyway).
    """
    if capture.grad_scale is None:
        return
    scale = float(capture.grad_scale)
    metrics["amp/grad_scale"] = scale
    if capture.scale_after is not None:
        # GradScaler backs the scale off after a step whose gradients overflowed (and skips it).
        metrics["amp/overflow"] = float(float(capture.scale_after) < scale)
    if scale != 1.0:
        for entry in entries:
            # The probe's backward uses an unscaled loss of its own.
            if entry.quantity == "activation_grad" and not entry.flags & PROBE:
                entry.tensor = entry.tensor.float() / scale
