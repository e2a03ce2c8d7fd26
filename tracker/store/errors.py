"""Errors of the store's maintenance operations (all under tracker.StoreError)."""

from __future__ import annotations

from tracker.catalog.catalog import ConflictError
from tracker.errors import StoreError

__all__ = ["ConflictError", "RunBusyError", "SegmentMissingError"]


class RunBusyError(StoreError):
    """Another live process is writing, compacting or deleting this run's files."""


class SegmentMissingError(StoreError):
    """A registered file is gone, usually because compaction replaced it a moment ago."""
