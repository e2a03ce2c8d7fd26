"""SQLAlchemy models of the catalog. The schema itself is created only by Alembic (I7)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Project(id={self.id!r}, name={self.name!r})"


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_project_started", "project_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    # running | finished | failed | crashed; "degraded" problems go to status_reason.
    status: Mapped[str] = mapped_column(String(16), default="running")
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    host: Mapped[str] = mapped_column(String(256), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    git_commit: Mapped[str | None] = mapped_column(String(64), default=None)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Last value of each metric and the writer's counters (drops etc.), for list views.
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, name={self.name!r}, status={self.status!r})"


class Layer(Base):
    __tablename__ = "layers"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    position: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str | None] = mapped_column(String(16), default=None)
    # {part: shape} of the outputs, e.g. {"output": [64, 16, 8, 8]}
    shapes: Mapped[dict[str, list[int]]] = mapped_column(JSON, default=dict)
    # {parameter name: shape}, e.g. {"weight": [16, 1, 3, 3], "bias": [16]}
    params: Mapped[dict[str, list[int]]] = mapped_column(JSON, default=dict)

    def __repr__(self) -> str:
        return f"Layer(run_id={self.run_id!r}, name={self.name!r}, type={self.type!r})"


class Segment(Base):
    """A registered file of a run: a writer's segment, or a compacted stats or snapshots file."""

    __tablename__ = "segments"
    # Finding the files that hold a step is a range scan of this index (reader, by step).
    __table_args__ = (
        Index("ix_segments_run_rank_steps", "run_id", "rank", "step_min", "step_max"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer, default=0)
    step_min: Mapped[int] = mapped_column(BigInteger)
    step_max: Mapped[int] = mapped_column(BigInteger)
    n_steps: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(512), unique=True)
    nbytes: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(64))
    schema_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # segment (as written) | stats | snapshots (compacted); see tracker/store/segment.py.
    kind: Mapped[str] = mapped_column(String(16), default="segment", server_default="segment")
    # Set when compaction replaced this file; readers ignore it, its file is deleted after.
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    def __repr__(self) -> str:
        steps = f"{self.step_min}-{self.step_max}"
        return f"Segment(run_id={self.run_id!r}, kind={self.kind!r}, steps={steps})"


class Metric(Base):
    __tablename__ = "metrics"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # NULL stands for NaN: SQLite cannot store NaN.
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    time: Mapped[float] = mapped_column(Float)

    def __repr__(self) -> str:
        return f"Metric(run_id={self.run_id!r}, name={self.name!r}, step={self.step})"


class Epoch(Base):
    __tablename__ = "epochs"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)

    def __repr__(self) -> str:
        steps = f"{self.first_step}-{self.last_step}"
        return f"Epoch(run_id={self.run_id!r}, epoch={self.epoch}, steps={steps})"


class Token(Base):
    """An API token: only the SHA-256 of its secret is kept; scoped to one project or to all."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    # None: every project (an admin token); otherwise the only project it may write to.
    project: Mapped[str | None] = mapped_column(String(256), default=None)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    def __repr__(self) -> str:
        return f"Token(id={self.id!r}, name={self.name!r}, project={self.project!r})"
