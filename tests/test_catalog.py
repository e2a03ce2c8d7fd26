"""The catalog on SQLite and PostgreSQL: runs, layers, segments, metrics, epochs."""

from __future__ import annotations

import math
import time

import pytest
from sqlalchemy.exc import IntegrityError

from tracker.catalog import ConflictError, MetricRow
from tracker.errors import NotFoundError
from tracker.store import Store


def _run(
    store: Store, run_id: str = "00000000000000a1", project: str = "p", name: str = "r"
) -> None:
    store.catalog.create_run(
        run_id, project, name, {"lr": 0.1, "nested": {"a": [1, 2]}}, ["t"], "host", 1, None
    )


def _segment(seg_id: str, lo: int, hi: int) -> dict:
    return {
        "id": seg_id,
        "rank": 0,
        "step_min": lo,
        "step_max": hi,
        "n_steps": hi - lo + 1,
        "path": f"runs/x/{seg_id}.h5",
        "nbytes": 10,
        "checksum": "0" * 64,
        "schema_version": 1,
    }


def test_create_and_list_runs(any_store: Store) -> None:
    _run(any_store, "00000000000000a1", "p", "first")
    _run(any_store, "00000000000000a2", "p", "second")
    _run(any_store, "00000000000000a3", "q", "first")
    cat = any_store.catalog
    assert [r.name for r, _ in cat.runs(project="p")] == ["second", "first"]
    assert [p for _, p in cat.runs(name="first")] == ["q", "p"]
    assert cat.projects() == [("p", 2), ("q", 1)]
    run = cat.get_run("00000000000000a1")
    assert (
        run is not None
        and run.status == "running"
        and run.config == {"lr": 0.1, "nested": {"a": [1, 2]}}
    )
    assert run.started_at.tzinfo is not None


def test_status_transitions(any_store: Store) -> None:
    _run(any_store)
    any_store.catalog.set_status("00000000000000a1", "failed", "ValueError: boom", ended=True)
    run = any_store.catalog.get_run("00000000000000a1")
    assert run.status == "failed" and run.status_reason == "ValueError: boom" and run.ended_at
    with pytest.raises(NotFoundError):
        any_store.catalog.set_status("ffffffffffffffff", "finished")


