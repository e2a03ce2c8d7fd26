"""Health flags from stats rows: each fires on the trouble it names, not on healthy rows."""

from __future__ import annotations

import numpy as np

from tracker.health import FLAG_HELP, layer_flags, run_health
from tracker.names import STAT_INDEX, STAT_NAMES


def _row(**stats: float) -> np.ndarray:
    row = np.full(len(STAT_NAMES), np.nan)
    row[STAT_INDEX["nan_count"]] = 0
    row[STAT_INDEX["inf_count"]] = 0
    for name, value in stats.items():
        row[STAT_INDEX[name]] = value
    return row


def _codes(**kwargs) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.code for f in layer_flags(**kwargs)]


def test_healthy_layer_has_no_flags() -> None:
    latest = {
        "activation": _row(dead_frac=0.1),
        "weight": _row(norm=3.0),
        "weight_grad": _row(norm=0.1),
    }
    assert _codes(latest=latest, kind="relu", max_grad_norm=0.2) == []


def test_each_flag() -> None:
    assert _codes(latest={"activation": _row(nan_count=2)}, kind=None) == ["nan_inf"]
    assert _codes(latest={"activation": _row(dead_frac=0.95)}, kind="relu") == ["dead_relu"]
    assert _codes(latest={"activation": _row(saturated_frac=0.8)}, kind="sigmoid") == ["saturated"]
    assert _codes(latest={"weight_grad": _row(norm=5e3)}, kind=None) == ["exploding_gradient"]
    assert _codes(latest={"weight_grad": _row(norm=1e-6)}, kind=None, max_grad_norm=1.0) == [
        "vanishing_gradient"
    ]
    tiny = {"weight": _row(norm=100.0), "weight_grad": _row(norm=1e-9)}
    assert _codes(latest=tiny, kind=None) == ["tiny_update"]
    assert set(FLAG_HELP) == {
        "nan_inf",
        "dead_relu",
        "saturated",
        "vanishing_gradient",
        "exploding_gradient",
        "tiny_update",
    }


def test_run_health_is_the_worst_flag() -> None:
    dead = layer_flags({"activation": _row(dead_frac=0.95)}, "relu")
    sat = layer_flags({"activation": _row(saturated_frac=0.6)}, "tanh")
    assert run_health({"a": [], "b": []}) == "ok"
    assert run_health({"a": sat}) == "warning"
    assert run_health({"a": sat, "b": dead}) == "error"


def test_degraded_means_errors_or_lost_data() -> None:
    from tracker.health import is_degraded

    assert not is_degraded({"segments": 3})
    assert is_degraded({"segments": 3, "dropped_steps": 1})
    assert is_degraded({"error while writing a segment file": 2})
    assert not is_degraded({"dropped_steps": 0})
