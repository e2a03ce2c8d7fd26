"""The writer: segments roll by steps and time; a catalog failure keeps metrics for the retry."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tracker.capture.engine import StepRecord
from tracker.capture.step import Summary
from tracker.names import STAT_NAMES
from tracker.store import Store
from tracker.writer import Writer, WriterConfig

RUN = "00000000000000b1"


def _record(step: int) -> StepRecord:
    summary = Summary("fc", "weight", "weight", 0, 3, np.full(len(STAT_NAMES), float(step)))
    return StepRecord(
        step,
        step // 10,
        time.time(),
        {"loss": 1.0 / (step + 1)},
        [summary],
        {"fc": {"output": [2, 3]}},
    )


@pytest.fixture
def writer_store(any_store: Store) -> Store:
    any_store.catalog.create_run(RUN, "p", "r", {}, [], "h", 1, None)
    any_store.catalog.add_layers(
        RUN, [{"name": "fc", "position": 0, "type": "Linear", "kind": None, "params": {}}]
    )
    return any_store


def _writer(store: Store, problems: list, **config: float) -> Writer:
    return Writer(
        store,
        RUN,
        0,
        "test",
        lambda where, exc: problems.append((where, exc)),
        dict,
        WriterConfig(**config),
    )


def test_segments_roll_by_step_count(writer_store: Store) -> None:
    problems: list = []
    w = _writer(writer_store, problems, steps_per_segment=10, flush_seconds=3600)
    for step in range(25):
        w.put(_record(step))
    assert w.close(timeout=10)
    segments = writer_store.catalog.segments(RUN)
    assert [(s.step_min, s.step_max) for s in segments] == [(0, 9), (10, 19), (20, 24)]
    assert len(writer_store.catalog.metric(RUN, "loss")) == 25
    assert [e.epoch for e in writer_store.catalog.epochs(RUN)] == [0, 1, 2]
    assert writer_store.catalog.layers(RUN)[0].shapes == {"output": [2, 3]}
    assert problems == []


def test_a_slow_run_is_committed_by_time(writer_store: Store) -> None:
    w = _writer(writer_store, [], steps_per_segment=1000, flush_seconds=0.2)
    w.put(_record(0))
    deadline = time.monotonic() + 10
    while not writer_store.catalog.segments(RUN) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(writer_store.catalog.segments(RUN)) == 1
    w.close(timeout=10)


def test_catalog_failure_keeps_metrics_for_the_next_commit(
    writer_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems: list = []
    real = writer_store.catalog.commit_batch
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database restarting")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_store.catalog, "commit_batch", flaky)
    w = _writer(writer_store, problems, steps_per_segment=5, flush_seconds=3600)
    for step in range(10):
        w.put(_record(step))
    assert w.close(timeout=10)
    assert [m.step for m in writer_store.catalog.metric(RUN, "loss")] == list(range(10))
    assert problems and "database restarting" in str(problems[0][1])
    assert w.counters["unregistered_segments"] == 1  # its file stays on disk for recovery


def test_over_budget_queue_sheds_snapshots_then_summaries_never_metrics(
    writer_store: Store,
) -> None:
    from tracker.capture.snapshot import Snapshot

    w = _writer(writer_store, [], steps_per_segment=1000, flush_seconds=3600, max_queue_bytes=1)
    record = _record(0)
    record.summaries[0].snapshot = Snapshot(np.zeros(1000, np.float32), "float32", (1000,))
    w.put(record)
    assert w.close(timeout=10)
    assert w.counters["dropped_snapshots"] == 1 and w.counters["dropped_summaries"] == 1
    assert len(writer_store.catalog.metric(RUN, "loss")) == 1
