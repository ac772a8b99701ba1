"""glibc heap settings for long recordings: thresholds set before one, a trim after each block.

Decoding allocates many large, short-lived buffers; over a long recording freed pieces of glibc's
heaps pile up between live ones and peak RSS creeps.  Serving large allocations with mmap holds that
down but costs page faults on every buffer, so it is set only for recordings of several blocks
(docs/decisions.md#glibc-malloc-thresholds).  No effect with other C libraries.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Callable, Optional


@lru_cache(maxsize=None)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_freed_memory() -> None:
    """Return every free page of every glibc arena to the system (a few ms on a few hundred MB of heap)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def bound_heap_for_long_recordings() -> None:
    """Have glibc serve allocations of 1 MiB and more with mmap and trim freed heap above 1 MiB, for the
    rest of the process: set before a recording that needs several blocks, not for short files, where
    the page faults of a fresh mmap per buffer cost 15% of the run (docs/decisions.md)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_trim_threshold, 1 << 20)
    mallopt(m_mmap_threshold, 1 << 20)
