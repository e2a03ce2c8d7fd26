"""The background writer: batches step records into segment files and catalog transactions.

Segments roll by step count, bytes and age, so a run that logs slowly still becomes visible within
``flush_seconds``. Each roll writes the file durably first and only then registers it, together with
the metrics and epochs of its steps, in one catalog transaction (I2); the file carries those
metrics too, so recovery can register it if this process dies in between. The queue is bounded in
bytes: when it is full, snapshots are dropped first, then tensor summaries; metrics are kept (I1).

The writer holds its run and rank's lock (tracker/store/locks.py) from start to a clean finish, so
recovery and compaction in other processes leave its files alone while it lives, and a lock file
left behind tells the next opener of the store that this run needs recovery.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracker.capture.engine import StepRecord
from tracker.catalog import MetricRow
from tracker.remote import RemoteStore
from tracker.store import Store
from tracker.store.codecs import SEGMENT_COMPRESSION, check_compression
from tracker.store.errors import RunBusyError
from tracker.store.segment import SCHEMA_VERSION, Batch, SegmentBuilder

log = logging.getLogger("tracker")


@dataclass(frozen=True)
class WriterConfig:
    """When a segment is rolled, and how much may wait in memory."""

    steps_per_segment: int = 500
    max_segment_bytes: int = 64 << 20
    flush_seconds: float = 5.0
    max_queue_bytes: int = 256 << 20
    # "none": compressing costs the writer thread, which holds the GIL inside h5py, more than it
    # saves on a local disk (bench/store.py); compaction compresses snapshots after training.
    compression: str = SEGMENT_COMPRESSION


class _Inbox:
    """A FIFO whose put() wakes the writer only when told to or when many items wait.

    Waking a thread is a GIL handoff that the training thread pays for in its next torch op
    (each op releases and retakes the GIL). Step records arrive every step and are not urgent,
    so the writer takes them in batches; flushes and shutdown wake it at once.
    """

    WAKE_AT = 32

    def __init__(self) -> None:
        self._items: deque[StepRecord | _FlushRequest | None] = deque()
        self._cond = threading.Condition(threading.Lock())

    def put(self, item: StepRecord | _FlushRequest | None, wake: bool = True) -> None:
        with self._cond:
            self._items.append(item)
            if wake or len(self._items) >= self.WAKE_AT:
                self._cond.notify()

    def get(self, timeout: float) -> StepRecord | _FlushRequest | None:
        """The oldest item; raises queue.Empty if none arrived within ``timeout`` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                raise queue.Empty
            return self._items.popleft()


@dataclass
class _FlushRequest:
    done: threading.Event = field(default_factory=threading.Event)
    complete: bool = False


def _record_bytes(record: StepRecord) -> int:
    total = 64 * (1 + len(record.metrics))
    for block in record.blocks:
        total += 200 * len(block) + block.snapshot_bytes()
    return total


