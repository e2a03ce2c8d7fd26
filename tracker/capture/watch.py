"""Hooks on a model's layers: the handle returned by ``run.watch(model)``.

Hooks only take references; the arithmetic happens once the step closes (engine.py, direct.py):
- activation: a forward hook keeps ``output.detach()`` (a view, no copy). Outputs later written in
  place (``ReLU(inplace=True)``, ``x += y``) are found by their version counter: a layer's first
  recorded step clones its outputs and checks; layers seen mutated are cloned from then on.
- activation_grad: the forward hook registers ``output.register_hook``, which autograd calls with
  dLoss/d(output) even when the output was later modified in place (never full backward hooks, which
  fail on in-place ops).
- weight_grad: ``register_post_accumulate_grad_hook`` keeps the accumulated ``param.grad``.
- weight: the parameter itself, taken when the step closes.
Forwards re-run inside backward (activation checkpointing) are not recorded twice.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from tracker.capture.device import ready_events
from tracker.capture.gradhook import add_grad_hook
from tracker.capture.layers import LayerSpec, unwrap
from tracker.capture.outputs import output_parts
from tracker.capture.policy import WatchPolicy
from tracker.capture.probe import Probe
from tracker.capture.step import GRAD_ENABLED, PROBE, TRAINING_MODE, TensorEntry, WatchCapture

# Parameters belong to the training step, whatever forwards ran around it.
_PARAM_FLAGS = GRAD_ENABLED | TRAINING_MODE


def _in_backward() -> bool:
    # A forward hook firing while autograd runs a graph is an activation-checkpointing recompute.
    return torch._C._current_graph_task_id() != -1


def _dynamo_frames() -> int | None:
    """Frames torch.compile has compiled in this process so far (None: cannot tell)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["frames"]["total"])
    except Exception:  # a private counter: any other torch simply keeps its hooks on
        return None


@torch.compiler.disable
def _eager_forward_hook(
    watch: Watch, index: int, module: nn.Module, args: Any, output: Any
) -> None:
    watch._compiled = True  # dynamo traced the hook: its graphs expect it, keep it attached
    watch._on_forward(index, module, args, output)


