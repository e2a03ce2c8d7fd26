"""Alerts while training: cheap detectors over each step's summaries, on the stats worker.

They see one step at a time (no history in the store), so they only fire on unmistakable
problems, and each fires once per layer: NaN/Inf at once; dead ReLUs, saturation and a zero
gradient after ``patience`` consecutive recorded steps; a gradient norm above EXPLODE at once.
Findings reach the training thread at its next run.log(), which warns, raises or calls back.
"""

from __future__ import annotations

import threading
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from tracker.capture.block import StepBlock
from tracker.capture.step import PROBE
from tracker.diagnosis import DEAD_ERROR, EXPLODE, Finding
from tracker.errors import InvalidArgumentError, TrackerError
from tracker.names import STAT_INDEX

OnProblem = Callable[[Finding], Any] | str | None
SATURATED_ALERT = 0.9
_NAN, _INF = STAT_INDEX["nan_count"], STAT_INDEX["inf_count"]


class ProblemDetectedError(TrackerError):
    """Raised by run.log() when a watch with on_problem="raise" sees a problem."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"{finding.message}. {finding.suggestion}")
        self.finding = finding


class ProblemWarning(UserWarning):
    """Warned by run.log() when a watch with on_problem="warn" sees a problem."""


def check_on_problem(on_problem: OnProblem) -> OnProblem:
    """None, "warn", "raise", or a callable taking a Finding."""
    if on_problem is None or on_problem in ("warn", "raise") or callable(on_problem):
        return on_problem
    raise InvalidArgumentError(
        f"on_problem must be None, 'warn', 'raise' or a callable(finding); got {on_problem!r}"
    )


class ProblemWatcher:
    """Online detectors for one watch; observe() on the worker, deliver() on the training side."""

    def __init__(self, kinds: dict[str, str | None], on_problem: OnProblem, patience: int = 5):
        self._kinds = kinds  # layer name -> activation kind, in model order
        self._depth = {layer: i for i, layer in enumerate(kinds)}
        # id(block.keys) -> (keys, rows, streak rows); keys kept so a reused id cannot match
        self._rows: dict[int, tuple[tuple, np.ndarray, list[int]]] = {}
        self._on_problem = on_problem
        self._patience = patience
        self._streaks: dict[tuple[str, str], int] = {}
        self._fired: set[tuple[str, str | None]] = set()
        self._pending: deque[Finding] = deque()
        self._lock = threading.Lock()

    def observe(self, step: int, blocks: list[StepBlock]) -> None:
        """Update the detectors with one step's summaries (training calls only)."""
        checks = []
        for block in blocks:
            rows, streaks = self._rows_to_check(block)
            bad = rows[block.stats[rows, _NAN] + block.stats[rows, _INF] > 0]
            for i in sorted(set(bad.tolist()).union(streaks)) if len(bad) else streaks:
                checks.append((self._pass_order(*block.keys[i][:2]), block, i))
        checks.sort(key=lambda c: c[0])  # fire in the order the step computed them
        for _, block, i in checks:
            self._check(step, block.keys[i], block.stats[i])

    def _rows_to_check(self, block: StepBlock) -> tuple[np.ndarray, list[int]]:
        """Rows of the training pass (first call, not the probe), and among them those a streak
        detector must see every step. Worked out once per layout: most steps share one."""
        cached = self._rows.get(id(block.keys))
        if cached is not None and cached[0] is block.keys:
            return cached[1], cached[2]
        rows = np.flatnonzero((block.flags & PROBE == 0) & (block.calls == 0))
        streaks = [int(i) for i in rows if self._has_streak(*block.keys[i])]
        if len(self._rows) >= 64:
            self._rows.clear()
        self._rows[id(block.keys)] = (block.keys, rows, streaks)
        return rows, streaks

    def _has_streak(self, layer: str, quantity: str, part: str) -> bool:
        if quantity == "activation":
            return self._kinds.get(layer) in ("relu", "sigmoid", "tanh")
        return quantity == "weight_grad" and part == "weight"

    def _check(self, step: int, key: tuple[str, str, str], row: np.ndarray) -> None:
        layer, quantity, part = key
        if row[_NAN] + row[_INF] > 0:
            self._fire(
                step, "nan_inf", layer, quantity, f"NaN/Inf in {layer} ({quantity}) at step {step}"
            )
        if quantity == "activation":
            kind = self._kinds.get(layer)
            if kind == "relu":
                dead = row[STAT_INDEX["dead_frac"]]
                self._streak(
                    step,
                    "dead_relu",
                    layer,
                    quantity,
                    dead >= DEAD_ERROR,
                    f"{dead:.0%} of {layer}'s units dead",
                )
            elif kind in ("sigmoid", "tanh"):
                saturated = row[STAT_INDEX["saturated_frac"]]
                self._streak(
                    step,
                    "saturated",
                    layer,
                    quantity,
                    saturated >= SATURATED_ALERT,
                    f"{saturated:.0%} of {layer}'s outputs saturated",
                )
        elif quantity == "weight_grad" and part == "weight":
            norm = row[STAT_INDEX["norm"]]
            if np.isfinite(norm) and norm > EXPLODE:
                self._fire(
                    step,
                    "exploding_gradient",
                    layer,
                    quantity,
                    f"{layer}'s gradient norm is {norm:.3g}",
                )
            self._streak(
                step,
                "no_gradient",
                layer,
                quantity,
                norm == 0,
                f"{layer} gets exactly zero gradient",
            )

    def _pass_order(self, layer: str, quantity: str) -> tuple[int, int]:
        """The order a training step computes things: forward, then backward, then the update."""
        depth = self._depth.get(layer, 0)
        if quantity == "activation":
            return 0, depth
        if quantity in ("activation_grad", "weight_grad"):
            return 1, -depth
        return 2, depth

    def deliver(self) -> None:
        """On the training thread: act on findings made since the last call."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                finding = self._pending.popleft()
            if self._on_problem == "raise":
                raise ProblemDetectedError(finding)
            if self._on_problem == "warn":
                warnings.warn(
                    f"tracker: {finding.message}. {finding.suggestion}",
                    ProblemWarning,
                    stacklevel=3,
                )
            elif callable(self._on_problem):
                self._on_problem(finding)

    def _streak(
        self, step: int, code: str, layer: str, quantity: str, bad: bool, message: str
    ) -> None:
        key = (code, layer)
        count = self._streaks.get(key, 0) + 1 if bad else 0
        self._streaks[key] = count
        if count >= self._patience:
            self._fire(
                step - self._patience + 1,
                code,
                layer,
                quantity,
                f"{message} for {count} steps",
                step,
            )

    def _fire(
        self, start: int, code: str, layer: str, quantity: str, message: str, end: int | None = None
    ) -> None:
        if (code, layer) in self._fired:
            return
        self._fired.add((code, layer))
        severity = "warning" if code == "saturated" else "error"
        finding = Finding(
            code, severity, layer, quantity, start, start if end is None else end, message
        )
        with self._lock:
            self._pending.append(finding)
