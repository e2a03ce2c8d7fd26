"""Register a gradient hook on a tensor for one backward pass, cheaply.

``Tensor.register_hook`` builds a ``RemovableHandle`` (a weakref and a global counter) that a
watch never uses: its hooks die with the step's graph. In a forward hook on a real model that
handle is ~6 us of the ~12 us the call costs, paid per watched layer per recorded step on the
training thread. :func:`add_grad_hook` does what ``register_hook`` does for a plain tensor, in the
same order (``torch/_tensor.py``), minus the handle; anything unusual takes the public path.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

# Keys of our entries in a tensor's hook dict. RemovableHandle ids count up from 0, so negative
# ones never take the place of a hook someone else registered on the same tensor.
_keys = itertools.count(-1, -1)


def _private_api_present() -> bool:
    """The two private members register_hook itself uses (a torch without them: public path)."""
    with torch.enable_grad():
        probe = torch.zeros(1, requires_grad=True) * 1
    return hasattr(probe, "_backward_hooks") and hasattr(probe.grad_fn, "_register_hook_dict")


_FAST = _private_api_present()


def add_grad_hook(tensor: Tensor, hook: Callable[[Tensor], None]) -> None:
    """Call ``hook(grad)`` with dLoss/d``tensor`` when backward computes it (``tensor`` must
    require grad). Same semantics as ``tensor.register_hook(hook)``, no handle."""
    # Subclasses may override register_hook (__torch_function__): theirs is the one to call.
    if not _FAST or type(tensor) is not Tensor:
        tensor.register_hook(hook)
        return
    hooks = tensor._backward_hooks
    if hooks is None:
        hooks = OrderedDict()
        # Setting the dict installs the tensor pre-hook that reads it; the grad_fn needs the dict
        # too, so the hook also sees gradients of outputs later modified in place.
        tensor._backward_hooks = hooks
        grad_fn = tensor.grad_fn
        if grad_fn is not None:
            grad_fn._register_hook_dict(tensor)
    hooks[next(_keys)] = hook
