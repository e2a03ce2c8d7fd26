"""Metric curves for plots: GET /api/v1/runs/<id>/curves?names=&points=&start=&end=.

Every logged scalar (or those in ``names``) in one request, each cut into at most ``points``
buckets of equal step span (tracker.downsample's grid) with the mean, min and max of each, so the
run page draws a 100,000-step loss from ~1,000 points. The buckets are computed by the database
(GROUP BY), not by fetching every row: 100k metric rows through the ORM take seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint
from sqlalchemy import func, select

from api.errors import ApiError
from api.params import END, POINTS, START, names, query
from api.query import list_arg, points_arg, step_range
from api.store import finite_or_none, get_reader, get_store
from tracker.catalog import Metric
from tracker.downsample import grid
from tracker.names import check_name

bp = Blueprint("curves", __name__)
DEFAULT_POINTS = 1000
MAX_NAMES = 64


@bp.get("/runs/<run_id>/curves")
@query(names("names", "Metric names (default: the first 64)", MAX_NAMES), POINTS, START, END)
def get(run_id: str) -> dict[str, Any]:
    """Logged metrics, downsampled by the database to at most ``points`` buckets each."""
    reader = get_reader(run_id)
    known = reader.metric_names()
    names = list_arg("names", MAX_NAMES, required=False) or known[:MAX_NAMES]
    for name in names:
        check_name(name, "metric name")
        if name not in known:
            raise ApiError(404, f"run {run_id} has no metric {name!r}; metrics: {', '.join(known)}")
    points = points_arg() or DEFAULT_POINTS
    start, end = step_range()
    curves = []
    with get_store().catalog.read() as session:
        for name in names:
            where = [Metric.run_id == run_id, Metric.name == name]
            if start is not None:
                where.append(Metric.step >= start)
            if end is not None:
                where.append(Metric.step <= end)
            lo, hi, n = session.execute(
                select(func.min(Metric.step), func.max(Metric.step), func.count()).where(*where)
            ).one()
            if not n:
                curves.append(_curve(name, [], 0, points))
                continue
            if n <= points:
                query = select(
                    Metric.step, Metric.value, Metric.value, Metric.value, Metric.epoch
                ).order_by(Metric.step)
            else:
                bucket = (Metric.step - lo) // grid(lo, hi, points).width
                query = (
                    select(
                        func.min(Metric.step),
                        func.avg(Metric.value),
                        func.min(Metric.value),
                        func.max(Metric.value),
                        func.min(Metric.epoch),
                    )
                    .group_by(bucket)
                    .order_by(func.min(Metric.step))
                )
            curves.append(_curve(name, session.execute(query.where(*where)).all(), n, points))
    return finite_or_none({"run": run_id, "points": points, "curves": curves})


def _curve(name: str, rows: Sequence[Any], total: int, points: int) -> dict[str, Any]:
    columns: list[Any] = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * 5
    return {
        "name": name,
        "total": total,
        "downsampled": total > points,
        "steps": columns[0],
        "mean": columns[1],
        "min": columns[2],
        "max": columns[3],
        "epochs": columns[4],
    }
