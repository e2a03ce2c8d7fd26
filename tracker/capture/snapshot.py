"""Bounded copies of tensors for the layer explorer: first samples, capped element count."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tracker.capture.device import to_host

# bf16 has no NumPy dtype: its bits are stored as uint16 and the dtype kept as an attribute.
_STORED_AS: dict[torch.dtype, np.dtype] = {torch.bfloat16: np.dtype(np.uint16)}
_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
}


@dataclass(frozen=True)
class Snapshot:
    """A stored slice of a tensor: ``data[...]`` = ``tensor[:shape[0], :shape[1], ...]``."""

    data: np.ndarray  # stored dtype (uint16 bits for bfloat16)
    dtype: str  # original torch dtype name
    full_shape: tuple[int, ...]  # shape of the tensor before slicing


def bounded_slice(shape: tuple[int, ...], max_samples: int | None, max_elements: int) -> list[int]:
    """Stops per dimension: at most ``max_samples`` along dim 0, then trim dims until it fits."""
    stops = list(shape)
    if max_samples is not None and stops:
        stops[0] = min(stops[0], max_samples)
    for dim in range(len(stops)):
        rest = math.prod(stops[dim + 1 :])
        if math.prod(stops) <= max_elements:
            break
        stops[dim] = max(1, min(stops[dim], max_elements // max(rest, 1)))
    return stops


def take_snapshot(
    tensor: Tensor,
    max_samples: int | None,
    max_elements: int,
    store_dtype: torch.dtype | None = None,
) -> Snapshot:
    """Copy a bounded leading slice of ``tensor`` to host memory.

    ``max_samples`` limits dim 0 (the batch, for activations; None for weights). ``store_dtype``
    (float16/bfloat16) trades precision for space; by default the tensor's own dtype is kept.
    """
    x = tensor.detach()
    stops = bounded_slice(tuple(x.shape), max_samples, max_elements)
    if stops != list(x.shape):
        x = x[tuple(slice(0, s) for s in stops)]
    if store_dtype is not None and x.dtype != store_dtype:
        x = x.to(store_dtype)
    dtype_name = _DTYPE_NAMES.get(x.dtype, str(x.dtype).removeprefix("torch."))
    if x.dtype in _STORED_AS:
        data = to_host(x.contiguous().view(torch.int16)).numpy().view(_STORED_AS[x.dtype])
    elif x.is_cuda:
        data = to_host(x.contiguous()).numpy()  # pinned; valid once the stream is synchronised
    else:
        data = x.numpy().copy()
    return Snapshot(data=data, dtype=dtype_name, full_shape=tuple(tensor.shape))


def decode_snapshot(data: np.ndarray, dtype: str) -> np.ndarray:
    """Return stored snapshot bits as a NumPy array; bfloat16 widens losslessly to float32."""
    if dtype == "bfloat16":
        widened = data.astype(np.uint32) << 16
        return widened.view(np.float32)
    return data
