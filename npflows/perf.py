"""Opt-in process settings that make NumPy training loops faster on Linux.

A training step at batch 4096 allocates tens of MB of temporaries and frees them at the end of the step.
glibc's malloc returns freed memory at the top of the heap to the operating system as soon as more than
``M_TRIM_THRESHOLD`` (a few MB) is free, so the next step touches fresh pages again, and every 4 KiB page
costs a page fault (zero-filled by the kernel).  On the machines npflows is measured on this was a third
of the step.  :func:`keep_freed_memory` raises the thresholds so freed blocks stay in the process and are
reused.  It changes nothing numerically.  It is process-wide (it affects every library in the process,
which benchmarks rely on for fairness) and is never called by npflows itself: call it in your script.
"""
import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(trim_threshold=1 << 30, mmap_threshold=1 << 28):
    """Ask glibc's malloc to keep up to ``trim_threshold`` bytes of freed memory for reuse and to serve
    blocks below ``mmap_threshold`` from the heap.  Returns True if applied, False where it is not glibc
    (macOS, Windows, musl): there it does nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
