"""GET /api/v1/openapi.json: an OpenAPI 3.1 description generated from the routes themselves.

Every rule under /api/v1 becomes a path, each method an operation whose summary and description
are the handler's docstring; path parameters come from the rule, query parameters from the
handler's ``@query(...)`` declaration (api/params.py), which is also what the handler reads them
through. A test checks every route is described, so the document cannot fall behind the code.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from flask import Blueprint, current_app

from api.params import declared
from tracker.store.backend import RUN_ID
from tracker.version import __version__

bp = Blueprint("openapi", __name__)

PREFIX = "/api/v1"
_PARAM = re.compile(r"<(?:([a-z_]+):)?([A-Za-z_][A-Za-z0-9_]*)>")
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ERROR = {"$ref": "#/components/responses/Error"}


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    params = []
    for converter, name in _PARAM.findall(rule):
        schema: dict[str, Any] = {"type": "integer"} if converter == "int" else {"type": "string"}
        if name == "run_id":
            schema["pattern"] = RUN_ID.pattern
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _operation(endpoint: str, method: str, rule: str) -> dict[str, Any]:
    view = current_app.view_functions[endpoint]
    doc = inspect.getdoc(view) or ""
    query = [p.openapi() for p in declared(view).values()]
    op: dict[str, Any] = {
        "operationId": f"{endpoint}.{method.lower()}",
        "summary": doc.split("\n\n")[0].replace("\n", " "),
        "description": doc,
        "tags": [endpoint.split(".")[0]],
        "parameters": _path_parameters(rule) + query,
        "responses": {"200": {"description": "OK"}, "4XX": _ERROR},
    }
    if getattr(view, "cacheable", False):  # api/cache.py: ETag, Cache-Control, 304
        op["responses"]["200"]["headers"] = {
            "ETag": {"schema": {"type": "string"}},
            "Cache-Control": {"schema": {"type": "string"}},
        }
        op["responses"]["304"] = {"description": "Not Modified: the If-None-Match tag holds"}
    if method in _WRITES:
        op["security"] = [{"bearer": []}]
        op["responses"]["201"] = {"description": "Created"}
        if method == "PUT":  # a segment file
            body = {"application/octet-stream": {"schema": {"type": "string"}}}
        else:
            body = {"application/json": {"schema": {"type": "object"}}}
        op["requestBody"] = {"required": True, "content": body}
    return op


def document() -> dict[str, Any]:
    """The OpenAPI document of this app's /api/v1 routes."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in current_app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        path = _PARAM.sub(r"{\2}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                rule.endpoint, method, rule.rule
            )
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "type", "message"],
                "properties": {
                    "code": {"type": "integer"},
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tracker", "version": __version__},
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": error},
            "responses": {
                "Error": {
                    "description": "An error, in the one JSON shape of api/errors.py",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
        },
    }


@bp.get("/openapi.json")
def get() -> dict[str, Any]:
    """Describe every /api/v1 route (OpenAPI 3.1), generated from the code."""
    return document()
