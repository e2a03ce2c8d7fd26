"""Code the store tests run in child processes: concurrent registrars and writers that get killed.

The children are forked from a forkserver that has imported this module (and so tracker and
torch) once, so starting one costs milliseconds, not the second a fresh interpreter takes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.context import ForkServerContext
from typing import Any

from sqlalchemy import event

from tests import synthetic
from tracker.catalog import Catalog, MetricRow
from tracker.store import LocalStore, Store
from tracker.store import compacted as compacted_module
from tracker.store import segment as segment_module
from tracker.store.compact import compact_run
from tracker.writer import Writer, WriterConfig


def context() -> ForkServerContext:
    """The forkserver context, preloading this module."""
    ctx = multiprocessing.get_context("forkserver")
    # "__main__" too: else every child re-imports the main module (pytest) before it starts.
    ctx.set_forkserver_preload(["__main__", "tests.children"])
    return ctx  # type: ignore[return-value]


# -- concurrent registration ----------------------------------------------------------------------


def register_segments(url: str, run_id: str, count: int, go: Any) -> None:
    """Register ``count`` segments of ``run_id`` (with a metric each), one transaction each."""
    catalog = Catalog(url, migrate=False)
    go.wait(60)
    for i in range(count):
        segment = {
            "id": f"{run_id}{i:016x}",
            "rank": 0,
            "step_min": i,
            "step_max": i,
            "n_steps": 1,
            "path": f"runs/{run_id}/rank0/{i:012d}.h5",
            "nbytes": i,
            "checksum": "crc32:00000000",
            "schema_version": 2,
        }
        metrics = [MetricRow("loss", i, float(i), None, 0.0)]
        catalog.commit_batch(run_id, segment, metrics, {0: (i, i)}, {}, {"segments": i + 1})
    catalog.close()


def open_new_store(root: str, go: Any) -> None:
    """Open (so create and migrate) a store at the same moment as other processes."""
    go.wait(60)
    Store.open(root).close()


# -- a writer killed at a chosen point ------------------------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_on_call(owner: Any, name: str, nth: int, when: str) -> None:
    """Make ``owner.name`` SIGKILL this process on its ``nth`` call, before or after running."""
    real: Callable[..., Any] = getattr(owner, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] != nth:
            return real(*args, **kwargs)
        if when == "before":
            _die()
        if when == "during":  # inside the catalog transaction, just before COMMIT
            store: Store = _STORE[0]
            event.listen(store.catalog.engine, "commit", lambda conn: _die(), once=True)
            return real(*args, **kwargs)
        result = real(*args, **kwargs)
        _die()
        return result

    setattr(owner, name, wrapper)


_STORE: list[Store] = []
# Where each kill point is: what gets wrapped.
POINTS: dict[str, tuple[Any, str]] = {
    "write": (segment_module, "put_array"),  # in the middle of writing a segment's HDF5 file
    "fsync": (os, "fsync"),
    "rename": (os, "replace"),
    "register": (Catalog, "commit_batch"),
    "compact-write": (compacted_module, "put_array"),
    "compact-fsync": (os, "fsync"),
    "compact-rename": (os, "replace"),
    "compact-swap": (Catalog, "swap_segments"),
    "compact-delete": (LocalStore, "delete"),
}


def _report(path: str, line: str) -> None:
    with open(path, "a") as fh:  # survives the SIGKILL: it is in the page cache
        fh.write(line + "\n")


def crash_writer(root: str, run_id: str, plan: dict[str, Any], report: str) -> None:
    """Write the synthetic run through the real Writer (and compact it), dying as ``plan`` says.

    plan: point (a POINTS key, or "random": the parent kills us), nth, when (before / during /
    after), steps per round, segment_steps, rounds, compact (after each round).
    """
    store = Store.open(root)
    _STORE.append(store)
    synthetic.create_run(store, run_id)
    _report(report, "ready")  # the run and its layers exist: from here on a kill is a crash
    point = plan["point"]
    real_commit = Catalog.commit_batch

    def reporting_commit(self: Catalog, run: str, segment: Any, *args: Any, **kw: Any) -> None:
        real_commit(self, run, segment, *args, **kw)
        if segment is not None:
            _report(report, f"committed {segment['step_max']}")

    Catalog.commit_batch = reporting_commit  # type: ignore[method-assign]
    real_put = LocalStore.put_segment

    def reporting_put(self: LocalStore, builder: Any, *args: Any) -> Any:
        stored = real_put(self, builder, *args)
        _report(report, f"durable {builder.step_max}")  # renamed: recovery must keep it
        return stored

    LocalStore.put_segment = reporting_put  # type: ignore[method-assign]
    if point in POINTS and not point.startswith("compact"):
        _kill_on_call(*POINTS[point], plan["nth"], plan["when"])
    step = 0
    for _ in range(plan["rounds"]):
        writer = Writer(
            store,
            run_id,
            0,
            "test",
            lambda where, exc: _report(report, f"error {where}: {exc}"),
            dict,
            WriterConfig(steps_per_segment=plan["segment_steps"], flush_seconds=3600),
        )
        for _ in range(plan["steps"]):
            writer.put(synthetic.record(step))
            step += 1
        writer.close(timeout=60)
        _report(report, f"closed {step - 1}")
        if plan["compact"]:
            if point.startswith("compact"):
                _kill_on_call(*POINTS[point], plan["nth"], plan["when"])
                point = "armed"
            compact_run(store, run_id)
            _report(report, "compacted")
    store.catalog.set_status(run_id, "finished", ended=True)
    _report(report, "done")
    store.close()
