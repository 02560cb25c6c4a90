"""glibc's allocator told to keep freed memory for reuse, instead of handing it back to the kernel and
taking it again, page by page, on the next allocation.

Why: a prefill run of ~1,000 positions makes [1000, 1536] fp32 activations (6 MB) a dozen times a
layer. glibc's defaults put such blocks in fresh mappings (its mmap threshold only grows as blocks
are freed) and trim the heap top past 128 KB, so each new block was page-faulted in as the product
wrote it, and prefill's products ran well below their speed on memory already taken
(docs/engine.md, "Freed memory kept for reuse"; the MALLOC_* environment variables do the same at
start-up, for a side-by-side run).

Process-wide and idempotent; no-op where the C library has no `mallopt` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# glibc's largest mmap threshold on 64-bit (blocks above it are always mapped anew, and the
# engine keeps its own buffers for those: decode.py) and how much free heap top to keep
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Set the thresholds; False where this C library cannot."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        log.debug("mallopt refused the thresholds: freed memory goes back to the kernel")
    return done
