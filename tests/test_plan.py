"""Step plans: a step's rows are the ones StatsBatch and the float64 oracle give, whatever mix of
tensors the kernel can and cannot read, and a layout seen before reuses its plan."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tracker.capture import stats
from tracker.capture.histogram import numpy_histogram
from tracker.capture.plan import Planner
from tracker.capture.step import TensorEntry
from tracker.names import STAT_INDEX

RTOL = 2e-5


def _entries(batch: int = 6) -> list[TensorEntry]:
    g = torch.Generator().manual_seed(batch)
    relu = torch.randn(batch, 4, 3, 3, generator=g).clamp(min=0)
    relu[:, 2] = 0.0  # a dead channel
    with_nan = torch.randn(batch, 7, generator=g)
    with_nan[0, 0] = float("nan")
    tensors = [
        ("conv", "activation", relu, "relu"),
        ("gate", "activation", torch.sigmoid(torch.randn(batch, 5, generator=g) * 6), "sigmoid"),
        ("fc", "activation", with_nan, None),
        ("fc", "activation_grad", torch.randn(batch, 7, generator=g, dtype=torch.float64), None),
        ("fc", "weight", torch.randn(7, 3, generator=g).t(), None),  # not contiguous
        ("fc", "weight_grad", torch.empty(0), None),
        ("emb", "activation", torch.randn(batch, 9, generator=g).to(torch.bfloat16), None),
    ]
    return [
        TensorEntry(layer, quantity, "output", 0, 3, t, kind)
        for layer, quantity, t, kind in tensors
    ]


@pytest.mark.parametrize("reduction", ["kernel", "numpy"])
def test_rows_and_histograms_match_the_reference_for_a_mixed_step(
    reduction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "CPU_REDUCTION", reduction)
    kernel_jobs: list[int] = []
    if reduction == "kernel":
        real = stats._reduce

        def spy(jobs: np.ndarray, *args: object) -> int:
            kernel_jobs.append(len(jobs))
            return int(real.reduce_many(jobs, *args))

        monkeypatch.setattr(
            stats, "_reduce", SimpleNamespace(reduce_many=spy, copy_prefix=real.copy_prefix)
        )
    entries = _entries()
    block = Planner().reduce(entries, True, None)
    # The plan's kernel call reads the three contiguous float32 tensors in place; StatsBatch
    # copies the float64, bf16 and strided ones to float32 for a kernel call of its own.
    assert kernel_jobs == ([3, 3] if reduction == "kernel" else [])
    assert block.keys == tuple((e.layer, e.quantity, e.part) for e in entries)
    assert len(block.hists) == len(entries)
    for i, e in enumerate(entries):
        want = e.tensor.float().numpy()
        kind = e.kind if e.quantity == "activation" else None
        np.testing.assert_allclose(
            block.stats[i], stats.reference_stats(want, kind), rtol=RTOL, atol=1e-7
        )
        hist = block.hists[block.hist_rows[i]]
        np.testing.assert_array_equal(hist, numpy_histogram(np.ascontiguousarray(want)))
    assert block.stats[0, STAT_INDEX["dead_frac"]] == pytest.approx(1 / 4)
    assert block.stats[2, STAT_INDEX["nan_count"]] == 1


def test_without_histograms_the_block_has_none() -> None:
    block = Planner().reduce(_entries(), False, None)
    assert len(block.hists) == 0 and (block.hist_rows == -1).all()


def test_a_layout_seen_before_reuses_its_plan_and_reads_the_new_values() -> None:
    planner = Planner()
    first = planner.reduce(_entries(6), True, None)
    entries = _entries(6)
    for e in entries:
        if e.tensor.numel():
            e.tensor = e.tensor * 2  # same layout, new data at new addresses
    second = planner.reduce(entries, True, None)
    assert planner.built == 1 and second.keys is first.keys
    mean = STAT_INDEX["mean"]
    np.testing.assert_allclose(second.stats[1:, mean], 2 * first.stats[1:, mean], rtol=1e-5)
    planner.reduce(_entries(5), True, None)  # the last batch of an epoch is smaller
    assert planner.built == 2


def test_plans_keep_no_tensor_alive() -> None:
    planner = Planner()
    entries = _entries()
    refs = [weakref.ref(e.tensor) for e in entries]
    planner.reduce(entries, True, None)
    del entries
    gc.collect()
    assert all(r() is None for r in refs)
