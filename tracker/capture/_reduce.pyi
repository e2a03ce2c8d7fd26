# Type stub for the C extension built from _reduce.c (see that file for the buffer layouts).
import numpy as np

STAT_COLUMNS: tuple[str, ...]
API_VERSION: int

def reduce_many(
    jobs: np.ndarray,
    params: np.ndarray,
    out: np.ndarray,
    ptr: np.ndarray,
    bins: np.ndarray,
    counts: np.ndarray,
) -> None: ...
