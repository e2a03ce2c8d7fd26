"""Shared fixtures: stores, demo data, the Flask app and client (flaskr-style)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracker
from tracker.store import Store

# Tests never read the developer's environment or write to ./tracker-data.
for _name in ("TRACKER_STORE", "TRACKER_DATABASE_URL"):
    os.environ.pop(_name, None)

DEMO_STEPS = 60


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """An empty store folder."""
    return tmp_path / "store"


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    """An open, empty store."""
    with Store.open(store_path) as opened:
        yield opened


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the demo's healthy and sick runs (short), shared by the whole session."""
    from tracker.demo import RUNS, train

    root = tmp_path_factory.mktemp("demo") / "store"
    for config in RUNS:
        train(config, DEMO_STEPS, str(root), progress=lambda _: None)
    return root


@pytest.fixture(scope="session")
def demo_runs(demo_store: Path) -> dict[str, str]:
    """{"healthy": run id, "sick": run id} of the demo store."""
    return {r.name: r.id for r in tracker.list_runs(store=str(demo_store))}


@pytest.fixture
def app(demo_store: Path):  # type: ignore[no-untyped-def]
    """The full app (API + web pages) over the demo store."""
    from web import create_app

    application = create_app(str(demo_store))
    application.config.update(TESTING=True)
    yield application
    application.extensions["tracker.store"].close()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


# -- databases: every catalog test runs on SQLite and on PostgreSQL ------------------------------

PG_URL = os.environ.get(
    "TRACKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for the session (skipped with the reason if unreachable)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    # pre-ping: tests/test_reliability.py restarts the server while this engine is pooled.
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL is unreachable at {PG_URL}: {type(exc).__name__}")
    name = f"tracker_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty catalog database URL: SQLite in tmp_path, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    url: str = request.getfixturevalue("pg_database_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def any_store(store_path: Path, database_url: str) -> Iterator[Store]:
    """An open, empty store whose catalog is SQLite or PostgreSQL."""
    with Store(store_path, database_url) as opened:
        yield opened


# -- object storage: moto's S3 server on loopback (real HTTP, real S3 protocol) ------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 for the session, with fake credentials set."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    fake = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in fake}
    os.environ.update(fake)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def s3_fs(s3_endpoint: str):  # type: ignore[no-untyped-def]
    """An s3fs file system on the moto server (one client for the session: each costs ~0.3 s)."""
    from tracker.store.objectstore import s3_filesystem

    return s3_filesystem(s3_endpoint)


@pytest.fixture
def s3_store_url(s3_endpoint: str, s3_fs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    """s3://<a new, empty bucket>/team on the moto server; Store.open finds it through TRACKER_*."""
    import uuid

    bucket = f"tracker-{uuid.uuid4().hex[:12]}"
    s3_fs.call_s3("create_bucket", Bucket=bucket)
    monkeypatch.setenv("TRACKER_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("TRACKER_CACHE_DIR", str(tmp_path / "cache"))
    return f"s3://{bucket}/team"
