"""I7: the schema comes from Alembic migrations, which match the models, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from tracker.catalog import db
from tracker.catalog.models import Base
from tracker.store import Store


def test_head_constant_matches_alembic() -> None:
    script = ScriptDirectory.from_config(db.alembic_config("sqlite://"))
    assert script.get_current_head() == db.HEAD_REVISION
    assert db.KNOWN_REVISIONS[-1] == db.HEAD_REVISION


def test_migrations_produce_exactly_the_models(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Store(tmp_path / "s", database_url) as store:
        assert db.current_revision(store.catalog.engine) == db.HEAD_REVISION
        with store.catalog.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []


def test_upgrade_is_idempotent_and_refuses_unknown_revisions(database_url: str) -> None:
    import pytest
    from sqlalchemy import text

    from tracker.errors import SchemaVersionError

    engine = db.make_engine(database_url)
    assert db.upgrade(engine) == db.HEAD_REVISION
    assert db.upgrade(engine) == db.HEAD_REVISION
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaVersionError, match="newer"):
        db.upgrade(engine)
    engine.dispose()


def test_sqlite_uses_wal_and_a_busy_timeout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    with Store(tmp_path / "s") as store, store.catalog.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_upgrading_a_0001_catalog_keeps_its_segments(database_url: str, tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import text

    engine = db.make_engine(database_url)
    cfg = db.alembic_config(database_url)

    def migrate(step: str, target: str) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, step)(cfg, target)

    migrate("upgrade", "0001")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO projects (id, name, created_at) VALUES (1, 'p', :t)"),
            {"t": "2026-01-01"},
        )
        conn.execute(
            text(
                "INSERT INTO runs (id, project_id, name, status, config, tags, host, pid, "
                "started_at, updated_at, summary) VALUES ('00000000000000a1', 1, 'r', 'finished', "
                "'{}', '[]', 'h', 1, :t, :t, '{}')"
            ),
            {"t": "2026-01-01"},
        )
        conn.execute(
            text(
                "INSERT INTO segments (id, run_id, rank, step_min, step_max, n_steps, path, "
                "nbytes, checksum, schema_version, created_at) VALUES ('s1', '00000000000000a1', "
                "0, 0, 9, 10, 'runs/x/s1.h5', 5, 'abc', 1, :t)"
            ),
            {"t": "2026-01-01"},
        )
    assert db.upgrade(engine) == db.HEAD_REVISION
    with Store(tmp_path / "s", database_url) as store:
        (row,) = store.catalog.segments("00000000000000a1")
        assert (row.id, row.kind, row.superseded_at) == ("s1", "segment", None)
    migrate("downgrade", "0001")  # and the way back works too
    migrate("upgrade", "head")
    engine.dispose()


def test_processes_creating_one_store_at_once_all_succeed(tmp_path: Path) -> None:
    from tests import children

    ctx = children.context()
    for attempt in range(12):  # the race it guards against is narrow: try it many times
        go = ctx.Event()
        root = tmp_path / f"s{attempt}"
        procs = [
            ctx.Process(target=children.open_new_store, args=(str(root), go)) for _ in range(6)
        ]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
        with Store(root) as store:
            assert db.current_revision(store.catalog.engine) == db.HEAD_REVISION
