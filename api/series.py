"""Stats over steps: GET /api/v1/runs/<id>/series?layer=&quantity=&stat=&param=&call=.

``points=N`` downsamples on the server to at most N buckets of equal step span and adds each
bucket's ``min`` and ``max``, so a 100k-step series costs a page a few KB and spikes still show;
``start``/``end`` restrict it to the steps on screen; ``probe=1`` reads the probe inputs' rows.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.cache import immutable
from api.errors import ApiError
from api.params import CALL, END, LAYER, PARAM, POINTS, PROBE, QUANTITY, START, names, query
from api.query import bool_arg, points_arg, step_range, within
from api.store import arg, finite_or_none, get_reader, int_arg
from tracker.downsample import downsample
from tracker.names import STAT_NAMES, check_quantity, check_stat

bp = Blueprint("series", __name__)


@bp.get("/runs/<run_id>/series")
@immutable
@query(
    LAYER,
    QUANTITY,
    names("stat", f"Stats: {', '.join(STAT_NAMES)} (default mean)", len(STAT_NAMES)),
    PARAM,
    CALL,
    POINTS,
    PROBE,
    START,
    END,
)
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
    points = points_arg()
    probe = bool_arg("probe")
    start, end = step_range()
    reader = get_reader(run_id)
    steps, rows = reader.stats(layer or "", quantity, param, call, probe)
    if start is not None or end is not None:
        keep = within(steps, start, end)
        steps, rows = steps[keep], rows[keep]
    body: dict[str, Any] = {
        "layer": layer,
        "quantity": quantity,
        "param": param,
        "call": call,
        "probe": probe,
    }
    if points is None:
        body["steps"] = steps
        body["stats"] = {s: rows[:, c] for s, c in zip(stats, columns, strict=True)}
        return finite_or_none(body)
    # Every stat is cut on the same buckets, so their steps are one array.
    cut = {s: downsample(steps, rows[:, c], points) for s, c in zip(stats, columns, strict=True)}
    first = next(iter(cut.values()))
    body.update(
        points=points,
        downsampled=len(steps) > points,
        total=len(steps),
        steps=first[0],
        stats={s: c[1] for s, c in cut.items()},
        min={s: c[2] for s, c in cut.items()},
        max={s: c[3] for s, c in cut.items()},
    )
    return finite_or_none(body)
