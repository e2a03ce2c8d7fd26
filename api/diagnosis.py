"""Automatic diagnosis of a run's layers: GET /api/v1/runs/<id>/diagnosis."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from flask import Blueprint

from api.store import get_reader, get_store
from tracker.diagnosis import diagnose, summary

bp = Blueprint("diagnosis", __name__)

# Diagnosing reads every stat of every layer (seconds on a 200-layer, 100k-step run), and a
# run's files never change once registered: answers are kept per set of files, so a finished
# run is diagnosed once per server process and a running one again only when it grew.
_CACHE_SIZE = 64
_cache: OrderedDict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = OrderedDict()
_lock = threading.Lock()


@bp.get("/runs/<run_id>/diagnosis")
def get(run_id: str) -> dict[str, Any]:
    """Every problem found in the run's stored stats, worst first, with evidence and a suggestion.

    ``summary`` is "error", "warning" or "ok"; each finding names its layer (null for the whole
    run), the step range it covers, what was measured, what it means and what to try.
    """
    reader = get_reader(run_id)
    store = get_store()
    files = tuple(sorted(s.id for s in store.catalog.segments(run_id, rank=0)))
    key = (str(store.root), run_id, files)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    findings = diagnose(reader)
    body = {
        "run_id": run_id,
        "summary": summary(findings),
        "findings": [f.to_dict() for f in findings],
    }
    with _lock:
        _cache[key] = body
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return body
