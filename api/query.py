"""Query parameters the read routes share: points, probe, a step range, lists of names."""

from __future__ import annotations

import numpy as np
from flask import request

from api.errors import ApiError
from api.params import lookup
from api.store import arg, int_arg
from tracker.downsample import MAX_POINTS

MAX_RUNS = 8  # runs (or epochs) one compare request may name: more is unreadable as overlays


def points_arg() -> int | None:
    """``points``: downsample to at most this many buckets (None: every value)."""
    return int_arg("points", required=False, default=None, minimum=2, maximum=MAX_POINTS)


def bool_arg(name: str) -> bool:
    """A 0/1 (or false/true) flag, false when absent."""
    raw = arg(name, required=False)
    if raw is None or raw in ("0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise ApiError(400, f"query parameter {name!r} must be 0 or 1, got {raw!r}")


def step_range() -> tuple[int | None, int | None]:
    """``start``/``end``: the inclusive step range on screen (None: open)."""
    start = int_arg("start", required=False, default=None)
    end = int_arg("end", required=False, default=None)
    if start is not None and end is not None and end < start:
        raise ApiError(400, f"end ({end}) must not be before start ({start})")
    return start, end


def within(steps: np.ndarray, start: int | None, end: int | None) -> np.ndarray:
    """Boolean mask of ``steps`` inside [start, end]."""
    mask = np.ones(len(steps), dtype=bool)
    if start is not None:
        mask &= steps >= start
    if end is not None:
        mask &= steps <= end
    return mask


def list_arg(name: str, maximum: int, required: bool = True) -> list[str]:
    """A comma-separated list (no empty or repeated items, at most ``maximum``)."""
    raw = arg(name, required=required)
    if raw is None:
        return []
    items = raw.split(",")
    if any(not item for item in items):
        raise ApiError(400, f"query parameter {name!r} has an empty item: {raw!r}")
    if len(set(items)) != len(items):
        raise ApiError(400, f"query parameter {name!r} names an item twice: {raw!r}")
    if len(items) > maximum:
        raise ApiError(400, f"query parameter {name!r} takes at most {maximum} items")
    return items


def int_list_arg(name: str, maximum: int) -> list[int]:
    """A comma-separated list of non-negative integers (empty when absent)."""
    items = list_arg(name, maximum, required=False)
    # isascii(): str.isdigit() also accepts "³" and other digits int() refuses.
    if not all(item.isascii() and item.isdigit() and len(item) < 10 for item in items):
        raise ApiError(400, f"query parameter {name!r} must list integers >= 0, got {items!r}")
    values = [int(item) for item in items]
    if len(set(values)) != len(values):
        raise ApiError(400, f"query parameter {name!r} names a number twice: {items!r}")
    return values


def multi_arg(name: str, maximum: int) -> list[str]:
    """A repeatable query parameter (``tag=a&tag=b``): every value, at most ``maximum``."""
    if not lookup(name).repeat:
        raise RuntimeError(f"query parameter {name!r} is read as repeatable unlike its declaration")
    values = request.args.getlist(name)
    if len(values) > maximum:
        raise ApiError(400, f"query parameter {name!r} may be given at most {maximum} times")
    for value in values:
        if not value or len(value) > 1024 or "\x00" in value:
            raise ApiError(400, f"query parameter {name!r} is empty or malformed")
    return values
