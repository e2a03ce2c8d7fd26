"""I4 on the models users bring: recurrent, structured outputs, transformers, mixed precision,
gradient accumulation, torch.compile, NaN/Inf. Each tracked run is checked tensor by tensor
against the plain-autograd reference (tests/reference.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import tracker
from tests.reference import assert_run_matches, reference_run

STEPS = 3
EVERYTHING = {"every": 1, "histogram_every": 1, "snapshot_every": 1}


class LSTMNet(nn.Module):
    """Tuple outputs (out, (h, c)); only `out` reaches the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class PackedGRU(nn.Module):
    """A PackedSequence in, (PackedSequence, h) out; only h reaches the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 5, batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = torch.tensor([6, 4, 5, 2, 6, 3, 1, 6, 5, 4])
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.head(h[-1])


@dataclass
class Halves:
    low: torch.Tensor
    high: torch.Tensor


class Split(nn.Module):
    """A leaf returning a dict and a leaf returning a dataclass."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.w = nn.Parameter(torch.randn(5, 5) * 0.5)

    def forward(self, x: torch.Tensor) -> Any:
        h = x @ self.w
        if self.as_dict:
            return {"relu": torch.relu(h), "tanh": torch.tanh(h)}
        return Halves(h[:, :2], h[:, 2:])


