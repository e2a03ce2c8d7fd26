"""The REST API against the Python reader and local writes: issue 8's three ratios in one run.

    python bench/api.py [--segments 40] [--steps 25] [--read-steps 100000] [--repeats 40]

1. HTTP ingest vs local writes of the same segments (goal >= 0.5).
2. GET tensor (.npy) latency vs the Python reader for the same tensor (goal <= 2x).
3. GET series of a 100k-step run downsampled to 1,000 points vs the raw series.

For 1: builds the same synthetic segments (tests/synthetic.py: 4 series, histograms and
snapshots) and times (a) the local writer path: put_segment + commit_batch into a fresh store,
and (b) uploading the same files with PUT /runs/<id>/segments/<id> to a live `tracker server`
(2 workers) on loopback, one after another as the client's uploader does. Prints both
throughputs and the ratio.

For 2 and 3: writes bench/store.py's synthetic run (8 series, stats every step, histograms every
10, 4 KiB snapshots every 100) of --read-steps steps, finishes and compacts it as run.finish()
does, serves it with `tracker server --workers 2`, and times requests one after another on
loopback (a new connection each, as gunicorn's sync workers close them) against the reader:
a fresh one per read (open_run + read, what a script does) and one kept open. Each API read is
also timed in process (Flask test client) with and without the per-worker cache of open files
(api/handles.py). Medians of --repeats, variants interleaved, after one warm-up each.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.store import synthetic_run
from tests import synthetic
from tracker.catalog.tokens import create_token
from tracker.reader import open_run
from tracker.remote import Uploader, _write_json
from tracker.store import Store
from tracker.store.compact import compact_run
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(store: Path, port: int) -> subprocess.Popen[bytes]:
    """`tracker server --workers 2` over ``store``, answering /health."""
    argv = [sys.executable, "-c", "from tracker.cli import run; run()", "server"]
    argv += ["--store", str(store), "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (path, response.status, body[:200])
        return body
    finally:
        conn.close()


def medians(variants: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each variant, interleaved, after one warm-up call each."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_reads(tmp: Path, steps: int, repeats: int, compact: bool = True) -> None:
    """GET tensor vs the reader; a 100k-step series downsampled vs raw."""
    from api import create_app
    from api.store import FILES

    root = tmp / "reads"
    run_id = uuid.uuid4().hex[:16]
    t0 = time.perf_counter()
    with Store.open(root) as store:
        synthetic_run(store, run_id, steps)
        store.catalog.set_status(run_id, "finished", ended=True)
        if compact:
            compact_run(store, run_id)
        files = len(store.catalog.segments(run_id))
    print(f"\nread run: {steps} steps in {files} files, {time.perf_counter() - t0:.0f} s to write")
    step = (steps // 2) // 100 * 100  # a snapshot step in the middle of the run
    tensor_q = f"layer=fc1&quantity=activation&step={step}"
    series_q = "layer=fc1&quantity=activation&stat=mean"
    tensor_path = f"/api/v1/runs/{run_id}/tensor?{tensor_q}&format=npy"
    raw_path = f"/api/v1/runs/{run_id}/series?{series_q}"
    down_path = f"{raw_path}&points=1000"
    reader = open_run(run_id, store=str(root))

    def fresh_tensor() -> None:
        with open_run(run_id, store=str(root)) as r:
            r.tensor("fc1", "activation", step)

    def fresh_series() -> None:
        with open_run(run_id, store=str(root)) as r:
            r.series("fc1", "activation", "mean")

    app = create_app(str(root))
    client = app.test_client()
    cache = app.extensions[FILES]

    def in_process(path: str, cached: bool) -> Any:
        def call() -> None:
            app.extensions[FILES] = cache if cached else None
            assert client.get(path).status_code == 200

        return call

    port = free_port()
    proc = serve(root, port)
    try:
        sizes = {p: len(get(port, p)) for p in (tensor_path, raw_path, down_path)}
        t = medians(
            {
                "GET tensor .npy (HTTP)": lambda: get(port, tensor_path),
                "GET tensor, in process, file cache": in_process(tensor_path, True),
                "GET tensor, in process, no file cache": in_process(tensor_path, False),
                "reader: open_run + tensor": fresh_tensor,
                "reader: tensor (open reader)": lambda: reader.tensor("fc1", "activation", step),
            },
            repeats,
        )
        s = medians(
            {
                "GET series points=1000 (HTTP)": lambda: get(port, down_path),
                "GET series raw (HTTP)": lambda: get(port, raw_path),
                "GET series points=1000, in process, file cache": in_process(down_path, True),
                "GET series points=1000, in process, no file cache": in_process(down_path, False),
                "reader: open_run + series": fresh_series,
                "reader: series (open reader)": lambda: reader.series("fc1", "activation", "mean"),
            },
            repeats,
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        reader.close()
        cache.close()
        app.extensions["tracker.store"].close()
    for name, secs in {**t, **s}.items():
        print(f"{name:50s} {secs * 1e3:8.2f} ms")
    print(f"tensor .npy {sizes[tensor_path]} B; series raw {sizes[raw_path] / 1e6:.2f} MB, ")
    print(f"  points=1000 {sizes[down_path] / 1e3:.1f} KB")
    http_t = t["GET tensor .npy (HTTP)"]
    print(f"ratio GET tensor / open_run + tensor: {http_t / t['reader: open_run + tensor']:.2f}x")
    warm = t["reader: tensor (open reader)"]
    print(f"ratio GET tensor / open reader's tensor: {http_t / warm:.2f}x")
    print("  (goal <= 2x)")
    print(
        "ratio GET series raw / points=1000 (HTTP): "
        f"{s['GET series raw (HTTP)'] / s['GET series points=1000 (HTTP)']:.1f}x faster, "
        f"{sizes[raw_path] / sizes[down_path]:.0f}x fewer bytes"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=40)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--read-steps", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--uncompacted", action="store_true", help="read a running run's segments")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if not args.skip_ingest:
        bench_ingest(tmp, args)
    bench_reads(tmp, args.read_steps, args.repeats, compact=not args.uncompacted)


def bench_ingest(tmp: Path, args: argparse.Namespace) -> None:
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
