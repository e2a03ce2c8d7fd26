"""Histograms on the shared binade bins: GET /api/v1/runs/<id>/histogram and /histograms."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint

from api.store import arg, finite_or_none, get_reader, int_arg
from tracker.capture.histogram import display_edges, to_display
from tracker.names import check_quantity

bp = Blueprint("histograms", __name__)


def _trim(counts: np.ndarray) -> tuple[int, int]:
    """[first, last] display bins with any count, over all rows (the whole range if empty)."""
    nonzero = np.flatnonzero(np.atleast_2d(counts).sum(axis=0))
    if not nonzero.size:
        return 0, counts.shape[-1] - 1
    return int(nonzero[0]), int(nonzero[-1])


def _edges(first: int, last: int) -> list[float | None]:
    edges = display_edges()[first : last + 2]
    return [float(e) if np.isfinite(e) else None for e in edges]


def _query() -> tuple[str, str, str | None, int | None]:
    layer = arg("layer") or ""
    quantity = check_quantity(arg("quantity") or "")
    param = arg("param", required=False)
    call = int_arg("call", required=False, default=None, maximum=10_000)
    return layer, quantity, param, call


@bp.get("/runs/<run_id>/histogram")
def get(run_id: str) -> dict[str, Any]:
    """One histogram. ``offset`` is the index of the first bin in the shared 511 display bins, so
    histograms of any run or step line up bin for bin; ``edges`` has one more entry than ``counts``
    (null stands for -inf/+inf)."""
    layer, quantity, param, call = _query()
    step = int_arg("step")
    _, counts = get_reader(run_id).histogram(layer, quantity, step or 0, param, call)
    first, last = _trim(counts)
    return {
        "layer": layer,
        "quantity": quantity,
        "param": param,
        "step": step,
        "offset": first,
        "edges": _edges(first, last),
        "counts": counts[first : last + 1].tolist(),
    }


@bp.get("/runs/<run_id>/histograms")
def all_histograms(run_id: str) -> dict[str, Any]:
    """Every stored histogram of one tensor: a steps x bins matrix for a heatmap over time."""
    layer, quantity, param, call = _query()
    steps, raw = get_reader(run_id).histograms(layer, quantity, param, call)
    counts = to_display(raw) if len(steps) else np.zeros((0, 511), dtype=np.int64)
    first, last = _trim(counts) if len(steps) else (0, 0)
    return finite_or_none(
        {
            "layer": layer,
            "quantity": quantity,
            "param": param,
            "steps": steps,
            "offset": first,
            "edges": _edges(first, last),
            "counts": counts[:, first : last + 1],
        }
    )
