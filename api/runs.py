"""Runs and projects: GET /api/v1/projects, /runs, /runs/health, /runs/<id>, /runs/<id>/health.

``/runs`` filters (project, status, name, tag, config key=value), sorts (started_at, name,
final_loss, ...) and pages with an opaque cursor: the sort value and id of the last run shown, so
a page boundary stays put when runs are added or finish between requests (keyset pagination).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, g

from api.errors import ApiError
from api.params import Param, integer, names, query, text
from api.query import list_arg, multi_arg
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
    """List projects with their run counts (only the token's, where reads need a token)."""
    scope = token_project()
    return {
        "projects": [
            {"name": n, "runs": c}
            for n, c in get_store().catalog.projects()
            if scope is None or n == scope
        ]
    }


def token_project() -> str | None:
    """The one project this request's token may read, if reads need a token and it has one."""
    token = g.get("tracker_token")
    return None if token is None else token.project


SORTS = ("started_at", "ended_at", "name", "status", "final_loss", "last_step", "duration_s")
_NUMERIC_SORTS = frozenset({"final_loss", "last_step", "duration_s"})
MAX_FILTERS = 8  # tag= and config= each, per request


@functools.total_ordering
class _Desc:
    """Wraps a value so that sorting ascending orders it descending."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.value == other.value

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.value < self.value)


def _sort_value(body: dict[str, Any], field: str) -> Any:
    """The JSON value a run sorts by (None sorts last in either order)."""
    value = body.get(field)
    if isinstance(value, float) and value != value:  # NaN loss: last, like a missing one
        return None
    return value


def _key(value: Any, run_id: str, descending: bool) -> tuple[Any, ...]:
    if value is None:  # missing values last in either order, then by id
        return (1, 0, _Desc(run_id) if descending else run_id)
    if descending:
        return (0, _Desc(value), _Desc(run_id))
    return (0, value, run_id)


def _encode_cursor(sort: str, order: str, value: Any, run_id: str) -> str:
    raw = json.dumps([sort, order, value, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str, order: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_sort, got_order, value, run_id = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(400, "cursor is malformed: pass next_cursor from a /runs answer") from None
    if (got_sort, got_order) != (sort, order):
        raise ApiError(400, f"cursor is from sort={got_sort} order={got_order}, not {sort} {order}")
    numeric = sort in _NUMERIC_SORTS
    typed = (
        isinstance(value, int | float) and not isinstance(value, bool)
        if numeric
        else (isinstance(value, str))
    )
    if not isinstance(run_id, str) or not (value is None or typed):
        raise ApiError(400, "cursor is malformed: pass next_cursor from a /runs answer")
    return value, run_id


def _config_filter(text: str) -> Callable[[dict[str, Any]], bool]:
    """``key=value`` (``a.b=value`` for nested keys); the value is read as JSON if it parses,
    so ``lr=0.05`` matches the number and ``act=relu`` the string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ApiError(400, f"config filter must be key=value, got {text!r}")
    try:
        wanted: Any = json.loads(raw)
    except ValueError:
        wanted = raw

    def matches(config: dict[str, Any]) -> bool:
        value = _lookup(config, key)
        if value is _MISSING:
            return False
        if isinstance(value, bool) or isinstance(wanted, bool):
            return type(value) is type(wanted) and value == wanted
        return bool(value == wanted) or (isinstance(value, str) and value == raw)

    return matches


_MISSING = object()


def _lookup(config: dict[str, Any], key: str) -> Any:
    """``config[key]``, else the nested value at the dotted path ``key``, else _MISSING."""
    if key in config:
        return config[key]
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


@bp.get("/runs")
@query(
    text("project", "Only runs of this project"),
    text("status", "Only runs in this state", enum=STATUSES),
    text("name", "Only runs of this name"),
    Param("tag", "Only runs with this tag (repeat: all of them)", repeat=True),
    Param(
        "config",
        "Only runs whose config has key=value (a.b=v: nested; v read as JSON)",
        repeat=True,
    ),
    text("sort", "Sort by (default started_at)", enum=SORTS),
    text("order", "asc or desc (default: desc for started_at, else asc)", enum=("asc", "desc")),
    integer("limit", "Runs per page (default 200)", 1, 1000),
    text("cursor", "next_cursor of the previous page"),
)
def all_runs() -> dict[str, Any]:
    """List runs (newest first by default); filter by project, status, name, tag and config
    value; sort by any of SORTS; page with ``cursor`` (``next_cursor`` of the previous page)."""
    project = arg("project", required=False)
    scope = token_project()
    if scope is not None:  # reads need a token (TRACKER_READ_AUTH) that is for one project
        if project not in (None, scope):
            raise ApiError(403, f"this token is for project {scope!r}, not {project!r}")
        project = scope
    status = arg("status", required=False)
    if status is not None and status not in STATUSES:
        raise InvalidArgumentError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    name = arg("name", required=False)
    tags = multi_arg("tag", MAX_FILTERS)
    configs = [_config_filter(c) for c in multi_arg("config", MAX_FILTERS)]
    sort = arg("sort", required=False, default="started_at") or "started_at"
    if sort not in SORTS:
        raise ApiError(400, f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
    order = arg("order", required=False) or ("desc" if sort == "started_at" else "asc")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"order must be 'asc' or 'desc', got {order!r}")
    limit = int_arg("limit", required=False, default=200, minimum=1, maximum=1000) or 200
    cursor = arg("cursor", required=False)
    after = _decode_cursor(cursor, sort, order) if cursor else None

    descending = order == "desc"
    rows = get_store().catalog.runs(project=project, status=status, name=name)
    bodies = []
    for run, pname in rows:
        if tags and not set(tags) <= set(run.tags or []):
            continue
        if configs and not all(match(run.config or {}) for match in configs):
            continue
        bodies.append(finite_or_none(run_json(RunInfo.from_row(run, pname))))
    keyed = sorted(
        ((_key(_sort_value(b, sort), b["id"], descending), b) for b in bodies),
        key=lambda kb: kb[0],
    )
    if after is not None:
        start = _key(after[0], after[1], descending)
        keyed = [kb for kb in keyed if kb[0] > start]
    page = [b for _, b in keyed[:limit]]
    next_cursor = None
    if len(keyed) > limit:
        last = page[-1]
        next_cursor = _encode_cursor(sort, order, _sort_value(last, sort), last["id"])
    return {"runs": page, "next_cursor": next_cursor}


HEALTH_BATCH = 50  # runs per /runs/health request: the runs page asks for the rows on screen


@bp.get("/runs/health")
@query(names("ids", "Run ids", HEALTH_BATCH, required=True))
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
