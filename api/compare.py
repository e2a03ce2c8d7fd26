"""Several runs, or several epochs of one run, side by side: GET /api/v1/compare[/...].

Every route takes the same selection:

- ``runs=a,b,...`` (1 to 8 run ids); with one run, ``epochs=1,5,...`` compares its epochs;
- ``align=step|epoch``: runs by global step, or by epoch (x = epoch + fraction of it); epochs of
  one run are always aligned by the steps since each epoch began;
- ``probe=1``: the probe inputs' rows (run.watch(probe=...)) for activations and their
  gradients; weights and their gradients do not depend on the inputs and ignore it.

Routes: ``/compare`` (one stat of one layer, overlaid curves, downsampled), ``/compare/layers``
(the layers that differ most, scored in aligned.py), ``/compare/histograms`` (at one aligned
step, on the shared bins, with the difference of their shares), ``/compare/snapshots`` (the
steps with snapshots, training batch and probe inputs) and ``/compare/tensors`` (snapshots at one
aligned step and their difference image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint

from api.aligned import FLOOR, SCORE_HELP, align, epoch_means, log10_floor, rank, score
from api.errors import ApiError
from api.histograms import edges_json, trim_range
from api.params import (
    LAYER,
    PARAM,
    POINTS,
    PROBE,
    QUANTITY,
    STAT,
    Param,
    integer,
    names,
    query,
    text,
)
from api.query import MAX_RUNS, bool_arg, int_list_arg, list_arg, points_arg
from api.store import arg, finite_or_none, get_reader, int_arg
from tracker.capture.histogram import to_display
from tracker.downsample import downsample
from tracker.errors import NotFoundError
from tracker.names import PARAM_QUANTITIES, QUANTITIES, check_quantity, check_stat
from tracker.reader import RunReader

bp = Blueprint("compare", __name__)
ALIGNS = ("step", "epoch")
DEFAULT_STAT = {
    "activation": "std",
    "activation_grad": "norm",
    "weight": "norm",
    "weight_grad": "norm",
}
DEFAULT_POINTS = 1000


@dataclass(frozen=True)
class Entry:
    """One side of a comparison: a whole run, or one epoch of it (steps first..last)."""

    reader: RunReader
    epoch: int | None = None
    first: int = 0
    last: int = 2**62

    @property
    def label(self) -> str:
        name = self.reader.info.name
        return name if self.epoch is None else f"{name} · epoch {self.epoch}"

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.reader.id,
            "name": self.reader.info.name,
            "epoch": self.epoch,
            "label": self.label,
            "first_step": None if self.epoch is None else self.first,
            "last_step": None if self.epoch is None else self.last,
        }

    def inside(self, steps: np.ndarray) -> np.ndarray:
        """The part of ``steps`` this entry covers."""
        if self.epoch is None:
            return steps
        return steps[(steps >= self.first) & (steps <= self.last)]


ENTRIES = (
    names("runs", "Run ids", MAX_RUNS, required=True),
    Param(
        "epochs",
        f"Epochs of the one run in runs= to compare (comma-separated, at most {MAX_RUNS})",
        {"type": "string", "pattern": "^[0-9]{1,9}(,[0-9]{1,9})*$"},
    ),
)
ALIGN = text("align", "Align entries by step (default) or epoch", enum=ALIGNS)
PICK = (
    integer("offset", "Epochs of one run: steps into each epoch (default: its last step)"),
    integer("epoch", "align=epoch: the epoch to show (default: the last)"),
    integer("step", "align=step: the latest step at or before this one (default: the last)"),
)


def entries() -> list[Entry]:
    """The runs (or epochs of one run) named by ``runs=`` and ``epochs=``."""
    run_ids = list_arg("runs", MAX_RUNS)
    epochs = int_list_arg("epochs", MAX_RUNS)
    readers = [get_reader(run_id) for run_id in run_ids]
    if not epochs:
        return [Entry(r) for r in readers]
    if len(readers) != 1:
        raise ApiError(400, "epochs= compares epochs of one run: give exactly one run in runs=")
    known = {e: (a, b) for e, a, b in readers[0].epochs()}
    missing = [e for e in epochs if e not in known]
    if missing:
        listed = ", ".join(str(e) for e in sorted(known)) or "none logged"
        raise ApiError(404, f"run {readers[0].id} has no epoch {missing[0]}; epochs: {listed}")
    return [Entry(readers[0], e, *known[e]) for e in epochs]


def align_arg(chosen: list[Entry]) -> str:
    """``align``, checked against what the entries have (epoch needs logged epochs)."""
    how = arg("align", required=False, default="step") or "step"
    if how not in ALIGNS:
        raise ApiError(400, f"align must be one of {', '.join(ALIGNS)}; got {how!r}")
    if how == "epoch" and chosen[0].epoch is None:
        for e in chosen:
            if not e.reader.epochs():
                raise ApiError(
                    400, f"run {e.reader.info.name!r} logged no epochs; align by step instead"
                )
    return how


def x_of(entry: Entry, steps: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(mask of ``steps`` that have a position, their x): step, steps into the epoch, or
    fractional epoch (epoch + fraction of its steps done)."""
    if entry.epoch is not None:
        keep = (steps >= entry.first) & (steps <= entry.last)
        return keep, (steps[keep] - entry.first).astype(np.float64)
    if how == "step":
        return np.ones(len(steps), dtype=bool), steps.astype(np.float64)
    keep = np.zeros(len(steps), dtype=bool)
    x = np.zeros(len(steps), dtype=np.float64)
    for epoch, first, last in entry.reader.epochs():
        inside = (steps >= first) & (steps <= last)
        keep |= inside
        x[inside] = epoch + (steps[inside] - first) / (last - first + 1)
    return keep, x[keep]


