"""The segment file format: bit-exact round trips, sparse histograms, schema checks, no pickles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.capture.block import Summary
from tracker.capture.histogram import binade_histogram
from tracker.capture.snapshot import take_snapshot
from tracker.errors import SchemaVersionError, StoreError
from tracker.names import STAT_NAMES, encode
from tracker.store import segment as seg
from tracker.store.codecs import COMPRESSIONS


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


def _write_schema_2(path: Path, builder: seg.SegmentBuilder) -> None:
    """What tracker wrote before packed segments: a group per series under /series."""
    with h5py.File(path, "w") as f:
        f.attrs.update(seg.root_attrs(seg.SEGMENT, builder.run_id, 0, 0, 0, "", "old"))
        f.attrs["schema_version"] = 2
        f.attrs["layer_shapes"] = "{}"
        f["steps"] = np.asarray(builder.steps, dtype=np.int64)
        for (layer, quantity, part), c in builder.series().items():
            g = f.create_group(f"series/{encode(layer)}/{quantity}/{encode(part)}")
            g["index"], g["stats"] = c.index, c.stats
            if len(c.hists):
                g["hist_index"], g["hist_ptr"] = c.hist_index, c.hists.ptr
                g["hist_bins"], g["hist_counts"] = c.hists.bins, c.hists.counts
            if c.snapshots:
                entries = [(st, call, fl, snap) for (st, call), (fl, snap) in c.snapshots.items()]
                seg.write_snapshots(g, entries)


def _everything(f: h5py.File) -> dict:
    """All a segment says about its series, through the read functions."""
    found: dict = {}
    for key in sorted(seg.series_keys(f)):
        index, stats = seg.read_stats(f, key)
        hists = seg.read_histograms(f, key)
        snaps = {}
        for step, call in seg.snapshot_index(f, key):
            data, meta = seg.read_snapshot(f, key, step, call)
            snaps[(step, call)] = (data.dtype.str, data.tolist(), meta)
        found[key] = (
            index.tolist(),
            stats.tolist(),
            None if hists is None else (hists[0].tolist(), hists[1].tolist()),
            seg.snapshot_entries(f, key).tolist(),
            seg.snapshot_sizes(f, key).tolist(),
            snaps,
        )
    return found


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
    b.batch = seg.Batch([("loss", 0, 0.5, 1, 2.0)], {1: (0, 0)}, {"l": {"output": [2]}})
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
    dtype=st.sampled_from(
        [
            torch.float32,
            torch.float16,
            torch.bfloat16,
            torch.float64,
            torch.int8,
            torch.uint8,
            torch.int32,
            torch.int64,
        ]
    ),
    compression=st.sampled_from(COMPRESSIONS),
)
def test_property_names_shapes_dtypes_round_trip(
    tmp_path: Path, name: str, shape: list[int], dtype: torch.dtype, compression: str
) -> None:
    if dtype.is_floating_point:
        t = torch.randn(shape).to(dtype)
    else:  # the dtype's whole range, extremes included
        info = torch.iinfo(dtype)
        t = torch.randint(info.min, info.max, shape, dtype=torch.int64).to(dtype)
        t.view(-1)[:1] = info.max
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
    seg.write_segment(str(path), b, "test", compression=compression)
    with h5py.File(path, "r") as f:
        assert list(seg.series_keys(f)) == [(name, "weight", name)]
        data, meta = seg.read_snapshot(f, (name, "weight", name), 7, 0)
    want = t.float().numpy() if dtype == torch.bfloat16 else t.numpy()
    assert data.dtype == want.dtype
    np.testing.assert_array_equal(data, want)
    assert meta["dtype"] == str(dtype).removeprefix("torch.")
    assert meta["full_shape"] == shape
    path.unlink()


def test_the_batch_of_metrics_and_epochs_rides_along(tmp_path: Path) -> None:
    b = seg.SegmentBuilder("abcdef0123456789")
    b.add(4, [_summary("fc", "weight", "weight", 0, torch.randn(2))])
    b.batch = seg.Batch(
        [
            ("loss", 4, 0.25, 0, 10.0),
            ("loss", 5, float("nan"), None, 11.0),
            ("a/b", 4, -1.0, 0, 9.5),
        ],
        {0: (0, 5)},
        {"fc": {"output": [8, 2]}},
    )
    seg.write_segment(str(tmp_path / "s.h5"), b, "test", segment_id="f" * 32)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert seg.content(f) == seg.SEGMENT and f.attrs["segment_id"] == "f" * 32
        got = seg.read_batch(f)
    assert sorted(map(repr, got.metrics)) == sorted(map(repr, b.batch.metrics))  # nan == nan
    assert got.epochs == {0: (0, 5)} and got.shapes == {"fc": {"output": [8, 2]}}


def test_schema_2_segments_read_the_same_as_packed_ones(tmp_path: Path) -> None:
    b = seg.SegmentBuilder("abcdef0123456789")
    for step in range(4):
        t = torch.randn(2, 3) * (step + 1)
        rows = [_summary("a/b", "activation", "output", c, t + c) for c in (0, 1)]
        rows.append(_summary("fc", "weight", "weight", 0, t.to(torch.bfloat16)))
        if step % 2:  # histograms and snapshots on odd steps only, for one series
            rows[-1] = dataclasses.replace(rows[-1], histogram=None, snapshot=None)
        b.add(step, rows)
    _write_schema_2(tmp_path / "old.h5", b)
    with _write(tmp_path / "new.h5", b) as new, h5py.File(tmp_path / "old.h5", "r") as old:
        seg.check_header(old)
        assert "series" in old and "keys" in new and "series" not in new
        assert _everything(old) == _everything(new)
        assert len(_everything(new)) == 2


def test_schema_1_files_still_read(tmp_path: Path) -> None:
    b = seg.SegmentBuilder("abcdef0123456789")
    b.add(2, [_summary("fc", "weight", "weight", 0, torch.ones(3))])
    _write_schema_2(tmp_path / "s.h5", b)
    with h5py.File(tmp_path / "s.h5", "r+") as f:  # what tracker 0.1 wrote: no content, no batch
        f.attrs["schema_version"] = 1
        del f.attrs["content"], f.attrs["segment_id"], f.attrs["layer_shapes"]
        g = f["series/fc/weight/weight"]  # and snapshot metadata in attributes
        del g["snapshot_index"], g["snapshot_info"], g.attrs["snapshot_dtypes"]
        g["snapshots/2.0"].attrs.update({"dtype": "float32", "full_shape": [3], "flags": 3})
    with h5py.File(tmp_path / "s.h5", "r") as f:
        seg.check_header(f)
        assert seg.content(f) == seg.SEGMENT and seg.read_batch(f).metrics == []
        assert seg.read_stats(f, ("fc", "weight", "weight"))[0].tolist() == [[2, 0, 3]]
        assert seg.snapshot_entries(f, ("fc", "weight", "weight")).tolist() == [[2, 0, 3]]
        data, meta = seg.read_snapshot(f, ("fc", "weight", "weight"), 2, 0)
        assert data.tolist() == [1.0, 1.0, 1.0]
        assert meta == {"dtype": "float32", "full_shape": [3], "flags": 3}


def test_unknown_content_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.attrs.update({"format": seg.FORMAT, "schema_version": 2, "content": "videos"})
    with h5py.File(tmp_path / "x.h5", "r") as f, pytest.raises(StoreError, match="content"):
        seg.check_header(f)


def test_a_step_logged_twice_keeps_its_first_snapshot(tmp_path: Path) -> None:
    b = seg.SegmentBuilder("abcdef0123456789")
    b.add(3, [_summary("fc", "weight", "weight", 0, torch.zeros(2))])
    b.add(3, [_summary("fc", "weight", "weight", 0, torch.ones(2))])  # log(step=3) again
    with _write(tmp_path / "s.h5", b) as f:
        key = ("fc", "weight", "weight")
        assert seg.read_stats(f, key)[0].tolist() == [[3, 0, 3], [3, 0, 3]]
        assert seg.read_snapshot(f, key, 3, 0)[0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_big_and_tiny_snapshots_share_the_blob_bit_exact(tmp_path: Path, compression: str) -> None:
    # Tiny ones are gathered before writing, big ones (>= 256 KiB) written in place: mix both.
    rng = np.random.default_rng(3)
    sizes = [3, 70_000, 5, 100_000, 1, 40_000, 40_000]  # float32 elements
    arrays = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    b = seg.SegmentBuilder("abcdef0123456789")
    for step, a in enumerate(arrays):
        summary = _summary("fc", "activation", "output", 0, torch.from_numpy(a))
        b.add(
            step,
            [
                dataclasses.replace(
                    summary, snapshot=take_snapshot(torch.from_numpy(a), None, 1 << 20)
                )
            ],
        )
    seg.write_segment(str(tmp_path / "s.h5"), b, "test", compression=compression)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        key = ("fc", "activation", "output")
        assert seg.snapshot_sizes(f, key).tolist() == [4 * n for n in sizes]
        for step, a in enumerate(arrays):
            data, _ = seg.read_snapshot(f, key, step, 0)
            assert data.tobytes() == a.tobytes()
