"""The GPU path: side streams and pinned copies give the same numbers as plain autograd.

These run only where CUDA is available (they are skipped on the CPU-only CI machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tracker
from tests.reference import assert_run_matches, reference_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    )


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [
        (torch.randn(10, 1, 6, 6, generator=g), torch.randint(0, 3, (10,), generator=g))
        for _ in range(3)
    ]


def test_cuda_run_matches_autograd(store_path: Path) -> None:
    batches = _batches()
    model = _model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with tracker.init(project="cuda", store=store_path) as run:
        run.watch(model, every=1, histogram_every=1, snapshot_every=1)
        for step, (x, y) in enumerate(batches):
            loss = F.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()}, step=step)
    ref_model = _model().cuda()
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.05, momentum=0.9)
    cuda_batches = [(x.cuda(), y.cuda()) for x, y in batches]
    expected = reference_run(ref_model, cuda_batches, F.cross_entropy, ref_opt)
    with tracker.open_run(run.id, store=store_path) as r:
        # cuDNN/cuBLAS reductions may differ from the reference's own only in rounding.
        assert assert_run_matches(r, expected, rtol=1e-4, atol=1e-6) > 0


def test_stats_are_computed_off_the_training_stream(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.capture import stats

    streams = []
    real_add = stats.StatsBatch.add

    def spy(self, tensor, kind=None, **options):  # type: ignore[no-untyped-def]
        if tensor.is_cuda:
            streams.append(torch.cuda.current_stream(tensor.device))
        return real_add(self, tensor, kind, **options)

    monkeypatch.setattr(stats.StatsBatch, "add", spy)
    model = _model().cuda()
    with tracker.init(project="cuda", store=store_path) as run:
        run.watch(model)
        model(torch.randn(2, 1, 6, 6, device="cuda")).sum().backward()
        run.log(step=0)
    assert streams and all(s != torch.cuda.default_stream(s.device) for s in streams)
