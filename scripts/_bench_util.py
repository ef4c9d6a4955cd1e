"""Small helpers shared by the benchmark scripts: a median timer and a report of the environment.

Nothing here imports torch; the caller passes the module when it has one.
"""
import os
import platform
import statistics
import sys
import time

FORCED_KERNEL = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
KEEP_KERNEL = "NPFLOWS_BENCH_KEEP_KERNEL"
REEXEC = "NPFLOWS_BENCH_REEXEC"


def use_native_kernel(script):
    """Measure what a user's machine does: if the environment forces an OpenBLAS kernel
    (``OPENBLAS_CORETYPE``, ``OPENBLAS_L2_SIZE``), re-execute this script without it, so OpenBLAS picks its
    own kernel for this CPU (on these machines the forced Haswell kernel makes float32 GEMMs ~1.7x slower).
    Set ``NPFLOWS_BENCH_KEEP_KERNEL=1`` to measure the forced kernel instead.  :func:`env_lines` reports
    which happened.  Call it first thing in ``main()`` with the script's ``__file__``: the new process starts
    from scratch, and only a process that runs that script as its program is replaced (never a test runner
    that imported it)."""
    if not sys.argv or os.path.realpath(sys.argv[0]) != os.path.realpath(script):
        return
    forced = {k: os.environ[k] for k in FORCED_KERNEL if k in os.environ}
    if forced and not os.environ.get(KEEP_KERNEL):
        env = {k: v for k, v in os.environ.items() if k not in FORCED_KERNEL}
        env[REEXEC] = ", ".join(f"{k}={v}" for k, v in forced.items())
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def time_call(fn, min_repeats=20, min_time=1.0, warmup=3, max_repeats=10_000):
    """Median wall time of ``fn()`` in milliseconds, and how many timed calls it took.

    ``warmup`` untimed calls first (caches, allocator, lazy imports), then timed calls until both at least
    ``min_repeats`` calls and at least ``min_time`` seconds of them have been made (or ``max_repeats``).
    Each call is timed on its own with ``time.perf_counter``; the median resists the odd slow call.
    """
    for _ in range(warmup):
        fn()
    times = []
    total = 0.0
    while (len(times) < min_repeats or total < min_time) and len(times) < max_repeats:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    return 1e3 * statistics.median(times), len(times)


def time_interleaved(fns, min_repeats=20, min_time=1.0, warmup=3, max_repeats=10_000, block=1):
    """Like :func:`time_call` for several callables at once, timed in rotation: each round makes ``block``
    consecutive calls of each callable in turn, every call timed on its own.

    On a shared or throttling machine the load drifts over seconds; rotating spreads that drift over
    every callable alike, so their ratios stay fair.  ``block=1`` interleaves single calls, so every call
    starts with caches that the other implementations have just used (a cold-cache measure);
    ``block > 1`` measures the steady state of a callable repeated, as in a training loop, since the
    median then comes from calls that follow a call of the same kind.
    Returns ``{key: (median ms, number of calls)}``.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    total = dict.fromkeys(fns, 0.0)
    active = list(fns)
    while active:
        for k in active:
            for _ in range(block):
                t0 = time.perf_counter()
                fns[k]()
                dt = time.perf_counter() - t0
                times[k].append(dt)
                total[k] += dt
        active = [k for k in active if (len(times[k]) < min_repeats or total[k] < min_time)
                  and len(times[k]) < max_repeats]
    return {k: (1e3 * statistics.median(v), len(v)) for k, v in times.items()}


def blas_lines(info):
    """One line per native thread pool from ``threadpoolctl.threadpool_info()``."""
    if not info:
        return ["  (threadpoolctl found no BLAS/OpenMP thread pool)"]
    lines = []
    for d in info:
        extra = ", ".join(f"{k}={d[k]}" for k in ("architecture", "threading_layer") if d.get(k))
        lines.append(f"  {d.get('user_api')}/{d.get('internal_api')} {d.get('version')} "
                     f"num_threads={d.get('num_threads')}{', ' + extra if extra else ''} "
                     f"[{os.path.basename(d.get('filepath', '?'))}]")
    return lines


def env_lines(numpy, scipy, torch=None, extra=()):
    """Versions, CPU and the thread settings that decide what the timings mean."""
    lines = [f"python {platform.python_version()} on {platform.machine()} ({platform.platform()}), "
             f"os.cpu_count()={os.cpu_count()}",
             f"numpy {numpy.__version__}, scipy {scipy.__version__}"
             + (f", torch {torch.__version__} (num_threads={torch.get_num_threads()}, "
                f"interop={torch.get_num_interop_threads()})" if torch is not None else ", torch not used")]
    lines += list(extra)
    if hasattr(os, "getloadavg"):
        lines.append("load average (1, 5, 15 min) at start: %.2f %.2f %.2f" % os.getloadavg()
                     + " (anything else running skews the timings)")
    core, undone = os.environ.get("OPENBLAS_CORETYPE"), os.environ.get(REEXEC)
    if undone:
        lines.append(f"the environment forced {undone}; re-executed without it, so OpenBLAS chose its kernel "
                     f"itself (set {KEEP_KERNEL}=1 to measure the forced one)")
    elif core is not None:
        lines.append(f"OPENBLAS_CORETYPE is set to {core!r} and kept ({KEEP_KERNEL}): the forced kernel is measured")
    else:
        lines.append("OPENBLAS_CORETYPE is not set: OpenBLAS chose its kernel itself")
    return lines


def fmt_table(header, rows, align=None):
    """A plain-text table; ``align`` is a string of 'l'/'r' per column (default: first 'l', rest 'r')."""
    cols = len(header)
    align = align or "l" + "r" * (cols - 1)
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(cols)]

    def line(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


if __name__ == "__main__":
    print(__doc__)       # a helper module, not a script: its --help is this text
