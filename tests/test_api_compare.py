"""The routes behind the compare page, gradient flow and the downsampled plots, on the demo runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tracker

API = "/api/v1"


def _ok(response):  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _error(response, status: int) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]["message"]


@pytest.fixture
def both(demo_runs: dict[str, str]) -> str:
    """runs=healthy,sick."""
    return f"runs={demo_runs['healthy']},{demo_runs['sick']}"


# -- /compare/layers: the layers that differ most ------------------------------------------------


def test_layers_rank_the_sick_run_s_dead_relu_first(client, both: str) -> None:  # type: ignore[no-untyped-def]
    body = _ok(client.get(f"{API}/compare/layers?{both}&quantity=activation"))
    assert [e["name"] for e in body["entries"]] == ["healthy", "sick"]
    top = body["layers"][0]
    assert (top["layer"], top["quantity"], top["stat"]) == ("relu2", "activation", "std")
    assert top["flags"][0] == [] and "dead_relu" in top["flags"][1]
    assert top["last"][1] == 0.0  # a dead layer's std
    assert top["score"] > 1 and top["first_apart"] is not None
    scores = [row["score"] for row in body["layers"]]
    assert scores[0] >= 0.95 * max(scores)  # ties within 5% list the earliest layer first
    assert body["help"].startswith("Score")


def test_layers_cover_every_quantity_by_default(client, both: str) -> None:  # type: ignore[no-untyped-def]
    rows = _ok(client.get(f"{API}/compare/layers?{both}"))["layers"]
    assert {r["quantity"] for r in rows} == {
        "activation",
        "activation_grad",
        "weight",
        "weight_grad",
    }
    weights = [r for r in rows if r["quantity"] == "weight"]
    assert {r["layer"] for r in weights} == {"conv1", "conv2", "fc1", "fc2"}
    assert all(r["param"] == "weight" for r in weights)


def test_layers_of_two_epochs_of_one_run(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    sick = demo_runs["sick"]
    body = _ok(client.get(f"{API}/compare/layers?runs={sick}&epochs=0,2&quantity=activation"))
    assert [e["label"] for e in body["entries"]] == ["sick · epoch 0", "sick · epoch 2"]
    assert body["x_label"] == "steps since the epoch began"
    assert body["layers"][0]["layer"] == "relu2"  # alive in epoch 0, dead in epoch 2


def test_layers_need_two_entries(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    message = _error(client.get(f"{API}/compare/layers?runs={demo_runs['sick']}"), 400)
    assert "at least two" in message


# -- /compare: one stat over time -----------------------------------------------------------------


def test_curves_match_the_reader(
    client, demo_store: Path, demo_runs: dict[str, str], both: str
) -> None:  # type: ignore[no-untyped-def]
    body = _ok(client.get(f"{API}/compare?{both}&layer=relu2&quantity=activation"))
    assert body["stat"] == "std" and body["x_label"] == "step"
    sick = body["entries"][1]
    with tracker.open_run(demo_runs["sick"], store=demo_store) as r:
        steps, std = r.series("relu2", "activation", "std")
    assert sick["steps"] == steps.tolist() and sick["mean"] == pytest.approx(std.tolist())
    assert sick["mean"][-1] == 0.0


def test_curves_downsample_and_align_by_epoch(client, both: str) -> None:  # type: ignore[no-untyped-def]
    body = _ok(
        client.get(f"{API}/compare?{both}&layer=fc1&quantity=weight_grad&points=10&align=epoch")
    )
    assert body["x_label"] == "epoch"
    for entry in body["entries"]:
        assert entry["total"] == 60 and len(entry["x"]) <= 10
        assert min(entry["x"]) >= 0 and max(entry["x"]) < 3  # epochs 0..2, fractional
        spans = zip(entry["min"], entry["mean"], entry["max"], strict=True)
        assert all(lo <= m <= hi for lo, m, hi in spans)


def test_curves_of_epochs_count_steps_from_each_epoch_s_start(
    client, demo_runs: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    sick = demo_runs["sick"]
    body = _ok(client.get(f"{API}/compare?runs={sick}&epochs=1,2&layer=conv1&quantity=weight"))
    one, two = body["entries"]
    assert one["steps"][0] == 23 and two["steps"][0] == 46  # demo epochs: 23 steps each
    assert one["x"][0] == 0 and two["x"][0] == 0


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("epochs=0,1", 400, "exactly one run"),
        ("align=sideways", 400, "align must be one of"),
        ("stat=median", 400, "unknown stat"),
    ],
)
def test_curves_bad_input(client, both: str, query: str, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    url = f"{API}/compare?{both}&layer=fc1&quantity=weight&{query}"
    assert message in _error(client.get(url), status)


def test_unknown_epoch_is_404(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    url = f"{API}/compare?runs={demo_runs['sick']}&epochs=0,7&layer=fc1&quantity=weight"
    assert "no epoch 7" in _error(client.get(url), 404)


# -- histograms and snapshots at one moment -------------------------------------------------------


def test_histograms_overlay_on_shared_bins_and_subtract(client, both: str) -> None:  # type: ignore[no-untyped-def]
    body = _ok(client.get(f"{API}/compare/histograms?{both}&layer=relu2&quantity=activation"))
    healthy, sick = body["entries"]
    assert healthy["step"] == sick["step"] == 55  # the last histogram step both have
    assert len(body["edges"]) == len(healthy["counts"]) + 1
    assert sum(healthy["share"]) == pytest.approx(1) and sum(sick["share"]) == pytest.approx(1)
    (difference,) = body["difference"]
    assert difference == pytest.approx(np.subtract(sick["share"], healthy["share"]), abs=1e-7)
    assert sum(difference) == pytest.approx(0, abs=1e-6)
    bins = zip(body["edges"], body["edges"][1:], strict=False)
    zero = next(i for i, (lo, hi) in enumerate(bins) if lo < 0 < hi)
    assert sick["share"][zero] == 1.0  # every value of a dead ReLU is 0
    url = f"{API}/compare/histograms?{both}&layer=relu2&quantity=activation&step=12"
    assert [e["step"] for e in _ok(client.get(url))["entries"]] == [10, 10]


def test_snapshot_steps_of_training_batch_and_probe(client, both: str) -> None:  # type: ignore[no-untyped-def]
    body = _ok(client.get(f"{API}/compare/snapshots?{both}&layer=conv2&quantity=activation"))
    assert body["common"] == [0, 25, 50] and body["probe_common"] == [0, 25, 50]
    assert body["has_probe"] is True
    weights = _ok(client.get(f"{API}/compare/snapshots?{both}&layer=conv2&quantity=weight"))
    assert weights["has_probe"] is False  # a probe pass records activations only


def test_tensors_side_by_side_with_their_difference(
    client, demo_store: Path, demo_runs: dict[str, str], both: str
) -> None:  # type: ignore[no-untyped-def]
    body = _ok(client.get(f"{API}/compare/tensors?{both}&layer=relu2&quantity=activation"))
    assert body["probe"] is True  # every run recorded probe inputs: the same examples
    healthy, sick = body["entries"]
    assert healthy["step"] == sick["step"] == 50
    assert sick["min"] == sick["max"] == 0.0
    with tracker.open_run(demo_runs["healthy"], store=demo_store) as r:
        expected = r.tensor("relu2", "activation", 50, probe=True)
    assert healthy["shape"] == list(expected.shape)
    assert healthy["data"] == pytest.approx(expected.ravel().tolist())
    (difference,) = body["difference"]
    assert difference["data"] == pytest.approx((-expected).ravel().tolist())  # 0 - healthy
    train = _ok(client.get(f"{API}/compare/tensors?{both}&layer=relu2&quantity=activation&probe=0"))
    assert train["probe"] is False and train["entries"][0]["data"] != healthy["data"]


def test_tensors_of_epochs_take_each_epoch_s_last_snapshot(
    client, demo_runs: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    sick = demo_runs["sick"]
    url = f"{API}/compare/tensors?runs={sick}&epochs=0,2&layer=conv1&quantity=weight"
    body = _ok(client.get(url))
    assert [e["step"] for e in body["entries"]] == [0, 50]
    assert body["probe"] is False  # weights do not depend on the inputs
    early = _ok(client.get(f"{url}&offset=3"))
    assert [e["step"] for e in early["entries"]] == [0, None]  # no snapshot in steps 46..49


# -- gradient flow, metric curves, histograms over time, probe snapshots -------------------------


def test_flow_has_every_layer_with_weights_by_depth(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    body = _ok(client.get(f"{API}/runs/{demo_runs['sick']}/flow?points=30"))
    assert [layer["name"] for layer in body["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
    assert body["lr"] == 0.5
    assert len(body["steps"]) <= 30 and body["bucket"] == 2
    assert len(body["grad_norm"]) == 4 and len(body["grad_norm"][0]) == len(body["steps"])
    assert body["grad_norm"][0][-1] == 0.0  # dead ReLUs: nothing reaches conv1 at the end
    assert [e["epoch"] for e in body["epochs"]] == [0, 1, 2]
    assert len(body["epoch_ratio"][0]) == 3


def test_curves_are_downsampled_by_the_database(
    client, demo_store: Path, demo_runs: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    rid = demo_runs["healthy"]
    body = _ok(client.get(f"{API}/runs/{rid}/curves?points=7&names=loss"))
    (loss,) = body["curves"]
    assert loss["total"] == 60 and loss["downsampled"] and len(loss["steps"]) <= 7
    with tracker.open_run(rid, store=demo_store) as r:
        _, values = r.metrics("loss")
    assert min(loss["min"]) == pytest.approx(values.min())
    assert max(loss["max"]) == pytest.approx(values.max())
    assert "no metric" in _error(client.get(f"{API}/runs/{rid}/curves?names=nope"), 404)


def test_histograms_over_time_downsampled(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    url = f"{API}/runs/{demo_runs['healthy']}/histograms?layer=conv2&quantity=activation_grad"
    full = _ok(client.get(url))
    assert full["steps"] == list(range(0, 60, 5))
    cut = _ok(client.get(f"{url}&points=4"))
    assert cut["downsampled"] and cut["total"] == 12 and len(cut["steps"]) == 4
    assert len(cut["counts"][0]) == len(cut["edges"]) - 1


def test_snapshots_and_tensor_of_probe_inputs(
    client, demo_store: Path, demo_runs: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    rid = demo_runs["healthy"]
    query = "layer=conv2&quantity=activation"
    steps = _ok(client.get(f"{API}/runs/{rid}/snapshots?{query}&probe=1"))
    assert steps["probe"] is True and steps["steps"] == [0, 25, 50]
    body = _ok(client.get(f"{API}/runs/{rid}/tensor?{query}&step=25&probe=1"))
    with tracker.open_run(rid, store=demo_store) as r:
        expected = r.tensor("conv2", "activation", 25, probe=True)
    assert body["probe"] is True and body["shape"] == list(expected.shape)
    assert body["data"] == pytest.approx(expected.ravel().tolist())
    bad = client.get(f"{API}/runs/{rid}/snapshots?{query}&probe=2")
    assert "must be 0 or 1" in _error(bad, 400)


def test_non_ascii_digits_are_a_400_not_a_500(client, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    # "³".isdigit() is True but int("³") raises: found by the schema fuzzer.
    runs = demo_runs["sick"]
    url = f"{API}/compare/snapshots?runs={runs}&epochs=%C2%B3&layer=conv1&quantity=weight"
    assert "must list integers" in _error(client.get(url), 400)
