"""HTTP ingest vs local writes of the same segments (issue 8's first ratio; goal >= 0.5).

    python bench/api.py [--segments 40] [--steps 25]

Builds the same synthetic segments (tests/synthetic.py: 4 series, histograms and snapshots) and
times (a) the local writer path: put_segment + commit_batch into a fresh store, and (b) uploading
the same files with PUT /runs/<id>/segments/<id> to a live `tracker server` (2 workers) on
loopback, one after another as the client's uploader does. Prints both throughputs and the ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import synthetic
from tracker.catalog.tokens import create_token
from tracker.remote import Uploader, _write_json
from tracker.store import Store
from tracker.store.local import file_checksum
from tracker.store.segment import SCHEMA_VERSION, SegmentBuilder, write_segment


def builders(run_id: str, n: int, steps: int) -> list[SegmentBuilder]:
    out = []
    for i in range(n):
        b = SegmentBuilder(run_id, 0)
        for step in range(i * steps, (i + 1) * steps):
            b.add(step, synthetic.record(step).summaries)
        out.append(b)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=40)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    run_id = uuid.uuid4().hex[:16]

    local = Store.open(tmp / "local")
    synthetic.create_run(local, run_id)
    segs = builders(run_id, args.segments, args.steps)
    t0 = time.perf_counter()
    for b in segs:
        f = local.files.put_segment(b, "bench")
        row = {
            "id": f.id,
            "rank": 0,
            "step_min": b.step_min,
            "step_max": b.step_max,
            "n_steps": len(b),
            "path": f.relpath,
            "nbytes": f.nbytes,
            "checksum": f.checksum,
            "schema_version": SCHEMA_VERSION,
        }
        local.catalog.commit_batch(run_id, row, [], {}, {}, {})
    local_s = time.perf_counter() - t0
    nbytes = sum(i.nbytes for i in local.files.list_files("runs"))
    local.close()

    spool = tmp / "spool" / run_id
    spool.mkdir(parents=True)
    for i, b in enumerate(builders(run_id, args.segments, args.steps)):
        seg_id = uuid.uuid4().hex
        write_segment(str(spool / f"{seg_id}.h5"), b, "bench", seg_id)
        op = {
            "op": "segment",
            "run_id": run_id,
            "body": {},
            "id": seg_id,
            "file": f"{seg_id}.h5",
            "checksum": file_checksum(spool / f"{seg_id}.h5"),
        }
        _write_json(spool / f"{i + 10:010d}.json", op)
    server_store = tmp / "server"
    with Store.open(server_store) as s:
        token = create_token(s.catalog, "bench")[1]
        synthetic.create_run(s, run_id)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [
        sys.executable,
        "-c",
        "from tracker.cli import run; run()",
        "server",
        "--store",
        str(server_store),
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/api/v1/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        uploader = Uploader(url, token, spool)
        t0 = time.perf_counter()
        for op in uploader.operations():
            uploader.send(op)
        http_s = time.perf_counter() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    mb = nbytes / 1e6
    print(f"{args.segments} segments x {args.steps} steps, {mb:.1f} MB")
    for label, secs in (("local writes", local_s), ("HTTP ingest ", http_s)):
        rate = args.segments / secs
        print(f"{label}: {secs:.3f} s  {rate:7.1f} segments/s  {mb / secs:7.1f} MB/s")
    print(f"ratio HTTP/local throughput: {local_s / http_s:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
