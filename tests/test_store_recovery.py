"""Recovery on open: what a dead process left is registered, deleted or finished; live runs are
left alone; and opening a store costs one look at .active/, not a walk over every run."""

from __future__ import annotations

import numpy as np
import pytest

from tests import synthetic
from tracker.capture.snapshot import decode_snapshot
from tracker.catalog import MetricRow
from tracker.reader import RunReader, find_run
from tracker.store import LocalStore, Store
from tracker.store.compact import compact_run
from tracker.store.delete import delete_run
from tracker.store.segment import Batch, SegmentBuilder

RUN = "00000000000000e1"
KEY = ("fc", "activation", "output")


@pytest.fixture
def run_store(any_store: Store) -> Store:
    store = any_store  # on SQLite and on PostgreSQL
    synthetic.create_run(store, RUN)
    synthetic.write_steps(store, RUN, range(14))  # two committed segments, steps 0-13
    return store


def reopen(store: Store) -> Store:
    store.close()
    return Store(store.root, store.catalog.url)


def die_holding(store: Store, purpose: str, rank: int = 0) -> None:
    """Leave the lock file a process that died while ``purpose`` would leave."""
    lock = store.lock(RUN, rank, purpose)
    assert lock.acquire()
    lock.release(finished=False)


def uncommitted_segment(store: Store, steps: range) -> str:
    """A segment written durably whose writer died before registering it."""
    b = SegmentBuilder(RUN)
    records = [synthetic.record(step) for step in steps]
    for r in records:
        b.add(r.step, r.summaries)
    b.batch = Batch(
        [("loss", r.step, r.metrics["loss"], r.epoch, r.time) for r in records],
        {1: (steps.start, steps.stop - 1)},
        {},
    )
    return store.files.put_segment(b, "test").relpath


def test_a_finished_but_unregistered_segment_is_registered_with_its_metrics(
    run_store: Store,
) -> None:
    relpath = uncommitted_segment(run_store, range(14, 20))
    die_holding(run_store, "writer")
    store = reopen(run_store)
    assert relpath in {s.path for s in store.catalog.segments(RUN)}
    with RunReader(store, find_run(store, RUN)) as r:
        steps, rows = r.stats(*KEY)
        assert steps.tolist() == list(range(20))
        np.testing.assert_array_equal(rows[-1], synthetic.stats_row(19, KEY, 0))
        want = synthetic.snapshot(18, KEY, 0)
        np.testing.assert_array_equal(r.tensor("fc", "activation", 18), want.data)
        assert r.metrics("loss")[0].tolist() == list(range(20))
        assert r.status == "crashed"  # its writer died: the run is not running any more
    assert store.catalog.get_run(RUN).summary["last_step"] == 19
    assert not list((store.root / ".active").iterdir())
    store.close()


def test_recovery_never_overwrites_a_value_logged_again_later(run_store: Store) -> None:
    uncommitted_segment(run_store, range(14, 16))
    run_store.catalog.commit_batch(RUN, None, [MetricRow("loss", 15, 99.0, 1, 0.0)], {}, {}, {})
    die_holding(run_store, "writer")
    store = reopen(run_store)
    with RunReader(store, find_run(store, RUN)) as r:
        steps, losses = r.metrics("loss")
    values = dict(zip(steps.tolist(), losses.tolist(), strict=True))
    assert values[15] == 99.0 and values[14] == synthetic.loss(14)
    store.close()


def test_temporary_files_go_only_once_their_writer_is_dead(run_store: Store) -> None:
    tmp = run_store.files.resolve(f"runs/{RUN}/rank0/000000000099-000000000099-x.h5.tmp")
    tmp.write_bytes(b"half a segment")
    live = run_store.lock(RUN, 0, "writer")
    assert live.acquire()  # a live writer: it may be writing that file right now
    store = reopen(run_store)
    assert tmp.exists()
    live.release(finished=False)  # now it is dead
    store = reopen(store)
    assert not tmp.exists()
    assert {i.relpath for i in store.files.list_files("runs")} == {
        s.path for s in store.catalog.segments(RUN)
    }
    store.close()


def test_a_damaged_unregistered_file_is_set_aside_not_deleted(run_store: Store) -> None:
    relpath = f"runs/{RUN}/rank0/000000000050-000000000051-garbage.h5"
    run_store.files.resolve(relpath).write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    die_holding(run_store, "writer")
    store = reopen(run_store)
    assert store.files.resolve(f"damaged/{relpath}").read_bytes().endswith(b"truncated")
    assert len(store.catalog.segments(RUN)) == 2
    store.close()


def test_compaction_killed_before_its_swap_is_undone(
    run_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {s.path for s in run_store.catalog.segments(RUN)}

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # stands in for the process dying here

    monkeypatch.setattr(run_store.catalog, "swap_segments", killed)
    with pytest.raises(KeyboardInterrupt):
        compact_run(run_store, RUN)
    assert len(run_store.files.list_files("runs")) > len(before)  # the new, unregistered files
    store = reopen(run_store)
    assert {i.relpath for i in store.files.list_files("runs")} == before
    assert {s.path for s in store.catalog.segments(RUN)} == before
    store.close()


def test_compaction_killed_after_its_swap_is_finished(
    run_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(self: LocalStore, relpath: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalStore, "delete", killed)
    with pytest.raises(KeyboardInterrupt):
        compact_run(run_store, RUN)
    monkeypatch.undo()
    assert len(run_store.catalog.segments(RUN, superseded=True)) == 4  # 2 old, 2 new
    store = reopen(run_store)
    rows = store.catalog.segments(RUN, superseded=True)
    assert sorted(s.kind for s in rows) == ["snapshots", "stats"]
    assert {i.relpath for i in store.files.list_files("runs")} == {s.path for s in rows}
    with RunReader(store, find_run(store, RUN)) as r:
        assert r.stats(*KEY)[0].tolist() == list(range(14))
        want = synthetic.snapshot(12, KEY, 0)
        np.testing.assert_array_equal(
            r.tensor("fc", "activation", 12), decode_snapshot(want.data, want.dtype)
        )
    store.close()


def test_an_interrupted_deletion_is_finished_on_open(
    run_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(run_id: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_store.catalog, "delete_run", killed)
    with pytest.raises(KeyboardInterrupt):
        delete_run(run_store, RUN)
    monkeypatch.undo()
    assert run_store.catalog.get_run(RUN) is not None  # files gone, rows not yet
    store = reopen(run_store)
    assert store.catalog.get_run(RUN) is None and store.catalog.segments(RUN) == []
    assert store.files.list_files("runs") == []
    store.close()


def test_opening_a_store_looks_at_lock_files_only(
    run_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def walk(*args: object) -> None:
        raise AssertionError("opening a store must not list every run's files")

    monkeypatch.setattr(LocalStore, "list_files", walk)
    monkeypatch.setattr(LocalStore, "list_incomplete", walk)
    reopen(run_store).close()
