"""The controller's memory with a thread per host.

glibc gives each new thread a malloc arena of its own until there are eight per core, and the
free space in an arena stays with it: a thousand host threads, each allocating a little, leave
tens of MB of arenas apart.  Two arenas (what MALLOC_ARENA_MAX=2 would set before the process
starts) took the controller of a 1,000-host fleet from 377 to 343 MB (bench/README.md); host
threads mostly allocate while holding the GIL, so sharing two arenas costs no measurable CPU.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(count: int = ARENAS) -> bool:
    """At most ``count`` malloc arenas from now on, on glibc; False where it does not apply (another
    C library or system, or MALLOC_ARENA_MAX set by the operator, which glibc already follows)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, count))
