"""Benchmark: the residual block's log-determinant estimators against the exact logdet, at D = 2, 16 and 64.

What is measured
----------------
One ``ResidualBlock(D, hidden=(H, H), activation="lipswish", lipschitz=0.9)`` per D (``--dims``), H = 64 for
D <= 16 and 128 for D = 64 (``--hidden`` overrides), with two sets of parameters (fixed seeds):

* ``random``: the initialisation with the raw weights times 1.5 (every sigma(V) > c: every effective weight
  has norm exactly c); its Jacobian is small (spectral radius 0.02-0.1), as an untrained block's is;
* ``aligned``: the same first two layers, the last one ``V2 = -(V0 V1)^T`` and the hidden biases raised by 2
  (LipSwish' near its maximum 1): J_g ~ -W0 D W1 D W1^T D W0^T is close to negative definite, spectral radius
  0.36-0.44, the hard direction for the alternating series (log(1 + lambda) with lambda < 0) and a stand-in
  for a trained block that uses its Lipschitz budget.

The points are ``--points`` draws of N(0, I_D).  The exact logdet (D tangent passes and a D x D LU per point)
is the reference.  For every estimator (one Gaussian probe per sample):

* ``series n``: the truncated power series with n = 2, 5, 10, 20 terms (biased by the truncation);
* ``roulette``: the Russian roulette, n_exact = 2 plus a Geometric(0.5) number of terms (unbiased);

``--draws`` calls of ``forward(params, x, rng=...)`` over the points (fresh probes each call, and a fresh
roulette length per call), then:

* ``bias``: the mean of (estimate - exact) over every call and point, with its standard error (from the call
  means, since the roulette's length is shared by a call);
* ``sd``: the standard deviation of one sample's estimate around its own mean (pooled over the points): the
  noise of one probe;
* ``ms/sample``: forward (the logdet with y) and forward + backward, per row: the median over repeats of one
  call on ``--time-points`` rows (512) of the aligned block (the cost does not depend on the values) divided by
  that number; every call of every estimator timed in rotation (``time_interleaved``: >= 20 calls and >= 1 s
  each, 3 warm-up calls; ``--quick``: 3 calls), so drifting load hits all alike; one BLAS thread
  (``threadpoolctl.threadpool_limits(1)``), OpenBLAS's own kernel (``use_native_kernel``: a forced
  ``OPENBLAS_CORETYPE`` is undone by re-executing the script).  Every call includes the spectral normalisation
  (an SVD of every weight), printed on its own;
* ``expected terms``: n, or E[N] = n_exact + 1/p = 4 for the roulette;
* memory: tracemalloc's peak of one forward + backward of the series with 10 terms and of the roulette,
  with the gradient by backpropagation through the terms (``grad="backprop"``, which keeps every term's
  tangents) and by the Neumann series (``grad="neumann"``, which keeps one vector).

The numbers depend on the block: its Jacobian's spectral radius (printed) sets how fast the series converges
(the truncation error of n terms is about rho^(n+1)/(n+1) per eigenvalue), and the roulette's variance is finite
only for rho^2 < 1 - p.

    python scripts/bench_residual_logdet.py
    python scripts/bench_residual_logdet.py --quick
    python scripts/bench_residual_logdet.py --dims 2 16 --draws 100
"""
import argparse
import os
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick, exit_status  # noqa: E402
import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's npflows
import npflows  # noqa: E402
from npflows.bijectors.residual import ResidualBlock  # noqa: E402
from _bench_util import blas_lines, env_lines, fmt_table, time_interleaved, use_native_kernel  # noqa: E402

C, SERIES_TERMS, N_EXACT, P = 0.9, (2, 5, 10, 20), 2, 0.5


def hidden_for(D, override):
    return tuple(override) if override else ((64, 64) if D <= 16 else (128, 128))


def make_block(D, hidden, **kw):
    return ResidualBlock(D, hidden=hidden, activation="lipswish", lipschitz=C, **kw)


def estimators():
    out = [(f"series {n}", dict(logdet="series", n_terms=n), n) for n in SERIES_TERMS]
    out.append(("roulette", dict(logdet="roulette", n_exact=N_EXACT, roulette_p=P), N_EXACT + 1 / P))
    return out


def peak_mb(block, params, x):
    tracemalloc.start()
    try:
        y, ld, cache = block.forward(params, x, rng=np.random.default_rng(0))
        block.backward(params, np.zeros_like(y), np.ones_like(ld), cache)
        del cache
        return tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


def block_params(D, hidden, kind):
    """The parameters of the ``random`` or ``aligned`` block (see the module docstring)."""
    rng = np.random.default_rng([14, D])
    p = make_block(D, hidden).init(rng)
    if kind == "random":
        return {k: (1.5 * v if k.startswith("net.V") else v) for k, v in p.items()}
    p = dict(p)
    p["net.V2"] = -(p["net.V0"] @ p["net.V1"]).T
    p["net.b0"], p["net.b1"] = p["net.b0"] + 2.0, p["net.b1"] + 2.0
    return p


