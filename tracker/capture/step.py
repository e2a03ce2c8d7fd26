"""What a watch hands over when a step closes (the engine makes StepBlocks of it, block.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from tracker.capture.stats import ActivationKind

# Bits of TensorEntry.flags / Summary.flags.
GRAD_ENABLED = 1  # the forward ran with autograd on (a training forward)
TRAINING_MODE = 2  # module.training was True (not eval mode)
PROBE = 4  # the forward/backward of the fixed probe inputs (run.watch(probe=...)), not training


@dataclass
class TensorEntry:
    """A reference to one tensor of one step; nothing is copied unless in-place ops require it."""

    layer: str
    quantity: str
    part: str  # "output", "output.0", ... for activations; the parameter name for weights
    call: int  # 0 for the first forward call of the module in this step, 1 for the next, ...
    flags: int
    tensor: Tensor
    kind: ActivationKind = None
    # The source tensor's version counter at capture time, to detect later in-place writes.
    version_of: Tensor | None = None
    version: int = 0

    def mutated(self) -> bool:
        """True if the source tensor was written in place since it was captured."""
        return self.version_of is not None and self.version_of._version != self.version


@dataclass
class WatchCapture:
    """All tensors one watch captured for one step, plus what to compute from them."""

    step: int
    histograms: bool
    snapshots: bool
    snapshot_samples: int
    snapshot_max_elements: int
    snapshot_dtype: object  # torch.dtype | None
    entries: list[TensorEntry] = field(default_factory=list)
    layer_shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    dropped_inplace: int = 0
    skipped_calls: int = 0
    # torch.amp.GradScaler: the loss scale backward used, and the scale after scaler.update().
    # Activation gradients are divided by the first; a smaller second means the step overflowed.
    histogram_max_elements: int | None = None
    grad_scale: Tensor | None = None
    scale_after: Tensor | None = None
    # The watch's online problem detectors (tracker.alerts), fed by the worker; None if off.
    detector: object = None
    # CUDA: an event per device on the training stream when the step closed (device.py).
    ready: dict = field(default_factory=dict)
