"""Disk usage of a run: GET /api/v1/runs/<id>/usage."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.store import get_store
from tracker.store.usage import run_usage

bp = Blueprint("usage", __name__)


@bp.get("/runs/<run_id>/usage")
def get(run_id: str) -> dict[str, Any]:
    """Files and bytes a run takes: live files by kind, superseded ones, all of its folder."""
    return run_usage(get_store(), run_id).to_dict()
