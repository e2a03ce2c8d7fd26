"""Alerts while training: within a few steps of a problem starting, and never on healthy runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tracker
from tracker.demo import digits_cnn, load_digits_tensors


def _digits(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_digits_tensors()
    g = torch.Generator().manual_seed(step)
    idx = torch.randint(0, len(images), (64,), generator=g)
    return images[idx], labels[idx]


def _train(run: tracker.Run, model: nn.Module, lr: float, steps: int) -> int:
    """Train the demo CNN; return the number of steps completed."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for step in range(steps):
        x, y = _digits(step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log({"loss": loss.item()}, step=step)
    return steps


def test_raise_stops_a_doomed_run_within_a_few_steps(store_path: Path) -> None:
    torch.manual_seed(0)
    model = digits_cnn()
    run = tracker.init(project="a", store=store_path)

    def doomed() -> None:
        with run:
            run.watch(model, every=1, on_problem="raise")
            _train(run, model, 0.5, 200)  # the demo's sick learning rate

    with pytest.raises(tracker.ProblemDetectedError) as caught:
        doomed()
    finding = caught.value.finding
    assert finding.code in ("dead_relu", "no_gradient") and finding.layer
    assert "lr" in str(caught.value) or "learning rate" in str(caught.value)
    with tracker.open_run(run.id, store=store_path) as r:
        assert r.status == "failed" and "ProblemDetectedError" in (r.info.status_reason or "")
        last = int(r.metrics("loss")[0][-1])
    # Raised at the first log() after the detector fired: patience (5) + the worker's lag (<= 2).
    assert finding.last_step <= last <= finding.last_step + 2


def test_callback_sees_nan_at_once(store_path: Path) -> None:
    class Blowup(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x * (1e39 if self.calls > 3 else 1.0)

    seen: list[tuple[int, tracker.Finding]] = []
    model = nn.Sequential(nn.Linear(4, 4), Blowup(), nn.Linear(4, 2))
    with tracker.init(project="a", store=store_path) as run:
        run.watch(model, every=1, on_problem=lambda f: seen.append((step, f)))
        for step in range(8):
            model(torch.randn(3, 4) * 10).sum().backward()
            run.log(step=step)
    first_step, finding = seen[0]
    assert (finding.code, finding.layer, finding.first_step) == ("nan_inf", "1", 3)
    assert first_step <= 3 + 2
    assert len({(f.code, f.layer, f.quantity) for _, f in seen}) == len(seen)  # each fires once


def test_warn_mode(store_path: Path) -> None:
    torch.manual_seed(0)
    model = digits_cnn()
    run = tracker.init(project="a", store=store_path)
    run.watch(model, every=1, on_problem="warn")
    with pytest.warns(tracker.ProblemWarning, match="dead"):
        _train(run, model, 0.5, 60)
    run.finish()


def test_healthy_training_raises_nothing(store_path: Path) -> None:
    torch.manual_seed(0)
    model = digits_cnn()
    with tracker.init(project="a", store=store_path) as run:
        run.watch(model, every=1, on_problem="raise")
        assert _train(run, model, 0.05, 120) == 120


def test_on_problem_is_checked(store_path: Path) -> None:
    with (
        tracker.init(project="a", store=store_path) as run,
        pytest.raises(tracker.InvalidArgumentError, match="on_problem"),
    ):
        run.watch(digits_cnn(), on_problem="email")
