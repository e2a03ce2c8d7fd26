"""Bearer tokens: every write under /api/v1 needs one; reads too when TRACKER_READ_AUTH=1.

A token is scoped to one project (or to all): handlers that write call :func:`authorize` with
the project they touch. /health and /openapi.json stay open, for probes and clients.
"""

from __future__ import annotations

from flask import Flask, current_app, g, request

from api.errors import ApiError
from api.store import get_store
from tracker.catalog.tokens import TokenInfo, verify_token

READ_AUTH = "TRACKER_READ_AUTH"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_OPEN = frozenset({"/health", "/openapi.json"})


def bearer() -> TokenInfo:
    """The request's valid token, or a 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, text = header.partition(" ")
    if scheme.lower() != "bearer" or not text.strip():
        raise ApiError(401, "this route needs a token: send 'Authorization: Bearer <token>'")
    info = verify_token(get_store().catalog, text.strip())
    if info is None:
        raise ApiError(401, "the token is unknown, malformed or revoked")
    return info


def authorize(project: str) -> TokenInfo:
    """The request's token if it may write to ``project``, else a 401/403."""
    info: TokenInfo | None = g.get("tracker_token")
    if info is None:
        info = bearer()
    if not info.allows(project):
        raise ApiError(403, f"this token is for project {info.project!r}, not {project!r}")
    return info


def register(app: Flask, prefix: str) -> None:
    """Check tokens before every /api/v1 request that needs one."""

    @app.before_request
    def _check() -> None:
        path = request.path
        if request.routing_exception is not None:  # a 404 or 405 says more than a 401
            return
        if not path.startswith(prefix + "/") or path[len(prefix) :] in _OPEN:
            return
        if request.method not in _READS or current_app.config.get(READ_AUTH):
            g.tracker_token = bearer()
