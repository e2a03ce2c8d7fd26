"""Bounded snapshots: the right slice, bit-exact, bf16 kept losslessly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracker.capture.snapshot import bounded_slice, decode_snapshot, take_snapshot


def test_bounded_slice_limits_samples_then_elements() -> None:
    assert bounded_slice((64, 16, 8, 8), 8, 1 << 20) == [8, 16, 8, 8]
    assert bounded_slice((64, 16, 8, 8), 8, 2048) == [2, 16, 8, 8]
    assert bounded_slice((1, 512, 32, 32), 8, 4096) == [1, 4, 32, 32]
    assert bounded_slice((10,), None, 4) == [4]
    assert bounded_slice((), None, 4) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_snapshot_round_trips_bit_exact(dtype: torch.dtype) -> None:
    t = torch.randn(12, 3, 4).to(dtype)
    snap = take_snapshot(t, max_samples=5, max_elements=10_000)
    assert snap.full_shape == (12, 3, 4)
    back = decode_snapshot(snap.data, snap.dtype)
    want = t[:5].float().numpy() if dtype == torch.bfloat16 else t[:5].numpy()
    np.testing.assert_array_equal(back, want)
    assert snap.dtype == str(dtype).removeprefix("torch.")


def test_snapshot_can_be_stored_in_half_precision() -> None:
    t = torch.randn(4, 4)
    snap = take_snapshot(t, None, 100, store_dtype=torch.float16)
    assert snap.data.dtype == np.float16
    np.testing.assert_allclose(snap.data, t.numpy(), rtol=1e-3)


def test_snapshot_does_not_alias_the_tensor() -> None:
    t = torch.zeros(3)
    snap = take_snapshot(t, None, 10)
    t += 1
    assert (snap.data == 0).all()
