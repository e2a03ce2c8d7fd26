"""Top-k maximally activating inputs: brute-force reference, bit-exact storage, no effect on
training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tracker
from tracker.errors import InvalidArgumentError, NotFoundError
from tracker.store import Store
from tracker.store.recovery import inspect_rank, repair
from tracker.topk import collect_top_k, top_k_layers
from tracker.topk.files import save_top_k
from tracker.topk.receptive import receptive_field
from tracker.topk.stream import StreamingTopK


def _brute_force(outputs: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank every (input, channel) at once: values, indices and positions of the top k."""
    n, c = outputs.shape[:2]
    flat = outputs.reshape(n, c, -1)
    values, where = flat.max(dim=2)
    order = torch.sort(values, dim=0, descending=True, stable=True).indices[:k]  # ties: lower index
    spatial = outputs.shape[2:]
    coords = np.stack(np.unravel_index(where.numpy(), spatial), axis=-1) if spatial else None
    top_values = values.gather(0, order).T.numpy()
    top_indices = order.T.numpy()
    positions = (
        np.take_along_axis(coords, order.numpy()[..., None], axis=0).transpose(1, 0, 2)
        if coords is not None
        else np.zeros((c, k, 0), dtype=np.int64)
    )
    return top_values, top_indices, positions


@pytest.mark.parametrize("shape", [(103, 6), (103, 5, 7, 9), (103, 4, 11)])
@pytest.mark.parametrize("batch", [1, 16, 103])
def test_streaming_equals_brute_force_whatever_the_batches(
    shape: tuple[int, ...], batch: int
) -> None:
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(shape, generator=g)
    outputs[40:60] = outputs[10:30]  # exact ties: the earlier input must win, however batched
    stream = StreamingTopK(k=9)
    for start in range(0, shape[0], batch):
        stream.update(outputs[start : start + batch], start)
    got = stream.result()
    values, indices, positions = _brute_force(outputs, 9)
    np.testing.assert_array_equal(got.values, values)
    np.testing.assert_array_equal(got.indices, indices)
    np.testing.assert_array_equal(got.positions, positions)


def test_fewer_inputs_than_k_and_nan_never_wins() -> None:
    outputs = torch.tensor([[1.0, float("nan")], [2.0, 0.5], [float("nan"), -1.0]])
    stream = StreamingTopK(k=5)
    stream.update(outputs, 0)
    got = stream.result()
    assert got.values.shape == (2, 3)
    np.testing.assert_array_equal(got.indices[0], [1, 0, 2])  # NaN ranks last
    np.testing.assert_array_equal(got.values[1, :2], [0.5, -1.0])


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )


def test_collect_matches_a_brute_force_forward_of_the_whole_set() -> None:
    torch.manual_seed(0)
    model = _cnn()
    data = torch.randn(70, 1, 8, 8)
    layers = top_k_layers(model)
    assert [name for name, _ in layers] == ["0", "4", "8"]
    result = collect_top_k(model, data, layers, k=4, batch_size=16)
    model.eval()
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _a, out, name=name: outputs.__setitem__(name, out))
        for name, m in layers
    ]
    with torch.no_grad():
        model(data)
    for h in hooks:
        h.remove()
    for name, _ in layers:
        values, indices, positions = _brute_force(outputs[name], 4)
        got = result.layers[name].top
        np.testing.assert_allclose(got.values, values, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got.indices, indices)
        np.testing.assert_array_equal(got.positions, positions)
    assert result.samples is not None
    np.testing.assert_array_equal(result.samples, data[result.sample_indices].numpy())


def test_receptive_field_equals_the_arithmetic_of_kernels_and_strides() -> None:
    torch.manual_seed(0)
    model = _cnn().eval()  # in training mode BatchNorm's batch statistics couple every pixel
    inputs = torch.rand(8, 1, 8, 8)
    # Conv 3x3 pad 1 -> pool 2 -> conv 3x3 pad 1: output p sees inputs 2p-3 .. 2p+4, clipped.
    field = receptive_field(model, model[4], inputs, (4, 4))
    assert field is not None and field.exact
    expected = tuple((max(0, 2 * p - 3), min(8, 2 * p + 5)) for p in range(4))
    assert field.ranges == (expected, expected)
    assert field.size() == (7, 7)
    first = receptive_field(model, model[0], inputs, (8, 8))
    assert first is not None and first.ranges[0][3] == (2, 5)
    assert receptive_field(model, model[8], inputs, ()) is None  # linear: the whole input


