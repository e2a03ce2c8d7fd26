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

from tracker.capture.step import PROBE, Summary
from tracker.diagnosis import DEAD_ERROR, EXPLODE, Finding
from tracker.errors import InvalidArgumentError, TrackerError
from tracker.names import STAT_INDEX

OnProblem = Callable[[Finding], Any] | str | None
SATURATED_ALERT = 0.9


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
        self._on_problem = on_problem
        self._patience = patience
        self._streaks: dict[tuple[str, str], int] = {}
        self._fired: set[tuple[str, str | None]] = set()
        self._pending: deque[Finding] = deque()
        self._lock = threading.Lock()

    def observe(self, step: int, summaries: list[Summary]) -> None:
        """Update the detectors with one step's summaries (training calls only)."""
        for s in sorted(summaries, key=self._pass_order):
            if s.flags & PROBE or s.call != 0:
                continue
            row = s.stats
            if row[STAT_INDEX["nan_count"]] + row[STAT_INDEX["inf_count"]] > 0:
                self._fire(
                    step,
                    "nan_inf",
                    s.layer,
                    s.quantity,
                    f"NaN/Inf in {s.layer} ({s.quantity}) at step {step}",
                )
            if s.quantity == "activation":
                kind = self._kinds.get(s.layer)
                if kind == "relu":
                    self._streak(
                        step,
                        "dead_relu",
                        s,
                        row[STAT_INDEX["dead_frac"]] >= DEAD_ERROR,
                        f"{row[STAT_INDEX['dead_frac']]:.0%} of {s.layer}'s units dead",
                    )
                elif kind in ("sigmoid", "tanh"):
                    self._streak(
                        step,
                        "saturated",
                        s,
                        row[STAT_INDEX["saturated_frac"]] >= SATURATED_ALERT,
                        f"{row[STAT_INDEX['saturated_frac']]:.0%} of {s.layer}'s outputs saturated",
                    )
            elif s.quantity == "weight_grad" and s.part == "weight":
                norm = row[STAT_INDEX["norm"]]
                if np.isfinite(norm) and norm > EXPLODE:
                    self._fire(
                        step,
                        "exploding_gradient",
                        s.layer,
                        s.quantity,
                        f"{s.layer}'s gradient norm is {norm:.3g}",
                    )
                self._streak(
                    step, "no_gradient", s, norm == 0, f"{s.layer} gets exactly zero gradient"
                )

    def _pass_order(self, s: Summary) -> tuple[int, int]:
        """The order a training step computes things: forward, then backward, then the update."""
        depth = list(self._kinds).index(s.layer) if s.layer in self._kinds else 0
        if s.quantity == "activation":
            return 0, depth
        if s.quantity in ("activation_grad", "weight_grad"):
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

    def _streak(self, step: int, code: str, s: Summary, bad: bool, message: str) -> None:
        key = (code, s.layer)
        count = self._streaks.get(key, 0) + 1 if bad else 0
        self._streaks[key] = count
        if count >= self._patience:
            self._fire(
                step - self._patience + 1,
                code,
                s.layer,
                s.quantity,
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
