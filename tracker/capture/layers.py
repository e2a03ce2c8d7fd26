"""Choose which modules of a model to watch, and describe them."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from tracker.capture.stats import ActivationKind
from tracker.errors import InvalidArgumentError
from tracker.names import ROOT_LAYER_NAME, check_name

LayerSelector = (
    None
    | str
    | Sequence[str]
    | type[nn.Module]
    | tuple[type[nn.Module], ...]
    | Callable[[str, nn.Module], bool]
)

_KINDS: dict[type[nn.Module], ActivationKind] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
}


@dataclass(frozen=True)
class LayerSpec:
    """One watched module: its stable name, type, and directly owned parameters."""

    name: str
    module: nn.Module
    type_name: str
    kind: ActivationKind
    params: tuple[tuple[str, nn.Parameter], ...]
    position: int  # order in named_modules(), i.e. roughly depth in the network
    # Floating-point buffers (BatchNorm's running_mean/running_var), recorded like weights.
    buffers: tuple[tuple[str, Tensor], ...] = ()


def activation_kind(module: nn.Module) -> ActivationKind:
    """'relu' / 'sigmoid' / 'tanh' for modules whose outputs get dead or saturation stats."""
    for cls, kind in _KINDS.items():
        if isinstance(module, cls):
            return kind
    return None


def _default(name: str, module: nn.Module) -> bool:
    # Leaves, plus modules that own parameters directly (nn.MultiheadAttention.in_proj_weight).
    has_children = next(module.children(), None) is not None
    owns_params = next(module.parameters(recurse=False), None) is not None
    return not has_children or owns_params


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside torch.compile, DistributedDataParallel or DataParallel wrappers,
    so layer names are the same with and without them ("conv1", not "_orig_mod.module.conv1")."""
    for _ in range(4):
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if inner is None and isinstance(
            model, nn.DataParallel | nn.parallel.DistributedDataParallel
        ):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def select_layers(
    model: nn.Module, layers: LayerSelector = None, prefix: str = ""
) -> list[LayerSpec]:
    """Return the modules ``layers`` picks (names or globs, types, or a predicate), in order.

    None picks every named submodule with no children (and any that owns parameters itself).
    """
    model = unwrap(model)
    named = list(model.named_modules())
    if isinstance(layers, str):
        layers = [layers]
    if layers is None:
        predicate: Callable[[str, nn.Module], bool] = _default
    elif isinstance(layers, type) or (
        isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers)
    ):
        types = layers

        def predicate(name: str, module: nn.Module) -> bool:
            return isinstance(module, types)
    elif callable(layers):
        predicate = layers
    elif isinstance(layers, Sequence):
        names = [n for n, _ in named]
        patterns: list[str] = []
        for pattern in layers:
            if not isinstance(pattern, str):
                raise InvalidArgumentError(f"layer names must be strings, got {pattern!r}")
            patterns.append(pattern)
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                listing = ", ".join(n for n in names if n) or "(the model has no submodules)"
                raise InvalidArgumentError(f"no layer matches {pattern!r}; layers are: {listing}")

        def predicate(name: str, module: nn.Module) -> bool:
            return any(fnmatch.fnmatchcase(name, p) for p in patterns)
    else:
        raise InvalidArgumentError(
            "layers must be None, a name or glob, a list of them, a module type, or a callable "
            f"(name, module) -> bool; got {type(layers).__name__}"
        )
    specs = []
    for position, (name, module) in enumerate(named):
        if not predicate(name, module):
            continue
        full = prefix + (name or ROOT_LAYER_NAME)
        specs.append(
            LayerSpec(
                name=check_name(full, "layer name"),
                module=module,
                type_name=type(module).__name__,
                kind=activation_kind(module),
                params=tuple(module.named_parameters(recurse=False)),
                position=position,
                buffers=tuple(
                    (n, b) for n, b in module.named_buffers(recurse=False) if b.is_floating_point()
                ),
            )
        )
    if not specs:
        raise InvalidArgumentError("the layer selection matched no module of the model")
    return specs
