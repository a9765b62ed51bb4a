"""Keep freed memory in the process (glibc), so PyTorch on CPU does not fault in fresh pages every step.

PyTorch's CPU tensors are allocated with ``posix_memalign`` and freed with ``free``. glibc serves large blocks
(above a threshold that rises to at most 32 MiB) with ``mmap``, gives them back with ``munmap`` on ``free``, and
trims the heap's free top, so the logits, activations and gradients a training step frees come back at the next
step as new pages that the kernel maps and zeroes one fault at a time: about 1 GB per DeepRefusal step of the
embedded model, 15% of the step's time on 2 CPU cores. :func:`keep_freed_memory` turns both off. The arithmetic is
untouched (tensors stay 64-byte aligned; trained weights are bitwise the same), and the process keeps its peak
memory until it exits, which is what a command that loads one model and trains or evaluates it does anyway. The
``drtk`` command calls it; in a notebook, call it before the work.
"""

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to reuse freed memory rather than return it to the system (no ``mmap`` for large
    blocks, no trimming below 2 GiB of free heap top). True when set; False off Linux or without glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl), or none under that name
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:
        logger.debug("mallopt refused the settings; freed memory goes back to the system as before")
    return ok
