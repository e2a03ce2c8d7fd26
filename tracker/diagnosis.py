"""Diagnosis: which layer went wrong, since when, the evidence, and what to try.

Pure functions over a run's stored stats (through the reader). Each detector looks at the whole
recorded history of a layer, finds the step from which a condition held until the end (the
problem's start), and reports it with the numbers that show it. The thresholds are coarse on
purpose: a finding is a prompt to look at the layer explorer, not a verdict.

A unit is "dead" in a batch when it is never positive for any sample of that batch; a layer
whose per-batch dead fraction stays >= 50% over a window has units that are inactive for
(nearly) every input, the state in which ReLUs receive no gradient and cannot recover.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from tracker.errors import NotFoundError
from tracker.names import STAT_INDEX

DEAD = 0.5  # median per-batch dead fraction over the window
DEAD_ERROR = 0.9
SATURATED = 0.5  # median fraction of sigmoid/tanh outputs within 1% of the bounds
VANISH_DEPTH = 1e-3  # a layer's gradient norm vs the largest layer's, in the same window
VANISH_TIME = 1e-3  # a layer's gradient norm now vs at the start of training
EXPLODE = 1e3  # gradient norm
UPDATE_LOW, UPDATE_HIGH = 1e-5, 1e-1  # lr*|g|/|w|; ~1e-3 is the classic healthy value
BN_DRIFT = 0.2  # relative change of BatchNorm running statistics over the last window
MIN_STEPS = 5  # fewer recorded steps than this are too few to judge a trend

SUGGESTIONS = {
    "nan_inf": "Lower the learning rate, clip gradients, or look for log(0), x/0 or overflow in "
    "the layer named; under AMP use a GradScaler.",
    "dead_relu": "Lower the learning rate, use LeakyReLU/GELU, or check the initialisation "
    "(Kaiming for ReLU) and input scaling.",
    "saturated": "Normalise the inputs (BatchNorm/LayerNorm), shrink the initial weights, or "
    "use ReLU-family activations.",
    "no_gradient": "Nothing reaches this layer: dead ReLUs after it, a detach(), or a frozen "
    "path; fix what is upstream in the backward pass first.",
    "vanishing_gradient": "Add residual connections or normalisation, use ReLU-family "
    "activations, or a better initialisation; a larger learning rate will not fix the ratio.",
    "exploding_gradient": "Lower the learning rate, clip gradients (clip_grad_norm_), or add "
    "normalisation.",
    "update_ratio_low": "Weights barely move: raise the learning rate (or check the optimizer "
    "covers these parameters).",
    "update_ratio_high": "Each step changes the weights by a large fraction: lower the learning "
    "rate or warm it up.",
    "bn_drift": "BatchNorm running statistics are still moving: eval-mode outputs differ from "
    "training; train longer at a lower learning rate or raise BatchNorm momentum.",
}

EXPLANATIONS = {
    "nan_inf": "NaN/Inf first appeared here; everything computed from it is garbage.",
    "dead_relu": "ReLU units that output 0 for every input get no gradient and stop learning.",
    "saturated": "Outputs stuck at the flat ends of sigmoid/tanh pass almost no gradient back.",
    "no_gradient": "The gradient reaching this layer's weights is exactly zero.",
    "vanishing_gradient": "This layer's gradient is tiny next to the others' (or to its own at "
    "the start), so it learns far more slowly.",
    "exploding_gradient": "Gradient norms this large make updates overshoot; training diverges.",
    "update_ratio_low": "lr·|grad|/|weight| is far below ~1e-3: the weights hardly change.",
    "update_ratio_high": "lr·|grad|/|weight| is far above ~1e-3: each step rewrites the weights.",
    "bn_drift": "BatchNorm's running mean/variance kept changing late in training.",
}


@dataclass(frozen=True)
class Finding:
    """One problem in one layer (or the whole run) over a step range."""

    code: str
    severity: str  # "error" | "warning"
    layer: str | None
    quantity: str | None
    first_step: int
    last_step: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def explanation(self) -> str:
        return EXPLANATIONS[self.code]

    @property
    def suggestion(self) -> str:
        return SUGGESTIONS[self.code]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "explanation": self.explanation, "suggestion": self.suggestion}


class _Reader(Protocol):
    @property
    def config(self) -> dict[str, Any]: ...

    def layers(self) -> list[str]: ...
    def layer_info(self, layer: str) -> Any: ...
    def parts(self, layer: str, quantity: str) -> list[str]: ...
    def stats(
        self, layer: str, quantity: str, param: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def metrics(self, name: str) -> tuple[np.ndarray, np.ndarray]: ...


def learning_rate(config: dict[str, Any]) -> float | None:
    """The learning rate from a run's config ("lr" or "learning_rate", top level or "optimizer")."""
    for scope in (
        config,
        config.get("optimizer") if isinstance(config.get("optimizer"), dict) else {},
    ):
        for key in ("lr", "learning_rate"):
            value = scope.get(key) if isinstance(scope, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                return float(value)
    return None


def window(n: int) -> int:
    """Rows in the trailing window: the last 10% of the recorded steps, at least MIN_STEPS."""
    return max(MIN_STEPS, n // 10)


def onset(steps: np.ndarray, holds: np.ndarray) -> int | None:
    """First step of the trailing run of steps where ``holds`` is true (None if the last isn't)."""
    if not len(holds) or not holds[-1]:
        return None
    broken = np.flatnonzero(~holds)
    return int(steps[broken[-1] + 1]) if broken.size else int(steps[0])


def _column(rows: np.ndarray, stat: str) -> np.ndarray:
    return rows[:, STAT_INDEX[stat]]


def _safe_stats(
    reader: _Reader, layer: str, quantity: str, param: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    try:
        return reader.stats(layer, quantity, param)
    except NotFoundError:
        return np.empty(0, dtype=np.int64), np.empty((0, len(STAT_INDEX)))


def diagnose(reader: _Reader) -> list[Finding]:
    """Every finding for a run, most severe and earliest first."""
    layers = reader.layers()
    kinds = {name: reader.layer_info(name) for name in layers}
    findings: list[Finding] = []
    findings += _nan_inf(reader, layers)
    grads: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in layers:
        info = kinds[name]
        if info["kind"] == "relu":
            findings += _dead(reader, name)
        if info["kind"] in ("sigmoid", "tanh"):
            findings += _saturated(reader, name)
        if "weight" in (info.get("params") or {}):
            steps, rows = _safe_stats(reader, name, "weight_grad", "weight")
            if len(steps):
                grads[name] = (steps, _column(rows, "norm"))
            wsteps, wrows = _safe_stats(reader, name, "weight", "weight")
            if len(wsteps):
                weights[name] = (wsteps, _column(wrows, "norm"))
        if info["type"].startswith("BatchNorm") and "running_var" in (info.get("params") or {}):
            findings += _bn_drift(reader, name)
    findings += _gradients(grads)
    findings += _update_ratio(grads, weights, learning_rate(reader.config))
    order = {"error": 0, "warning": 1}
    return sorted(
        findings,
        key=lambda f: (
            order[f.severity],
            f.first_step,
            layers.index(f.layer) if f.layer in layers else -1,
        ),
    )


def _nan_inf(reader: _Reader, layers: list[str]) -> list[Finding]:
    """The first step and layer where NaN or Inf appeared, in the order the pass computes them."""
    # Forward in layer order, then backward (activation grads and weight grads) in reverse.
    passes = [(name, "activation") for name in layers]
    passes += [(name, q) for name in reversed(layers) for q in ("activation_grad", "weight_grad")]
    passes += [(name, "weight") for name in layers]
    first: tuple[int, int, str, str, str] | None = None
    for rank, (name, quantity) in enumerate(passes):
        try:
            parts = reader.parts(name, quantity)
        except NotFoundError:
            continue
        for part in parts:
            steps, rows = _safe_stats(reader, name, quantity, part)
            bad = np.flatnonzero((_column(rows, "nan_count") + _column(rows, "inf_count")) > 0)
            if bad.size:
                candidate = (int(steps[bad[0]]), rank, name, quantity, part)
                if first is None or candidate[:2] < first[:2]:
                    first = candidate
    if first is None:
        return []
    step, _, name, quantity, part = first
    what = quantity if part in ("output", "weight") else f"{quantity} {part}"
    return [
        Finding(
            "nan_inf",
            "error",
            name,
            quantity,
            step,
            step,
            f"NaN/Inf first appeared in {name} ({what}) at step {step}",
            {"part": part},
        )
    ]


def _trailing(steps: np.ndarray, values: np.ndarray, threshold: float) -> tuple[int, float] | None:
    """(onset, window median) if the trailing window's median is >= threshold."""
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if len(values) < MIN_STEPS:
        return None
    median = float(np.median(values[-window(len(values)) :]))
    if median < threshold:
        return None
    start = onset(steps, values >= threshold)
    return (start if start is not None else int(steps[-window(len(values))])), median


def _dead(reader: _Reader, name: str) -> list[Finding]:
    steps, rows = _safe_stats(reader, name, "activation")
    hit = _trailing(steps, _column(rows, "dead_frac"), DEAD)
    if hit is None:
        return []
    start, median = hit
    severity = "error" if median >= DEAD_ERROR else "warning"
    return [
        Finding(
            "dead_relu",
            severity,
            name,
            "activation",
            start,
            int(steps[-1]),
            f"{median:.0%} of {name}'s units never fire, since step {start}",
            {"dead_frac_median": median, "window_steps": window(len(steps))},
        )
    ]


def _saturated(reader: _Reader, name: str) -> list[Finding]:
    steps, rows = _safe_stats(reader, name, "activation")
    hit = _trailing(steps, _column(rows, "saturated_frac"), SATURATED)
    if hit is None:
        return []
    start, median = hit
    return [
        Finding(
            "saturated",
            "warning",
            name,
            "activation",
            start,
            int(steps[-1]),
            f"{median:.0%} of {name}'s outputs sit at the flat ends, since step {start}",
            {"saturated_frac_median": median},
        )
    ]


def _gradients(grads: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[Finding]:
    """No, vanishing (across depth and over time) and exploding weight gradients."""
    findings: list[Finding] = []
    recent: dict[str, float] = {}
    for name, (steps, norms) in grads.items():
        finite = np.isfinite(norms)
        if finite.sum() < MIN_STEPS:
            continue
        s, g = steps[finite], norms[finite]
        tail = g[-window(len(g)) :]
        recent[name] = float(np.median(tail))
        zero_since = onset(s, g == 0)
        if zero_since is not None and (g[-window(len(g)) :] == 0).all():
            findings.append(
                Finding(
                    "no_gradient",
                    "error",
                    name,
                    "weight_grad",
                    zero_since,
                    int(s[-1]),
                    f"{name} has received exactly zero gradient since step {zero_since}",
                    {"grad_norm_before": float(g[np.flatnonzero(g)[-1]]) if g.any() else 0.0},
                )
            )
            continue
        top = float(np.max(tail))
        if top > EXPLODE:
            start = onset(s, g > EXPLODE) or int(s[-1])
            findings.append(
                Finding(
                    "exploding_gradient",
                    "error",
                    name,
                    "weight_grad",
                    start,
                    int(s[-1]),
                    f"{name}'s gradient norm reached {top:.3g}",
                    {"grad_norm_max": top},
                )
            )
            continue
        early = float(np.median(g[: window(len(g))]))
        if (
            early > 0
            and recent[name] > 0
            and recent[name] < VANISH_TIME * early
            and len(g) >= 2 * MIN_STEPS
        ):
            findings.append(
                Finding(
                    "vanishing_gradient",
                    "warning",
                    name,
                    "weight_grad",
                    int(s[-window(len(g))]),
                    int(s[-1]),
                    f"{name}'s gradient norm fell {early / recent[name]:.0f}x since the start "
                    f"({early:.2g} to {recent[name]:.2g})",
                    {"early": early, "recent": recent[name]},
                )
            )
    live = {n: v for n, v in recent.items() if v > 0 and math.isfinite(v)}
    if len(live) >= 2:
        largest = max(live.values())
        flagged = {f.layer for f in findings}
        for name, value in live.items():
            if value < VANISH_DEPTH * largest and name not in flagged:
                steps = grads[name][0]
                findings.append(
                    Finding(
                        "vanishing_gradient",
                        "warning",
                        name,
                        "weight_grad",
                        int(steps[-window(len(steps))]),
                        int(steps[-1]),
                        f"{name}'s gradient norm is {largest / value:.0f}x smaller than the "
                        "largest layer's",
                        {"grad_norm": value, "largest_grad_norm": largest},
                    )
                )
    return findings


def _update_ratio(
    grads: dict[str, tuple[np.ndarray, np.ndarray]],
    weights: dict[str, tuple[np.ndarray, np.ndarray]],
    lr: float | None,
) -> list[Finding]:
    """lr*|g|/|w| per layer: the fraction by which one plain SGD step moves the weights."""
    if lr is None:
        return []
    findings = []
    for name, (steps, g) in grads.items():
        if name not in weights:
            continue
        wsteps, w = weights[name]
        common, gi, wi = np.intersect1d(steps, wsteps, return_indices=True)
        ratio = lr * g[gi] / np.where(w[wi] > 0, w[wi], np.nan)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        if len(ratio) < MIN_STEPS:
            continue
        median = float(np.median(ratio[-window(len(ratio)) :]))
        code = (
            "update_ratio_low"
            if median < UPDATE_LOW
            else "update_ratio_high"
            if median > UPDATE_HIGH
            else None
        )
        if code is None:
            continue
        findings.append(
            Finding(
                code,
                "warning" if code == "update_ratio_low" else "error",
                name,
                "weight",
                int(common[-window(len(common))]),
                int(common[-1]),
                f"{name}: lr·|grad|/|weight| = {median:.1e} (healthy is around 1e-3)",
                {"update_ratio": median, "lr": lr},
            )
        )
    return findings


def _bn_drift(reader: _Reader, name: str) -> list[Finding]:
    """Relative change of the running variance's mean over the last window."""
    steps, rows = _safe_stats(reader, name, "weight", "running_var")
    means = _column(rows, "mean")
    if len(means) < 2 * MIN_STEPS:
        return []
    w = window(len(means))
    before, after = float(means[-w - 1]), float(means[-1])
    if before <= 0 or not math.isfinite(after):
        return []
    change = abs(after - before) / before
    if change < BN_DRIFT:
        return []
    return [
        Finding(
            "bn_drift",
            "warning",
            name,
            "weight",
            int(steps[-w - 1]),
            int(steps[-1]),
            f"{name}'s running variance changed {change:.0%} over the last {w} recorded steps",
            {"relative_change": change},
        )
    ]


def summary(findings: Iterable[Finding]) -> str:
    """'error', 'warning' or 'ok': the worst finding."""
    severities = {f.severity for f in findings}
    return "error" if "error" in severities else "warning" if severities else "ok"
