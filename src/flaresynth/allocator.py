"""Keep freed memory in the process instead of handing it back to the OS (glibc Linux only).

Inference frees and re-allocates the same large activation tensors at every denoising step. glibc serves blocks
above its mmap threshold with fresh ``mmap`` calls and returns freed memory at the top of the heap to the OS, so
each step faults the same pages back in. Raising glibc's trim and mmap thresholds (``mallopt``, the same as the
``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` environment variables) keeps that memory in the process
for the next step. Measured with ``benchmarks/allocator.py`` (DDIM-20 sampling of the shipped ``demo:discrete``,
100 images): system CPU time 23 s -> 4 s, minor page faults 5.3 M -> 0.8 M, user time and peak memory unchanged;
the quick demo's peak memory grows by ~50 MB (figures and conditions: ``benchmarks/README.md``).

The ``flaresynth`` command calls :func:`keep_freed_memory` at start-up. Importing flaresynth never does: a
library must not change its host's allocator. A program that uses flaresynth as a library and wants the same
speed-up calls it once, early::

    from flaresynth.allocator import keep_freed_memory
    keep_freed_memory()

Set ``FLARESYNTH_KEEP_FREED_MEMORY=0`` to keep glibc's defaults in the command (e.g. to compare).

dask.distributed workers are started by their nanny with ``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes
glibc's mmap threshold at 128 KiB, so every frame-sized array a dataset-build task allocates is a fresh ``mmap``
faulted in page by page (``benchmarks/dataset_build.py``: ~60 % more CPU per image than the same work on a
thread of the client). Such workers opt in with this module as a dask preload, which calls
:func:`keep_freed_memory` in each worker process: ``dask worker SCHEDULER --preload flaresynth.allocator`` (or
``LocalCluster(..., preload=["flaresynth.allocator"])``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Free memory at the top of the heap kept before glibc returns it to the OS.
TRIM_THRESHOLD = 1 << 30
#: Blocks up to this size come from the heap (reused) rather than from their own mmap (returned at free).
#: 32 MiB is glibc's largest dynamic mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD = 32 << 20
OPT_OUT_ENV = "FLARESYNTH_KEEP_FREED_MEMORY"


def keep_freed_memory(trim_threshold: int = TRIM_THRESHOLD, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Raise glibc's trim and mmap thresholds for this process; True when applied.

    A no-op returning False off Linux, on a C library other than glibc (musl, ...), or when the environment
    variable ``FLARESYNTH_KEEP_FREED_MEMORY`` is ``0``.
    """
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT_ENV, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # glibc only (it alone has gnu_get_libc_version): musl's mallopt is a stub that changes nothing
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, trim_threshold)) & bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))


def dask_setup(worker=None) -> None:
    """dask's preload hook (``--preload flaresynth.allocator``): keep freed memory in this worker process."""
    keep_freed_memory()


__all__ = ["keep_freed_memory", "dask_setup", "M_TRIM_THRESHOLD", "M_MMAP_THRESHOLD", "TRIM_THRESHOLD", "MMAP_THRESHOLD"]
