"""Give freed memory back to the operating system between the big steps of a long computation.

Python frees objects to the C allocator, which keeps the pages for reuse: a loop that builds and drops large
frames (the walk-forward's folds) sees its resident size creep up fold after fold although nothing is kept.
``release`` collects garbage and asks glibc to return free pages (``malloc_trim``); elsewhere it only collects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            name = ctypes.util.find_library("c") or "libc.so.6"
            lib = ctypes.CDLL(name)
            _LIBC = lib if hasattr(lib, "malloc_trim") else False
        except OSError:
            _LIBC = False
    return _LIBC


def release() -> bool:
    """Collect garbage and trim the C heap; True when the heap was trimmed (glibc)."""
    gc.collect()
    lib = _libc()
    if not lib:
        return False
    return bool(lib.malloc_trim(0))
