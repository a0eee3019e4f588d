"""Large host allocations kept for reuse: XLA's CPU temporaries without fresh pages every call.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mapping
and unmaps it on free, so a compiled step whose temporaries exceed it has the kernel zero-fill
every page of them again at each call (the CPU benchmark's "page faults/step" column counts
them). :func:`reuse_large_allocations` raises the threshold and the heap's trim
threshold, so freed blocks stay in the heap and the next call reuses them. Only the training
processes call it, on CPU devices, and only where the C library is glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # allocations below 1 GiB come from the heap and are reused


def reuse_large_allocations() -> bool:
    """Ask glibc to serve allocations under ``THRESHOLD`` from its heap and keep freed memory
    there. Returns whether it took effect (False off Linux or without glibc's ``mallopt``)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * THRESHOLD))
