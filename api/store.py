"""Access to the store from request handlers: one Store per app, one reader per run per request."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import current_app, g, request

from api.errors import ApiError
from api.handles import OpenFiles
from api.params import FLAG_VALUES, MAX_INT, MAX_VALUE, Param, lookup
from tracker.reader import RunReader, find_run
from tracker.store import Store, check_run_id

EXTENSION = "tracker.store"
FILES = "tracker.files"


def get_store() -> Store:
    """The store this app serves."""
    return current_app.extensions[EXTENSION]


def get_reader(run_id: str) -> RunReader:
    """A reader for ``run_id``, shared by everything in this request and closed at its end."""
    check_run_id(run_id)
    readers: dict[str, RunReader] = g.setdefault("tracker_readers", {})
    if run_id not in readers:
        store = get_store()
        info = find_run(store, run_id)
        if info.id != run_id:
            raise ApiError(404, f"no run with id {run_id!r}")
        token = g.get("tracker_token")  # set when this request needed one (api/auth.py)
        if token is not None and not token.allows(info.project):
            raise ApiError(
                403, f"this token is for project {token.project!r}, not {info.project!r}"
            )
        files = get_files()
        readers[run_id] = RunReader(store, info, opener=None if files is None else files.open)
    return readers[run_id]


def get_files() -> OpenFiles | None:
    """This worker's cache of open files (api/handles.py), marked in use by this request."""
    files: OpenFiles | None = current_app.extensions.get(FILES)
    if files is not None and not g.get("tracker_files_used"):
        files.begin()
        g.tracker_files_used = True
    return files


def close_readers(exc: BaseException | None = None) -> None:
    for reader in g.pop("tracker_readers", {}).values():
        reader.close()
    files: OpenFiles | None = current_app.extensions.get(FILES)
    if files is not None:
        files.end(began=g.pop("tracker_files_used", False))


def arg(name: str, required: bool = True, default: str | None = None) -> str | None:
    """A query parameter, with a 400 naming it when it is missing (see api/params.py)."""
    declared = lookup(name)
    _check_declared(declared, required)
    value = _raw(name, required, default)
    allowed = declared.schema.get("enum")
    if value is not None and allowed is not None and value not in allowed:
        if tuple(allowed) == FLAG_VALUES:
            raise ApiError(400, f"query parameter {name!r} must be 0 or 1, got {value!r}")
        raise ApiError(400, f"unknown {name} {value!r}; {name} must be one of {', '.join(allowed)}")
    return value


def _raw(name: str, required: bool, default: str | None) -> str | None:
    value = request.args.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"query parameter {name!r} is required")
        return default
    if len(value) > MAX_VALUE or "\x00" in value:
        raise ApiError(400, f"query parameter {name!r} is malformed")
    return value


def _check_declared(declared: Param, required: bool) -> None:
    if declared.required != required:
        raise RuntimeError(
            f"query parameter {declared.name!r}: required={required} is not as declared"
        )


def int_arg(
    name: str,
    required: bool = True,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer query parameter within the declared [minimum, maximum]."""
    declared = lookup(name)
    _check_declared(declared, required)
    low: int = declared.schema.get("minimum", 0)
    high: int = declared.schema.get("maximum", MAX_INT)
    if (
        declared.schema.get("type") != "integer"
        or (minimum is not None and minimum != low)
        or (maximum is not None and maximum != high)
    ):
        raise RuntimeError(f"query parameter {name!r} is read as an integer unlike its declaration")
    raw = _raw(name, required, None)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"query parameter {name!r} must be between {low} and {high}")
    return value


def finite_or_none(values: Any) -> Any:
    """JSON-safe numbers: NaN/Inf become null (JSON has no NaN), NumPy becomes Python."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f":
            obj = values.astype(np.float64)
            out = obj.tolist()
            if not np.isfinite(obj).all():
                return _replace_nonfinite(out)
            return out
        return values.tolist()
    if isinstance(values, float | np.floating):
        return float(values) if np.isfinite(values) else None
    if isinstance(values, np.integer):
        return int(values)
    if isinstance(values, dict):
        return {k: finite_or_none(v) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return [finite_or_none(v) for v in values]
    return values


def _replace_nonfinite(values: Any) -> Any:
    if isinstance(values, list):
        return [_replace_nonfinite(v) for v in values]
    if isinstance(values, float) and not np.isfinite(values):
        return None
    return values