def x_label(chosen: list[Entry], how: str) -> str:
    if chosen[0].epoch is not None:
        return "steps since the epoch began"
    return "step" if how == "step" else "epoch"


def probe_for(quantity: str, probe: bool) -> bool:
    """``probe`` for activations and their gradients; weights do not depend on the inputs, so
    they are always the training rows (a probe pass records no weights)."""
    return probe and quantity not in PARAM_QUANTITIES


def _tensor_query() -> tuple[str, str, str | None]:
    layer = arg("layer") or ""
    quantity = check_quantity(arg("quantity") or "")
    return layer, quantity, arg("param", required=False)


# -- curves -------------------------------------------------------------------------------------


@bp.get("/compare")
@query(*ENTRIES, ALIGN, LAYER, QUANTITY, PARAM, STAT, POINTS, PROBE)
def curves() -> dict[str, Any]:
    """One stat of one layer for every entry, downsampled, on a shared x axis."""
    chosen = entries()
    how = align_arg(chosen)
    layer, quantity, param = _tensor_query()
    stat = arg("stat", required=False) or DEFAULT_STAT[quantity]
    column = check_stat(stat)
    points = points_arg() or DEFAULT_POINTS
    probe = probe_for(quantity, bool_arg("probe"))
    out = []
    for e in chosen:
        try:
            steps, rows = e.reader.stats(layer, quantity, param, None, probe)
        except NotFoundError as exc:
            out.append({**e.to_json(), "error": str(exc), "x": [], "steps": []})
            continue
        keep, x = x_of(e, steps, how)
        steps, values = steps[keep], rows[keep, column]
        s, mean, lo, hi = downsample(steps, values, points)
        where = np.searchsorted(steps, s)
        out.append(
            {
                **e.to_json(),
                "total": len(steps),
                "steps": s,
                "x": np.round(x[where], 6),
                "mean": mean,
                "min": lo,
                "max": hi,
            }
        )
    return finite_or_none(
        {
            "layer": layer,
            "quantity": quantity,
            "param": param,
            "stat": stat,
            "align": how,
            "x_label": x_label(chosen, how),
            "probe": probe,
            "entries": out,
        }
    )


# -- the layers that differ most ------------------------------------------------------------------


def _positions(e: Entry, steps: np.ndarray, values: np.ndarray, how: str) -> tuple[Any, Any]:
    """Integer positions to align on (step, steps into the epoch, or epoch) and log10 values."""
    logs = log10_floor(values)
    if e.epoch is not None:
        keep = (steps >= e.first) & (steps <= e.last)
        return steps[keep] - e.first, logs[keep]
    if how == "epoch":
        return epoch_means(steps, logs, e.reader.epochs())
    return steps, logs


def _main_part(reader: RunReader, layer: str, quantity: str) -> str | None:
    parts = reader.parts(layer, quantity)
    preferred = "weight" if quantity in PARAM_QUANTITIES else "output"
    return preferred if preferred in parts else (parts[0] if parts else None)


