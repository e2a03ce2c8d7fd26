"""Find the floating-point tensors inside whatever a module returns, with stable part names."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor

MAX_PARTS = 16
_MAX_DEPTH = 4


def output_parts(output: Any) -> list[tuple[str, Tensor]]:
    """Return (part name, tensor) for each floating tensor in ``output``.

    A plain tensor is "output"; containers add their keys: an LSTM's ``(out, (h, c))`` gives
    "output.0", "output.1.0", "output.1.1"; named tuples (PackedSequence) and dataclasses use field
    names ("output.0.data"); dicts use their keys.
    """
    if isinstance(output, Tensor):  # the common case, kept cheap
        return [("output", output)] if output.is_floating_point() else []
    parts: list[tuple[str, Tensor]] = []
    _collect(output, "output", parts, 0)
    return parts


def _collect(value: Any, name: str, parts: list[tuple[str, Tensor]], depth: int) -> None:
    if len(parts) >= MAX_PARTS or depth > _MAX_DEPTH:
        return
    if isinstance(value, Tensor):
        if value.is_floating_point():
            parts.append((name, value))
        return
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple, PackedSequence
        items = list(zip(value._fields, value, strict=True))
    elif isinstance(value, tuple | list):
        items = [(str(i), v) for i, v in enumerate(value)]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    else:
        return
    for key, item in items:
        _collect(item, f"{name}.{key}", parts, depth + 1)
