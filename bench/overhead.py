"""Training-step overhead of the tracker and of its peers, as ratios to a plain step.

    python bench/overhead.py [--repeats 5] [--steps 200] [--models cnn,mlp] [--json out.json]

Each variant trains in blocks of --block steps that alternate with a plain twin of the same model
in the same process, so drift on a shared machine hits both alike; a repeat's ratio is the
variant's mean step time (its background work included) over the twin's, and each figure is the
median over repeats (run in a shuffled order) with the min..max. A last column adds the final
flush (the segment file the steps filled) spread over the steps. One torch thread, like
../shared/PERF.md. Peers (bench/requirements-peers.txt) are skipped if not installed:
TensorBoard histograms of every parameter and gradient, wandb.watch(log="all") offline, Aim
parameter and gradient distributions, each at the same cadence as the tracker row they sit under.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tracker
from tracker.demo import digits_cnn, load_digits_tensors

BATCH = 64


def digits_mlp() -> nn.Module:
    """~2.5M parameters on flattened digits: large matmuls, few layers."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 1536),
        nn.ReLU(),
        nn.Linear(1536, 1536),
        nn.ReLU(),
        nn.Linear(1536, 10),
    )


MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": digits_cnn, "mlp": digits_mlp}


class Recorder:
    """What a variant does around the training loop."""

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        loss.item()

    def settle(self) -> None:
        """Finish background work on the steps so far (charged to this variant's time)."""

    def flush(self) -> None:
        """Write out what is buffered (timed once, at the end: segment and file writes count)."""

    def close(self) -> None:
        pass


class TrackerRecorder(Recorder):
    def __init__(self, model: nn.Module, tmp: str, watch: dict[str, Any] | None) -> None:
        self.run = tracker.init(project="bench", store=tmp)
        if watch is not None:
            self.run.watch(model, **watch)

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        self.run.log({"loss": loss.item()}, step=step)

    def settle(self) -> None:
        # The stats worker's queue only: flushing the writer too would roll a segment per block.
        self.run._engine.flush()

    def flush(self) -> None:
        self.run.flush()

    def close(self) -> None:
        self.run.finish()


