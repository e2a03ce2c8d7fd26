"""Snapshots: GET /api/v1/runs/<id>/tensor (JSON or .npy) and /runs/<id>/snapshots (their steps).

Both take ``probe=1`` for the probe inputs' snapshots (run.watch(probe=...)) instead of the
training batch's.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from flask import Blueprint, Response

from api.cache import immutable
from api.errors import ApiError
from api.params import CALL, LAYER, PARAM, PROBE, QUANTITY, STEP, query, text
from api.query import bool_arg
from api.store import arg, finite_or_none, get_reader, int_arg
from tracker.names import check_quantity

bp = Blueprint("tensors", __name__)


@bp.get("/runs/<run_id>/snapshots")
@immutable
@query(LAYER, QUANTITY, PARAM, CALL, PROBE)
def steps(run_id: str) -> dict[str, Any]:
    """Steps at which a snapshot of this tensor is stored."""
    layer = arg("layer") or ""
    quantity = check_quantity(arg("quantity") or "")
    param = arg("param", required=False)
    call = int_arg("call", required=False, default=None, maximum=10_000)
    probe = bool_arg("probe")
    found = get_reader(run_id).steps(layer, quantity, param, call, probe)
    return {
        "layer": layer,
        "quantity": quantity,
        "param": param,
        "probe": probe,
        "steps": found.tolist(),
    }


@bp.get("/runs/<run_id>/tensor")
@immutable
@query(
    LAYER,
    QUANTITY,
    STEP,
    PARAM,
    CALL,
    PROBE,
    text("format", "json (default) or npy", enum=("json", "npy")),
    text(
        "slice",
        "Part of the tensor, NumPy style per axis: '0:2,::4' or '3' (start:stop:step or an index)",
        maxLength=200,
    ),
)
def get(run_id: str) -> Any:
    """One stored snapshot, as JSON (flat row-major data) or as a NumPy .npy file; ``slice``
    cuts a big tensor on the server (``0:2,::4``: the first two samples, every 4th channel)."""
    layer = arg("layer") or ""
    quantity = check_quantity(arg("quantity") or "")
    step = int_arg("step")
    param = arg("param", required=False)
    call = int_arg("call", required=False, default=None, maximum=10_000)
    fmt = arg("format", required=False, default="json")
    if fmt not in ("json", "npy"):
        raise ApiError(400, f"format must be 'json' or 'npy', got {fmt!r}")
    probe = bool_arg("probe")
    reader = get_reader(run_id)
    data, meta = reader.tensor_with_meta(layer, quantity, step or 0, param, call, probe)
    cut = arg("slice", required=False)
    if cut is not None:
        data = np.ascontiguousarray(data[parse_slice(cut, data.shape)])
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, data, allow_pickle=False)
        return Response(
            buf.getvalue(),
            mimetype="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{quantity}-{step}.npy"'},
        )
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    return finite_or_none(
        {
            "layer": layer,
            "quantity": quantity,
            "param": param,
            "step": step,
            "probe": probe,
            "call": meta["call"],
            "slice": cut,
            "shape": list(data.shape),
            "full_shape": meta["full_shape"],
            "dtype": meta["dtype"],
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "data": data.reshape(-1),
        }
    )


def parse_slice(text: str, shape: tuple[int, ...]) -> tuple[int | slice, ...]:
    """``'0:2,::4,3'`` as an index of an array of ``shape``: ints and start:stop:step only (no
    ellipsis, no negative steps), so a request can only ever select part of one tensor."""
    parts = text.split(",")
    if len(parts) > len(shape):
        raise ApiError(400, f"slice has {len(parts)} axes; the tensor has {len(shape)}: {shape}")
    index: list[int | slice] = []
    for axis, part in enumerate(parts):
        fields = part.strip().split(":")
        try:
            numbers = [int(f) if f.strip() else None for f in fields]
        except ValueError:
            raise ApiError(
                400, f"slice axis {axis}: {part!r} is not int or start:stop:step"
            ) from None
        if len(numbers) == 1 and numbers[0] is not None:
            if not -shape[axis] <= numbers[0] < shape[axis]:
                raise ApiError(
                    400, f"slice axis {axis}: index {numbers[0]} is outside 0..{shape[axis] - 1}"
                )
            index.append(numbers[0])
        elif 2 <= len(numbers) <= 3:
            step = numbers[2] if len(numbers) == 3 else None
            if step is not None and step < 1:
                raise ApiError(400, f"slice axis {axis}: step must be >= 1, got {step}")
            index.append(slice(numbers[0], numbers[1], step))
        else:
            raise ApiError(400, f"slice axis {axis}: {part!r} is not int or start:stop:step")
    return tuple(index)
