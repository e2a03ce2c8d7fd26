"""The Python reader: finding runs, and clear errors for everything that is not there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tracker
from tracker.names import STAT_NAMES


def test_list_and_open_by_id_or_name(demo_store: Path, demo_runs: dict[str, str]) -> None:
    runs = tracker.list_runs(store=demo_store)
    assert {r.name for r in runs} == {"healthy", "sick"}
    assert tracker.list_runs(store=demo_store, project="nope") == []
    assert [r.name for r in tracker.list_runs(store=demo_store, status="finished")] == [
        "sick",
        "healthy",
    ]
    with tracker.open_run("sick", project="digits-demo", store=demo_store) as r:
        assert r.id == demo_runs["sick"] and r.project == "digits-demo"
    with tracker.open_run(demo_runs["healthy"], store=demo_store) as r:
        assert r.name == "healthy" and r.config["lr"] == 0.05


def test_layers_parts_and_shapes(demo_store: Path, demo_runs: dict[str, str]) -> None:
    with tracker.open_run(demo_runs["healthy"], store=demo_store) as r:
        assert r.layers() == [
            "conv1",
            "relu1",
            "pool1",
            "conv2",
            "relu2",
            "pool2",
            "flatten",
            "fc1",
            "relu3",
            "fc2",
        ]
        info = r.layer_info("conv1")
        assert info["type"] == "Conv2d" and info["params"] == {
            "weight": [16, 1, 3, 3],
            "bias": [16],
        }
        assert info["shapes"] == {"output": [64, 16, 8, 8]}
        assert r.parts("conv1", "weight") == ["weight", "bias"]
        assert r.layer_info("relu1")["kind"] == "relu"


def test_series_stats_histograms_tensors(demo_store: Path, demo_runs: dict[str, str]) -> None:
    with tracker.open_run(demo_runs["healthy"], store=demo_store) as r:
        steps, values = r.series("fc1", "weight_grad", "norm")
        assert (
            steps.tolist() == list(range(60)) and np.isfinite(values).all() and (values > 0).all()
        )
        steps, rows = r.stats("conv1", "activation")
        assert rows.shape == (60, len(STAT_NAMES))
        assert r.steps("conv1", "activation").tolist() == [0, 25, 50]
        assert r.tensor("conv1", "activation", 25).shape == (8, 16, 8, 8)
        assert r.tensor("conv1", "weight", 25, param="bias").shape == (16,)
        edges, counts = r.histogram("conv1", "activation", 5)
        assert len(edges) == len(counts) + 1 and counts.sum() == 64 * 16 * 8 * 8
        assert r.histograms("fc2", "weight_grad")[0].tolist() == list(range(0, 60, 5))
        steps, values = r.metrics("val_acc")
        assert len(steps) == 3 and ((values >= 0) & (values <= 1)).all()


def test_sick_run_shows_dead_relus_and_healthy_does_not(
    demo_store: Path, demo_runs: dict[str, str]
) -> None:
    with (
        tracker.open_run(demo_runs["sick"], store=demo_store) as sick,
        tracker.open_run(demo_runs["healthy"], store=demo_store) as healthy,
    ):
        assert sick.series("relu3", "activation", "dead_frac")[1][-1] > 0.9
        assert healthy.series("relu3", "activation", "dead_frac")[1][-1] < 0.5
        assert any(f.code == "dead_relu" for f in sick.health()["relu3"])
        assert not any(f.code == "dead_relu" for flags in healthy.health().values() for f in flags)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda r: r.series("conv9", "activation", "mean"),
            tracker.NotFoundError,
            "no layer 'conv9'; layers: conv1",
        ),
        (
            lambda r: r.series("conv1", "gradient", "mean"),
            tracker.InvalidArgumentError,
            "expected one of activation",
        ),
        (
            lambda r: r.series("conv1", "activation", "median"),
            tracker.InvalidArgumentError,
            "unknown stat",
        ),
        (
            lambda r: r.series("conv1", "weight", "mean", param="gamma"),
            tracker.NotFoundError,
            "parameters: weight, bias",
        ),
        (
            lambda r: r.series("relu1", "weight", "mean"),
            tracker.NotFoundError,
            "no recorded weight",
        ),
        (
            lambda r: r.tensor("conv1", "activation", 3),
            tracker.NotFoundError,
            "snapshot steps: 0, 25, 50",
        ),
        (
            lambda r: r.tensor("conv1", "activation", -1),
            tracker.InvalidArgumentError,
            "step must be",
        ),
        (
            lambda r: r.tensor("conv1", "activation", "5"),
            tracker.InvalidArgumentError,
            "step must be",
        ),
        (
            lambda r: r.histogram("conv1", "activation", 7),
            tracker.NotFoundError,
            "histogram steps: 0, 5",
        ),
        (
            lambda r: r.metrics("accuracy"),
            tracker.NotFoundError,
            "metrics: loss, val_acc, val_loss",
        ),
        (
            lambda r: r.stats("conv1", "activation", call=-2),
            tracker.InvalidArgumentError,
            "call must be",
        ),
    ],
)
def test_missing_things_are_clear_errors(
    demo_store: Path, demo_runs: dict[str, str], call, error, match
) -> None:  # type: ignore[no-untyped-def]
    with (
        tracker.open_run(demo_runs["healthy"], store=demo_store) as r,
        pytest.raises(error, match=match),
    ):
        call(r)


def test_unknown_run_and_status(demo_store: Path) -> None:
    with pytest.raises(tracker.NotFoundError, match="no run with id or name 'ghost'"):
        tracker.open_run("ghost", store=demo_store)
    with pytest.raises(tracker.NotFoundError):
        tracker.open_run("healthy", project="other", store=demo_store)
    with pytest.raises(tracker.InvalidArgumentError, match="status must be"):
        tracker.list_runs(store=demo_store, status="exploded")
