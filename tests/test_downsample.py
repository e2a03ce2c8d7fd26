"""tracker.downsample against a brute-force reference that loops over buckets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracker.downsample import (
    Grid,
    check_points,
    downsample,
    downsample_rows,
    grid,
    grid_of,
    on_grid,
    reduce,
)
from tracker.errors import InvalidArgumentError


def brute(steps: list[int], values: list[float], g: Grid) -> list[tuple[int, int, float, ...]]:
    """(bucket, first step, mean, min, max) of each non-empty bucket, by plain Python loops."""
    out = []
    for b in range(g.n):
        lo, hi = g.first + b * g.width, g.first + (b + 1) * g.width
        inside = [(s, v) for s, v in sorted(zip(steps, values, strict=True)) if lo <= s < hi]
        if not inside:
            continue
        known = [v for _, v in inside if not math.isnan(v)]
        if known:
            stats = (sum(known) / len(known), min(known), max(known))
        else:
            stats = (math.nan, math.nan, math.nan)
        out.append((b, inside[0][0], *stats))
    return out


def as_rows(r) -> list[tuple[int, int, float, ...]]:  # type: ignore[no-untyped-def]
    return [
        (int(b), int(s), float(m), float(lo), float(hi))
        for b, s, m, lo, hi in zip(r.bucket, r.step, r.mean, r.min, r.max, strict=True)
    ]


def same(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            if not (
                u == v or (math.isnan(u) and math.isnan(v)) or math.isclose(u, v, rel_tol=1e-12)
            ):
                return False
    return True


@pytest.mark.parametrize(
    ("n", "points", "stride", "seed"),
    [(10, 3, 1, 0), (1000, 7, 1, 1), (1001, 100, 3, 2), (50, 49, 10, 3), (12345, 1000, 1, 4)],
)
def test_reduce_matches_brute_force(n: int, points: int, stride: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    steps = 5 + stride * np.arange(n)
    values = rng.standard_normal(n)
    values[rng.random(n) < 0.1] = np.nan  # stats that do not apply
    g = grid(int(steps[0]), int(steps[-1]), points)
    assert g.n <= points
    assert same(as_rows(reduce(steps, values, g)), brute(steps.tolist(), values.tolist(), g))


def test_reduce_unsorted_and_gappy_steps() -> None:
    rng = np.random.default_rng(7)
    steps = np.sort(rng.choice(10_000, 700, replace=False))
    values = rng.standard_normal(700)
    order = rng.permutation(700)
    g = grid(0, 9_999, 64)
    got = as_rows(reduce(steps[order], values[order], g))
    assert same(got, brute(steps.tolist(), values.tolist(), g))


def test_spikes_survive() -> None:
    steps = np.arange(100_000)
    values = np.ones(100_000)
    values[54_321] = 1e6  # one exploding step
    values[77_777] = -5.0
    s, mean, lo, hi = downsample(steps, values, 1000)
    assert len(s) == 1000
    assert hi.max() == 1e6 and lo.min() == -5.0
    assert s[np.argmax(hi)] <= 54_321 < s[np.argmax(hi)] + 100
    assert np.isclose(mean.sum() * 100, values.sum())  # equal buckets of 100 steps


def test_all_nan_bucket_is_nan_and_inf_is_kept() -> None:
    steps = np.arange(8)
    values = np.array([np.nan, np.nan, 1.0, np.inf, 2.0, 3.0, np.nan, -np.inf])
    r = reduce(steps, values, Grid(0, 2, 4))
    assert np.isnan(r.mean[0]) and np.isnan(r.min[0]) and np.isnan(r.max[0])
    assert r.max[1] == np.inf and r.mean[1] == np.inf
    assert r.min[3] == -np.inf and r.known.tolist() == [0, 2, 2, 1]


def test_short_series_come_back_unchanged() -> None:
    steps, values = np.array([3, 9, 27]), np.array([1.0, np.nan, 2.0])
    s, mean, lo, hi = downsample(steps, values, 10)
    assert s.tolist() == [3, 9, 27]
    for out in (mean, lo, hi):
        np.testing.assert_array_equal(out, values)


def test_grid_buckets_are_whole_steps_within_points() -> None:
    for first, last, points in [(0, 99, 10), (0, 100, 10), (7, 7, 5), (0, 99_999, 1000)]:
        g = grid(first, last, points)
        assert g.n <= points
        assert g.first == first and g.first + g.n * g.width > last
        assert g.first + (g.n - 1) * g.width <= last
    assert grid(5, 4, 10).n == 0
    assert grid_of([np.arange(10, 20), np.array([], np.int64), np.arange(0, 5)], 4) == grid(
        0, 19, 4
    )


def test_on_grid_aligns_two_series() -> None:
    a_steps, b_steps = np.arange(0, 100), np.arange(0, 100, 10)
    g = grid_of([a_steps, b_steps], 10)
    a = on_grid(a_steps, np.ones(100), g)
    b = on_grid(b_steps, np.full(10, 2.0), g)
    np.testing.assert_array_equal(a, np.ones(10))
    np.testing.assert_array_equal(b, np.full(10, 2.0))
    gappy = on_grid(np.array([0, 95]), np.array([1.0, 3.0]), g)
    assert gappy[0] == 1.0 and gappy[9] == 3.0 and np.isnan(gappy[1:9]).all()


def test_downsample_rows_means_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    steps = np.arange(0, 5000, 5)
    rows = rng.integers(0, 100, (1000, 7))
    s, means = downsample_rows(steps, rows, 30)
    g = grid(0, 4995, 30)
    assert len(s) == g.n
    for i, start in enumerate(g.starts()):
        inside = (steps >= start) & (steps < start + g.width)
        assert s[i] == steps[inside][0]
        np.testing.assert_allclose(means[i], rows[inside].mean(axis=0))
    _, same_rows = downsample_rows(steps[:10], rows[:10], 30)
    np.testing.assert_array_equal(same_rows, rows[:10])


@pytest.mark.parametrize("bad", [1, 0, -3, 100_001, 2.5, True, "10", None])
def test_bad_points(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="points"):
        check_points(bad)


def test_mismatched_shapes() -> None:
    with pytest.raises(InvalidArgumentError):
        reduce(np.arange(3), np.arange(4.0), Grid(0, 1, 3))
    with pytest.raises(InvalidArgumentError):
        downsample_rows(np.arange(3), np.zeros(3), 2)
