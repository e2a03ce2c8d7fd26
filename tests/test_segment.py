"""The segment file format: bit-exact round trips, sparse histograms, schema checks, no pickles."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.capture.histogram import binade_histogram
from tracker.capture.snapshot import take_snapshot
from tracker.capture.step import Summary
from tracker.errors import SchemaVersionError, StoreError
from tracker.names import STAT_NAMES
from tracker.store import segment as seg


def _summary(layer: str, quantity: str, part: str, call: int, tensor: torch.Tensor) -> Summary:
    return Summary(
        layer,
        quantity,
        part,
        call,
        3,
        np.arange(len(STAT_NAMES), dtype=np.float64) + call,
        binade_histogram(tensor).numpy(),
        take_snapshot(tensor, None, 1000),
    )


def _write(path: Path, builder: seg.SegmentBuilder) -> h5py.File:
    seg.write_segment(str(path), builder, "test")
    return h5py.File(path, "r")


def test_round_trip(tmp_path: Path) -> None:
    b = seg.SegmentBuilder("abcdef0123456789", rank=0)
    tensors = {s: torch.randn(3, 4) for s in range(3)}
    for step, t in tensors.items():
        b.add(
            step,
            [
                _summary("enc.0/odd name", "activation", "output", 0, t),
                _summary("enc.0/odd name", "activation", "output", 1, -t),
            ],
        )
    with _write(tmp_path / "s.h5", b) as f:
        seg.check_header(f)
        assert f.attrs["step_min"] == 0 and f.attrs["step_max"] == 2
        key = ("enc.0/odd name", "activation", "output")
        assert list(seg.series_keys(f)) == [key]
        index, stats = seg.read_stats(f, key)
        assert index.tolist() == [[s, c, 3] for s in range(3) for c in (0, 1)]
        assert stats[1, 0] == 1.0
        _, hists = seg.read_histograms(f, key)
        np.testing.assert_array_equal(hists[2], binade_histogram(tensors[1]).numpy())
        assert seg.snapshot_index(f, key) == [(s, c) for s in range(3) for c in (0, 1)]
        data, meta = seg.read_snapshot(f, key, 2, 1)
        np.testing.assert_array_equal(data, -tensors[2].numpy())
        assert meta == {"dtype": "float32", "full_shape": [3, 4], "flags": 3}
        assert seg.read_snapshot(f, key, 9, 0) is None
        assert seg.read_stats(f, ("nope", "activation", "output")) is None


def test_no_object_or_pickled_data(tmp_path: Path) -> None:
    b = seg.SegmentBuilder("abcdef0123456789")
    b.add(0, [_summary("l", "weight", "weight", 0, torch.randn(2, 2))])
    with _write(tmp_path / "s.h5", b) as f:
        kinds = []
        f.visititems(
            lambda name, obj: (
                kinds.append(obj.dtype.kind) if isinstance(obj, h5py.Dataset) else None
            )
        )
        assert set(kinds) <= {"i", "u", "f"}  # numbers only: nothing that could hold a pickle


def test_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "new.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = seg.FORMAT
        f.attrs["schema_version"] = seg.SCHEMA_VERSION + 1
    with h5py.File(path, "r") as f, pytest.raises(SchemaVersionError, match="Upgrade tracker"):
        seg.check_header(f)
    with h5py.File(tmp_path / "other.h5", "w"):
        pass
    with (
        h5py.File(tmp_path / "other.h5", "r") as f,
        pytest.raises(StoreError, match="not a tracker"),
    ):
        seg.check_header(f)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.text(min_size=1, max_size=40).filter(
        lambda s: s not in (".", "..") and "\x00" not in s
    ),
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=4),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
)
def test_property_names_shapes_dtypes_round_trip(
    tmp_path: Path, name: str, shape: list[int], dtype: torch.dtype
) -> None:
    t = torch.randn(shape).to(dtype)
    b = seg.SegmentBuilder("abcdef0123456789")
    b.add(
        7,
        [
            Summary(
                name,
                "weight",
                name,
                0,
                3,
                np.zeros(len(STAT_NAMES)),
                None,
                take_snapshot(t, None, 10_000),
            )
        ],
    )
    path = tmp_path / "p.h5"
    with _write(path, b) as f:
        assert list(seg.series_keys(f)) == [(name, "weight", name)]
        data, meta = seg.read_snapshot(f, (name, "weight", name), 7, 0)
    want = t.float().numpy() if dtype == torch.bfloat16 else t.numpy()
    np.testing.assert_array_equal(data, want)
    assert meta["full_shape"] == shape
    path.unlink()
