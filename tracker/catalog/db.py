"""Engines and schema migration for the catalog (SQLite by default, PostgreSQL for scale)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from tracker.errors import SchemaVersionError, StoreError

# The newest migration in migrations/versions; a test checks this against Alembic's head.
HEAD_REVISION = "0003"
# Every revision this code knows, oldest first; an unknown one means a newer tracker wrote it.
KNOWN_REVISIONS = ("0001", "0002", "0003")
_PG_MIGRATION_LOCK = 0x7472_6163  # pg_advisory_lock key: "trac"


def sqlite_url(store_root: Path) -> str:
    """The embedded default: one SQLite file inside the store folder."""
    return f"sqlite:///{store_root / 'catalog.db'}"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE for writes."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, future=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")  # wait for a lock instead of failing
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(
            "PRAGMA synchronous=NORMAL"
        )  # durable at checkpoints; WAL keeps it consistent
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that later writes can fail with "database is locked" instead
        # of waiting; taking the write lock up front makes busy_timeout apply.
        immediate = conn.get_execution_options().get("tracker_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def migrations_dir() -> Path:
    """Folder of the Alembic environment (installed as the ``migrations`` package)."""
    return Path(str(resources.files("migrations")))


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The catalog's Alembic revision, or None for an empty database."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextlib.contextmanager
def _migration_lock(engine: Engine, lock_path: Path | None) -> Iterator[None]:
    """Serialise concurrent upgrades (several training processes opening a new store)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
        return
    try:
        fh = open(lock_path, "a+") if lock_path is not None else None  # noqa: SIM115
    except OSError:  # a read-only store: nothing here can create or migrate it anyway
        fh = None
    if fh is None:
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(engine: Engine, lock_path: Path | None = None) -> str:
    """Bring the schema to HEAD_REVISION with Alembic; return the revision reached."""
    if engine.dialect.name != "sqlite" and current_revision(engine) == HEAD_REVISION:
        return HEAD_REVISION  # the usual case, without taking the server-wide advisory lock
    # SQLite: even the check runs under the store's lock file, because a process opening a new
    # catalog while another creates it and switches it to WAL can get "database is locked".
    with _migration_lock(engine, lock_path):
        revision = current_revision(engine)
        if revision == HEAD_REVISION:
            return revision  # no need to import Alembic (~0.1 s) at all
        if revision is not None and revision not in KNOWN_REVISIONS:
            raise SchemaVersionError(
                f"the catalog is at schema revision {revision}, newer than this tracker knows "
                f"({HEAD_REVISION}); upgrade tracker"
            )
        from alembic import command

        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate the catalog: {exc}") from exc
    return HEAD_REVISION
