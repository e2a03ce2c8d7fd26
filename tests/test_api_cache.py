"""ETag and Cache-Control on answers read from segment files; 304 when the tag still holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api import create_app
from tests import synthetic
from tracker.store import Store

API = "/api/v1"
RUN = "c0ffee0000000001"
QUERIES = [
    "tensor?layer=conv1&quantity=weight&step=25",
    "tensor?layer=conv1&quantity=weight&step=25&format=npy",
    "series?layer=fc1&quantity=weight_grad&stat=norm,mean&points=10",
    "histogram?layer=conv1&quantity=activation&step=5",
    "histograms?layer=conv1&quantity=activation",
    "snapshots?layer=conv1&quantity=weight",
]


@pytest.mark.parametrize("query", QUERIES)
def test_an_ended_runs_answers_are_tagged_and_revalidated(
    client, demo_runs: dict[str, str], query: str
) -> None:  # type: ignore[no-untyped-def]
    url = f"{API}/runs/{demo_runs['healthy']}/{query}"
    first = client.get(url)
    assert first.status_code == 200 and first.headers["ETag"]
    assert first.headers["Cache-Control"] == "private, max-age=3600"
    again = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    stale = client.get(url, headers={"If-None-Match": '"0123"'})
    assert stale.status_code == 200 and stale.data == first.data
    other = client.get(f"{API}/runs/{demo_runs['sick']}/{query}")
    assert other.headers["ETag"] != first.headers["ETag"]  # another run, another tag


def test_tags_differ_per_query_and_errors_are_not_tagged(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    base = f"{API}/runs/{demo_runs['healthy']}"
    tags = {client.get(f"{base}/{q}").headers["ETag"] for q in QUERIES}
    assert len(tags) == len(QUERIES)
    missing = client.get(f"{base}/tensor?layer=conv1&quantity=weight&step=26")
    assert missing.status_code == 404 and "ETag" not in missing.headers
    gone = client.get(f"{API}/runs/0000000000000000/series?layer=a&quantity=weight")
    assert gone.status_code == 404 and "ETag" not in gone.headers


@pytest.fixture
def running(store_path: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
    store = Store.open(store_path)
    synthetic.create_run(store, RUN)
    synthetic.write_steps(store, RUN, range(0, 14))
    app = create_app(store)
    app.config.update(TESTING=True)
    yield app.test_client(), store
    store.close()


def test_a_running_runs_tag_changes_with_each_new_segment(running) -> None:  # type: ignore[no-untyped-def]
    client, store = running
    url = f"{API}/runs/{RUN}/series?layer=fc&quantity=activation&stat=mean"
    first = client.get(url)
    assert first.headers["Cache-Control"] == "private, no-cache"
    assert client.get(url, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    synthetic.write_steps(store, RUN, range(14, 21))  # one more segment
    after = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert after.status_code == 200 and after.headers["ETag"] != first.headers["ETag"]
    assert len(after.get_json()["steps"]) == 21 > len(first.get_json()["steps"])


def test_openapi_lists_the_304(client) -> None:  # type: ignore[no-untyped-def]
    spec = client.get(f"{API}/openapi.json").get_json()["paths"]
    assert "304" in spec[f"{API}/runs/{{run_id}}/tensor"]["get"]["responses"]
    assert "304" not in spec[f"{API}/runs/{{run_id}}/layers"]["get"]["responses"]
