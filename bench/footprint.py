"""Bytes, files and catalog rows per step of the demo CNN, recording every step.

    python bench/footprint.py [--steps 300]

Trains the demo CNN (tracker/demo.py) on digits with run.watch(model, every=1, histogram_every=10)
(the defaults until stats moved to every 10th step; docs/scaling.md was measured so), into an s3://
store on moto's S3 server on loopback with a SQLite catalog, without compaction; then counts
objects, bytes and catalog rows, compacts, and counts again. docs/scaling.md uses its output.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from sqlalchemy import text

import tracker
from tracker.demo import digits_cnn, load_digits_tensors
from tracker.store import Store
from tracker.store.compact import compact_run
from tracker.store.objectstore import s3_filesystem


def _rows(store: Store) -> dict[str, int]:
    with store.catalog.engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("runs", "layers", "segments", "metrics", "epochs")
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="tracker-footprint-"))
    os.environ.update(
        AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1"
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["TRACKER_S3_ENDPOINT_URL"] = f"http://{host}:{port}"
    os.environ["TRACKER_CACHE_DIR"] = str(tmp / "cache")
    s3_filesystem(os.environ["TRACKER_S3_ENDPOINT_URL"]).call_s3(
        "create_bucket", Bucket="fp-bucket"
    )
    url, db = "s3://fp-bucket/t", f"sqlite:///{tmp / 'catalog.db'}"
    images, labels = load_digits_tensors()
    torch.manual_seed(0)
    model = digits_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batch, per_epoch = 32, len(images) // 32
    with tracker.init(project="fp", name="cnn", store=url, database_url=db, compact=False) as run:
        # Every step: the heaviest cadence a user picks, and what docs/scaling.md measured.
        run.watch(model, every=1, histogram_every=10, snapshot_every=100)
        for step in range(args.steps):
            i = step % per_epoch
            x, y = images[i * batch : (i + 1) * batch], labels[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()}, step=step, epoch=step // per_epoch)
    out: dict[str, object] = {"steps": args.steps, "layers_watched": None}
    with Store.open(url, db) as store:
        files = store.files.list_files(f"runs/{run.id}")
        out["layers_watched"] = len(store.catalog.layers(run.id))
        out["before"] = {
            "objects": len(files),
            "bytes": sum(f.nbytes for f in files),
            "rows": _rows(store),
        }
        compact_run(store, run.id)
        files = store.files.list_files(f"runs/{run.id}")
        out["after"] = {
            "objects": len(files),
            "bytes": sum(f.nbytes for f in files),
            "rows": _rows(store),
        }
    for when in ("before", "after"):
        d = out[when]
        assert isinstance(d, dict)
        d["bytes_per_step"] = round(d["bytes"] / args.steps)
    print(json.dumps(out, indent=1))
    server.stop()


if __name__ == "__main__":
    main()
