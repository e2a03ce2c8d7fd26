"""Receptive fields: which input pixels can change one output position of a layer.

Found by backpropagation rather than from kernel sizes, so it works for any model (padding,
dilation, pooling, residual branches): the gradient of a layer's outputs at one position with
respect to the input is non-zero exactly inside that position's receptive field. Real inputs are
used and the support is the union over samples and channels, because a ReLU that is off for one
sample hides part of the field for that sample only. Each spatial axis is probed separately (the
others held at their middle), so a layer with an H x W map costs H + W small backward passes,
once per layer and input shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


class _StopForwardError(Exception):
    """Raised by the hook once the layer's output exists: the rest of the forward is not needed."""


@dataclass(frozen=True)
class ReceptiveField:
    """Per spatial axis, the input range [start, stop) of each output index along it."""

    ranges: tuple[tuple[tuple[int, int], ...], ...]
    exact: bool  # False where no gradient reached the input and the whole axis is assumed

    def box(self, position: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        return tuple(self.ranges[axis][i] for axis, i in enumerate(position))

    def size(self) -> tuple[int, ...]:
        """The largest extent per axis (the field away from the borders)."""
        return tuple(max(stop - start for start, stop in axis) for axis in self.ranges)


def _layer_output(model: nn.Module, layer: nn.Module, inputs: Tensor) -> Tensor:
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _args: object, output: object) -> None:
        if isinstance(output, Tensor):
            captured.append(output)
        raise _StopForwardError

    handle = layer.register_forward_hook(hook)
    try:
        model(inputs)
    except _StopForwardError:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError("the layer did not produce a tensor for these inputs")
    return captured[0]


def receptive_field(
    model: nn.Module, layer: nn.Module, inputs: Tensor, output_spatial: tuple[int, ...]
) -> ReceptiveField | None:
    """The receptive field of ``layer``'s output positions in ``inputs`` (batch, channels, *S).

    None when the input has no spatial axes matching the output's (a linear layer, tokens).
    Call under the model's eval mode with state preserved (see collect.py).
    """
    spatial_in = tuple(inputs.shape[2:])
    if not output_spatial or len(spatial_in) != len(output_spatial):
        return None
    probe = inputs.detach().float().clone().requires_grad_(True)
    ranges: list[tuple[tuple[int, int], ...]] = []
    exact = True
    with torch.enable_grad():
        for axis, size in enumerate(output_spatial):
            along: list[tuple[int, int]] = []
            for i in range(size):
                index: list[slice | int] = [slice(None), slice(None)]
                index += [
                    i if a == axis else middle
                    for a, middle in enumerate(m // 2 for m in output_spatial)
                ]
                out = _layer_output(model, layer, probe.to(inputs.dtype))
                (grad,) = torch.autograd.grad(out[tuple(index)].float().sum(), probe)
                other = [d for d in range(grad.dim()) if d != axis + 2]
                support = torch.nonzero(grad.abs().amax(dim=other) > 0).flatten()
                if support.numel() == 0:
                    exact = False
                    along.append((0, spatial_in[axis]))
                else:
                    along.append((int(support[0]), int(support[-1]) + 1))
            ranges.append(tuple(along))
    return ReceptiveField(tuple(ranges), exact)
