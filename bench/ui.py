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
``first-plot`` with ``performance.mark`` when its first chart has drawn (the run page: the metric
curves as a static SVG, drawn before Plotly is evaluated; the runs page: its table), so the
figure is milliseconds from the start of navigation to that mark. Also reported: the page's API
requests until then and the bytes they returned, and when everything the page loads at once had
arrived (``ready``: the run page's diagnosis, all four panels of the layer explorer, ...). Each
visit waits for ``ready`` before the next starts, so no request of one visit is served during the
next.
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
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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

ROOT = Path(__file__).resolve().parent.parent
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
        counts = 1 + (1000 * np.exp(-((np.arange(-24, 24) / 8.0) ** 2))).astype(np.int64)
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
            path,
            gathered,
            attrs,
            STATS_COMPRESSION,
            HISTOGRAM_COMPRESSION,  # type: ignore[arg-type]
        ),
    )
    rows = [_row(file_id, seg.STATS, 0, steps - 1, steps, stored, relpath)]
    rows += write_snapshot_files(store, n_layers, steps)
    rng = np.random.default_rng(2)
    loss = 2.3 * np.exp(-np.arange(steps) / (steps / 5)) + 0.1 + rng.normal(0, 0.05, steps)
    metrics = [
        MetricRow("loss", s, float(loss[s]), s // EPOCH_STEPS, float(s)) for s in range(steps)
    ]
    n_epochs = steps // EPOCH_STEPS
    metrics += [
        MetricRow("val_acc", (e + 1) * EPOCH_STEPS - 1, 0.5 + 0.45 * e / n_epochs, e, 0.0)
        for e in range(n_epochs)
    ]
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


# -- measuring ------------------------------------------------------------------------------------

# Milliseconds from the start of navigation to the page's "first-plot" mark, and the API
# requests that had finished by then with the bytes they carried.
FIRST_PLOT_JS = """() => {
  const mark = performance.getEntriesByName('first-plot')[0];
  const api = performance.getEntriesByType('resource')
    .filter((e) => e.name.includes('/api/v1/') && e.responseEnd <= mark.startTime);
  return {ms: mark.startTime, requests: api.length,
          bytes: api.reduce((a, e) => a + e.encodedBodySize, 0)};
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(store: Path) -> Iterator[str]:
    """``tracker ui`` over ``store`` in a subprocess; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-c", "from tracker.cli import main; main()", "ui"]
    command += ["--store", str(store), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = f"http://127.0.0.1:{port}"
    # The request log goes to a file: a pipe nobody reads fills up and blocks every request.
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/api/v1/health", timeout=2):
                        break
                except OSError as exc:
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"tracker ui did not start: {log.read()!r}") from exc
                    time.sleep(0.2)
            yield base
        finally:
            server.terminate()
            server.wait(timeout=30)


def first_plot(browser: Any, url: str) -> dict[str, float]:
    """Open ``url`` in a fresh context (empty cache) and wait for its first-plot mark."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(300_000)  # a shared 2-core machine can stall for a while
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url, wait_until="commit")
        page.wait_for_function("() => performance.getEntriesByName('first-plot').length > 0")
        result: dict[str, float] = page.evaluate(FIRST_PLOT_JS)
        # Then everything the page loads at once (the run page's diagnosis included), so that no
        # request of this visit is still being served while the next one is measured.
        page.locator("#app[data-ready='true']").wait_for(state="attached")
        result["ready_ms"] = page.evaluate("() => performance.now()")
        if errors:
            raise RuntimeError(f"{url}: {errors[0]}")
        return result
    finally:
        context.close()


def pages(demo: dict[str, str], big: bool) -> list[tuple[str, str]]:
    """(label, path) of every page measured."""
    healthy, sick = demo["healthy"], demo["sick"]
    out = [
        ("runs list", "/"),
        ("run page, demo (sick)", f"/runs/{sick}"),
        ("layer explorer, demo conv2", f"/runs/{sick}/layers/conv2"),
        ("compare, demo healthy vs sick", f"/compare?runs={healthy},{sick}"),
        ("compare, demo epochs 0 vs 2", f"/compare?runs={sick}&epochs=0,2"),
    ]
    if big:
        out += [
            ("run page, big run", f"/runs/{RUN_ID}"),
            ("layer explorer, big run", f"/runs/{RUN_ID}/layers/blocks.50.fc"),
            ("compare, big run epochs 0 vs 99", f"/compare?runs={RUN_ID}&epochs=0,99"),
        ]
    return out


def measure(base: str, targets: list[tuple[str, str]], repeats: int) -> list[dict[str, Any]]:
    """Median (and range) of the time to first plot of each page, interleaved over repeats."""
    from playwright.sync_api import sync_playwright

    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _ in targets}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for label, path in targets:  # one visit each first: server-side caches warm
                visit = first_plot(browser, base + path)
                print(f"  warm-up {label}: {visit['ms']:.0f} ms", file=sys.stderr, flush=True)
            for i in range(repeats):
                for label, path in targets:
                    visit = first_plot(browser, base + path)
                    samples[label].append(visit)
                    took = f"{visit['ms']:.0f} ms, ready {visit['ready_ms']:.0f} ms"
                    print(f"  {i + 1}/{repeats} {label}: {took}", file=sys.stderr, flush=True)
        finally:
            browser.close()
    rows = []
    for label, path in targets:
        ms = [s["ms"] for s in samples[label]]
        rows.append(
            {
                "page": label,
                "path": path,
                "median_ms": round(statistics.median(ms)),
                "min_ms": round(min(ms)),
                "max_ms": round(max(ms)),
                "ready_ms": round(statistics.median(s["ready_ms"] for s in samples[label])),
                "api_requests": int(statistics.median(s["requests"] for s in samples[label])),
                "api_kb": round(statistics.median(s["bytes"] for s in samples[label]) / 1024, 1),
            }
        )
    return rows


def demo_runs(store: Path, steps: int) -> dict[str, str]:
    """The demo's healthy and sick runs in ``store`` (trained once)."""
    import tracker
    from tracker.demo import RUNS, train

    found = {r.name: r.id for r in tracker.list_runs(store=str(store), project="digits-demo")}
    for config in RUNS:
        if config.name not in found:
            found[config.name] = train(config, steps, str(store), progress=lambda _: None)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--stats-every", type=int, default=1)
    parser.add_argument("--demo-steps", type=int, default=300, help="as `tracker demo` trains")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--store", type=Path, default=None, help="kept between runs if given")
    parser.add_argument("--no-big", action="store_true", help="measure the demo runs only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        root = args.store or Path(tmp) / "store"
        t0 = time.perf_counter()
        demo = demo_runs(root, args.demo_steps)
        print(f"demo runs ready in {time.perf_counter() - t0:.1f} s", flush=True)
        big = not args.no_big
        if big:
            with Store.open(root) as store:
                known = store.catalog.get_run(RUN_ID) is not None
                if not known:
                    t0 = time.perf_counter()
                    generate(store, args.layers, args.steps, args.stats_every)
                    took = time.perf_counter() - t0
                    print(f"big run ({args.layers} layers x {args.steps} steps) in {took:.0f} s")
        with serving(root) as base:
            rows = measure(base, pages(demo, big), args.repeats)
    print(f"\n{'page':36s} {'first plot (ms)':>22s} {'API req':>8s} {'API KB':>8s} {'ready':>7s}")
    for r in rows:
        spread = f"{r['median_ms']} ({r['min_ms']}..{r['max_ms']})"
        print(
            f"{r['page']:36s} {spread:>22s} {r['api_requests']:>8d} {r['api_kb']:>8.1f}"
            f" {r['ready_ms']:>7d}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"layers": args.layers, "steps": args.steps, "repeats": args.repeats}
        args.json.write_text(json.dumps({"config": meta, "pages": rows}, indent=2))


if __name__ == "__main__":
    main()
