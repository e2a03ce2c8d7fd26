"""Training-step overhead of the tracker, as ratios to a plain step measured in the same run.

    python bench/overhead.py [--repeats 5] [--steps 200] [--models cnn,mlp] [--json out.json]

Variants are interleaved (each repeat runs every variant once, in a shuffled order) so drift on a
shared machine hits them alike; each figure is the median over repeats of a variant's median step
time, divided by the baseline's, with the min..max over repeats. One torch thread, like PERF.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tracker
from tracker.demo import digits_cnn, load_digits_tensors

BATCH = 64


def digits_mlp() -> nn.Module:
    """~3.2M parameters on flattened digits: large matmuls, few layers."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 1536),
        nn.ReLU(),
        nn.Linear(1536, 1536),
        nn.ReLU(),
        nn.Linear(1536, 10),
    )


MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": digits_cnn, "mlp": digits_mlp}


@dataclass(frozen=True)
class Variant:
    name: str
    watch: dict | None  # run.watch kwargs; None = no tracker at all


VARIANTS = (
    Variant("baseline (no tracker)", None),
    Variant("tracker, metrics only (no watch)", {}),
    Variant(
        "tracker default (stats 1, hist 10, snap 100)",
        {"every": 1, "histogram_every": 10, "snapshot_every": 100},
    ),
    Variant(
        "tracker stats+hist every step", {"every": 1, "histogram_every": 1, "snapshot_every": 0}
    ),
    Variant(
        "tracker stats+hist+snapshots every step",
        {"every": 1, "histogram_every": 1, "snapshot_every": 1},
    ),
    Variant(
        "tracker every 10 steps (stats, hist)",
        {"every": 10, "histogram_every": 10, "snapshot_every": 0},
    ),
)


def _time_steps(model_name: str, variant: Variant, steps: int, warmup: int, store: str) -> float:
    images, labels = load_digits_tensors()
    torch.manual_seed(0)
    model = MODELS[model_name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    run = None
    if variant.watch is not None:
        run = tracker.init(project="bench", name=variant.name, store=store)
        if variant.watch:
            run.watch(model, **variant.watch)
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(warmup + steps):
        idx = torch.randint(0, len(images), (BATCH,), generator=gen)
        start = time.perf_counter()
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if run is not None:
            run.log({"loss": loss.item()}, step=step)
        else:
            loss.item()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    if run is not None:
        run.finish()
    return statistics.median(times)


def _print_table(model_name: str, args: argparse.Namespace, rows: list[dict]) -> None:
    shape = f"{args.repeats} repeats x {args.steps} steps, batch {BATCH}, 1 torch thread"
    print(f"\n{model_name}: {shape}")
    print("| variant | step (ms) | ratio to baseline (min..max) |")
    print("|---|---|---|")
    for r in rows:
        spread = f"{r['ratio_min']:.2f}..{r['ratio_max']:.2f}"
        print(f"| {r['variant']} | {r['step_ms']:.2f} | {r['ratio']:.2f}x ({spread}) |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", default="cnn,mlp")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models.split(","):
            per_variant: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
            for repeat in range(args.repeats):
                order = list(VARIANTS)
                rng.shuffle(order)
                for variant in order:
                    store = f"{tmp}/{model_name}-{repeat}"
                    per_variant[variant.name].append(
                        _time_steps(model_name, variant, args.steps, args.warmup, store)
                    )
            base = per_variant[VARIANTS[0].name]
            rows = []
            for variant in VARIANTS:
                ratios = [t / b for t, b in zip(per_variant[variant.name], base, strict=True)]
                rows.append(
                    {
                        "variant": variant.name,
                        "step_ms": 1000 * statistics.median(per_variant[variant.name]),
                        "ratio": statistics.median(ratios),
                        "ratio_min": min(ratios),
                        "ratio_max": max(ratios),
                    }
                )
            results[model_name] = rows
            _print_table(model_name, args, rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
