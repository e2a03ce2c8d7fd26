"""HDF5 files built in memory and written to disk with plain file I/O.

When a disk fills up (ENOSPC) or fails under an open HDF5 file, the HDF5 library's state is left
broken and h5py crashes the process with a segmentation fault when the file is closed (seen here
with h5py 3.16: "Can't decrement id ref count (file write failed ... No space left on device)",
then SIGSEGV). A tracker must never take training down with it (I1), so files written while
training are built with HDF5's in-memory "core" driver and their bytes written by Python, where a
full disk is an ordinary OSError.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable

import h5py

LIBVER = ("v110", "latest")
_names = itertools.count()


def build_image(build: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file that ``build`` fills, made without touching the disk."""
    name = f"tracker-image-{os.getpid()}-{next(_names)}.h5"  # an identifier, never a path used
    with h5py.File(name, "w", driver="core", backing_store=False, libver=LIBVER) as f:
        build(f)
        f.flush()
        return bytes(f.id.get_file_image())


def write_image(path: str, build: Callable[[h5py.File], None]) -> None:
    """Build the file in memory, then write it to ``path`` (the caller makes it durable)."""
    image = build_image(build)
    with open(path, "wb") as out:
        out.write(image)


# Compacted files are too big to build in memory; a compaction that would fill the disk is not
# started. Its output is at most about the size of its inputs (bench/README.md: 176 -> 124 MiB).
COMPACTION_HEADROOM = 1.5
MIN_FREE_BYTES = 64 << 20


def require_free_space(folder: str | os.PathLike[str], needed: int, what: str) -> None:
    """Raise StoreError, touching nothing, unless ``folder``'s file system has room for
    ``needed`` bytes (times a margin, plus 64 MiB) of ``what``."""
    from tracker.errors import StoreError

    free = shutil.disk_usage(folder).free
    wanted = int(needed * COMPACTION_HEADROOM) + MIN_FREE_BYTES
    if free < wanted:
        raise StoreError(
            f"not enough free disk space for {what}: {free >> 20} MiB free, about "
            f"{wanted >> 20} MiB needed; free some space and run `tracker compact`"
        )
