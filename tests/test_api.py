"""Every API route with good input, and every kind of bad input getting one JSON 4xx shape."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import tracker

API = "/api/v1"


def _error(response, status: int) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == status
    assert body["error"]["type"] and body["error"]["message"]
    return body["error"]["message"]


def test_runs_and_projects(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    runs = client.get(f"{API}/runs").get_json()["runs"]
    assert {r["name"] for r in runs} == {"healthy", "sick"}
    assert all(r["status"] == "finished" and r["last_step"] == 59 for r in runs)
    assert client.get(f"{API}/runs?project=nope").get_json() == {"runs": [], "next_cursor": None}
    assert len(client.get(f"{API}/runs?limit=1").get_json()["runs"]) == 1
    assert client.get(f"{API}/projects").get_json() == {
        "projects": [{"name": "digits-demo", "runs": 2}]
    }
    run = client.get(f"{API}/runs/{demo_runs['healthy']}").get_json()
    assert run["config"]["lr"] == 0.05 and run["layers"][0] == "conv1"
    assert run["epochs"][0] == {"epoch": 0, "first_step": 0, "last_step": 22}
    assert isinstance(run["final_loss"], float)


def test_layers_and_health(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    layers = client.get(f"{API}/runs/{demo_runs['sick']}/layers").get_json()["layers"]
    relu3 = next(layer for layer in layers if layer["name"] == "relu3")
    assert relu3["latest"]["activation"]["output"]["stats"]["dead_frac"] > 0.9
    assert any(f["code"] == "dead_relu" and f["help"] for f in relu3["flags"])
    conv1 = layers[0]
    assert set(conv1["latest"]) == {"activation", "activation_grad", "weight", "weight_grad"}
    assert conv1["latest"]["activation"]["output"]["stats"]["dead_frac"] is None  # NaN -> null
    health = client.get(f"{API}/runs/{demo_runs['sick']}/health").get_json()
    assert health["health"] == "error"


def test_series_tensor_histogram_metrics_match_the_reader(
    client, demo_store: Path, demo_runs: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    rid = demo_runs["healthy"]
    with tracker.open_run(rid, store=demo_store) as r:
        body = client.get(
            f"{API}/runs/{rid}/series?layer=fc1&quantity=weight_grad&stat=norm,mean"
        ).get_json()
        steps, norms = r.series("fc1", "weight_grad", "norm")
        assert body["steps"] == steps.tolist() and body["stats"]["norm"] == norms.tolist()
        assert client.get(f"{API}/runs/{rid}/snapshots?layer=conv1&quantity=weight").get_json()[
            "steps"
        ] == [0, 25, 50]
        t = client.get(f"{API}/runs/{rid}/tensor?layer=conv1&quantity=weight&step=25").get_json()
        want = r.tensor("conv1", "weight", 25)
        assert t["shape"] == [16, 1, 3, 3] and t["dtype"] == "float32"
        np.testing.assert_array_equal(
            np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]), want
        )
        npy = client.get(f"{API}/runs/{rid}/tensor?layer=conv1&quantity=weight&step=25&format=npy")
        np.testing.assert_array_equal(np.load(io.BytesIO(npy.data), allow_pickle=False), want)
        h = client.get(
            f"{API}/runs/{rid}/histogram?layer=conv1&quantity=activation&step=5"
        ).get_json()
        _, counts = r.histogram("conv1", "activation", 5)
        assert h["counts"] == counts[h["offset"] : h["offset"] + len(h["counts"])].tolist()
        assert sum(h["counts"]) == counts.sum() and len(h["edges"]) == len(h["counts"]) + 1
        hs = client.get(f"{API}/runs/{rid}/histograms?layer=conv1&quantity=activation").get_json()
        assert hs["steps"] == list(range(0, 60, 5)) and len(hs["counts"]) == 12
        m = client.get(f"{API}/runs/{rid}/metrics/loss").get_json()
        assert m["values"] == r.metrics("loss")[1].tolist() and m["epochs"][0] == 0
        names = [x["name"] for x in client.get(f"{API}/runs/{rid}/metrics").get_json()["metrics"]]
        assert names == ["loss", "val_acc", "val_loss"]


def test_health_endpoint(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get(f"{API}/health").get_json()["status"] == "ok"


@pytest.mark.parametrize(
    ("path", "status", "match"),
    [
        ("/runs/notahexid", 400, "invalid run id"),
        ("/runs/..%2F..%2Fetc", 404, "not found"),
        ("/runs/ffffffffffffffff", 404, "no run"),
        ("/runs?status=exploded", 400, "status must be"),
        ("/runs?limit=0", 400, "limit"),
        ("/runs?limit=abc", 400, "must be an integer"),
        ("/runs/{id}/series?quantity=activation", 400, "'layer' is required"),
        ("/runs/{id}/series?layer=conv1&quantity=bogus", 400, "unknown quantity"),
        ("/runs/{id}/series?layer=conv1&quantity=activation&stat=median", 400, "unknown stat"),
        ("/runs/{id}/series?layer=conv9&quantity=activation", 404, "no layer 'conv9'"),
        ("/runs/{id}/series?layer=..%2F..%2Fetc&quantity=activation", 404, "no layer"),
        ("/runs/{id}/series?layer=conv1&quantity=weight&param=gamma", 404, "no weight 'gamma'"),
        ("/runs/{id}/series?layer=conv1&quantity=activation&call=-1", 400, "call"),
        ("/runs/{id}/tensor?layer=conv1&quantity=activation", 400, "'step' is required"),
        (
            "/runs/{id}/tensor?layer=conv1&quantity=activation&step=3",
            404,
            "snapshot steps: 0, 25, 50",
        ),
        (
            "/runs/{id}/tensor?layer=conv1&quantity=activation&step=99999999999999999999",
            400,
            "between",
        ),
        ("/runs/{id}/tensor?layer=conv1&quantity=activation&step=0&format=csv", 400, "format"),
        ("/runs/{id}/tensor?layer=conv%00&quantity=activation&step=0", 400, "malformed"),
        ("/runs/{id}/histogram?layer=conv1&quantity=activation&step=3", 404, "histogram steps"),
        ("/runs/{id}/metrics/accuracy", 404, "no metric 'accuracy'"),
        ("/nothing/here", 404, "not found"),
    ],
)
def test_bad_requests_get_json_4xx(
    client, demo_runs: dict[str, str], path: str, status: int, match: str
) -> None:  # type: ignore[no-untyped-def]
    message = _error(client.get(API + path.format(id=demo_runs["healthy"])), status)
    assert match.lower() in message.lower()
    assert "/tmp" not in message and "Traceback" not in message  # no paths or stack traces


def test_writes_are_not_allowed_on_read_routes(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    _error(client.post(f"{API}/runs/{demo_runs['healthy']}"), 405)
    _error(client.delete(f"{API}/runs"), 405)


def test_one_layer_and_degraded_flag(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    rid = demo_runs["sick"]
    layer = client.get(f"{API}/runs/{rid}/layers/relu3").get_json()
    assert layer["name"] == "relu3" and layer["kind"] == "relu"
    assert any(f["code"] == "dead_relu" for f in layer["flags"])
    assert "no layer 'relu9'" in _error(client.get(f"{API}/runs/{rid}/layers/relu9"), 404)
    assert client.get(f"{API}/runs/{rid}").get_json()["degraded"] is False


def test_layers_without_latest_stats(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    rid = demo_runs["sick"]
    layers = client.get(f"{API}/runs/{rid}/layers?latest=0").get_json()["layers"]
    assert [layer["name"] for layer in layers][:2] == ["conv1", "relu1"]
    assert layers[0]["params"] == {"weight": [16, 1, 3, 3], "bias": [16]}
    assert "latest" not in layers[0] and "flags" not in layers[0]
    one = client.get(f"{API}/runs/{rid}/layers/fc1?latest=0").get_json()
    assert one["type"] == "Linear" and "flags" not in one
    assert "must be 0 or 1" in _error(client.get(f"{API}/runs/{rid}/layers?latest=x"), 400)


def test_tensor_slice_cuts_on_the_server(
    client, demo_store: Path, demo_runs: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    run = demo_runs["healthy"]
    with tracker.open_run(run, store=demo_store) as r:
        full = r.tensor("conv1", "activation", 0)
    base = f"{API}/runs/{run}/tensor?layer=conv1&quantity=activation&step=0"
    body = client.get(f"{base}&slice=0:2,::4,3").get_json()
    want = full[0:2, ::4, 3]
    assert body["shape"] == list(want.shape) and body["slice"] == "0:2,::4,3"
    np.testing.assert_array_equal(np.asarray(body["data"], dtype=np.float32), want.reshape(-1))
    npy = client.get(f"{base}&slice=1&format=npy")
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.data), allow_pickle=False), full[1])
    for bad, why in [
        ("0,0,0,0,0", "axes"),
        ("::0", "step must be >= 1"),
        ("a:b", "not int"),
        ("99", "outside"),
        ("1:2:3:4", "not int"),
    ]:
        assert why in _error(client.get(f"{base}&slice={bad}"), 400)
