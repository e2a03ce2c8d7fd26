"""Where a recorded training step's overhead goes: per-phase times beside a plain twin.

    python bench/phases.py [--steps 1000] [--model cnn] [--variants every,hooks-only]

Like overhead.py, each variant trains in blocks of 10 steps that alternate with a plain twin of
the same model in the same process (the order flips every block). It reports, per variant, the
median time of each phase of a step (data, forward, backward, optimizer, log) and the median over
blocks of the block-time ratio to the twin's block beside it, which is steadier on a noisy
machine than a ratio of means. Variants:
  every       the tracker recording stats and histograms of all four quantities every step
  default     the tracker's default policy
  hooks-only  as `every`, but each step's tensors are dropped before they are reduced: what the
              hooks and run.log() cost the training thread by themselves
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import BATCH, EVERY_STEP, MODELS

import tracker
from tracker.demo import load_digits_tensors

PHASES = ("data", "forward", "backward", "optimizer", "log")
WATCH = {"every": EVERY_STEP, "default": {}, "hooks-only": EVERY_STEP}


class Trainee:
    """One model, its optimizer, data order and (unless plain) a tracked run."""

    def __init__(self, model_name: str, variant: str, store: str) -> None:
        torch.manual_seed(0)
        self.variant = variant
        self.model = MODELS[model_name]()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.gen = torch.Generator().manual_seed(0)
        self.step = 0
        self.phases: dict[str, list[float]] = {p: [] for p in PHASES}
        self.blocks: list[float] = []
        self.run: Any = None
        if variant != "plain":
            self.run = tracker.init(project="phases", store=store)
            self.run.watch(self.model, **WATCH[variant])
            if variant == "hooks-only":
                engine = self.run._engine
                submit = engine.submit

                def drop_tensors(item: Any) -> None:
                    item.captures = []
                    submit(item)

                engine.submit = drop_tensors

    def train(self, images: torch.Tensor, labels: torch.Tensor, n: int, timed: bool) -> None:
        block_start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            idx = torch.randint(0, len(images), (BATCH,), generator=self.gen)
            x, y = images[idx], labels[idx]
            t1 = time.perf_counter()
            loss = F.cross_entropy(self.model(x), y)
            t2 = time.perf_counter()
            self.opt.zero_grad()
            loss.backward()
            t3 = time.perf_counter()
            self.opt.step()
            t4 = time.perf_counter()
            if self.run is not None:
                self.run.log({"loss": loss.item()}, step=self.step)
            else:
                loss.item()
            t5 = time.perf_counter()
            self.step += 1
            if timed:
                marks = (t0, t1, t2, t3, t4, t5)
                for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True):
                    self.phases[name].append(b - a)
        if self.run is not None:
            self.run._engine.flush()  # background work of this block is charged to it
        if timed:
            self.blocks.append(time.perf_counter() - block_start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--model", default="cnn", choices=sorted(MODELS))
    parser.add_argument("--variants", default="every,hooks-only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, labels = load_digits_tensors()
    with tempfile.TemporaryDirectory() as store:
        names = ["plain", *[v for v in args.variants.split(",") if v]]
        unknown = [v for v in names[1:] if v not in WATCH]
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {sorted(WATCH)}")
        trainees = [Trainee(args.model, v, f"{store}/{v}") for v in names]
        for t in trainees:
            t.train(images, labels, 30, timed=False)
        for block in range(args.steps // 10):
            for t in trainees if block % 2 == 0 else trainees[::-1]:
                t.train(images, labels, 10, timed=True)
        plain = trainees[0]
        print(f"{args.model}, {args.steps} steps per variant, medians in us")
        print("| variant | " + " | ".join(PHASES) + " | block ratio to plain |")
        print("|---|" + "---|" * (len(PHASES) + 1))
        for t in trainees:
            medians = " | ".join(f"{statistics.median(t.phases[p]) * 1e6:.0f}" for p in PHASES)
            ratio = statistics.median(a / b for a, b in zip(t.blocks, plain.blocks, strict=True))
            print(f"| {t.variant} | {medians} | {ratio:.3f}x |")
        for t in trainees[1:]:
            t.run.finish()


if __name__ == "__main__":
    main()