class TensorBoardRecorder(Recorder):
    """What TensorBoard users write: add_histogram of every parameter and gradient."""

    def __init__(self, model: nn.Module, tmp: str, every: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(tmp)
        self.model, self.every = model, every

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        self.writer.add_scalar("loss", loss.item(), step)
        if step % self.every == 0:
            for name, p in self.model.named_parameters():
                self.writer.add_histogram(name, p, step)
                if p.grad is not None:
                    self.writer.add_histogram(name + ".grad", p.grad, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbRecorder(Recorder):
    def __init__(self, model: nn.Module, tmp: str, every: int) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project="bench", dir=tmp, mode="offline", reinit="finish_previous")
        wandb.watch(model, log="all", log_freq=every)

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        self.run.log({"loss": loss.item()}, step=step)

    def close(self) -> None:
        self.wandb.unwatch()
        self.run.finish()


class AimRecorder(Recorder):
    def __init__(self, model: nn.Module, tmp: str, every: int) -> None:
        from aim import Run

        self.run = Run(repo=tmp, system_tracking_interval=None, log_system_params=False)
        self.model, self.every = model, every

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        from aim.pytorch import track_gradients_dists, track_params_dists

        self.run.track(loss.item(), name="loss", step=step)
        if step % self.every == 0:
            track_params_dists(self.model, self.run)
            track_gradients_dists(self.model, self.run)

    def close(self) -> None:
        self.run.close()


@dataclass(frozen=True)
class Variant:
    name: str
    make: Callable[[nn.Module, str], Recorder]
    needs: str | None = None  # module that must be importable


def _tracker(watch: dict[str, Any] | None) -> Callable[[nn.Module, str], Recorder]:
    return lambda model, tmp: TrackerRecorder(model, tmp, watch)


EVERY_STEP = {"every": 1, "histogram_every": 1, "snapshot_every": 0}
EVERY_10 = {"every": 10, "histogram_every": 10, "snapshot_every": 0}
VARIANTS = (
    Variant("baseline (no tracking)", lambda model, tmp: Recorder()),
    Variant("tracker: metrics only, no watch", _tracker(None)),
    Variant("tracker: default policy (stats 10, hist 50, snap 100)", _tracker({})),
    Variant("tracker: stats+hist, all 4 quantities, every step", _tracker(EVERY_STEP)),
    Variant("tracker: + snapshots every step", _tracker({**EVERY_STEP, "snapshot_every": 1})),
    Variant(
        "TensorBoard: param+grad histograms, every step",
        lambda m, t: TensorBoardRecorder(m, t, 1),
        "tensorboard",
    ),
    Variant("wandb.watch(log='all'), every step", lambda m, t: WandbRecorder(m, t, 1), "wandb"),
    Variant("Aim: param+grad distributions, every step", lambda m, t: AimRecorder(m, t, 1), "aim"),
    Variant("tracker: stats+hist, all 4 quantities, every 10", _tracker(EVERY_10)),
    Variant(
        "TensorBoard: every 10 steps", lambda m, t: TensorBoardRecorder(m, t, 10), "tensorboard"
    ),
    Variant(
        "wandb.watch(log='all'), every 10 steps", lambda m, t: WandbRecorder(m, t, 10), "wandb"
    ),
    Variant("Aim: every 10 steps", lambda m, t: AimRecorder(m, t, 10), "aim"),
)


def _time_steps(
    model_name: str, variant: Variant, steps: int, warmup: int, block: int, tmp: str
) -> tuple[float, float, float]:
    """(variant, plain twin) mean step times, measured in alternating blocks of ``block`` steps,
    and the variant's final flush in seconds.

    The twin is the same model without any recorder, trained in the same process between the
    variant's blocks, so both see the same machine at the same moments: on a shared 2-core VM the
    speed of a plain step drifts by tens of percent over seconds, which separate runs cannot tell
    from overhead. The variant's block includes ``settle()`` (its background work on the block's
    last steps), so none of its cost is charged to the twin. The final ``flush()`` writes what
    the steps buffered (the tracker's segment file: a run this short would not have rolled one
    yet); it is returned apart, as a segment's fixed costs over so few steps overstate it.
    """
    images, labels = load_digits_tensors()
    models, opts, gens = [], [], []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(MODELS[model_name]())
        opts.append(torch.optim.SGD(models[-1].parameters(), lr=0.01, momentum=0.9))
        gens.append(torch.Generator().manual_seed(0))
    recorders = [variant.make(models[0], tmp), Recorder()]
    totals = [0.0, 0.0]
    counters = [0, 0]

    def run_block(which: int, n: int, timed: bool) -> None:
        model, opt, gen, recorder = models[which], opts[which], gens[which], recorders[which]
        start = time.perf_counter()
        for _ in range(n):
            idx = torch.randint(0, len(images), (BATCH,), generator=gen)
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            recorder.after_step(counters[which], loss)
            counters[which] += 1
        recorder.settle()
        if timed:
            totals[which] += time.perf_counter() - start

    for which in (0, 1):
        run_block(which, warmup, timed=False)
    timed = 0
    while timed < steps:
        n = min(block, steps - timed)
        for which in (0, 1):
            run_block(which, n, timed=True)
        timed += n
    start = time.perf_counter()
    recorders[0].flush()
    flush = time.perf_counter() - start
    recorders[0].close()
    # Means, not medians: work done every k-th step (histograms, snapshots) counts.
    return totals[0] / steps, totals[1] / steps, flush


def _print_table(model_name: str, args: argparse.Namespace, rows: list[dict]) -> None:
    shape = (
        f"{args.repeats} repeats x {args.steps} steps in blocks of {args.block} alternating with"
        f" a plain twin, batch {BATCH}, 1 torch thread"
    )
    print(f"\n{model_name}: {shape}")
    print("| variant | step (ms) | ratio to twin (min..max) | + final flush over the steps |")
    print("|---|---|---|---|")
    for r in rows:
        spread = f"{r['ratio_min']:.2f}..{r['ratio_max']:.2f}"
        print(
            f"| {r['variant']} | {r['step_ms']:.2f} | {r['ratio']:.2f}x ({spread})"
            f" | {r['ratio_with_flush']:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--block", type=int, default=10, help="steps per alternating block")
    parser.add_argument("--models", default="cnn,mlp")
    parser.add_argument("--only", default="", help="comma-separated substrings of variant names")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_SILENT", "true")
    variants = [v for v in VARIANTS if v.needs is None or importlib.util.find_spec(v.needs)]
    if args.only:
        wanted = args.only.split(",")
        variants = [v for i, v in enumerate(variants) if i == 0 or any(w in v.name for w in wanted)]
    missing = [v.name for v in VARIANTS if v.needs and not importlib.util.find_spec(v.needs)]
    if missing:
        print("skipped (not installed, see bench/requirements-peers.txt):", "; ".join(missing))
    rng = random.Random(0)
    results = {}
    for model_name in args.models.split(","):
        per_variant: dict[str, list[float]] = {v.name: [] for v in variants}
        ratios: dict[str, list[float]] = {v.name: [] for v in variants}
        flushed: dict[str, list[float]] = {v.name: [] for v in variants}
        for _ in range(args.repeats):
            order = list(variants)
            rng.shuffle(order)
            for variant in order:
                with tempfile.TemporaryDirectory() as tmp:
                    seconds, twin, flush = _time_steps(
                        model_name, variant, args.steps, args.warmup, args.block, tmp
                    )
                per_variant[variant.name].append(seconds)
                ratios[variant.name].append(seconds / twin)
                flushed[variant.name].append((seconds + flush / args.steps) / twin)
        rows = []
        for variant in variants:
            r = ratios[variant.name]
            rows.append(
                {
                    "variant": variant.name,
                    "step_ms": 1000 * statistics.median(per_variant[variant.name]),
                    "ratio": statistics.median(r),
                    "ratio_min": min(r),
                    "ratio_max": max(r),
                    "ratio_with_flush": statistics.median(flushed[variant.name]),
                }
            )
        results[model_name] = rows
        _print_table(model_name, args, rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
