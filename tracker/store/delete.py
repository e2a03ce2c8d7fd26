"""Deleting a run: its files, then its rows, under its locks so no live writer is cut off."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tracker.errors import NotFoundError
from tracker.store.backend import check_run_id
from tracker.store.locks import locked_ranks

if TYPE_CHECKING:
    from tracker.store import Store

_RANK = re.compile(r"^runs/[0-9a-f]+/rank(\d+)/")


def run_ranks(store: Store, run_id: str) -> list[int]:
    """Ranks with rows in the catalog or files on disk (rank 0 always)."""
    ranks = set(store.catalog.ranks(run_id)) | {0}
    for info in store.files.list_files(f"runs/{run_id}") + store.files.list_incomplete(
        f"runs/{run_id}"
    ):
        match = _RANK.match(info.relpath)
        if match:
            ranks.add(int(match.group(1)))
    return sorted(ranks)


def delete_run(store: Store, run_id: str) -> None:
    """Remove a run's files and catalog rows; RunBusyError if a live process is writing it.

    If this dies part way, the lock files it leaves (purpose "deletion") make the next open of
    the store finish the job, so a run is never left half deleted.
    """
    check_run_id(run_id)
    known = store.catalog.get_run(run_id) is not None
    if not known and not store.files.list_files(f"runs/{run_id}"):
        raise NotFoundError(f"no run with id {run_id!r}")
    with locked_ranks(store.root, run_id, run_ranks(store, run_id), "deletion"):
        erase_run(store, run_id)


def erase_run(store: Store, run_id: str) -> None:
    """Delete files first, rows last: while rows remain, the run still shows what is missing."""
    store.files.delete_prefix(f"runs/{check_run_id(run_id)}")
    store.catalog.delete_run(run_id)
