"""Maximally activating inputs: GET /api/v1/runs/<id>/topk and /runs/<id>/layers/<name>/topk."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint

from api.errors import ApiError
from api.params import flag, integer, query
from api.store import arg, finite_or_none, get_reader, int_arg

bp = Blueprint("topk", __name__)

MAX_CHANNELS = 64  # per request: a wide layer's patches are paged, not sent at once


@bp.get("/runs/<run_id>/topk")
def passes(run_id: str) -> dict[str, Any]:
    """The stored top-k passes of a run, by step: epoch, step, k, dataset size, layers."""
    return {"passes": get_reader(run_id).top_k_passes()}


@bp.get("/runs/<run_id>/layers/<path:name>/topk")
@query(
    integer("epoch", "The pass of this epoch (default: the newest)", maximum=10**9),
    integer("step", "The pass at this step"),
    integer("start", "First channel (default 0)", maximum=10**6),
    integer("count", f"Channels (default and at most {MAX_CHANNELS})", 1, MAX_CHANNELS),
    flag("patches", "0: leave out the input patches (default 1)"),
)
def layer(run_id: str, name: str) -> dict[str, Any]:
    """One layer's top-k inputs per channel from one pass (``epoch`` or ``step``; default the
    newest), channels ``start`` to ``start + count`` (at most 64): values, dataset indices,
    receptive-field boxes, and each input cut to its box (``patches``: channel x rank x
    in_channels x field; null outside the input)."""
    epoch = int_arg("epoch", required=False, default=None, maximum=10**9)
    step = int_arg("step", required=False, default=None)
    start = int_arg("start", required=False, default=0, maximum=10**6) or 0
    count = int_arg("count", required=False, default=MAX_CHANNELS, minimum=1, maximum=MAX_CHANNELS)
    if epoch is not None and step is not None:
        raise ApiError(400, "give epoch or step, not both")
    patches_wanted = arg("patches", required=False, default="1") != "0"
    reader = get_reader(run_id)
    reader.layer_info(name)  # 404 with the list of layers if unknown
    view = reader.top_k(name, epoch=epoch, step=step)
    channels = view.values.shape[0]
    stop = min(channels, start + (count or MAX_CHANNELS))
    if start >= channels and channels:
        raise ApiError(400, f"start must be below the layer's {channels} channels")
    patches = view.patches() if patches_wanted else None
    body: dict[str, Any] = {
        "layer": name,
        "epoch": view.epoch,
        "step": view.step,
        "k": int(view.values.shape[1]),
        "channels": channels,
        "start": start,
        "stop": stop,
        "dataset_size": view.dataset_size,
        "input_shape": list(view.input_shape),
        "field_exact": view.result.field_exact,
        "values": view.values[start:stop],
        "indices": view.indices[start:stop],
        "boxes": view.boxes[start:stop],
        "patches": None if patches is None else patches[start:stop],
    }
    if patches is not None:
        finite = patches[np.isfinite(patches)]
        body["patch_range"] = [float(finite.min()), float(finite.max())] if finite.size else None
    return finite_or_none(body)