def bench_dim(D, args, threadpool_limits):
    hidden = hidden_for(D, args.hidden)
    exact = make_block(D, hidden)
    x = np.random.default_rng([14, D, 2]).standard_normal((args.points, D))
    xt = np.random.default_rng([14, D, 3]).standard_normal((args.time_points, D))
    reps = dict(min_repeats=3, min_time=0.0, warmup=1) if args.quick else dict(min_repeats=20, min_time=1.0)
    ones = np.ones(args.time_points)
    aligned = block_params(D, hidden, "aligned")
    blocks = {"exact": exact, **{name: make_block(D, hidden, **kw) for name, kw, _ in estimators()}}

    def fwd(block):
        return lambda: block.forward(aligned, xt, rng=np.random.default_rng(1))

    def step(block):
        def run():
            yy, ll, cc = block.forward(aligned, xt, rng=np.random.default_rng(1))
            return block.backward(aligned, np.zeros_like(yy), ones, cc)
        return run
    fns = {("weights", "fwd"): lambda: exact.net.effective(aligned)}
    for name, block in blocks.items():
        fns[(name, "fwd")], fns[(name, "step")] = fwd(block), step(block)
    with threadpool_limits(limits=1):                   # every callable timed in rotation (drifting load)
        t = time_interleaved(fns, **reps)
    cost = {name: (t[(name, "fwd")][0] / args.time_points, t[(name, "step")][0] / args.time_points)
            for name in blocks}
    svd_ms = t[("weights", "fwd")][0]
    out = {}
    for kind in ("random", "aligned"):
        params = block_params(D, hidden, kind)
        y, ref, cache = exact.forward(params, x)
        Ws, bs, _ = exact.net.effective(params)
        _, _, _, d1s = exact.net.primal(Ws, bs, x)
        Jt = exact.net.tangents(Ws, d1s, np.eye(D)[None])[0][-1]        # J_g^T per point
        rho = max(float(np.max(np.abs(np.linalg.eigvals(J)))) for J in Jt)
        norm = max(float(np.linalg.svd(J, compute_uv=False)[0]) for J in Jt)
        rows = [["exact", "0", "0", f"{D} passes", f"{cost['exact'][0]:.4f}", f"{cost['exact'][1]:.4f}"]]
        draw_rng = np.random.default_rng([14, D, 1])
        for name, kw, terms in estimators():
            block = make_block(D, hidden, **kw)
            est = np.array([block.forward(params, x, rng=draw_rng)[1] for _ in range(args.draws)])  # (draws, points)
            call_means = (est - ref).mean(axis=1)
            bias, se = call_means.mean(), call_means.std(ddof=1) / np.sqrt(args.draws)
            sd = np.sqrt(np.mean(est.var(axis=0, ddof=1)))
            rows.append([name, f"{bias:+.2e} +- {se:.1e}", f"{sd:.3g}", f"{terms:g}", f"{cost[name][0]:.4f}",
                         f"{cost[name][1]:.4f}"])
        print(f"\nD = {D}, {kind} block: ResidualBlock({D}, hidden={hidden}, lipswish, lipschitz={C}), "
              f"{args.points} points, {args.draws} draws per estimator; exact logdet: mean {ref.mean():+.4f}, sd "
              f"{ref.std():.4f} over the points; J_g: spectral radius up to {rho:.3f}, norm up to {norm:.3f}")
        print(fmt_table(["estimator", "bias (nats) +- SE", "sd", "terms", "ms/sample fwd", "ms/sample fwd+bwd"],
                        rows))
        out[kind] = rows
    mem = []
    for name, kw in (("series 10", dict(logdet="series", n_terms=10)),
                     ("roulette, N = 10 drawn", dict(logdet="roulette", n_exact=N_EXACT, roulette_p=P, roulette_n=10)),
                     ("series 40", dict(logdet="series", n_terms=40))):
        mb = {g: peak_mb(make_block(D, hidden, grad=g, **kw), aligned, x) for g in ("backprop", "neumann")}
        mem.append([name, f"{mb['backprop']:.2f}", f"{mb['neumann']:.2f}", f"{mb['backprop'] / mb['neumann']:.1f}x"])
    print(f"D = {D}: cost per sample from one call on {args.time_points} points (median of >= {reps['min_repeats']} "
          f"calls, all timed in rotation); it includes the spectral normalisation, {svd_ms:.2f} ms per call (an SVD "
          f"of every V), {svd_ms / args.time_points:.4f} ms per sample at this batch")
    print(f"D = {D}: memory of one forward + backward over {args.points} points (tracemalloc peak, MiB):")
    print(fmt_table(["estimator", "grad=backprop", "grad=neumann", "saving"], mem))
    return out, mem


def main(argv=None):
    use_native_kernel(__file__)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64], help="event sizes D (default 2 16 64)")
    p.add_argument("--hidden", type=int, nargs="+", default=None,
                   help="hidden widths for every D (default 64 64 for D <= 16, 128 128 for D = 64)")
    p.add_argument("--points", type=int, default=64, help="points (rows of every call)")
    p.add_argument("--draws", type=int, default=200, help="calls per estimator for the bias and sd")
    p.add_argument("--time-points", type=int, default=512, help="rows of the timed calls")
    p.add_argument("--quick", action="store_true", help="D = 2 and 16, 16 points, 10 draws, 3 timed calls: a smoke run")
    args = p.parse_args(argv)
    announce_quick(args)
    if args.quick:
        args.dims, args.points, args.draws, args.time_points = [d for d in args.dims if d <= 16] or [2], 16, 10, 32
    from threadpoolctl import threadpool_info, threadpool_limits
    print("The residual block's logdet estimators against the exact logdet")
    for line in env_lines(np, scipy, extra=["BLAS pinned to 1 thread with threadpoolctl.threadpool_limits(1) "
                                            "while timing"]):
        print(line)
    with threadpool_limits(limits=1):
        for line in blas_lines(threadpool_info()):
            print(line)
    print(f"npflows {npflows.__version__}")
    for D in args.dims:
        bench_dim(D, args, threadpool_limits)
    return exit_status(False, args.quick)


if __name__ == "__main__":
    sys.exit(main())
