"""GET /api/v1/runs: filters, sorts and cursor pages that stay put when runs are added."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api import create_app
from tracker.catalog.catalog import MetricRow
from tracker.store import Store

API = "/api/v1"


def _add(store: Store, n: int, project: str, loss: float | None, **config: object) -> str:
    run_id = f"{n:016x}"
    tags = ["even"] if n % 2 == 0 else ["odd"]
    if n % 3 == 0:
        tags.append("three")
    store.catalog.create_run(run_id, project, f"run{n:02d}", dict(config), tags, "h", 1, None)
    if loss is not None:
        store.catalog.commit_batch(
            run_id, None, [MetricRow("loss", n, loss, None, 0.0)], {}, {}, {}
        )
    if n % 4 == 0:
        store.catalog.set_status(run_id, "finished", ended=True)
    return run_id


@pytest.fixture
def runs_client(store_path: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
    store = Store.open(store_path)
    ids = [
        _add(
            store,
            n,
            "a" if n < 8 else "b",
            None if n == 5 else 10.0 - n,
            lr=n / 10,
            opt={"name": "sgd" if n % 2 else "adam"},
        )
        for n in range(12)
    ]
    app = create_app(store)
    app.config.update(TESTING=True)
    yield app.test_client(), store, ids
    store.close()


def _ids(client, query: str) -> list[str]:  # type: ignore[no-untyped-def]
    response = client.get(f"{API}/runs?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [r["id"] for r in response.get_json()["runs"]]


def test_filters(runs_client) -> None:  # type: ignore[no-untyped-def]
    client, _, ids = runs_client
    assert _ids(client, "") == ids[::-1]  # newest first, as before
    assert set(_ids(client, "project=b")) == set(ids[8:])
    assert set(_ids(client, "status=finished")) == {ids[0], ids[4], ids[8]}
    assert set(_ids(client, "tag=even&tag=three")) == {ids[0], ids[6]}
    assert _ids(client, "config=lr=0.3") == [ids[3]]
    assert set(_ids(client, "config=opt.name=sgd&project=a")) == {ids[1], ids[3], ids[5], ids[7]}
    assert _ids(client, "config=lr=%220.3%22") == []  # the string "0.3" is not the number
    assert _ids(client, "name=run07") == [ids[7]]
    assert _ids(client, "config=nope=1") == []


def test_sorts(runs_client) -> None:  # type: ignore[no-untyped-def]
    client, _, ids = runs_client
    assert _ids(client, "sort=name") == ids
    assert _ids(client, "sort=name&order=desc") == ids[::-1]
    by_loss = _ids(client, "sort=final_loss")  # 10 - n: the last run has the lowest loss
    assert by_loss == [i for i in ids[::-1] if i != ids[5]] + [ids[5]]  # no loss: last
    assert _ids(client, "sort=final_loss&order=desc")[-1] == ids[5]


@pytest.mark.parametrize("sort", ["started_at", "name", "final_loss", "duration_s"])
def test_cursor_pages_cover_every_run_once_and_survive_inserts(runs_client, sort: str) -> None:  # type: ignore[no-untyped-def]
    client, store, ids = runs_client
    seen: list[str] = []
    url = f"{API}/runs?limit=5&sort={sort}"
    body = client.get(url).get_json()
    seen += [r["id"] for r in body["runs"]]
    _add(store, 40, "a", 0.5)  # a new run arrives between pages
    while body["next_cursor"]:
        body = client.get(f"{url}&cursor={body['next_cursor']}").get_json()
        seen += [r["id"] for r in body["runs"]]
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)
    full = _ids(client, f"sort={sort}&limit=1000")
    assert [i for i in full if i in seen] == seen  # pages are the full order, in order


@pytest.mark.parametrize(
    "query",
    [
        "sort=nope",
        "order=up",
        "cursor=bm9wZQ",
        "cursor=%%%",
        "config=noequals",
        "config==1",
        "tag=" + "&tag=".join("abcdefghi"),
        "status=lost",
        "limit=0",
    ],
)
def test_bad_list_queries_are_4xx(runs_client, query: str) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = runs_client
    response = client.get(f"{API}/runs?{query}")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["message"]


def test_a_cursor_of_another_sort_is_refused(runs_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = runs_client
    cursor = client.get(f"{API}/runs?limit=2&sort=name").get_json()["next_cursor"]
    response = client.get(f"{API}/runs?limit=2&sort=final_loss&cursor={cursor}")
    assert response.status_code == 400 and "sort=name" in response.get_json()["error"]["message"]
