"""Stats rows against a float64 NumPy oracle, including the cases that need the precise pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tracker.capture import stats
from tracker.capture.stats import StatsBatch, reference_stats
from tracker.names import STAT_INDEX, STAT_NAMES

RTOL = 2e-5


@pytest.fixture(autouse=True, params=["kernel", "numpy", "torch"])
def reduction_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on every path: the C kernel and NumPy for CPU tensors, torch ops as on
    accelerators."""
    if request.param == "kernel":
        assert stats.kernel_available(), "tracker/capture/_reduce.c was not built: pip install -e ."
    monkeypatch.setattr(stats, "CPU_REDUCTION", request.param)
    return str(request.param)


def _row(t: torch.Tensor, kind: str | None = None) -> np.ndarray:
    batch = StatsBatch()
    i = batch.add(t, kind)  # type: ignore[arg-type]
    return batch.resolve().rows[i]


@pytest.mark.parametrize("shape", [(7,), (4, 5), (3, 2, 4, 4), (2, 3, 5)])
def test_matches_reference(shape: tuple[int, ...]) -> None:
    t = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(_row(t), reference_stats(t.numpy()), rtol=RTOL, atol=1e-7)


def test_many_tensors_resolve_in_one_batch() -> None:
    tensors = [torch.randn(5, 3) * k for k in range(1, 6)]
    batch = StatsBatch()
    idx = [batch.add(t) for t in tensors]
    rows = batch.resolve().rows
    for i, t in zip(idx, tensors, strict=True):
        np.testing.assert_allclose(rows[i], reference_stats(t.numpy()), rtol=RTOL, atol=1e-7)
    assert len(batch) == 0  # resolve() leaves the batch empty for reuse


def test_nan_and_inf_are_counted_and_moments_use_finite_values() -> None:
    t = torch.tensor([1.0, float("nan"), 3.0, float("inf"), -float("inf"), 0.0])
    row = _row(t)
    assert row[STAT_INDEX["nan_count"]] == 1
    assert row[STAT_INDEX["inf_count"]] == 2
    assert row[STAT_INDEX["mean"]] == pytest.approx(4 / 3)
    assert row[STAT_INDEX["max"]] == 3.0
    np.testing.assert_allclose(row, reference_stats(t.numpy()), rtol=RTOL)


def test_float32_overflow_in_sum_of_squares_is_recomputed() -> None:
    t = torch.full((1000,), 3e37)
    row = _row(t)
    assert row[STAT_INDEX["inf_count"]] == 0
    assert row[STAT_INDEX["norm"]] == pytest.approx(3e37 * np.sqrt(1000), rel=1e-6)


def test_std_survives_cancellation_when_mean_dominates() -> None:
    # A BatchNorm weight near 1 with a tiny spread: sumsq/n - mean^2 would lose every digit.
    t = 1.0 + 1e-4 * torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    row = _row(t)
    assert row[STAT_INDEX["std"]] == pytest.approx(float(t.double().std(unbiased=False)), rel=1e-3)


def test_empty_tensor_gives_count_zero_and_no_error() -> None:
    row = _row(torch.empty(0, 3))
    assert row[STAT_INDEX["count"]] == 0
    assert np.isnan(row[STAT_INDEX["mean"]])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_are_summarized_in_float32(dtype: torch.dtype) -> None:
    t = torch.randn(50, generator=torch.Generator().manual_seed(2)).to(dtype)
    np.testing.assert_allclose(_row(t), reference_stats(t.float().numpy()), rtol=RTOL, atol=1e-7)


def test_non_contiguous_input() -> None:
    t = torch.randn(6, 8).t()
    np.testing.assert_allclose(_row(t), reference_stats(t.numpy()), rtol=RTOL, atol=1e-7)


def test_dead_units_are_counted_per_channel() -> None:
    x = torch.rand(4, 3, 2, 2)
    x[:, 1] = 0.0  # channel 1 never fires
    assert _row(x, "relu")[STAT_INDEX["dead_frac"]] == pytest.approx(1 / 3)
    y = torch.rand(5, 4)
    y[:, 0] = 0.0
    assert _row(y, "relu")[STAT_INDEX["dead_frac"]] == pytest.approx(1 / 4)


