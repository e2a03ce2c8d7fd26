"""Probe snapshots: the same inputs at every snapshot step, without changing training."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tracker

STEPS = 6
SNAP = 2


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 3)
    )


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g))
        for _ in range(STEPS)
    ]


PROBE = (torch.randn(4, 6, generator=torch.Generator().manual_seed(9)), torch.tensor([0, 1, 2, 0]))


def _train(model: nn.Module, run: tracker.Run | None) -> list[dict]:
    """Train (dropout draws from the global RNG); return the state after each snapshot step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(1)
    states = []
    for step, (x, y) in enumerate(_batches()):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        grads = [p.grad.clone() for p in model.parameters()]
        if run is not None:
            run.log({"loss": loss.item()}, step=step)
            assert all(
                torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True)
            )
        if step % SNAP == 0:
            states.append(copy.deepcopy(model.state_dict()))
    return states


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_probe_changes_nothing_in_training(store_path: Path, mode: str) -> None:
    plain = _model()
    _train(plain, None)
    watched = _model()
    with tracker.init(project="probe", store=store_path) as run:
        run.watch(
            watched, snapshot_every=SNAP, probe=PROBE, loss_fn=F.cross_entropy, probe_mode=mode
        )
        _train(watched, run)
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs: the probe changed training"


def test_probe_snapshots_are_the_probe_through_that_step_s_weights(store_path: Path) -> None:
    model = _model()
    with tracker.init(project="probe", store=store_path) as run:
        run.watch(model, every=1, snapshot_every=SNAP, probe=PROBE, loss_fn=F.cross_entropy)
        states = _train(model, run)
    with tracker.open_run(run.id, store=store_path) as r:
        assert r.steps("0", "activation", probe=True).tolist() == list(range(0, STEPS, SNAP))
        for step, state in zip(range(0, STEPS, SNAP), states, strict=True):
            ref = _model()
            ref.load_state_dict(state)
            ref.eval()
            outs = []
            hooks = [
                m.register_forward_hook(lambda m, i, o, outs=outs: outs.append(o)) for m in ref
            ]
            loss = F.cross_entropy(ref(PROBE[0]), PROBE[1])
            grads = torch.autograd.grad(loss, outs)
            for h in hooks:
                h.remove()
            for index, (out, grad) in enumerate(zip(outs, grads, strict=True)):
                layer = str(index)
                np.testing.assert_array_equal(
                    r.tensor(layer, "activation", step, probe=True), out.detach().numpy()
                )
                np.testing.assert_array_equal(
                    r.tensor(layer, "activation_grad", step, probe=True), grad.numpy()
                )
            # the training batch's snapshot is a different thing, still there by default
            assert r.tensor("0", "activation", step).shape[0] == 8
        assert len(r.series("0", "activation", "mean", probe=True)[0]) == STEPS // SNAP
        assert len(r.series("0", "activation", "mean")[0]) == STEPS


def test_probe_without_targets_records_activations_only(store_path: Path) -> None:
    model = _model()
    with tracker.init(project="probe", store=store_path) as run:
        run.watch(model, snapshot_every=SNAP, probe=PROBE[0])
        _train(model, run)
    with tracker.open_run(run.id, store=store_path) as r:
        assert r.tensor("4", "activation", 0, probe=True).shape == (4, 3)
        assert len(r.steps("4", "activation_grad", probe=True)) == 0


def test_probe_arguments_are_checked(store_path: Path) -> None:
    with tracker.init(project="probe", store=store_path) as run:
        with pytest.raises(tracker.InvalidArgumentError, match="loss_fn"):
            run.watch(_model(), probe=PROBE)
        with pytest.raises(tracker.InvalidArgumentError, match="probe_mode"):
            run.watch(_model(), probe=PROBE[0], probe_mode="test")


def test_a_failing_probe_never_stops_training(store_path: Path) -> None:
    model = _model()
    with tracker.init(project="probe", store=store_path) as run:
        run.watch(model, snapshot_every=SNAP, probe=torch.randn(4, 7))  # wrong width
        _train(model, run)
    with tracker.open_run(run.id, store=store_path) as r:
        assert "running the probe inputs" in (r.info.status_reason or "")
        assert len(r.metrics("loss")[0]) == STEPS
