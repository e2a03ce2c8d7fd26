"""Stats over steps: GET /api/v1/runs/<id>/series?layer=&quantity=&stat=&param=&call=."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.errors import ApiError
from api.store import arg, finite_or_none, get_reader, int_arg
from tracker.names import STAT_NAMES, check_quantity, check_stat

bp = Blueprint("series", __name__)


@bp.get("/runs/<run_id>/series")
def get(run_id: str) -> dict[str, Any]:
    """One or more stats (comma-separated) of one tensor over the whole run."""
    layer = arg("layer")
    quantity = check_quantity(arg("quantity") or "")
    stats = (arg("stat", required=False) or "mean").split(",")
    if len(stats) > len(STAT_NAMES):
        raise ApiError(400, "too many stats requested")
    columns = [check_stat(s) for s in stats]
    param = arg("param", required=False)
    call = int_arg("call", required=False, default=None, maximum=10_000)
    reader = get_reader(run_id)
    steps, rows = reader.stats(layer or "", quantity, param, call)
    return finite_or_none(
        {
            "layer": layer,
            "quantity": quantity,
            "param": param,
            "call": call,
            "steps": steps,
            "stats": {s: rows[:, c] for s, c in zip(stats, columns, strict=True)},
        }
    )
