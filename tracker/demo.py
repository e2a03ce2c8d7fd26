"""The demo: one small CNN trained twice on scikit-learn's digits, healthy and sick.

The sick run uses a learning rate ten times too large: within a few dozen steps the ReLU layers go
dead (no unit fires for any input), the loss sticks at ln(10) = 2.30, and the layer views show why.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tracker

BATCH = 64
N_TRAIN = 1497  # the remaining 300 of the 1,797 digits are held out for accuracy
PROBE = 8  # held-out digits run through the model at every snapshot step


@dataclass(frozen=True)
class DemoRun:
    """One demo configuration."""

    name: str
    lr: float
    description: str


RUNS = (
    DemoRun("healthy", 0.05, "SGD lr=0.05, momentum 0.9: learns to ~90% held-out accuracy"),
    DemoRun("sick", 0.5, "SGD lr=0.5, momentum 0.9: ReLUs die, loss stays at 2.30 (chance)"),
)


def digits_cnn() -> nn.Sequential:
    """A small CNN for 8x8 digits, with named layers."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 16, 3, padding=1),  # (B, 16, 8, 8)
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),  # (B, 16, 4, 4)
            conv2=nn.Conv2d(16, 32, 3, padding=1),  # (B, 32, 4, 4)
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),  # (B, 32, 2, 2)
            flatten=nn.Flatten(),  # (B, 128)
            fc1=nn.Linear(128, 64),
            relu3=nn.ReLU(),
            fc2=nn.Linear(64, 10),  # (B, 10) logits
        )
    )


def load_digits_tensors() -> tuple[Tensor, Tensor]:
    """The 1,797 real 8x8 digit images shipped with scikit-learn, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    return images, torch.tensor(digits.target, dtype=torch.int64)


def train(
    config: DemoRun,
    steps: int,
    store: str | None,
    project: str = "digits-demo",
    seed: int = 0,
    progress: Callable[[str], None] = print,
    watch: bool = True,
) -> str:
    """Train one demo run with the tracker watching; return its run id."""
    images, labels = load_digits_tensors()
    torch.manual_seed(seed)
    model = digits_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    held_x, held_y = images[N_TRAIN:], labels[N_TRAIN:]
    settings = {
        "lr": config.lr,
        "momentum": 0.9,
        "batch": BATCH,
        "seed": seed,
        "model": "digits_cnn",
    }
    with tracker.init(
        project=project, name=config.name, config=settings, store=store, tags=["demo"]
    ) as run:
        if watch:
            # Eight held-out digits as probe inputs: every snapshot step also records what the
            # network does with the same images, so runs and epochs compare picture by picture.
            probe = (held_x[:PROBE], held_y[:PROBE])
            run.watch(
                model,
                # A tiny model: recording every step costs ~1.5x here (the default is every
                # 10th), but the demo is about seeing each step.
                every=1,
                histogram_every=5,
                snapshot_every=25,
                probe=probe,
                loss_fn=F.cross_entropy,
                # At each epoch's end, the 9 held-out digits that excite each channel most.
                top_k=9,
                dataset=(held_x, held_y),
            )
        step, epoch = 0, 0
        while step < steps:
            perm = torch.randperm(N_TRAIN, generator=order)
            batches = range(0, N_TRAIN - BATCH + 1, BATCH)
            for i, start in enumerate(batches):
                idx = perm[start : start + BATCH]
                loss = F.cross_entropy(model(images[idx]), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                metrics = {"loss": loss.item()}
                if i == len(batches) - 1 or step == steps - 1:  # end of epoch: held-out accuracy
                    model.eval()
                    with torch.no_grad():
                        logits = model(held_x)
                    model.train()
                    metrics["val_loss"] = F.cross_entropy(logits, held_y).item()
                    metrics["val_acc"] = (logits.argmax(1) == held_y).float().mean().item()
                run.log(metrics, step=step, epoch=epoch)
                step += 1
                if step >= steps:
                    break
            progress(f"  {config.name}: epoch {epoch} step {step} loss {loss.item():.3f}")
            epoch += 1
        return run.id
