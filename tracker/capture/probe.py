"""Probe inputs: the same fixed batch run through the model at each snapshot step.

Training batches change every step, so their snapshots cannot be compared picture by picture; a
fixed probe can, across epochs and across runs (the way ConvNetJS shows one example flowing through
the net). Running it must not change training: no parameter .grad is touched (gradients are taken
with torch.autograd.grad with respect to the layer outputs only), and BatchNorm running statistics,
train/eval modes and RNG states are put back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tracker.errors import InvalidArgumentError

ProbeMode = Literal["eval", "train"]


@dataclass(frozen=True)
class Probe:
    """Fixed inputs (and optional targets with a loss function) for probe snapshots."""

    inputs: Any
    targets: Any = None
    loss_fn: Callable[[Any, Any], Tensor] | None = None
    # eval: dropout off and BatchNorm on its running statistics, so the picture depends only on
    # the weights; train: the model's own mode at the time.
    mode: ProbeMode = "eval"

    @classmethod
    def make(cls, probe: Any, loss_fn: Callable[[Any, Any], Tensor] | None, mode: str) -> Probe:
        """Build from run.watch's ``probe=inputs`` or ``probe=(inputs, targets)``."""
        if mode not in ("eval", "train"):
            raise InvalidArgumentError(f"probe_mode must be 'eval' or 'train', got {mode!r}")
        if isinstance(probe, tuple | list) and len(probe) == 2:
            inputs, targets = probe
        else:
            inputs, targets = probe, None
        if targets is not None and loss_fn is None:
            raise InvalidArgumentError(
                "probe has targets but no loss_fn: pass loss_fn=... (e.g. F.cross_entropy) "
                "so activation gradients can be computed for the probe"
            )
        return cls(_detached(inputs), _detached(targets), loss_fn, mode)  # type: ignore[arg-type]

    def run(self, model: nn.Module, outputs: list[Tensor]) -> None:
        """Forward (and backward to the captured ``outputs``) the probe through ``model``."""
        with preserved_state(model, self.mode), torch.enable_grad():
            out = model(self.inputs)
            if self.loss_fn is None or self.targets is None:
                return
            loss = self.loss_fn(out, self.targets)
            wanted = [t for t in outputs if t.requires_grad]
            if wanted and loss.requires_grad:
                torch.autograd.grad(loss, wanted, allow_unused=True)


def _detached(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple | list):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def preserved_state(model: nn.Module, mode: ProbeMode) -> Iterator[None]:
    """Restore buffers (BatchNorm statistics), module modes and RNG state on exit."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    if mode == "eval":
        model.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, training in modes:
            module.training = training
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