def _train(model: nn.Module, steps: int, run: tracker.Run | None, x: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    y = torch.arange(len(x)) % 5
    for step in range(steps):
        batch = slice((step * 16) % 64, (step * 16) % 64 + 16)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if run is not None:
            run.log({"loss": loss.item()}, step=step, epoch=step // 4)


def test_watch_stores_a_pass_per_epoch_and_leaves_training_unchanged(store_path: Path) -> None:
    x, held = torch.randn(64, 1, 8, 8), torch.randn(40, 1, 8, 8)
    torch.manual_seed(1)
    reference = _cnn()
    _train(reference, 12, None, x)
    torch.manual_seed(1)
    model = _cnn()
    with tracker.init(project="topk", name="watched", store=store_path) as run:
        run.watch(model, top_k=3, dataset=held, snapshot_every=0)
        _train(model, 12, run, x)
    # Dropout's RNG, BatchNorm's running statistics and the weights are as without the tracker.
    for (name, a), b in zip(
        reference.state_dict().items(), model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    with tracker.open_run("watched", store=store_path) as r:
        passes = r.top_k_passes()
        assert [(p["epoch"], p["step"]) for p in passes] == [(0, 3), (1, 7), (2, 11)]
        view = r.top_k("4", epoch=2)
        # The last pass saw the final weights: recompute it and compare bit for bit.
        again = collect_top_k(model, held, top_k_layers(model), k=3).layers["4"]
        np.testing.assert_array_equal(view.values, again.top.values)
        np.testing.assert_array_equal(view.indices, again.top.indices)
        np.testing.assert_array_equal(view.boxes, again.boxes)
        patches = view.patches()
        assert patches is not None and patches.shape == (6, 3, 1, 7, 7)
        c, j = 0, 0
        (y0, y1), (x0, x1) = view.boxes[c, j]
        cut = held[view.indices[c, j], :, y0:y1, x0:x1].numpy()
        np.testing.assert_array_equal(patches[c, j, :, : y1 - y0, : x1 - x0], cut)
        assert np.isnan(patches[c, j, :, y1 - y0 :, :]).all()  # beyond the input's border
        with pytest.raises(NotFoundError, match="no top-k inputs of layer '0' at epoch 9"):
            r.top_k("0", epoch=9)


def test_top_k_after_training_by_run_name(store_path: Path) -> None:
    torch.manual_seed(0)
    model = _cnn()
    with tracker.init(project="topk", name="later", store=store_path) as run:
        _train(model, 4, run, torch.randn(64, 1, 8, 8))
    held = (torch.randn(30, 1, 8, 8), torch.zeros(30))
    result = tracker.top_k("later", model, held, layers=["8"], k=2, epoch=0, store=store_path)
    with tracker.open_run("later", store=store_path) as r:
        view = r.top_k("8")
        assert view.epoch == 0 and view.step == 3 and view.dataset_size == 30
        np.testing.assert_array_equal(view.values, result.layers["8"].top.values)
        inputs = view.inputs()
        assert inputs is not None
        np.testing.assert_array_equal(inputs[1, 0], held[0][view.indices[1, 0]].numpy())


def test_bad_arguments_are_clear_and_a_failing_pass_does_not_stop_training(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _cnn()
    with tracker.init(project="topk", name="bad", store=store_path) as run:
        with pytest.raises(InvalidArgumentError, match="top_k needs dataset="):
            run.watch(model, top_k=9)
        with pytest.raises(InvalidArgumentError, match="map-style"):
            run.watch(model, top_k=9, dataset=iter([1, 2]))
        with pytest.raises(InvalidArgumentError, match="top_k_every"):
            run.watch(model, top_k=9, dataset=torch.zeros(4, 1, 8, 8), top_k_every=0)
        # Inputs of the wrong shape: the pass fails at the epoch's end, training goes on.
        run.watch(model, top_k=2, dataset=torch.zeros(4, 3, 5, 5), snapshot_every=0)
        with caplog.at_level(logging.WARNING, logger="tracker"):
            _train(model, 8, run, torch.randn(64, 1, 8, 8))
    assert "computing the top-k inputs" in caplog.text
    with tracker.open_run("bad", store=store_path) as r:
        assert r.top_k_passes() == [] and "top-k" in (r.info.status_reason or "")
    lstm = nn.LSTM(4, 3, batch_first=True)
    with pytest.raises(InvalidArgumentError, match="no conv or linear layer"):
        top_k_layers(lstm)
    with pytest.raises(InvalidArgumentError, match="not a \\(batch, channels"):
        collect_top_k(lstm, torch.zeros(2, 5, 4), [("", lstm)])


def test_a_pass_written_but_not_registered_is_registered_by_recovery(store_path: Path) -> None:
    model = _cnn()
    with tracker.init(project="topk", name="crash", store=store_path) as run:
        run_id = run.id
    result = collect_top_k(model, torch.randn(10, 1, 8, 8), top_k_layers(model), k=2)
    with Store.open(store_path) as store:
        calls = []
        swap = store.catalog.swap_segments
        store.catalog.swap_segments = lambda *a: calls.append(a)  # type: ignore[method-assign]
        save_top_k(store, run_id, result, epoch=0, step=3)  # the file is written, not registered
        store.catalog.swap_segments = swap  # type: ignore[method-assign]
        assert len(calls) == 1
        findings = inspect_rank(store, run_id, 0)
        assert [f.problem for f in findings] == ["unregistered top-k file"]
        assert repair(findings)
    with tracker.open_run(run_id, store=store_path) as r:
        np.testing.assert_array_equal(r.top_k("0").values, result.layers["0"].top.values)


def test_api_serves_what_the_reader_reads(  # type: ignore[no-untyped-def]
    client, demo_store: Path, demo_runs: dict[str, str]
) -> None:
    run = demo_runs["healthy"]
    passes = client.get(f"/api/v1/runs/{run}/topk").get_json()["passes"]
    assert [p["epoch"] for p in passes] == list(range(len(passes))) and len(passes) >= 2
    assert passes[0]["layers"] == ["conv1", "conv2", "fc1", "fc2"]
    body = client.get(f"/api/v1/runs/{run}/layers/conv2/topk?epoch=1&start=8&count=4").get_json()
    with tracker.open_run(run, store=demo_store) as r:
        view = r.top_k("conv2", epoch=1)
        patches = view.patches()
    assert patches is not None
    assert (body["channels"], body["start"], body["stop"], body["k"]) == (32, 8, 12, 9)
    assert body["values"] == view.values[8:12].astype(np.float64).tolist()
    assert body["indices"] == view.indices[8:12].tolist()
    nulls_as_nan = json.loads(json.dumps(body["patches"]).replace("null", "NaN"))
    got = np.array(nulls_as_nan, dtype=np.float64)
    np.testing.assert_array_equal(got, patches[8:12].astype(np.float64))
    no_patches = client.get(f"/api/v1/runs/{run}/layers/fc1/topk?patches=0").get_json()
    assert no_patches["patches"] is None and no_patches["channels"] == 64
    assert client.get(f"/api/v1/runs/{run}/layers/relu1/topk").status_code == 404
    assert client.get(f"/api/v1/runs/{run}/layers/nope/topk").status_code == 404
    assert client.get(f"/api/v1/runs/{run}/layers/conv2/topk?epoch=1&step=3").status_code == 400
    assert client.get(f"/api/v1/runs/{run}/layers/conv2/topk?count=65").status_code == 400
    assert client.get(f"/api/v1/runs/{run}/layers/conv2/topk?start=32").status_code == 400
