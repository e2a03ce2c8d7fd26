"""The web UI: server-rendered page shells whose Plotly charts fetch data from /api/v1."""

from __future__ import annotations

import os
from pathlib import Path

import plotly
from flask import Blueprint, Flask, Response, render_template, request, send_file

import api
from api.errors import ApiError
from api.query import MAX_RUNS
from api.store import get_reader
from tracker.errors import TrackerError
from tracker.reader import RunReader
from tracker.store import Store
from web.explain import PANELS, QUANTITIES

# The pages' own CSS/JS live under /assets; /vendor serves third-party code from installed wheels.
bp = Blueprint(
    "web", __name__, template_folder="templates", static_folder="static", static_url_path="/assets"
)
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@bp.context_processor
def _explanations() -> dict[str, object]:
    """Every template can explain its panels (web/explain.py)."""
    return {"panels": PANELS}


def _reader_or_none(run_id: str) -> RunReader | None:
    """The run's reader, or None when the id is malformed or unknown (the page answers 404)."""
    try:
        return get_reader(run_id)
    except (ApiError, TrackerError):
        return None


def _not_found(message: str) -> tuple[str, int]:
    return render_template("404.html", message=message), 404


@bp.get("/")
def runs_page() -> str:
    """List every run."""
    return render_template("runs.html")


@bp.get("/runs/<run_id>")
def run_page(run_id: str) -> str | tuple[str, int]:
    """One run: config, metric curves, and the layer table with health flags."""
    reader = _reader_or_none(run_id)
    if reader is None:
        return _not_found(f"There is no run with id {run_id!r}.")
    return render_template("run.html", run=reader.info)


@bp.get("/runs/<run_id>/layers/<path:layer>")
def layer_page(run_id: str, layer: str) -> str | tuple[str, int]:
    """One layer: activations, gradients and weights as images and histograms at a chosen step."""
    reader = _reader_or_none(run_id)
    if reader is None:
        return _not_found(f"There is no run with id {run_id!r}.")
    if layer not in reader.layers():
        return _not_found(f"Run {reader.info.name!r} has no watched layer named {layer!r}.")
    return render_template("layer.html", run=reader.info, layer=layer, quantities=QUANTITIES)


@bp.get("/runs/<run_id>/topk")
def topk_page(run_id: str) -> str | tuple[str, int]:
    """Per channel, the held-out inputs that activate it most (?layer=&epoch=&vs=&vs_epoch=)."""
    reader = _reader_or_none(run_id)
    if reader is None:
        return _not_found(f"There is no run with id {run_id!r}.")
    return render_template("topk.html", run=reader.info)


@bp.get("/compare")
def compare_page() -> str | tuple[str, int]:
    """Several runs, or epochs of one run, side by side (?runs=a,b or ?runs=a&epochs=1,5)."""
    ids = [i for i in request.args.get("runs", "").split(",") if i][:MAX_RUNS]
    if not ids:
        return _not_found("Pick runs to compare on the runs page (tick two or more).")
    readers = [_reader_or_none(i) for i in ids]
    missing = [i for i, r in zip(ids, readers, strict=True) if r is None]
    if missing:
        return _not_found(f"There is no run with id {missing[0]!r}.")
    runs = [r.info for r in readers if r is not None]
    return render_template("compare.html", runs=runs, quantities=QUANTITIES)


@bp.get("/vendor/plotly.min.js")
def plotly_js() -> Response:
    """Serve Plotly from the installed wheel: the UI makes no request outside this server."""
    return send_file(PLOTLY_JS, mimetype="text/javascript", max_age=86400)


# Scripts only from this server, never inline; Plotly sets inline styles, hence style-src.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def create_app(store: str | os.PathLike[str] | Store | None = None) -> Flask:
    """The API app with the web pages mounted at /."""
    app = api.create_app(store)
    app.register_blueprint(bp)
    app.after_request(_security_headers)
    return app
