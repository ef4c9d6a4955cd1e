"""Benchmark: the CNF's density and adjoint gradient by solver method (RK45, DOP853, LSODA).

What is measured
----------------
``NormalizingFlow(CNF(2, hidden=(64, 64), activation="tanh", t in [0, 1], exact trace), StandardNormal(2))``
at rtol = atol = 1e-5 (``--tol``), batch 512 of two-moons (noise 0.1), float64.  The field's parameters are
its initialisation with every entry perturbed by N(0, 0.3^2) (fixed seed; the zero last layer of the
initialisation would make the field 0), or, with ``--params out/two_moons_cnf.npz``, a trained model (the
demo's output).  For each method:

* ``log_prob``: ``flow.log_prob(params, x)``, one solve of the augmented state (z, logdet) from t1 to t0;
* ``adjoint``: ``CNF.backward_with_stats`` from the forward's cache with the cotangents of the mean
  log-likelihood: one solve of (z, a_z, g) from t0 to t1 (the state and the parameter gradient);
* NFE: evaluations of the dynamics in that solve (the same on every call: the inputs are fixed).

Each time is the MEDIAN over repeated calls from one process after one warm-up call (at least 5 calls and
2 s per cell; ``--quick``: 2 calls), BLAS pinned to one thread with ``threadpoolctl.threadpool_limits(1)``.
An evaluation costs one MLP pass and D = 2 tangent passes (the exact trace); an adjoint evaluation adds the
reverse pass over both, about 3x as much.

    python scripts/bench_cnf.py
    python scripts/bench_cnf.py --quick
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
import npflows  # noqa: E402
from _bench_util import blas_lines, env_lines, fmt_table, time_call, use_native_kernel  # noqa: E402

METHODS = ("RK45", "DOP853", "LSODA")


def make(args, method):
    b = npflows.CNF(2, hidden=(64, 64), activation="tanh", method=method, rtol=args.tol, atol=args.tol)
    return npflows.NormalizingFlow(b, npflows.StandardNormal(2))


def main(argv=None):
    use_native_kernel(__file__)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--batch", help="two-moons points per solve", type=int, default=512)
    ap.add_argument("--tol", type=float, default=1e-5, help="rtol = atol of every solve")
    ap.add_argument("--methods", help="solve_ivp methods to time", nargs="+", default=list(METHODS), choices=list(npflows.bijectors.continuous.METHODS))
    ap.add_argument("--params", help="an .npz written by scripts/demo_cnf.py (default: perturbed initialisation)")
    ap.add_argument("--quick", action="store_true", help="2 calls per cell: a smoke run, numbers are noisy")
    args = ap.parse_args(argv)
    announce_quick(args)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        sys.exit("bench_cnf: needs threadpoolctl to pin BLAS to one thread: `pip install threadpoolctl`")

    rng = np.random.default_rng(0)
    flow0 = make(args, "RK45")
    if args.params:
        _, params, config = npflows.load(args.params)
        if tuple(config["bijector"]["hidden"]) != (64, 64):
            sys.exit("bench_cnf: --params must hold a CNF with hidden (64, 64), tanh")
        source = f"trained parameters from {args.params}"
    else:
        params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in flow0.init(rng).items()}
        source = "initialisation + N(0, 0.3^2) on every entry (seed 0)"
    x = npflows.data.two_moons(args.batch, rng)
    reps = dict(min_repeats=2, min_time=0.0, warmup=0) if args.quick else dict(min_repeats=5, min_time=2.0, warmup=1)

    with threadpool_limits(limits=1):
        print(f"bench_cnf: CNF D=2, field MLP [z, t] 3 -> 64 -> 64 -> 2 tanh, exact trace, t in [0, 1], "
              f"{sum(v.size for v in params.values())} parameters ({source}); batch {args.batch} two_moons, "
              f"float64, rtol = atol = {args.tol:g}")
        for line in env_lines(np, scipy):
            print(line)
        print("thread pools while measuring (threadpoolctl, threadpool_limits(1)):")
        for line in blas_lines(threadpool_info()):
            print(line)
        print(f"timing: median of >= {reps['min_repeats']} calls and >= {reps['min_time']} s per cell, after "
              f"{reps['warmup']} warm-up call(s)" + ("  [--quick]" if args.quick else ""))
        rows = []
        w = np.full(args.batch, 1.0 / args.batch)
        for method in args.methods:
            flow = make(args, method)
            pb, pd = flow.split(params)
            b = flow.bijector
            ms_lp, n_lp = time_call(lambda: flow.log_prob(params, x), **reps)
            z, ld, cache = b.forward(pb, x)
            dz, _ = flow.base.log_prob_backward(pd, z, w)
            ms_adj, n_adj = time_call(lambda: b.backward_with_stats(pb, dz, w, cache), **reps)
            _, _, stats = b.backward_with_stats(pb, dz, w, cache)
            rows.append([method, f"{ms_lp:.1f}", cache["nfe"], f"{ms_lp / cache['nfe']:.2f}", f"{ms_adj:.1f}",
                         stats["nfe"], f"{ms_adj / stats['nfe']:.2f}", f"{n_lp}/{n_adj}"])
            print(f"  {method} done", flush=True)
        print()
        print(fmt_table(["method", "log_prob ms", "NFE", "ms/eval", "adjoint ms", "adjoint NFE", "ms/eval",
                         "calls"], rows))
        print(f"\nmean log-likelihood of the batch: {float(flow0.log_prob(params, x).mean()):.4f} nats")


if __name__ == "__main__":
    main()
