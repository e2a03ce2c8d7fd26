"""The write side of the API: runs, layers, segments, metrics, status; tokens; input limits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

import tracker
from tests import synthetic
from tracker.catalog.tokens import create_token, revoke_token
from tracker.store import Store
from tracker.store.segment import Batch, SegmentBuilder, write_segment

API = "/api/v1"
RUN = "00000000000000a1"


def _error(response, status: int) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == status
    return str(body["error"]["message"])


@pytest.fixture
def server(store_path: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
    """(app, store, tokens) over an empty store: tokens for project "p", for "q", and admin."""
    from api import create_app

    store = Store.open(store_path)
    tokens = {
        "p": create_token(store.catalog, "p", "p")[1],
        "q": create_token(store.catalog, "q", "q")[1],
        "admin": create_token(store.catalog, "admin")[1],
    }
    app = create_app(store)
    app.config.update(TESTING=True)
    yield app, store, tokens
    store.close()


def _auth(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


def _segment(tmp: Path, run_id: str, steps: range, seg_id: str | None = None) -> tuple[str, bytes]:
    """(id, bytes) of a real segment file of the synthetic run's ``steps``."""
    seg_id = seg_id or uuid.uuid4().hex
    builder = SegmentBuilder(run_id, 0)
    metrics = []
    for step in steps:
        rec = synthetic.record(step)
        builder.add(step, rec.summaries)
        metrics.append(("loss", step, rec.metrics["loss"], rec.epoch, rec.time))
    builder.batch = Batch(metrics, {0: (steps[0], steps[-1])}, {"fc": {"output": [5, 4]}})
    path = tmp / f"{seg_id}.h5"
    write_segment(str(path), builder, "test", seg_id)
    return seg_id, path.read_bytes()


def _put(client, run_id: str, seg_id: str, data: bytes, token: str, checksum: str | None = None):  # type: ignore[no-untyped-def]
    import zlib

    checksum = checksum or f"crc32:{zlib.crc32(data):08x}"
    return client.put(
        f"{API}/runs/{run_id}/segments/{seg_id}",
        data=data,
        headers={**_auth(token), "X-Tracker-Checksum": checksum},
        content_type="application/octet-stream",
    )


def _new_run(client, token: str, project: str = "p", run_id: str = RUN, name: str = "r"):  # type: ignore[no-untyped-def]
    return client.post(
        f"{API}/runs",
        json={"id": run_id, "project": project, "name": name, "config": {"lr": 0.1}},
        headers=_auth(token),
    )


