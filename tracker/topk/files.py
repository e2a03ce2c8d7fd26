"""The top-k file: one pass's top inputs per channel, immutable, registered like a segment.

Layout (content "topk", same root attributes as a segment, step_min = step_max = the pass step)::

    /                         attrs: ... epoch (-1: none), k, dataset_size, input_shape (JSON),
                                     layers (JSON list, in model order)
    /layers/<layer>/values    float32 (C, k)       best first
                   /indices   int64 (C, k)         dataset index of each input
                   /positions int64 (C, k, d)      where in the feature map it peaked
                   /boxes     int64 (C, k, d', 2)  its receptive field in the input, [start, stop)
                   attrs field_exact, output_shape (JSON)
    /samples/indices          int64 (n,)           the dataset indices any layer refers to
    /samples/data             float32 (n, *input)  those inputs (absent when too big to keep)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from tracker.errors import NotFoundError
from tracker.names import encode
from tracker.store import Store, StoredFile
from tracker.store import segment as seg
from tracker.store.backend import new_file_name, rank_folder
from tracker.store.hdf5image import write_image
from tracker.topk.collect import LayerTopK, TopKResult
from tracker.topk.stream import ChannelTopK
from tracker.version import __version__


def write_top_k(
    path: str,
    result: TopKResult,
    run_id: str,
    rank: int,
    epoch: int | None,
    step: int,
    file_id: str,
) -> None:
    def build(f: h5py.File) -> None:
        f.attrs.update(seg.root_attrs(seg.TOPK, run_id, rank, step, step, file_id, __version__))
        f.attrs["epoch"] = -1 if epoch is None else int(epoch)
        f.attrs["k"] = max(r.top.k for r in result.layers.values())
        f.attrs["dataset_size"] = result.dataset_size
        f.attrs["input_shape"] = json.dumps(list(result.input_shape))
        f.attrs["layers"] = json.dumps(list(result.layers))
        layers = f.create_group("layers")
        for name, r in result.layers.items():
            g = layers.create_group(encode(name))
            seg.put_array(g, "values", r.top.values)
            seg.put_array(g, "indices", r.top.indices)
            seg.put_array(g, "positions", r.top.positions)
            seg.put_array(g, "boxes", r.boxes)
            g.attrs["field_exact"] = int(r.field_exact)
            g.attrs["output_shape"] = json.dumps(list(r.output_shape))
        samples = f.create_group("samples")
        seg.put_array(samples, "indices", result.sample_indices.astype(np.int64))
        if result.samples is not None:
            seg.put_array(samples, "data", result.samples.astype(np.float32))

    size = 0 if result.samples is None else result.samples.nbytes
    write_image(path, build, size)  # a full disk must not crash training (I1)


@dataclass(frozen=True)
class TopKView:
    """One layer's top k of one pass, as read back; patches cut from the stored inputs."""

    layer: str
    epoch: int | None
    step: int
    dataset_size: int
    input_shape: tuple[int, ...]
    result: LayerTopK
    sample_indices: np.ndarray
    samples: np.ndarray | None

    @property
    def values(self) -> np.ndarray:
        return self.result.top.values

    @property
    def indices(self) -> np.ndarray:
        return self.result.top.indices

    @property
    def boxes(self) -> np.ndarray:
        return self.result.boxes

    def inputs(self) -> np.ndarray | None:
        """The whole input of every (channel, rank): (C, k, *input_shape), or None if not kept."""
        if self.samples is None:
            return None
        rows = np.searchsorted(self.sample_indices, self.indices)
        return self.samples[rows]

    def patches(self) -> np.ndarray | None:
        """Each input cut to its receptive field, (C, k, in_channels, *field size); the part of a
        field that lies outside the input (at borders) is NaN. None if inputs were not kept."""
        inputs = self.inputs()
        if inputs is None:
            return None
        boxes = self.boxes
        extents = (boxes[..., 1] - boxes[..., 0]).reshape(-1, boxes.shape[2])
        size = tuple(int(s) for s in extents.max(0))
        channels, k = self.indices.shape
        out = np.full((channels, k, self.input_shape[0], *size), np.nan, dtype=np.float32)
        for c in range(channels):
            for j in range(k):
                source: tuple[Any, ...] = (c, j, slice(None))
                source += tuple(slice(int(a), int(b)) for a, b in boxes[c, j])
                cut = inputs[source]
                target: tuple[Any, ...] = (c, j, slice(None))
                target += tuple(slice(0, n) for n in cut.shape[1:])
                out[target] = cut
        return out


def read_top_k(f: h5py.File, layer: str) -> TopKView:
    """``layer``'s part of an open top-k file."""
    g = f.get(f"layers/{encode(layer)}")
    if not isinstance(g, h5py.Group):
        raise NotFoundError(f"layer {layer!r} has no top-k in this pass")
    top = ChannelTopK(g["values"][()], g["indices"][()], g["positions"][()])
    result = LayerTopK(
        layer,
        top,
        g["boxes"][()],
        bool(g.attrs["field_exact"]),
        tuple(json.loads(str(g.attrs["output_shape"]))),
    )
    samples = f["samples"]
    epoch = int(f.attrs["epoch"])
    return TopKView(
        layer,
        None if epoch < 0 else epoch,
        int(f.attrs["step_min"]),
        int(f.attrs["dataset_size"]),
        tuple(json.loads(str(f.attrs["input_shape"]))),
        result,
        samples["indices"][()],
        samples["data"][()] if "data" in samples else None,
    )


def pass_info(f: h5py.File) -> dict[str, object]:
    """What one pass holds, without its arrays."""
    epoch = int(f.attrs["epoch"])
    return {
        "epoch": None if epoch < 0 else epoch,
        "step": int(f.attrs["step_min"]),
        "k": int(f.attrs["k"]),
        "dataset_size": int(f.attrs["dataset_size"]),
        "input_shape": json.loads(str(f.attrs["input_shape"])),
        "layers": json.loads(str(f.attrs["layers"])),
    }


def registration(file_id: str, rank: int, step: int, stored: StoredFile) -> dict[str, object]:
    """The catalog row of a stored top-k file."""
    return {
        "id": file_id,
        "rank": rank,
        "kind": seg.TOPK,
        "step_min": step,
        "step_max": step,
        "n_steps": 1,
        "path": stored.relpath,
        "nbytes": stored.nbytes,
        "checksum": stored.checksum,
        "schema_version": seg.SCHEMA_VERSION,
    }


def save_top_k(
    store: Store, run_id: str, result: TopKResult, epoch: int | None, step: int, rank: int = 0
) -> str:
    """Write ``result`` durably under the run, then register it in one transaction; its path.

    A crash between the two leaves a complete, unregistered file that recovery registers.
    """
    file_id, name = new_file_name(step, step, tag=seg.TOPK)
    relpath = f"{rank_folder(run_id, rank)}/{name}"
    stored = store.files.put(
        relpath, lambda path: write_top_k(path, result, run_id, rank, epoch, step, file_id)
    )
    store.catalog.swap_segments(run_id, [registration(file_id, rank, step, stored)], [])
    return stored.relpath
