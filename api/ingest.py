"""Writes from remote clients: create and finish runs, register layers, upload segments, metrics.

POST /runs, PATCH /runs/<id>, POST /runs/<id>/layers, PUT /runs/<id>/segments/<segment id>,
POST /runs/<id>/metrics. Every write is idempotent, so a client may retry any of them: a run or a
segment sent again with the same content is a no-op (200), with different content a 409.
Segments are checked before they reach the store (I6): an HDF5 tracker segment of this run and
id, with no links or datasets that point outside the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import h5py
from flask import Blueprint, current_app, request
from sqlalchemy.exc import IntegrityError

from api.auth import authorize
from api.errors import ApiError
from api.runs import STATUSES, run_json
from api.store import finite_or_none, get_store
from tracker.catalog import MetricRow, Segment
from tracker.catalog.models import Run
from tracker.errors import InvalidArgumentError, StoreError
from tracker.names import check_name
from tracker.reader import find_run
from tracker.store import Store, check_run_id
from tracker.store import segment as seg
from tracker.store.backend import rank_folder
from tracker.store.compact import compact_after_finish
from tracker.store.local import file_checksum

bp = Blueprint("ingest", __name__)

MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 32
MAX_ITEMS = 100_000  # metrics or layers per request
MAX_STEP = 2**62
MAX_RANK = 1 << 16
_SEGMENT_ID = re.compile(r"^[0-9a-f]{32}$")
_CHECKSUM = re.compile(r"^crc32:[0-9a-f]{8}$")
_CHUNK = 1 << 20
CHECKSUM_HEADER = "X-Tracker-Checksum"


# -- request bodies -------------------------------------------------------------------------------


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def json_body() -> dict[str, Any]:
    """The request's JSON object, within the size and depth limits, else a 4xx."""
    if not request.is_json:
        raise ApiError(415, "send a JSON body with Content-Type: application/json")
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise ApiError(413, f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    raw = request.stream.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise ApiError(413, f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    if _depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, f"JSON nesting is limited to {MAX_JSON_DEPTH} levels")
    return body


def _field(body: dict[str, Any], key: str, kind: Any, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, f"{key!r} must be of type {getattr(kind, '__name__', kind)}")
    return value


def _text(body: dict[str, Any], key: str, limit: int, default: str | None = None) -> str | None:
    value = _field(body, key, str, default)
    if value is not None and (len(value) > limit or "\x00" in value):
        raise ApiError(400, f"{key!r} must be at most {limit} characters, without NUL")
    return value


def _int(value: Any, what: str, minimum: int = 0, maximum: int = MAX_STEP) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ApiError(400, f"{what} must be an integer between {minimum} and {maximum}")
    return value


def _number(value: Any, what: str) -> float:
    if value is None:
        return math.nan  # JSON has no NaN: null stands for it (and for +-Inf sent as strings)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"{what} must be a number or null")
    return float(value)


# -- runs -----------------------------------------------------------------------------------------


def _run_row(run_id: str) -> tuple[Run, str]:
    """The run and its project name, or a 404."""
    check_run_id(run_id)
    catalog = get_store().catalog
    row = catalog.get_run(run_id)
    if row is None:
        raise ApiError(404, f"no run with id {run_id!r}")
    return row, catalog.project_name(row.project_id)


def _run_body(run_id: str) -> dict[str, Any]:
    return finite_or_none(run_json(find_run(get_store(), run_id)))


@bp.post("/runs")
def new_run() -> tuple[dict[str, Any], int]:
    """Create a run (201); the same id sent again with the same project and name is a no-op."""
    body = json_body()
    project = check_name(_text(body, "project", 256, "default") or "default", "project")
    authorize(project)
    run_id = check_run_id(_text(body, "id", 32) or uuid.uuid4().hex[:16])
    name = check_name(_text(body, "name", 256) or run_id, "run name")
    config = _field(body, "config", dict, {})
    tags = _field(body, "tags", list, [])
    if len(tags) > 256:
        raise ApiError(400, "at most 256 tags")
    for tag in tags:
        check_name(tag, "tag")
    host = _text(body, "host", 256, "") or ""
    pid = _int(_field(body, "pid", int, 0), "'pid'", 0, 2**31 - 1)
    commit = _text(body, "git_commit", 64)
    catalog = get_store().catalog
    existing = catalog.get_run(run_id)
    if existing is None:
        try:
            catalog.create_run(run_id, project, name, config, tags, host, pid, commit)
        except StoreError:  # created meanwhile by a retry of this request: checked below
            existing = catalog.get_run(run_id)
            if existing is None:
                raise
    if existing is not None:
        if (catalog.project_name(existing.project_id), existing.name) != (project, name):
            raise ApiError(409, f"run {run_id} exists with another project or name")
        return _run_body(run_id), 200
    return _run_body(run_id), 201


@bp.patch("/runs/<run_id>")
def update_run(run_id: str) -> dict[str, Any]:
    """Set a run's status (finished, failed, crashed: it ends), reason and writer counters."""
    row, project = _run_row(run_id)
    authorize(project)
    body = json_body()
    status = _text(body, "status", 16, row.status) or row.status
    if status not in STATUSES:
        raise ApiError(400, f"'status' must be one of {', '.join(STATUSES)}; got {status!r}")
    reason = _text(body, "reason", 4000)
    counters = _field(body, "counters", dict)
    if counters is not None:
        if len(counters) > 256:
            raise ApiError(400, "at most 256 counters")
        for key, value in counters.items():
            check_name(key, "counter name")
            _int(value, f"counter {key!r}")
    compact = _field(body, "compact", bool, True)
    get_store().catalog.set_status(
        run_id, status, reason, ended=status != "running", counters=counters
    )
    if status == "finished" and row.status != "finished" and compact:
        _compact_in_background(get_store(), run_id)
    return _run_body(run_id)


def _compact_in_background(store: Store, run_id: str) -> None:
    """Compact a run its client just finished, as a local run compacts itself at finish().

    In a thread, so the client's last request returns at once; every upload of the run came
    before this status (the spool sends in order). A worker killed meanwhile loses nothing
    (compaction is crash-safe) and `tracker compact` finishes the job.
    """

    def compact() -> None:
        for rank in store.catalog.ranks(run_id):
            compact_after_finish(store, run_id, rank)  # never raises

    threading.Thread(target=compact, name=f"compact-{run_id}", daemon=True).start()


@bp.post("/runs/<run_id>/layers")
def new_layers(run_id: str) -> tuple[dict[str, Any], int]:
    """Register watched layers; names already registered are kept as they are."""
    _, project = _run_row(run_id)
    authorize(project)
    items = _field(json_body(), "layers", list, [])
    if len(items) > MAX_ITEMS:
        raise ApiError(400, f"at most {MAX_ITEMS} layers per request")
    layers = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, f"layers[{i}] must be an object")
        params = _field(item, "params", dict, {})
        for pname, shape in params.items():
            check_name(pname, "parameter name")
            if not isinstance(shape, list) or len(shape) > 32:
                raise ApiError(400, f"layers[{i}].params[{pname!r}] must be a list of sizes")
            for size in shape:
                _int(size, f"layers[{i}].params[{pname!r}] sizes")
        layers.append(
            {
                "name": check_name(_text(item, "name", 256) or "", "layer name"),
                "position": _int(_field(item, "position", int, i), f"layers[{i}].position"),
                "type": _text(item, "type", 128, "") or "",
                "kind": _text(item, "kind", 16),
                "params": params,
            }
        )
    get_store().catalog.add_layers(run_id, layers)
    return {"layers": len(layers)}, 201


