"""Fewer points for plots, keeping every bucket's min and max so that spikes survive.

A series of 100,000 steps drawn on a 1,000-pixel axis needs about 1,000 points; plotting a mean
alone would hide the one step where a gradient exploded, so each bucket also reports its extremes.
Buckets are equal spans of *steps* (not of rows), so two series cut with the same grid line up:
the UI overlays runs and layers bucket for bucket. Pure NumPy, no I/O (STYLE 5).

>>> steps, mean, lo, hi = downsample(np.arange(100_000), values, points=1000)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tracker.errors import InvalidArgumentError

MAX_POINTS = 100_000


class Grid(NamedTuple):
    """Buckets [first + i * width, first + (i + 1) * width) for i in range(n)."""

    first: int
    width: int
    n: int

    def starts(self) -> np.ndarray:
        """The first step each bucket can hold, (n,)."""
        return self.first + self.width * np.arange(self.n, dtype=np.int64)


def check_points(points: object) -> int:
    """``points`` as an int in [2, MAX_POINTS], else InvalidArgumentError."""
    if isinstance(points, bool) or not isinstance(points, int | np.integer):
        raise InvalidArgumentError(f"points must be an int, got {points!r}")
    if not 2 <= points <= MAX_POINTS:
        raise InvalidArgumentError(f"points must be between 2 and {MAX_POINTS}, got {points}")
    return int(points)


def grid(first: int, last: int, points: int) -> Grid:
    """At most ``points`` buckets of a whole number of steps covering [first, last]."""
    points = check_points(points)
    if last < first:
        return Grid(int(first), 1, 0)
    span = int(last) - int(first) + 1
    width = -(-span // points)  # ceil: integer widths keep bucket starts on real steps
    return Grid(int(first), width, -(-span // width))


def grid_of(steps: list[np.ndarray], points: int) -> Grid:
    """One grid over the steps of several series (empty ones ignored)."""
    found = [s for s in steps if len(s)]
    if not found:
        return grid(0, -1, points)
    return grid(min(int(s.min()) for s in found), max(int(s.max()) for s in found), points)


class Reduced(NamedTuple):
    """Per non-empty bucket: its index in the grid, first step, number of non-NaN values, and the
    mean, min and max over those (NaN where all were NaN)."""

    bucket: np.ndarray
    step: np.ndarray
    known: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray


def reduce(steps: np.ndarray, values: np.ndarray, g: Grid) -> Reduced:
    """Reduce ``values`` (n,) at ``steps`` (n,) over the buckets of ``g``; steps outside it are
    dropped. NaN is ignored (a stat that does not apply); +-inf is kept (it is a real event)."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1:
        raise InvalidArgumentError(f"steps {steps.shape} and values {values.shape} must be (n,)")
    ids = (steps - g.first) // g.width
    inside = (steps >= g.first) & (ids < g.n)
    ids, steps, values = ids[inside], steps[inside], values[inside]
    if len(ids) and np.any(ids[1:] < ids[:-1]):  # reduceat needs each bucket contiguous
        order = np.argsort(steps, kind="stable")
        ids, steps, values = ids[order], steps[order], values[order]
    if not len(ids):
        empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
        return Reduced(empty_i, empty_i, empty_i, empty_f, empty_f, empty_f)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    known = ~np.isnan(values)
    count = np.add.reduceat(known.astype(np.int64), starts)
    total = np.add.reduceat(np.where(known, values, 0.0), starts)
    lo = np.minimum.reduceat(np.where(known, values, np.inf), starts)
    hi = np.maximum.reduceat(np.where(known, values, -np.inf), starts)
    none = count == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    mean[none] = lo[none] = hi[none] = np.nan
    return Reduced(ids[starts], steps[starts], count, mean, lo, hi)


def downsample(
    steps: np.ndarray, values: np.ndarray, points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) with at most ``points`` entries, one per non-empty bucket of
    equal step span (each entry's step is the first step in its bucket). A series that already
    has no more than ``points`` values comes back unchanged, with min = max = mean = the value.
    """
    points = check_points(points)
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if len(steps) <= points:
        if steps.shape != values.shape:
            raise InvalidArgumentError(f"steps {steps.shape} and values {values.shape} differ")
        return steps.copy(), values.copy(), values.copy(), values.copy()
    r = reduce(steps, values, grid(int(steps.min()), int(steps.max()), points))
    return r.step, r.mean, r.min, r.max


def on_grid(steps: np.ndarray, values: np.ndarray, g: Grid) -> np.ndarray:
    """Bucket means on every bucket of ``g``, (g.n,), NaN where a bucket holds no value."""
    out = np.full(g.n, np.nan)
    r = reduce(steps, values, g)
    out[r.bucket] = r.mean
    return out


def downsample_rows(
    steps: np.ndarray, rows: np.ndarray, points: int
) -> tuple[np.ndarray, np.ndarray]:
    """(steps, rows) of a (n, k) matrix (histograms over time) with at most ``points`` rows: the
    mean row of each bucket of equal step span, at the bucket's first step."""
    points = check_points(points)
    steps = np.asarray(steps, dtype=np.int64)
    rows = np.asarray(rows)
    if rows.ndim != 2 or len(rows) != len(steps):
        raise InvalidArgumentError(f"rows {rows.shape} must be (len(steps)={len(steps)}, k)")
    if len(steps) <= points:
        return steps.copy(), rows.astype(np.float64)
    order = np.argsort(steps, kind="stable")
    steps, rows = steps[order], rows[order]
    g = grid(int(steps[0]), int(steps[-1]), points)
    ids = (steps - g.first) // g.width
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)])
    means = np.add.reduceat(rows.astype(np.float64), starts, axis=0) / sizes[:, None]
    return steps[starts], means
