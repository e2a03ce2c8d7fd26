"""A reference run without the tracker: what plain autograd says each quantity is, step by step.

activation      = the module's output (cloned right after the forward)
activation_grad = torch.autograd.grad(loss, output)
weight          = the parameter after the optimizer step
weight_grad     = param.grad after backward
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

Key = tuple[str, str, str, int]  # layer, quantity, part, call


@dataclass
class ReferenceStep:
    tensors: dict[Key, np.ndarray] = field(default_factory=dict)
    loss: float = 0.0


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
    batches: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
) -> list[ReferenceStep]:
    """Train ``model`` on ``batches`` and record every quantity with plain autograd."""
    outputs: list[tuple[str, int, Tensor]] = []
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: object, output: Tensor) -> None:
            call = calls.get(name, 0)
            calls[name] = call + 1
            outputs.append((name, call, output))

        return record

    modules = leaf_modules(model)
    handles = [m.register_forward_hook(hook(n)) for n, m in modules]
    steps = []
    try:
        for x, y in batches:
            outputs.clear()
            calls.clear()
            loss = loss_fn(model(x), y)
            step = ReferenceStep(loss=loss.item())
            graph = [(n, c, o) for n, c, o in outputs if o.requires_grad]
            grads = torch.autograd.grad(loss, [o for _, _, o in graph], retain_graph=True)
            for (name, call, _), g in zip(graph, grads, strict=True):
                step.tensors[(name, "activation_grad", "output", call)] = g.detach().clone().numpy()
            for name, call, out in outputs:
                step.tensors[(name, "activation", "output", call)] = out.detach().clone().numpy()
            optimizer.zero_grad()
            loss.backward()
            for name, module in modules:
                for pname, p in module.named_parameters(recurse=False):
                    if p.grad is not None:
                        step.tensors[(name, "weight_grad", pname, 0)] = (
                            p.grad.detach().clone().numpy()
                        )
            optimizer.step()
            for name, module in modules:
                for pname, p in module.named_parameters(recurse=False):
                    step.tensors[(name, "weight", pname, 0)] = p.detach().clone().numpy()
            steps.append(step)
    finally:
        for h in handles:
            h.remove()
    return steps