def test_a_remote_run_round_trips_through_the_api(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, store, tokens = server
    client = app.test_client()
    created = _new_run(client, tokens["p"])
    assert created.status_code == 201 and created.get_json()["status"] == "running"
    assert _new_run(client, tokens["p"]).status_code == 200  # a retry is a no-op
    assert "exists" in _error(_new_run(client, tokens["p"], name="other"), 409)

    layers = client.post(
        f"{API}/runs/{RUN}/layers", json={"layers": synthetic.LAYERS}, headers=_auth(tokens["p"])
    )
    assert layers.status_code == 201 and layers.get_json() == {"layers": 2}
    seg_id, data = _segment(tmp_path, RUN, range(0, 10))
    put = _put(client, RUN, seg_id, data, tokens["p"])
    assert put.status_code == 201, put.get_data(as_text=True)
    again = _put(client, RUN, seg_id, data, tokens["p"])
    assert again.status_code == 200 and again.get_json()["path"] == put.get_json()["path"]
    assert "other content" in _error(
        _put(client, RUN, seg_id, data, tokens["p"], "crc32:00000000"), 409
    )
    assert len(store.catalog.segments(RUN, 0)) == 1
    assert len(store.files.list_files(f"runs/{RUN}")) == 1

    metrics = client.post(
        f"{API}/runs/{RUN}/metrics",
        json={
            "metrics": [{"name": "acc", "step": s, "value": s / 10, "epoch": 0} for s in range(10)]
            + [{"name": "acc", "step": 10, "value": None}]
        },
        headers=_auth(tokens["p"]),
    )
    assert metrics.status_code == 201, metrics.get_data(as_text=True)
    done = client.patch(
        f"{API}/runs/{RUN}",
        json={"status": "finished", "counters": {"segments": 1}},
        headers=_auth(tokens["p"]),
    )
    assert done.status_code == 200 and done.get_json()["status"] == "finished"

    # Everything reads back through the reader and the read routes, bit for bit.
    with tracker.open_run(RUN, store=store.root) as r:
        steps, means = r.series("fc", "activation", "mean")
        assert steps.tolist() == list(range(10))
        key = ("fc", "activation", "output")
        assert np.array_equal(means, [synthetic.stats_row(s, key, 0)[1] for s in range(10)])
        _, losses = r.metrics("loss")
        assert losses.tolist() == [synthetic.loss(s) for s in range(10)]
    body = client.get(f"{API}/runs/{RUN}/metrics/acc").get_json()
    assert body["steps"] == list(range(11)) and body["values"][-1] is None
    run = client.get(f"{API}/runs/{RUN}").get_json()
    assert run["layers"] == ["fc", "act"] and run["ended_at"] is not None


def test_tokens_are_required_scoped_and_revocable(server) -> None:  # type: ignore[no-untyped-def]
    app, store, tokens = server
    client = app.test_client()
    assert "token" in _error(client.post(f"{API}/runs", json={"project": "p"}), 401)
    assert "unknown" in _error(_new_run(client, "trk_nope"), 401)
    bad_scheme = client.post(f"{API}/runs", json={}, headers={"Authorization": "Basic abc"})
    _error(bad_scheme, 401)
    assert "not 'p'" in _error(_new_run(client, tokens["q"]), 403)
    assert _new_run(client, tokens["admin"]).status_code == 201
    # a run of project p: a token of q may not touch it
    _error(
        client.patch(f"{API}/runs/{RUN}", json={"status": "failed"}, headers=_auth(tokens["q"])),
        403,
    )
    _error(
        client.post(f"{API}/runs/{RUN}/layers", json={"layers": []}, headers=_auth(tokens["q"])),
        403,
    )
    _error(
        client.post(f"{API}/runs/{RUN}/metrics", json={"metrics": []}, headers=_auth(tokens["q"])),
        403,
    )
    revoke_token(store.catalog, tokens["p"].split("_")[1])
    assert "revoked" in _error(
        client.patch(f"{API}/runs/{RUN}", json={}, headers=_auth(tokens["p"])), 401
    )
    # reads are open by default
    assert client.get(f"{API}/runs").status_code == 200


def test_reads_need_a_token_when_read_auth_is_on(server) -> None:  # type: ignore[no-untyped-def]
    app, _, tokens = server
    app.config["TRACKER_READ_AUTH"] = True
    client = app.test_client()
    _error(client.get(f"{API}/runs"), 401)
    assert client.get(f"{API}/runs", headers=_auth(tokens["q"])).status_code == 200
    assert client.get(f"{API}/health").status_code == 200


def test_bad_segments_are_refused_and_nothing_is_stored(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, store, tokens = server
    client = app.test_client()
    _new_run(client, tokens["p"])
    token = tokens["p"]
    seg_id, data = _segment(tmp_path, RUN, range(3))
    assert "checksum" in _error(_put(client, RUN, seg_id, data, token, "sha256:abc"), 400)
    assert "damaged" in _error(_put(client, RUN, seg_id, data, token, "crc32:00000000"), 400)
    assert "segment id" in _error(_put(client, RUN, "..", data, token), 400)
    _error(_put(client, RUN, "a" * 31, data, token), 400)
    _error(_put(client, "../../etc", seg_id, data, token), 404)
    assert "empty" in _error(_put(client, RUN, seg_id, b"", token), 400)
    assert "readable" in _error(_put(client, RUN, seg_id, b"not hdf5 at all", token), 400)
    other_id = uuid.uuid4().hex
    assert "is segment" in _error(_put(client, RUN, other_id, data, token), 400)
    _new_run(client, token, run_id="00000000000000b2")
    assert "belongs to run" in _error(_put(client, "00000000000000b2", seg_id, data, token), 400)
    assert "no run" in _error(_put(client, "00000000000000c3", seg_id, data, token), 404)

    outside = tmp_path / "secret.h5"
    with h5py.File(outside, "w") as f:
        f["x"] = np.arange(4)
    for kind in ("external", "soft", "virtual"):
        path = tmp_path / f"{kind}.h5"
        path.write_bytes(data)
        with h5py.File(path, "a") as f:
            if kind == "external":
                f["series/evil"] = h5py.ExternalLink(str(outside), "x")
            elif kind == "soft":
                f["series/evil"] = h5py.SoftLink("/steps")
            else:
                layout = h5py.VirtualLayout(shape=(4,), dtype="i8")
                layout[:] = h5py.VirtualSource(str(outside), "x", shape=(4,))
                f.create_virtual_dataset("evil", layout)
        message = _error(_put(client, RUN, seg_id, path.read_bytes(), token), 400)
        assert "Link" in message or "outside the file" in message, message

    # Packed tables that disagree (schema 3): refused, not stored for reads to trip over later.
    def keys(text: str) -> Callable[[h5py.File], None]:
        def change(f: h5py.File) -> None:
            del f["keys"]
            f["keys"] = np.frombuffer(text.encode(), dtype=np.uint8)

        return change

    def short_ptr(f: h5py.File) -> None:
        ptr = f["rows/ptr"][()]
        del f["rows/ptr"]
        f["rows/ptr"] = ptr[:-1]

    def snapshot_past_the_end(f: h5py.File) -> None:
        info = f["snaps/info"]
        info[0, 1] = f["snaps/data"].shape[0]  # a byte offset at the end of the data

    tampered = {
        "outside the snapshot data": snapshot_past_the_end,
        "JSON": keys("[["),
        "list of": keys('[["fc", "weight"]]'),
        "quantity": keys('[["fc", "weights", "weight"]]'),
        "rows/ptr": short_ptr,
    }
    for expected, change in tampered.items():
        path = tmp_path / "tampered.h5"
        path.write_bytes(data)
        with h5py.File(path, "a") as f:
            assert "keys" in f  # what the writer makes now
            change(f)
        message = _error(_put(client, RUN, seg_id, path.read_bytes(), token), 400)
        assert expected in message, message
    assert store.catalog.segments(RUN, 0) == []
    assert store.files.list_files("runs") == []
    assert not any((store.root / ".incoming").iterdir())


def test_json_limits_and_field_checks(server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import api.ingest

    app, _, tokens = server
    client = app.test_client()
    headers = _auth(tokens["admin"])
    _error(client.post(f"{API}/runs", data="x", headers=headers, content_type="text/plain"), 415)
    _error(
        client.post(f"{API}/runs", data="{", headers=headers, content_type="application/json"), 400
    )
    _error(client.post(f"{API}/runs", json=[1], headers=headers), 400)
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    assert "nesting" in _error(
        client.post(f"{API}/runs", json={"config": deep}, headers=headers), 400
    )
    very_deep = "[" * 100_000 + "]" * 100_000
    _error(
        client.post(
            f"{API}/runs", data=very_deep, headers=headers, content_type="application/json"
        ),
        400,
    )
    monkeypatch.setattr(api.ingest, "MAX_JSON_BYTES", 100)
    big = {"config": {"x": "y" * 200}}
    _error(client.post(f"{API}/runs", json=big, headers=headers), 413)
    monkeypatch.undo()
    _error(
        client.post(f"{API}/runs", json={"project": "a/../.."[:0] or ".."}, headers=headers), 400
    )
    _error(client.post(f"{API}/runs", json={"id": "../x"}, headers=headers), 400)
    _error(client.post(f"{API}/runs", json={"name": "a\x00b"}, headers=headers), 400)
    _error(client.post(f"{API}/runs", json={"name": "n" * 300}, headers=headers), 400)
    _error(client.post(f"{API}/runs", json={"tags": ["ok", 3]}, headers=headers), 400)
    _error(client.post(f"{API}/runs", json={"pid": "7"}, headers=headers), 400)
    assert _new_run(client, tokens["admin"]).status_code == 201
    run_url = f"{API}/runs/{RUN}"
    _error(client.patch(run_url, json={"status": "done"}, headers=headers), 400)
    _error(client.patch(run_url, json={"counters": {"x": -1}}, headers=headers), 400)
    for layer in ({"name": ""}, {"name": "x\x01"}, {"name": "x", "params": {"w": [-1]}}, 7):
        _error(client.post(f"{run_url}/layers", json={"layers": [layer]}, headers=headers), 400)
    for metric in (
        {"name": "m", "step": -1, "value": 1},
        {"name": "m", "step": 2**63, "value": 1},
        {"name": "m", "step": 1, "value": "x"},
        {"name": "", "step": 1, "value": 1},
        {"name": "m", "step": True, "value": 1},
    ):
        _error(client.post(f"{run_url}/metrics", json={"metrics": [metric]}, headers=headers), 400)
    _error(client.patch(f"{API}/runs/0123456789abcdef", json={}, headers=headers), 404)
    assert json.loads(client.get(f"{API}/runs/{RUN}/metrics").data) == {"metrics": []}


def test_read_auth_limits_reads_to_the_tokens_project(server) -> None:  # type: ignore[no-untyped-def]
    app, store, tokens = server
    client = app.test_client()
    p_run, q_run = "00000000000000b1", "00000000000000b2"
    assert _new_run(client, tokens["p"], "p", p_run).status_code == 201
    assert _new_run(client, tokens["q"], "q", q_run).status_code == 201
    app.config["TRACKER_READ_AUTH"] = True
    as_p = _auth(tokens["p"])
    assert [r["id"] for r in client.get(f"{API}/runs", headers=as_p).get_json()["runs"]] == [p_run]
    assert "not 'q'" in _error(client.get(f"{API}/runs?project=q", headers=as_p), 403)
    projects = client.get(f"{API}/projects", headers=as_p).get_json()["projects"]
    assert projects == [{"name": "p", "runs": 1}]
    assert client.get(f"{API}/runs/{p_run}", headers=as_p).status_code == 200
    for path in (
        f"/runs/{q_run}",
        f"/runs/{q_run}/layers",
        f"/runs/{q_run}/metrics",
        f"/runs/{q_run}/series?layer=fc&quantity=weight",
        f"/compare?runs={p_run},{q_run}&layer=fc&quantity=weight",
    ):
        assert "not 'q'" in _error(client.get(f"{API}{path}", headers=as_p), 403), path
    health = client.get(f"{API}/runs/health?ids={p_run},{q_run}", headers=as_p).get_json()
    assert health["runs"][q_run] is None  # no badge, nothing about the other project's run
    admin = _auth(tokens["admin"])
    assert len(client.get(f"{API}/runs", headers=admin).get_json()["runs"]) == 2
    assert client.get(f"{API}/runs/{q_run}", headers=admin).status_code == 200
    _error(client.get(f"{API}/runs/{p_run}"), 401)  # no token
    revoke_token(store.catalog, tokens["p"].split("_")[1])
    assert "revoked" in _error(client.get(f"{API}/runs/{p_run}", headers=as_p), 401)
    app.config["TRACKER_READ_AUTH"] = False  # reads open again: every project
    assert len(client.get(f"{API}/runs").get_json()["runs"]) == 2