class Structured(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Split(as_dict=True)
        self.b = Split(as_dict=False)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.a(x)
        halves = self.b(d["relu"] + d["tanh"])
        return self.head(torch.cat([halves.low, halves.high], dim=1))


class Transformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.TransformerEncoderLayer(
            8, 2, dim_feedforward=16, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x).mean(dim=1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def _batches(shape: tuple[int, ...], n: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [
        (torch.randn(10, *shape, generator=g), torch.randint(0, 3, (10,), generator=g))
        for _ in range(n)
    ]


def _tracked(
    factory: Callable[[], nn.Module],
    batches: list,
    store: Path,
    autocast: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    watch_wrapped: bool = False,
) -> str:
    torch.manual_seed(0)
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    runnable = wrap(model) if wrap else model
    with tracker.init(project="models", store=store) as run:
        run.watch(runnable if watch_wrapped else model, scaler=scaler, **EVERYTHING)
        for step, (x, y) in enumerate(batches):
            with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
                loss = F.cross_entropy(runnable(x), y)
            opt.zero_grad()
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            run.log({"loss": loss.item()}, step=step)
        return run.id


def _expected(factory: Callable[[], nn.Module], batches: list, **kwargs: Any) -> list:
    torch.manual_seed(0)
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return reference_run(model, batches, F.cross_entropy, opt, **kwargs)


CASES = {
    "lstm_tuple_outputs": (LSTMNet, (6, 4)),
    "gru_packed_sequence": (PackedGRU, (6, 4)),
    "dict_and_dataclass_outputs": (Structured, (5,)),
    "transformer_encoder_layer": (Transformer, (4, 8)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_model_matches_autograd(case: str, store_path: Path) -> None:
    factory, shape = CASES[case]
    batches = _batches(shape)
    run_id = _tracked(factory, batches, store_path)
    expected = _expected(factory, batches)
    with tracker.open_run(run_id, store=store_path) as r:
        assert r.metrics("loss")[1].tolist() == [s.loss for s in expected]
        assert assert_run_matches(r, expected, rtol=5e-5, atol=1e-6) == sum(
            len(s.tensors) for s in expected
        )


def test_part_names_of_structured_outputs(store_path: Path) -> None:
    run_id = _tracked(Structured, _batches((5,), 1), store_path)
    run_id2 = _tracked(LSTMNet, _batches((6, 4), 1), store_path)
    with (
        tracker.open_run(run_id, store=store_path) as r,
        tracker.open_run(run_id2, store=store_path) as r2,
    ):
        assert r.parts("a", "activation") == ["output.relu", "output.tanh"]
        assert r.parts("b", "activation") == ["output.low", "output.high"]
        assert r2.parts("lstm", "activation") == ["output.0", "output.1.0", "output.1.1"]
        assert (
            len(r2.series("lstm", "activation_grad", "norm", param="output.1.0")[0]) == 0
        )  # h unused


def test_bf16_autocast_stats_in_float32_and_snapshots_exact(store_path: Path) -> None:
    batches = _batches((6,))
    run_id = _tracked(mlp, batches, store_path, autocast=torch.bfloat16)
    expected = _expected(mlp, batches, autocast=torch.bfloat16)
    with tracker.open_run(run_id, store=store_path) as r:
        assert r.tensor_with_meta("0", "activation", 0)[1]["dtype"] == "bfloat16"
        assert assert_run_matches(r, expected, rtol=5e-5, atol=1e-6) > 0


def test_float16_grad_scaler_gradients_are_stored_unscaled(store_path: Path) -> None:
    batches = _batches((6,))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    run_id = _tracked(mlp, batches, store_path, autocast=torch.float16, scaler=scaler)
    expected = _expected(mlp, batches, autocast=torch.float16, loss_scale=2.0**8)
    with tracker.open_run(run_id, store=store_path) as r:
        assert assert_run_matches(r, expected, rtol=5e-5, atol=1e-6) > 0
        assert r.metrics("amp/grad_scale")[1].tolist() == [256.0] * STEPS
        assert r.metrics("amp/overflow")[1].tolist() == [0.0] * STEPS


def test_grad_scaler_overflow_step_is_recorded_as_such(store_path: Path) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**80)  # overflows float16 at once
    run_id = _tracked(mlp, _batches((6,)), store_path, autocast=torch.float16, scaler=scaler)
    with tracker.open_run(run_id, store=store_path) as r:
        _, overflow = r.metrics("amp/overflow")
        assert overflow[0] == 1.0
        counts = r.histograms("2", "weight_grad")[1]
        assert counts.sum(axis=1).tolist() == [36] * STEPS  # histograms stay whole
        assert np.isfinite(
            r.series("2", "weight", "mean")[1]
        ).all()  # the skipped step kept weights


def test_gradient_accumulation_records_each_micro_batch_and_the_accumulated_grad(
    store_path: Path,
) -> None:
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    micro = _batches((6,), 3)
    with tracker.init(project="models", store=store_path) as run:
        run.watch(model, **EVERYTHING)
        opt.zero_grad()
        for x, y in micro:
            (F.cross_entropy(model(x), y) / 3).backward()
        accumulated = model[0].weight.grad.clone()
        opt.step()
        run.log(step=0)
    with tracker.open_run(run.id, store=store_path) as r:
        np.testing.assert_array_equal(r.tensor("0", "weight_grad", 0), accumulated.numpy())
        for call, (x, _) in enumerate(micro):
            got = r.tensor("0", "activation", 0, call=call)
            torch.manual_seed(0)
            first = mlp()[0]
            np.testing.assert_allclose(got, first(x).detach().numpy()[:8], rtol=1e-6)
        assert len(r.series("0", "activation_grad", "norm", call=2)[0]) == 1


# Dynamo warns when it resumes tracing after the graph break at each (eager) tracker hook.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize("order", ["watch_then_compile", "compile_then_watch"])
def test_torch_compile(order: str, store_path: Path) -> None:
    batches = _batches((6,))
    run_id = _tracked(
        mlp, batches, store_path, wrap=torch.compile, watch_wrapped=order == "compile_then_watch"
    )
    expected = _expected(mlp, batches)
    with tracker.open_run(run_id, store=store_path) as r:
        assert r.layers() == ["0", "1", "2"]  # names as without compile
        # Inductor's fused kernels round differently from eager ones (~1e-9 relative here).
        checked = assert_run_matches(r, expected, rtol=1e-5, atol=1e-7, exact=False)
        assert checked == sum(len(s.tensors) for s in expected)


def test_nan_and_inf_are_counted_and_training_goes_on(store_path: Path) -> None:
    class Overflow(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1e38  # inf where |x| > ~3.4

    model = nn.Sequential(nn.Linear(6, 6), Overflow(), nn.Linear(6, 3))
    with tracker.init(project="models", store=store_path) as run:
        run.watch(model, **EVERYTHING)
        for step in range(3):
            x = torch.randn(4, 6) * 10
            loss = model(x).sum()
            loss.backward()
            run.log({"loss": loss.item()}, step=step)
    with tracker.open_run(run.id, store=store_path) as r:
        _, inf = r.series("1", "activation", "inf_count")
        assert (inf > 0).all()
        rows = r.stats("1", "activation")[1]
        assert np.isfinite(rows[:, 1:6]).all()  # mean, std, min, max, norm over the finite values
        assert r.histograms("1", "activation")[1].sum(axis=1).tolist() == [24, 24, 24]
        assert r.status == "finished"
