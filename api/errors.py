"""Every API error as one JSON shape.

``{"error": {"code": 404, "type": "not_found", "message": "..."}}``
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from tracker.errors import InvalidArgumentError, NotFoundError, SchemaVersionError, TrackerError

log = logging.getLogger("tracker.api")


class ApiError(Exception):
    """Raise from a handler to answer with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    500: "internal_error",
    503: "unavailable",
}


def error_response(status: int, message: str) -> tuple[Response, int]:
    """The one error body every route returns."""
    body = {"error": {"code": status, "type": _TYPES.get(status, "error"), "message": message}}
    return jsonify(body), status


def register(app: Flask) -> None:
    """Map tracker and HTTP errors to JSON responses; never leak tracebacks or paths."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.message)

    @app.errorhandler(InvalidArgumentError)
    def _invalid(exc: InvalidArgumentError) -> tuple[Response, int]:
        return error_response(400, str(exc))

    @app.errorhandler(NotFoundError)
    def _not_found(exc: NotFoundError) -> tuple[Response, int]:
        return error_response(404, str(exc))

    @app.errorhandler(SchemaVersionError)
    def _schema(exc: SchemaVersionError) -> tuple[Response, int]:
        log.error("schema version: %s", exc)
        return error_response(500, "stored data was written by a newer tracker; upgrade the server")

    @app.errorhandler(TrackerError)
    def _tracker(exc: TrackerError) -> tuple[Response, int]:
        log.exception("tracker error")
        return error_response(500, "the store could not be read")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal error")
