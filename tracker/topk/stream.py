"""Streaming top-k per channel: the k inputs that most activate each channel, kept on the device.

A channel's response to one input is its strongest value anywhere in the feature map (Zeiler and
Fergus), with the position where it peaks, so the input patch that caused it can be cut out; a
unit of a linear layer is a channel with no position. Batches are merged into the running top k
with one sort per batch on the tensor's device; nothing goes to the host until :meth:`result`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class ChannelTopK:
    """The top k of every channel of one layer, best first; shapes (channels, k)."""

    values: np.ndarray  # float32 activation values
    indices: np.ndarray  # int64 positions of the inputs in the dataset
    # int64 (channels, k, spatial dims): where each value peaked (no dims for linear units)
    positions: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.values.shape[0])

    @property
    def k(self) -> int:
        return int(self.values.shape[1])


def channel_response(output: Tensor) -> tuple[Tensor, Tensor]:
    """Each sample's strongest value per channel, and the spatial position where it peaks.

    ``output`` is (batch, channels, *spatial) for conv layers or (batch, units) for linear ones;
    returns values (batch, channels) in float32 and positions (batch, channels, len(spatial)).
    """
    if output.dim() < 2:
        raise ValueError(f"need a (batch, channels, ...) output, got shape {tuple(output.shape)}")
    batch, channels = output.shape[:2]
    spatial = output.shape[2:]
    flat = output.detach().reshape(batch, channels, -1).float()
    # NaN would win every max and poison the ranking: treat it as the lowest possible response.
    flat = torch.nan_to_num(flat, nan=-torch.inf)
    values, where = flat.max(dim=2)
    positions = (
        torch.stack(_unravel(where, spatial), dim=-1) if spatial else where.unsqueeze(-1)[..., :0]
    )
    return values, positions


def _unravel(flat_index: Tensor, shape: torch.Size) -> list[Tensor]:
    coords = []
    for size in reversed(shape):
        coords.append(flat_index % size)
        flat_index = torch.div(flat_index, size, rounding_mode="floor")
    return coords[::-1]


class StreamingTopK:
    """The running top ``k`` per channel over batches seen in dataset order.

    Ties keep the input seen first (lower dataset index), so the result does not depend on how the
    dataset was cut into batches.
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._values: Tensor | None = None  # (candidates, channels)
        self._indices: Tensor | None = None
        self._positions: Tensor | None = None  # (candidates, channels, spatial dims)

    def update(self, output: Tensor, first_index: int) -> None:
        """Merge a batch whose first sample is dataset item ``first_index``."""
        values, positions = channel_response(output)
        indices = (
            torch.arange(first_index, first_index + values.shape[0], device=values.device)
            .unsqueeze(1)
            .expand_as(values)
        )
        if self._values is not None:
            assert self._indices is not None
            assert self._positions is not None
            values = torch.cat([self._values, values])  # kept ones first: they came first
            indices = torch.cat([self._indices, indices])
            positions = torch.cat([self._positions, positions])
        order = torch.sort(values, dim=0, descending=True, stable=True).indices[: self.k]
        self._values = values.gather(0, order)
        self._indices = indices.gather(0, order)
        spatial = positions.shape[-1]
        self._positions = positions.gather(0, order.unsqueeze(-1).expand(-1, -1, spatial))

    def result(self) -> ChannelTopK:
        """What was kept: (channels, k) arrays, best first (fewer than k if fewer inputs came)."""
        if self._values is None or self._indices is None or self._positions is None:
            raise ValueError("no batch was seen")
        return ChannelTopK(
            values=self._values.T.cpu().numpy().astype(np.float32),
            indices=self._indices.T.cpu().numpy().astype(np.int64),
            positions=self._positions.transpose(0, 1).cpu().numpy().astype(np.int64),
        )
