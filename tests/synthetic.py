"""A deterministic synthetic run: every stored value is a function of its step, so any read can be
checked bit for bit against what was written, here and in the crash tests' child processes.

Each step records two layers; every 4th step adds an eval forward (call 1, no grad) and every 5th
a probe forward (call 2, PROBE); histograms every 3rd step, snapshots every 2nd (float32 and
bfloat16 bits), one metric per step, epochs of 10 steps.
"""

from __future__ import annotations

import time
import zlib

import numpy as np

from tracker.capture.block import StepBlock, Summary
from tracker.capture.engine import StepRecord
from tracker.capture.snapshot import Snapshot
from tracker.capture.step import GRAD_ENABLED, PROBE, TRAINING_MODE
from tracker.names import STAT_NAMES
from tracker.store import Store
from tracker.writer import Writer, WriterConfig

TRAIN = GRAD_ENABLED | TRAINING_MODE
KEYS = [
    ("fc", "activation", "output"),
    ("fc", "weight", "weight"),
    ("fc", "weight", "bias"),
    ("act", "activation", "output"),
]
LAYERS = [
    {
        "name": "fc",
        "position": 0,
        "type": "Linear",
        "kind": None,
        "params": {"weight": [4, 3], "bias": [4]},
    },
    {"name": "act", "position": 1, "type": "ReLU", "kind": "relu", "params": {}},
]
EPOCH_STEPS = 10


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(parts).encode()))


def calls(step: int, quantity: str) -> list[tuple[int, int]]:
    """(call, flags) of the rows recorded for one tensor at ``step``."""
    rows = [(0, TRAIN)]
    if quantity == "activation" and step % 4 == 0:
        rows.append((1, 0))  # an eval forward under no_grad
    if quantity == "activation" and step % 5 == 0:
        rows.append((2, PROBE | TRAINING_MODE))
    return rows


def stats_row(step: int, key: tuple[str, str, str], call: int) -> np.ndarray:
    return _rng("stats", step, key, call).standard_normal(len(STAT_NAMES))


def histogram(step: int, key: tuple[str, str, str], call: int) -> np.ndarray:
    counts = _rng("hist", step, key, call).integers(0, 50, 512)
    counts[counts < 40] = 0  # sparse, as real ones are
    return counts.astype(np.int64)


def snapshot(step: int, key: tuple[str, str, str], call: int) -> Snapshot:
    """float32 for fc, bfloat16 (stored as uint16 bits) for act."""
    values = _rng("snap", step, key, call).standard_normal((3, 4)).astype(np.float32)
    if key[0] == "act":
        bits = (values.view(np.uint32) >> 16).astype(np.uint16)
        return Snapshot(bits, "bfloat16", (5, 4))
    return Snapshot(values, "float32", (5, 4))


def loss(step: int) -> float:
    return float(_rng("loss", step).random())


def record(step: int) -> StepRecord:
    """What the capture engine would hand the writer for ``step``."""
    summaries = []
    for key in KEYS:
        for call, flags in calls(step, key[1]):
            summaries.append(
                Summary(
                    *key,
                    call,
                    flags,
                    stats_row(step, key, call),
                    histogram(step, key, call) if step % 3 == 0 else None,
                    snapshot(step, key, call) if step % 2 == 0 else None,
                )
            )
    shapes = {"fc": {"output": [5, 4]}, "act": {"output": [5, 4]}}
    return StepRecord(
        step,
        step // EPOCH_STEPS,
        time.time(),
        {"loss": loss(step)},
        [StepBlock.from_summaries(summaries)],
        shapes,
    )


def create_run(store: Store, run_id: str) -> None:
    store.catalog.create_run(run_id, "synthetic", run_id, {}, [], "host", 1, None)
    store.catalog.add_layers(run_id, LAYERS)


def write_steps(
    store: Store, run_id: str, steps: range, steps_per_segment: int = 7, **config: object
) -> Writer:
    """Write ``steps`` through a real Writer; returns it closed."""
    problems: list[tuple[str, BaseException]] = []
    writer = Writer(
        store,
        run_id,
        0,
        "test",
        lambda where, exc: problems.append((where, exc)),
        dict,
        WriterConfig(steps_per_segment=steps_per_segment, flush_seconds=3600, **config),
    )
    for step in steps:
        writer.put(record(step))
    assert writer.close(timeout=30)
    assert problems == [], problems
    return writer
