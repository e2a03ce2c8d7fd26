"""Logging to a live `tracker server` (gunicorn) through the spool: kill it mid-run, restart it,
everything arrives exactly once; a server that is down at finish leaves a spool `tracker sync`
pushes; a full spool drops segments but keeps metrics; a refused token stops uploads."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tracker
from tracker.catalog.tokens import create_token
from tracker.cli import main
from tracker.remote import RemoteStore
from tracker.store import Store
from tracker.writer import WriterConfig

STEPS_PER_SEGMENT = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `tracker server` process group on a loopback port, that tests stop and start."""

    def __init__(self, store: Path, port: int) -> None:
        self.store, self.port = store, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-c", "from tracker.cli import run; run()", "server"]
        argv += ["--store", str(self.store), "--port", str(self.port), "--workers", "1"]
        self.proc = subprocess.Popen(
            argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("tracker server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """(a running server over a new store, a token for project "p"), shared by this module
    (each start imports torch in two processes: seconds)."""
    store = tmp_path_factory.mktemp("remote") / "store"
    with Store.open(store) as opened:
        token = create_token(opened.catalog, "test", "p")[1]
    srv = Server(store, _free_port())
    srv.start()
    yield srv, token
    srv.kill()


@pytest.fixture
def server(
    live: tuple[Server, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Server, str]:
    """The live server, running; this test's spool in tmp_path."""
    monkeypatch.setenv("TRACKER_SPOOL", str(tmp_path / "spool"))
    if live[0].proc is None:
        live[0].start()
    return live


def _train(run: tracker.Run, steps: range) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    run.watch(model, every=1, histogram_every=2, snapshot_every=3)
    for step in steps:
        model(torch.randn(5, 3)).sum().backward()
        run.log({"loss": float(step)}, step=step)


def _fast() -> WriterConfig:
    return WriterConfig(steps_per_segment=STEPS_PER_SEGMENT, flush_seconds=0.05)


def _check_arrived(store: Path, run_id: str, steps: int) -> None:
    """Every step once: stats, metrics; and the server compacted the run when it finished."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # compaction runs in the server after the last request
        with Store.open(store) as opened:
            if not {s.kind for s in opened.catalog.segments(run_id, 0)} & {"segment"}:
                break
        time.sleep(0.1)
    with tracker.open_run(run_id, store=store) as r:
        assert r.info.status == "finished"
        got, _ = r.series("0", "activation", "mean")
        assert got.tolist() == list(range(steps))
        got, values = r.metrics("loss")
        assert got.tolist() == list(range(steps)) and values.tolist() == list(range(steps))
    with Store.open(store) as opened:
        rows = opened.catalog.segments(run_id, 0)
        assert {s.kind for s in rows} == {"stats", "snapshots"}  # compacted by the server
        stats = [s for s in rows if s.kind == "stats"]
        assert len(stats) == 1 and (stats[0].step_min, stats[0].step_max) == (0, steps - 1)
        assert len(opened.files.list_files(f"runs/{run_id}")) == len(rows)


def test_kill_and_restart_the_server_mid_run(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv, token = server
    run = tracker.init(project="p", name="remote", store=srv.url, token=token, writer=_fast())
    assert run.store == srv.url
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    run.watch(model, every=1, histogram_every=2, snapshot_every=3)

    def steps(span: range) -> None:
        for step in span:
            model(torch.randn(5, 3)).sum().backward()
            run.log({"loss": float(step)}, step=step)
            time.sleep(0.01)

    steps(range(0, 12))
    srv.kill()
    started = time.monotonic()
    steps(range(12, 30))  # training goes on while the server is down
    assert time.monotonic() - started < 5
    spool = tmp_path / "spool" / run.id
    assert any(spool.glob("*.h5")), "segments wait in the spool"
    srv.start()
    steps(range(30, 40))
    run.finish()
    assert run.upload_left.operations == 0
    assert not spool.exists()
    _check_arrived(srv.store, run.id, 40)


def test_a_server_down_at_finish_leaves_a_spool_that_sync_pushes(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    srv, token = server
    srv.kill()
    monkeypatch.setenv("TRACKER_FINISH_TIMEOUT", "0.5")
    monkeypatch.setenv("TRACKER_STORE", srv.url)
    monkeypatch.setenv("TRACKER_TOKEN", token)
    run = tracker.init(project="p", name="offline", writer=_fast())
    _train(run, range(10))
    with caplog.at_level(logging.WARNING, logger="tracker"):
        started = time.monotonic()
        run.finish()
        assert time.monotonic() - started < 10
    assert run.upload_left.operations > 0
    assert "tracker sync" in caplog.text
    srv.start()
    result = CliRunner().invoke(main, ["sync", "--spool", str(tmp_path / "spool")])
    assert result.exit_code == 0, result.output
    assert f"{run.id}: done" in result.output
    assert not (tmp_path / "spool" / run.id).exists()
    _check_arrived(srv.store, run.id, 10)


def test_a_full_spool_drops_segments_but_keeps_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = RemoteStore(f"http://127.0.0.1:{_free_port()}", "t", tmp_path / "spool", max_bytes=1)
    run = tracker.Run(remote, "p", "full", {}, [], _fast())
    _train(run, range(6))
    run.flush(timeout=10)
    folder = tmp_path / "spool" / run.id
    assert not list(folder.glob("*.h5"))
    kinds = [p.read_text() for p in sorted(folder.glob("*.json")) if p.name[0].isdigit()]
    assert any('"op": "metrics"' in k for k in kinds) and any('"op": "run"' in k for k in kinds)
    assert run._all_counters()["lost_steps"] > 0
    monkeypatch.setenv("TRACKER_FINISH_TIMEOUT", "0.2")
    run.finish()
    assert run.upload_left.operations > 0


def test_a_refused_token_stops_uploads_and_says_so(
    server, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    run = tracker.init(project="p", store=srv.url, token="trk_wrong", writer=_fast())
    _train(run, range(3))
    with caplog.at_level(logging.WARNING, logger="tracker"):
        run.finish()
    assert run.upload_left.operations > 0
    assert "refused the token" in caplog.text
    with Store.open(srv.store) as opened:
        assert opened.catalog.get_run(run.id) is None


def test_sync_with_nothing_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sync", "--spool", str(tmp_path / "none")])
    assert result.exit_code == 0 and "nothing to sync" in result.output
