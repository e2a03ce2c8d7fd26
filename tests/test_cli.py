"""The tracker command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import tracker
from tracker.catalog.db import HEAD_REVISION
from tracker.cli import main


def test_demo_records_both_runs_without_serving(tmp_path: Path) -> None:
    store = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--steps", "5", "--no-serve", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "run healthy" in result.output and "run sick" in result.output
    assert str(store) in result.output
    runs = tracker.list_runs(store=store)
    assert sorted(r.name for r in runs) == ["healthy", "sick"]
    assert all(r.summary["last_step"] == 4 for r in runs)


def test_demo_rejects_bad_steps(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--steps", "0", "--no-serve", "--store", str(tmp_path)]
    )
    assert result.exit_code == 2 and "at least 1" in result.output


def test_runs_and_db_upgrade(tmp_path: Path, demo_store: Path) -> None:
    result = CliRunner().invoke(main, ["runs", "--store", str(demo_store)])
    assert result.exit_code == 0 and "healthy" in result.output and "sick" in result.output
    empty = CliRunner().invoke(main, ["runs", "--store", str(tmp_path / "empty")])
    assert "no runs" in empty.output
    up = CliRunner().invoke(main, ["db", "upgrade", "--store", str(tmp_path / "new")])
    assert up.exit_code == 0 and f"revision {HEAD_REVISION}" in up.output


def _synthetic_store(root: Path, run_id: str = "00000000000000c1") -> str:
    from tests import synthetic
    from tracker.store import Store

    with Store.open(root) as store:
        synthetic.create_run(store, run_id)
        synthetic.write_steps(store, run_id, range(30))
        store.catalog.set_status(run_id, "finished", ended=True)
    return run_id


def test_compact_du_and_retain(tmp_path: Path) -> None:
    from tracker.store import Store

    root = tmp_path / "s"
    run_id = _synthetic_store(root)
    du = CliRunner().invoke(main, ["du", "--store", str(root)])
    assert du.exit_code == 0 and run_id in du.output and "segments" in du.output, du.output
    out = CliRunner().invoke(main, ["compact", run_id, "--store", str(root)])
    assert out.exit_code == 0 and "5 files" in out.output and "-> 2 files" in out.output
    again = CliRunner().invoke(main, ["compact", "--store", str(root)])
    assert "nothing to do" in again.output
    assert "compacted" in CliRunner().invoke(main, ["du", run_id, "--store", str(root)]).output
    dry = CliRunner().invoke(
        main,
        [
            "retain",
            "--snapshots-every",
            "4",
            "--older-than",
            "0",
            "--dry-run",
            "--store",
            str(root),
        ],
    )
    assert dry.exit_code == 0 and "would drop" in dry.output, dry.output
    recent = CliRunner().invoke(
        main, ["retain", "--snapshots-every", "4", "--older-than", "7", "--store", str(root)]
    )
    assert "no runs ended more than 7 days ago" in recent.output
    done = CliRunner().invoke(
        main, ["retain", "--snapshots-every", "4", "--older-than", "0", "--store", str(root)]
    )
    assert done.exit_code == 0 and "snapshots dropped" in done.output, done.output
    with tracker.open_run(run_id, store=root) as r:
        assert r.steps("fc", "weight").tolist() == [0, 4, 8, 12, 16, 20, 24, 28]
        assert r.stats("fc", "weight")[0].tolist() == list(range(30))
    with Store.open(root) as store:
        assert sorted(s.kind for s in store.catalog.segments(run_id)) == ["snapshots", "stats"]


def test_doctor_dry_run_then_repair(tmp_path: Path) -> None:
    root = tmp_path / "s"
    run_id = _synthetic_store(root)
    tmp = root / "runs" / run_id / "rank0" / "x.h5.tmp"
    tmp.write_bytes(b"half")
    dry = CliRunner().invoke(main, ["doctor", "--dry-run", "--store", str(root)])
    assert dry.exit_code == 1 and "would: delete" in dry.output and tmp.exists()
    fix = CliRunner().invoke(main, ["doctor", "--store", str(root)])
    assert fix.exit_code == 0 and "done: delete" in fix.output and not tmp.exists()
    clean = CliRunner().invoke(main, ["doctor", "--store", str(root)])
    assert clean.exit_code == 0 and "no problems found" in clean.output


def test_doctor_says_whether_the_stats_kernel_is_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.capture import stats

    root = tmp_path / "s"
    _synthetic_store(root)
    built = CliRunner().invoke(main, ["doctor", "--store", str(root)])
    assert f"stats kernel: {stats.KERNEL_STATUS}" in built.output
    monkeypatch.setattr(stats, "KERNEL_STATUS", "stale (API 1): reinstall")
    stale = CliRunner().invoke(main, ["doctor", "--store", str(root)])
    assert stale.exit_code == 0 and "stats kernel: stale (API 1): reinstall" in stale.output


def test_rm_asks_then_deletes_files_and_rows(tmp_path: Path) -> None:
    root = tmp_path / "s"
    run_id = _synthetic_store(root)
    kept = CliRunner().invoke(main, ["rm", run_id, "--store", str(root)], input="n\n")
    assert "kept" in kept.output and (root / "runs" / run_id).exists()
    gone = CliRunner().invoke(main, ["rm", run_id, "--store", str(root)], input="y\n")
    assert gone.exit_code == 0 and "deleted run" in gone.output, gone.output
    assert not (root / "runs" / run_id).exists()
    assert tracker.list_runs(store=root) == []
    missing = CliRunner().invoke(main, ["rm", run_id, "--yes", "--store", str(root)])
    assert missing.exit_code != 0 and "no run with id or name" in str(missing.exception)


def test_token_create_list_revoke(tmp_path: Path) -> None:
    from tracker.catalog.tokens import verify_token
    from tracker.store import Store

    store = str(tmp_path / "s")
    runner = CliRunner()
    created = runner.invoke(main, ["token", "create", "--project", "p", "--store", store])
    assert created.exit_code == 0, created.output
    text = created.stdout.strip()
    token_id = text.split("_")[1]
    listed = runner.invoke(main, ["token", "list", "--store", store])
    assert token_id in listed.output and "active" in listed.output and text not in listed.output
    with Store.open(store) as opened:
        assert verify_token(opened.catalog, text) is not None
    revoked = runner.invoke(main, ["token", "revoke", token_id, "--store", store])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert "revoked" in runner.invoke(main, ["token", "list", "--store", store]).output
    with Store.open(store) as opened:
        assert verify_token(opened.catalog, text) is None
    bad = runner.invoke(main, ["token", "revoke", "nothex", "--store", store])
    assert bad.exit_code != 0
