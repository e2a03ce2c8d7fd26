"""One error root for everything the tracker raises (requests-style)."""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error raised by the tracker."""


class InvalidArgumentError(TrackerError, ValueError):
    """An argument had the wrong type or value; the message says what is allowed."""


class NotFoundError(TrackerError, LookupError):
    """A run, layer, quantity, step or file that was asked for does not exist."""


class StoreError(TrackerError):
    """The store (folder or database) cannot be opened, read or written."""


class SchemaVersionError(StoreError):
    """A stored file or database was written by a newer tracker than this one."""