def test_saturation_for_sigmoid_and_tanh() -> None:
    s = torch.tensor([0.001, 0.5, 0.999, 0.2])
    assert _row(s, "sigmoid")[STAT_INDEX["saturated_frac"]] == pytest.approx(0.5)
    t = torch.tensor([-0.995, 0.1, 0.2, 0.999])
    assert _row(t, "tanh")[STAT_INDEX["saturated_frac"]] == pytest.approx(0.5)
    assert np.isnan(_row(t)[STAT_INDEX["saturated_frac"]])  # only for sigmoid/tanh outputs


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(-1e6, 1e6, width=32, allow_nan=False),
    )
)
def test_property_matches_reference_for_finite_values(a: np.ndarray) -> None:
    row = _row(torch.from_numpy(a.copy()))
    want = reference_stats(a)
    np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-3 * max(1.0, float(np.abs(a).max())))


@pytest.mark.parametrize("numel", [1, 15, 16, 17, 1000, 100_003])
def test_lengths_around_the_vector_width_match_reference(numel: int) -> None:
    # The kernel works in 16-element lanes plus a scalar tail: every split must agree.
    t = torch.randn(numel, generator=torch.Generator().manual_seed(numel)) * 3 + 1
    t[:: max(numel // 7, 1)] = 0.0
    np.testing.assert_allclose(_row(t), reference_stats(t.numpy()), rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("max_elements", [None, 1000])
def test_histograms_come_with_the_stats(max_elements: int | None) -> None:
    from tracker.capture.histogram import numpy_histogram, sample_stride

    tensors = [torch.randn(4097) * 100, torch.zeros(3), torch.empty(0), torch.randn(5, 7)]
    tensors[0][::11] = float("nan")
    batch = StatsBatch()
    idx = [
        batch.add(t, histogram=i != 3, histogram_max_elements=max_elements)
        for i, t in enumerate(tensors)
    ]
    results = batch.resolve()
    for i, t in zip(idx[:3], tensors[:3], strict=True):
        stride = sample_stride(t.numel(), max_elements)
        np.testing.assert_array_equal(results.histograms[i], numpy_histogram(t.numpy(), stride))
    assert results.histograms[idx[3]] is None  # not asked for
    assert results.rows[idx[0]][STAT_INDEX["nan_count"]] == len(range(0, 4097, 11))


def test_dead_units_of_wide_images_and_nan_units() -> None:
    x = torch.rand(3, 5, 6, 7)  # inner blocks of 42: lanes plus a tail
    x[:, 2] = -1.0
    x[:, 4] = float("nan")  # NaN is not "never positive": NumPy's max propagates it too
    row = _row(x, "relu")
    assert row[STAT_INDEX["dead_frac"]] == pytest.approx(1 / 5)
    assert (
        row[STAT_INDEX["dead_frac"]] == reference_stats(x.numpy(), "relu")[STAT_INDEX["dead_frac"]]
    )


@pytest.mark.parametrize("shape", [(3, 1), (40, 6), (9, 300), (5, 4, 3, 3), (64, 16, 8, 8)])
def test_dead_units_match_reference_when_units_fire_late_or_never(shape: tuple[int, ...]) -> None:
    # The kernel stops reading a unit once it fires: a unit whose only positive value is deep in
    # the batch, or whose only non-negative "value" is a NaN, must still be seen.
    rng = np.random.default_rng(sum(shape))
    axis = stats.units_axis(len(shape))
    units_last = -rng.random((*shape[:axis], *shape[axis + 1 :], shape[axis]), dtype=np.float32)
    columns = units_last.reshape(-1, shape[axis])  # a view: one column per unit
    rows = len(columns)
    for u in range(shape[axis]):
        if u % 3 == 0:
            continue  # never fires: dead
        columns[(u * 7919 + rows - 1) % rows, u] = np.nan if u % 5 == 0 else 0.5
    x = np.ascontiguousarray(np.moveaxis(units_last, -1, axis))
    want = reference_stats(x, "relu")[STAT_INDEX["dead_frac"]]
    assert want == pytest.approx(len(range(0, shape[axis], 3)) / shape[axis])
    assert _row(torch.from_numpy(x), "relu")[STAT_INDEX["dead_frac"]] == want


def test_kernel_rejects_malformed_jobs() -> None:
    if not stats.kernel_available():
        pytest.skip("kernel not built")
    from tracker.capture import _reduce

    t = torch.ones(4)
    good = np.array([[0, 4, -1, 1, 0, 1, 1, 4]], dtype=np.int64)  # column 0: from `pointers`
    at = [t.data_ptr()]
    params, out = np.zeros((1, 2)), np.zeros((1, 11))
    no_hists = (np.zeros(1, dtype=np.int64), np.zeros(0, np.uint16), np.zeros(0, np.int64))
    assert _reduce.reduce_many(good, at, params, out, *no_hists) == 0  # no row to recompute
    np.testing.assert_array_equal(out[0], reference_stats(t.numpy()))
    assert _reduce.STAT_COLUMNS == STAT_NAMES  # the kernel writes rows in the stored order
    with pytest.raises(ValueError, match="malformed"):  # a null pointer
        _reduce.reduce_many(good, [0], params, out, *no_hists)
    with pytest.raises(ValueError, match="pointers"):
        _reduce.reduce_many(good, at * 2, params, out, *no_hists)
    with pytest.raises(TypeError, match="sequence"):
        _reduce.reduce_many(good, None, params, out, *no_hists)
    # no elements, a histogram row that does not exist, units that do not fit
    for changes in ({1: 0}, {2: 0}, {4: 1, 5: 3}):
        bad = good.copy()
        for field, value in changes.items():
            bad[0, field] = value
        with pytest.raises(ValueError, match="malformed"):
            _reduce.reduce_many(bad, at, params, out, *no_hists)
    # histogram rows must count up from 0 in job order, with room for 512 bins each
    two = np.array([good[0], good[0]])
    two[:, 2] = [1, 0]
    one_each = (np.zeros(3, np.int64), np.zeros(1024, np.uint16), np.zeros(1024, np.int64))
    with pytest.raises(ValueError, match="malformed"):
        _reduce.reduce_many(two, at * 2, np.zeros((2, 2)), np.zeros((2, 11)), *one_each)
    two[:, 2] = [0, 1]
    # too few entries for the bins: nothing past the end is written, ptr says what was needed
    short = (np.zeros(3, np.int64), np.zeros(1, np.uint16), np.zeros(1, np.int64))
    _reduce.reduce_many(two, at * 2, np.zeros((2, 2)), np.zeros((2, 11)), *short)
    np.testing.assert_array_equal(short[0], [0, 1, 2])
    assert (short[1][0], short[2][0]) == (127, 4)
    mismatched = (np.zeros(3, np.int64), np.zeros(4, np.uint16), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="sizes"):
        _reduce.reduce_many(two, at * 2, np.zeros((2, 2)), np.zeros((2, 11)), *mismatched)
    ptr = one_each[0]
    _reduce.reduce_many(two, at * 2, np.zeros((2, 2)), np.zeros((2, 11)), *one_each)
    # 1.0 has sign 0 and biased exponent 127: its binade bin (histogram.py) holds all 4
    np.testing.assert_array_equal(ptr, [0, 1, 2])
    np.testing.assert_array_equal(one_each[1][:2], [127, 127])
    np.testing.assert_array_equal(one_each[2][:2], [4, 4])
    with pytest.raises(ValueError, match="sizes"):
        _reduce.reduce_many(good, at, np.zeros((2, 2)), out, *no_hists)
    with pytest.raises(TypeError, match="writable"):
        _reduce.reduce_many(good, at, params, bytes(88), *no_hists)
