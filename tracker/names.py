"""The vocabulary shared by capture, storage, reader and API: quantities, stats, layer names."""

from __future__ import annotations

import re
from typing import Final, Literal, get_args
from urllib.parse import quote, unquote

from tracker.errors import InvalidArgumentError

Quantity = Literal["activation", "activation_grad", "weight", "weight_grad"]
QUANTITIES: Final[tuple[str, ...]] = get_args(Quantity)
# Quantities keyed by parameter name ("weight", "bias"); the others by output part ("output").
PARAM_QUANTITIES: Final = frozenset({"weight", "weight_grad"})

QUANTITY_HELP: Final[dict[str, str]] = {
    "activation": "the layer's output in the forward pass",
    "activation_grad": "dLoss/d(output): how much the loss would change if this output changed",
    "weight": "the layer's parameters (weight, bias, ...) after the optimizer step",
    "weight_grad": "dLoss/d(parameter): the gradient the optimizer applies, after accumulation",
}

# Columns of every stats row, in stored order. Ratios are in [0, 1]; NaN means "not applicable".
STAT_NAMES: Final[tuple[str, ...]] = (
    "count",  # elements in the tensor
    "mean",  # over finite elements
    "std",  # population std over finite elements
    "min",  # over finite elements
    "max",
    "norm",  # L2 norm over finite elements
    "zero_frac",  # fraction of elements exactly 0
    "nan_count",
    "inf_count",
    "dead_frac",  # ReLU outputs: fraction of units never positive in the batch
    "saturated_frac",  # sigmoid/tanh outputs: fraction within 1% of the bounds
)
STAT_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(STAT_NAMES)}

# The name given to a watched module that has no children itself (named_modules() calls it "").
ROOT_LAYER_NAME: Final = "model"
MAX_NAME_LENGTH: Final = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_quantity(quantity: str) -> str:
    """Return ``quantity`` if it is one of QUANTITIES, else raise with the allowed values."""
    if quantity not in QUANTITIES:
        raise InvalidArgumentError(
            f"unknown quantity {quantity!r}; expected one of {', '.join(QUANTITIES)}"
        )
    return quantity


def check_stat(stat: str) -> int:
    """Return the column index of ``stat``, else raise with the allowed values."""
    try:
        return STAT_INDEX[stat]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown stat {stat!r}; expected one of {', '.join(STAT_NAMES)}"
        ) from None


def check_name(name: str, what: str = "name") -> str:
    """Validate a layer, metric, project or run name: printable, not a path component trick."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"{what} must be a string, got {type(name).__name__}")
    if not name or name in (".", ".."):
        raise InvalidArgumentError(f"{what} must be a non-empty string other than '.' or '..'")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(f"{what} is {len(name)} characters; at most {MAX_NAME_LENGTH}")
    if _CONTROL.search(name):
        raise InvalidArgumentError(f"{what} {name!r} contains control characters")
    return name


def encode(name: str) -> str:
    """Quote a name for use as one HDF5 path component or URL segment (I5)."""
    return quote(name, safe="")


def decode(component: str) -> str:
    """Invert :func:`encode`."""
    return unquote(component)
