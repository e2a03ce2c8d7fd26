"""I4: every stored quantity equals what plain autograd computes, on models that trip hooks up.

Each case trains the same model twice from the same seed and data: once with run.watch and once
with the reference harness (tests/reference.py, a model without in-place ops where the tracked one
has them). Snapshots must match bit for bit, histograms count for count, and stats to float32
summation-order tolerance.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tracker
from tests.reference import assert_run_matches, reference_run
from tracker.names import STAT_NAMES

STEPS = 4
EVERYTHING = {"every": 1, "histogram_every": 1, "snapshot_every": 1}
# float32 sums in a different order than NumPy's float64: a few ulps of the magnitudes involved.
RTOL, ATOL = 2e-5, 1e-6


class Block(nn.Module):
    """A ResNet-style block: BatchNorm, in-place ReLU and an in-place residual add."""

    def __init__(self, channels: int, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        if self.inplace:
            out += x  # overwrites the BatchNorm output the hook saw
        else:
            out = out + x
        return self.relu(out)


def cnn(inplace: bool) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=inplace),  # overwrites conv output 0
        Block(4, inplace),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )


def mlp(inplace: bool) -> nn.Module:
    return nn.Sequential(
        nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 8), nn.ReLU(inplace), nn.Linear(8, 3)
    )


class TwiceShared(nn.Module):
    """One module called twice per step, and one weight shared by two modules."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.enc = nn.Linear(6, 6)
        self.a = nn.Linear(6, 6, bias=False)
        self.b = nn.Linear(6, 6, bias=False)
        self.b.weight = self.a.weight
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.enc(torch.tanh(self.enc(x))))
        return self.head(self.a(h) + self.b(h))


class Frozen(nn.Module):
    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.frozen = nn.Linear(5, 5)
        self.frozen.requires_grad_(False)
        self.sig = nn.Sigmoid()
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.sig(self.frozen(x) * 3))


def _data(shape: tuple[int, ...], classes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(10, *shape, generator=g), torch.randint(0, classes, (10,), generator=g))
        for _ in range(STEPS)
    ]


CASES: dict[str, tuple[Callable[[bool], nn.Module], tuple[int, ...], int]] = {
    "mlp": (mlp, (12,), 3),
    "cnn_inplace_bn_residual": (cnn, (1, 6, 6), 5),
    "called_twice_shared_weight": (TwiceShared, (6,), 2),
    "frozen_layer_sigmoid": (Frozen, (5,), 2),
}


def _train_tracked(factory: Callable[[bool], nn.Module], data: list, store: Path) -> str:
    torch.manual_seed(0)
    model = factory(True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with tracker.init(project="capture", store=store) as run:
        run.watch(model, **EVERYTHING)
        for step, (x, y) in enumerate(data):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()}, step=step)
        return run.id


