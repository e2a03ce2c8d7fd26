"""The tensor store: durable write throughput, read latency at 1k vs 100k steps, compression.

    python bench/store.py [--steps 100000] [--small-steps 1000] [--repeats 7] [--json out.json]

Every figure is a ratio to a baseline measured in the same run (the machine is shared and noisy),
each the median over ``--repeats`` interleaved repeats, with the page cache warm for both sides.

1. Durable segment writes (LocalStore.put_segment: write .tmp, fsync, checksum, rename, fsync the
   folder) against ``np.save`` + fsync and a raw ``write`` + fsync of the same arrays' bytes.
2. Compression of real activations and gradients (the demo CNN on real digits): size and durable
   throughput of segments written with each codec.
3. Reads, as one API request makes them (find the run, a fresh reader, read): one snapshot step,
   and one stat over all steps against ``np.load`` of the same array from one .npy file; in a run
   of 1k and one of 100k steps, before and after compaction. The runs are written directly through
   the segment builder, the local backend and the catalog, as the writer would have (500 steps per
   segment), not by training 100k steps.
4. The compacted stats file's codec: size and one-series read time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tracker.capture.block import Summary
from tracker.capture.snapshot import Snapshot
from tracker.capture.step import GRAD_ENABLED, TRAINING_MODE
from tracker.catalog import MetricRow
from tracker.demo import digits_cnn, load_digits_tensors
from tracker.names import STAT_INDEX, STAT_NAMES
from tracker.reader import RunReader, find_run
from tracker.store import Store
from tracker.store import segment as seg
from tracker.store.codecs import COMPRESSIONS
from tracker.store.compact import HISTOGRAM_COMPRESSION, compact_run
from tracker.store.compacted import StatsGatherer, write_stats_file
from tracker.store.segment import SegmentBuilder
from tracker.store.usage import run_usage

LAYERS = ("conv1", "conv2", "fc1", "fc2")
QUANTITIES = ("activation", "weight")
SEGMENT_STEPS = 500  # WriterConfig.steps_per_segment


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median time of each variant, run in turn each repeat so drift hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def fsync_path(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- 1, 2: writes -----------------------------------------------------------------------------


def real_tensors(steps: int = 40) -> dict[str, list[np.ndarray]]:
    """Activations, activation gradients, weights and weight gradients of the demo CNN (first 8
    samples, as snapshots keep), healthy and sick learning rates, on real digits."""
    torch.manual_seed(0)
    images, labels = load_digits_tensors()
    out: dict[str, list[np.ndarray]] = {q: [] for q in seg_quantities()}
    for lr in (0.05, 0.5):
        model = digits_cnn()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

        def hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
            out["activation"].append(output.detach()[:8].numpy().copy())
            output.register_hook(lambda g: out["activation_grad"].append(g[:8].numpy().copy()))

        for m in model:
            m.register_forward_hook(hook)
        for _ in range(steps):
            idx = torch.randint(0, 1497, (64,))
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            for p in model.parameters():
                out["weight"].append(p.detach().numpy().copy())
                out["weight_grad"].append(p.grad.numpy().copy())  # type: ignore[union-attr]
            opt.step()
    return out


def relu_like(n: int, count: int) -> list[np.ndarray]:
    """``count`` float32 arrays of ``n`` elements, half zeros like ReLU outputs."""
    rng = np.random.default_rng(n)
    return [np.maximum(rng.standard_normal(n), 0).astype(np.float32) for _ in range(count)]


def seg_quantities() -> tuple[str, ...]:
    return ("activation", "activation_grad", "weight", "weight_grad")


def segment_of(arrays: list[np.ndarray], steps: int = SEGMENT_STEPS) -> SegmentBuilder:
    """A segment of ``steps`` stats rows per series, with ``arrays`` as its snapshots."""
    b = SegmentBuilder("00000000000000be")
    per_step = max(1, len(arrays) // steps + (len(arrays) % steps > 0))
    it = iter(arrays)
    for step in range(steps):
        summaries = []
        for i in range(per_step):
            a = next(it, None)
            snap = Snapshot(a, str(a.dtype), a.shape) if a is not None else None
            summaries.append(
                Summary(f"l{i}", "activation", "output", 0, 3, np.ones(len(STAT_NAMES)), None, snap)
            )
        b.add(step, summaries)
    return b


def bench_writes(store: Store, workloads: dict[str, list[np.ndarray]], repeats: int) -> list[dict]:
    rows = []
    scratch = store.root / "scratch"
    scratch.mkdir(exist_ok=True)
    for name, arrays in workloads.items():
        builder = segment_of(arrays)
        series = builder.series().values()
        payload = [a for a in arrays] + [c.stats for c in series] + [c.index for c in series]
        nbytes = sum(a.nbytes for a in payload)
        blob = b"".join(a.tobytes() for a in payload)

        def raw(blob: bytes = blob) -> None:
            path = scratch / "raw.bin"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, blob)
            os.fsync(fd)
            os.close(fd)

        def npsave(payload: list[np.ndarray] = payload) -> None:
            with open(scratch / "arrays.npy", "wb") as fh:
                for a in payload:
                    np.save(fh, a)
                fh.flush()
                os.fsync(fh.fileno())

        written: list[str] = []

        def segment(builder: SegmentBuilder = builder, written: list[str] = written) -> None:
            written.append(store.files.put_segment(builder, "bench").relpath)

        t = interleaved({"raw": raw, "np.save": npsave, "segment": segment}, repeats)
        for relpath in written:
            store.files.delete(relpath)
        rows.append(
            {
                "workload": name,
                "arrays": len(arrays),
                "mib": nbytes / (1 << 20),
                "raw_mb_s": nbytes / t["raw"] / 1e6,
                "npsave_ratio": t["raw"] / t["np.save"],
                "segment_ratio": t["raw"] / t["segment"],
                "segment_mb_s": nbytes / t["segment"] / 1e6,
            }
        )
    return rows


def bench_compression(
    store: Store, tensors: dict[str, list[np.ndarray]], repeats: int
) -> list[dict]:
    rows = []
    for quantity, arrays in tensors.items():
        builder = segment_of(arrays, steps=len(arrays))
        nbytes = sum(a.nbytes for a in arrays)
        zeros = sum(int((a == 0).sum()) for a in arrays) / sum(a.size for a in arrays)
        sizes: dict[str, int] = {}
        variants = {}
        for codec in COMPRESSIONS:

            def put(
                codec: str = codec, builder: SegmentBuilder = builder, sizes: dict = sizes
            ) -> None:
                stored = store.files.put_segment(builder, "bench", codec)
                with store.files.open(stored.relpath) as f:  # every snapshot, one blob
                    sizes[codec] = f["snaps/data"].id.get_storage_size()
                store.files.delete(stored.relpath)

            variants[codec] = put
        t = interleaved(variants, repeats)
        for codec in COMPRESSIONS:
            rows.append(
                {
                    "quantity": quantity,
                    "codec": codec,
                    "zeros": zeros,
                    "ratio": nbytes / sizes[codec],
                    "mb_s": nbytes / t[codec] / 1e6,
                    "vs_none": t["none"] / t[codec],
                }
            )
    return rows


# -- 3: reads ---------------------------------------------------------------------------------


def stats_row(step: int, key: int, rng: np.random.Generator) -> np.ndarray:
    row = np.full(len(STAT_NAMES), np.nan)
    row[STAT_INDEX["count"]] = 4096
    row[STAT_INDEX["mean"]] = np.sin(step / 500 + key) + rng.normal(0, 0.01)
    row[STAT_INDEX["std"]] = 1 + 0.1 * np.cos(step / 700) + rng.normal(0, 0.01)
    row[STAT_INDEX["min"]], row[STAT_INDEX["max"]] = -3 + rng.random(), 3 + rng.random()
    row[STAT_INDEX["norm"]] = 64 + rng.normal(0, 1)
    row[STAT_INDEX["zero_frac"]] = rng.random() * 0.5
    row[STAT_INDEX["nan_count"]] = row[STAT_INDEX["inf_count"]] = 0
    row[STAT_INDEX["dead_frac"]] = rng.random() * 0.1
    return row


def synthetic_run(store: Store, run_id: str, steps: int) -> None:
    """Write ``steps`` steps of 8 series the way the writer does: stats every step, histograms
    every 10, 4 KiB snapshots every 100, 500 steps per segment, one metric per step."""
    store.catalog.create_run(run_id, "bench", run_id, {}, [], "bench", 0, None)
    keys = [
        (layer, q, "weight" if q == "weight" else "output") for layer in LAYERS for q in QUANTITIES
    ]
    store.catalog.add_layers(
        run_id,
        [
            {
                "name": layer,
                "position": i,
                "type": "Linear",
                "kind": None,
                "params": {"weight": [32, 32]},
            }
            for i, layer in enumerate(LAYERS)
        ],
    )
    rng = np.random.default_rng(0)
    hist = np.zeros(512, np.int64)
    hist[100:160] = rng.integers(1, 1000, 60)
    for lo in range(0, steps, SEGMENT_STEPS):
        b = SegmentBuilder(run_id)
        hi = min(steps, lo + SEGMENT_STEPS)
        for step in range(lo, hi):
            b.add(
                step,
                [
                    Summary(
                        *key,
                        0,
                        GRAD_ENABLED | TRAINING_MODE,
                        stats_row(step, k, rng),
                        hist if step % 10 == 0 else None,
                        Snapshot(rng.standard_normal(1024).astype(np.float32), "float32", (1024,))
                        if step % 100 == 0
                        else None,
                    )
                    for k, key in enumerate(keys)
                ],
            )
        f = store.files.put_segment(b, "bench")
        segment = {
            "id": f.id,
            "rank": 0,
            "step_min": lo,
            "step_max": hi - 1,
            "n_steps": hi - lo,
            "path": f.relpath,
            "nbytes": f.nbytes,
            "checksum": f.checksum,
            "schema_version": seg.SCHEMA_VERSION,
        }
        metrics = [MetricRow("loss", s, 1.0 / (s + 1), s // 1000, 0.0) for s in range(lo, hi)]
        epochs = {
            e: (max(lo, e * 1000), min(hi - 1, e * 1000 + 999))
            for e in range(lo // 1000, (hi - 1) // 1000 + 1)
        }
        shapes = {layer: {"output": [64, 32]} for layer in LAYERS}
        store.catalog.commit_batch(run_id, segment, metrics, epochs, shapes, {})


def bench_reads(store: Store, runs: dict[str, tuple[str, int]], repeats: int) -> dict[str, float]:
    """Seconds per read: 'snapshot <label>', 'series <label>', 'series warm <label>', 'np.load'.

    Snapshot reads of the runs alternate, so they see the same machine; each is what one API
    request does: find the run, a fresh reader, one step of one tensor.
    """
    out: dict[str, float] = {}
    rng = np.random.default_rng(1)

    def one_snapshot(run_id: str, steps: int) -> None:
        reader = RunReader(store, find_run(store, run_id))
        reader.tensor("fc1", "activation", int(rng.integers(0, steps // 100)) * 100)
        reader.close()

    snapshots = {
        f"snapshot {label}": lambda run_id=run_id, steps=steps: one_snapshot(run_id, steps)
        for label, (run_id, steps) in runs.items()
    }
    out.update(interleaved(snapshots, repeats * 20))
    npy = store.root / "series.npy"
    for label, (run_id, steps) in runs.items():

        def one_series(run_id: str = run_id) -> np.ndarray:
            reader = RunReader(store, find_run(store, run_id))
            values = reader.series("conv2", "weight", "mean")[1]
            reader.close()
            return values

        values = one_series()
        assert len(values) == steps
        np.save(npy, values)
        warm_reader = RunReader(store, find_run(store, run_id))
        t = interleaved(
            {
                "series": one_series,
                "series warm": lambda r=warm_reader: r.series("conv2", "weight", "mean"),
                "np.load": lambda: np.load(npy),
            },
            repeats * 5,
        )
        warm_reader.close()
        for name, seconds in t.items():
            out[f"{name} {label}"] = seconds
    return out


def bench_stats_codecs(store: Store, run_id: str, repeats: int) -> list[dict]:
    """Rewrite the compacted stats file with each codec; size and one-series read time."""
    from tracker.reader import _select_rows

    (row,) = [r for r in store.catalog.segments(run_id) if r.kind == "stats"]
    out = []
    with store.files.open(row.path) as source:
        gatherer = StatsGatherer(
            store.root / "scratch.h5.tmp", lambda index: _select_rows(index, None)
        )
        gatherer.add_file(source)
        key = ("conv2", "weight", "weight")
        for codec in COMPRESSIONS:
            path = store.root / f"stats-{codec}.h5"
            write_stats_file(str(path), gatherer, dict(source.attrs), codec, HISTOGRAM_COMPRESSION)

            def read(path: Path = path) -> None:
                with h5py.File(path, "r") as f:
                    seg.read_default_stats(f, key, STAT_INDEX["mean"])

            out.append(
                {
                    "codec": codec,
                    "mib": path.stat().st_size / (1 << 20),
                    "read_s": median_time(read, repeats * 5),
                }
            )
        gatherer.close()
    return out


# -- report -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--small-steps", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp,
        Store.open(Path(tmp) / "store") as store,
    ):
        tensors = real_tensors()
        results["writes"] = bench_writes(
            store,
            {
                "1 MiB snapshots (as in PERF.md)": relu_like(1 << 18, 8),
                "256 KiB snapshots (65,536 float32, the default bound)": relu_like(1 << 16, 32),
                "demo CNN snapshots (0.1-32 KiB)": [
                    a for arrays in tensors.values() for a in arrays[:200]
                ],
            },
            args.repeats,
        )
        results["compression"] = bench_compression(store, tensors, max(3, args.repeats // 2))

        small_id, big_id = "00000000000000a1", "00000000000000b1"
        t = time.perf_counter()
        synthetic_run(store, small_id, args.small_steps)
        synthetic_run(store, big_id, args.steps)
        results["generate_s"] = time.perf_counter() - t
        runs = {"small": (small_id, args.small_steps), "big": (big_id, args.steps)}
        results["before"] = bench_reads(store, runs, args.repeats)
        results["usage_before"] = run_usage(store, big_id).to_dict()
        t = time.perf_counter()
        compact_run(store, small_id)
        results["compact_small_s"] = time.perf_counter() - t
        t = time.perf_counter()
        compact_run(store, big_id)
        results["compact_big_s"] = time.perf_counter() - t
        results["usage_after"] = run_usage(store, big_id).to_dict()
        results["after"] = bench_reads(store, runs, args.repeats)
        results["stats_codecs"] = bench_stats_codecs(store, big_id, args.repeats)
    report(results, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    print("\n## Durable segment writes vs the same bytes written raw (ratio: raw time / its time)")
    print(
        "| workload | arrays | MiB | raw write+fsync MB/s | np.save+fsync | segment (put_segment) |"
    )
    print("|---|---|---|---|---|---|")
    for w in r["writes"]:
        print(
            f"| {w['workload']} | {w['arrays']} | {w['mib']:.1f} | {w['raw_mb_s']:.0f} | "
            f"{w['npsave_ratio']:.2f}x | {w['segment_ratio']:.2f}x ({w['segment_mb_s']:.0f} MB/s) |"
        )
    print("\n## Compression of the demo CNN's real tensors (segments, durable)")
    print("| quantity | zeros | codec | smaller by | MB/s | speed vs none |")
    print("|---|---|---|---|---|---|")
    for c in r["compression"]:
        print(
            f"| {c['quantity']} | {c['zeros']:.0%} | {c['codec']} | {c['ratio']:.2f}x | "
            f"{c['mb_s']:.0f} | {c['vs_none']:.2f}x |"
        )
    small, big = f"{args.small_steps:,}", f"{args.steps:,}"
    print(f"\n## Reads: a run of {small} vs {big} steps (8 series, 500 steps per segment)")
    print(
        f"generated in {r['generate_s']:.1f} s; compaction took {r['compact_small_s']:.2f} s "
        f"({small}) and {r['compact_big_s']:.1f} s ({big})"
    )
    ub, ua = r["usage_before"], r["usage_after"]
    print(
        f"{big}-step run: {ub['live']['files']} files, {ub['live']['bytes'] / 2**20:.1f} MiB -> "
        f"{ua['live']['files']} files, {ua['live']['bytes'] / 2**20:.1f} MiB"
    )
    print("| read | before compaction | after compaction | goal |")
    print("|---|---|---|---|")
    for name, what, goal in (
        ("snapshot", f"one snapshot step, {big} vs {small} steps (fresh reader)", "<= 1.5x"),
        ("series", f"one stat over all steps, {big} vs {small} steps (fresh reader)", ""),
    ):
        cells = []
        for phase in ("before", "after"):
            s, b = r[phase][f"{name} small"], r[phase][f"{name} big"]
            cells.append(f"{b * 1e3:.2f} ms vs {s * 1e3:.2f} ms = {b / s:.2f}x")
        print(f"| {what} | {cells[0]} | {cells[1]} | {goal} |")
    for name, label in (("series", "fresh reader"), ("series warm", "open reader")):
        cells = []
        for phase in ("before", "after"):
            s, n = r[phase][f"{name} big"], r[phase]["np.load big"]
            cells.append(f"{s * 1e3:.2f} ms vs {n * 1e3:.2f} ms = {s / n:.1f}x")
        print(
            f"| one stat over {big} steps vs np.load ({label}) | {cells[0]} | {cells[1]} | <= 3x |"
        )
    print(
        "\n## The compacted stats file: codec of its stats rows (histograms: "
        f"{HISTOGRAM_COMPRESSION}); one stat over the big run, file open included"
    )
    print("| codec | file MiB | read ms |")
    print("|---|---|---|")
    for c in r["stats_codecs"]:
        print(f"| {c['codec']} | {c['mib']:.1f} | {c['read_s'] * 1e3:.2f} |")


if __name__ == "__main__":
    main()
