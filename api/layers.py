"""Layers of a run: GET /api/v1/runs/<id>/layers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.store import finite_or_none, get_reader
from tracker.names import STAT_NAMES

bp = Blueprint("layers", __name__)


@bp.get("/runs/<run_id>/layers")
def all_layers(run_id: str) -> dict[str, Any]:
    """Watched layers in model order, with shapes, parameters, latest stats and health flags."""
    reader = get_reader(run_id)
    latest = reader.latest()
    flags = reader.health()
    layers = []
    for info in reader.layer_info():
        stats: dict[str, dict[str, Any]] = {}
        for (layer, quantity, part), (step, row) in latest.items():
            if layer == info["name"]:
                stats.setdefault(quantity, {})[part] = {
                    "step": step,
                    "stats": dict(zip(STAT_NAMES, row.tolist(), strict=True)),
                }
        info["latest"] = stats
        info["flags"] = [f.to_dict() for f in flags.get(info["name"], [])]
        layers.append(info)
    return finite_or_none({"layers": layers, "stat_names": list(STAT_NAMES)})
