"""add_grad_hook: the gradients register_hook would give, without its handle."""

from __future__ import annotations

import torch

from tracker.capture import gradhook


def _grads(register: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    seen: list[torch.Tensor] = []
    out = lin(x)
    if register == "public":
        out.register_hook(seen.append)
    else:
        gradhook.add_grad_hook(out, seen.append)
    out.relu_()  # modified in place after the hook: the hook still gets dLoss/d(original out)
    (out * torch.arange(3.0)).sum().backward()
    return seen


def test_same_gradient_as_register_hook_even_after_an_in_place_op() -> None:
    (public,) = _grads("public")
    (ours,) = _grads("ours")
    torch.testing.assert_close(ours, public, rtol=0, atol=0)


def test_hooks_of_others_on_the_same_tensor_still_run_in_order() -> None:
    x = torch.randn(3, requires_grad=True)
    y = x * 2
    order: list[str] = []
    handle = y.register_hook(lambda g: order.append("user before"))
    gradhook.add_grad_hook(y, lambda g: order.append("tracker"))
    y.register_hook(lambda g: order.append("user after"))
    handle.remove()  # removing the user's hook leaves ours in place
    y.sum().backward()
    assert order == ["tracker", "user after"]


def test_tensor_subclasses_take_the_public_path() -> None:
    class Tagged(torch.Tensor):
        pass

    x = torch.randn(3, requires_grad=True)
    y = (x * 2).as_subclass(Tagged)
    seen: list[torch.Tensor] = []
    gradhook.add_grad_hook(y, seen.append)
    y.sum().backward()
    assert len(seen) == 1 and seen[0].tolist() == [1.0, 1.0, 1.0]
