"""The REST API: ``create_app(store)`` serves /api/v1 over a tracker store."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from api import (
    auth,
    compare,
    curves,
    diagnosis,
    errors,
    flow,
    health,
    histograms,
    ingest,
    layers,
    metrics,
    openapi,
    runs,
    series,
    tensors,
    topk,
    usage,
)
from api.handles import OpenFiles
from api.store import EXTENSION, FILES, close_readers
from tracker.store import Store

PREFIX = "/api/v1"
RESOURCES = (
    runs,
    layers,
    series,
    tensors,
    histograms,
    metrics,
    health,
    usage,
    compare,
    flow,
    curves,
    diagnosis,
    topk,
    ingest,
    openapi,
)


def create_app(
    store: str | os.PathLike[str] | Store | None = None,
    database_url: str | None = None,
    config: dict[str, Any] | None = None,
) -> Flask:
    """Create the API app over ``store`` (a folder, default $TRACKER_STORE, or an open Store)."""
    app = Flask(__name__, static_folder=None)  # the web blueprint owns the static files
    app.config.update(
        MAX_CONTENT_LENGTH=512 << 20,  # segment uploads (streamed to disk); JSON: ingest.py
        JSON_SORT_KEYS=False,
    )
    app.config[auth.READ_AUTH] = os.environ.get(auth.READ_AUTH, "") not in ("", "0")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if config:
        app.config.update(config)
    opened = store if isinstance(store, Store) else Store.open(store, database_url)
    app.extensions[EXTENSION] = opened
    app.extensions[FILES] = OpenFiles(opened)  # per worker: the app is built in each (no preload)
    for resource in RESOURCES:
        app.register_blueprint(resource.bp, url_prefix=PREFIX)
    auth.register(app, PREFIX)
    errors.register(app)
    app.teardown_appcontext(close_readers)
    return app
