"""The per-worker LRU of open HDF5 files (api/handles.py): reused across requests, bounded, and
emptied of files that compaction or deletion took out of the catalog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api import create_app
from api.store import FILES
from tests import synthetic
from tracker.store import Store
from tracker.store.compact import compact_run

API = "/api/v1"
RUN = "c0ffee0000000002"


@pytest.fixture
def served(store_path: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
    store = Store.open(store_path)
    synthetic.create_run(store, RUN)
    synthetic.write_steps(store, RUN, range(0, 28))  # 4 segments of 7 steps
    store.catalog.set_status(RUN, "finished", ended=True)
    app = create_app(store)
    app.config.update(TESTING=True)
    yield app.test_client(), store, app.extensions[FILES]
    app.extensions[FILES].close()
    store.close()


def _series(client) -> list[int]:  # type: ignore[no-untyped-def]
    response = client.get(f"{API}/runs/{RUN}/series?layer=fc&quantity=activation&stat=mean")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["steps"]


def test_handles_are_reused_across_requests(served) -> None:  # type: ignore[no-untyped-def]
    client, store, files = served
    assert _series(client) == list(range(28))
    assert files.opens == len(files) == 4
    handles = [
        files.open(p)
        for p in list(store.catalog.segments(RUN)) and [s.path for s in store.catalog.segments(RUN)]
    ]
    assert _series(client) == list(range(28))
    assert files.opens == 4  # no file opened again
    assert all(h.id.valid for h in handles)


def test_the_cache_is_bounded_and_closes_what_it_evicts(served) -> None:  # type: ignore[no-untyped-def]
    client, store, files = served
    files.max_files = 2
    paths = [s.path for s in store.catalog.segments(RUN)]
    assert _series(client) == list(range(28))  # reads all 4 files in one request
    assert len(files) == 2 and set(paths[-2:]) <= {p for p in paths if p in files}
    first = files.open(paths[-1])
    files.max_files = 1
    files.open(paths[0])  # evicts paths[-1]'s handle, outside a request: retired, not closed
    assert first.id.valid
    files.begin()
    files.end()  # no request running: retired handles are closed
    assert not first.id.valid
    assert _series(client) == list(range(28))  # still reads correctly with a cache of one


def test_compacted_files_leave_the_cache(served) -> None:  # type: ignore[no-untyped-def]
    client, store, files = served
    assert _series(client) == list(range(28))
    old = [s.path for s in store.catalog.segments(RUN)]
    handles = [files.open(p) for p in old]
    assert compact_run(store, RUN).changed
    assert _series(client) == list(range(28))  # reads the compacted file
    files.sweep()
    files.begin()
    files.end()
    assert not any(p in files for p in old) and not any(h.id.valid for h in handles)
    assert len(files) >= 1  # the compacted stats file stays


def test_a_request_sweeps_when_due(served) -> None:  # type: ignore[no-untyped-def]
    client, store, files = served
    _series(client)
    store.catalog.delete_run(RUN)
    files.sweep_seconds = 0
    assert client.get(f"{API}/runs/{RUN}/series?layer=fc&quantity=activation").status_code == 404
    assert len(files) == 0
