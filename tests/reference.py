"""A reference run without the tracker: what plain autograd says each quantity is, step by step.

activation      = the module's output (each floating tensor in it, cloned after the forward)
activation_grad = torch.autograd.grad(loss, output)            (divided by the loss scale, if any)
weight          = the parameter after the optimizer step
weight_grad     = param.grad after backward                     (unscaled like GradScaler does)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tracker.capture.outputs import output_parts

Key = tuple[str, str, str, int]  # layer, quantity, part, call


@dataclass
class ReferenceStep:
    tensors: dict[Key, np.ndarray] = field(default_factory=dict)
    loss: float = 0.0


def as_numpy(t: Tensor) -> np.ndarray:
    """NumPy copy; bfloat16 widens to float32 exactly (NumPy has no bfloat16)."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).clone().numpy()


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules watched by default: no children, or owning parameters directly."""
    out = []
    for name, module in model.named_modules():
        leaf = next(module.children(), None) is None
        owns = next(module.parameters(recurse=False), None) is not None
        if leaf or owns:
            out.append((name or "model", module))
    return out


def reference_run(
    model: nn.Module,
    batches: Iterable[tuple[Any, Tensor]],
    loss_fn: Callable[[Any, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    autocast: torch.dtype | None = None,
    loss_scale: float = 1.0,
) -> list[ReferenceStep]:
    """Train ``model`` on ``batches`` and record every quantity with plain autograd."""
    outputs: list[tuple[str, int, str, Tensor]] = []
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: object, output: Any) -> None:
            call = calls.get(name, 0)
            calls[name] = call + 1
            outputs.extend((name, call, part, t) for part, t in output_parts(output))

        return record

    modules = leaf_modules(model)
    handles = [m.register_forward_hook(hook(n)) for n, m in modules]
    steps = []
    try:
        for x, y in batches:
            outputs.clear()
            calls.clear()
            with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
                loss = loss_fn(model(x), y)
            step = ReferenceStep(loss=loss.item())
            scaled = loss * loss_scale if loss_scale != 1.0 else loss
            graph = [(n, c, p, o) for n, c, p, o in outputs if o.requires_grad]
            grads = torch.autograd.grad(
                scaled, [o for *_, o in graph], retain_graph=True, allow_unused=True
            )
            for (name, call, part, _), g in zip(graph, grads, strict=True):
                if g is not None:
                    g = g.float() / loss_scale if loss_scale != 1.0 else g
                    step.tensors[(name, "activation_grad", part, call)] = as_numpy(g)
            for name, call, part, out in outputs:
                step.tensors[(name, "activation", part, call)] = as_numpy(out)
            optimizer.zero_grad()
            scaled.backward()
            for name, module in modules:
                for pname, p in module.named_parameters(recurse=False):
                    if p.grad is not None:
                        if loss_scale != 1.0:
                            p.grad.mul_(1.0 / loss_scale)  # what GradScaler.unscale_ does
                        step.tensors[(name, "weight_grad", pname, 0)] = as_numpy(p.grad)
            optimizer.step()
            for name, module in modules:
                for pname, p in module.named_parameters(recurse=False):
                    step.tensors[(name, "weight", pname, 0)] = as_numpy(p)
            steps.append(step)
    finally:
        for h in handles:
            h.remove()
    return steps


def assert_run_matches(
    reader: Any,
    expected: list[ReferenceStep],
    rtol: float = 2e-5,
    atol: float = 1e-6,
    exact: bool = True,
) -> int:
    """Check every reference tensor of every step against the stored stats, snapshot and
    histogram (bit-exact for the last two unless ``exact=False``, for a reference computed
    with different kernels); return how many tensors were checked."""
    from tracker.capture.histogram import reference_histogram
    from tracker.capture.stats import reference_stats

    checked = 0
    for step, ref in enumerate(expected):
        for (layer, quantity, part, call), want in ref.tensors.items():
            where = f"{layer} {quantity} {part} call {call} step {step}"
            steps, rows = reader.stats(layer, quantity, part, call)
            hit = np.flatnonzero(steps == step)
            assert hit.size == 1, f"no stats for {where}"
            kind = reader.layer_info(layer)["kind"] if quantity == "activation" else None
            want32 = want.astype(np.float32) if want.dtype != np.float32 else want
            np.testing.assert_allclose(
                rows[hit[0]], reference_stats(want32, kind), rtol=rtol, atol=atol, err_msg=where
            )
            snap = reader.tensor(layer, quantity, step, part, call)
            bounded = (
                want[: snap.shape[0]] if quantity.startswith("activation") and want.ndim else want
            )
            assert snap.dtype == bounded.dtype, where
            if not exact:
                np.testing.assert_allclose(snap, bounded, rtol=rtol, atol=atol, err_msg=where)
                checked += 1
                continue
            np.testing.assert_array_equal(snap, bounded, err_msg=where)
            hist_steps, hists = reader.histograms(layer, quantity, part, call)
            np.testing.assert_array_equal(
                hists[hist_steps.tolist().index(step)], reference_histogram(want32), err_msg=where
            )
            checked += 1
    return checked
