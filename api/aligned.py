"""Series of several runs (or epochs) put on one axis, and how far apart they are. Pure NumPy.

Compare pages overlay runs by step, by epoch, or epochs of one run by "steps into the epoch";
the list of layers that differ most ranks each layer by :func:`score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from tracker.downsample import grid_of, on_grid

# Values below this count as this, so an exact 0 (a dead layer's std, a vanished gradient) is
# 12 orders of magnitude below 1 instead of -inf; float32 tensors rarely have a norm below it.
FLOOR = 1e-12
APART = 1.0  # log10 units: "apart" means a factor of 10
TIE = 0.05  # scores within 5% of each other rank as equals
SCORE_HELP = (
    "Score = mean over aligned steps of |log10 a − log10 b| of the stat (for more than two, the "
    "largest minus the smallest): 1 means typically 10× apart; exact zeros count as 1e-12. "
    "Near-equal scores (within 5%) list the earliest layer first: a difference that starts in "
    "one layer spreads to the layers after it."
)


def log10_floor(values: np.ndarray) -> np.ndarray:
    """log10(max(|v|, FLOOR)); NaN stays NaN."""
    with np.errstate(invalid="ignore"):
        return np.log10(np.maximum(np.abs(np.asarray(values, dtype=np.float64)), FLOOR))


class Aligned(NamedTuple):
    """Values of k series at m common positions: ``x`` (m,), ``values`` (k, m)."""

    x: np.ndarray
    values: np.ndarray


def common_positions(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> Aligned:
    """The positions every series has (exact matches), with each series' value there."""
    common = xs[0]
    for x in xs[1:]:
        common = np.intersect1d(common, x, assume_unique=False)
    common = np.unique(common)
    rows = []
    for x, y in zip(xs, ys, strict=True):
        x_unique, first = np.unique(x, return_index=True)  # a position logged twice: first value
        rows.append(np.asarray(y, dtype=np.float64)[first][np.searchsorted(x_unique, common)])
    return Aligned(common, np.asarray(rows).reshape(len(xs), len(common)))


def bucketed(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], points: int) -> Aligned:
    """Bucket means on one grid over all series' positions (for series with no common step,
    e.g. stats recorded every 3 steps in one run and every 10 in the other)."""
    g = grid_of([np.asarray(x, dtype=np.int64) for x in xs], points)
    rows = [on_grid(np.asarray(x, dtype=np.int64), y, g) for x, y in zip(xs, ys, strict=True)]
    return Aligned(g.starts(), np.asarray(rows).reshape(len(xs), g.n))


def align(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], points: int = 200) -> Aligned:
    """Exact common positions when there are any, else bucket means on a shared grid."""
    if any(len(x) == 0 for x in xs):
        return Aligned(np.empty(0, np.int64), np.empty((len(xs), 0)))
    exact = common_positions(xs, ys)
    return exact if len(exact.x) else bucketed(xs, ys, points)


def epoch_means(
    steps: np.ndarray, values: np.ndarray, epochs: Sequence[tuple[int, int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(epoch numbers, mean of ``values`` over each epoch's steps), epochs with no value left out.

    ``steps`` ascending; ``epochs`` are (epoch, first step, last step); NaN values are ignored.
    """
    if not epochs or not len(steps):
        return np.empty(0, np.int64), np.empty(0, np.float64)
    numbers = np.asarray([e[0] for e in epochs], dtype=np.int64)
    lo = np.searchsorted(steps, [e[1] for e in epochs])
    hi = np.searchsorted(steps, [e[2] + 1 for e in epochs])
    known = ~np.isnan(values)
    # One reduceat over [lo, hi) pairs; a trailing 0 keeps every index inside the array.
    padded = np.append(np.where(known, values, 0.0), 0.0)
    counted = np.append(known, False).astype(np.int64)
    pairs = np.stack([lo, hi], axis=1).ravel()
    sums = np.add.reduceat(padded, pairs)[::2]
    counts = np.where(hi > lo, np.add.reduceat(counted, pairs)[::2], 0)
    ok = counts > 0
    return numbers[ok], sums[ok] / counts[ok]


class Score(NamedTuple):
    """How far apart aligned log10 series are: the mean spread, the first position where they
    are ``APART`` or more, and how many positions were compared."""

    score: float | None
    first_apart: int | None
    compared: int


def score(aligned: Aligned) -> Score:
    """Mean over positions of (max - min) across series, where every series has a value."""
    v = aligned.values
    if v.size == 0:
        return Score(None, None, 0)
    ok = ~np.isnan(v).any(axis=0)
    if not ok.any():
        return Score(None, None, 0)
    spread = v[:, ok].max(axis=0) - v[:, ok].min(axis=0)
    apart = np.flatnonzero(spread >= APART)
    first = int(aligned.x[ok][apart[0]]) if len(apart) else None
    return Score(float(spread.mean()), first, int(ok.sum()))


def rank(rows: list[dict[str, Any]], tie: float = TIE) -> list[dict[str, Any]]:
    """Rows with "score" and "depth", most different first; a run of scores within ``tie`` of
    its highest is ordered by depth, so the layer where a difference starts leads the layers it
    spread to (a dead ReLU before the pooling and flatten layers that only pass its zeros on)."""
    ordered = sorted(rows, key=lambda r: (-r["score"], r["depth"]))
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(ordered):
        top = ordered[i]["score"]
        j = i + 1
        while j < len(ordered) and ordered[j]["score"] >= top * (1 - tie):
            j += 1
        out.extend(sorted(ordered[i:j], key=lambda r: r["depth"]))
        i = j
    return out
