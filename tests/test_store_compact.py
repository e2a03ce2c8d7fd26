"""Compaction and retention: reads are identical before and after, bit for bit; swaps are atomic."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tracker
from tests import synthetic
from tracker.capture.block import Summary
from tracker.capture.snapshot import decode_snapshot
from tracker.capture.step import GRAD_ENABLED, PROBE, TRAINING_MODE
from tracker.names import STAT_NAMES
from tracker.reader import RunReader, _select_rows, find_run
from tracker.store import Store
from tracker.store import segment as seg
from tracker.store.compact import compact_run, count_droppable
from tracker.store.errors import RunBusyError
from tracker.store.segment import SegmentBuilder
from tracker.store.usage import run_usage

RUN = "00000000000000c1"
STEPS = 45


@pytest.fixture
def run_store(any_store: Store) -> Store:
    """A store (SQLite or PostgreSQL catalog) with the synthetic run of STEPS steps in segments
    of 7 steps, not compacted."""
    store = any_store
    synthetic.create_run(store, RUN)
    synthetic.write_steps(store, RUN, range(STEPS))
    return store


def reader(store: Store, run_id: str = RUN) -> RunReader:
    return RunReader(store, find_run(store, run_id))


def every_read(store: Store, run_id: str = RUN) -> dict[Any, Any]:
    """Everything the reader can answer about a run, every call/probe variant included."""
    out: dict[Any, Any] = {}
    with reader(store, run_id) as r:
        out["latest"] = {k: (s, v.tobytes()) for k, (s, v) in r.latest(max_segments=10**6).items()}
        for layer, quantity, part in synthetic.KEYS:
            for call in (None, 0, 1, 2, 3):
                for probe in (False, True):
                    key = (layer, quantity, part, call, probe)
                    steps, rows = r.stats(layer, quantity, part, call, probe)
                    out[(*key, "stats")] = (steps.tolist(), rows.tobytes(), rows.shape)
                    steps, hists = r.histograms(layer, quantity, part, call, probe)
                    out[(*key, "hist")] = (steps.tolist(), hists.tobytes())
                    snaps = r.steps(layer, quantity, part, call, probe)
                    out[(*key, "steps")] = snaps.tolist()
                    for step in snaps.tolist():
                        data, meta = r.tensor_with_meta(layer, quantity, step, part, call, probe)
                        out[(*key, step)] = (data.tobytes(), data.dtype.str, data.shape, meta)
                    steps, values = r.series(layer, quantity, "std", part, call, probe)
                    out[(*key, "series")] = (steps.tolist(), values.tobytes())
    return out


def test_compaction_changes_no_read_and_leaves_two_kinds_of_file(run_store: Store) -> None:
    before = every_read(run_store)
    segments = run_store.catalog.segments(RUN)
    assert {s.kind for s in segments} == {"segment"} and len(segments) == 7
    result = compact_run(run_store, RUN)
    assert result.changed and result.files_before == 7
    after_rows = run_store.catalog.segments(RUN)
    assert sorted(s.kind for s in after_rows) == ["snapshots", "stats"]
    assert every_read(run_store) == before
    # The superseded files and rows are gone; the folder holds exactly the registered files.
    files = {i.relpath for i in run_store.files.list_files(f"runs/{RUN}")}
    assert files == {s.path for s in run_store.catalog.segments(RUN, superseded=True)}
    assert not run_store.files.list_incomplete("runs")


def test_reads_match_what_was_written(run_store: Store) -> None:
    compact_run(run_store, RUN)
    key = ("act", "activation", "output")
    with reader(run_store) as r:
        steps, rows = r.stats(*key)
        assert steps.tolist() == list(range(STEPS))  # the training call only, one per step
        np.testing.assert_array_equal(
            rows, [synthetic.stats_row(s, key, 0) for s in steps.tolist()]
        )
        steps, rows = r.stats(*key, probe=True)
        assert steps.tolist() == list(range(0, STEPS, 5))
        np.testing.assert_array_equal(
            rows, [synthetic.stats_row(s, key, 2) for s in steps.tolist()]
        )
        steps, values = r.series("act", "activation", "mean", call=1)
        assert steps.tolist() == list(range(0, STEPS, 4))
        np.testing.assert_array_equal(
            values, [synthetic.stats_row(s, key, 1)[1] for s in steps.tolist()]
        )
        for step in (0, 22, 44):
            want = synthetic.snapshot(step, key, 0)
            np.testing.assert_array_equal(
                r.tensor("act", "activation", step), decode_snapshot(want.data, want.dtype)
            )
        steps, hists = r.histograms(*key)
        assert steps.tolist() == list(range(0, STEPS, 3))
        np.testing.assert_array_equal(
            hists, [synthetic.histogram(s, key, 0) for s in steps.tolist()]
        )
        assert r.latest()[key][0] == STEPS - 1
        assert r.metrics("loss")[1].tolist() == [synthetic.loss(s) for s in range(STEPS)]


def test_compacting_again_after_more_steps_merges_everything(run_store: Store) -> None:
    compact_run(run_store, RUN)
    synthetic.write_steps(run_store, RUN, range(STEPS, STEPS + 20))  # a resumed run
    mixed = every_read(run_store)  # one stats file plus new segments: the reader merges them
    assert compact_run(run_store, RUN).changed
    assert every_read(run_store) == mixed
    kinds = sorted(s.kind for s in run_store.catalog.segments(RUN))
    assert kinds.count("stats") == 1 and "segment" not in kinds
    assert not compact_run(run_store, RUN).changed  # nothing left to do


def test_snapshot_files_follow_epochs_once_big_enough(
    run_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracker.store.compact as compact

    monkeypatch.setattr(compact, "SNAPSHOT_FILE_MIN_BYTES", 1)  # every epoch its own file
    before = every_read(run_store)
    compact_run(run_store, RUN)
    snaps = [s for s in run_store.catalog.segments(RUN) if s.kind == "snapshots"]
    epochs = [(s.step_min // 10, s.step_max // 10) for s in snaps]
    assert epochs == [(e, e) for e in range(5)]  # 45 steps: epochs 0..4, one file each
    assert every_read(run_store) == before


def test_a_live_run_is_not_compacted(run_store: Store) -> None:
    with run_store.lock(RUN, 0, "writer"):
        with pytest.raises(RunBusyError, match="being written"):
            compact_run(run_store, RUN)
        assert {s.kind for s in run_store.catalog.segments(RUN)} == {"segment"}


def test_a_failed_swap_changes_nothing(run_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    before = every_read(run_store)
    rows = [s.path for s in run_store.catalog.segments(RUN)]

    def down(*args: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(run_store.catalog, "swap_segments", down)
    with pytest.raises(RuntimeError, match="went away"):
        compact_run(run_store, RUN)
    monkeypatch.undo()
    assert [s.path for s in run_store.catalog.segments(RUN)] == rows
    assert every_read(run_store) == before
    # Its new files were left for recovery (the swap may have committed); the next open cleans.
    with Store(run_store.root, run_store.catalog.url) as reopened:
        files = {i.relpath for i in reopened.files.list_files("runs")}
        assert files == set(rows)


def test_a_swap_that_committed_but_then_failed_loses_nothing(
    run_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = every_read(run_store)
    real = run_store.catalog.swap_segments

    def committed_then_lost(*args: Any) -> None:
        real(*args)
        raise ConnectionError("connection lost after COMMIT")  # did it commit? we cannot know

    monkeypatch.setattr(run_store.catalog, "swap_segments", committed_then_lost)
    with pytest.raises(ConnectionError):
        compact_run(run_store, RUN)
    monkeypatch.undo()
    assert every_read(run_store) == before  # the new files, now registered, were kept
    with Store(run_store.root, run_store.catalog.url) as reopened:  # recovery finishes the job
        assert every_read(reopened) == before
        rows = reopened.catalog.segments(RUN, superseded=True)
        assert sorted(s.kind for s in rows) == ["snapshots", "stats"]
        assert {i.relpath for i in reopened.files.list_files("runs")} == {s.path for s in rows}


def test_a_reader_keeps_working_across_compaction(run_store: Store) -> None:
    holding = reader(run_store)
    _, before = holding.series("fc", "weight", "mean")  # has the segments open
    listed = reader(run_store)
    listed.stats("fc", "weight")  # has listed the segments
    listed.close()  # and closed them
    compact_run(run_store, RUN)
    np.testing.assert_array_equal(holding.series("fc", "weight", "mean")[1], before)  # unlinked
    np.testing.assert_array_equal(listed.series("fc", "weight", "mean")[1], before)  # re-listed
    assert listed.tensor("fc", "weight", 10).shape == (3, 4)
    holding.close()


def test_retention_thins_snapshots_only(run_store: Store) -> None:
    before = every_read(run_store)
    assert count_droppable(run_store, RUN, 4) == sum(
        1
        for step in range(0, STEPS, 2)
        if step % 4
        for key in synthetic.KEYS
        for _ in synthetic.calls(step, key[1])
    )
    result = compact_run(run_store, RUN, snapshot_every=4)
    after = every_read(run_store)
    for k, v in before.items():
        if k == "latest" or k[-1] in ("stats", "hist", "series"):
            assert after[k] == v, k  # stats and histograms untouched
        elif k[-1] == "steps":
            assert after[k] == [s for s in v if s % 4 == 0]
        elif k[-1] % 4 == 0:
            assert after[k] == v  # kept snapshots bit-exact
        else:
            assert k not in after
    assert result.snapshots_dropped == count_droppable(run_store, RUN, 4) + result.snapshots_dropped
    assert count_droppable(run_store, RUN, 4) == 0
    # Thinning a compacted run again rewrites only its snapshot files.
    stats_file = [s.path for s in run_store.catalog.segments(RUN) if s.kind == "stats"]
    compact_run(run_store, RUN, snapshot_every=8)
    assert [s.path for s in run_store.catalog.segments(RUN) if s.kind == "stats"] == stats_file
    with reader(run_store) as r:
        assert r.steps("fc", "weight").tolist() == list(range(0, STEPS, 8))


def test_usage_counts_bytes_by_kind(run_store: Store) -> None:
    before = run_usage(run_store, RUN)
    assert before.by_kind["segment"].files == 7 and not before.compacted
    assert before.live.bytes == before.on_disk.bytes > 0
    compact_run(run_store, RUN)
    after = run_usage(run_store, RUN)
    assert after.compacted and set(after.by_kind) == {"stats", "snapshots"}
    assert after.live == after.on_disk and after.superseded.files == 0
    assert after.to_dict()["compacted"] is True


def test_finish_compacts_unless_told_not_to(store_path: Path) -> None:
    for compact in (True, False):
        with tracker.init(project="p", store=store_path, compact=compact) as run:
            for step in range(3):
                run.log({"loss": 1.0 / (step + 1)})
        with Store.open(store_path) as store:
            # metrics only: no tensor files either way, and no lock file left
            assert store.catalog.segments(run.id) == []
            assert not list((store_path / ".active").glob("*.lock"))


def test_demo_runs_are_compacted_at_finish(demo_store: Path, demo_runs: dict[str, str]) -> None:
    with Store.open(demo_store) as store:
        for run_id in demo_runs.values():
            kinds = sorted(s.kind for s in store.catalog.segments(run_id) if s.kind != "topk")
            assert kinds == ["snapshots", "stats"]  # top-k files are one per epoch already


# -- property: any rows, any selection --------------------------------------------------------

_FLAGS = st.sampled_from([0, GRAD_ENABLED, TRAINING_MODE, GRAD_ENABLED | TRAINING_MODE, PROBE,
                          PROBE | GRAD_ENABLED, PROBE | TRAINING_MODE | GRAD_ENABLED])  # fmt: skip
_ROW = st.tuples(st.integers(0, 30), st.integers(0, 2), _FLAGS)


_run_ids = itertools.count(1)


def _register(
    store: Store, run_id: str, segments: list[list[tuple[int, int, int]]], n0: int = 0
) -> None:
    """Write and register one segment per list of (step, call, flags) rows; values from n, i."""
    key = ("l", "activation", "output")
    for n, rows in enumerate(segments, start=n0):
        b = SegmentBuilder(run_id)
        for i, (step, call, flags) in enumerate(rows):
            stats = np.full(len(STAT_NAMES), n * 100.0 + i)
            hist = np.zeros(512, np.int64)
            hist[(n * 7 + i) % 512] = i + 1
            b.add(step, [Summary(*key, call, flags, stats, hist)])
        f = store.files.put_segment(b, "test")
        segment = {
            "id": f.id,
            "rank": 0,
            "step_min": b.step_min,
            "step_max": b.step_max,
            "n_steps": len(b),
            "path": f.relpath,
            "nbytes": f.nbytes,
            "checksum": f.checksum,
            "schema_version": seg.SCHEMA_VERSION,
        }
        store.catalog.commit_batch(run_id, segment, [], {}, {"l": {"output": [1]}}, {})


def _new_run(store: Store) -> str:
    run_id = f"{next(_run_ids):016x}"  # one store, new runs for each example
    store.catalog.create_run(run_id, "p", run_id, {}, [], "host", 1, None)
    store.catalog.add_layers(
        run_id, [{"name": "l", "position": 0, "type": "X", "kind": None, "params": {}}]
    )
    return run_id


def _all_selections(store: Store, run_id: str) -> list[Any]:
    key = ("l", "activation", "output")
    with reader(store, run_id) as r:
        out: list[Any] = [r.latest(max_segments=99).get(key, (None, None))]
        out[0] = (out[0][0], None if out[0][1] is None else out[0][1].tolist())
        for call in (None, 0, 1, 2):
            for probe in (False, True):
                steps, rows = r.stats(*key, call=call, probe=probe)
                out.append((steps.tolist(), rows.tolist()))
                out.append(r.series("l", "activation", "mean", call=call, probe=probe)[1].tolist())
                steps, hists = r.histograms(*key, call=call, probe=probe)
                out.append((steps.tolist(), hists.tolist()))
        return out


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(segments=st.lists(st.lists(_ROW, min_size=1, max_size=12), min_size=1, max_size=5))
@example(segments=[[(5, 0, PROBE | GRAD_ENABLED)], [(5, 0, GRAD_ENABLED)]])  # a tie across files
@example(segments=[[(9, 0, GRAD_ENABLED)], [(3, 0, GRAD_ENABLED)], [(4, 0, 0)]])  # steps go back
@example(  # reader.latest() takes the newest file's last row, which is not the largest step here
    segments=[
        [(1, 0, GRAD_ENABLED), (9, 0, GRAD_ENABLED)],
        [(5, 0, GRAD_ENABLED)],
        [(0, 0, PROBE)],
        [(0, 0, PROBE)],
    ]
)
def test_property_compacted_stats_answer_every_selection_like_the_segments(
    store: Store, segments: list[list[tuple[int, int, int]]]
) -> None:
    """Rows in any order, repeated steps, calls and flags, compacted in one go or in two (a run
    resumed after compaction, its steps going on): every read is what the segments would give."""
    half = len(segments) // 2
    offset = 1 + max((step for rows in segments[:half] for step, _, _ in rows), default=-1)
    segments = segments[:half] + [
        [(s + offset, c, f) for s, c, f in rows] for rows in segments[half:]
    ]
    raw = _new_run(store)
    _register(store, raw, segments)
    want = _all_selections(store, raw)
    compact_run(store, raw)
    assert [s.kind for s in store.catalog.segments(raw)] == ["stats"]
    assert _all_selections(store, raw) == want

    resumed = _new_run(store)
    _register(store, resumed, segments[:half])
    compact_run(store, resumed)
    _register(store, resumed, segments[half:], n0=half)
    assert _all_selections(store, resumed) == want  # one stats file + segments, merged
    compact_run(store, resumed)
    assert _all_selections(store, resumed) == want
    # And the reference: the default read is _select_rows over all rows as written.
    index = np.asarray([row for rows in segments for row in rows], dtype=np.int64)
    assert want[1][0] == index[_select_rows(index, None), 0].tolist()


@pytest.mark.parametrize(
    ("steps", "want"),
    [([], [0, 0, 1]), ([7], [1, 7, 1]), ([0, 2, 4], [3, 0, 2]), ([0, 1, 3], [3, 0, 0])],
)
def test_default_steps_are_kept_as_a_range_only_when_they_are_one(
    steps: list[int], want: list[int]
) -> None:
    from tracker.store.compacted import _default_rows

    assert _default_rows(np.asarray(steps, dtype=np.int64)).tolist() == want
