"""The catalog on SQLite and PostgreSQL: runs, layers, segments, metrics, epochs."""

from __future__ import annotations

import math
import time

import pytest
from sqlalchemy.exc import IntegrityError

from tracker.catalog import MetricRow
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
