"""glibc's allocator, set for a process that serves: few arenas, and large buffers
on pages of their own.

A worker reads and writes bodies on executor threads and transforms images on a
pool. By default glibc gives each of those threads an arena of its own, and once
a large buffer has been freed it serves buffers of that size from the arenas
instead of mapping them: in the 30-minute soak (bench/soak.py) a worker's
per-thread heaps grew from 156 to 403 MiB and kept growing. With two arenas and
buffers of 128 KiB and more mapped on their own (and returned when freed), the
heaps hold what is in use.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("pinedge.edge")

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 128 * 1024


def tune_malloc() -> bool:
    """Set glibc's allocator as above; False where it is not glibc's (nothing done).
    Call before the process starts threads: arenas are made as threads first allocate."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    done = mallopt(M_ARENA_MAX, ARENAS) == 1 and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    if not done:
        log.debug("this C library's malloc takes no tuning; left as it is")
    return done
