"""Settings read from TRACKER_* environment variables, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STORE = "./tracker-data"
# Object stores (s3://) keep a read cache, temporary files and lock files in a local folder.
DEFAULT_CACHE_DIR = "~/.cache/tracker"
DEFAULT_CACHE_BYTES = 4 << 30


@dataclass(frozen=True)
class Settings:
    """Environment-derived defaults; explicit arguments always win over these."""

    store: str = DEFAULT_STORE
    # SQLAlchemy URL of the catalog; None means SQLite inside the store folder.
    database_url: str | None = None
    # Seconds a run waits at finish() for queued data to reach disk.
    finish_timeout: float = 60.0
    # Bearer token for a tracker server (store="http://..."); see `tracker token create`.
    token: str | None = None
    # s3:// stores: the local folder of read cache and lock files, and the cache's size bound.
    cache_dir: str = DEFAULT_CACHE_DIR
    cache_bytes: int = DEFAULT_CACHE_BYTES
    # S3 endpoint for MinIO or moto (None: AWS, or fsspec's FSSPEC_S3_ENDPOINT_URL).
    s3_endpoint_url: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read the TRACKER_* variables (TRACKER_STORE, TRACKER_DATABASE_URL, ...)."""
        env = os.environ if environ is None else environ
        return cls(
            store=env.get("TRACKER_STORE") or DEFAULT_STORE,
            database_url=env.get("TRACKER_DATABASE_URL") or None,
            finish_timeout=float(env.get("TRACKER_FINISH_TIMEOUT") or 60.0),
            token=env.get("TRACKER_TOKEN") or None,
            cache_dir=env.get("TRACKER_CACHE_DIR") or DEFAULT_CACHE_DIR,
            cache_bytes=int(env.get("TRACKER_CACHE_BYTES") or DEFAULT_CACHE_BYTES),
            s3_endpoint_url=env.get("TRACKER_S3_ENDPOINT_URL") or None,
        )


def resolve_store_path(store: str | os.PathLike[str] | None) -> Path:
    """Return the store folder: the argument, else $TRACKER_STORE, else ./tracker-data."""
    chosen = os.fspath(store) if store is not None else Settings.from_env().store
    return Path(chosen).expanduser().resolve()
