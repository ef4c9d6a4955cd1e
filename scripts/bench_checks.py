"""What the error contract costs: one training step with npflows' checks as shipped, against the same step
with them switched off.

The contract (README, "Errors") validates the parameter dict once per call (keys, shapes, dtype, one
finiteness pass), checks every layer's results (output, logdet, input cotangent) and the gradients of the
whole model in one pass, and computes ``x * exp(s)`` in its overflow-free form where ``exp(s)`` leaves the
float range.  "unchecked" replaces exactly those pieces by no-ops in this process (and ``x * exp(s)`` by the
plain product), so the ratio is the price of refusing silent inf and NaN.

The model is bench_train.py's: RealNVP, 8 affine couplings with MLPs D/2 -> 64 -> 64 -> D, a standard normal
base, one BLAS thread.  The two variants are timed in rotation (``_bench_util.time_interleaved``) so that
load drift falls on both alike.  Run it without the forced OpenBLAS kernel, as a user's machine would::

    env -u OPENBLAS_CORETYPE python scripts/bench_checks.py
    python scripts/bench_checks.py --quick      # smoke run
"""
import argparse
import contextlib
import os
import sys

import numpy as np
import scipy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import npflows as nf  # noqa: E402
from _cli import HelpFormatter, announce_quick  # noqa: E402
from _bench_util import blas_lines, env_lines, fmt_table, time_interleaved, use_native_kernel  # noqa: E402
from npflows.bijectors import autoregressive, coupling  # noqa: E402
from npflows.core import bijector  # noqa: E402


def plain_mul_exp(a, s, xp=np, e=None):
    """``x * exp(s)`` as it was before the contract: no look at the range of s."""
    return a * (xp.exp(s) if e is None else e)


@contextlib.contextmanager
def unchecked():
    """The contract's checks replaced by no-ops (restored on exit)."""
    saved = [(nf.Bijector, "check_params", nf.Bijector.check_params),
             (nf.Bijector, "_check_results", nf.Bijector._check_results),
             (bijector, "all_finite_many", bijector.all_finite_many),
             (coupling, "mul_exp", coupling.mul_exp), (autoregressive, "mul_exp", autoregressive.mul_exp)]
    nf.Bijector.check_params = lambda self, params, dtype=None: params
    nf.Bijector._check_results = lambda *args: None
    bijector.all_finite_many = lambda arrays: True
    coupling.mul_exp = autoregressive.mul_exp = plain_mul_exp
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def step(flow, params, x, checks):
    if checks:
        return flow.loss_and_grad(params, x)
    with unchecked():
        return flow.loss_and_grad(params, x)


def main():
    use_native_kernel(__file__)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few repeats: a smoke run, numbers are noisy")
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 64], help="event sizes D (default: 2 64)")
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 4096], help="batch sizes (default: 256 4096)")
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"],
                    help="dtypes (default: float64 float32)")
    args = ap.parse_args()
    announce_quick(args)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        sys.exit("bench_checks: needs threadpoolctl to pin BLAS to one thread: `pip install threadpoolctl` "
                 "(or `pip install -e .[bench]`)")
    timing = dict(min_repeats=5, min_time=0.05, warmup=1) if args.quick else dict(min_repeats=30, min_time=2.0)
    rows = []
    with threadpool_limits(limits=1):
        for line in env_lines(np, scipy):
            print(line)
        print("thread pools while measuring (threadpoolctl, threadpool_limits(1)):")
        for line in blas_lines(threadpool_info()):
            print(line)
        for D in args.dims:
            for batch in args.batches:
                for dtype in args.dtypes:
                    flow = nf.NormalizingFlow(nf.realnvp(D, n_layers=8, hidden=(64, 64)), nf.StandardNormal(D))
                    rng = np.random.default_rng(0)
                    params = nf.cast_params(flow.init(rng), dtype)
                    x = rng.standard_normal((batch, D)).astype(dtype)
                    checked, plain = step(flow, params, x, True), step(flow, params, x, False)
                    same = checked[0] == plain[0] and all(np.array_equal(checked[1][k], plain[1][k])
                                                          for k in params)
                    t = time_interleaved({"checked": lambda: step(flow, params, x, True),
                                          "unchecked": lambda: step(flow, params, x, False)}, **timing)
                    rows.append((D, batch, dtype, f"{t['checked'][0]:.3f}", f"{t['unchecked'][0]:.3f}",
                                 f"{t['checked'][0] / t['unchecked'][0]:.3f}", "yes" if same else "NO"))
                    print(f"  D={D} batch={batch} {dtype}: done", flush=True)
    print("\nmedian ms per train step (loss_and_grad), checks as shipped vs switched off; ratio = checked / "
          "unchecked" + ("  [--quick]" if args.quick else ""))
    print(fmt_table(("D", "batch", "dtype", "checked", "unchecked", "ratio", "same numbers"), rows))
    if not all(r[-1] == "yes" for r in rows):
        sys.exit("bench_checks: the checks changed a result; they must only refuse, never alter")


if __name__ == "__main__":
    main()
