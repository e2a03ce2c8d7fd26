"""Reads and writes of the catalog; each method owns one short transaction."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from tracker.catalog import db
from tracker.catalog.models import Epoch, Layer, Metric, Project, Run, Segment, utcnow
from tracker.errors import NotFoundError, StoreError


class ConflictError(StoreError):
    """The catalog changed under an operation (another process replaced the same segments)."""


@dataclass(frozen=True)
class MetricRow:
    """One scalar logged by run.log()."""

    name: str
    step: int
    value: float
    epoch: int | None
    time: float


# Files are read in this order; compaction concatenates rows in the same one.
_READING_ORDER = (Segment.step_min, Segment.created_at, Segment.id)


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
        overwrite_metrics: bool = True,
    ) -> None:
        """Register a durable segment with the metrics and epochs of its steps, atomically.

        ``overwrite_metrics=False`` keeps values already stored (recovery re-registering an old
        segment must not undo a value logged again later).
        """
        with self.write() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFoundError(f"no run with id {run_id!r}")
            if segment is not None:
                s.add(Segment(run_id=run_id, **segment))
            if metrics:
                self._upsert_metrics(s, run_id, metrics, overwrite_metrics)
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

    def _upsert_metrics(
        self, s: Session, run_id: str, metrics: Sequence[MetricRow], overwrite: bool = True
    ) -> None:
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
                if overwrite or s.get(Metric, (r["run_id"], r["name"], r["step"])) is None:
                    s.merge(Metric(**r))
            return
        if not overwrite:
            s.execute(stmt.on_conflict_do_nothing(index_elements=["run_id", "name", "step"]), rows)
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

    def segments(
        self,
        run_id: str,
        rank: int | None = None,
        kinds: Sequence[str] | None = None,
        superseded: bool = False,
    ) -> list[Segment]:
        """Registered files of a run in reading order (first step, then age); only live ones
        unless ``superseded``; only of ``kinds`` if given."""
        with self.read() as s:
            stmt = select(Segment).where(Segment.run_id == run_id)
            if rank is not None:
                stmt = stmt.where(Segment.rank == rank)
            if kinds is not None:
                stmt = stmt.where(Segment.kind.in_(list(kinds)))
            if not superseded:
                stmt = stmt.where(Segment.superseded_at.is_(None))
            return list(s.scalars(stmt.order_by(*_READING_ORDER)))

    def segments_at(self, run_id: str, rank: int, step: int, kinds: Sequence[str]) -> list[Segment]:
        """Live files of ``kinds`` whose step range holds ``step``, in reading order.

        An index range scan (ix_segments_run_rank_steps): as fast at step 100,000 as at 100.
        """
        with self.read() as s:
            stmt = select(Segment).where(
                Segment.run_id == run_id,
                Segment.rank == rank,
                Segment.step_min <= step,
                Segment.step_max >= step,
                Segment.kind.in_(list(kinds)),
                Segment.superseded_at.is_(None),
            )
            return list(s.scalars(stmt.order_by(*_READING_ORDER)))

    def ranks(self, run_id: str) -> list[int]:
        """Ranks that registered files for a run."""
        with self.read() as s:
            stmt = select(Segment.rank).where(Segment.run_id == run_id).distinct()
            return sorted(s.scalars(stmt))

    def segment_runs(self) -> set[str]:
        """Ids of runs that have registered files."""
        with self.read() as s:
            return set(s.scalars(select(Segment.run_id).distinct()))

    def run_ids(self) -> set[str]:
        """Ids of every run in the catalog."""
        with self.read() as s:
            return set(s.scalars(select(Run.id)))

    def swap_segments(
        self, run_id: str, new: Sequence[dict[str, Any]], old_ids: Sequence[str]
    ) -> None:
        """Register ``new`` files and mark ``old_ids`` superseded, in one transaction.

        Raises ConflictError, changing nothing, if any old row is no longer live (another process
        compacted or repaired the run meanwhile).
        """
        wanted = set(old_ids)
        with self.write() as s:
            if wanted:
                stmt = (
                    update(Segment)
                    .where(
                        Segment.run_id == run_id,
                        Segment.id.in_(list(wanted)),
                        Segment.superseded_at.is_(None),
                    )
                    .values(superseded_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                changed = s.execute(stmt).rowcount  # type: ignore[attr-defined]
                if changed != len(wanted):
                    raise ConflictError(
                        f"run {run_id}: {len(wanted) - changed} of the files being replaced "
                        "were replaced by another process meanwhile; nothing was changed"
                    )
            for row in new:
                s.add(Segment(run_id=run_id, **row))

    def forget_segments(self, ids: Sequence[str]) -> None:
        """Delete the rows of files that are gone (superseded and deleted, or lost)."""
        if not ids:
            return
        with self.write() as s:
            s.execute(delete(Segment).where(Segment.id.in_(list(ids))))

    def mark_crashed(self, run_id: str, reason: str) -> bool:
        """Mark a run 'crashed' if it is still 'running' (its writer died); True if it was."""
        with self.write() as s:
            run = s.get(Run, run_id)
            if run is None or run.status != "running":
                return False
            run.status = "crashed"
            run.status_reason = reason
            run.updated_at = utcnow()
            return True

    def usage(self, run_id: str) -> list[tuple[str, bool, int, int]]:
        """(kind, superseded, files, bytes) of a run's registered files."""
        superseded = Segment.superseded_at.is_not(None)
        with self.read() as s:
            stmt = (
                select(Segment.kind, superseded, func.count(), func.sum(Segment.nbytes))
                .where(Segment.run_id == run_id)
                .group_by(Segment.kind, superseded)
            )
            return [(k, bool(sup), int(n), int(b or 0)) for k, sup, n, b in s.execute(stmt)]

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
