"""The web UI with a big run: time to the first plot of each page, in headless Chromium.

    python bench/ui.py [--layers 200] [--steps 100000] [--repeats 5] [--json out.json]

Generates (once, in ``--store``, default a temporary folder) a synthetic run of ``--layers``
layers (Linear + ReLU pairs) and ``--steps`` steps with stats of every quantity at every step,
histograms every 100 steps, snapshots every 5,000 (training batch and probe inputs), 1,000-step
epochs and a loss per step, written straight into the files compaction would have produced (one
stats file, snapshot files per 10 epochs) with the store's own writers, not by training. It also
trains the demo's two short runs for the comparison row. Then it serves the UI in a subprocess
(``tracker ui``, the one-process Flask server) and opens each page in a fresh browser context
(empty cache, so Plotly's 3.5 MB are fetched too) ``--repeats`` times; a page marks
``first-plot`` with ``performance.mark`` when its first Plotly chart has drawn, so the figure is
milliseconds from the start of navigation to that mark. Also reported: the page's API requests
until then and the bytes they returned.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tracker.capture.snapshot import Snapshot
from tracker.capture.step import GRAD_ENABLED, PROBE, TRAINING_MODE
from tracker.catalog import MetricRow
from tracker.names import STAT_INDEX, STAT_NAMES
from tracker.store import Store
from tracker.store import segment as seg
from tracker.store.backend import new_file_name, rank_folder
from tracker.store.compact import HISTOGRAM_COMPRESSION, STATS_COMPRESSION
from tracker.store.compacted import write_stats_file
from tracker.version import __version__

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RUN_ID = "0000000000b16b16"
WIDTH = 128  # units per Linear layer
EPOCH_STEPS = 1000
HIST_EVERY = 100
SNAPSHOT_EVERY = 5000
SNAPSHOT_EPOCHS = 10  # epochs per snapshots file
TRAIN = GRAD_ENABLED | TRAINING_MODE


def layer_names(n: int) -> list[tuple[str, str]]:
    """(name, kind) of ``n`` layers: fc, act, fc, act, ..."""
    return [(f"blocks.{i // 2}.{'fc' if i % 2 == 0 else 'act'}", "fc" if i % 2 == 0 else "act")
            for i in range(n)]  # fmt: skip


def series_keys(n_layers: int) -> list[tuple[str, str, str, int]]:
    """(layer, quantity, part, depth) of every series, in model order."""
    keys = []
    for depth, (name, kind) in enumerate(layer_names(n_layers)):
        keys.append((name, "activation", "output", depth))
        keys.append((name, "activation_grad", "output", depth))
        if kind == "fc":
            keys.append((name, "weight", "weight", depth))
            keys.append((name, "weight_grad", "weight", depth))
    return keys


def stats_rows(key: tuple[str, str, str, int], steps: np.ndarray, n_layers: int) -> np.ndarray:
    """Plausible stats (n, S): gradients shrink with depth from the loss and over training, one
    layer's gradient explodes for one step (a spike that downsampling must keep)."""
    layer, quantity, _, depth = key
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    t = steps / max(1, steps[-1])
    noise = rng.normal(0, 0.05, len(steps))
    rows = np.full((len(steps), len(STAT_NAMES)), np.nan)
    if quantity == "weight":
        scale = (8 + 2 * t) * (1 + 0.01 * noise)
    elif quantity == "weight_grad":
        scale = 10 ** (-1 - 1.5 * t - 3 * (1 - depth / n_layers) ** 2 + noise)
        if depth == n_layers // 5 * 2:
            scale[len(steps) * 3 // 4] = 1e4  # one exploding step
    elif quantity == "activation_grad":
        scale = 10 ** (-2 - 1.5 * t - 3 * (1 - depth / n_layers) ** 2 + noise)
    else:
        scale = 0.6 + 0.2 * np.sin(20 * t + depth) + 0.1 * noise
    count = 8 * WIDTH if quantity.startswith("activation") else WIDTH * WIDTH
    rows[:, STAT_INDEX["count"]] = count
    rows[:, STAT_INDEX["std"]] = scale / np.sqrt(count)
    rows[:, STAT_INDEX["norm"]] = scale
    rows[:, STAT_INDEX["mean"]] = 0.1 * scale / np.sqrt(count) * np.sin(7 * t)
    rows[:, STAT_INDEX["min"]] = -3 * scale / np.sqrt(count)
    rows[:, STAT_INDEX["max"]] = 3 * scale / np.sqrt(count)
    rows[:, STAT_INDEX["zero_frac"]] = 0.5 if layer.endswith("act") else 0.0
    rows[:, STAT_INDEX["nan_count"]] = rows[:, STAT_INDEX["inf_count"]] = 0
    if layer.endswith("act") and quantity == "activation":
        rows[:, STAT_INDEX["dead_frac"]] = np.clip(0.05 + 0.1 * t + noise / 10, 0, 1)
    return rows


class Gathered:
    """The rows of every series, made on demand: what write_stats_file reads from a
    StatsGatherer (series, take, select_default, latest), without gathering segment files."""

    def __init__(self, n_layers: int, steps: int, stats_every: int) -> None:
        self.n_layers = n_layers
        self.keys = series_keys(n_layers)
        self.steps = np.arange(0, steps, stats_every, dtype=np.int64)
        self.hist_steps = np.arange(0, steps, HIST_EVERY, dtype=np.int64)
        self._last: dict[tuple[str, str, str], tuple[int, np.ndarray]] = {}

    def series(self) -> list[tuple[str, str, str]]:
        return [k[:3] for k in self.keys]

    def take(self, key: tuple[str, str, str]) -> dict[str, np.ndarray]:
        full = next(k for k in self.keys if k[:3] == key)
        n, h = len(self.steps), len(self.hist_steps)
        index = np.stack([self.steps, np.zeros(n, np.int64), np.full(n, TRAIN)], axis=1)
        stats = stats_rows(full, self.steps, self.n_layers)
        self._last[key] = (int(self.steps[-1]), stats[-1].copy())
        # 48 non-empty binades around a centre that drifts down over training.
        centre = (250 - 20 * self.hist_steps / self.hist_steps[-1]).astype(np.int64)
        bins = (centre[:, None] + np.arange(-24, 24)[None, :]).astype(np.uint16)
        counts = 1 + (1000 * np.exp(-(np.arange(-24, 24) / 8.0) ** 2)).astype(np.int64)
        return {
            "index": index,
            "stats": stats,
            "hist_index": np.stack([self.hist_steps, np.zeros(h, np.int64), np.full(h, TRAIN)], 1),
            "hist_lengths": np.full(h, 48, np.int64),
            "hist_bins": bins.reshape(-1),
            "hist_counts": np.tile(counts, h),
        }

    def select_default(self, index: np.ndarray) -> np.ndarray:
        return np.arange(len(index))  # every row is a training forward: all are default rows

    def latest(self, key: tuple[str, str, str]) -> tuple[int, np.ndarray] | None:
        return self._last.get(key)


def _row(file_id: str, kind: str, lo: int, hi: int, n: int, stored: Any, path: str) -> dict:
    return {
        "id": file_id, "rank": 0, "kind": kind, "step_min": lo, "step_max": hi, "n_steps": n,
        "schema_version": seg.SCHEMA_VERSION, "path": path, "nbytes": stored.nbytes,
        "checksum": stored.checksum,
    }  # fmt: skip


def write_snapshot_files(store: Store, n_layers: int, steps: int) -> list[dict]:
    """Snapshots every SNAPSHOT_EVERY steps (activations also of 8 probe inputs), one file per
    SNAPSHOT_EPOCHS epochs, written with the segment module's snapshot writer."""
    rng = np.random.default_rng(1)
    span = SNAPSHOT_EPOCHS * EPOCH_STEPS
    rows = []
    for lo in range(0, steps, span):
        hi = min(steps, lo + span) - 1
        snap_steps = list(range(lo, hi + 1, SNAPSHOT_EVERY))
        file_id, name = new_file_name(lo, hi, "snapshots")
        relpath = f"{rank_folder(RUN_ID, 0)}/{name}"
        attrs = seg.root_attrs(seg.SNAPSHOTS, RUN_ID, 0, lo, hi, file_id, __version__)

        def write(path: str, snap_steps: list[int] = snap_steps, attrs: dict = attrs) -> None:
            import h5py

            from tracker.names import encode

            with h5py.File(path, "w", libver=("v110", "latest")) as f:
                f.attrs.update(attrs)
                series = f.create_group("series")
                for layer, quantity, part, _ in series_keys(n_layers):
                    g = series.require_group(encode(layer)).require_group(quantity)
                    g = g.create_group(encode(part))
                    shape = (8, WIDTH) if quantity.startswith("activation") else (WIDTH, WIDTH)
                    entries = []
                    for s in snap_steps:
                        data = rng.standard_normal(shape).astype(np.float32)
                        full = (64, WIDTH) if shape[0] == 8 else shape
                        entries.append((s, 0, TRAIN, Snapshot(data, "float32", full)))
                        if quantity.startswith("activation"):
                            probe = rng.standard_normal(shape).astype(np.float32)
                            entries.append((s, 1, PROBE, Snapshot(probe, "float32", shape)))
                    seg.write_snapshots(g, entries)

        stored = store.files.put(relpath, write)
        rows.append(_row(file_id, seg.SNAPSHOTS, lo, hi, len(snap_steps), stored, relpath))
    return rows


def generate(store: Store, n_layers: int, steps: int, stats_every: int) -> None:
    """Write the big run (see the module docstring)."""
    config = {"lr": 0.01, "momentum": 0.9, "batch": 64, "layers": n_layers, "synthetic": True}
    store.catalog.create_run(RUN_ID, "bench-ui", "big", config, ["bench"], "bench", 0, None)
    layers = []
    for depth, (name, kind) in enumerate(layer_names(n_layers)):
        params = {"weight": [WIDTH, WIDTH], "bias": [WIDTH]} if kind == "fc" else {}
        layers.append(
            {"name": name, "position": depth, "type": "Linear" if kind == "fc" else "ReLU",
             "kind": "relu" if kind == "act" else None, "params": params}
        )  # fmt: skip
    store.catalog.add_layers(RUN_ID, layers)
    gathered = Gathered(n_layers, steps, stats_every)
    file_id, name = new_file_name(0, steps - 1, "stats")
    relpath = f"{rank_folder(RUN_ID, 0)}/{name}"
    attrs = seg.root_attrs(seg.STATS, RUN_ID, 0, 0, steps - 1, file_id, __version__)
    stored = store.files.put(
        relpath,
        lambda path: write_stats_file(
            path, gathered, attrs, STATS_COMPRESSION, HISTOGRAM_COMPRESSION  # type: ignore[arg-type]
        ),
    )
    rows = [_row(file_id, seg.STATS, 0, steps - 1, steps, stored, relpath)]
    rows += write_snapshot_files(store, n_layers, steps)
    rng = np.random.default_rng(2)
    loss = 2.3 * np.exp(-np.arange(steps) / (steps / 5)) + 0.1 + rng.normal(0, 0.05, steps)
    metrics = [
        MetricRow("loss", s, float(loss[s]), s // EPOCH_STEPS, float(s)) for s in range(steps)
    ]
    metrics += [
        MetricRow("val_acc", e * EPOCH_STEPS + EPOCH_STEPS - 1, 0.5 + 0.45 * e / (steps // EPOCH_STEPS), e, 0.0)
        for e in range(steps // EPOCH_STEPS)
    ]  # fmt: skip
    epochs = {
        e: (e * EPOCH_STEPS, min(steps, (e + 1) * EPOCH_STEPS) - 1)
        for e in range(-(-steps // EPOCH_STEPS))
    }
    shapes = {n: {"output": [64, WIDTH]} for n, _ in layer_names(n_layers)}
    for i, row in enumerate(rows):
        store.catalog.commit_batch(
            RUN_ID, row, metrics if i == 0 else [], epochs if i == 0 else {}, shapes, {}
        )
    store.catalog.set_status(RUN_ID, "finished", ended=True)