@bp.post("/runs/<run_id>/metrics")
def new_metrics(run_id: str) -> tuple[dict[str, Any], int]:
    """Log a batch of scalars ``{"metrics": [{name, step, value, epoch?, time?}]}``."""
    _, project = _run_row(run_id)
    authorize(project)
    items = _field(json_body(), "metrics", list, [])
    if len(items) > MAX_ITEMS:
        raise ApiError(400, f"at most {MAX_ITEMS} metrics per request")
    rows = []
    epochs: dict[int, tuple[int, int]] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, f"metrics[{i}] must be an object")
        name = check_name(_text(item, "name", 256) or "", "metric name")
        step = _int(item.get("step"), f"metrics[{i}].step")
        epoch = item.get("epoch")
        if epoch is not None:
            epoch = _int(epoch, f"metrics[{i}].epoch", 0, 2**31 - 1)
            first, last = epochs.get(epoch, (step, step))
            epochs[epoch] = (min(first, step), max(last, step))
        when = _number(item.get("time", 0.0), f"metrics[{i}].time")
        value = _number(item.get("value"), f"metrics[{i}].value")
        rows.append(MetricRow(name, step, value, epoch, when if math.isfinite(when) else 0.0))
    get_store().catalog.commit_batch(run_id, None, rows, epochs, {}, {})
    return {"metrics": len(rows)}, 201


