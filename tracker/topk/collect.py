"""One top-k pass: run a held-out dataset through the model and keep, per channel, its top inputs.

Runs in eval mode under torch.no_grad with the model's modes, buffers (BatchNorm statistics) and
RNG restored afterwards, so it does not change training; the tracker's own hooks are paused.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tracker.capture.probe import preserved_state
from tracker.errors import InvalidArgumentError
from tracker.topk.receptive import ReceptiveField, receptive_field
from tracker.topk.stream import ChannelTopK, StreamingTopK

# Inputs kept with a result so patches can be cut out later: at most this many elements in all
# (128 MiB of float32); beyond it only dataset indices are stored.
MAX_SAMPLE_ELEMENTS = 32 * 1024 * 1024
RF_SAMPLES = 8  # inputs whose union of gradients gives the receptive field


@dataclass(frozen=True)
class LayerTopK:
    """A layer's top k per channel, with where each input's patch lies in the input."""

    layer: str
    top: ChannelTopK
    boxes: np.ndarray  # int64 (channels, k, input spatial dims, 2): [start, stop) per axis
    field_exact: bool  # False if the receptive field could not be traced (a dead path)
    output_shape: tuple[int, ...]  # one sample's output, (channels, *spatial)


@dataclass(frozen=True)
class TopKResult:
    """One pass over the dataset: every chosen layer, and the inputs their patches come from."""

    layers: dict[str, LayerTopK]
    dataset_size: int
    input_shape: tuple[int, ...]  # one sample, (channels, *spatial)
    sample_indices: np.ndarray  # sorted dataset indices referenced by any layer's top k
    samples: np.ndarray | None  # float32 (len(sample_indices), *input_shape), or None if too big


def dataset_inputs(dataset: Any) -> tuple[int, Any]:
    """(length, indexable inputs) of a tensor, an (inputs, targets) pair or a map-style Dataset."""
    if isinstance(dataset, Tensor):
        return len(dataset), dataset
    if isinstance(dataset, tuple | list) and dataset and isinstance(dataset[0], Tensor):
        return len(dataset[0]), dataset[0]
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return len(dataset), dataset
    raise InvalidArgumentError(
        "top-k needs dataset= as a tensor of inputs, an (inputs, targets) pair of tensors or a "
        f"map-style torch Dataset (with __len__ and __getitem__), got {type(dataset).__name__}"
    )


def _item_input(item: Any) -> Tensor:
    if isinstance(item, tuple | list):
        item = item[0]  # (input, target)
    if not isinstance(item, Tensor):
        raise InvalidArgumentError(
            f"dataset items must be tensors or (tensor, target) pairs, got {type(item).__name__}"
        )
    return item


def take(inputs: Any, indices: Sequence[int] | np.ndarray) -> Tensor:
    """The inputs at ``indices`` stacked into one batch."""
    if isinstance(inputs, Tensor):
        return inputs[torch.as_tensor(np.asarray(indices, dtype=np.int64))]
    return torch.stack([_item_input(inputs[int(i)]) for i in indices])


def batches(inputs: Any, length: int, batch_size: int) -> Iterator[tuple[int, Tensor]]:
    """(first index, batch) in dataset order."""
    for start in range(0, length, batch_size):
        yield start, take(inputs, range(start, min(start + batch_size, length)))


def _device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def collect_top_k(
    model: nn.Module,
    dataset: Any,
    layers: Sequence[tuple[str, nn.Module]],
    k: int = 9,
    batch_size: int = 256,
) -> TopKResult:
    """Run ``dataset`` through ``model`` once and keep the top ``k`` inputs per channel of each
    of ``layers`` (name, module), with receptive-field boxes for conv layers."""
    if k < 1:
        raise InvalidArgumentError(f"top_k must be >= 1, got {k}")
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
    if not layers:
        raise InvalidArgumentError("no layer to compute top-k for")
    length, inputs = dataset_inputs(dataset)
    if length == 0:
        raise InvalidArgumentError("the top-k dataset is empty")
    device = _device(model)
    streams = {name: StreamingTopK(k) for name, _ in layers}
    shapes: dict[str, tuple[int, ...]] = {}
    errors: dict[str, str] = {}
    first = [0]

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, _args: object, output: object) -> None:
            if not isinstance(output, Tensor) or output.dim() < 2:
                kind = type(output).__name__
                errors[name] = f"its output is {kind}, not a (batch, channels, ...) tensor"
                return
            if isinstance(module, nn.Linear) and output.dim() > 2:
                output = output.movedim(-1, 1)  # (batch, tokens, units): units are the channels
            streams[name].update(output, first[0])
            shapes[name] = tuple(output.shape[1:])

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers]
    input_shape: tuple[int, ...] = ()
    try:
        with preserved_state(model, "eval"), torch.no_grad():
            for start, batch in batches(inputs, length, batch_size):
                first[0] = start
                input_shape = tuple(batch.shape[1:])
                model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
    if errors:
        name, why = next(iter(errors.items()))
        raise InvalidArgumentError(f"top-k of layer {name!r} is not possible: {why}")
    missing = [name for name, _ in layers if name not in shapes]
    if missing:
        raise InvalidArgumentError(f"layers {missing} never ran on the top-k dataset")

    per_layer: dict[str, LayerTopK] = {}
    rf_inputs = take(inputs, range(min(RF_SAMPLES, length))).to(device)
    for name, module in layers:
        top = streams[name].result()
        field = None
        if torch.is_floating_point(rf_inputs):
            with preserved_state(model, "eval"):
                field = receptive_field(model, module, rf_inputs, shapes[name][1:])
        per_layer[name] = LayerTopK(
            name, top, _boxes(top, field, input_shape), field is None or field.exact, shapes[name]
        )
    referenced = np.unique(np.concatenate([r.top.indices.ravel() for r in per_layer.values()]))
    samples = None
    if referenced.size * int(np.prod(input_shape)) <= MAX_SAMPLE_ELEMENTS:
        samples = take(inputs, referenced).detach().float().cpu().numpy()
    return TopKResult(per_layer, length, input_shape, referenced, samples)


def _boxes(
    top: ChannelTopK, field: ReceptiveField | None, input_shape: tuple[int, ...]
) -> np.ndarray:
    spatial = input_shape[1:]
    boxes = np.zeros((top.channels, top.k, len(spatial), 2), dtype=np.int64)
    boxes[..., 1] = spatial  # the whole input when there is no receptive field (linear layers)
    if field is None:
        return boxes
    for axis, ranges in enumerate(field.ranges):
        table = np.asarray(ranges, dtype=np.int64)  # (output size, 2)
        boxes[:, :, axis, :] = table[top.positions[:, :, axis]]
    return boxes
