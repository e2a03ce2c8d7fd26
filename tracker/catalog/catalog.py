"""Reads and writes of the catalog; each method owns one short transaction."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from tracker.catalog import db
from tracker.catalog.models import Epoch, Layer, Metric, Project, Run, Segment, utcnow
from tracker.errors import NotFoundError, StoreError


@dataclass(frozen=True)
class MetricRow:
    """One scalar logged by run.log()."""

    name: str
    step: int
    value: float
    epoch: int | None
    time: float


def _nonzero(counters: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(counters.items()) if v}


def _db_float(value: float) -> float | None:
    return None if math.isnan(value) else value


class Catalog:
    """One database: the embedded SQLite file of a store, or TRACKER_DATABASE_URL."""

    def __init__(self, url: str, lock_path: Path | None = None, migrate: bool = True) -> None:
        self.url = url
        self.engine: Engine = db.make_engine(url)
        self._writer = self.engine.execution_options(tracker_write=True)
        if migrate:
            try:
                db.upgrade(self.engine, lock_path)
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot open the catalog database: {exc}") from exc

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; objects stay usable after it closes."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction (BEGIN IMMEDIATE on SQLite), committed on exit."""
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    # -- runs ---------------------------------------------------------------------------------

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
    ) -> Run:
        """Insert a run (creating its project if needed) with status 'running'."""
        for _ in range(3):  # two processes may create the same new project at once
            try:
                with self.write() as s:
                    proj = s.scalars(select(Project).where(Project.name == project)).first()
                    if proj is None:
                        proj = Project(name=project)
                        s.add(proj)
                        s.flush()
                    run = Run(
                        id=run_id,
                        project_id=proj.id,
                        name=name,
                        status="running",
                        config=config,
                        tags=list(tags),
                        host=host,
                        pid=pid,
                        git_commit=git_commit,
                        summary={},
                    )
                    s.add(run)
                return run
            except IntegrityError:
                continue
        raise StoreError(f"could not create run {name!r} in project {project!r}")

    def set_status(
        self,
        run_id: str,
        status: str,
        reason: str | None = None,
        ended: bool = False,
        counters: dict[str, int] | None = None,
    ) -> None:
        """Set a run's status (and end time, and its final counters)."""
        with self.write() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFoundError(f"no run with id {run_id!r}")
            run.status = status
            if reason is not None:
                run.status_reason = reason
            if counters is not None:
                run.summary = {**(run.summary or {}), "counters": _nonzero(counters)}
            run.updated_at = utcnow()
            if ended:
                run.ended_at = run.updated_at

    def add_layers(self, run_id: str, layers: Iterable[dict[str, Any]]) -> None:
        """Register watched layers (name, position, type, kind, params); existing names are kept."""
        with self.write() as s:
            known = set(s.scalars(select(Layer.name).where(Layer.run_id == run_id)))
            for info in layers:
                if info["name"] in known:
                    continue
                s.add(Layer(run_id=run_id, shapes={}, **info))
                known.add(info["name"])

    def commit_batch(
        self,
        run_id: str,
        segment: dict[str, Any] | None,
        metrics: Sequence[MetricRow],
        epochs: dict[int, tuple[int, int]],
        shapes: dict[str, dict[str, list[int]]],
        counters: dict[str, int],
    ) -> None:
        """Register a durable segment with the metrics and epochs of its steps, atomically."""
        with self.write() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFoundError(f"no run with id {run_id!r}")
            if segment is not None:
                s.add(Segment(run_id=run_id, **segment))
            if metrics:
                self._upsert_metrics(s, run_id, metrics)
            for epoch, (first, last) in epochs.items():
                row = s.get(Epoch, (run_id, epoch))
                if row is None:
                    s.add(Epoch(run_id=run_id, epoch=epoch, first_step=first, last_step=last))
                else:
                    row.first_step = min(row.first_step, first)
                    row.last_step = max(row.last_step, last)
            if shapes:
                for layer in s.scalars(
                    select(Layer).where(Layer.run_id == run_id, Layer.name.in_(list(shapes)))
                ):
                    merged = dict(layer.shapes or {})
                    merged.update(shapes[layer.name])
                    layer.shapes = merged
            summary = dict(run.summary or {})
            latest: dict[str, Any] = dict(summary.get("metrics", {}))
            for m in metrics:
                if m.step >= latest.get(m.name, {}).get("step", -1):
                    latest[m.name] = {
                        "step": m.step,
                        "value": m.value if math.isfinite(m.value) else str(m.value),
                    }
            summary["metrics"] = latest
            if counters:
                summary["counters"] = _nonzero(counters)
            if metrics:
                summary["last_step"] = max(
                    summary.get("last_step", -1), max(m.step for m in metrics)
                )
            run.summary = summary
            run.updated_at = utcnow()

    def _upsert_metrics(self, s: Session, run_id: str, metrics: Sequence[MetricRow]) -> None:
        rows = [
            {
                "run_id": run_id,
                "name": m.name,
                "step": m.step,
                "value": _db_float(m.value),
                "epoch": m.epoch,
                "time": m.time,
            }
            for m in metrics
        ]
        # Logging a name twice at one step keeps the last value.
        latest = {(r["name"], r["step"]): r for r in rows}
        rows = list(latest.values())
        if self.dialect == "sqlite":
            stmt: Any = sqlite.insert(Metric)
        elif self.dialect == "postgresql":
            stmt = postgresql.insert(Metric)
        else:
            for r in rows:
                s.merge(Metric(**r))
            return
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "name", "step"],
            set_={
                "value": stmt.excluded.value,
                "epoch": stmt.excluded.epoch,
                "time": stmt.excluded.time,
            },
        )
        s.execute(stmt, rows)

    def delete_run(self, run_id: str) -> None:
        """Delete a run's rows (its files are the store's business)."""
        with self.write() as s:
            for model in (Metric, Epoch, Segment, Layer):
                s.execute(delete(model).where(model.run_id == run_id))
            s.execute(delete(Run).where(Run.id == run_id))

    # -- reads --------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        with self.read() as s:
            return s.get(Run, run_id)

    def project_name(self, project_id: int) -> str:
        with self.read() as s:
            project = s.get(Project, project_id)
            return project.name if project else ""

    def runs(
        self,
        project: str | None = None,
        status: str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[tuple[Run, str]]:
        """(run, project name) pairs, newest first, filtered by the given fields."""
        with self.read() as s:
            stmt = select(Run, Project.name).join(Project, Run.project_id == Project.id)
            if project is not None:
                stmt = stmt.where(Project.name == project)
            if status is not None:
                stmt = stmt.where(Run.status == status)
            if name is not None:
                stmt = stmt.where(Run.name == name)
            stmt = stmt.order_by(Run.started_at.desc(), Run.id.desc())
            if limit is not None:
                stmt = stmt.limit(limit)
            return [(run, pname) for run, pname in s.execute(stmt)]

    def projects(self) -> list[tuple[str, int]]:
        """(project name, number of runs), by name."""
        with self.read() as s:
            stmt = (
                select(Project.name, func.count(Run.id))
                .join(Run, Run.project_id == Project.id, isouter=True)
                .group_by(Project.name)
                .order_by(Project.name)
            )
            return [(n, int(c)) for n, c in s.execute(stmt)]

    def layers(self, run_id: str) -> list[Layer]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(Layer).where(Layer.run_id == run_id).order_by(Layer.position, Layer.id)
                )
            )

    def segments(self, run_id: str, rank: int | None = None) -> list[Segment]:
        """Registered segments of a run, by first step."""
        with self.read() as s:
            stmt = select(Segment).where(Segment.run_id == run_id)
            if rank is not None:
                stmt = stmt.where(Segment.rank == rank)
            return list(s.scalars(stmt.order_by(Segment.step_min, Segment.created_at)))

    def metric_names(self, run_id: str) -> list[str]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(Metric.name)
                    .where(Metric.run_id == run_id)
                    .distinct()
                    .order_by(Metric.name)
                )
            )

    def metric(self, run_id: str, name: str) -> list[Metric]:
        """Every value of one metric, by step."""
        with self.read() as s:
            stmt = (
                select(Metric)
                .where(Metric.run_id == run_id, Metric.name == name)
                .order_by(Metric.step)
            )
            return list(s.scalars(stmt))

    def epochs(self, run_id: str) -> list[Epoch]:
        with self.read() as s:
            return list(
                s.scalars(select(Epoch).where(Epoch.run_id == run_id).order_by(Epoch.epoch))
            )
