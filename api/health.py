"""Service health: GET /api/v1/health."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from sqlalchemy import text

from api.errors import ApiError
from api.store import get_store
from tracker.version import __version__

bp = Blueprint("health", __name__)


@bp.get("/health")
def get() -> dict[str, Any]:
    """Report whether the catalog database and the store's files can be reached."""
    store = get_store()
    try:
        with store.catalog.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        raise ApiError(503, "the catalog database is unreachable") from None
    if not store.files.ping():
        raise ApiError(503, "the store's files are unreachable")
    return {"status": "ok", "version": __version__, "database": store.catalog.dialect}
