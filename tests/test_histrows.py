"""HistogramRows: sparse (CSR) histograms must round-trip and slice exactly like dense rows."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.capture.histogram import N_BINS
from tracker.capture.histrows import HistogramRows


def _dense(rng: np.random.Generator, h: int) -> np.ndarray:
    dense = rng.integers(0, 1000, size=(h, N_BINS)) * (rng.random((h, N_BINS)) < 0.05)
    dense[h // 2] = 0  # an all-empty histogram (a tensor of NaNs only... or none sampled)
    return dense.astype(np.int64)


def test_from_dense_round_trips_and_rows_read_back() -> None:
    dense = _dense(np.random.default_rng(0), 9)
    rows = HistogramRows.from_dense(dense)
    assert len(rows) == 9 and rows.nnz == np.count_nonzero(dense)
    assert rows.bins.dtype == np.uint16 and rows.counts.dtype == np.int64
    np.testing.assert_array_equal(rows.dense(), dense)
    for r in range(9):
        np.testing.assert_array_equal(rows[r], dense[r])


def test_take_and_concat_match_their_dense_counterparts() -> None:
    rng = np.random.default_rng(1)
    a, b = _dense(rng, 5), _dense(rng, 3)
    joined = HistogramRows.concat([HistogramRows.from_dense(a), HistogramRows.from_dense(b)])
    both = np.concatenate([a, b])
    np.testing.assert_array_equal(joined.dense(), both)
    order = [7, 0, 4, 4, 2]  # any order, repeats allowed
    np.testing.assert_array_equal(joined.take(order).dense(), both[order])
    assert len(joined.take([])) == 0
    assert len(HistogramRows.concat([])) == 0


def test_inconsistent_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="ptr"):
        HistogramRows(np.array([1, 2]), np.zeros(1, np.uint16), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="entries"):
        HistogramRows(np.array([0, 2]), np.zeros(1, np.uint16), np.zeros(1, np.int64))
