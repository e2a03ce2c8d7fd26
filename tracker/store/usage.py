"""How much disk a run takes: by kind of file, from the catalog and from the folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tracker.errors import NotFoundError
from tracker.store.backend import check_run_id

if TYPE_CHECKING:
    from tracker.store import Store


@dataclass(frozen=True)
class Usage:
    """Files and bytes."""

    files: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class RunUsage:
    """Disk used by one run."""

    run_id: str
    live: Usage  # registered files readers use
    by_kind: dict[str, Usage] = field(default_factory=dict)  # segment / stats / snapshots
    superseded: Usage = Usage()  # replaced by compaction, deleted soon (or by tracker doctor)
    on_disk: Usage = Usage()  # everything in the run's folder, temporary files included

    @property
    def compacted(self) -> bool:
        """True when no uncompacted segment is left."""
        return "segment" not in self.by_kind and self.live.files > 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["compacted"] = self.compacted
        return out


def run_usage(store: Store, run_id: str) -> RunUsage:
    """Disk usage of a run; NotFoundError if the catalog has no such run."""
    check_run_id(run_id)
    if store.catalog.get_run(run_id) is None:
        raise NotFoundError(f"no run with id {run_id!r}")
    by_kind: dict[str, Usage] = {}
    superseded = Usage()
    for kind, is_superseded, files, nbytes in store.catalog.usage(run_id):
        if is_superseded:
            superseded = Usage(superseded.files + files, superseded.bytes + nbytes)
        else:
            by_kind[kind] = Usage(files, nbytes)
    live = Usage(sum(u.files for u in by_kind.values()), sum(u.bytes for u in by_kind.values()))
    prefix = f"runs/{run_id}"
    listed = store.files.list_files(prefix) + store.files.list_incomplete(prefix)
    on_disk = Usage(len(listed), sum(i.nbytes for i in listed))
    return RunUsage(run_id, live, dict(sorted(by_kind.items())), superseded, on_disk)