@bp.get("/compare/layers")
@query(*ENTRIES, ALIGN, QUANTITY.but(required=False), STAT, PROBE)
def layers() -> dict[str, Any]:
    """Every (layer, quantity) ranked by how far apart the entries' stat is, most first."""
    chosen = entries()
    if len(chosen) < 2:
        raise ApiError(400, "give at least two runs (runs=a,b) or two epochs (epochs=1,5)")
    how = align_arg(chosen)
    wanted = arg("quantity", required=False)
    quantities = [check_quantity(wanted)] if wanted else list(QUANTITIES)
    stat = arg("stat", required=False)
    if stat is not None:
        check_stat(stat)
    probe = bool_arg("probe")
    names = chosen[0].reader.layers()
    shared = set(names).intersection(*(set(e.reader.layers()) for e in chosen[1:]))
    flags = {}
    for e in chosen:  # once per run: epochs of one run share its flags
        if e.reader.id not in flags:
            flags[e.reader.id] = e.reader.health()
    rows: list[dict[str, Any]] = []
    for depth, layer in enumerate(names):
        if layer not in shared:
            continue
        for quantity in quantities:
            part = _main_part(chosen[0].reader, layer, quantity)
            if part is None:
                continue  # e.g. a ReLU has no weights
            use = stat or DEFAULT_STAT[quantity]
            xs, ys, last = [], [], []
            try:
                for e in chosen:
                    steps, values = e.reader.series(
                        layer, quantity, use, part, None, probe_for(quantity, probe)
                    )
                    x, y = _positions(e, steps, values, how)
                    xs.append(x)
                    ys.append(y)
                    inside = values[(steps >= e.first) & (steps <= e.last)]
                    last.append(float(inside[-1]) if len(inside) else None)
            except NotFoundError:
                continue  # not recorded in one of them
            s = score(align(xs, ys))
            if s.score is None:
                continue
            rows.append(
                {
                    "layer": layer,
                    "depth": depth,
                    "quantity": quantity,
                    "param": part if quantity in PARAM_QUANTITIES else None,
                    "stat": use,
                    "score": round(s.score, 9),
                    "first_apart": s.first_apart,
                    "compared": s.compared,
                    "last": last,
                    "flags": [[f.code for f in flags[e.reader.id].get(layer, [])] for e in chosen],
                }
            )
    rows = rank(rows)
    return finite_or_none(
        {
            "align": how,
            "x_label": x_label(chosen, how),
            "probe": probe,
            "floor": FLOOR,
            "help": SCORE_HELP,
            "entries": [e.to_json() for e in chosen],
            "layers": rows,
        }
    )


# -- histograms and snapshots at one aligned moment ----------------------------------------------


def _pick(chosen: list[Entry], available: list[np.ndarray], how: str) -> list[int | None]:
    """The step to show for each entry.

    Epochs of one run: each epoch's last available step (``offset=`` steps into the epoch picks
    an earlier one). By step: the latest step at or before ``step=`` that every run has (else
    each run's own latest at or before it). By epoch: each run's last step in ``epoch=``.
    """
    if chosen[0].epoch is not None:
        offset = int_arg("offset", required=False, default=None)
        picks = []
        for e, steps in zip(chosen, available, strict=True):
            limit = e.last if offset is None else min(e.last, e.first + offset)
            inside = steps[(steps >= e.first) & (steps <= limit)]
            picks.append(int(inside[-1]) if len(inside) else None)
        return picks
    if how == "epoch":
        epoch = int_arg("epoch", required=False, default=None)
        picks = []
        for e, steps in zip(chosen, available, strict=True):
            spans = {n: (a, b) for n, a, b in e.reader.epochs()}
            n = max(spans) if epoch is None and spans else epoch
            if n not in spans:
                picks.append(None)
                continue
            inside = steps[(steps >= spans[n][0]) & (steps <= spans[n][1])]
            picks.append(int(inside[-1]) if len(inside) else None)
        return picks
    step = int_arg("step", required=False, default=None)
    common = available[0]
    for steps in available[1:]:
        common = np.intersect1d(common, steps)
    pool = [common] * len(chosen) if len(common) else available
    picks = []
    for steps in pool:
        before = steps if step is None else steps[steps <= step]
        picks.append(int(before[-1]) if len(before) else (int(steps[0]) if len(steps) else None))
    return picks


@bp.get("/compare/histograms")
@query(*ENTRIES, ALIGN, LAYER, QUANTITY, PARAM, PROBE, *PICK)
def histograms() -> dict[str, Any]:
    """Each entry's histogram at the aligned step, on one shared bin range, and the difference
    of each one's share of values per bin from the first entry's (exact: the bins are shared)."""
    chosen = entries()
    how = align_arg(chosen)
    layer, quantity, param = _tensor_query()
    probe = probe_for(quantity, bool_arg("probe"))
    found = []
    for e in chosen:
        try:
            steps, raw = e.reader.histograms(layer, quantity, param, None, probe)
        except NotFoundError:
            steps, raw = np.empty(0, np.int64), np.empty((0, 512), np.int64)
        found.append((steps, raw))
    picks = _pick(chosen, [s for s, _ in found], how)
    dense = []
    for (steps, raw), step in zip(found, picks, strict=True):
        row = np.zeros(512, np.int64) if step is None else raw[np.flatnonzero(steps == step)[0]]
        dense.append(to_display(row))
    counts = np.asarray(dense)
    first, last = trim_range(counts)
    counts = counts[:, first : last + 1]
    totals = counts.sum(axis=1)
    share = counts / np.maximum(totals, 1)[:, None]
    return finite_or_none(
        {
            "layer": layer,
            "quantity": quantity,
            "param": param,
            "align": how,
            "probe": probe,
            "offset": first,
            "edges": edges_json(first, last),
            "entries": [
                {**e.to_json(), "step": step, "total": int(t), "counts": c, "share": np.round(s, 8)}
                for e, step, t, c, s in zip(chosen, picks, totals, counts, share, strict=True)
            ],
            "difference": [np.round(s - share[0], 8) for s in share[1:]],
            "steps": _common([s for s, _ in found]),  # histogram steps every entry has
        }
    )