class Watch:
    """Hooks on the chosen layers of one model; a context manager, closed at most once.

    >>> with tracker.init(project="demo") as run:
    ...     with run.watch(model) as watch:       # or watch = run.watch(model); watch.close()
    ...         train(model)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[LayerSpec],
        policy: WatchPolicy,
        on_error: Callable[[str, BaseException], None],
        on_close: Callable[[Watch], None],
        before_param_write: Callable[[], None] = lambda: None,
        scaler: Any = None,
        probe: Probe | None = None,
        detector: Any = None,
    ) -> None:
        self.model = model
        self.policy = policy
        self._specs = layers
        self._index = {spec.name: i for i, spec in enumerate(layers)}
        self._on_error = on_error
        self._on_close = on_close
        self._before_param_write = before_param_write
        self._scaler = scaler  # torch.amp.GradScaler whose scale is undone on activation grads
        self._step_scale: Tensor | None = None
        self._probe = probe
        self.detector = detector  # tracker.alerts.ProblemWatcher, or None
        self._probing = False
        self._probe_outputs: list[Tensor] = []
        self._lock = threading.Lock()  # guards buffers: backward may run hooks on other threads
        self._closed = False
        self._recording = False
        self._hist = self._snap = False
        self._calls = [0] * len(layers)
        self._entries: list[TensorEntry] = []
        self._param_grads: dict[int, Tensor] = {}
        self._trusted: set[tuple[int, str]] = set()  # (layer, part) outputs never seen mutated
        self._grads_seen: set[int] = set()  # ids of parameters whose gradient was recorded
        self._cloned: set[tuple[int, str]] = set()  # outputs that other ops write in place
        self._shapes: dict[str, dict[str, list[int]]] = {}
        self._skipped_calls = 0
        self._last_closed: int | None = None
        self._closed_calls = [0] * len(layers)
        # Hooks are taken off between recorded steps (see _set_hooks), unless torch.compile is
        # involved: dynamo does not notice hooks added after it compiled a module.
        self._compiled = getattr(model, "_orig_mod", None) is not None
        self._eager_forward_seen = False
        self._frames_when_detached: int | None = None
        self._forward_handles: list[RemovableHandle] = []
        self._param_handles: list[RemovableHandle] = []
        self._set_hooks(True, True)

    @property
    def layers(self) -> list[str]:
        """Names of the watched layers, in model order."""
        return [s.name for s in self._specs]

    @property
    def specs(self) -> list[LayerSpec]:
        """Descriptions of the watched layers."""
        return list(self._specs)

    @property
    def closed(self) -> bool:
        """True once the hooks are removed."""
        return self._closed

    def close(self) -> None:
        """Remove every hook (in reverse order); safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._detach()
        with self._lock:
            self._entries.clear()
            self._param_grads.clear()
        self._on_close(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Watch {type(self.model).__name__} layers={len(self._specs)} {state}>"

    # -- called by the run -------------------------------------------------------------------

    def begin_step(self, step: int) -> None:
        """Arm the hooks for the step the next run.log() is expected to close."""
        stats, hist, snap = self.policy.cadence(step)
        previous = self._recording
        self._recording = stats and not self._closed
        self._hist, self._snap = hist, snap
        # The step after a recorded one keeps the parameter hooks: its backward must wait before
        # it adds into a .grad the worker may still be reading (_before_grad_accumulates).
        self._set_hooks(forward=self._recording, params=self._recording or previous)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Forwards inside record nothing (the tracker's own passes: top-k, receptive fields)."""
        recording, self._recording = self._recording, False
        try:
            yield
        finally:
            self._recording = recording and not self._closed

    def run_probe(self) -> None:
        """At a snapshot step, record the probe inputs' activations and their gradients."""
        if self._probe is None or not (self._recording and self._snap) or self._closed:
            return
        self._probing = True
        try:
            self._probe.run(unwrap(self.model), self._probe_outputs)
        except Exception as exc:  # I1: a broken probe must not stop training
            self._on_error("running the probe inputs", exc)
        finally:
            self._probing = False
            self._probe_outputs.clear()

    def end_step(self, step: int) -> WatchCapture | None:
        """Hand over what was captured since begin_step(), or None if this step records nothing."""
        with self._lock:
            entries, self._entries = self._entries, []
            grads, self._param_grads = self._param_grads, {}
            skipped, self._skipped_calls = self._skipped_calls, 0
            calls, self._calls = self._calls, [0] * len(self._specs)
        repeated = step == self._last_closed
        if repeated:  # log() twice for one step: number the new calls after the earlier ones
            for entry in entries:
                entry.call += self._closed_calls[self._index[entry.layer]]
            calls = [a + b for a, b in zip(calls, self._closed_calls, strict=True)]
        self._last_closed, self._closed_calls = step, calls
        step_scale, self._step_scale = self._step_scale, None
        if not self._recording or self._closed:
            return None
        policy = self.policy
        capture = WatchCapture(
            step=step,
            histograms=self._hist,
            snapshots=self._snap,
            snapshot_samples=policy.snapshot_samples,
            snapshot_max_elements=policy.snapshot_max_elements,
            snapshot_dtype=policy.torch_snapshot_dtype(),
            skipped_calls=skipped,
            histogram_max_elements=policy.histogram_max_elements,
            detector=self.detector,
        )
        if self._scaler is not None:
            capture.grad_scale = step_scale
            capture.scale_after = self._current_scale()
        for entry in entries:
            if entry.quantity == "activation" and not self._check_activation(entry):
                capture.dropped_inplace += 1
                continue
            capture.entries.append(entry)
        if not repeated:  # parameters were taken when the step first closed
            self._add_parameters(capture, grads)
        capture.ready = ready_events(e.tensor for e in capture.entries)
        capture.layer_shapes = self._shapes
        self._shapes = {}
        return capture

    # -- hooks ----------------------------------------------------------------------------------

    def _set_hooks(self, forward: bool, params: bool) -> None:
        """Attach the hooks a step needs and take off those it does not.

        Even a hook that returns at once costs each module call ~12 us of torch's hook
        dispatch, and each parameter a Python call in backward: on a small model that is several
        percent of a step that records nothing (bench/README.md). Forward hooks are needed only
        by a recorded step; parameter hooks also by the step after one (its backward must wait
        before adding into a .grad the worker may still be reading). Attaching costs ~3 us a
        hook, at most twice per recorded step.
        """
        if self._closed:
            return
        if forward and not self._forward_handles:
            frames = self._frames_when_detached
            if frames is not None and _dynamo_frames() != frames:
                self._compiled = True
                self._on_error(
                    "attaching hooks",
                    RuntimeError(
                        "torch.compile compiled code while the watch's hooks were off between "
                        "recorded steps; dynamo does not see hooks added later, so the layers "
                        "it compiled then may record nothing. Compile the model before its first "
                        "training step or before run.watch(), or watch with every=1"
                    ),
                )
            self._attach_forward()
        if params and not self._param_handles:
            self._attach_params()
        off_forward = not forward and self._forward_handles
        off_params = not params and self._param_handles
        if (off_forward or off_params) and self._may_detach():
            if off_forward:
                self._frames_when_detached = _dynamo_frames()
                _remove(self._forward_handles)
            if off_params:
                _remove(self._param_handles)

    def _may_detach(self) -> bool:
        # Not before an eager forward has run through the hooks (a first forward under
        # torch.compile marks the watch compiled instead), and not once torch.compile has
        # compiled anything in this process (or if we cannot tell).
        return not self._compiled and self._eager_forward_seen and _dynamo_frames() == 0

    def _attach_forward(self) -> None:
        for index, spec in enumerate(self._specs):
            hook = functools.partial(self._on_forward, index)
            self._forward_handles.append(spec.module.register_forward_hook(hook))

    def _attach_params(self) -> None:
        seen: set[int] = set()
        for spec in self._specs:
            for _, param in spec.params:
                if id(param) in seen or not param.requires_grad:
                    continue
                seen.add(id(param))
                # Before autograd adds into .grad in place (no zero_grad, gradient accumulation),
                # the worker must be done reading the previous step's gradient.
                handles = self._param_handles
                handles.append(param.register_hook(self._before_grad_accumulates))
                handles.append(param.register_post_accumulate_grad_hook(self._on_param_grad))

    def _detach(self) -> None:
        _remove(self._forward_handles)
        _remove(self._param_handles)

    def _on_forward(self, index: int, module: nn.Module, args: Any, output: Any) -> None:
        if torch.compiler.is_compiling():
            # Under torch.compile the hook runs eagerly (a graph break per watched module): traced,
            # its register_hook and version checks would not see real tensors. Checked here rather
            # than by wrapping every hook in torch.compiler.disable, which costs each eager call
            # ~10 us of frame-evaluation bookkeeping.
            _eager_forward_hook(self, index, module, args, output)
            return
        self._eager_forward_seen = True
        if not self._recording:
            return
        try:
            self._capture_output(index, module, output)
        except Exception as exc:  # I1: a tracking bug must never break the user's forward
            self._on_error("capturing an activation", exc)

    def _capture_output(self, index: int, module: nn.Module, output: Any) -> None:
        # Runs per watched module per recorded forward, on the training thread: kept lean.
        if _in_backward():
            return
        with self._lock:
            call = self._calls[index]
            if call >= self.policy.max_calls:
                self._skipped_calls += 1
                return
            self._calls[index] = call + 1
        grad_on = torch.is_grad_enabled()
        flags = (GRAD_ENABLED if grad_on else 0) | (TRAINING_MODE if module.training else 0)
        if self._probing:
            flags |= PROBE
        spec = self._specs[index]
        if type(output) is Tensor:  # the common case, without output_parts' generality
            parts = [("output", output)] if output.is_floating_point() else []
        else:
            parts = output_parts(output)
        entries = []
        for part, tensor in parts:
            view = tensor.detach()
            data = view if (index, part) in self._trusted else view.clone()
            entries.append(
                TensorEntry(
                    spec.name, "activation", part, call, flags, data, spec.kind, view, view._version
                )
            )
            if call == 0 and part not in self._shapes.get(spec.name, ()):
                self._shapes.setdefault(spec.name, {})[part] = list(tensor.shape)
            if grad_on and tensor.requires_grad:
                add_grad_hook(tensor, functools.partial(self._on_grad, index, part, call, flags))
                if self._probing:
                    self._probe_outputs.append(tensor)
        with self._lock:
            self._entries.extend(entries)

    def _current_scale(self) -> Tensor | None:
        scale = getattr(self._scaler, "_scale", None)  # a tensor once scaler.scale() ran
        return scale.detach().clone() if isinstance(scale, Tensor) else None

    def _note_scale(self) -> None:
        # The first gradient of a step tells which loss scale this backward used.
        if self._scaler is not None and self._step_scale is None:
            self._step_scale = self._current_scale()

    def _on_grad(self, index: int, part: str, call: int, flags: int, grad: Tensor) -> None:
        try:
            self._note_scale()
            if self._recording and grad is not None:
                entry = TensorEntry(
                    self._specs[index].name, "activation_grad", part, call, flags, grad
                )
                with self._lock:
                    self._entries.append(entry)
        except Exception as exc:  # I1
            self._on_error("capturing an activation gradient", exc)

    def _before_grad_accumulates(self, grad: Tensor) -> None:
        try:
            self._note_scale()
            self._before_param_write()
        except Exception as exc:  # I1
            self._on_error("waiting for the stats worker", exc)

    def _on_param_grad(self, param: Tensor) -> None:
        if self._recording and param.grad is not None:
            self._param_grads[id(param)] = param.grad

    # -- step close helpers --------------------------------------------------------------------

    def _check_activation(self, entry: TensorEntry) -> bool:
        """Decide whether a captured output is still the module's output; learn which to clone."""
        key = (self._index[entry.layer], entry.part)
        mutated = entry.mutated()
        cloned = entry.tensor is not entry.version_of
        entry.version_of = None  # drop the extra reference now
        if mutated:
            self._trusted.discard(key)
            self._cloned.add(key)
            return cloned  # a clone still holds the true output; a bare view does not
        if key not in self._cloned:
            self._trusted.add(key)
        return True

    def _add_parameters(self, capture: WatchCapture, grads: dict[int, Tensor]) -> None:
        # Parameters are leaves outside any graph: the worker reads them as they are, no
        # detach() (a torch op per parameter per recorded step on the training thread).
        entries = capture.entries
        for spec in self._specs:
            name = spec.name
            for bname, buffer in spec.buffers:
                # Small, and rewritten in place by the next forward (BatchNorm): copy now.
                copy = buffer.detach().clone()
                entries.append(TensorEntry(name, "weight", bname, 0, _PARAM_FLAGS, copy))
            for pname, param in spec.params:
                entries.append(
                    TensorEntry(
                        name, "weight", pname, 0, _PARAM_FLAGS, param, None, param, param._version
                    )
                )
                grad = grads.get(id(param), param.grad)
                if grad is None:
                    continue
                if grad._version or id(param) not in self._grads_seen:
                    # Written in place before (zero_grad(set_to_none=False), accumulation over
                    # steps, DDP's bucket views), so the next zero_grad() may write it again
                    # before the worker reads it, with no hook to wait in, and a version check
                    # cannot see a write still in progress: copy it now. So too the first time,
                    # before we know. A fresh gradient (set_to_none, the default) has version 0.
                    self._grads_seen.add(id(param))
                    copy = grad.detach().clone()
                    entries.append(TensorEntry(name, "weight_grad", pname, 0, _PARAM_FLAGS, copy))
                    continue
                entries.append(
                    TensorEntry(
                        name, "weight_grad", pname, 0, _PARAM_FLAGS, grad, None, grad, grad._version
                    )
                )


def _remove(handles: list[RemovableHandle]) -> None:
    """Remove hooks in the reverse order of their registration, and forget them."""
    for handle in reversed(handles):
        handle.remove()
    handles.clear()
