"""Gradient flow: GET /api/v1/runs/<id>/flow, every layer's gradient size by depth and time.

For each layer with parameters (in model order): the weight gradient's L2 norm |g| and the ratio
|g|/|w| to the weight's norm, as a layers x buckets matrix over the run (``points`` buckets of
equal step span, each the mean of its steps) and as one mean per epoch. |g|/|w| stands in for the
size of an update relative to the weights; with plain SGD an update is lr * g, so when the config
has ``lr`` the route also returns it and the UI labels lr * |g|/|w| "update/weight" (momentum and
Adam make that an approximation, which the UI says).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint

from api.aligned import epoch_means
from api.params import POINTS, PROBE, query
from api.query import bool_arg, points_arg
from api.store import finite_or_none, get_reader
from tracker.downsample import grid_of, on_grid
from tracker.errors import NotFoundError

bp = Blueprint("flow", __name__)
DEFAULT_POINTS = 400
LR_KEYS = ("lr", "learning_rate")


def learning_rate(config: dict[str, Any]) -> float | None:
    """The run's learning rate from its config, if it logged a positive number as lr."""
    for key in LR_KEYS:
        value = config.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _ratio(
    g_steps: np.ndarray, g: np.ndarray, w_steps: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """|g|/|w| at the steps both were recorded (NaN where the weight norm is 0)."""
    if not np.array_equal(g_steps, w_steps):  # usually both are recorded at every step
        g_steps, gi, wi = np.intersect1d(g_steps, w_steps, return_indices=True)
        g, w = g[gi], w[wi]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(w > 0, g / w, np.nan)
    return g_steps, ratio


@bp.get("/runs/<run_id>/flow")
@query(POINTS, PROBE)
def get(run_id: str) -> dict[str, Any]:
    """Weight-gradient norms and gradient/weight ratios of every layer, over steps and epochs."""
    points = points_arg() or DEFAULT_POINTS
    probe = bool_arg("probe")
    reader = get_reader(run_id)
    epochs = reader.epochs()
    found = []
    for name in reader.layers():
        params = reader.parts(name, "weight_grad")
        if not params:
            continue  # ReLU, pooling, ...: nothing to learn, no gradient to flow into
        param = "weight" if "weight" in params else params[0]
        try:
            g_steps, g = reader.series(name, "weight_grad", "norm", param, None, probe)
            w_steps, w = reader.series(name, "weight", "norm", param, None, probe)
        except NotFoundError:
            continue
        found.append((name, param, g_steps, g, *_ratio(g_steps, g, w_steps, w)))
    grid = grid_of([f[2] for f in found], points)
    grad, ratio, epoch_grad, epoch_ratio = [], [], [], []
    for _, _, g_steps, g, r_steps, r in found:
        grad.append(on_grid(g_steps, g, grid))
        ratio.append(on_grid(r_steps, r, grid))
        epoch_grad.append(_per_epoch(g_steps, g, epochs))
        epoch_ratio.append(_per_epoch(r_steps, r, epochs))
    return finite_or_none(
        {
            "run": reader.id,
            "layers": [{"name": f[0], "param": f[1]} for f in found],
            "lr": learning_rate(reader.config),
            "probe": probe,
            "steps": grid.starts(),
            "bucket": grid.width,
            "grad_norm": _sig(grad),
            "ratio": _sig(ratio),
            "epochs": [{"epoch": e, "first_step": a, "last_step": b} for e, a, b in epochs],
            "epoch_grad_norm": _sig(epoch_grad),
            "epoch_ratio": _sig(epoch_ratio),
        }
    )


def _per_epoch(steps: np.ndarray, values: np.ndarray, epochs: list[tuple[int, int, int]]) -> Any:
    """The mean over each epoch's steps, for every logged epoch (NaN where none)."""
    numbers, means = epoch_means(steps, values, epochs)
    out = np.full(len(epochs), np.nan)
    index = {e: i for i, (e, _, _) in enumerate(epochs)}
    for n, m in zip(numbers.tolist(), means.tolist(), strict=True):
        out[index[n]] = m
    return out


def _sig(rows: list[np.ndarray]) -> Any:
    """Rows rounded to 4 significant digits: a colour or a log-axis point needs no more."""
    if not rows:
        return []
    m = np.asarray(rows, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        digits = np.where(m != 0, 3 - np.floor(np.log10(np.abs(m))), 0)
    scale = 10.0 ** np.nan_to_num(digits, nan=0, posinf=0, neginf=0)
    return np.round(m * scale) / scale
