"""Logged scalars: GET /api/v1/runs/<id>/metrics and /runs/<id>/metrics/<name>."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.store import finite_or_none, get_reader
from tracker.names import check_name

bp = Blueprint("metrics", __name__)


@bp.get("/runs/<run_id>/metrics")
def all_metrics(run_id: str) -> dict[str, Any]:
    """Names of the run's metrics with their last values."""
    reader = get_reader(run_id)
    last = (reader.info.summary or {}).get("metrics", {})
    return finite_or_none(
        {"metrics": [{"name": n, "last": last.get(n)} for n in reader.metric_names()]}
    )


@bp.get("/runs/<run_id>/metrics/<path:name>")
def get(run_id: str, name: str) -> dict[str, Any]:
    """Every value of one metric, with the step and epoch it was logged at."""
    check_name(name, "metric name")
    reader = get_reader(run_id)
    steps, values = reader.metrics(name)
    epochs = reader.metric_epochs(name)
    return finite_or_none(
        {
            "name": name,
            "steps": steps,
            "values": values,
            "epochs": [None if e < 0 else int(e) for e in epochs],
        }
    )
