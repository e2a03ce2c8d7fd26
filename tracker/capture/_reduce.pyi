# Type stub for the C extension built from _reduce.c (see that file for the buffer layouts).
from collections.abc import Sequence

import numpy as np

STAT_COLUMNS: tuple[str, ...]
API_VERSION: int

class Ticket:
    """A reduce_many_async() call; its buffers and `keep` are held until the kernel is done."""

    def done(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> int | None: ...

def reduce_many(
    jobs: np.ndarray,
    pointers: Sequence[int],
    params: np.ndarray,
    out: np.ndarray,
    ptr: np.ndarray,
    bins: np.ndarray,
    counts: np.ndarray,
) -> int: ...
def reduce_many_async(
    jobs: np.ndarray,
    pointers: Sequence[int],
    params: np.ndarray,
    out: np.ndarray,
    ptr: np.ndarray,
    bins: np.ndarray,
    counts: np.ndarray,
    keep: object,
) -> Ticket: ...
def copy_prefix(src: np.ndarray, dst: np.ndarray) -> None: ...
