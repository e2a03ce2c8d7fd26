"""Health flags: pure functions over stats rows that name trouble a user can see in a layer.

Thresholds are deliberately coarse (a flag is a prompt to look, not a verdict) and documented in
FLAG_HELP, which the UI shows next to each flag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tracker.names import STAT_INDEX

DEAD_FRACTION = 0.5  # half of a ReLU layer's units never fired in the batch
SATURATED_FRACTION = 0.5  # half of a sigmoid/tanh layer's outputs within 1% of the bounds
VANISHING_RATIO = 1e-3  # a layer's gradient norm is below 1/1000 of the largest layer's
EXPLODING_NORM = 1e3  # a gradient norm above this (per layer) usually means divergence
TINY_UPDATE = 1e-7  # weight_grad norm / weight norm: this layer's weights barely move

FLAG_HELP: dict[str, str] = {
    "nan_inf": "NaN or Inf values appeared: training has diverged or a value overflowed.",
    "dead_relu": (
        f"More than {DEAD_FRACTION:.0%} of this ReLU layer's units output 0 for every sample in "
        "the batch; they get no gradient and stop learning (often a too-large learning rate)."
    ),
    "saturated": (
        f"More than {SATURATED_FRACTION:.0%} of outputs sit at the flat ends of the sigmoid/tanh, "
        "where the gradient is near 0 (inputs too large; try normalisation or ReLU)."
    ),
    "vanishing_gradient": (
        "This layer's gradient is over 1000x smaller than the largest layer's: "
        "its weights learn far more slowly than the rest of the network."
    ),
    "exploding_gradient": (
        f"Gradient norm above {EXPLODING_NORM:g}: updates are huge and training may diverge "
        "(lower the learning rate or clip gradients)."
    ),
    "tiny_update": "The gradient is negligible next to the weights: the layer stopped changing.",
}


@dataclass(frozen=True)
class Flag:
    """One problem seen in one layer."""

    code: str
    severity: str  # "error" | "warning"
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "help": FLAG_HELP[self.code]}


def _stat(row: np.ndarray | None, name: str) -> float:
    if row is None:
        return math.nan
    return float(row[STAT_INDEX[name]])


def layer_flags(
    latest: Mapping[str, np.ndarray | None],
    kind: str | None,
    max_grad_norm: float | None = None,
) -> list[Flag]:
    """Flags for one layer from its latest stats row per quantity (main part / weight param).

    ``max_grad_norm`` is the largest weight_grad norm among all layers at the same time, used to
    spot gradients that vanish towards some layers.
    """
    flags: list[Flag] = []
    bad = [q for q, row in latest.items() if _stat(row, "nan_count") + _stat(row, "inf_count") > 0]
    if bad:
        flags.append(Flag("nan_inf", "error", f"NaN/Inf in {', '.join(sorted(bad))}"))
    act = latest.get("activation")
    dead = _stat(act, "dead_frac")
    if kind == "relu" and dead >= DEAD_FRACTION:
        flags.append(
            Flag("dead_relu", "error" if dead >= 0.9 else "warning", f"{dead:.0%} of units dead")
        )
    saturated = _stat(act, "saturated_frac")
    if saturated >= SATURATED_FRACTION:
        flags.append(Flag("saturated", "warning", f"{saturated:.0%} of outputs saturated"))
    grad_norm = _stat(latest.get("weight_grad"), "norm")
    if grad_norm > EXPLODING_NORM:
        flags.append(Flag("exploding_gradient", "error", f"gradient norm {grad_norm:.3g}"))
    elif (
        max_grad_norm is not None
        and max_grad_norm > 0
        and math.isfinite(grad_norm)
        and grad_norm < VANISHING_RATIO * max_grad_norm
    ):
        flags.append(
            Flag(
                "vanishing_gradient",
                "warning",
                f"gradient norm {grad_norm:.2g} vs {max_grad_norm:.2g} max",
            )
        )
    weight_norm = _stat(latest.get("weight"), "norm")
    if (
        math.isfinite(grad_norm)
        and weight_norm > 0
        and grad_norm / weight_norm < TINY_UPDATE
        and not any(f.code == "vanishing_gradient" for f in flags)
    ):
        flags.append(
            Flag("tiny_update", "warning", f"|grad|/|weight| = {grad_norm / weight_norm:.1e}")
        )
    return flags


# Counters that mean the run recorded less than it was asked to, or hit an error while tracking.
_TROUBLE = (
    "dropped",
    "lost",
    "torn",
    "error while",
    "unregistered",
    "finish_timeout",
    "params_wait",
)


def is_degraded(counters: Mapping[str, int]) -> bool:
    """True when a run's tracking counters show errors or lost data (training itself went on)."""
    return any(v and k.startswith(_TROUBLE) for k, v in counters.items())


def run_health(flags_by_layer: Mapping[str, list[Flag]]) -> str:
    """'error', 'warning' or 'ok' for a whole run: the worst flag of any layer."""
    severities = {f.severity for flags in flags_by_layer.values() for f in flags}
    if "error" in severities:
        return "error"
    return "warning" if severities else "ok"
