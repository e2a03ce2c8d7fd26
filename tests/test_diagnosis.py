"""Diagnosis on runs built to show each problem, and no false flag on healthy runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tracker
from tracker.diagnosis import diagnose, learning_rate, onset, summary

STEPS = 40


def _train(
    store: Path,
    model: nn.Module,
    lr: float,
    data: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable = F.cross_entropy,
    steps: int = STEPS,
) -> str:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with tracker.init(project="diagnosis", store=store, config={"lr": lr}) as run:
        run.watch(model, every=1, histogram_every=0, snapshot_every=0)
        for step in range(steps):
            x, y = data(step)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()}, step=step)
        return run.id


def _classes(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(32, 8, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _codes(store: Path, run_id: str) -> dict[str, set[str | None]]:
    with tracker.open_run(run_id, store=store) as r:
        found: dict[str, set[str | None]] = {}
        for f in diagnose(r):
            found.setdefault(f.code, set()).add(f.layer)
        return found


def test_demo_sick_run_dead_relus_and_no_gradient(
    demo_store: Path, demo_runs: dict[str, str]
) -> None:
    with tracker.open_run(demo_runs["sick"], store=demo_store) as r:
        findings = diagnose(r)
    codes = {(f.code, f.layer) for f in findings}
    assert {("dead_relu", "relu2"), ("dead_relu", "relu3")} <= codes
    assert summary(findings) == "error"
    dead = next(f for f in findings if f.layer == "relu3")
    assert dead.evidence["dead_frac_median"] >= 0.9 and dead.first_step < 59
    assert dead.suggestion and dead.explanation and "relu3" in dead.message


def test_demo_healthy_run_has_no_finding(demo_store: Path, demo_runs: dict[str, str]) -> None:
    with tracker.open_run(demo_runs["healthy"], store=demo_store) as r:
        assert diagnose(r) == []


def test_healthy_mlp_has_no_finding(store_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    assert _codes(store_path, _train(store_path, model, 0.05, _classes)) == {}


def test_nan_first_appearance_names_the_layer_and_step(store_path: Path) -> None:
    class Blowup(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x * (1e39 if self.calls > 7 else 1.0)  # inf from the 8th forward on

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), Blowup(), nn.Linear(8, 3))
    run_id = _train(store_path, model, 0.01, _classes, steps=12)
    with tracker.open_run(run_id, store=store_path) as r:
        first = next(f for f in diagnose(r) if f.code == "nan_inf")
    assert (first.layer, first.quantity, first.first_step) == ("1", "activation", 7)


def test_saturated_sigmoid(store_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Sigmoid(), nn.Linear(16, 3))
    with torch.no_grad():
        model[0].weight.mul_(60)
    assert "1" in _codes(store_path, _train(store_path, model, 0.01, _classes)).get(
        "saturated", set()
    )


def test_vanishing_gradient_across_depth(store_path: Path) -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(12):
        layers += [nn.Linear(16, 16), nn.Sigmoid()]
    model = nn.Sequential(nn.Linear(8, 16), *layers, nn.Linear(16, 3))
    codes = _codes(store_path, _train(store_path, model, 0.01, _classes))
    assert "0" in codes.get("vanishing_gradient", set())  # the input end, farthest from the loss
    assert "24" not in codes.get("vanishing_gradient", set())  # the last hidden layer is fine


def test_exploding_gradient(store_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 1))

    def big(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = _classes(step)
        return x * 100, torch.full((32, 1), 1e4)

    codes = _codes(store_path, _train(store_path, model, 1e-9, big, loss_fn=F.mse_loss))
    assert codes.get("exploding_gradient")


def test_update_ratio_too_low(store_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    codes = _codes(store_path, _train(store_path, model, 1e-7, _classes))
    assert codes.get("update_ratio_low") == {"0", "2"}


def test_batchnorm_drift(store_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 8), nn.BatchNorm1d(8, momentum=0.5), nn.ReLU(), nn.Linear(8, 3)
    )

    def growing(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _classes(step)
        return x * (1 + step / 4), y  # the input scale keeps growing: running stats chase it

    assert "1" in _codes(store_path, _train(store_path, model, 0.001, growing)).get(
        "bn_drift", set()
    )


def test_helpers() -> None:
    import numpy as np

    assert onset(np.arange(5), np.array([False, True, False, True, True])) == 3
    assert onset(np.arange(3), np.array([True, True, True])) == 0
    assert onset(np.arange(3), np.array([True, True, False])) is None
    assert learning_rate({"lr": 0.1}) == 0.1
    assert learning_rate({"optimizer": {"learning_rate": 3e-4}}) == 3e-4
    assert learning_rate({"lr": "fast"}) is None
    assert learning_rate({}) is None


@pytest.mark.parametrize(
    "code",
    [
        "dead_relu",
        "no_gradient",
        "vanishing_gradient",
        "exploding_gradient",
        "saturated",
        "nan_inf",
        "update_ratio_low",
        "update_ratio_high",
        "bn_drift",
    ],
)
def test_every_code_explains_itself_and_suggests_a_fix(code: str) -> None:
    from tracker.diagnosis import EXPLANATIONS, SUGGESTIONS

    assert EXPLANATIONS[code].endswith(".") and SUGGESTIONS[code].endswith(".")


def test_api_returns_the_same_findings_as_the_library(  # type: ignore[no-untyped-def]
    client, demo_store: Path, demo_runs: dict[str, str]
) -> None:
    sick = client.get(f"/api/v1/runs/{demo_runs['sick']}/diagnosis").get_json()
    with tracker.open_run(demo_runs["sick"], store=demo_store) as r:
        findings = diagnose(r)
    expected = [f.to_dict() for f in findings]
    assert sick["findings"] == expected and sick["summary"] == summary(findings)
    assert {"code", "layer", "first_step", "explanation", "suggestion"} <= set(expected[0])
    healthy = client.get(f"/api/v1/runs/{demo_runs['healthy']}/diagnosis").get_json()
    assert healthy == {"run_id": demo_runs["healthy"], "summary": "ok", "findings": []}
    assert client.get("/api/v1/runs/0123456789abcdef/diagnosis").status_code == 404


def test_cli_prints_findings_and_fails_on_request(demo_store: Path) -> None:
    import json

    from click.testing import CliRunner

    from tracker.cli import main

    runner = CliRunner()
    text = runner.invoke(main, ["diagnose", "sick", "--store", str(demo_store)])
    assert text.exit_code == 0, text.output
    assert "dead_relu" in text.output and "relu3" in text.output and "try:" in text.output
    as_json = runner.invoke(main, ["diagnose", "sick", "--store", str(demo_store), "--json"])
    assert json.loads(as_json.output)["summary"] in {"error", "warning"}
    failing = ["diagnose", "sick", "--store", str(demo_store), "--fail-on", "warning"]
    assert runner.invoke(main, failing).exit_code == 1
    healthy = ["diagnose", "healthy", "--store", str(demo_store), "--fail-on", "warning"]
    result = runner.invoke(main, healthy)
    assert result.exit_code == 0 and ": ok" in result.output


def test_api_diagnoses_a_run_once_until_its_files_change(  # type: ignore[no-untyped-def]
    client, demo_runs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from api import diagnosis as route

    calls = []
    real = route.diagnose
    monkeypatch.setattr(route, "diagnose", lambda r: calls.append(r.id) or real(r))
    route._cache.clear()
    url = f"/api/v1/runs/{demo_runs['sick']}/diagnosis"
    first = client.get(url).get_json()
    assert client.get(url).get_json() == first and calls == [demo_runs["sick"]]
    route._cache.clear()  # what a new segment does: another key
    assert client.get(url).get_json() == first and len(calls) == 2
