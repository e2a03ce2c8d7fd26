"""Bad input to the client (docs/reliability.md): odd tensors, odd names, odd stores. Each test
states the property it proves; none of them may stop training (I1) or lose what is stored."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tracker
from tracker.errors import InvalidArgumentError, StoreError

pytestmark = pytest.mark.reliability


class OddOutputs(nn.Module):
    """Returns a 0-d tensor, an empty tensor, a huge tensor, a string and None in one output."""

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        return {
            "scalar": x.sum(),
            "empty": x[:0],
            "huge": x.repeat(1, 4096),  # 8 x 262,144 elements: far past the snapshot bound
            "label": "not a tensor",
            "nothing": None,
        }


def test_odd_outputs_are_recorded_within_bounds_and_training_goes_on(store_path: Path) -> None:
    """0-d, empty and huge tensors get stats (count 0 for empty), huge snapshots are cut to the
    bound, non-tensor parts are skipped, and every step is stored."""
    model = OddOutputs()
    with tracker.init(project="input", name="odd", store=store_path) as run:
        run.watch(model, snapshot_every=1, snapshot_max_elements=4096)
        for step in range(3):
            out = model(torch.randn(8, 64, requires_grad=True))
            assert out["label"] == "not a tensor"
            run.log({"loss": out["scalar"].item()}, step=step)
    with tracker.open_run("odd", store=store_path) as r:
        parts = set(r.parts("model", "activation"))
        assert parts == {"output.scalar", "output.empty", "output.huge"}  # no label, no None
        steps, counts = r.series("model", "activation", "count", param="output.empty")
        assert steps.tolist() == [0, 1, 2] and counts.tolist() == [0, 0, 0]
        scalar = r.series("model", "activation", "count", param="output.scalar")[1]
        assert scalar.tolist() == [1, 1, 1]
        huge = r.tensor("model", "activation", 2, param="output.huge")
        assert huge.size <= 4096
        assert r.series("model", "activation", "count", param="output.huge")[1][0] == 8 * 64 * 4096
        assert r.status == "finished" and not r.info.status_reason


def test_nan_and_inf_in_every_quantity_are_counted_not_fatal(store_path: Path) -> None:
    """A network whose weights turn NaN/Inf: stats count them, histograms stay valid, training and
    storage go on (the diagnosis names the first layer where they appeared)."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")
    with tracker.init(project="input", name="nan", store=store_path) as run:
        run.watch(model, histogram_every=1)
        for step in range(3):
            model(torch.randn(5, 4)).sum().backward()
            run.log({"loss": float("nan")}, step=step)
    with tracker.open_run("nan", store=store_path) as r:
        assert r.series("2", "weight", "inf_count")[1].tolist() == [1, 1, 1]
        assert np.isnan(r.metrics("loss")[1]).all()
        _, counts = r.histogram("2", "weight", 0)
        assert counts.sum() == 4 * 2  # every weight counted, the Inf one in the non-finite bin
        found = {f.code for f in tracker.diagnose(r)}
        assert "nan_inf" in found


@pytest.mark.parametrize(
    "name", ["with space", "ünïcødé-层", "dots.and.more", "a" * 200, "emoji 🙂"]
)
def test_odd_layer_names_round_trip_and_never_reach_the_file_system(
    store_path: Path, name: str
) -> None:
    """Layer names are quoted wherever they become a path or an HDF5 name (I5)."""
    model = nn.ModuleDict({name.replace(".", "_"): nn.Linear(3, 3)}) if "." in name else None
    if model is None:
        model = nn.ModuleDict({name: nn.Linear(3, 3)})
    layer = next(iter(model.keys()))
    with tracker.init(project="input", name="names", store=store_path) as run:
        run.watch(model, snapshot_every=1)
        model[layer](torch.randn(2, 3)).sum().backward()
        run.log({}, step=0)
    with tracker.open_run("names", store=store_path) as r:
        assert r.layers() == [layer]
        assert r.tensor(layer, "weight", 0).shape == (3, 3)
    for path in store_path.rglob("*"):
        assert layer not in path.name  # names live inside files, never as file names


def test_two_runs_with_one_name_stay_two_runs(store_path: Path) -> None:
    """The same name twice gives two runs with their own ids; by name, the newest is opened."""
    ids = []
    for value in (1.0, 2.0):
        with tracker.init(project="input", name="twin", store=store_path) as run:
            run.log({"x": value}, step=0)
            ids.append(run.id)
    assert ids[0] != ids[1]
    with tracker.open_run("twin", store=store_path) as r:
        assert r.id == ids[1] and r.metrics("x")[1].tolist() == [2.0]
    with tracker.open_run(ids[0], store=store_path) as r:
        assert r.metrics("x")[1].tolist() == [1.0]


def test_bad_stores_and_arguments_are_clear_errors(tmp_path: Path) -> None:
    """A store path that is a file, an unwritable store, bad names: one clear error each, and a
    failed init leaves nothing half-made."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        tracker.init(store=a_file)
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        tracker.init(project="..", store=tmp_path / "s")
    with pytest.raises(InvalidArgumentError, match="control characters"):
        tracker.init(project="ok", name="\x00", store=tmp_path / "s")
    assert tracker.list_runs(store=tmp_path / "s") == []  # nothing half-made
    if os.geteuid() == 0:
        return  # root writes anywhere: the read-only case is tests/test_run.py's, as a user
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(StoreError, match="not writable"):
        tracker.init(store=ro)
