"""The stats worker: turns a closed step's tensor references into host-side summaries.

It runs on its own thread so that the training thread only pays for taking references (watch.py).
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

from tracker.capture.block import StepBlock, Summary
from tracker.capture.device import SideStreams
from tracker.capture.plan import Planner
from tracker.capture.snapshot import Snapshot, take_snapshot
from tracker.capture.step import PROBE, TensorEntry, WatchCapture

_PARAM_QUANTITIES = ("weight", "weight_grad")
# Bound on how long an optimizer step waits for the worker before going ahead regardless (I1).
PARAMS_WAIT_SECONDS = 10.0


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
    blocks: list[StepBlock]
    layer_shapes: dict[str, dict[str, list[int]]]

    @property
    def summaries(self) -> list[Summary]:
        """Every row of every block as an object (for tests and tools, not the hot path)."""
        return [s for block in self.blocks for s in block.summaries()]


class Engine:
    """A daemon thread with a short queue of closed steps, summarized in order."""

    def __init__(
        self,
        sink: Callable[[StepRecord], None],
        on_error: Callable[[str, BaseException], None],
        max_pending: int = 1,
        max_wait: float = 5.0,
    ) -> None:
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
        self._streams = SideStreams()
        self._hook = optim_hooks.register_optimizer_step_pre_hook(self._before_optimizer_step)
        self._thread = threading.Thread(target=self._loop, name="tracker-stats", daemon=True)
        self._thread.start()

    def submit(self, item: StepItem) -> None:
        """Queue a closed step. If the worker is behind, wait for it (back-pressure) at most
        ``max_wait`` seconds, then drop the step's tensors but keep its metrics (I1).

        A step without tensors goes straight to the sink when nothing is queued before it:
        waking the worker for it would be a thread switch, and a GIL handoff, every step."""
        with self._cond:
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
            if item.captures:
                item.params_read = threading.Event()
            elif not self._queue and not self._busy:
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

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
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
        blocks: list[StepBlock] = []
        shapes: dict[str, dict[str, list[int]]] = {}
        split = []
        for capture in item.captures:
            params = [e for e in capture.entries if e.quantity in _PARAM_QUANTITIES]
            others = [e for e in capture.entries if e.quantity not in _PARAM_QUANTITIES]
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
            self.counters["dropped_inplace"] += capture.dropped_inplace
            self.counters["skipped_calls"] += capture.skipped_calls
            for layer, parts in capture.layer_shapes.items():
                shapes.setdefault(layer, {}).update(parts)
        item.captures = []  # release the tensors now
        return StepRecord(item.step, item.epoch, item.time, metrics, blocks, shapes)

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
        torn = [i for i, e in enumerate(entries) if e.mutated()]
        if torn:
            self.counters["torn_reads"] += len(torn)
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
