"""The SQL catalog: projects, runs, layers, segments, metrics, epochs (see models.py)."""

from tracker.catalog.catalog import Catalog, ConflictError, MetricRow
from tracker.catalog.models import Epoch, Layer, Metric, Project, Run, Segment

__all__ = [
    "Catalog",
    "ConflictError",
    "Epoch",
    "Layer",
    "Metric",
    "MetricRow",
    "Project",
    "Run",
    "Segment",
]
