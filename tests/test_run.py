"""The client: run lifecycle, watch handles, bad input, and I1 (tracking never stops training)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tracker
from tracker.writer import WriterConfig


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> float:
    loss = F.cross_entropy(model(torch.randn(6, 4)), torch.randint(0, 2, (6,)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def test_context_manager_finishes_or_fails(store_path: Path) -> None:
    with tracker.init(project="p", name="ok", store=store_path) as run:
        run.log({"loss": 1.0})
    assert tracker.open_run(run.id, store=store_path).status == "finished"
    with (
        pytest.raises(RuntimeError),
        tracker.init(project="p", name="bad", store=store_path) as bad,
    ):
        raise RuntimeError("diverged")
    info = tracker.open_run(bad.id, store=store_path).info
    assert info.status == "failed" and info.status_reason == "RuntimeError: diverged"
    assert info.ended_at is not None


def test_run_identity_and_defaults(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_STORE", str(store_path))
    run = tracker.init(project="digits", config={"lr": 0.1, "opt": {"momentum": float("nan")}})
    try:
        assert len(run.id) == 16 and run.name.startswith("run-") and run.store == str(store_path)
    finally:
        run.finish()
    r = tracker.open_run(run.id)  # $TRACKER_STORE is the default store
    assert r.config == {"lr": 0.1, "opt": {"momentum": "nan"}}  # JSON has no NaN


def test_steps_default_to_previous_plus_one_and_epochs_map(store_path: Path) -> None:
    with tracker.init(project="p", store=store_path) as run:
        run.epoch(0)
        run.log({"loss": 3.0})
        run.log({"loss": 2.0})
        run.log({"loss": 1.0}, epoch=1)
        run.log({"acc": 0.5}, step=2)  # a second log for the same step adds metrics
    r = tracker.open_run(run.id, store=store_path)
    steps, values = r.metrics("loss")
    assert steps.tolist() == [0, 1, 2] and values.tolist() == [3.0, 2.0, 1.0]
    assert r.metrics("acc")[0].tolist() == [2]
    assert r.epochs() == [(0, 0, 1), (1, 2, 2)]


def test_metric_values_of_all_kinds(store_path: Path) -> None:
    with tracker.init(project="p", store=store_path) as run:
        run.log(
            {
                "t": torch.tensor(2.5),
                "np": np.float32(1.5),
                "i": 3,
                "nan": float("nan"),
                "inf": float("inf"),
            }
        )
    r = tracker.open_run(run.id, store=store_path)
    assert (
        r.metrics("t")[1][0] == 2.5 and r.metrics("np")[1][0] == 1.5 and r.metrics("i")[1][0] == 3
    )
    assert np.isnan(r.metrics("nan")[1][0]) and r.metrics("inf")[1][0] == np.inf


@pytest.mark.parametrize(
    ("metrics", "step", "match"),
    [
        ({"loss": "high"}, None, "must be a number"),
        ({"loss": torch.ones(3)}, None, "log a scalar"),
        ({"": 1.0}, None, "non-empty"),
        ({"a\x00b": 1.0}, None, "control characters"),
        ({"loss": 1.0}, -1, "step must be"),
        ({"loss": 1.0}, 1.5, "step must be"),
    ],
)
def test_bad_log_input_is_a_clear_error_and_loses_nothing(
    store_path: Path, metrics: dict, step: object, match: str
) -> None:
    with tracker.init(project="p", store=store_path) as run:
        run.log({"loss": 1.0}, step=0)
        with pytest.raises(tracker.InvalidArgumentError, match=match):
            run.log(metrics, step=step)  # type: ignore[arg-type]
    assert tracker.open_run(run.id, store=store_path).metrics("loss")[1].tolist() == [1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"project": ""}, "non-empty"),
        ({"project": "p", "name": "x" * 300}, "at most 256"),
        ({"project": "p", "tags": ["ok", "bad\n"]}, "control characters"),
    ],
)
def test_bad_init_arguments(store_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(tracker.InvalidArgumentError, match=match):
        tracker.init(store=store_path, **kwargs)


def test_read_only_store_is_a_clear_error(tmp_path: Path) -> None:
    # /proc is read-only even for root, which can write to any chmod-ed folder.
    with pytest.raises(tracker.StoreError, match="cannot create the store folder"):
        tracker.init(project="p", store="/proc/tracker-store")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # only meaningful for a user without root's powers
            with pytest.raises(tracker.StoreError):
                tracker.init(project="p", store=ro)
    finally:
        ro.chmod(0o700)


def test_watch_is_idempotent_and_close_removes_every_hook(store_path: Path) -> None:
    model = _model()
    with tracker.init(project="p", store=store_path) as run:
        watch = run.watch(model)
        assert run.watch(model) is watch
        assert watch.layers == ["0", "1", "2"]
        assert model[0]._forward_hooks
        watch.close()
        watch.close()
        assert not any(m._forward_hooks for m in model.modules())
        assert all(not getattr(p, "_post_accumulate_grad_hooks", None) for p in model.parameters())
        assert run.watch(model) is not watch  # a closed handle is replaced


def test_watch_warns_when_the_stats_kernel_is_missing(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tracker.run as run_module

    with tracker.init(project="p", store=store_path) as run, caplog.at_level(logging.WARNING):
        run.watch(_model())
        assert "stats kernel" not in caplog.text  # built in this install
        monkeypatch.setattr(run_module, "kernel_available", lambda: False)
        monkeypatch.setattr(run_module, "KERNEL_STATUS", "not built, so stats use NumPy")
        run.watch(_model(), prefix="second.")
    assert "the stats kernel is not built, so stats use NumPy" in caplog.text


def test_watch_rejects_bad_arguments(store_path: Path) -> None:
    with tracker.init(project="p", store=store_path) as run:
        with pytest.raises(tracker.InvalidArgumentError, match=r"torch\.nn\.Module"):
            run.watch("model")  # type: ignore[arg-type]
        with pytest.raises(tracker.InvalidArgumentError, match="every must be"):
            run.watch(_model(), every=0)
        with pytest.raises(tracker.InvalidArgumentError, match="snapshot_dtype"):
            run.watch(_model(), snapshot_dtype="int8")  # type: ignore[arg-type]
        run.watch(_model())
        with pytest.raises(tracker.InvalidArgumentError, match="prefix"):
            run.watch(_model())  # same layer names from a second model
        assert run.watch(_model(), prefix="ema.").layers[0] == "ema.0"


def test_finished_run_refuses_more(store_path: Path) -> None:
    run = tracker.init(project="p", store=store_path)
    run.finish()
    run.finish()  # idempotent
    with pytest.raises(tracker.TrackerError, match="finished"):
        run.log({"loss": 1.0})


def test_cadence_follows_every_histogram_and_snapshot(store_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tracker.init(project="p", store=store_path) as run:
        run.watch(model, every=2, histogram_every=3, snapshot_every=4)
        for step in range(9):
            run.log({"loss": _step(model, opt)}, step=step)
    r = tracker.open_run(run.id, store=store_path)
    assert r.series("0", "activation", "mean")[0].tolist() == [0, 2, 3, 4, 6, 8]
    assert r.histograms("0", "weight")[0].tolist() == [0, 3, 6]
    assert r.steps("0", "activation").tolist() == [0, 4, 8]


def test_tracking_failure_never_stops_training(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """I1: a broken stats worker and a broken writer leave training running; the run says why."""
    import tracker.capture.engine as engine

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("stats exploded")

    monkeypatch.setattr(engine.Planner, "plan", broken)  # the worker's and the direct path's
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with (
        caplog.at_level(logging.WARNING, logger="tracker"),
        tracker.init(project="p", store=store_path) as run,
    ):
        run.watch(model, every=1)
        losses = [_step(model, opt) for _ in range(5)]
        for step, loss in enumerate(losses):
            run.log({"loss": loss}, step=step)
    assert "stats exploded" in caplog.text
    r = tracker.open_run(run.id, store=store_path)
    assert r.status == "finished"
    assert "degraded" in (r.info.status_reason or "")
    assert r.info.summary["counters"]["error while summarizing a step"] == 5
    assert r.metrics("loss")[1].tolist() == losses  # metrics survive the broken worker


def test_unwritable_segment_folder_degrades_but_keeps_metrics(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracker.store.backend as backend  # where put_segment writes a segment

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backend, "write_segment", full)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tracker.init(project="p", store=store_path) as run:
        run.watch(model)
        for step in range(3):
            run.log({"loss": _step(model, opt)}, step=step)
    r = tracker.open_run(run.id, store=store_path)
    assert "No space left" in (r.info.status_reason or "")
    assert len(r.metrics("loss")[0]) == 3


def test_slow_run_becomes_visible_before_it_finishes(store_path: Path) -> None:
    import time

    run = tracker.init(project="p", store=store_path, writer=WriterConfig(flush_seconds=0.2))
    try:
        model = _model()
        run.watch(model)
        model(torch.randn(2, 4))
        run.log({"loss": 1.0}, step=0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = tracker.open_run(run.id, store=store_path)
            try:
                if len(r.series("0", "activation", "mean")[0]):
                    break
            except tracker.NotFoundError:  # nothing registered yet
                pass
            time.sleep(0.05)
        assert r.status == "running"
        assert r.series("0", "activation", "mean")[0].tolist() == [0]
        assert r.metrics("loss")[1].tolist() == [1.0]
    finally:
        run.finish()


def test_no_tensor_of_an_old_step_is_kept_alive(store_path: Path) -> None:
    import gc
    import weakref

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    refs: list[weakref.ref] = []
    model[1].register_forward_hook(lambda m, i, o: refs.append(weakref.ref(o)))
    with tracker.init(project="p", store=store_path) as run:
        run.watch(model, every=1)  # every step holds tensors: none may outlive its step
        for step in range(1000):
            run.log({"loss": _step(model, opt)}, step=step)
        run.flush()
        gc.collect()
        alive = [i for i, r in enumerate(refs) if r() is not None]
        assert alive == [], f"outputs of steps {alive} are still referenced"


SCRIPT = """
import sys, torch, tracker
run = tracker.init(project="p", name="exit", store=sys.argv[1])
model = torch.nn.Linear(3, 2)
run.watch(model, every=1)
for step in range(5):
    model(torch.randn(4, 3)).sum().backward()
    run.log({"loss": float(step)}, step=step)
