"""Layers of a run: GET /api/v1/runs/<id>/layers and /runs/<id>/layers/<name>.

``latest=0`` leaves out the latest stats and health flags: type, shapes and parameters come from
the catalog alone, at once, where reading every layer's latest stats takes a second for a run of
hundreds of layers (pages that only need a layer's parameters ask for this).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.params import flag, query
from api.query import bool_arg
from api.store import arg, finite_or_none, get_reader
from tracker.names import STAT_NAMES
from tracker.reader import RunReader

bp = Blueprint("layers", __name__)
LATEST = flag("latest", "0: type, shapes and parameters only (default 1: also latest stats, flags)")


def _with_latest() -> bool:
    """``latest`` (default 1): include the latest stats and health flags."""
    return arg("latest", required=False) is None or bool_arg("latest")


def _describe(reader: RunReader, names: list[str]) -> list[dict[str, Any]]:
    """Layer info with latest stats per quantity/part and health flags (unless latest=0)."""
    if not _with_latest():
        return [reader.layer_info(name) for name in names]
    latest = reader.latest()
    flags = reader.health(latest)
    out = []
    for name in names:
        info = reader.layer_info(name)
        stats: dict[str, dict[str, Any]] = {}
        for (layer, quantity, part), (step, row) in latest.items():
            if layer == name:
                stats.setdefault(quantity, {})[part] = {
                    "step": step,
                    "stats": dict(zip(STAT_NAMES, row.tolist(), strict=True)),
                }
        info["latest"] = stats
        info["flags"] = [f.to_dict() for f in flags.get(name, [])]
        out.append(info)
    return out


@bp.get("/runs/<run_id>/layers")
@query(LATEST)
def all_layers(run_id: str) -> dict[str, Any]:
    """Watched layers in model order, with shapes, parameters, latest stats and health flags."""
    reader = get_reader(run_id)
    layers = _describe(reader, reader.layers())
    return finite_or_none({"layers": layers, "stat_names": list(STAT_NAMES)})


@bp.get("/runs/<run_id>/layers/<path:name>")
@query(LATEST)
def get(run_id: str, name: str) -> dict[str, Any]:
    """One layer (its name URL-quoted), described as in the list."""
    reader = get_reader(run_id)
    reader.layer_info(name)  # 404 with the list of layers if unknown
    return finite_or_none({**_describe(reader, [name])[0], "stat_names": list(STAT_NAMES)})
