"""Benchmark: the MAF/IAF asymmetry.  One masked affine autoregressive bijector, two flows, D = 8.

What is measured
----------------
``b = npflows.maf(8, n_layers=5, hidden=(64, 64))`` (5 MADE layers 8 -> 64 -> 64 -> 16, ReLU, orders
reversed between layers), its parameters the initialisation plus Gaussian noise (std 0.02) on every entry
so the flow is not the identity.  The *same* ``b`` and the same parameter dict serve

* **MAF** = ``NormalizingFlow(b, StandardNormal(8))``:
  density = ``log_prob(x)``, one parallel MADE pass per layer (``b.forward``);
  sampling = ``sample(n)``, base noise then ``b.inverse``: D = 8 sequential MADE passes per layer.
* **IAF** = ``PushForward(b, StandardNormal(8))``:
  sampling = ``sample_and_log_prob(n)``, base noise then ``b.forward``: one pass per layer, and the density
  of the samples comes with it;
  density = ``log_prob(x)`` of a new point, ``b.inverse``: D sequential passes per layer.

So the expected ratio of the slow to the fast operation is about D = 8 (each sequential pass is a full
MADE evaluation, like the one parallel pass), slightly less because the fixed costs (validation, base
density, noise) are shared.  Batch 1024 (``--batch``), float64 (``--dtype``).

Every time is the MEDIAN over repeated calls after 3 warm-up calls (at least 20 calls and 1 s per cell;
``--quick``: 5 calls), the four operations timed in rotation (``--block`` consecutive calls each per round)
so drift on a shared machine hits them alike.  BLAS is pinned to one thread with
``threadpoolctl.threadpool_limits(1)`` and the setting is printed.  As in ``bench_train.py``, glibc is asked
to keep freed memory (``npflows.perf.keep_freed_memory``; ``--default-malloc`` to skip): the parallel pass
keeps its activations in the cache it returns, and with default trimming every call would fault in fresh
pages, which costs more than the arithmetic at this size and blurs the comparison.

    python scripts/bench_autoregressive.py
    python scripts/bench_autoregressive.py --quick
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick  # noqa: E402
import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's npflows
import npflows  # noqa: E402
import npflows.perf  # noqa: E402
from _bench_util import blas_lines, env_lines, fmt_table, time_interleaved, use_native_kernel  # noqa: E402

DIM, N_LAYERS, HIDDEN, PARAM_NOISE = 8, 5, (64, 64), 0.02


def main(argv=None):
    use_native_kernel(__file__)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--batch", help="rows per call of log_prob and sampling", type=int, default=1024)
    p.add_argument("--dtype", help="float dtype of the model and the data", default="float64", choices=["float64", "float32"])
    p.add_argument("--quick", action="store_true", help="5 timed calls per cell: a smoke run")
    p.add_argument("--block", type=int, default=5,
                   help="consecutive calls of one operation per rotation (5: steady state; 1: cold caches)")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc trimming as it is (default: npflows.perf.keep_freed_memory())")
    args = p.parse_args(argv)
    announce_quick(args)
    malloc_kept = False if args.default_malloc else npflows.perf.keep_freed_memory()
    from threadpoolctl import threadpool_info, threadpool_limits

    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    b = npflows.maf(DIM, n_layers=N_LAYERS, hidden=HIDDEN)
    base = npflows.StandardNormal(DIM)
    maf, iaf = npflows.NormalizingFlow(b, base), npflows.PushForward(b, base)
    params = {k: (v + PARAM_NOISE * rng.standard_normal(v.shape)).astype(dtype) for k, v in maf.init(rng).items()}
    n = args.batch
    x = npflows.data.two_moons(n, rng).astype(dtype)                 # any points will do for a density:
    x = np.concatenate([x] * (DIM // 2), axis=1) + 0.1 * rng.standard_normal((n, DIM)).astype(dtype)

    # Correctness before timing: the IAF's sequential density of its own samples equals the parallel one.
    xs, logq = iaf.sample_and_log_prob(params, n, np.random.default_rng(1))
    err = float(np.max(np.abs(iaf.log_prob(params, xs) - logq)))
    assert err < (1e-8 if dtype == np.float64 else 1e-2), f"IAF log_prob of its own samples is off by {err}"
    assert np.isfinite(maf.log_prob(params, maf.sample(params, n, np.random.default_rng(2)))).all()

    fns = {
        "maf_density": lambda: maf.log_prob(params, x),
        "maf_sample": lambda: maf.sample(params, n, np.random.default_rng(3)),
        "iaf_sample": lambda: iaf.sample_and_log_prob(params, n, np.random.default_rng(3)),
        "iaf_density": lambda: iaf.log_prob(params, x),
    }
    reps = dict(min_repeats=5, min_time=0.0) if args.quick else dict(min_repeats=20, min_time=1.0)
    with threadpool_limits(limits=1):
        info = threadpool_info()
        t = time_interleaved(fns, block=args.block, **reps)

    n_used = sum(int(m.sum()) + m.shape[1] for layer in b.layers for m in layer.net.masks)
    print("MAF vs IAF: the same masked affine autoregressive bijector in NormalizingFlow and PushForward")
    for line in env_lines(np, scipy, extra=[f"BLAS pinned to 1 thread with threadpoolctl.threadpool_limits(1); "
                                            f"pools during timing:"] + blas_lines(info)):
        print(line)
    print(f"model: maf({DIM}, n_layers={N_LAYERS}, hidden={HIDDEN}), MADE {DIM}-{'-'.join(map(str, HIDDEN))}-"
          f"{2 * DIM} ReLU, {n_used} parameters in use ({sum(v.size for v in params.values())} stored, the rest "
          f"masked); {dtype.name}, batch {n}; "
          f"median of >= {reps['min_repeats']} calls, in rotation, {args.block} consecutive per round; "
          f"IAF self-consistency max|err| = {err:.1e}")
    print("malloc: " + ("glibc keeps freed memory (npflows.perf.keep_freed_memory())" if malloc_kept else
                        "default glibc trimming (freed memory returns to the OS: page faults on every call)") + "\n")

    def ms(k):
        return f"{t[k][0]:.2f}"

    rows = [["MAF = NormalizingFlow(b)", ms("maf_density"), "1 x 5", ms("maf_sample"), f"{DIM} x 5",
             f"{t['maf_sample'][0] / t['maf_density'][0]:.1f}x slower"],
            ["IAF = PushForward(b)", ms("iaf_density"), f"{DIM} x 5", ms("iaf_sample"), "1 x 5",
             f"{t['iaf_density'][0] / t['iaf_sample'][0]:.1f}x slower"]]
    print(fmt_table(["flow", "density ms", "passes", "sampling ms", "passes", "slow side / fast side"], rows))
    print(f"\ndensity: log_prob of {n} points (parallel for MAF, sequential for IAF); sampling: "
          f"{n} draws (MAF: sample, sequential; IAF: sample_and_log_prob, parallel, density included).\n"
          f"passes: MADE evaluations per call = per layer x layers.  Expected slow/fast ratio ~ D = {DIM}.")
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}" if hasattr(os, "getloadavg") else "")


if __name__ == "__main__":
    main()
