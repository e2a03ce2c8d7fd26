"""Read runs back as NumPy arrays: ``tracker.open_run()`` and ``tracker.list_runs()``."""

from __future__ import annotations

import functools
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import h5py
import numpy as np

from tracker.capture.histogram import display_edges, to_display
from tracker.capture.step import GRAD_ENABLED, PROBE
from tracker.catalog import Layer, Run, Segment
from tracker.errors import InvalidArgumentError, NotFoundError
from tracker.health import Flag, layer_flags
from tracker.names import (
    PARAM_QUANTITIES,
    QUANTITIES,
    STAT_INDEX,
    STAT_NAMES,
    check_quantity,
    check_stat,
    encode,
)
from tracker.store import Store
from tracker.store import segment as seg
from tracker.store.errors import SegmentMissingError
from tracker.topk.files import TopKView, pass_info, read_top_k

_RUN_ID = re.compile(r"^[0-9a-f]{8,32}$")
_OPEN_FILES = 16  # per reader: enough for a page of plots without exhausting file handles
# Files that hold stats and histograms, and files that hold snapshots (compaction splits them).
_STATS_KINDS = (seg.SEGMENT, seg.STATS)
_SNAPSHOT_KINDS = (seg.SEGMENT, seg.SNAPSHOTS)
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _reread_if_compacted(method: _Method) -> _Method:
    """Retry a read once with fresh catalog rows if a registered file vanished meanwhile.

    Compaction deletes the files it replaced right after swapping them out in the catalog; a
    reader that listed them before can find one gone. Files it already has open keep working.
    """

    @functools.wraps(method)
    def reading(self: RunReader, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except SegmentMissingError:
            self._segments = self._snapshot_segments = None
            return method(self, *args, **kwargs)

    return cast(_Method, reading)


@dataclass(frozen=True)
class RunInfo:
    """A row of list_runs()."""

    id: str
    name: str
    project: str
    status: str
    status_reason: str | None
    started_at: datetime
    ended_at: datetime | None
    config: dict[str, Any]
    tags: list[str]
    summary: dict[str, Any]

    @classmethod
    def from_row(cls, run: Run, project: str) -> RunInfo:
        return cls(
            run.id,
            run.name,
            project,
            run.status,
            run.status_reason,
            run.started_at,
            run.ended_at,
            dict(run.config or {}),
            list(run.tags or []),
            dict(run.summary or {}),
        )


def _limit(names: list[str], n: int = 20) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


class RunReader:
    """Read-only view of one run's layers, stats, histograms, snapshots and metrics."""

    def __init__(
        self,
        store: Store,
        info: RunInfo,
        owns_store: bool = False,
        rank: int = 0,
        opener: Callable[[str], h5py.File] | None = None,
    ) -> None:
        self._store = store
        # Opens a file by relpath; given, it owns the handles (the API's per-worker LRU, which
        # keeps them across requests) and close() leaves them open.
        self._opener = opener
        self._owns_store = owns_store
        self.info = info
        # Under DDP each rank's tensors are its own (its batch's activations); rank 0's are read
        # unless another is asked for. Metrics and layers belong to the run (rank 0).
        self.rank = _check_rank(rank)
        self._files: OrderedDict[str, h5py.File] = OrderedDict()
        self._layers: dict[str, Layer] | None = None
        self._segments: list[Segment] | None = None
        self._snapshot_segments: list[Segment] | None = None

    # -- identity ----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def project(self) -> str:
        return self.info.project

    @property
    def status(self) -> str:
        return self.info.status

    @property
    def config(self) -> dict[str, Any]:
        return self.info.config

    def __repr__(self) -> str:
        rank = f" rank {self.rank}" if self.rank else ""
        return f"<RunReader {self.id} {self.project}/{self.name} {self.status}{rank}>"

    def ranks(self) -> list[int]:
        """The ranks (DDP processes) that stored tensors for this run; [0] for one process."""
        return self._store.catalog.ranks(self.id) or [0]

    def for_rank(self, rank: int) -> RunReader:
        """A reader of the same run that reads ``rank``'s tensors (sharing the open store)."""
        if _check_rank(rank) not in self.ranks():
            raise NotFoundError(
                f"run {self.id} has no tensors of rank {rank}; ranks: {self.ranks()}"
            )
        return RunReader(self._store, self.info, owns_store=False, rank=rank, opener=self._opener)

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close open files (and the store, if this reader opened it)."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._owns_store:
            self._store.close()

    def refresh(self) -> None:
        """Forget cached layers and segments, to see what a running job wrote since."""
        self._layers = None
        self._segments = None
        self._snapshot_segments = None
        row = self._store.catalog.get_run(self.id)
        if row is not None:
            self.info = RunInfo.from_row(row, self.info.project)

    # -- layers ----------------------------------------------------------------------------

    def _layer_rows(self) -> dict[str, Layer]:
        if self._layers is None:
            self._layers = {row.name: row for row in self._store.catalog.layers(self.id)}
        return self._layers

    def layers(self) -> list[str]:
        """Watched layer names in model order."""
        return list(self._layer_rows())

    def layer_info(self, layer: str | None = None) -> Any:
        """Type, shapes and parameters of one layer (or a list for all)."""
        rows = self._layer_rows()
        if layer is None:
            return [self._describe(r) for r in rows.values()]
        return self._describe(self._layer(layer))

    @staticmethod
    def _describe(row: Layer) -> dict[str, Any]:
        return {
            "name": row.name,
            "type": row.type,
            "kind": row.kind,
            "position": row.position,
            "shapes": dict(row.shapes or {}),
            "params": dict(row.params or {}),
        }

    def _layer(self, layer: str) -> Layer:
        rows = self._layer_rows()
        if layer not in rows:
            self._layers = None  # a running job may have added it since
            rows = self._layer_rows()
        if layer not in rows:
            raise NotFoundError(
                f"run {self.id} has no layer {layer!r}; layers: {_limit(list(rows))}"
            )
        return rows[layer]

    def parts(self, layer: str, quantity: str) -> list[str]:
        """Parameter names (weight quantities) or output parts (activations) of a layer."""
        check_quantity(quantity)
        row = self._layer(layer)
        return list((row.params if quantity in PARAM_QUANTITIES else row.shapes) or {})

    def _part(self, layer: str, quantity: str, param: str | None) -> str:
        parts = self.parts(layer, quantity)
        if param is None:
            preferred = "weight" if quantity in PARAM_QUANTITIES else "output"
            if preferred in parts:
                return preferred
            if parts:
                return parts[0]
            raise NotFoundError(f"layer {layer!r} has no recorded {quantity}")
        if param not in parts:
            what = "parameters" if quantity in PARAM_QUANTITIES else "output parts"
            raise NotFoundError(
                f"layer {layer!r} has no {quantity} {param!r}; {what}: {_limit(parts)}"
            )
        return param

    # -- segments -------------------------------------------------------------------------

    def _segment_rows(self) -> list[Segment]:
        """Files with stats and histograms, in reading order."""
        if self._segments is None:
            self._segments = self._store.catalog.segments(
                self.id, rank=self.rank, kinds=_STATS_KINDS
            )
        return self._segments

    def _snapshot_rows(self) -> list[Segment]:
        """Files with snapshots, in reading order."""
        if self._snapshot_segments is None:
            self._snapshot_segments = self._store.catalog.segments(
                self.id, rank=self.rank, kinds=_SNAPSHOT_KINDS
            )
        return self._snapshot_segments

    def _compacted_file(self) -> h5py.File | None:
        """The run's stats file, when it is the only file with stats (a compacted run)."""
        rows = self._segment_rows()
        if len(rows) == 1 and rows[0].kind == seg.STATS:
            return self._open(rows[0].path)
        return None

    def _open(self, relpath: str) -> h5py.File:
        if self._opener is not None:
            return self._opener(relpath)
        f = self._files.get(relpath)
        if f is not None:
            self._files.move_to_end(relpath)
            return f
        f = self._store.files.open(relpath)
        self._files[relpath] = f
        while len(self._files) > _OPEN_FILES:
            _, old = self._files.popitem(last=False)
            old.close()
        return f

    # -- stats ------------------------------------------------------------------------------

    @_reread_if_compacted
    def stats(
        self,
        layer: str,
        quantity: str,
        param: str | None = None,
        call: int | None = None,
        probe: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(steps (n,), stats (n, len(STAT_NAMES))) of one tensor over the whole run.

        ``call``: which forward call of the module in a step (None: the training forward).
        ``probe``: the fixed probe inputs' forward instead (run.watch(probe=...)).
        """
        call = _check_call(call)
        key = (layer, quantity, self._part(layer, quantity, param))
        compacted = self._compacted_file()
        if compacted is not None and call is None and not probe:
            default = seg.read_default_stats(compacted, key)
            if default is not None:  # precomputed _select_rows(index, None), see compacted.py
                return default[0], np.ascontiguousarray(default[1])
        indexes, rows_parts = [], []
        for segment in self._segment_rows():
            found = seg.read_stats(self._open(segment.path), key)
            if found is not None:
                indexes.append(found[0])
                rows_parts.append(found[1])
        if not indexes:
            return np.empty(0, dtype=np.int64), np.empty((0, len(STAT_NAMES)))
        index = np.concatenate(indexes)
        chosen = _select_rows(index, call, probe)
        return index[chosen, 0], np.concatenate(rows_parts)[chosen]

    @_reread_if_compacted
    def series(
        self,
        layer: str,
        quantity: str,
        stat: str,
        param: str | None = None,
        call: int | None = None,
        probe: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one stat ("mean", "std", "norm", ...) of one tensor over the run."""
        column = check_stat(stat)
        if _check_call(call) is None and not probe:
            compacted = self._compacted_file()
            if compacted is not None:  # one stat of a compacted run: one contiguous read
                key = (layer, quantity, self._part(layer, quantity, param))
                default = seg.read_default_stats(compacted, key, column)
                if default is not None:
                    return default
        steps, rows = self.stats(layer, quantity, param, call, probe)
        return steps, rows[:, column]

    @_reread_if_compacted
    def latest(self, max_segments: int = 3) -> dict[tuple[str, str, str], tuple[int, np.ndarray]]:
        """Last stats row (training call) of each tensor: {(layer, quantity, part): (step, row)}.

        Looks at the newest ``max_segments`` segments only, so it stays fast on long runs.
        """
        found: dict[tuple[str, str, str], tuple[int, np.ndarray]] = {}
        for segment in reversed(self._segment_rows()[-max_segments:]):
            f = self._open(segment.path)
            for key in seg.series_keys(f):
                if key in found:
                    continue
                precomputed = seg.stored_latest(f, key)  # compacted stats files keep it
                if precomputed is not None:
                    found[key] = precomputed
                    continue
                stored = seg.read_stats(f, key)
                if stored is None:
                    continue
                index, stats = stored
                rows = _select_rows(index, None)
                if rows.size:
                    found[key] = (int(index[rows[-1], 0]), stats[rows[-1]])
        return found

    def health(
        self, latest: dict[tuple[str, str, str], tuple[int, np.ndarray]] | None = None
    ) -> dict[str, list[Flag]]:
        """Health flags of every layer from its latest stats (see tracker.health)."""
        latest = self.latest() if latest is None else latest
        by_layer: dict[str, dict[str, np.ndarray | None]] = {}
        for (layer, quantity, part), (_, row) in latest.items():
            main = "weight" if quantity in PARAM_QUANTITIES else "output"
            slot = by_layer.setdefault(layer, {})
            if part == main or quantity not in slot:
                slot[quantity] = row
        grad_rows = [q.get("weight_grad") for q in by_layer.values()]
        grad_norms = [float(r[STAT_INDEX["norm"]]) for r in grad_rows if r is not None]
        finite = [g for g in grad_norms if np.isfinite(g)]
        max_norm = max(finite) if finite else None
        rows = self._layer_rows()
        return {
            name: layer_flags(by_layer.get(name, {}), rows[name].kind, max_norm) for name in rows
        }

    # -- snapshots ----------------------------------------------------------------------------

    def _snapshot_calls(
        self,
        key: tuple[str, str, str],
        call: int | None,
        probe: bool = False,
        segments: list[Segment] | None = None,
    ) -> dict[int, tuple[Segment, int]]:
        """{step: (segment, call)} of the snapshots to use for each step (in ``segments`` only,
        if given; else in every file with snapshots)."""
        chosen: dict[int, tuple[Segment, int]] = {}
        for segment in self._snapshot_rows() if segments is None else segments:
            f = self._open(segment.path)
            have = seg.snapshot_entries(f, key)  # (step, call, flags) of each snapshot
            if not len(have):
                continue
            for row in _select_rows(have, call, probe):
                step = int(have[row, 0])
                chosen.setdefault(step, (segment, int(have[row, 1])))
        return chosen

    @_reread_if_compacted
    def steps(
        self,
        layer: str,
        quantity: str,
        param: str | None = None,
        call: int | None = None,
        probe: bool = False,
    ) -> np.ndarray:
        """Steps that have a stored snapshot of this tensor (of the probe inputs if ``probe``)."""
        key = (layer, quantity, self._part(layer, quantity, param))
        chosen = self._snapshot_calls(key, _check_call(call), probe)
        return np.asarray(sorted(chosen), dtype=np.int64)

    @_reread_if_compacted
    def tensor_with_meta(
        self,
        layer: str,
        quantity: str,
        step: int,
        param: str | None = None,
        call: int | None = None,
        probe: bool = False,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The snapshot and its metadata (dtype, full_shape: shape before it was bounded, call)."""
        step = _check_step(step)
        key = (layer, quantity, self._part(layer, quantity, param))
        call = _check_call(call)
        # Only the files whose step range holds ``step``: an indexed catalog query, so a step of
        # a 100,000-step run is found as fast as one of a 100-step run.
        covering = self._store.catalog.segments_at(self.id, self.rank, step, _SNAPSHOT_KINDS)
        chosen = self._snapshot_calls(key, call, probe, covering)
        if step in chosen:
            segment, which = chosen[step]
            found = seg.read_snapshot(self._open(segment.path), key, step, which)
            if found is not None:
                found[1]["call"] = which
                return found
        chosen = self._snapshot_calls(key, call, probe)  # every snapshot step, for the message
        raise NotFoundError(
            f"no {quantity} snapshot of {layer!r} at step {step}; snapshot steps: "
            f"{_limit([str(s) for s in sorted(chosen)]) or 'none yet'}"
        )

    def tensor(
        self,
        layer: str,
        quantity: str,
        step: int,
        param: str | None = None,
        call: int | None = None,
        probe: bool = False,
    ) -> np.ndarray:
        """The stored snapshot at ``step`` (first samples of the batch for activations)."""
        return self.tensor_with_meta(layer, quantity, step, param, call, probe)[0]

    # -- histograms -------------------------------------------------------------------------

    @_reread_if_compacted
    def histograms(
        self,
        layer: str,
        quantity: str,
        param: str | None = None,
        call: int | None = None,
        probe: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(steps (n,), raw binade counts (n, 512)) of every stored histogram of this tensor."""
        call = _check_call(call)
        key = (layer, quantity, self._part(layer, quantity, param))
        indexes, count_parts = [], []
        for segment in self._segment_rows():
            found = seg.read_histograms(self._open(segment.path), key)
            if found is not None:
                indexes.append(found[0])
                count_parts.append(found[1])
        if not indexes:
            return np.empty(0, dtype=np.int64), np.empty((0, 512), dtype=np.int64)
        index = np.concatenate(indexes)
        chosen = _select_rows(index, call, probe)
        return index[chosen, 0], np.concatenate(count_parts)[chosen]

    def histogram(
        self,
        layer: str,
        quantity: str,
        step: int,
        param: str | None = None,
        call: int | None = None,
        probe: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(edges (512,), counts (511,)) at ``step``, on the shared binade bins in value order."""
        step = _check_step(step)
        steps, counts = self.histograms(layer, quantity, param, call, probe)
        where = np.flatnonzero(steps == step)
        if not where.size:
            raise NotFoundError(
                f"no {quantity} histogram of {layer!r} at step {step}; histogram steps: "
                f"{_limit([str(s) for s in steps.tolist()]) or 'none yet'}"
            )
        return display_edges(), to_display(counts[where[0]])

    # -- metrics ---------------------------------------------------------------------------

    def metric_names(self) -> list[str]:
        """Names passed to run.log()."""
        return self._store.catalog.metric_names(self.id)

    def metrics(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one logged scalar; NaN where NaN was logged."""
        rows = self._store.catalog.metric(self.id, name)
        if not rows:
            raise NotFoundError(
                f"run {self.id} has no metric {name!r}; metrics: {_limit(self.metric_names())}"
            )
        steps = np.asarray([r.step for r in rows], dtype=np.int64)
        values = np.asarray(
            [np.nan if r.value is None else r.value for r in rows], dtype=np.float64
        )
        return steps, values

    def metric_epochs(self, name: str) -> np.ndarray:
        """Epoch of each value of ``metrics(name)`` (-1 where none was given)."""
        rows = self._store.catalog.metric(self.id, name)
        return np.asarray([-1 if r.epoch is None else r.epoch for r in rows], dtype=np.int64)

    def epochs(self) -> list[tuple[int, int, int]]:
        """(epoch, first step, last step) for each epoch logged."""
        return [(e.epoch, e.first_step, e.last_step) for e in self._store.catalog.epochs(self.id)]

    # -- top-k inputs ---------------------------------------------------------------------------

    def top_k_passes(self) -> list[dict[str, Any]]:
        """Each stored top-k pass, by step: epoch, step, k, dataset_size, input_shape, layers."""
        rows = self._store.catalog.segments(self.id, rank=0, kinds=(seg.TOPK,))
        return [pass_info(self._open(row.path)) for row in rows]

    def top_k(self, layer: str, epoch: int | None = None, step: int | None = None) -> TopKView:
        """``layer``'s top-k inputs per channel from the pass of ``epoch``, or at ``step``
        (default: the newest pass); ``.values``, ``.indices``, ``.boxes``, ``.patches()``."""
        if epoch is not None and step is not None:
            raise InvalidArgumentError("give epoch or step, not both")
        rows = self._store.catalog.segments(self.id, rank=0, kinds=(seg.TOPK,))
        if not rows:
            raise NotFoundError(
                f"run {self.id} has no top-k inputs: watch with top_k=9, dataset=... or call "
                "tracker.top_k(run, model, dataset)"
            )
        if step is not None:
            rows = [r for r in rows if r.step_min == _check_step(step)]
        for row in reversed(rows):  # the newest pass that matches
            f = self._open(row.path)
            if epoch is not None and pass_info(f)["epoch"] != epoch:
                continue
            if encode(layer) not in f["layers"]:
                continue
            return read_top_k(f, layer)
        where = f" at epoch {epoch}" if epoch is not None else f" at step {step}" if step else ""
        raise NotFoundError(f"no top-k inputs of layer {layer!r}{where} in run {self.id}")


def _select_rows(index: np.ndarray, call: int | None, probe: bool = False) -> np.ndarray:
    """Row numbers of ``index`` (step, call, flags) to use, at most one per step, by step.

    ``call=None`` picks, per step, the first call made with autograd on (the training forward),
    else the first call: a validation pass under no_grad is kept but does not hide training.
    Rows of the probe inputs are chosen only with ``probe=True`` (and then only they are).
    """
    if index.size == 0:
        return np.empty(0, dtype=np.int64)
    if call is not None:
        rows = np.flatnonzero(index[:, 1] == call)
    else:
        wanted = PROBE if probe else 0
        rows = np.flatnonzero((index[:, 2] & PROBE) == wanted)
    if rows.size == 0:
        return rows
    not_training = (index[rows, 2] & GRAD_ENABLED) == 0
    order = np.lexsort((index[rows, 1], not_training, index[rows, 0]))
    rows = rows[order]
    _, first = np.unique(index[rows, 0], return_index=True)
    return rows[first]


def _check_call(call: Any) -> int | None:
    if call is None:
        return None
    if isinstance(call, bool) or not isinstance(call, int | np.integer) or call < 0:
        raise InvalidArgumentError(f"call must be None or an int >= 0, got {call!r}")
    return int(call)


def _check_rank(rank: Any) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or rank < 0:
        raise InvalidArgumentError(f"rank must be an int >= 0, got {rank!r}")
    return int(rank)


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise InvalidArgumentError(f"step must be an int >= 0, got {step!r}")
    return int(step)


def find_run(store: Store, run: str, project: str | None = None) -> RunInfo:
    """Resolve a run id, or the newest run with that name (in ``project``)."""
    if not isinstance(run, str) or not run:
        raise InvalidArgumentError("give a run id or run name")
    if _RUN_ID.match(run):
        row = store.catalog.get_run(run)
        if row is not None:
            pname = store.catalog.project_name(row.project_id)
            if project is None or pname == project:
                return RunInfo.from_row(row, pname)
    matches = store.catalog.runs(project=project, name=run, limit=1)
    if not matches:
        where = f" in project {project!r}" if project else ""
        raise NotFoundError(f"no run with id or name {run!r}{where}")
    row, pname = matches[0]
    return RunInfo.from_row(row, pname)


def open_run(
    run: str,
    project: str | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    rank: int = 0,
) -> RunReader:
    """Open a run for reading by id, or by name (the newest run of that name); ``rank`` picks
    which DDP process's tensors are read (default 0).

    >>> r = tracker.open_run("relu-lr0.1", project="digits")
    >>> steps, values = r.series("conv1", "activation", "mean")
    """
    owns = not isinstance(store, Store)
    opened = store if isinstance(store, Store) else Store.open(store)
    try:
        info = find_run(opened, run, project)
    except Exception:
        if owns:
            opened.close()
        raise
    return RunReader(opened, info, owns_store=owns, rank=rank)


def list_runs(
    project: str | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    status: str | None = None,
) -> list[RunInfo]:
    """Runs in the store, newest first, optionally of one project or status."""
    if status is not None and status not in ("running", "finished", "failed", "crashed"):
        raise InvalidArgumentError(
            f"status must be one of running, finished, failed, crashed; got {status!r}"
        )
    opened = store if isinstance(store, Store) else Store.open(store)
    try:
        return [
            RunInfo.from_row(r, p) for r, p in opened.catalog.runs(project=project, status=status)
        ]
    finally:
        if not isinstance(store, Store):
            opened.close()


__all__ = ["QUANTITIES", "STAT_NAMES", "RunInfo", "RunReader", "list_runs", "open_run"]
