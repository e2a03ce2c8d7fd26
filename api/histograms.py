"""Histograms on the shared binade bins: GET /api/v1/runs/<id>/histogram and /histograms.

``/histograms`` takes ``points=N`` (at most N rows: the mean histogram of each bucket of equal
step span, for a steps x bins heatmap of a long run) and ``start``/``end``; both take ``probe=1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint

from api.cache import immutable
from api.params import CALL, END, LAYER, PARAM, POINTS, PROBE, QUANTITY, START, STEP, query
from api.query import bool_arg, points_arg, step_range, within
from api.store import arg, finite_or_none, get_reader, int_arg
from tracker.capture.histogram import display_edges, to_display
from tracker.downsample import downsample_rows
from tracker.names import check_quantity

bp = Blueprint("histograms", __name__)


def trim_range(counts: np.ndarray) -> tuple[int, int]:
    """[first, last] display bins with any count, over all rows (the whole range if empty)."""
    nonzero = np.flatnonzero(np.atleast_2d(counts).sum(axis=0))
    if not nonzero.size:
        return 0, counts.shape[-1] - 1
    return int(nonzero[0]), int(nonzero[-1])


def edges_json(first: int, last: int) -> list[float | None]:
    """Edges of display bins first..last (null for -inf/+inf)."""
    edges = display_edges()[first : last + 2]
    return [float(e) if np.isfinite(e) else None for e in edges]


def _query() -> tuple[str, str, str | None, int | None, bool]:
    layer = arg("layer") or ""
    quantity = check_quantity(arg("quantity") or "")
    param = arg("param", required=False)
    call = int_arg("call", required=False, default=None, maximum=10_000)
    return layer, quantity, param, call, bool_arg("probe")


@bp.get("/runs/<run_id>/histogram")
@immutable
@query(LAYER, QUANTITY, PARAM, CALL, PROBE, STEP)
def get(run_id: str) -> dict[str, Any]:
    """One histogram. ``offset`` is the index of the first bin in the shared 511 display bins, so
    histograms of any run or step line up bin for bin; ``edges`` has one more entry than ``counts``
    (null stands for -inf/+inf)."""
    layer, quantity, param, call, probe = _query()
    step = int_arg("step")
    _, counts = get_reader(run_id).histogram(layer, quantity, step or 0, param, call, probe)
    first, last = trim_range(counts)
    return {
        "layer": layer,
        "quantity": quantity,
        "param": param,
        "step": step,
        "offset": first,
        "edges": edges_json(first, last),
        "counts": counts[first : last + 1].tolist(),
    }


@bp.get("/runs/<run_id>/histograms")
@immutable
@query(LAYER, QUANTITY, PARAM, CALL, PROBE, POINTS, START, END)
def all_histograms(run_id: str) -> dict[str, Any]:
    """Every stored histogram of one tensor: a steps x bins matrix for a heatmap over time."""
    layer, quantity, param, call, probe = _query()
    points = points_arg()
    start, end = step_range()
    steps, raw = get_reader(run_id).histograms(layer, quantity, param, call, probe)
    if start is not None or end is not None:
        keep = within(steps, start, end)
        steps, raw = steps[keep], raw[keep]
    total = len(steps)
    if points is not None and total > points:
        # Binade counts add up exactly; the mean of a bucket's rows keeps one histogram's scale.
        steps, raw = downsample_rows(steps, raw, points)
        raw = np.round(raw, 2)  # fractions of a count: two decimals are plenty, and short JSON
    counts = to_display(raw) if len(steps) else np.zeros((0, 511), dtype=np.int64)
    first, last = trim_range(counts) if len(steps) else (0, 0)
    body: dict[str, Any] = {
        "layer": layer,
        "quantity": quantity,
        "param": param,
        "probe": probe,
        "steps": steps,
        "offset": first,
        "edges": edges_json(first, last),
        "counts": counts[:, first : last + 1],
    }
    if points is not None:
        body.update(points=points, downsampled=total > points, total=total)
    return finite_or_none(body)
