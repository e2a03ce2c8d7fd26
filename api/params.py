"""Query parameters, declared once per route: the handler reads them and openapi.json lists them.

    @bp.get("/runs/<run_id>/series")
    @query(LAYER, QUANTITY, STATS, POINTS)
    def get(run_id): ...

``api.store.arg`` and friends look the name up in the running handler's declaration: reading an
undeclared parameter, or one whose bounds or ``required`` differ from the declaration, is a bug
and fails loudly (500) in every test that calls the route, so the description cannot drift from
the code. Enums and integer bounds of the declaration are enforced (400) when a value is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from flask import current_app, request

from tracker.downsample import MAX_POINTS
from tracker.names import QUANTITIES, STAT_NAMES

_View = TypeVar("_View", bound=Callable[..., Any])
ATTRIBUTE = "query_params"
MAX_VALUE = 1024  # characters of one value (api.store.arg)
MAX_INT = 2**62
FLAG_VALUES = ("0", "1", "false", "true")


@dataclass(frozen=True)
class Param:
    """One query parameter: its name, JSON schema, and whether it is required or repeats."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False
    repeat: bool = False  # given several times (tag=a&tag=b)

    def but(self, **changes: Any) -> Param:
        """A copy with some fields changed (the same parameter on a route that differs)."""
        return replace(self, **changes)

    def openapi(self) -> dict[str, Any]:
        schema = self.schema
        if self.repeat:
            schema = {"type": "array", "items": schema}
        out: dict[str, Any] = {
            "name": self.name,
            "in": "query",
            "required": self.required,
            "description": self.description,
            "schema": schema,
        }
        if self.repeat:
            out.update(style="form", explode=True)
        return out


def text(name: str, description: str, required: bool = False, **schema: Any) -> Param:
    """A string parameter (``enum=``, ``pattern=`` ... go to its schema)."""
    body = {"type": "string", "minLength": 1, "maxLength": MAX_VALUE, **schema}
    if "enum" in schema:
        body = {"type": "string", "enum": list(schema["enum"])}
    return Param(name, description, body, required)


def integer(
    name: str, description: str, minimum: int = 0, maximum: int = MAX_INT, required: bool = False
) -> Param:
    """An integer parameter in [minimum, maximum]."""
    return Param(
        name, description, {"type": "integer", "minimum": minimum, "maximum": maximum}, required
    )


def flag(name: str, description: str) -> Param:
    """A 0/1 (false/true) parameter."""
    return Param(name, description, {"type": "string", "enum": list(FLAG_VALUES)})


def names(name: str, description: str, max_items: int, required: bool = False) -> Param:
    """A comma-separated list of names."""
    schema = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_VALUE,
        "pattern": "^[^,]+(,[^,]+)*$",
    }
    return Param(
        f"{name}", f"{description} (comma-separated, at most {max_items})", schema, required
    )


def query(*params: Param) -> Callable[[_View], _View]:
    """Declare the query parameters a handler reads."""

    def declare(view: _View) -> _View:
        setattr(view, ATTRIBUTE, {p.name: p for p in params})
        return view

    return declare


def declared(view: Callable[..., Any]) -> dict[str, Param]:
    """The declared query parameters of a view function (none if it declares none)."""
    return dict(getattr(view, ATTRIBUTE, {}))


def lookup(name: str) -> Param:
    """The running handler's declaration of ``name`` (RuntimeError if it has none: a bug)."""
    view = current_app.view_functions.get(request.endpoint or "")
    found = declared(view).get(name) if view is not None else None
    if found is None:
        raise RuntimeError(f"{request.endpoint} reads query parameter {name!r} it does not declare")
    return found


# -- parameters several routes share ---------------------------------------------------------

LAYER = text("layer", "Layer name: the module's dotted named_modules() name", required=True)
QUANTITY = text("quantity", "What was recorded", required=True, enum=QUANTITIES)
PARAM = text("param", "Parameter (weight, bias, ...) or output part; default: weight or output")
CALL = integer(
    "call", "Which forward call of the module in a step (default: the training one)", maximum=10_000
)
PROBE = flag("probe", "1: the probe inputs' records (run.watch(probe=...)) instead of training's")
POINTS = integer(
    "points", "Downsample to at most this many buckets, each with min and max", 2, MAX_POINTS
)
START = integer("start", "First step (inclusive)")
END = integer("end", "Last step (inclusive)")
STEP = integer("step", "Step", required=True)
STAT = text("stat", "A stat", enum=STAT_NAMES)
