"""The tracker command line."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import tracker
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
    assert up.exit_code == 0 and "revision 0001" in up.output
