"""Steps reduced without the stats worker (direct.py) and the kernel's own thread (_reduce.c):
the same rows as the worker, in step order, handed over even when training pauses, and no tensor
freed or forgotten while the kernel's thread may read it."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from tracker.capture import engine as engine_module
from tracker.capture import stats
from tracker.capture.engine import Engine, StepItem, StepRecord
from tracker.capture.plan import Planner, pending_plan, run_plan, start_plan
from tracker.capture.step import GRAD_ENABLED, TRAINING_MODE, TensorEntry, WatchCapture

pytestmark = pytest.mark.skipif(not stats.kernel_available(), reason="kernel not built")
FLAGS = GRAD_ENABLED | TRAINING_MODE


def _capture(step: int, snapshots: bool = False) -> WatchCapture:
    g = torch.Generator().manual_seed(step)
    act = torch.randn(16, 8, 4, 4, generator=g).clamp(min=0)
    act[:, 3] = 0.0  # a dead channel
    grad = torch.randn(16, 8, 4, 4, generator=g) * 1e-3
    grad[0, 0, 0, 0] = float("inf")  # a row the kernel cannot trust: recomputed precisely
    weight = torch.randn(8, 4, 3, 3, generator=g)
    entries = [
        TensorEntry("conv", "activation", "output", 0, FLAGS, act, "relu", act, act._version),
        TensorEntry("conv", "activation_grad", "output", 0, FLAGS, grad),
        TensorEntry("conv", "weight", "weight", 0, FLAGS, weight, None, weight, weight._version),
        TensorEntry("conv", "weight_grad", "weight", 0, FLAGS, weight * 0.5),
    ]
    return WatchCapture(step, True, snapshots, 2, 100, None, entries=entries)


def _rows(records: list[StepRecord]) -> list[tuple]:
    out = []
    for record in records:
        for s in record.summaries:
            hist = None if s.histogram is None else s.histogram.tolist()
            out.append((record.step, s.layer, s.quantity, s.part, s.stats.tolist(), hist))
    return sorted(out, key=repr)


def test_direct_steps_store_what_the_worker_stores() -> None:
    records: dict[bool, list[StepRecord]] = {True: [], False: []}
    engines = {d: Engine(records[d].append, lambda w, e: None, direct=d) for d in records}
    for step in range(4):
        for eng in engines.values():
            eng.submit(StepItem(step, None, 0.0, {"loss": 1.0}, [_capture(step)]))
    for eng in engines.values():
        assert eng.close(timeout=10)
    assert engines[True]._direct_planner.built == 2 and engines[True]._planner.built == 0
    assert engines[False]._planner.built == 2
    direct, worker = _rows(records[True]), _rows(records[False])
    assert len(direct) == 4 * 4
    np.testing.assert_equal(direct, worker)  # NaN-aware, bit for bit
    nan_or_inf = [r for r in direct if r[2] == "activation_grad"]
    assert all(r[4][8] == 1.0 for r in nan_or_inf)  # inf_count, from the precise recompute


def test_direct_and_worker_steps_reach_the_sink_in_order() -> None:
    got: list[StepRecord] = []
    eng = Engine(got.append, lambda w, e: None)
    for step in range(9):
        # snapshots need the worker; the others go direct; every third step has no tensors
        captures = [] if step % 3 == 2 else [_capture(step, snapshots=step % 3 == 1)]
        eng.submit(StepItem(step, None, 0.0, {"loss": float(step)}, captures))
    assert eng.close(timeout=10)
    assert [r.step for r in got] == list(range(9))
    assert [len(r.summaries) for r in got] == [4, 4, 0] * 3
    assert eng._direct_planner.built == 2 and eng._planner.built == 2


def test_a_direct_step_reaches_the_sink_while_training_pauses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "DIRECT_IDLE_SECONDS", 0.05)
    arrived = threading.Event()
    eng = Engine(lambda record: arrived.set(), lambda w, e: None)
    eng.submit(StepItem(0, None, 0.0, {}, [_capture(0)]))
    assert eng._direct is not None  # taken directly: nothing was queued for the worker
    assert arrived.wait(5)  # no further submit() or flush(): the worker handed it over
    assert eng.close(timeout=10)


def test_an_activation_written_in_place_before_hand_over_is_dropped() -> None:
    got: list[StepRecord] = []
    eng = Engine(got.append, lambda w, e: None)
    capture = _capture(0)
    eng.submit(StepItem(0, None, 0.0, {}, [capture]))
    capture.entries[0].tensor.mul_(2)  # the user reuses the output buffer of the recorded step
    assert eng.close(timeout=10)
    kept = {(s.quantity, s.part) for s in got[0].summaries}
    assert ("activation", "output") not in kept and len(kept) == 3
    assert eng.counters["torn_reads"] == 1


def test_a_run_whose_histograms_outgrow_its_buffers_is_redone() -> None:
    entries = _capture(0).entries
    plan = Planner().plan(entries, True, None)
    want = run_plan(plan, [e.tensor for e in entries])
    plan.bins_needed = 1  # as if earlier runs had needed one bin: these buffers are too short
    run = start_plan(plan, [e.tensor for e in entries], background=True, own=True)
    assert len(run.bins) < int(want.hists.ptr[-1])
    pending = pending_plan(run, timeout=10)
    assert pending is not None
    got = pending.block()
    np.testing.assert_array_equal(got.stats, want.stats)
    for name in ("ptr", "bins", "counts"):
        np.testing.assert_array_equal(getattr(got.hists, name), getattr(want.hists, name))
    assert plan.bins_needed == int(want.hists.ptr[-1])  # the next run gets room for them all


def _job(t: torch.Tensor) -> tuple:
    jobs = np.array([[0, t.numel(), 0, 1, 0, 1, 1, t.numel()]], dtype=np.int64)
    out = (
        np.zeros((1, 11)),
        np.zeros(2, np.int64),
        np.zeros(512, np.uint16),
        np.zeros(512, np.int64),
    )
    return jobs, [t.data_ptr()], np.zeros((1, 2)), *out


def test_a_ticket_holds_the_tensors_until_the_kernel_is_done() -> None:
    from tracker.capture import _reduce

    t = torch.randn(1 << 16)
    t[5] = float("nan")
    gone = weakref.ref(t)
    args = _job(t)
    ticket = _reduce.reduce_many_async(*args, [t])
    del t
    gc.collect()
    assert gone() is not None  # only the ticket holds it now
    assert ticket.wait(10) == 1  # one row to recompute (the NaN)
    gc.collect()
    assert gone() is None
    assert ticket.done()
    with pytest.raises(RuntimeError, match="already taken"):
        ticket.wait()
    assert np.isnan(args[3][0, 7])  # nan_count left for the precise pass


def test_a_dropped_ticket_waits_for_the_kernel_before_letting_go() -> None:
    from tracker.capture import _reduce

    t = torch.randn(1 << 22)
    gone = weakref.ref(t)
    ticket = _reduce.reduce_many_async(*_job(t), [t])
    del t, ticket  # the ticket's dealloc waits, then drops the tensor
    gc.collect()
    assert gone() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_neither_hangs_nor_reads_freed_memory() -> None:
    from tracker.capture import _reduce

    t = torch.randn(1 << 22)
    ticket = _reduce.reduce_many_async(*_job(t), [t])
    pid = os.fork()
    if pid == 0:  # the child: the kernel's thread did not come along
        code = 1
        try:
            try:
                code = 0 if ticket.wait(5) is not None else 2  # done before the fork
            except RuntimeError:
                code = 0  # queued or running at the fork: failed, said so
            again = _reduce.reduce_many_async(*_job(t), [t])  # a new thread starts
            code = code or (0 if again.wait(5) == 0 else 3)
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(status) == 0
    assert ticket.wait(10) == 0
