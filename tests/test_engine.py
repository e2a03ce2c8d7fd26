"""The stats worker: order, back-pressure, dropping tensors (never metrics) when it is stuck."""

from __future__ import annotations

import threading

import pytest
import torch

from tracker.capture import engine as engine_module
from tracker.capture.engine import Engine, StepItem, StepRecord
from tracker.capture.step import TensorEntry, WatchCapture


def _capture(step: int) -> WatchCapture:
    t = torch.randn(3, 4)
    entry = TensorEntry("fc", "activation", "output", 0, 3, t)
    return WatchCapture(step, False, False, 8, 100, None, entries=[entry])


def test_steps_arrive_in_order_with_their_summaries() -> None:
    got: list[StepRecord] = []
    eng = Engine(got.append, lambda where, exc: None)
    for step in range(5):
        eng.submit(StepItem(step, None, 0.0, {"loss": float(step)}, [_capture(step)]))
    assert eng.close(timeout=10)
    assert [r.step for r in got] == list(range(5))
    assert all(len(r.summaries) == 1 for r in got)


def test_a_stuck_worker_costs_tensors_not_metrics() -> None:
    release = threading.Event()
    got: list[StepRecord] = []

    def slow_sink(record: StepRecord) -> None:
        release.wait(5)
        got.append(record)

    eng = Engine(slow_sink, lambda where, exc: None, max_pending=1, max_wait=0.05, direct=False)
    for step in range(4):
        eng.submit(StepItem(step, None, 0.0, {"loss": float(step)}, [_capture(step)]))
    release.set()
    assert eng.close(timeout=10)
    assert [r.metrics["loss"] for r in got] == [0.0, 1.0, 2.0, 3.0]
    assert eng.counters["dropped_steps"] >= 1
    assert sum(1 for r in got if not r.summaries) == eng.counters["dropped_steps"]


def test_waiting_for_parameters_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "PARAMS_WAIT_SECONDS", 0.05)
    release = threading.Event()
    eng = Engine(lambda record: release.wait(5), lambda where, exc: None, direct=False)
    eng.submit(StepItem(0, None, 0.0, {}, [_capture(0)]))
    eng.submit(StepItem(1, None, 0.0, {}, [_capture(1)]))  # waits behind step 0
    eng.wait_params_read()  # step 1's parameters cannot be read while the sink blocks
    assert eng.counters["params_wait_timeouts"] == 1
    release.set()
    assert eng.close(timeout=10)


def test_optimizer_hook_is_removed_on_close() -> None:
    import torch.optim.optimizer as opt

    before = len(opt._global_optimizer_pre_hooks)
    eng = Engine(lambda record: None, lambda where, exc: None)
    assert len(opt._global_optimizer_pre_hooks) == before + 1
    eng.close(timeout=5)
    assert len(opt._global_optimizer_pre_hooks) == before
