"""End to end: train a few steps with the tracker, read every quantity back through the Python
reader and through the REST API, and compare with plain autograd (on SQLite and PostgreSQL)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import tracker
from api import create_app
from tests.reference import reference_run
from tracker.capture.stats import reference_stats
from tracker.demo import digits_cnn, load_digits_tensors
from tracker.names import STAT_NAMES
from tracker.store import Store

STEPS = 3


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    images, labels = load_digits_tensors()
    return [(images[i * 32 : (i + 1) * 32], labels[i * 32 : (i + 1) * 32]) for i in range(STEPS)]


def test_digits_cnn_round_trip_through_reader_and_api(store_path: Path, database_url: str) -> None:
    batches = _batches()
    torch.manual_seed(0)
    model = digits_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run = tracker.init(project="e2e", name="cnn", store=store_path, database_url=database_url)
    with run:
        run.watch(model, every=1, histogram_every=1, snapshot_every=1)
        for step, (x, y) in enumerate(batches):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()}, step=step)

    torch.manual_seed(0)
    ref_model = digits_cnn()
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.05, momentum=0.9)
    expected = reference_run(ref_model, batches, F.cross_entropy, ref_opt)

    store = Store(store_path, database_url)
    client = create_app(store).test_client()
    base = f"/api/v1/runs/{run.id}"
    with tracker.open_run("cnn", project="e2e", store=store) as reader:
        assert reader.metrics("loss")[1].tolist() == [s.loss for s in expected]
        seen = 0
        for step, ref in enumerate(expected):
            for (layer, quantity, part, _), want in ref.tensors.items():
                kind = reader.layer_info(layer)["kind"] if quantity == "activation" else None
                stored = reader.tensor(layer, quantity, step, param=part)
                bounded = want[:8] if quantity.startswith("activation") else want
                np.testing.assert_array_equal(stored, bounded)
                query = f"layer={layer}&quantity={quantity}&param={part}"
                npy = client.get(f"{base}/tensor?{query}&step={step}&format=npy")
                assert npy.status_code == 200
                np.testing.assert_array_equal(np.load(io.BytesIO(npy.data)), bounded)
                body = client.get(f"{base}/tensor?{query}&step={step}").get_json()
                np.testing.assert_array_equal(
                    np.asarray(body["data"], np.float32).reshape(body["shape"]), bounded
                )
                series = client.get(f"{base}/series?{query}&stat={','.join(STAT_NAMES)}").get_json()
                row = [
                    np.nan if series["stats"][s][step] is None else series["stats"][s][step]
                    for s in STAT_NAMES
                ]
                np.testing.assert_allclose(row, reference_stats(want, kind), rtol=2e-5, atol=1e-6)
                seen += 1
        # per step: 10 activations, 10 activation gradients, 8 parameters, 8 parameter gradients
        assert seen == STEPS * (10 + 10 + 8 + 8)
    store.close()
