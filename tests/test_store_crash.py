"""Crash tests (I2): a writer killed with SIGKILL anywhere loses nothing it committed.

Each trial forks a child that writes the synthetic run (tests/synthetic.py) through the real
Writer and compacts it, and kills it with SIGKILL: at a chosen call of a chosen step of the
protocol (writing the HDF5 file, fsync, rename, the catalog commit, and each step of compaction),
or, in the "random" trials, at a random moment while it loops writing and compacting. Then the
store is opened as a new process would (which runs recovery) and checked:

- no temporary or half-written file is left, and every file is registered and readable;
- the run's steps are 0..K with no gap, K at least the last step the child saw committed
  (and the last it saw written durably: recovery keeps whole files), and
  every stats row, histogram, snapshot and metric of them equals what was written, bit for bit;
- `tracker doctor` (checksums included) finds nothing wrong.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import children, synthetic
from tracker.capture.snapshot import decode_snapshot
from tracker.reader import RunReader, find_run
from tracker.store import Store
from tracker.store.doctor import diagnose
from tracker.store.segment import check_header

PHASES = {  # point: (trials, largest nth, possible "when"s)
    "write": (8, 120, ("before",)),
    "fsync": (8, 14, ("before", "after")),
    "rename": (8, 4, ("before", "after")),
    "register": (9, 4, ("before", "during", "after")),
    "compact-write": (5, 25, ("before",)),
    "compact-fsync": (4, 3, ("before", "after")),
    "compact-rename": (4, 2, ("before", "after")),
    "compact-swap": (6, 1, ("before", "during", "after")),
    "compact-delete": (5, 3, ("before", "after")),
    "random": (12, 0, ("",)),
}


def plans(seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for point, (trials, largest, whens) in PHASES.items():
        for _ in range(trials):
            plan = {
                "point": point,
                "nth": rng.randint(1, max(1, largest)),
                "when": rng.choice(whens),
                "segment_steps": rng.randint(3, 6),
                "steps": rng.randint(15, 30),
                "rounds": 1,
                "compact": point.startswith("compact") or rng.random() < 0.5,
            }
            if point == "random":
                plan |= {"rounds": 10_000, "steps": 12, "compact": True}
            out.append(plan)
    return out


def verify(root: Path, run_id: str, report: list[str]) -> dict[str, int]:
    """Open the store like a new process and check everything the module docstring promises."""
    with Store.open(root) as store:  # recovery runs here
        assert store.files.list_incomplete("runs") == []
        files = {i.relpath for i in store.files.list_files(f"runs/{run_id}")}
        rows = store.catalog.segments(run_id, superseded=True)
        assert files == {r.path for r in rows}, "every file is registered, every row has its file"
        assert all(r.superseded_at is None for r in rows)
        for relpath in files:
            with store.files.open(relpath) as f:
                check_header(f)
        with RunReader(store, find_run(store, run_id)) as r:
            # Shapes are registered with the first segment: none means nothing was committed.
            recorded = bool(r.parts("fc", "activation"))
            steps = r.stats("fc", "activation")[0].tolist() if recorded else []
            last = len(steps) - 1
            assert steps == list(range(last + 1)), "committed steps have no gap"
            committed = max(
                [
                    int(line.split()[1])
                    for line in report
                    if line.startswith(("committed", "closed"))
                ]
                or [-1]
            )
            assert last >= committed, f"lost committed steps {last + 1}..{committed}"
            durable = max([int(x.split()[1]) for x in report if x.startswith("durable")] or [-1])
            assert last >= durable, f"threw away whole segment files: steps {last + 1}..{durable}"
            for key in synthetic.KEYS if recorded else []:
                layer, quantity, part = key
                got_steps, got = r.stats(*key)
                want = [synthetic.stats_row(s, key, 0) for s in range(last + 1)]
                assert got_steps.tolist() == steps and got.tobytes() == np.asarray(want).tobytes()
                hist_steps, hists = r.histograms(*key)
                assert hist_steps.tolist() == list(range(0, last + 1, 3))
                want_h = [synthetic.histogram(s, key, 0) for s in hist_steps.tolist()]
                np.testing.assert_array_equal(
                    hists.reshape(-1, 512), np.asarray(want_h).reshape(-1, 512)
                )
                snap_steps = r.steps(layer, quantity, part).tolist()
                assert snap_steps == list(range(0, last + 1, 2))
                for s in snap_steps:
                    want_s = synthetic.snapshot(s, key, 0)
                    got_s = r.tensor(layer, quantity, s, part)
                    assert got_s.tobytes() == decode_snapshot(want_s.data, want_s.dtype).tobytes()
            if last >= 0:
                metric_steps, losses = r.metrics("loss")
                assert metric_steps.tolist() == steps
                assert losses.tolist() == [synthetic.loss(s) for s in steps]
        problems = [
            str(f)
            for f in diagnose(store, repair_now=False, checksums=True)
            if f.problem != "run marked running but not being written"  # killed before finish
        ]
        assert problems == []
        return {"last": last, "committed": committed, "files": len(files)}


@pytest.mark.slow
def test_sigkill_anywhere_loses_nothing_committed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    Store.open(root).close()
    ctx = children.context()
    rng = random.Random(7)
    results: Counter[str] = Counter()
    recovered: Counter[str] = Counter()
    started = time.monotonic()
    for i, plan in enumerate(plans()):
        run_id = f"{i + 1:016x}"
        report_path = tmp_path / f"report-{i}.txt"
        child = ctx.Process(
            target=children.crash_writer, args=(str(root), run_id, plan, str(report_path))
        )
        child.start()
        if plan["point"] == "random":
            # Kill a writer, not a process still starting (a loaded machine starts slowly).
            deadline = time.monotonic() + 60
            while (
                time.monotonic() < deadline
                and child.is_alive()
                and not (report_path.exists() and "ready" in report_path.read_text())
            ):
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 1.0))
            if child.pid is not None and child.is_alive():
                child.kill()
        child.join(60)
        assert child.exitcode is not None, f"trial {i} {plan} hung"
        report = report_path.read_text().splitlines() if report_path.exists() else []
        assert not [line for line in report if line.startswith("error")], (plan, report)
        killed = child.exitcode == -signal.SIGKILL
        try:
            found = verify(root, run_id, report)
        except AssertionError as exc:
            raise AssertionError(f"trial {i} {plan}: {exc}\nreport: {report}") from exc
        phase = plan["point"]
        results[f"{phase} trials"] += 1
        results[f"{phase} killed"] += killed
        recovered[phase] += found["last"] - found["committed"]  # steps recovery registered
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\ncrash trials ({elapsed:.1f} s): phase, trials, killed, steps recovered")
        for phase in PHASES:
            trials, killed = results[f"{phase} trials"], results[f"{phase} killed"]
            print(f"  {phase:15s} {trials:3d} {killed:3d} {recovered[phase]:4d}  all verified")
    total = sum(v for k, v in results.items() if k.endswith("trials"))
    assert total >= 50
    assert sum(v for k, v in results.items() if k.endswith("killed")) >= 0.8 * total
