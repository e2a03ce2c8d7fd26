"""Logging to a tracker server: a local spool of operations, uploaded in order in the background.

``tracker.init(store="http://host:5000", token=...)`` gives a Run whose writer builds segments
exactly as for a local store, but into a spool folder (``$TRACKER_SPOOL``, default
``~/.cache/tracker/spool``), one folder per run. Every catalog change becomes an operation file
there too (``<seq>.json``: create the run, register layers, a segment, metrics, the status), and an
uploader thread sends them to the server in order, with retries and backoff. Each one is
idempotent on the server, so a retry after a lost answer never duplicates anything.

If the server is down, training goes on and the spool grows, up to ``$TRACKER_SPOOL_MAX_BYTES``
(then segments are dropped and counted, metrics kept: I1); uploads resume when it is back.
``finish()`` waits for the upload (``$TRACKER_FINISH_TIMEOUT``) and says what is left, which
``tracker sync`` pushes later.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracker.catalog import MetricRow
from tracker.errors import InvalidArgumentError, StoreError
from tracker.store.backend import SegmentFile, check_run_id, new_file_name
from tracker.store.local import _fsync_and_checksum
from tracker.store.segment import SegmentBuilder, write_segment

log = logging.getLogger("tracker")

SERVER_FILE = "server.json"
CHECKSUM_HEADER = "X-Tracker-Checksum"
API = "/api/v1"


def is_remote(store: object) -> bool:
    """Whether ``store`` names a tracker server rather than a folder."""
    return isinstance(store, str) and store.startswith(("http://", "https://"))


def default_spool() -> Path:
    return Path(os.environ.get("TRACKER_SPOOL") or Path.home() / ".cache" / "tracker" / "spool")


class UnreachableError(Exception):
    """The server could not be reached or answered 5xx/404/408/429: try again later."""


class RefusedError(Exception):
    """The server refused an operation for good (4xx); ``status`` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _write_json(path: Path, body: dict[str, Any]) -> None:
    """Write a small JSON file atomically (a crash leaves the old file or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(body, fh, allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # "nan", "inf", "-inf"


@dataclass
class Pending:
    """What a spool folder still holds."""

    operations: int = 0
    nbytes: int = 0


class Uploader:
    """Sends one run's spooled operations, oldest first, to its server."""

    def __init__(self, url: str, token: str | None, folder: Path, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.folder = folder
        self.timeout = timeout
        self.sent = 0

    def operations(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("[0-9]*.json"))

    def pending(self) -> Pending:
        ops = self.operations()
        nbytes = sum(p.stat().st_size for p in self.folder.glob("*.h5"))
        return Pending(len(ops), nbytes)

    def _request(self, method: str, path: str, body: Any, headers: dict[str, str]) -> None:
        headers = dict(headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + API + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except Exception:
                message = exc.reason
            if exc.code >= 500 or exc.code in (404, 408, 429):  # 404: the run is not there yet
                raise UnreachableError(f"HTTP {exc.code}: {message}") from None
            raise RefusedError(exc.code, str(message)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise UnreachableError(str(exc)) from None

    def send(self, op_path: Path) -> None:
        """Send one operation; remove it once the server has it (else raise, see above)."""
        op = json.loads(op_path.read_text())
        run_id = check_run_id(op["run_id"])
        kind = op["op"]
        if kind == "segment":
            seg_path = self.folder / op["file"]
            with open(seg_path, "rb") as fh:
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(os.fstat(fh.fileno()).st_size),
                    CHECKSUM_HEADER: op["checksum"],
                }
                self._request("PUT", f"/runs/{run_id}/segments/{op['id']}", fh, headers)
        else:
            method, path = {
                "run": ("POST", "/runs"),
                "layers": ("POST", f"/runs/{run_id}/layers"),
                "metrics": ("POST", f"/runs/{run_id}/metrics"),
                "status": ("PATCH", f"/runs/{run_id}"),
            }[kind]
            data = json.dumps(op["body"]).encode()
            self._request(method, path, data, {"Content-Type": "application/json"})
        self.done(op_path, op)

    def done(self, op_path: Path, op: dict[str, Any], suffix: str | None = None) -> None:
        """Remove (or, with ``suffix``, set aside) an operation and its segment file."""
        if suffix is None:
            if op.get("file"):
                (self.folder / op["file"]).unlink(missing_ok=True)
            op_path.unlink(missing_ok=True)
            self.sent += 1
        else:
            op_path.rename(op_path.with_name(op_path.name + suffix))

    def set_aside(self, op_path: Path, error: RefusedError) -> None:
        """Keep a refused operation out of the queue (as <seq>.json.refused) and say so."""
        log.warning("tracker: the server refused %s (%s); kept as .refused", op_path, error)
        self.done(op_path, json.loads(op_path.read_text()), ".refused")

    def sync(self, attempts: int = 3) -> Pending:
        """Send everything now (for `tracker sync`); stop at the first lasting failure."""
        for op_path in self.operations():
            for attempt in range(attempts):
                try:
                    self.send(op_path)
                    break
                except UnreachableError:
                    if attempt == attempts - 1:
                        return self.pending()
                    time.sleep(0.5 * 2**attempt)
                except RefusedError as exc:
                    if exc.status in (401, 403):
                        raise StoreError(f"the server refused the token: {exc}") from None
                    self.set_aside(op_path, exc)
                    break
        return self.pending()


class _Files:
    """Writes segments into the spool folder instead of a store."""

    def __init__(self, remote: RemoteStore) -> None:
        self._remote = remote

    def put_segment(
        self, builder: SegmentBuilder, tracker_version: str, compression: str = "none"
    ) -> SegmentFile:
        remote = self._remote
        if remote.spooled_bytes() + builder.nbytes > remote.max_bytes:
            raise StoreError(
                f"the upload spool {remote.root} is full ({remote.max_bytes} bytes): is the "
                f"server {remote.url} down? Raise $TRACKER_SPOOL_MAX_BYTES to keep more"
            )
        folder = remote.folder(builder.run_id)
        seg_id, name = new_file_name(builder.step_min, builder.step_max)
        final = folder / name
        tmp = final.with_name(name + ".tmp")
        try:
            write_segment(str(tmp), builder, tracker_version, seg_id, compression)
            checksum = _fsync_and_checksum(tmp)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return SegmentFile(seg_id, name, final.stat().st_size, checksum)


class _Catalog:
    """Turns the catalog calls of Run and Writer into spooled operations."""

    def __init__(self, remote: RemoteStore) -> None:
        self._remote = remote

    def create_run(
        self,
        run_id: str,
        project: str,
        name: str,
        config: dict[str, Any],
        tags: Sequence[str],
        host: str,
        pid: int,
        git_commit: str | None,
    ) -> None:
        body = {
            "id": run_id,
            "project": project,
            "name": name,
            "config": config,
            "tags": list(tags),
            "host": host,
            "pid": pid,
            "git_commit": git_commit,
        }
        self._remote.enqueue(run_id, "run", body)

    def add_layers(self, run_id: str, layers: Iterable[dict[str, Any]]) -> None:
        self._remote.enqueue(run_id, "layers", {"layers": list(layers)})

    def commit_batch(
        self,
        run_id: str,
        segment: dict[str, Any] | None,
        metrics: Sequence[MetricRow],
        epochs: dict[int, tuple[int, int]],
        shapes: dict[str, dict[str, list[int]]],
        counters: dict[str, int],
        overwrite_metrics: bool = True,
    ) -> None:
        if segment is not None:  # the file carries the metrics, epochs and shapes
            extra = {"id": segment["id"], "file": segment["path"], "checksum": segment["checksum"]}
            self._remote.enqueue(run_id, "segment", {}, extra)
        elif metrics:
            rows = [
                {"name": m.name, "step": m.step, "value": _finite(m.value), "epoch": m.epoch}
                | {"time": _finite(m.time)}
                for m in metrics
            ]
            self._remote.enqueue(run_id, "metrics", {"metrics": rows})

    def set_status(
        self,
        run_id: str,
        status: str,
        reason: str | None = None,
        ended: bool = False,
        counters: dict[str, int] | None = None,
    ) -> None:
        body: dict[str, Any] = {"status": status, "reason": reason}
        if counters is not None:
            body["counters"] = {k: int(v) for k, v in counters.items() if v}
        self._remote.enqueue(run_id, "status", body)


class _NoLock:
    """A spool folder belongs to one process: nothing to lock."""

    def acquire(self) -> bool:
        return True

    def release(self, finished: bool = True) -> None:
        pass


class RemoteStore:
    """A tracker server as seen by Run and Writer: spooled files and operations, uploaded."""

    writable = True

    def __init__(
        self,
        url: str,
        token: str | None = None,
        spool: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if not is_remote(url):
            raise InvalidArgumentError(f"a server URL starts with http:// or https://: {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.root = Path(spool) if spool is not None else default_spool()
        self.max_bytes = max_bytes or int(os.environ.get("TRACKER_SPOOL_MAX_BYTES") or 2 << 30)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the upload spool {self.root}: {exc}") from exc
        self.files = _Files(self)
        self.catalog = _Catalog(self)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._uploaders: dict[str, Uploader] = {}
        self._seq: dict[str, int] = {}
        self._stop = False
        self._blocked: str | None = None  # why uploading stopped for good (a refused token)
        self._thread = threading.Thread(target=self._loop, name="tracker-upload", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r}, spool={str(self.root)!r})"

    @property
    def location(self) -> str:
        """Where the run's data goes: the server's URL."""
        return self.url

    def lock(self, run_id: str, rank: int, purpose: str) -> _NoLock:
        return _NoLock()

    def folder(self, run_id: str) -> Path:
        """The spool folder of one run (created with a note of the server it goes to)."""
        folder = self.root / check_run_id(run_id)
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            _write_json(folder / SERVER_FILE, {"url": self.url})
        return folder

    def spooled_bytes(self) -> int:
        with self._lock:
            uploaders = list(self._uploaders.values())
        return sum(u.pending().nbytes for u in uploaders)

    def enqueue(
        self, run_id: str, kind: str, body: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> None:
        """Append an operation to the run's spool and wake the uploader."""
        folder = self.folder(run_id)
        with self._lock:
            if run_id not in self._uploaders:
                self._uploaders[run_id] = Uploader(self.url, self.token, folder)
                existing = [int(p.name.split(".")[0]) for p in folder.glob("[0-9]*.json*")]
                self._seq[run_id] = max(existing, default=0)
            self._seq[run_id] += 1
            seq = self._seq[run_id]
        op = {"op": kind, "run_id": run_id, "body": body, **(extra or {})}
        _write_json(folder / f"{seq:010d}.json", op)
        with self._wake:
            self._wake.notify_all()

    def pending(self) -> Pending:
        with self._lock:
            uploaders = list(self._uploaders.values())
        total = Pending()
        for u in uploaders:
            p = u.pending()
            total.operations += p.operations
            total.nbytes += p.nbytes
        return total

    # -- the upload thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        backoff = 0.2
        while True:
            with self._wake:
                if self._stop:
                    return
                uploaders = list(self._uploaders.values())
            work = [(u, ops[0]) for u in uploaders if (ops := u.operations())]
            if not work or self._blocked:
                with self._wake:
                    if not self._stop:
                        self._wake.wait(0.5)
                continue
            for uploader, op_path in work:
                try:
                    uploader.send(op_path)
                    backoff = 0.2
                except UnreachableError as exc:
                    log.debug("tracker: upload to %s failed, retrying: %s", self.url, exc)
                    with self._wake:  # back off, unless asked to stop
                        if not self._stop:
                            self._wake.wait(backoff * (1 + random.random() / 2))
                    backoff = min(backoff * 2, 5.0)
                except RefusedError as exc:
                    if exc.status in (401, 403):
                        self._blocked = f"the server refused the token ({exc})"
                        log.warning("tracker: uploads to %s stopped: %s", self.url, self._blocked)
                    else:
                        uploader.set_aside(op_path, exc)
                except Exception as exc:  # a damaged spool file: never stop the thread (I1)
                    log.warning("tracker: cannot upload %s: %s", op_path, exc)
                    try:
                        uploader.done(op_path, {}, ".broken")
                    except OSError:
                        self._blocked = f"the spool is not writable ({exc})"

    def wait(self, timeout: float, progress: bool | None = None) -> Pending:
        """Wait up to ``timeout`` s for the spool to empty, drawing a progress bar on a tty."""
        progress = sys.stderr.isatty() if progress is None else progress
        deadline = time.monotonic() + timeout
        start = self.pending()
        left = start
        while left.operations and time.monotonic() < deadline and not self._blocked:
            if progress:
                done = start.operations - left.operations
                width = 30
                filled = width * done // max(start.operations, 1)
                sys.stderr.write(
                    f"\rtracker: uploading [{'#' * filled}{'.' * (width - filled)}] "
                    f"{done}/{start.operations}, {left.nbytes / 1e6:.1f} MB left "
                )
                sys.stderr.flush()
            time.sleep(0.1)
            left = self.pending()
        if progress and start.operations:
            sys.stderr.write("\n")
        return left

    def close(self, timeout: float | None = None) -> Pending:
        """Wait for the upload (``timeout``, default $TRACKER_FINISH_TIMEOUT), then stop."""
        from tracker.config import Settings

        wait = Settings.from_env().finish_timeout if timeout is None else timeout
        left = self.wait(wait)
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._thread.join(timeout=5.0)
        with self._lock:
            uploaders = list(self._uploaders.values())
        for uploader in uploaders:  # a run folder with nothing left goes
            leftovers = [p for p in uploader.folder.iterdir() if p.name != SERVER_FILE]
            if not leftovers:
                (uploader.folder / SERVER_FILE).unlink(missing_ok=True)
                uploader.folder.rmdir()
        if left.operations:
            why = self._blocked or f"the server {self.url} did not take it within {wait:.0f} s"
            log.warning(
                "tracker: %d operation(s) (%.1f MB of segments) are still in the spool %s: %s. "
                "Push them later with `tracker sync --spool %s`",
                left.operations,
                left.nbytes / 1e6,
                self.root,
                why,
                self.root,
            )
        return left


def sync_spool(spool: Path, token: str | None, runs: Sequence[str] = ()) -> dict[str, Pending]:
    """Upload what every run folder in ``spool`` (or only ``runs``) still holds."""
    results = {}
    for folder in sorted(p for p in spool.iterdir() if (p / SERVER_FILE).is_file()):
        if runs and folder.name not in runs:
            continue
        url = json.loads((folder / SERVER_FILE).read_text())["url"]
        uploader = Uploader(url, token, folder)
        left = uploader.sync()
        if not left.operations and not any(folder.glob("*.refused")):
            for leftover in folder.iterdir():  # orphans of a crash between file and operation
                leftover.unlink()
            folder.rmdir()
        results[folder.name] = left
    return results