def _reference(factory: Callable[[bool], nn.Module], data: list) -> list:
    torch.manual_seed(0)
    model = factory(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return reference_run(model, data, F.cross_entropy, opt)


def _kind(reader: tracker.RunReader, layer: str, quantity: str) -> str | None:
    return reader.layer_info(layer)["kind"] if quantity == "activation" else None


@pytest.mark.parametrize("case", list(CASES))
def test_every_quantity_matches_autograd(case: str, store_path: Path) -> None:
    factory, shape, classes = CASES[case]
    data = _data(shape, classes)
    run_id = _train_tracked(factory, data, store_path)
    expected = _reference(factory, data)
    with tracker.open_run(run_id, store=store_path) as r:
        steps, losses = r.metrics("loss")
        assert steps.tolist() == list(range(STEPS))
        np.testing.assert_array_equal(losses, [s.loss for s in expected])
        checked = assert_run_matches(r, expected, RTOL, ATOL)
        assert checked == sum(len(s.tensors) for s in expected)


def test_hooks_come_off_between_recorded_steps_and_recorded_steps_still_match(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.capture import watch as watch_module

    # Another test in this process may have run torch.compile, which keeps hooks on for good.
    monkeypatch.setattr(watch_module, "_dynamo_frames", lambda: 0)
    factory, shape, classes = CASES["cnn_inplace_bn_residual"]
    data = _data(shape, classes) + _data(shape, classes)[:3]  # 7 steps
    torch.manual_seed(0)
    model = factory(True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    forward_hooked, param_hooked = [], []
    with tracker.init(project="capture", store=store_path) as run:
        run.watch(model, every=3, histogram_every=3, snapshot_every=3)
        for step, (x, y) in enumerate(data):
            forward_hooked.append(bool(model[0]._forward_hooks))
            param_hooked.append(bool(model[0].weight._backward_hooks))
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()}, step=step)
    # Forward hooks only for recorded steps; parameter hooks also for the step after (its
    # backward must not write a .grad being read).
    assert forward_hooked == [True, False, False, True, False, False, True]
    assert param_hooked == [True, True, False, True, True, False, True]
    expected = _reference(factory, data)
    recorded = [
        s if i % 3 == 0 else dataclasses.replace(s, tensors={}) for i, s in enumerate(expected)
    ]
    with tracker.open_run(run.id, store=store_path) as r:
        assert r.series("0", "activation", "mean")[0].tolist() == [0, 3, 6]
        assert assert_run_matches(r, recorded, RTOL, ATOL) == sum(len(s.tensors) for s in recorded)


def test_hooks_stay_on_once_torch_compile_has_run(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.capture import watch as watch_module

    frames = [0]  # what torch._dynamo's frame counter says
    monkeypatch.setattr(watch_module, "_dynamo_frames", lambda: frames[0])
    model = nn.Sequential(nn.Linear(4, 3))
    errors: list[str] = []
    with tracker.init(project="capture", store=store_path) as run:
        monkeypatch.setattr(run, "_report", lambda what, exc: errors.append(str(exc)))
        watch = run.watch(model, every=3)
        watch._on_error = run._report
        states = []
        for step in range(7):
            if step == 2:
                frames[0] = 1  # torch.compile runs while the hooks are off
            model(torch.randn(2, 4)).sum().backward()
            run.log(step=step)
            states.append(bool(model[0]._forward_hooks))
    # Off for steps 1 and 2; back on (with a warning) for step 3 and never off again.
    assert states == [False, False, True, True, True, True, True]
    assert len(errors) == 1 and "torch.compile compiled code while" in errors[0]


def test_inplace_outputs_are_the_values_before_the_inplace_op(store_path: Path) -> None:
    factory, shape, classes = CASES["cnn_inplace_bn_residual"]
    data = _data(shape, classes)
    run_id = _train_tracked(factory, data, store_path)
    with tracker.open_run(run_id, store=store_path) as r:
        conv_out = r.tensor("0", "activation", STEPS - 1)
        relu_out = r.tensor("1", "activation", STEPS - 1)
        assert (conv_out < 0).any(), "the conv output must keep its negative values"
        assert (relu_out >= 0).all()
        _, dead = r.series("1", "activation", "zero_frac")
        assert (dead > 0).all()


def test_frozen_layer_has_weights_but_no_weight_gradient(store_path: Path) -> None:
    factory, shape, classes = CASES["frozen_layer_sigmoid"]
    run_id = _train_tracked(factory, _data(shape, classes), store_path)
    with tracker.open_run(run_id, store=store_path) as r:
        assert len(r.series("frozen", "weight", "norm")[0]) == STEPS
        assert len(r.series("frozen", "weight_grad", "norm")[0]) == 0
        assert len(r.series("frozen", "activation_grad", "norm")[0]) == 0  # no input needs grad
        sat_steps, saturated = r.series("sig", "activation", "saturated_frac")
        assert len(sat_steps) == STEPS and np.isfinite(saturated).all()


@pytest.mark.parametrize("snapshot_every", [0, 1])  # 1: the worker's path; 0: the direct one
def test_gradients_zeroed_in_place_are_recorded_not_torn(
    snapshot_every: int, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zero_grad(set_to_none=False) at the top of the loop writes last step's .grad in place,
    with no hook beforehand, while the worker may not have read it yet (and a version check
    cannot see a write still in progress): such gradients are copied when the step closes, and
    so is each parameter's first, before the watch knows."""
    from tracker.capture.plan import Planner

    reduce = Planner.reduce

    def late_reduce(self: Planner, *args: object) -> object:
        time.sleep(0.02)  # the worker behind: the next zero_grad() always comes first
        return reduce(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Planner, "reduce", late_reduce)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.Linear(128, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 64), torch.randint(0, 4, (32,))
    want = []
    with tracker.init(project="capture", store=store_path) as run:
        run.watch(model, every=1, histogram_every=1, snapshot_every=snapshot_every)
        for step in range(8):
            opt.zero_grad(set_to_none=False)
            F.cross_entropy(model(x), y).backward()
            want.append(float(model[2].weight.grad.double().norm()))
            opt.step()
            run.log({}, step=step)
        run.flush()
        torn = run._engine.counters["torn_reads"]
    with tracker.open_run(run.id, store=store_path) as r:
        steps, norms = r.series("2", "weight_grad", "norm", param="weight")
    assert torn == 0
    assert steps.tolist() == list(range(8))
    np.testing.assert_allclose(norms, want, rtol=RTOL)


def test_eval_forward_between_steps_is_kept_apart_from_training(store_path: Path) -> None:
    torch.manual_seed(0)
    model = mlp(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = _data((12,), 3)
    val_x = torch.randn(7, 12)
    with tracker.init(project="capture", store=store_path) as run:
        run.watch(model, **EVERYTHING)
        for step, (x, y) in enumerate(data):
            if step == 2:  # a validation pass lands in step 2's window before its training forward
                model.eval()
                with torch.no_grad():
                    model(val_x)
                model.train()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()}, step=step)
    with tracker.open_run(run.id, store=store_path) as r:
        _, counts = r.series("0", "activation", "count")
        assert counts.tolist() == [10 * 16] * STEPS  # the default view is the training forward
        assert r.tensor("0", "activation", 2, call=0).shape[0] == 7  # the eval call is kept too
        assert r.tensor("0", "activation", 2).shape[0] == 8  # first 8 of the training batch of 10
        assert r.tensor_with_meta("0", "activation", 2)[1]["call"] == 1


def test_no_grad_and_eval_forwards_record_activations_only(store_path: Path) -> None:
    model = mlp(False).eval()
    with tracker.init(project="capture", store=store_path) as run:
        run.watch(model, **EVERYTHING)
        with torch.no_grad():
            for step in range(3):
                model(torch.randn(4, 12))
                run.log(step=step)
    with tracker.open_run(run.id, store=store_path) as r:
        assert len(r.series("0", "activation", "mean")[0]) == 3
        assert len(r.series("0", "activation_grad", "mean")[0]) == 0
        assert len(r.series("0", "weight_grad", "mean")[0]) == 0


def test_activation_checkpointing_records_each_forward_once(store_path: Path) -> None:
    from torch.utils.checkpoint import checkpoint

    inner = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    head = nn.Linear(8, 2)
    model = nn.ModuleDict({"inner": inner, "head": head})
    with tracker.init(project="capture", store=store_path) as run:
        run.watch(model, **EVERYTHING)
        x = torch.randn(4, 8, requires_grad=True)
        out = head(checkpoint(inner, x, use_reentrant=False))
        out.sum().backward()
        run.log(step=0)
    with tracker.open_run(run.id, store=store_path) as r:
        with pytest.raises(tracker.NotFoundError):
            r.tensor("inner.0", "activation", 0, call=1)  # the recompute in backward is not a call
        assert len(r.series("inner.0", "activation_grad", "norm")[0]) == 1


def test_stats_names_are_stable() -> None:
    # Stored files index stats by position: reordering STAT_NAMES would corrupt old data.
    assert STAT_NAMES[:6] == ("count", "mean", "std", "min", "max", "norm")