def test_commit_batch_registers_segment_metrics_epochs_atomically(any_store: Store) -> None:
    _run(any_store)
    cat = any_store.catalog
    cat.add_layers(
        "00000000000000a1",
        [
            {
                "name": "fc",
                "position": 0,
                "type": "Linear",
                "kind": None,
                "params": {"weight": [2, 3]},
            }
        ],
    )
    now = time.time()
    metrics = [MetricRow("loss", s, 1.0 / (s + 1), s // 2, now) for s in range(4)]
    metrics.append(MetricRow("acc", 3, math.nan, 1, now))
    cat.commit_batch(
        "00000000000000a1",
        _segment("s1", 0, 3),
        metrics,
        {0: (0, 1), 1: (2, 3)},
        {"fc": {"output": [8, 2]}},
        {"dropped_steps": 0, "segments": 1},
    )
    # a second batch overlaps epoch 1 and re-logs step 3
    cat.commit_batch(
        "00000000000000a1",
        _segment("s2", 4, 5),
        [MetricRow("loss", 3, 9.0, 1, now)],
        {1: (4, 5)},
        {},
        {},
    )
    assert [s.id for s in cat.segments("00000000000000a1")] == ["s1", "s2"]
    assert [(m.step, m.value) for m in cat.metric("00000000000000a1", "loss")][-1] == (3, 9.0)
    assert cat.metric("00000000000000a1", "acc")[0].value is None  # NaN is stored as NULL
    assert [(e.epoch, e.first_step, e.last_step) for e in cat.epochs("00000000000000a1")] == [
        (0, 0, 1),
        (1, 2, 5),
    ]
    assert cat.layers("00000000000000a1")[0].shapes == {"output": [8, 2]}
    summary = cat.get_run("00000000000000a1").summary
    assert summary["metrics"]["loss"] == {"step": 3, "value": 9.0}
    assert summary["metrics"]["acc"]["value"] == "nan"
    assert summary["counters"] == {"segments": 1}
    assert cat.metric_names("00000000000000a1") == ["acc", "loss"]


def test_failed_commit_changes_nothing(any_store: Store) -> None:
    _run(any_store)
    cat = any_store.catalog
    cat.commit_batch("00000000000000a1", _segment("s1", 0, 1), [], {}, {}, {})
    with pytest.raises(IntegrityError):  # the same segment path again violates a unique constraint
        cat.commit_batch(
            "00000000000000a1",
            _segment("s9", 2, 3) | {"path": "runs/x/s1.h5"},
            [MetricRow("loss", 2, 1.0, None, 0.0)],
            {},
            {},
            {},
        )
    assert [s.id for s in cat.segments("00000000000000a1")] == ["s1"]
    assert cat.metric("00000000000000a1", "loss") == []


def test_layers_are_registered_once(any_store: Store) -> None:
    _run(any_store)
    info = {"name": "fc", "position": 0, "type": "Linear", "kind": None, "params": {}}
    any_store.catalog.add_layers("00000000000000a1", [info])
    any_store.catalog.add_layers(
        "00000000000000a1", [info, {**info, "name": "relu", "position": 1}]
    )
    assert [layer.name for layer in any_store.catalog.layers("00000000000000a1")] == ["fc", "relu"]


def test_delete_run_removes_every_row(any_store: Store) -> None:
    _run(any_store)
    any_store.catalog.commit_batch(
        "00000000000000a1",
        _segment("s1", 0, 1),
        [MetricRow("l", 0, 1.0, 0, 0.0)],
        {0: (0, 1)},
        {},
        {},
    )
    any_store.catalog.delete_run("00000000000000a1")
    assert any_store.catalog.get_run("00000000000000a1") is None
    assert any_store.catalog.segments("00000000000000a1") == []


def _segment_row(seg_id: str, lo: int, hi: int, kind: str = "segment") -> dict:
    return _segment(seg_id, lo, hi) | {"kind": kind, "path": f"runs/x/{seg_id}.h5"}


def test_segments_at_finds_the_files_holding_a_step(any_store: Store) -> None:
    _run(any_store)
    cat = any_store.catalog
    for i in range(50):  # steps 0-999 in 50 segments of 20 steps
        cat.commit_batch(
            "00000000000000a1", _segment_row(f"s{i}", 20 * i, 20 * i + 19), [], {}, {}, {}
        )
    cat.commit_batch("00000000000000a1", _segment_row("late", 5, 5), [], {}, {}, {})  # re-logged
    kinds = ("segment", "snapshots")
    assert [s.id for s in cat.segments_at("00000000000000a1", 0, 990, kinds)] == ["s49"]
    assert [s.id for s in cat.segments_at("00000000000000a1", 0, 5, kinds)] == ["s0", "late"]
    assert cat.segments_at("00000000000000a1", 0, 1000, kinds) == []
    assert cat.segments_at("00000000000000a1", 1, 990, kinds) == []  # another rank
    assert cat.segments_at("00000000000000a1", 0, 990, ("stats",)) == []


def test_a_swap_is_atomic_and_refuses_a_stale_view(any_store: Store) -> None:
    _run(any_store)
    cat = any_store.catalog
    for i in range(3):
        cat.commit_batch("00000000000000a1", _segment_row(f"s{i}", i, i), [], {}, {}, {})
    cat.swap_segments("00000000000000a1", [_segment_row("c1", 0, 2, "stats")], ["s0", "s1", "s2"])
    assert [(s.id, s.kind) for s in cat.segments("00000000000000a1")] == [("c1", "stats")]
    assert len(cat.segments("00000000000000a1", superseded=True)) == 4
    # A second compaction working from the old rows must not register its files.
    with pytest.raises(ConflictError, match="nothing was changed"):
        cat.swap_segments("00000000000000a1", [_segment_row("c2", 0, 2, "stats")], ["s1", "s2"])
    assert [s.id for s in cat.segments("00000000000000a1")] == ["c1"]
    cat.forget_segments(["s0", "s1", "s2"])
    assert [s.id for s in cat.segments("00000000000000a1", superseded=True)] == ["c1"]
    assert cat.usage("00000000000000a1") == [("stats", False, 1, 10)]


def test_only_a_running_run_is_marked_crashed(any_store: Store) -> None:
    _run(any_store)
    assert any_store.catalog.mark_crashed("00000000000000a1", "its writer died")
    run = any_store.catalog.get_run("00000000000000a1")
    assert run.status == "crashed" and run.status_reason == "its writer died"
    any_store.catalog.set_status("00000000000000a1", "finished")
    assert not any_store.catalog.mark_crashed("00000000000000a1", "again")
    assert any_store.catalog.get_run("00000000000000a1").status == "finished"


def test_recovered_metrics_do_not_overwrite_newer_values(any_store: Store) -> None:
    _run(any_store)
    cat = any_store.catalog
    cat.commit_batch("00000000000000a1", None, [MetricRow("loss", 1, 2.0, None, 0.0)], {}, {}, {})
    old = [MetricRow("loss", 1, 1.0, None, 0.0), MetricRow("loss", 2, 3.0, None, 0.0)]
    cat.commit_batch("00000000000000a1", None, old, {}, {}, {}, overwrite_metrics=False)
    assert [(m.step, m.value) for m in cat.metric("00000000000000a1", "loss")] == [
        (1, 2.0),
        (2, 3.0),
    ]


@pytest.mark.slow
def test_eight_processes_register_segments_at_once_and_none_is_lost(
    any_store: Store,
) -> None:
    from tests import children

    runs = [f"{i:016x}" for i in range(1, 9)]
    for run_id in runs:
        _run(any_store, run_id)
    ctx = children.context()
    go = ctx.Event()
    count = 60
    procs = [
        ctx.Process(target=children.register_segments, args=(any_store.catalog.url, r, count, go))
        for r in runs
    ]
    for p in procs:
        p.start()
    go.set()  # all at once
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    for run_id in runs:
        segments = any_store.catalog.segments(run_id)
        assert [s.step_min for s in segments] == list(range(count))
        assert [m.step for m in any_store.catalog.metric(run_id, "loss")] == list(range(count))
        assert any_store.catalog.get_run(run_id).summary["counters"] == {"segments": count}
