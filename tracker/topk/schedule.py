"""When a watched model's top-k inputs are computed during training: at each new epoch (and at
finish) or every N steps; the pass runs on the training thread, like a validation pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from tracker.capture.layers import LayerSelector, unwrap
from tracker.capture.watch import Watch
from tracker.errors import InvalidArgumentError
from tracker.topk import top_k_layers
from tracker.topk.collect import TopKResult, collect_top_k, dataset_inputs

Every = Literal["epoch"] | int


@dataclass
class TopKSchedule:
    watch: Watch
    model: nn.Module
    dataset: Any
    layers: list[tuple[str, nn.Module]]
    k: int
    every: Every
    batch_size: int
    done_step: int | None = None  # step of the last pass

    @classmethod
    def make(
        cls,
        watch: Watch,
        k: int | None,
        every: Every,
        dataset: Any,
        layers: LayerSelector,
        batch_size: int,
    ) -> TopKSchedule | None:
        """Check run.watch's top-k arguments; None when top-k is off."""
        if not k:
            if dataset is not None:
                raise InvalidArgumentError("dataset= is for top-k: pass top_k=9 (or any k) too")
            return None
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidArgumentError(f"top_k must be an int >= 1, got {k!r}")
        if dataset is None:
            raise InvalidArgumentError(
                "top_k needs dataset=: held-out inputs (a tensor, an (inputs, targets) pair or "
                "a Dataset) to rank by how strongly they activate each channel"
            )
        dataset_inputs(dataset)  # fail now, not at the first epoch's end
        bad_count = isinstance(every, bool) or not isinstance(every, int) or every < 1
        if every != "epoch" and bad_count:
            raise InvalidArgumentError(f"top_k_every must be 'epoch' or an int >= 1, got {every!r}")
        model = unwrap(watch.model)
        return cls(watch, model, dataset, top_k_layers(model, layers), k, every, batch_size)

    def due_after_step(self, step: int) -> bool:
        return isinstance(self.every, int) and (step + 1) % self.every == 0

    def compute(self) -> TopKResult:
        with self.watch.paused():  # these forwards are not training steps
            return collect_top_k(self.model, self.dataset, self.layers, self.k, self.batch_size)
