"""Runs and projects: GET /api/v1/projects, /runs, /runs/health, /runs/<id>, /runs/<id>/health."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.errors import ApiError
from api.query import list_arg
from api.store import arg, finite_or_none, get_reader, get_store, int_arg
from tracker.errors import InvalidArgumentError, NotFoundError
from tracker.health import is_degraded, run_health
from tracker.reader import RunInfo
from tracker.store import check_run_id

bp = Blueprint("runs", __name__)
STATUSES = ("running", "finished", "failed", "crashed")


def run_json(info: RunInfo) -> dict[str, Any]:
    """The public representation of a run."""
    end = info.ended_at
    duration = (end - info.started_at).total_seconds() if end else None
    metrics = (info.summary or {}).get("metrics", {})
    loss = metrics.get("loss", {}).get("value")
    return {
        "id": info.id,
        "name": info.name,
        "project": info.project,
        "status": info.status,
        "status_reason": info.status_reason,
        "degraded": is_degraded((info.summary or {}).get("counters", {})),
        "started_at": info.started_at.isoformat(),
        "ended_at": end.isoformat() if end else None,
        "duration_s": duration,
        "config": info.config,
        "tags": info.tags,
        "last_step": (info.summary or {}).get("last_step"),
        "final_loss": loss if isinstance(loss, int | float) else None,
        "metrics": metrics,
    }


@bp.get("/projects")
def projects() -> dict[str, Any]:
    """List projects with their run counts."""
    return {"projects": [{"name": n, "runs": c} for n, c in get_store().catalog.projects()]}


@bp.get("/runs")
def all_runs() -> dict[str, Any]:
    """List runs, newest first; filter by project and status."""
    project = arg("project", required=False)
    status = arg("status", required=False)
    if status is not None and status not in STATUSES:
        raise InvalidArgumentError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    limit = int_arg("limit", required=False, default=200, minimum=1, maximum=1000)
    rows = get_store().catalog.runs(project=project, status=status, limit=limit)
    return {"runs": [finite_or_none(run_json(RunInfo.from_row(r, p))) for r, p in rows]}


HEALTH_BATCH = 50  # runs per /runs/health request: the runs page asks for the rows on screen


@bp.get("/runs/health")
def health_of_runs() -> dict[str, Any]:
    """Overall health of several runs (``ids=a,b,...``) for the runs list's badges.

    Kept out of /runs, which stays a catalog query: health reads each run's newest files.
    """
    out: dict[str, Any] = {}
    for run_id in list_arg("ids", HEALTH_BATCH):
        check_run_id(run_id)  # a malformed id is a 400 for the whole request
        try:
            flags = get_reader(run_id).health()
        except (ApiError, NotFoundError):  # deleted since the list was drawn: no badge, no error
            out[run_id] = None
            continue
        codes = sorted({f.code for fl in flags.values() for f in fl})
        layers = sorted(name for name, fl in flags.items() if fl)
        out[run_id] = {"health": run_health(flags), "codes": codes, "layers": layers}
    return {"runs": out}


@bp.get("/runs/<run_id>")
def get(run_id: str) -> dict[str, Any]:
    """One run: identity, status, config, last metric values, epochs."""
    reader = get_reader(run_id)
    body = run_json(reader.info)
    body["epochs"] = [{"epoch": e, "first_step": a, "last_step": b} for e, a, b in reader.epochs()]
    body["layers"] = reader.layers()
    return finite_or_none(body)


@bp.get("/runs/<run_id>/health")
def health(run_id: str) -> dict[str, Any]:
    """Health flags per layer from the latest stats, and the run's overall state."""
    flags = get_reader(run_id).health()
    return {
        "health": run_health(flags),
        "layers": {name: [f.to_dict() for f in fl] for name, fl in flags.items()},
    }
