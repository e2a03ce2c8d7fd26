"""The client: ``tracker.init()`` returns a Run that logs metrics and watches models."""

from __future__ import annotations

import atexit
import dataclasses
import logging
import math
import numbers
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from torch import Tensor, nn

from tracker.alerts import OnProblem, ProblemWatcher, check_on_problem
from tracker.capture.engine import Engine, StepItem
from tracker.capture.layers import LayerSelector, select_layers, unwrap
from tracker.capture.policy import SnapshotDtype, WatchPolicy
from tracker.capture.probe import Probe
from tracker.capture.stats import KERNEL_STATUS, kernel_available
from tracker.capture.watch import Watch
from tracker.config import Settings
from tracker.errors import InvalidArgumentError, StoreError, TrackerError
from tracker.names import check_name
from tracker.remote import RemoteStore, is_remote
from tracker.store import Store
from tracker.store.compact import compact_after_finish
from tracker.topk.collect import TopKResult
from tracker.topk.files import save_top_k
from tracker.topk.schedule import Every, TopKSchedule
from tracker.version import __version__
from tracker.writer import Writer, WriterConfig

log = logging.getLogger("tracker")


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Config values as JSON: dataclasses/namespaces become dicts, non-finite floats strings."""
    if depth > 20:
        return str(value)
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, numbers.Number):
        return _jsonable(value.item() if hasattr(value, "item") else float(value), depth + 1)  # type: ignore[arg-type]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, depth + 1) for v in value]
    return str(value)


def _metric_value(name: str, value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise InvalidArgumentError(
                f"metric {name!r} is a tensor of shape {tuple(value.shape)}; log a scalar"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidArgumentError(
                f"metric {name!r} must be a number, got {type(value).__name__}"
            )
    return float(value)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def _process_group() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank()), int(dist.get_world_size())
    except Exception:  # a broken process group must not stop logging
        pass
    return 0, 1


def _shared_run_id(rank: int, world: int) -> str:
    """A new run id; under DDP rank 0's, sent to every rank (all ranks must call init)."""
    run_id = uuid.uuid4().hex[:16]
    if world > 1:
        import torch.distributed as dist

        box = [run_id if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        run_id = str(box[0])
    return run_id


class Run:
    """One training run: metrics via log(), layer tensors via watch(); close with finish().

    Create it with :func:`tracker.init`. Usable as a context manager: leaving the block normally
    marks the run finished, by an exception failed.
    """

    def __init__(
        self,
        store: Store | RemoteStore,
        project: str,
        name: str,
        config: dict[str, Any],
        tags: Sequence[str],
        writer_config: WriterConfig | None = None,
        compact: bool = True,
    ) -> None:
        self._store = store
        self._compact = compact
        self.rank, world = _process_group()
        self.id = _shared_run_id(self.rank, world)
        # Under DDP every rank records its own tensors (segments by rank); rank 0 owns the run
        # record: it creates it, registers layers, stores the metrics and sets the final status.
        self.owner = self.rank == 0
        self.name = name
        self.project = project
        self.config = config
        self.tags = list(tags)
        self._lock = threading.RLock()
        self._watches: list[Watch] = []
        self._top_k: list[TopKSchedule] = []
        self._last_step: int | None = None
        self._epoch: int | None = None
        self._finished = False
        self._problems: Counter[str] = Counter()
        self._reason: str | None = None
        if self.owner:
            host, pid, commit = socket.gethostname(), os.getpid(), _git_commit()
            store.catalog.create_run(self.id, project, name, config, self.tags, host, pid, commit)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # the run row exists before any rank registers a segment
        counters = self._all_counters if self.owner else dict  # only rank 0 writes the summary
        self._writer = Writer(
            store, self.id, self.rank, __version__, self._report, counters, writer_config
        )
        self._engine = Engine(self._writer.put, self._report)
        _live_runs.add(self)

    # -- public API ----------------------------------------------------------------------------

    @property
    def store(self) -> str:
        """The store this run writes to: a folder, s3://bucket/prefix, or the server's URL."""
        if isinstance(self._store, RemoteStore):
            return self._store.url
        return self._store.location

    @property
    def finished(self) -> bool:
        return self._finished

    def watch(
        self,
        model: nn.Module,
        layers: LayerSelector = None,
        every: int = WatchPolicy.every,
        histogram_every: int = WatchPolicy.histogram_every,
        snapshot_every: int = WatchPolicy.snapshot_every,
        *,
        snapshot_samples: int = 8,
        snapshot_max_elements: int = 65536,
        snapshot_dtype: SnapshotDtype = None,
        max_calls: int = 8,
        histogram_max_elements: int = 1 << 20,
        prefix: str = "",
        scaler: Any = None,
        probe: Any = None,
        loss_fn: Callable[[Any, Any], Tensor] | None = None,
        probe_mode: str = "eval",
        on_problem: OnProblem = None,
        top_k: int | None = None,
        top_k_every: Every = "epoch",
        dataset: Any = None,
        top_k_layers: LayerSelector = None,
        top_k_batch_size: int = 256,
    ) -> Watch:
        """Record the layers of ``model``: stats every ``every`` steps, histograms, snapshots.

        ``layers``: None (every submodule without children), names or globs ("features.*"), a
        module type (nn.Conv2d), or a callable (name, module) -> bool. Watching the same model again
        returns the same handle. ``prefix`` tells apart two models with the same layer names.
        ``scaler``: the torch.amp.GradScaler in use, so activation gradients are stored unscaled
        (the metrics "amp/grad_scale" and "amp/overflow" are logged with each step).
        ``probe``: fixed inputs, or (inputs, targets) with ``loss_fn``, run through the model at
        every snapshot step without changing training, so snapshots of two steps or two runs
        show the same examples (read them with ``probe=True``).
        ``on_problem``: "warn", "raise" (tracker.ProblemDetectedError from run.log) or a
        callable(finding), called within a few steps of NaN/Inf, dead ReLUs, saturation, a zero
        or an exploding gradient appearing (see tracker.alerts).
        ``top_k``: keep, per channel of the conv and linear layers (or ``top_k_layers``), the
        ``top_k`` inputs of ``dataset`` (held-out inputs: a tensor, an (inputs, targets) pair or
        a Dataset) that activate it most, with their receptive-field patches; computed when a
        new epoch begins and at finish (``top_k_every="epoch"``) or every N steps.
        """
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(
                f"watch() needs a torch.nn.Module, got {type(model).__name__}"
            )
        self._check_open()
        policy = WatchPolicy(
            every=every,
            histogram_every=histogram_every,
            snapshot_every=snapshot_every,
            snapshot_samples=snapshot_samples,
            snapshot_max_elements=snapshot_max_elements,
            snapshot_dtype=snapshot_dtype,
            max_calls=max_calls,
            histogram_max_elements=histogram_max_elements,
        )
        with self._lock:
            for existing in self._watches:
                if unwrap(existing.model) is unwrap(model) and not existing.closed:
                    return existing
            specs = select_layers(model, layers, prefix)
            taken = {name for w in self._watches if not w.closed for name in w.layers}
            clash = sorted(taken.intersection(s.name for s in specs))
            if clash:
                raise InvalidArgumentError(
                    f"layers {', '.join(clash[:5])} are already watched from another model; "
                    "pass prefix='name.' to tell the two models apart"
                )
            wait = self._engine.wait_params_read
            fixed = None if probe is None else Probe.make(probe, loss_fn, probe_mode)
            detector = None
            if check_on_problem(on_problem) is not None:
                detector = ProblemWatcher({s.name: s.kind for s in specs}, on_problem)
            watch = Watch(
                model,
                specs,
                policy,
                self._report,
                self._forget_watch,
                wait,
                scaler=scaler,
                probe=fixed,
                detector=detector,
            )
            try:
                schedule = TopKSchedule.make(
                    watch, top_k, top_k_every, dataset, top_k_layers, top_k_batch_size
                )
            except BaseException:
                watch.close()
                raise
            watch.begin_step(self._next_step())
            self._watches.append(watch)
            if not kernel_available():  # tracking works, but costs the training more
                log.warning("tracker: the stats kernel is %s", KERNEL_STATUS)
            if schedule is not None and self.owner:  # one pass per run, on rank 0
                self._top_k.append(schedule)
        if not self.owner:  # rank 0 registers the layers (same model on every rank)
            return watch
        self._store.catalog.add_layers(
            self.id,
            [
                {
                    "name": s.name,
                    "position": s.position,
                    "type": s.type_name,
                    "kind": s.kind,
                    "params": {n: list(p.shape) for n, p in (*s.params, *s.buffers)},
                }
                for s in specs
            ],
        )
        return watch

    def log(
        self,
        metrics: Mapping[str, Any] | None = None,
        step: int | None = None,
        epoch: int | None = None,
    ) -> None:
        """Record scalars at ``step`` and close that step for the watched layers.

        Whatever the hooks captured since the previous log() belongs to ``step`` (default: the
        previous step + 1). ``epoch`` maps the step to an epoch (or use :meth:`epoch`).
        Under DDP, metrics are stored from rank 0 only; every rank records its layers.
        """
        self._check_open()
        for watch in list(self._watches):  # problems found since the last log (may raise)
            if watch.detector is not None:
                watch.detector.deliver()
        values = {}
        for name, value in (metrics or {}).items():
            values[check_name(name, "metric name")] = _metric_value(name, value)
        if not self.owner:
            values = {}
        if step is None:
            step = self._next_step()
        elif isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise InvalidArgumentError(f"step must be an int >= 0, got {step!r}")
        step = int(step)
        if epoch is not None:
            self.epoch(epoch)
        with self._lock:
            if self._last_step is not None and step < self._last_step:
                self._problems["steps_out_of_order"] += 1
            captures = []
            for watch in self._watches:
                try:
                    watch.run_probe()
                    capture = watch.end_step(step)
                    if capture is not None:
                        captures.append(capture)
                except Exception as exc:  # I1
                    self._report("closing a step", exc)
            self._last_step = step if self._last_step is None else max(step, self._last_step)
            for watch in self._watches:
                watch.begin_step(self._last_step + 1)
        self._engine.submit(StepItem(step, self._epoch, time.time(), values, captures))
        for schedule in self._top_k:
            if schedule.due_after_step(step):
                self._run_top_k(schedule, step, self._epoch)

    def epoch(self, epoch: int) -> None:
        """Steps logged from now on belong to ``epoch``."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise InvalidArgumentError(f"epoch must be an int >= 0, got {epoch!r}")
        previous, self._epoch = self._epoch, int(epoch)
        if previous is not None and previous != self._epoch and self._last_step is not None:
            for schedule in self._top_k:  # the epoch that just ended
                if schedule.every == "epoch":
                    self._run_top_k(schedule, self._last_step, previous)

    def save_top_k(
        self, result: TopKResult, epoch: int | None = None, step: int | None = None
    ) -> None:
        """Store a top-k pass (see tracker.top_k) under this run, labelled ``epoch``/``step``
        (default: the current epoch and the last logged step)."""
        if not self.owner:
            return
        if isinstance(self._store, RemoteStore):
            raise StoreError("top-k inputs cannot be sent to a tracker server yet; log locally")
        epoch = self._epoch if epoch is None else epoch
        step = (self._last_step or 0) if step is None else step
        save_top_k(self._store, self.id, result, epoch, step, self.rank)

    def _run_top_k(self, schedule: TopKSchedule, step: int, epoch: int | None) -> None:
        if schedule.done_step == step:
            return
        schedule.done_step = step
        try:
            self.save_top_k(schedule.compute(), epoch, step)
        except Exception as exc:  # I1: a failed top-k pass must not stop training
            self._report("computing the top-k inputs", exc)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything logged so far is registered in the store; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = self._engine.flush(timeout)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._writer.flush(remaining) and ok

    def finish(self, status: str = "finished", reason: str | None = None) -> None:
        """Remove hooks, write out what is queued, and mark the run ``status``; idempotent."""
        if status not in ("finished", "failed", "crashed"):
            raise InvalidArgumentError(
                f"status must be 'finished', 'failed' or 'crashed', got {status!r}"
            )
        with self._lock:
            if self._finished:
                return
            self._finished = True
            watches = list(self._watches)
        if status == "finished" and self._last_step is not None:
            for schedule in self._top_k:  # the last epoch's (or steps') top-k
                self._run_top_k(schedule, self._last_step, self._epoch)
        for watch in watches:
            watch.close()
        timeout = Settings.from_env().finish_timeout
        complete = self._engine.close(timeout) and self._writer.close(timeout)
        if not complete:
            self._problems["finish_timeout"] += 1
            log.warning("tracker: run %s did not write everything within %.0f s", self.id, timeout)
        problems = self._problem_text()
        text = "; ".join(t for t in (reason, problems) if t) or None
        try:
            if self.owner:  # rank 0 reports the run's status
                self._store.catalog.set_status(
                    self.id, status, text, ended=True, counters=self._all_counters()
                )
        except Exception as exc:
            log.warning("tracker: could not mark run %s %s: %s", self.id, status, exc)
        finally:
            # Rank 0's files are the ones readers use; `tracker compact` does the other ranks.
            if isinstance(self._store, RemoteStore):
                self.upload_left = self._store.close()  # waits for the upload; never raises
            else:
                if complete and self._compact and self.owner:  # never raises
                    compact_after_finish(self._store, self.id, self.rank)
                self._store.close()
        _live_runs.discard(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish("finished")
        else:
            self.finish("failed", f"{exc_type.__name__}: {exc}"[:2000])

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.project}/{self.name}>"

    # -- internals ---------------------------------------------------------------------------

    def _next_step(self) -> int:
        return 0 if self._last_step is None else self._last_step + 1

    def _check_open(self) -> None:
        if self._finished:
            raise TrackerError(f"run {self.id} is finished; start a new one with tracker.init()")

    def _forget_watch(self, watch: Watch) -> None:
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)

    def _report(self, where: str, exc: BaseException) -> None:
        """Note a tracking failure: warn once per kind, count, and never raise (I1)."""
        key = f"error while {where}"
        if not self._problems[key]:
            log.warning("tracker: %s (run %s): %s: %s", key, self.id, type(exc).__name__, exc)
            if self._reason is None:
                self._reason = f"degraded: {key}: {type(exc).__name__}: {exc}"[:500]
        self._problems[key] += 1

    def _problem_text(self) -> str | None:
        counters = self._all_counters()
        parts = [self._reason] if self._reason else []
        lost = {
            k: v for k, v in counters.items() if v and k.startswith(("dropped", "lost", "torn"))
        }
        if lost:
            parts.append(
                "recorded less than asked: "
                + ", ".join(f"{k}={v}" for k, v in sorted(lost.items()))
            )
        return "; ".join(parts) or None

    def _all_counters(self) -> dict[str, int]:
        merged: Counter[str] = Counter()
        merged.update(self._problems)
        merged.update(self._engine.counters if hasattr(self, "_engine") else {})
        merged.update(self._writer.counters)
        return dict(merged)


def init(
    project: str = "default",
    name: str | None = None,
    config: Mapping[str, Any] | Any | None = None,
    store: str | os.PathLike[str] | None = None,
    tags: Sequence[str] = (),
    *,
    database_url: str | None = None,
    writer: WriterConfig | None = None,
    compact: bool = True,
    token: str | None = None,
) -> Run:
    """Start a run in ``store`` (default $TRACKER_STORE or ./tracker-data) and return it.

    ``compact``: at finish(), merge the run's segments into one stats file and per-epoch
    snapshot files (fast reads of long runs; see `tracker compact`).
    ``store="http://host:5000"`` (or $TRACKER_STORE) logs to a tracker server with ``token``
    (or $TRACKER_TOKEN), through a local spool ($TRACKER_SPOOL; see tracker/remote.py).

    >>> with tracker.init(project="digits", name="relu-lr0.1", config={"lr": 0.1}) as run:
    ...     run.watch(model)
    ...     run.log({"loss": 0.5}, step=0)
    """
    check_name(project, "project")
    if name is None:
        name = datetime.now().strftime("run-%Y%m%d-%H%M%S")
    check_name(name, "run name")
    if isinstance(tags, str):
        tags = [tags]
    for tag in tags:
        check_name(tag, "tag")
    _install_exit_handlers()
    settings = Settings.from_env()
    target = os.fspath(store) if store is not None else settings.store
    opened: Store | RemoteStore
    if is_remote(target):
        opened = RemoteStore(target, token or settings.token)
    else:
        opened = Store.open(store, database_url)
    if not opened.writable:
        raise StoreError(f"the store folder {opened.root} is not writable")
    return Run(opened, project, name, _jsonable(config or {}), tags, writer, compact)


# Runs still open at interpreter exit are finished (or failed, after an uncaught exception).
_live_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_uncaught: list[BaseException] = []
_previous_excepthook = sys.excepthook


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    _uncaught.append(exc)
    _previous_excepthook(exc_type, exc, tb)


def _finish_live_runs() -> None:
    for run in list(_live_runs):
        if _uncaught:
            exc = _uncaught[-1]
            run.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
        else:
            run.finish("finished")


_installed = False


def _install_exit_handlers() -> None:
    global _installed
    if not _installed:
        _installed = True
        sys.excepthook = _excepthook
        atexit.register(_finish_live_runs)
