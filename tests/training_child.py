"""A training process for the reliability tests: trains with the tracker watching and reports,
through a pipe, every step the tracker acknowledged (run.flush() returned True)."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import torch
import torch.nn.functional as F

import tracker
from tracker.demo import digits_cnn, load_digits_tensors
from tracker.writer import WriterConfig

BATCH = 32


def _warm_up() -> None:
    """Import everything a run uses while still root: the interpreter's own library may not be
    readable by the user the child becomes."""
    with tempfile.TemporaryDirectory() as folder:
        model = digits_cnn()
        with tracker.init(project="warm-up", store=folder) as run:
            run.watch(model, every=1, histogram_every=1, snapshot_every=1)
            model(torch.zeros(2, 1, 8, 8)).sum().backward()
            run.log({"loss": 0.0})


def train(
    store: str,
    name: str,
    steps: int,
    flush_every: int,
    conn: Any,
    database_url: str | None = None,
    uid: int | None = None,
    pause: float = 0.0,
) -> None:
    """Train ``steps`` steps; after every ``flush_every`` send the steps acknowledged so far with
    their losses: [(step, loss), ...]. Sends "started" once the run exists, "done" at the end.
    ``pause`` seconds of sleep per step make the run last at least ``steps * pause`` seconds,
    for tests that change the disk under it for a while."""
    torch.set_num_threads(1)
    images, labels = load_digits_tensors()
    if uid is not None:  # as an unprivileged user, so file permissions apply
        _warm_up()
        os.setgid(uid)
        os.setuid(uid)
    torch.manual_seed(0)
    model = digits_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    # Small segments and a short flush interval: many commits, so kills land between any two.
    config = WriterConfig(steps_per_segment=7, flush_seconds=0.2)
    run = tracker.init(
        project="reliability", name=name, store=store, writer=config, database_url=database_url
    )
    conn.send("started")
    run.watch(model, every=1, histogram_every=3, snapshot_every=5)
    unacknowledged: list[tuple[int, float]] = []
    for step in range(steps):
        i = (step * BATCH) % 1400
        loss = F.cross_entropy(model(images[i : i + BATCH]), labels[i : i + BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.item()
        run.log({"loss": value}, step=step, epoch=step // 20)
        unacknowledged.append((step, value))
        if pause:
            time.sleep(pause)
        if (step + 1) % flush_every == 0:
            if run.flush(timeout=30):
                conn.send(unacknowledged)
            unacknowledged = []  # a failed flush acknowledges none of them, now or later
    run.finish()
    conn.send("done")
