"""Writing HDF5 files without letting a full disk crash the process.

When a disk fills up (ENOSPC) under an open HDF5 file, the HDF5 library's state is left broken and
h5py crashes the process with a segmentation fault when the file is closed (seen here with h5py
3.16: "Can't decrement id ref count (file write failed ... No space left on device)", then
SIGSEGV). A tracker must never take training down with it (I1). So files written while training
are either built in memory with HDF5's "core" driver and written by Python, where a full disk is
an ordinary OSError (small files: most segments), or, when large, written directly only if the
disk has room for twice their size plus a margin (HDF5's core driver makes large files 5-10x
slower to write than its direct driver: bench/store.py).
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


IN_MEMORY_MAX = 4 << 20  # bytes of data: files up to this size are built in memory


def write_image(path: str, build: Callable[[h5py.File], None], data_bytes: int) -> None:
    """Write the HDF5 file ``build`` fills at ``path`` (the caller makes it durable), holding
    about ``data_bytes`` of array data; raises OSError or StoreError, never crashes, when the
    disk is full."""
    if data_bytes <= IN_MEMORY_MAX:
        image = build_image(build)
        with open(path, "wb") as out:
            out.write(image)
        return
    require_free_space(os.path.dirname(path) or ".", data_bytes, "writing " + path)
    with h5py.File(path, "w", libver=LIBVER) as f:
        build(f)


# Big files are written only with room for 1.5x their size plus 64 MiB: a compaction's output is
# at most about the size of its inputs (bench/README.md: 176 -> 124 MiB).
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
