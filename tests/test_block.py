"""Step blocks and the segment builder's column path: rows go in as blocks and come out per
series, in the order they were added, whatever mix of layouts the steps had."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tracker.capture.block import StepBlock, Summary
from tracker.capture.snapshot import Snapshot
from tracker.names import STAT_NAMES
from tracker.store import segment as seg

S = len(STAT_NAMES)


def _summary(layer: str, step: int, call: int = 0, hist: bool = True) -> Summary:
    stats = np.full(S, step + call / 10)
    histogram = np.bincount([step % 512, 7], minlength=512).astype(np.int64) if hist else None
    return Summary(layer, "activation", "output", call, 3, stats, histogram)


def test_summaries_round_trip_through_a_block() -> None:
    rows = [_summary("a", 1), _summary("b", 1, hist=False), _summary("a", 1, call=1)]
    rows[1].snapshot = Snapshot(np.ones(3, np.float32), "float32", (3,))
    block = StepBlock.from_summaries(rows)
    assert block.hist_rows.tolist() == [0, -1, 1]
    back = block.summaries()
    for got, want in zip(back, rows, strict=True):
        assert (got.layer, got.call, got.flags) == (want.layer, want.call, want.flags)
        np.testing.assert_array_equal(got.stats, want.stats)
        assert (got.histogram is None) == (want.histogram is None)
        if want.histogram is not None:
            np.testing.assert_array_equal(got.histogram, want.histogram)
    assert back[1].snapshot is rows[1].snapshot and back[0].snapshot is None


def test_without_drops_rows_and_renumbers_histograms() -> None:
    block = StepBlock.from_summaries([_summary("a", 1), _summary("b", 2), _summary("c", 3)])
    kept = block.without([1])
    assert [k[0] for k in kept.keys] == ["a", "c"]
    assert kept.hist_rows.tolist() == [0, 1]
    np.testing.assert_array_equal(kept.hists[1], block.hists[2])


def test_a_block_refuses_columns_of_the_wrong_length() -> None:
    block = StepBlock.from_summaries([_summary("a", 1)])
    with pytest.raises(ValueError, match="stats"):
        StepBlock(
            block.keys, block.calls, block.flags, np.zeros((2, S)), block.hist_rows, block.hists
        )


def test_the_builder_keeps_the_order_rows_were_added_across_layouts(tmp_path: Path) -> None:
    b = seg.SegmentBuilder("abcdef0123456789")
    wide = ("a", "b")  # two layouts that share series "a": steps alternate between them
    added: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    for step in range(6):
        layers = wide if step % 2 else ("a",)
        rows = [_summary(layer, step, hist=step % 3 == 0) for layer in layers]
        if step == 4:
            rows.append(_summary("a", step, call=1, hist=False))  # called twice this step
        b.add_block(step, StepBlock.from_summaries(rows))
        for r in rows:
            added[r.layer].append((step, r.call))
    path = tmp_path / "s.h5"
    seg.write_segment(str(path), b, "test")
    with h5py.File(path, "r") as f:
        for layer, want in added.items():
            index, stats = seg.read_stats(f, (layer, "activation", "output"))
            assert [(int(s), int(c)) for s, c, _ in index] == want
            np.testing.assert_array_equal(stats[:, 0], [s + c / 10 for s, c in want])
            hist_index, dense = seg.read_histograms(f, (layer, "activation", "output"))
            hist_steps = [s for s, c in want if s % 3 == 0]
            assert hist_index[:, 0].tolist() == hist_steps
            for row, step in zip(dense, hist_steps, strict=True):
                np.testing.assert_array_equal(row, np.bincount([step % 512, 7], minlength=512))


def test_a_step_logged_twice_keeps_its_first_snapshot(tmp_path: Path) -> None:
    b = seg.SegmentBuilder("abcdef0123456789")
    for value in (1.0, 2.0):
        row = _summary("a", 5)
        row.snapshot = Snapshot(np.full(2, value, np.float32), "float32", (2,))
        b.add(5, [row])
    path = tmp_path / "s.h5"
    seg.write_segment(str(path), b, "test")
    with h5py.File(path, "r") as f:
        data, _ = seg.read_snapshot(f, ("a", "activation", "output"), 5, 0)
    assert data.tolist() == [1.0, 1.0]


def test_blocks_where_only_some_rows_have_histograms(tmp_path: Path) -> None:
    b = seg.SegmentBuilder("abcdef0123456789")
    for step in range(4):  # "b" has a histogram every step, "a" only on even steps
        b.add_block(
            step,
            StepBlock.from_summaries(
                [_summary("a", step, hist=step % 2 == 0), _summary("b", step)]
            ),
        )
    path = tmp_path / "s.h5"
    seg.write_segment(str(path), b, "test")
    with h5py.File(path, "r") as f:
        for layer, steps in (("a", [0, 2]), ("b", [0, 1, 2, 3])):
            index, dense = seg.read_histograms(f, (layer, "activation", "output"))
            assert index[:, 0].tolist() == steps
            for row, step in zip(dense, steps, strict=True):
                np.testing.assert_array_equal(row, np.bincount([step % 512, 7], minlength=512))
