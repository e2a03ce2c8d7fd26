"""ETag and Cache-Control for answers read from a run's segment files, which never change.

An answer is a function of the request (path and query) and of the run's live registered files
(id and checksum each): their hash is the ETag. A new segment, a compaction or a deletion changes
the set and so the tag; nothing else can change the bytes. ``If-None-Match`` with the current
tag gets a 304 without reading a file. Ended runs may be cached for an hour; running ones are
stored but revalidated on every use (``no-cache``), which costs one catalog query.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Response, make_response, request

from api.store import get_reader, get_store

_View = TypeVar("_View", bound=Callable[..., Any])
ENDED_MAX_AGE = 3600  # seconds a browser may reuse an ended run's answer without asking


def run_etag(run_id: str) -> str:
    """The strong ETag of this request's answer for ``run_id`` in its current state."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(request.path.encode())
    for key, value in sorted(request.args.items(multi=True)):
        digest.update(f"\x00{key}={value}".encode())
    for segment in get_store().catalog.segments(run_id):  # every rank, live files only
        digest.update(f"\x00{segment.id}:{segment.checksum}".encode())
    return digest.hexdigest()


def immutable(view: _View) -> _View:
    """Tag a ``/runs/<run_id>/...`` handler's 200 answers; 304 when the client's tag holds."""

    @functools.wraps(view)
    def tagged(*args: Any, **kwargs: Any) -> Any:
        reader = get_reader(kwargs["run_id"])  # a 404 for a missing run comes first
        etag = run_etag(reader.id)
        ended = reader.status != "running"
        control = f"private, max-age={ENDED_MAX_AGE}" if ended else "private, no-cache"
        if etag in request.if_none_match:
            response = Response(status=304)
        else:
            response = make_response(view(*args, **kwargs))
            if response.status_code != 200:
                return response
        response.set_etag(etag)
        response.headers["Cache-Control"] = control
        return response

    tagged.cacheable = True  # type: ignore[attr-defined]  # openapi.json lists the 304
    return cast(_View, tagged)