# -- segments -------------------------------------------------------------------------------------


def _segment_row(segment_id: str) -> Segment | None:
    with get_store().catalog.read() as s:
        return s.get(Segment, segment_id)


def _same(row: Segment, run_id: str, checksum: str) -> dict[str, Any]:
    """The answer to an upload whose id is registered already: no-op, or a 409."""
    if row.run_id != run_id or row.checksum != checksum:
        raise ApiError(409, f"segment {row.id} exists with other content (checksum {row.checksum})")
    return {"id": row.id, "path": row.path, "nbytes": row.nbytes, "checksum": row.checksum}


def _receive(folder: Path) -> Path:
    """Stream the request body to a temporary file in the store (not in memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.part"
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 1 << 40
    size = 0
    with open(path, "wb") as fh:
        while chunk := request.stream.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                fh.close()
                path.unlink(missing_ok=True)
                raise ApiError(413, f"segments are limited to {limit} bytes")
            fh.write(chunk)
    if size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(400, "the body is empty: send the segment file's bytes")
    return path


def _check_self_contained(f: h5py.File) -> None:
    """Refuse soft/external links, virtual datasets and external storage (nothing outside)."""
    stack: list[tuple[h5py.Group, int]] = [(f, 0)]
    seen = 0
    while stack:
        group, depth = stack.pop()
        if depth > 16:
            raise InvalidArgumentError("the segment nests groups too deeply")
        for name in group:
            seen += 1
            if seen > 1_000_000:
                raise InvalidArgumentError("the segment has too many objects")
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise InvalidArgumentError(f"the segment has a {type(link).__name__} at {name!r}")
            obj = group[name]
            if isinstance(obj, h5py.Group):
                stack.append((obj, depth + 1))
            elif isinstance(obj, h5py.Dataset) and (obj.is_virtual or obj.external):
                raise InvalidArgumentError(f"dataset {name!r} keeps its data outside the file")


def _inspect(path: Path, run_id: str, segment_id: str) -> tuple[int, int, int, seg.Batch]:
    """(rank, first step, last step, batch) of an uploaded file, or a 400 saying what is wrong."""
    try:
        with h5py.File(path, "r") as f:
            seg.check_header(f)
            _check_self_contained(f)
            seg.check_tables(f)
            attrs = f.attrs
            if seg.content(f) != seg.SEGMENT:
                raise InvalidArgumentError(f"only segments can be uploaded, not {seg.content(f)}")
            if str(attrs.get("run_id")) != run_id:
                raise InvalidArgumentError(f"the file belongs to run {attrs.get('run_id')!r}")
            if str(attrs.get("segment_id")) != segment_id:
                raise InvalidArgumentError(f"the file is segment {attrs.get('segment_id')!r}")
            rank = _int(int(attrs["rank"]), "rank", 0, MAX_RANK)
            first = _int(int(attrs["step_min"]), "step_min")
            last = _int(int(attrs["step_max"]), "step_max")
            if first > last or f["steps"].shape[0] < 1:
                raise InvalidArgumentError("the segment's step range is empty")
            batch = seg.read_batch(f)
    except ApiError as exc:
        raise ApiError(400, f"not a valid segment: {exc.message}") from None
    except (StoreError, InvalidArgumentError) as exc:
        raise ApiError(400, f"not a valid segment: {exc}".replace(str(path), "upload")) from None
    except (OSError, KeyError, ValueError, TypeError):
        raise ApiError(
            400, "not a valid segment: the body is not a readable tracker HDF5 file"
        ) from None
    for m in batch.metrics:
        check_name(m[0], "metric name")
        _int(m[1], "metric step")
    for layer, parts in batch.shapes.items():
        check_name(layer, "layer name")
        if not isinstance(parts, dict):
            raise ApiError(400, "not a valid segment: layer shapes must be objects")
    return rank, first, last, batch


@bp.put("/runs/<run_id>/segments/<segment_id>")
def put_segment(run_id: str, segment_id: str) -> tuple[dict[str, Any], int]:
    """Upload one segment file (the body), idempotent by id and checksum (X-Tracker-Checksum)."""
    _, project = _run_row(run_id)
    authorize(project)
    if not _SEGMENT_ID.match(segment_id):
        raise ApiError(400, f"invalid segment id {segment_id!r}: expected 32 lowercase hex digits")
    checksum = request.headers.get(CHECKSUM_HEADER, "")
    if not _CHECKSUM.match(checksum):
        raise ApiError(400, f"send the file's checksum as {CHECKSUM_HEADER}: crc32:<8 hex digits>")
    row = _segment_row(segment_id)
    if row is not None:  # a retry: nothing to read or write
        return _same(row, run_id, checksum), 200
    store = get_store()
    tmp = _receive(store.root / ".incoming")
    try:
        if file_checksum(tmp) != checksum:
            raise ApiError(400, f"the body does not match {CHECKSUM_HEADER}: damaged in transit")
        rank, first, last, batch = _inspect(tmp, run_id, segment_id)
        relpath = f"{rank_folder(run_id, rank)}/{first:012d}-{last:012d}-{segment_id}.h5"
        try:
            store.files.put(relpath, lambda p: os.replace(tmp, p))
        except StoreError:  # the file is there already: an upload that died before registering
            if not store.files.exists(relpath):
                raise
            if store.files.checksum(relpath) != checksum:
                raise ApiError(409, f"segment {segment_id} exists with other content") from None
        _register(relpath, run_id, rank, segment_id, checksum, first, last, batch)
    finally:
        tmp.unlink(missing_ok=True)
    return {"id": segment_id, "path": relpath, "checksum": checksum}, 201


def _register(
    relpath: str,
    run_id: str,
    rank: int,
    segment_id: str,
    checksum: str,
    first: int,
    last: int,
    batch: seg.Batch,
) -> None:
    """Register a stored segment with the batch it carries, as the writer would have (I2)."""
    store = get_store()
    with store.files.open(relpath) as f:
        segment = {
            "id": segment_id,
            "rank": rank,
            "step_min": first,
            "step_max": last,
            "n_steps": int(f["steps"].shape[0]),
            "path": relpath,
            "schema_version": int(f.attrs["schema_version"]),
            "kind": seg.SEGMENT,
            "nbytes": int(f.id.get_filesize()),
            "checksum": checksum,
        }
    metrics = [MetricRow(*m) for m in batch.metrics]
    try:
        store.catalog.commit_batch(run_id, segment, metrics, batch.epochs, batch.shapes, {})
    except IntegrityError:  # the same upload, registered meanwhile by a concurrent retry
        row = _segment_row(segment_id)
        if row is None:
            raise
        _same(row, run_id, checksum)