def _common(steps: list[np.ndarray]) -> np.ndarray:
    """Steps every array holds."""
    common = steps[0]
    for s in steps[1:]:
        common = np.intersect1d(common, s)
    return common


def _snapshot_steps(
    chosen: list[Entry], layer: str, quantity: str, param: str | None, probe: bool
) -> list[np.ndarray]:
    """Each entry's snapshot steps (probe inputs' if ``probe``), within its epoch."""
    out = []
    for e in chosen:
        try:
            out.append(e.inside(e.reader.steps(layer, quantity, param, None, probe)))
        except NotFoundError:
            out.append(np.empty(0, np.int64))
    return out


@bp.get("/compare/snapshots")
@query(*ENTRIES, LAYER, QUANTITY, PARAM)
def snapshots() -> dict[str, Any]:
    """Steps with a snapshot of this tensor per entry: of the training batch and of the probe."""
    chosen = entries()
    layer, quantity, param = _tensor_query()
    train = _snapshot_steps(chosen, layer, quantity, param, False)
    probe = _snapshot_steps(chosen, layer, quantity, param, True)
    return finite_or_none(
        {
            "layer": layer,
            "quantity": quantity,
            "param": param,
            "entries": [
                {**e.to_json(), "steps": t, "probe_steps": p}
                for e, t, p in zip(chosen, train, probe, strict=True)
            ],
            "common": _common(train),
            "probe_common": _common(probe),
            "has_probe": all(len(p) for p in probe),
        }
    )


def _tensor_json(data: np.ndarray, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    return {
        "shape": list(data.shape),
        "full_shape": (meta or {}).get("full_shape"),
        "dtype": (meta or {}).get("dtype", str(data.dtype)),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "data": data.reshape(-1),
    }


@bp.get("/compare/tensors")
@query(
    *ENTRIES,
    ALIGN,
    LAYER,
    QUANTITY,
    PARAM,
    text(
        "probe",
        "auto (default: probe inputs if every entry has them), 0 or 1",
        enum=("auto", "0", "1"),
    ),
    *PICK,
)
def tensors() -> dict[str, Any]:
    """Each entry's snapshot at the aligned step (probe inputs when every entry has them, unless
    ``probe=0``), and each one minus the first where their shapes match."""
    chosen = entries()
    how = align_arg(chosen)
    layer, quantity, param = _tensor_query()
    raw_probe = arg("probe", required=False, default="auto")
    if raw_probe not in ("auto", "0", "1"):
        raise ApiError(400, f"probe must be auto, 0 or 1; got {raw_probe!r}")
    probe_steps = _snapshot_steps(chosen, layer, quantity, param, True)
    probe = raw_probe == "1" or (raw_probe == "auto" and all(len(p) for p in probe_steps))
    probe = probe_for(quantity, probe)
    available = probe_steps if probe else _snapshot_steps(chosen, layer, quantity, param, False)
    picks = _pick(chosen, available, how)
    out: list[dict[str, Any]] = []
    arrays: list[np.ndarray | None] = []
    for e, step in zip(chosen, picks, strict=True):
        if step is None:
            out.append({**e.to_json(), "step": None, "error": "no snapshot to show"})
            arrays.append(None)
            continue
        data, meta = e.reader.tensor_with_meta(layer, quantity, step, param, None, probe)
        data = data.astype(np.float64) if data.dtype.kind == "f" else data
        arrays.append(data)
        out.append({**e.to_json(), "step": step, **_tensor_json(data, meta)})
    differences: list[dict[str, Any] | None] = []
    for other in arrays[1:]:
        if other is None or arrays[0] is None or other.shape != arrays[0].shape:
            differences.append(None)
        else:
            differences.append(_tensor_json(other - arrays[0]))
    return finite_or_none(
        {
            "layer": layer,
            "quantity": quantity,
            "param": param,
            "align": how,
            "probe": probe,
            "entries": out,
            "difference": differences,
        }
    )
