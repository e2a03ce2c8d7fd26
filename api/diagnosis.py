"""Automatic diagnosis of a run's layers: GET /api/v1/runs/<id>/diagnosis."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.store import get_reader
from tracker.diagnosis import diagnose, summary

bp = Blueprint("diagnosis", __name__)


@bp.get("/runs/<run_id>/diagnosis")
def get(run_id: str) -> dict[str, Any]:
    """Every problem found in the run's stored stats, worst first, with evidence and a suggestion.

    ``summary`` is "error", "warning" or "ok"; each finding names its layer (null for the whole
    run), the step range it covers, what was measured, what it means and what to try.
    """
    reader = get_reader(run_id)
    findings = diagnose(reader)
    return {
        "run_id": run_id,
        "summary": summary(findings),
        "findings": [f.to_dict() for f in findings],
    }
