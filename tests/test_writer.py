"""The writer: segments roll by steps and time; a catalog failure keeps metrics for the retry."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tracker.capture.block import StepBlock, Summary
from tracker.capture.engine import StepRecord
from tracker.capture.snapshot import Snapshot
from tracker.errors import InvalidArgumentError
from tracker.names import STAT_NAMES
from tracker.store import Store
from tracker.store import segment as seg
from tracker.store.locks import markers
from tracker.writer import Writer, WriterConfig

RUN = "00000000000000b1"


def _record(step: int, snapshot: Snapshot | None = None) -> StepRecord:
    stats = np.full(len(STAT_NAMES), float(step))
    summary = Summary("fc", "weight", "weight", 0, 3, stats, None, snapshot)
    return StepRecord(
        step,
        step // 10,
        time.time(),
        {"loss": 1.0 / (step + 1)},
        [StepBlock.from_summaries([summary])],
        {"fc": {"output": [2, 3]}},
    )


@pytest.fixture
def writer_store(any_store: Store) -> Store:
    any_store.catalog.create_run(RUN, "p", "r", {}, [], "h", 1, None)
    any_store.catalog.add_layers(
        RUN, [{"name": "fc", "position": 0, "type": "Linear", "kind": None, "params": {}}]
    )
    return any_store


def _writer(store: Store, problems: list, **config: object) -> Writer:
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


def test_a_segment_whose_registration_failed_is_registered_at_the_next_commit(
    writer_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database restart delays a segment's registration; nothing is lost or duplicated."""
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
    assert w.counters["unregistered_segments"] == 1 and w.counters["late_registrations"] == 1
    segments = writer_store.catalog.segments(RUN)
    assert sorted((s.step_min, s.step_max) for s in segments) == [(0, 4), (5, 9)]
    assert markers(writer_store.root) == []  # all registered: a clean finish


def test_a_catalog_down_until_the_end_leaves_its_segments_to_recovery(
    writer_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems: list = []

    def down(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database down")

    monkeypatch.setattr(writer_store.catalog, "commit_batch", down)
    w = _writer(writer_store, problems, steps_per_segment=5, flush_seconds=3600)
    for step in range(10):
        w.put(_record(step))
    assert not w.flush(timeout=10)  # not acknowledged: nothing is registered
    w.close(timeout=10)
    assert writer_store.catalog.segments(RUN) == []
    # The lock file stays, so the next open of the store registers both segments.
    assert [m.run_id for m in markers(writer_store.root)] == [RUN]
    monkeypatch.undo()
    with Store(writer_store.root, writer_store.catalog.url) as reopened:
        segments = reopened.catalog.segments(RUN)
        assert [(s.step_min, s.step_max) for s in segments] == [(0, 4), (5, 9)]
        assert [m.step for m in reopened.catalog.metric(RUN, "loss")] == list(range(10))
        assert markers(reopened.root) == []


def test_over_budget_queue_sheds_snapshots_then_summaries_never_metrics(
    writer_store: Store,
) -> None:
    w = _writer(writer_store, [], steps_per_segment=1000, flush_seconds=3600, max_queue_bytes=1)
    record = _record(0, Snapshot(np.zeros(1000, np.float32), "float32", (1000,)))
    w.put(record)
    assert w.close(timeout=10)
    assert w.counters["dropped_snapshots"] == 1 and w.counters["dropped_summaries"] == 1
    assert len(writer_store.catalog.metric(RUN, "loss")) == 1


def test_segments_roll_by_bytes(writer_store: Store) -> None:
    w = _writer(
        writer_store, [], steps_per_segment=1000, flush_seconds=3600, max_segment_bytes=10_000
    )
    for step in range(6):
        record = _record(step, Snapshot(np.full(1000, step, np.float32), "float32", (1000,)))
        w.put(record)  # 4,000 bytes of snapshot per step: a segment every 3 steps
    assert w.close(timeout=10)
    segments = writer_store.catalog.segments(RUN)
    assert [(s.step_min, s.step_max) for s in segments] == [(0, 2), (3, 5)]


def test_the_writer_holds_the_run_lock_until_it_closes(writer_store: Store) -> None:
    w = _writer(writer_store, [], steps_per_segment=2, flush_seconds=3600)
    w.put(_record(0))
    assert not writer_store.lock(RUN, 0, "compaction").acquire()
    assert w.close(timeout=10)
    assert markers(writer_store.root) == []  # closed cleanly: nothing to recover
    assert writer_store.lock(RUN, 0, "compaction").acquire()


def test_segment_files_carry_the_batch_they_were_committed_with(writer_store: Store) -> None:
    w = _writer(writer_store, [], steps_per_segment=5, flush_seconds=3600)
    for step in range(5):
        w.put(_record(step))
    assert w.close(timeout=10)
    (segment,) = writer_store.catalog.segments(RUN)
    with writer_store.files.open(segment.path) as f:
        batch = seg.read_batch(f)
    stored = {(m.step, m.value) for m in writer_store.catalog.metric(RUN, "loss")}
    assert {(step, value) for _, step, value, _, _ in batch.metrics} == stored
    assert batch.epochs == {0: (0, 4)} and batch.shapes == {"fc": {"output": [2, 3]}}


@pytest.mark.parametrize("compression", ["blosc-lz4", "zstd"])
def test_compressed_segments_read_back_bit_exact(writer_store: Store, compression: str) -> None:
    data = np.maximum(np.random.default_rng(0).standard_normal(5000), 0).astype(np.float16)
    w = _writer(writer_store, [], steps_per_segment=5, flush_seconds=3600, compression=compression)
    record = _record(0, Snapshot(data, "float16", (5000,)))
    w.put(record)
    assert w.close(timeout=10)
    (segment,) = writer_store.catalog.segments(RUN)
    with writer_store.files.open(segment.path) as f:
        stored = f["snaps/data"]  # every snapshot of the segment, chunked and compressed
        assert stored.compression is not None and stored.id.get_storage_size() < data.nbytes
        got, _ = seg.read_snapshot(f, ("fc", "weight", "weight"), 0, 0)
    assert got.dtype == np.float16 and got.tobytes() == data.tobytes()


def test_an_unknown_compression_is_refused(writer_store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="blosc-lz4"):
        _writer(writer_store, [], compression="gzip")
