"""Compression of stored arrays: none, blosc-lz4 or zstd (HDF5 filters from hdf5plugin).

Measured in bench/store.py on the demo's real activations and gradients: blosc-lz4 shrinks them
1.4-1.7x, zstd 1.7-3.0x, but either one costs the writer thread (which holds the GIL inside h5py)
more time than the bytes it saves on a local disk. So segments written during training are not
compressed by default, and compaction, which runs after training, writes snapshots with zstd.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

import hdf5plugin  # registers the Blosc and Zstd filters with HDF5, for writing and reading

from tracker.errors import InvalidArgumentError

Compression = Literal["none", "blosc-lz4", "zstd"]
COMPRESSIONS: Final[tuple[str, ...]] = get_args(Compression)
# The writer's default (see the module docstring) and compaction's, for archived snapshots.
SEGMENT_COMPRESSION: Final = "none"
ARCHIVE_COMPRESSION: Final = "zstd"


def check_compression(name: str) -> str:
    """Return ``name`` if it is a known compression, else raise listing the allowed ones."""
    if name not in COMPRESSIONS:
        raise InvalidArgumentError(
            f"unknown compression {name!r}; expected one of {', '.join(COMPRESSIONS)}"
        )
    return name


def dataset_options(name: str) -> dict[str, Any]:
    """Keyword arguments for ``h5py.Group.create_dataset`` that apply compression ``name``."""
    check_compression(name)
    if name == "blosc-lz4":
        filt: Any = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)
    elif name == "zstd":
        filt = hdf5plugin.Zstd(clevel=1)  # level 1: as small as level 3 on these tensors, faster
    else:
        return {}
    return dict(filt)