if sys.argv[2] == "raise":
    raise ValueError("bad batch")
"""


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [("ok", "finished", None), ("raise", "failed", "ValueError: bad batch")],
)
def test_interpreter_exit_flushes_and_sets_status(
    store_path: Path, tmp_path: Path, mode: str, status: str, reason: str | None
) -> None:
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(store_path), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == (0 if mode == "ok" else 1), done.stderr
    with tracker.open_run("exit", store=store_path) as r:
        assert r.status == status and r.info.status_reason == reason
        assert r.metrics("loss")[1].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert r.series("model", "weight_grad", "norm")[0].tolist() == [0, 1, 2, 3, 4]


def test_default_cadence_records_every_tenth_step_and_histograms_every_fiftieth(
    store_path: Path,
) -> None:
    from tracker.capture.policy import WatchPolicy

    assert (WatchPolicy.every, WatchPolicy.histogram_every, WatchPolicy.snapshot_every) == (
        10,
        50,
        100,
    )
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tracker.init(project="p", store=store_path) as run:
        run.watch(model)
        for step in range(61):
            run.log({"loss": _step(model, opt)}, step=step)
    with tracker.open_run(run.id, store=store_path) as r:
        assert r.series("0", "activation", "mean")[0].tolist() == [0, 10, 20, 30, 40, 50, 60]
        assert len(r.metrics("loss")[0]) == 61  # metrics are every step regardless
        hist_steps, _ = r.histograms("0", "activation")
        assert hist_steps.tolist() == [0, 50]
