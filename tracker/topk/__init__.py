"""Maximally activating inputs: per channel of a layer, the k inputs of a held-out set that
activate it most, and the input patch (receptive field) each came from.

Computed during training by ``run.watch(model, top_k=9, top_k_every="epoch", dataset=...)`` or
after it by :func:`top_k`; read back with ``RunReader.top_k(layer, epoch=...)``, over REST at
``/api/v1/runs/<id>/layers/<layer>/topk`` and in the UI's top-k page.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tracker.capture.layers import LayerSelector, select_layers, unwrap
from tracker.errors import InvalidArgumentError
from tracker.topk.collect import LayerTopK, TopKResult, collect_top_k
from tracker.topk.files import TopKView, save_top_k
from tracker.topk.stream import ChannelTopK, StreamingTopK

__all__ = [
    "ChannelTopK",
    "LayerTopK",
    "StreamingTopK",
    "TopKResult",
    "TopKView",
    "collect_top_k",
    "default_layers",
    "save_top_k",
    "top_k",
    "top_k_layers",
]

# Layers whose channels (or units) mean something to look at: their outputs before activation.
TOP_K_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def default_layers(name: str, module: nn.Module) -> bool:
    return isinstance(module, TOP_K_TYPES)


def top_k_layers(model: nn.Module, layers: LayerSelector = None) -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers to rank inputs for: conv and linear layers by default, or
    those ``layers`` picks (names or globs, a type, a predicate), as in ``run.watch``."""
    if layers is None and not any(default_layers("", m) for m in unwrap(model).modules()):
        raise InvalidArgumentError(
            "the model has no conv or linear layer for top-k; choose layers with top_k_layers="
        )
    specs = select_layers(model, default_layers if layers is None else layers)
    return [(s.name, s.module) for s in specs]


def top_k(
    run: Any,
    model: nn.Module,
    dataset: Any,
    layers: LayerSelector = None,
    k: int = 9,
    epoch: int | None = None,
    step: int | None = None,
    batch_size: int = 256,
    store: Any = None,
) -> TopKResult:
    """Rank ``dataset``'s inputs per channel of ``layers`` and store the top ``k`` in ``run``.

    ``run``: a live ``tracker.Run``, or the id or name of a stored run (``store`` as in
    tracker.open_run), for example after training. ``epoch``/``step`` label the pass (default:
    the run's current epoch and last step). ``dataset``: a tensor of inputs, an (inputs,
    targets) pair, or a map-style Dataset; it should be held out from training.
    """
    from tracker.reader import find_run
    from tracker.run import Run
    from tracker.store import Store

    chosen = top_k_layers(model, layers)
    result = collect_top_k(unwrap(model), dataset, chosen, k=k, batch_size=batch_size)
    if isinstance(run, Run):
        run.save_top_k(result, epoch=epoch, step=step)
        return result
    if not isinstance(run, str):
        raise InvalidArgumentError(f"run must be a tracker.Run or a run id/name, got {run!r}")
    with Store.open(store) as opened:
        info = find_run(opened, run)
        if step is None:
            step = int(info.summary.get("last_step", 0) or 0)
        with opened.lock(info.id, 0, "topk"):
            save_top_k(opened, info.id, result, epoch, step)
    return result
