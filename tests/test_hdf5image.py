"""HDF5 writes that a full disk turns into errors, not crashes (tracker/store/hdf5image.py)."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest

from tracker.errors import StoreError
from tracker.store import hdf5image


def _build(f: h5py.File) -> None:
    f.attrs["kind"] = "test"
    f.create_dataset("x", data=np.arange(1000, dtype=np.float32))


@pytest.mark.parametrize("size", [10, hdf5image.IN_MEMORY_MAX + 1])
def test_both_paths_write_the_same_readable_file(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f.h5"
    hdf5image.write_image(str(path), _build, size)
    with h5py.File(path, "r") as f:
        assert f.attrs["kind"] == "test"
        np.testing.assert_array_equal(f["x"][()], np.arange(1000, dtype=np.float32))


def test_a_big_file_is_not_started_without_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(hdf5image.shutil, "disk_usage", lambda _: usage(1 << 30, 0, 10 << 20))
    path = tmp_path / "big.h5"
    with pytest.raises(StoreError, match="not enough free disk space"):
        hdf5image.write_image(str(path), _build, 8 << 20)
    assert not path.exists()
    hdf5image.write_image(str(path), _build, 1 << 20)  # small: built in memory, no check needed
    assert path.exists()