class Writer:
    """A daemon thread owning the run's open segment; put() never blocks the caller."""

    def __init__(
        self,
        store: Store | RemoteStore,
        run_id: str,
        rank: int,
        tracker_version: str,
        on_error: Callable[[str, BaseException], None],
        counters: Callable[[], dict[str, int]],
        config: WriterConfig | None = None,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._rank = rank
        self._version = tracker_version
        self._on_error = on_error
        self._counters = counters
        self.config = config or WriterConfig()
        check_compression(self.config.compression)
        self.counters: Counter[str] = Counter()
        self._queue = _Inbox()
        self._lost_since_flush = False  # a segment file could not be written since the last flush
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._builder = SegmentBuilder(run_id, rank)
        self._metrics: list[MetricRow] = []
        self._epochs: dict[int, tuple[int, int]] = {}
        self._shapes: dict[str, dict[str, list[int]]] = {}
        self._pending_since: float | None = None
        # Segments written durably whose registration failed (the catalog was down): retried at
        # every later commit, so a database restart delays visibility but loses nothing.
        self._unregistered: list[dict[str, Any]] = []
        self._retry_at = 0.0
        self._lock = store.lock(run_id, rank, "writer")
        try:
            if not self._lock.acquire():
                raise RunBusyError(f"another live process is writing run {run_id} rank {rank}")
        except Exception as exc:  # I1: write anyway, only without recovery's protection
            on_error("locking the run's folder", exc)
        self._thread = threading.Thread(target=self._loop, name="tracker-writer", daemon=True)
        self._thread.start()

    def put(self, record: StepRecord) -> None:
        """Queue a step record, shedding snapshots, then summaries, when over the byte budget."""
        size = _record_bytes(record)
        with self._bytes_lock:
            if self._queued_bytes + size > self.config.max_queue_bytes:
                for block in record.blocks:
                    if block.snapshots is not None:
                        dropped = sum(s is not None for s in block.snapshots)
                        self.counters["dropped_snapshots"] += dropped
                        block.snapshots = None
                size = _record_bytes(record)
                if self._queued_bytes + size > self.config.max_queue_bytes:
                    self.counters["dropped_summaries"] += sum(len(b) for b in record.blocks)
                    record.blocks = []
                    size = _record_bytes(record)
            self._queued_bytes += size
        self._queue.put(record, wake=False)

    def flush(self, timeout: float | None = None) -> bool:
        """Write out and register everything queued so far; False if that took longer than
        ``timeout`` or something could not be registered yet (it is retried, and kept for
        recovery if this process dies)."""
        if not self._thread.is_alive():
            return False
        request = _FlushRequest()
        self._queue.put(request)
        return request.done.wait(timeout) and request.complete

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread."""
        ok = self.flush(timeout)
        self._queue.put(None)
        self._thread.join(timeout=5.0 if ok else 0.1)
        return ok

    # -- thread ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                # Records do not wake the writer (_Inbox): poll often enough for flush_seconds.
                item = self._queue.get(timeout=min(0.5, self.config.flush_seconds))
            except queue.Empty:
                item = False  # type: ignore[assignment]
            if item is None:
                self._commit()
                # A segment that could not be registered stays for recovery: keep the lock file.
                self._lock.release(finished=not self._unregistered)
                return
            if isinstance(item, _FlushRequest):
                self._commit()
                # Complete: every step since the last flush is in a registered segment.
                item.complete = not (
                    self._lost_since_flush or self._unregistered or self._pending_since is not None
                )
                self._lost_since_flush = False
                item.done.set()
                continue
            if isinstance(item, StepRecord):
                with self._bytes_lock:
                    self._queued_bytes -= _record_bytes(item)
                try:
                    self._add(item)
                except Exception as exc:  # I1: one bad record must not stop the writer
                    self.counters["lost_steps"] += 1
                    self._on_error("adding a step to a segment", exc)
            if self._due():
                self._commit()

    def _add(self, record: StepRecord) -> None:
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        for block in record.assembled_blocks():  # warm here, a batch of steps at a time
            self._builder.add_block(record.step, block)
        for name, value in record.metrics.items():
            self._metrics.append(MetricRow(name, record.step, value, record.epoch, record.time))
        if record.epoch is not None:
            first, last = self._epochs.get(record.epoch, (record.step, record.step))
            self._epochs[record.epoch] = (min(first, record.step), max(last, record.step))
        for layer, parts in record.layer_shapes.items():
            self._shapes.setdefault(layer, {}).update(parts)

    def _due(self) -> bool:
        if self._unregistered and time.monotonic() >= self._retry_at:
            return True
        if self._pending_since is None:
            return False
        cfg = self.config
        return (
            len(self._builder) >= cfg.steps_per_segment
            or self._builder.nbytes >= cfg.max_segment_bytes
            or time.monotonic() - self._pending_since >= cfg.flush_seconds
        )

    def _register_retries(self) -> bool:
        """Register segments whose earlier registration failed; True when none is left."""
        while self._unregistered:
            try:
                self._store.catalog.commit_batch(
                    self._run_id, self._unregistered[0], [], {}, {}, self._counters()
                )
            except Exception as exc:
                self._on_error("registering a segment in the catalog", exc)
                return False
            self._unregistered.pop(0)
            self.counters["late_registrations"] += 1
        return True

    def _commit(self) -> None:
        if not self._register_retries():
            self._retry_at = time.monotonic() + self.config.flush_seconds
        if self._pending_since is None:
            return
        builder, self._builder = self._builder, SegmentBuilder(self._run_id, self._rank)
        segment = None
        if len(builder):
            builder.batch = Batch(
                [(m.name, m.step, m.value, m.epoch, m.time) for m in self._metrics],
                dict(self._epochs),
                {layer: dict(parts) for layer, parts in self._shapes.items()},
            )
            try:
                f = self._store.files.put_segment(builder, self._version, self.config.compression)
                segment = {
                    "id": f.id,
                    "rank": self._rank,
                    "step_min": builder.step_min,
                    "step_max": builder.step_max,
                    "n_steps": len(builder),
                    "path": f.relpath,
                    "nbytes": f.nbytes,
                    "checksum": f.checksum,
                    "schema_version": SCHEMA_VERSION,
                }
                self.counters["segments"] += 1
            except Exception as exc:
                self.counters["lost_steps"] += len(builder)
                self._lost_since_flush = True
                self._on_error("writing a segment file", exc)
        try:
            self._store.catalog.commit_batch(
                self._run_id, segment, self._metrics, self._epochs, self._shapes, self._counters()
            )
        except Exception as exc:
            # Keep the metrics for the next attempt. The segment file stays on disk, with its
            # batch inside; the lock file this leaves makes the next open of the store register it.
            self._on_error("registering a segment in the catalog", exc)
            if segment is not None:
                self.counters["unregistered_segments"] += 1
                self._unregistered.append(segment)
            self._pending_since = time.monotonic()
            self._retry_at = self._pending_since + self.config.flush_seconds
            return
        self._metrics = []
        self._epochs = {}
        self._shapes = {}
        self._pending_since = None
