"""I7: the schema comes from Alembic migrations, which match the models, on both databases."""

from __future__ import annotations

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
