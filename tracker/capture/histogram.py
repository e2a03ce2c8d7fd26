"""One fixed set of histogram bins shared by every tensor, run and step.

A float32's top nine bits are its sign and binary exponent, so ``bits >> 23`` puts every value in
a *binade* bin [2^e, 2^(e+1)) with its sign: 512 bins that cover zero and denormals (exponent 0),
every normal magnitude, and Inf/NaN (exponent 255). Binning is a shift and a bincount (~2.5 ns per
element, PERF.md), needs no min/max pass, cannot fail on NaN, and because the edges never move,
histograms of two runs or two epochs overlay and subtract bin by bin. A value's bin says its order
of magnitude, which is what matters when reading activations and gradients (vanishing, exploding,
saturated).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch
from torch import Tensor

N_BINS: Final = 512
_EXPONENT_BIAS: Final = 127


def sample_stride(numel: int, max_elements: int | None) -> int:
    """1 to count every element; else an odd stride leaving at most ``max_elements``.

    Odd, so that with power-of-two row lengths the sample still visits every column.
    """
    if max_elements is None or numel <= max_elements:
        return 1
    stride = -(-numel // max_elements)
    return stride if stride % 2 else stride + 1


def binade_histogram(tensor: Tensor, max_elements: int | None = None) -> Tensor:
    """Count the elements of ``tensor`` per binade bin; returns an int64 (512,) on its device.

    Tensors over ``max_elements`` are binned on an evenly strided sample and the counts scaled
    up, so they estimate the full tensor's (exact zero/NaN/Inf counts are in the stats).
    """
    x = tensor.detach()
    if x.dtype != torch.float32:
        x = x.float()
    flat = x.reshape(-1)
    stride = sample_stride(flat.numel(), max_elements)
    if stride > 1:
        flat = flat[::stride].contiguous()
    bins = flat.view(torch.int32) >> 23  # a new tensor, so the mask can work in place
    bins.bitwise_and_(N_BINS - 1)
    counts = torch.bincount(bins, minlength=N_BINS)
    return counts * stride if stride > 1 else counts


def numpy_histogram(values: np.ndarray, stride: int = 1) -> np.ndarray:
    """:func:`binade_histogram` of a host array with NumPy, on every ``stride``-th element."""
    return reference_histogram(values.reshape(-1)[::stride]) * stride


def reference_histogram(values: np.ndarray) -> np.ndarray:
    """NumPy oracle for :func:`binade_histogram`."""
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.int32)
    return np.bincount((bits >> 23) & (N_BINS - 1), minlength=N_BINS).astype(np.int64)


def bin_sign(b: int) -> int:
    """-1 for bins of negative values, +1 otherwise."""
    return -1 if b >= N_BINS // 2 else 1


def bin_exponent(b: int) -> int:
    """Biased exponent field of the bin: 0 = zero/denormal, 255 = Inf/NaN."""
    return b % (N_BINS // 2)


def bin_label(b: int) -> str:
    """Human-readable range of bin ``b``, e.g. '-[2^-3, 2^-2)', '0', 'non-finite'."""
    e = bin_exponent(b)
    sign = "-" if bin_sign(b) < 0 else "+"
    if e == 0:
        return "0"  # exact zero or a denormal (|x| < 2^-126)
    if e == 255:
        return f"{sign}inf/nan"
    lo = e - _EXPONENT_BIAS
    return f"{sign}[2^{lo}, 2^{lo + 1})"


def display_order() -> list[list[int]]:
    """The 511 display bins in value order, each a list of raw bins (the two zero bins merge).

    -inf/nan, (-2^128, -2^127], ..., (-2^-125, -2^-126], zero/denormal, [2^-126, 2^-125), ...,
    [2^127, 2^128), +inf/nan.
    """
    half = N_BINS // 2
    negative = [[half + e] for e in range(254, 0, -1)]
    positive = [[e] for e in range(1, 255)]
    return [[N_BINS - 1], *negative, [0, half], *positive, [half - 1]]


def display_edges() -> np.ndarray:
    """The 512 monotonic edges of the display bins (float64; +-inf at the ends)."""
    magnitudes = [2.0 ** (e - _EXPONENT_BIAS + 1) for e in range(254, 0, -1)]  # 2^128 .. 2^-125
    smallest = 2.0 ** (1 - _EXPONENT_BIAS)  # 2^-126, the smallest normal float32
    negative = [-np.inf, *(-m for m in magnitudes), -smallest]
    positive = [smallest, *reversed(magnitudes), np.inf]
    return np.asarray(negative + positive, dtype=np.float64)


def to_display(counts: np.ndarray) -> np.ndarray:
    """Map 512 raw counts (or rows of them) onto the 511 display_order() bins."""
    counts = np.asarray(counts)
    return np.stack([counts[..., g].sum(axis=-1) for g in display_order()], axis=-1)
