"""DDP on CPU (gloo, 2 processes): one run, each rank's own activations, all-reduced gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import tracker

STEPS = 3


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * rank + step)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def _train(rank: int, world: int, init_file: str, store: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ddp = DistributedDataParallel(_model())
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        with tracker.init(project="ddp", name="two-ranks", store=store) as run:
            run.watch(ddp, every=1, histogram_every=1, snapshot_every=1)
            for step in range(STEPS):
                x, y = _batch(rank, step)
                loss = F.cross_entropy(ddp(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log({"loss": loss.item(), "rank": float(rank)}, step=step)
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_share_one_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    mp.spawn(_train, args=(2, str(tmp_path / "pg"), str(store)), nprocs=2, join=True)

    runs = tracker.list_runs(store=store)
    assert [(r.name, r.status) for r in runs] == [("two-ranks", "finished")]
    run_id = runs[0].id

    # The reference: the mean of both ranks' gradients at step 0, and each rank's own outputs.
    model = _model()
    grads = []
    for rank in (0, 1):
        model.zero_grad()
        F.cross_entropy(model(_batch(rank, 0)[0]), _batch(rank, 0)[1]).backward()
        grads.append(model[0].weight.grad.clone())
    averaged = (grads[0] + grads[1]) / 2

    with tracker.open_run(run_id, store=store) as r:
        assert r.layers() == ["0", "1", "2"]  # names without DDP's "module." prefix
        assert r.metrics("rank")[1].tolist() == [0.0] * STEPS  # metrics come from rank 0
        np.testing.assert_allclose(
            r.tensor("0", "weight_grad", 0), averaged.numpy(), rtol=1e-5, atol=1e-7
        )
        np.testing.assert_allclose(
            r.tensor("0", "activation", 0), model[0](_batch(0, 0)[0]).detach().numpy(), rtol=1e-6
        )
        assert r.ranks() == [0, 1]
        x1 = _batch(1, 0)[0]
        with r.for_rank(1) as rank1:  # each rank's own batch, the same all-reduced gradient
            np.testing.assert_allclose(
                rank1.tensor("0", "activation", 0), model[0](x1).detach().numpy(), rtol=1e-6
            )
            np.testing.assert_allclose(
                rank1.tensor("0", "weight_grad", 0), averaged.numpy(), rtol=1e-5, atol=1e-7
            )
            assert rank1.series("0", "activation", "mean")[0].tolist() == list(range(STEPS))
    with tracker.open_run(run_id, store=store, rank=1) as r1:
        assert r1.rank == 1 and r1.tensor("0", "activation", 0).shape == (8, 12)
