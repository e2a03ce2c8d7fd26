"""tracker: record what happens inside a PyTorch network while it trains.

>>> import tracker
>>> with tracker.init(project="digits", config={"lr": 0.1}) as run:
...     run.watch(model)
...     for step, (x, y) in enumerate(batches):
...         loss = train_step(x, y)
...         run.log({"loss": loss}, step=step)
>>> r = tracker.open_run(run.id)
>>> steps, norms = r.series("fc1", "weight_grad", "norm")
"""

from tracker.alerts import ProblemDetectedError, ProblemWarning
from tracker.capture.watch import Watch
from tracker.diagnosis import Finding, diagnose
from tracker.errors import (
    InvalidArgumentError,
    NotFoundError,
    SchemaVersionError,
    StoreError,
    TrackerError,
)
from tracker.names import QUANTITIES, STAT_NAMES
from tracker.reader import RunInfo, RunReader, list_runs, open_run
from tracker.run import Run, init
from tracker.topk import top_k
from tracker.version import __version__

__all__ = [
    "QUANTITIES",
    "STAT_NAMES",
    "Finding",
    "InvalidArgumentError",
    "NotFoundError",
    "ProblemDetectedError",
    "ProblemWarning",
    "Run",
    "RunInfo",
    "RunReader",
    "SchemaVersionError",
    "StoreError",
    "TrackerError",
    "Watch",
    "__version__",
    "diagnose",
    "init",
    "list_runs",
    "open_run",
    "top_k",
]
