"""Load test: many training processes log to one `tracker server` while a reader polls compare.

    python bench/load.py [--writers 1,4,16] [--seconds 20] [--workers 4] [--json out.json]

Everything runs on loopback: moto's S3 server (real HTTP, real S3 protocol) holds the segment
files, PostgreSQL (TRACKER_TEST_POSTGRES_URL, default postgres@127.0.0.1:5432) the catalog, and
`tracker server` (gunicorn, --workers) sits in front. For each writer count, that many processes
each train a small MLP for --seconds through the remote client (store="http://..."), recording
stats every step, histograms every 10 and snapshots every 50; meanwhile one reader thread polls
GET /api/v1/compare over the runs being written. Reported per writer count: segments ingested per
second, training steps per second, p50/p99 of the reader's latency, 5xx answers (from gunicorn's
access log and the reader) and steps lost (trained but not in the catalog after finish()).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

PG_ADMIN = os.environ.get(
    "TRACKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
STEPS_PER_SEGMENT = 50
FLUSH_SECONDS = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _writer(url: str, token: str, name: str, seconds: float, ready: Any, go: Any, out: Any) -> None:
    """One training process: a small MLP, trained for ``seconds`` through the remote client."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import tracker
    from tracker.writer import WriterConfig

    torch.set_num_threads(1)
    torch.manual_seed(hash(name) % 1000)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
    model.append(nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    config = WriterConfig(steps_per_segment=STEPS_PER_SEGMENT, flush_seconds=FLUSH_SECONDS)
    run = tracker.init(project="load", name=name, store=url, token=token, writer=config)
    run.watch(model, every=1, histogram_every=10, snapshot_every=50)
    ready.put(run.id)
    go.wait()
    step, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log({"loss": loss.item()}, step=step)
        step += 1
    run.finish()
    out.put((run.id, step, getattr(run, "upload_left", None)))


class Reader(threading.Thread):
    """Polls the compare endpoint over the given runs until stopped; keeps latencies."""

    def __init__(self, base: str, run_ids: list[str]) -> None:
        super().__init__(daemon=True)
        query = f"runs={','.join(run_ids[:8])}&layer=0&quantity=activation&stat=mean"
        self.url = f"{base}/api/v1/compare?{query}"
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as r:
                    r.read()
                    status = r.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            self.latencies.append(time.perf_counter() - t0)
            self.statuses[status] = self.statuses.get(status, 0) + 1


def _access_statuses(log: Path, start: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    with open(log, "rb") as fh:
        fh.seek(start)
        for line in fh.read().decode(errors="replace").splitlines():
            m = re.search(r'" (\d{3}) ', line)
            if m:
                counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
    return counts


def measure(base: str, token: str, writers: int, seconds: float, log: Path) -> dict[str, Any]:
    """One round: ``writers`` processes for ``seconds``; returns its numbers."""
    from tracker.store import Store

    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    tag = uuid.uuid4().hex[:6]
    procs = [
        ctx.Process(
            target=_writer, args=(base, token, f"w{writers}-{i}-{tag}", seconds, ready, go, out)
        )
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    run_ids = [ready.get(timeout=300) for _ in procs]
    log_start = log.stat().st_size
    reader = Reader(base, run_ids)
    t0 = time.perf_counter()
    go.set()
    reader.start()
    results = [out.get(timeout=seconds + 600) for _ in procs]
    elapsed = time.perf_counter() - t0
    reader.stop.set()
    reader.join()
    for p in procs:
        p.join()
    trained = {run_id: steps for run_id, steps, _ in results}
    with Store.open(os.environ["TRACKER_STORE"]) as store:
        segments = sum(len(store.catalog.segments(r)) for r in run_ids)
        registered = {r: sum(s.n_steps for s in store.catalog.segments(r, 0)) for r in run_ids}
        objects = sum(len(store.files.list_files(f"runs/{r}")) for r in run_ids)
    lat = np.array(reader.latencies) * 1000
    server = _access_statuses(log, log_start)
    return {
        "writers": writers,
        "seconds": round(elapsed, 1),
        "steps": sum(trained.values()),
        "steps_per_s": round(sum(trained.values()) / elapsed, 1),
        "segments": segments,
        "segments_per_s": round(segments / elapsed, 2),
        "objects": objects,
        "lost_steps": sum(max(0, trained[r] - registered[r]) for r in run_ids),
        "reads": len(lat),
        "read_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "read_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "server_5xx": sum(n for s, n in server.items() if s >= 500),
        "reader_errors": sum(n for s, n in reader.statuses.items() if s != 200),
        "reader_statuses": {str(s): n for s, n in sorted(reader.statuses.items())},
        "requests": sum(server.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import logging

    from moto.server import ThreadedMotoServer
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tracker.catalog.tokens import create_token
    from tracker.store import Store
    from tracker.store.objectstore import s3_filesystem

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="tracker-load-"))
    os.environ.update(
        AWS_ACCESS_KEY_ID="load", AWS_SECRET_ACCESS_KEY="load", AWS_DEFAULT_REGION="us-east-1"
    )
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3_filesystem(endpoint).call_s3("create_bucket", Bucket="tracker-load")
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    db = f"tracker_load_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    db_url = make_url(PG_ADMIN).set(database=db).render_as_string(hide_password=False)
    os.environ.update(
        TRACKER_STORE="s3://tracker-load/runs-load",
        TRACKER_DATABASE_URL=db_url,
        TRACKER_S3_ENDPOINT_URL=endpoint,
        TRACKER_CACHE_DIR=str(tmp / "cache"),
        TRACKER_SPOOL=str(tmp / "spool"),
    )
    with Store.open(os.environ["TRACKER_STORE"]) as store:
        token = create_token(store.catalog, "load", "load")[1]
    web_port = _free_port()
    log = tmp / "access.log"
    log.touch()
    env = {**os.environ, "GUNICORN_CMD_ARGS": f"--access-logfile {log}"}
    argv = [sys.executable, "-c", "from tracker.cli import run; run()", "server"]
    argv += ["--port", str(web_port), "--workers", str(args.workers)]
    server = subprocess.Popen(argv, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v1/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("tracker server did not start") from None
                time.sleep(0.3)
        rows = []
        for n in (int(w) for w in args.writers.split(",")):
            row = measure(base, token, n, args.seconds, log)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        os.killpg(server.pid, 15)
        server.wait()
        s3.stop()
        admin.dispose()  # a pooled connection may have been cut while the round ran
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        except Exception as exc:
            print(f"could not drop the database {db}: {exc}", file=sys.stderr)
        admin.dispose()
    cols = ["writers", "steps_per_s", "segments_per_s", "lost_steps", "server_5xx", "reads"]
    cols += ["read_p50_ms", "read_p99_ms", "reader_errors"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
