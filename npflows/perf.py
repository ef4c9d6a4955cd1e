"""What npflows does about speed on its own, and the two process-wide settings behind it.

Both concern the process, not the numbers: neither changes a single bit of any result.

**Memory: freed blocks are reused, not faulted in again.**  A training step allocates tens of MB of
temporaries (per layer activations, their cotangents) and frees them at the end.  glibc's malloc serves
a block above its *mmap threshold* (128 KiB at start) with a fresh ``mmap`` and returns freed memory at the
top of the heap to the kernel once more than its *trim threshold* is free.  Either way the next step
touches fresh pages, and every 4 KiB page costs a page fault and a zero fill.  Measured here, an 8-coupling
RealNVP train step took ~140 page faults per step at batch 256 (2.2x the time of the same step without
them) and ~16,000 at batch 4096 in one pass (2x).  glibc raises both thresholds by itself
(to the size of a freed mmapped block, and twice that) whenever a large mmapped block is freed: that is its
documented *dynamic mmap threshold* (``man mallopt``).  :func:`reuse_freed_memory`, which npflows' public
methods call once per process, frees one untouched block just below glibc's 32 MiB cap, so from then on
blocks up to 32 MiB come from the heap and up to 64 MiB of freed memory is kept for reuse: the faults
disappear.  It calls no ``mallopt``, touches no page of the block and changes no setting: a program that
fixed its thresholds (``mallopt`` or ``MALLOC_MMAP_THRESHOLD_``) switched the dynamic adjustment off and
keeps exactly what it chose.  Opt out with ``NPFLOWS_REUSE_MEMORY=0`` in the environment.
:func:`keep_freed_memory` is the stronger, opt-in form (fixed thresholds of 1 GiB / 256 MiB).

**Threads: one BLAS thread inside npflows' calls, unless you say otherwise.**  npflows' matrix products
are small (a batch chunk by a few hundred units).  A second OpenBLAS thread gains little on them and
loses heavily when another process keeps the cores busy: OpenBLAS's threads wait for each other by
spinning, and one of them descheduled stalls every product (``scripts/bench_threads.py``: with both cores
of the 2-core test machine busy, 500 steps of the README's "Use" block took 9.4 s at OpenBLAS's default
against 3.3 s at one thread; on a quiet machine the default saved 10%).  So npflows' public methods
run BLAS with :func:`blas_threads` threads (default 1) and restore the previous count on return.  Change
it with :func:`set_blas_threads` (``None``: leave BLAS alone) or ``NPFLOWS_BLAS_THREADS`` (an integer, or
``default``).  The control finds OpenBLAS (NumPy's and SciPy's) among the loaded libraries (Linux, through
``/proc/self/maps``); elsewhere, or for another BLAS, it does nothing.  The count is process-wide while it
is set, as ``threadpoolctl`` does it: another thread of yours calling BLAS during an npflows call gets it
too.
"""
import ctypes
import ctypes.util
import functools
import os
import threading

import numpy as np

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20
"""glibc's cap on the dynamic mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``): a freed
mmapped block larger than this does not raise it."""
_REUSE = {"done": False}
_LOCK = threading.Lock()


def keep_freed_memory(trim_threshold=1 << 30, mmap_threshold=1 << 28):
    """Ask glibc's malloc to keep up to ``trim_threshold`` bytes of freed memory for reuse and to serve
    blocks below ``mmap_threshold`` from the heap (``mallopt``; this also switches glibc's dynamic
    thresholds off).  Opt-in and process-wide; npflows never calls it.  Returns True if applied, False where
    it is not glibc (macOS, Windows, musl): there it does nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))


def reuse_freed_memory():
    """Let glibc's dynamic thresholds keep freed blocks of up to 32 MiB for reuse (see the module notes):
    allocate and free one untouched block just below :data:`MMAP_THRESHOLD_MAX`.  Idempotent and cheap
    (one ``mmap``/``munmap`` pair, no page touched); called by npflows' public methods, once per process.
    Does nothing when ``NPFLOWS_REUSE_MEMORY=0``.  Returns True when the block was freed by this call."""
    if _REUSE["done"]:
        return False
    with _LOCK:
        if _REUSE["done"]:
            return False
        _REUSE["done"] = True
        if os.environ.get("NPFLOWS_REUSE_MEMORY", "1").strip() in ("0", "false", "no", "off"):
            return False
        try:
            block = np.empty(MMAP_THRESHOLD_MAX - (1 << 16), np.uint8)   # below the cap, header included
        except MemoryError:            # strict overcommit or a tight ulimit: keep the allocator as it is
            return False
        del block
        return True


# ----------------------------------------------------------------------------------------- BLAS threads
def _policy_from_env():
    raw = os.environ.get("NPFLOWS_BLAS_THREADS", "1").strip().lower()
    if raw in ("default", "none", ""):
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"NPFLOWS_BLAS_THREADS must be a positive integer or 'default', got {raw!r}") from None
    if n < 1:
        raise ValueError(f"NPFLOWS_BLAS_THREADS must be a positive integer or 'default', got {raw!r}")
    return n


_THREADS = {"n": _policy_from_env()}


def set_blas_threads(n):
    """BLAS threads inside npflows' public methods: a positive int, or None to leave BLAS as it is
    (OpenBLAS's own default, or whatever your code set).  Returns the previous setting."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"set_blas_threads: expected a positive int or None, got {n!r}")
    prev, _THREADS["n"] = _THREADS["n"], None if n is None else int(n)
    return prev


def blas_threads():
    """The current setting of :func:`set_blas_threads` (default 1; None = BLAS left alone)."""
    return _THREADS["n"]


@functools.lru_cache(maxsize=1)
def _openblas():
    """``[(get, set), ...]`` for every OpenBLAS loaded in the process (NumPy's ``scipy_openblas64_`` and
    SciPy's ``scipy_openblas``; the symbol names of both builds and of plain OpenBLAS are tried, as
    threadpoolctl does).  Found once; empty where ``/proc/self/maps`` does not exist."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1].lower()
                            and line.split()[-1].startswith("/")})
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)          # already loaded: the same handle, nothing new is loaded
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            for suffix in ("64_", "", "_64"):
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype, get.argtypes = ctypes.c_int, []
                    put.restype, put.argtypes = None, [ctypes.c_int]
                    found.append((get, put))
                    break
            else:
                continue
            break
    return found


def _limit():
    """Set the BLAS threads of the policy; the previous counts to give to :func:`_restore` (None when
    nothing was changed)."""
    n = _THREADS["n"]
    if n is None:
        return None
    libs = _openblas()
    prev = [get() for get, _ in libs]
    if all(p == n for p in prev):
        return None
    for _, put in libs:
        put(n)
    return prev


def _restore(prev):
    if prev is not None:
        for (_, put), p in zip(_openblas(), prev):
            put(p)


def managed(method):
    """Decorator for npflows' public methods: BLAS threads per :func:`set_blas_threads` for the duration of
    the call (nested calls change nothing), and :func:`reuse_freed_memory` on the first call."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if not _REUSE["done"]:
            reuse_freed_memory()
        prev = _limit()
        try:
            return method(*args, **kwargs)
        finally:
            _restore(prev)
    return wrapper
