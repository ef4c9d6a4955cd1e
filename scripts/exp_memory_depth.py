"""Experiment: the memory of a training step grows linearly in the depth; recomputing activations by inversion.

The claim: backpropagation keeps every layer's activations until the backward pass reaches it, so the memory
of one training step of a coupling flow grows linearly in the depth L (and in the batch and the width); a flow
is invertible, so the backward pass can instead recover each layer's input from its output (RevNets, Gomez
et al. 2017, arXiv:1707.04585), which keeps the activation memory flat in L at the price of one extra inverse
and one extra forward per layer.

The model: ``NormalizingFlow(realnvp(d, L, hidden=(64, 64), scale="tanh"), StandardNormal(d))``, the demo's
RealNVP, with ``chunk_rows=None`` (one pass over the batch), and the same layers in
``RecomputeSequential`` (``npflows/core/reversible.py``).  The data: two-moons in the first two coordinates
and N(0, 0.1^2) noise in the others, rotated by a random orthogonal matrix.

1. **Memory.**  The peak of ``tracemalloc`` (NumPy reports its array buffers to it) during one
   ``loss_and_grad`` call, above what was allocated before it, after one warm-up call, for every depth L, width
   d and batch N.  Per d, a least-squares fit ``peak = a + b N + c L + s L N`` over the (L, N) grid: ``s`` is the
   slope in bytes per layer per sample, ``c`` the bytes per layer that do not scale with the batch (the
   parameter gradients), with the RMS residual of the fit.  Next to ``s``, the prediction from the code:
   a coupling's cache holds its output (d doubles per sample), the conditioner's output (r and t, d), the
   log-scale and the scale (d/2 each), the conditioner's two hidden activations (2 x 64) and, for inputs of
   at most 8 columns, the conditioner's input with a column of ones (d/2 + 1): 8 bytes each.
2. **Time.**  The median time of one ``loss_and_grad`` step, cached and recomputing, timed in rotation
   (``_bench_util.time_interleaved``), one BLAS thread, OpenBLAS's own kernel for the CPU (the script
   re-executes itself without ``OPENBLAS_CORETYPE``); the ratio recompute / cached.
3. **Accuracy.**  The recovered inputs differ from the cached ones by the round-trip error of the layers
   above them.  For parameters after ``--train-steps`` Adam steps on the data, and for parameters 0.3 (random
   normal) away from the identity initialisation, the largest round-trip error ``max|f^-1(f(x)) - x|`` and the
   largest gradient difference between the two paths, relative to the largest gradient of the same key.

Writes ``memory_depth.png`` (peak memory against depth per width, both paths; the time ratio) into ``--out``
(default ``out/``).  Every random draw comes from ``numpy.random.default_rng([seed, purpose, ...])``.

Measured (the defaults: L = 2..32, batches 256 and 1024, hidden 64-64; one BLAS thread; a 2-core machine shared
with other jobs, load 4.7 at the start and 6.5 at the end, so the times are noisy; full run 6.9 min):

    ====  =================  =========  =================  ===========  ==========  ===============  ===========
    d     bytes/layer/sample  predicted  bytes/layer/sample  peak MiB at  time ratio  time ratio over  grad diff
          cached (fit)                   recompute (fit)     L=32 cached  at L = 32   L = 2..32        trained
          [fit RMS resid.]                                   / recompute                               (random 0.3)
    ====  =================  =========  =================  ===========  ==========  ===============  ===========
    2     1085.8 [81 kB]     1088       -0.0               36.3 / 3.3   1.47        1.45-2.15        2e-15 (1e20)
    8     1253.5 [93 kB]     1256       0.6                41.9 / 4.0   1.68        1.57-1.79        1e-15 (2e40)
    32    1788.4 [142 kB]    1792       4.5                60.0 / 6.6   1.76        1.72-2.57        2e-15 (7e52)
    64    2560.9 [26 kB]     2560       9.0                85.9 / 10.2  1.24        1.24-1.85        2e-15 (1e59)
    ====  =================  =========  =================  ===========  ==========  ===============  ===========

The slope matches the prediction from the code to 0.3%; with recomputation it is 0-9 bytes per layer per sample
(the fit's noise): what still grows with L is the parameter gradients, 37-83 kB per layer whatever the batch.
At L = 32, batch 1024 the peak falls 8-11-fold (85.9 MiB to 10.2 MiB at d = 64) for 1.7x the time (the
median ratio over all sizes; 1.24-2.57 under the load; a second run at load 7-9 gave 1.33-2.04, median 1.66,
and the same bytes to the byte: the picture in docs/images is from it).  The recomputed gradients of the
trained flows (300 Adam steps from the identity) agree with the cached ones to 2e-15, their round trips are
exact to 2e-15.  With random parameters 0.3 away from the identity ("random 0.3", worst over L = 8 and 32),
a deep flow contracts some directions so hard that its inverse loses them: the round trip fails (errors up to
1e60) and so do the recomputed gradients (relative errors ~1 already at L = 8, d = 32).  Recomputation is exact
only as far as the flow is invertible in floating point: check the round trip on one's own model first.

Lesson: memory grows linearly in depth (1.1-2.6 kB per layer per sample here); inverting instead of caching
makes it flat for ~1.7x the time.  It pays where memory is the limit (deep flows, large batches) and the flow
is well conditioned: ``NormalizingFlow(RecomputeSequential(layers), base)``; npflows' ``chunk_rows`` already
bounds the memory in the batch direction without extra compute, so the default stays ``Sequential``.

    python scripts/exp_memory_depth.py               # the full run (a few minutes)
    python scripts/exp_memory_depth.py --quick       # a smoke run (seconds)
"""
import argparse
import os
import sys
import time
import tracemalloc

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_util import env_lines, fmt_table, time_interleaved, use_native_kernel  # noqa: E402
from _cli import HelpFormatter, announce_quick  # noqa: E402
import npflows as nf  # noqa: E402
from npflows.plotting import save_small  # noqa: E402

DATA, ROTATION, INIT, PERTURB, TRAIN, PROBE = range(6)
KINDS = {"cached": nf.Sequential, "recompute": nf.RecomputeSequential}


def embedded_moons(n, d, rng_data, rng_rot):
    """Two-moons in two coordinates, N(0, 0.1^2) in the other d - 2, rotated by a random orthogonal matrix."""
    x = np.concatenate([nf.data.two_moons(n, rng_data), 0.1 * rng_data.standard_normal((n, d - 2))], axis=1)
    q, r = np.linalg.qr(rng_rot.standard_normal((d, d)))
    return x @ (q * np.sign(np.diag(r)))


def make_flow(kind, d, depth, hidden):
    layers = nf.realnvp(d, depth, hidden=tuple(hidden), scale="tanh").layers
    return nf.NormalizingFlow(KINDS[kind](layers), nf.StandardNormal(d), chunk_rows=None)


def predicted_bytes(d, hidden):
    """Bytes per layer per sample that an affine coupling's cache holds (see the module docstring)."""
    d1, d2 = (d + 1) // 2, d // 2
    aug = d1 + 1 if d1 <= 8 else 0            # the MLP augments narrow inputs with a ones column (nn/mlp.py)
    return 8 * (d + 2 * d2 + 2 * d2 + aug + sum(hidden))


def peak_bytes(flow, params, x):
    """Peak bytes allocated during one ``loss_and_grad`` above those held before it (after a warm-up call)."""
    flow.loss_and_grad(params, x)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        flow.loss_and_grad(params, x)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def fit_memory(rows):
    """Least squares ``peak = a + b N + c L + s L N`` over rows ``(L, N, peak)``: ``(s, c, rms residual)``."""
    L, N, y = (np.array(v, dtype=np.float64) for v in zip(*rows))
    A = np.stack([np.ones_like(L), N, L, L * N], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    rms = float(np.sqrt(np.mean((A @ coef - y) ** 2)))
    return float(coef[3]), float(coef[2]), rms


def perturbed(flow, rng, scale):
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}


def train(flow, params, x, steps, rng, batch=256, lr=1e-3):
    state = nf.adam_init(params)
    for _ in range(steps):
        _, g = flow.loss_and_grad(params, x[rng.integers(0, x.shape[0], batch)])
        params, state = nf.adam(params, g, state, lr=lr, clip_norm=10.0)
    return params


def gradient_gap(d, depth, params, x, hidden):
    """``(round-trip error, relative gradient difference)`` of the two paths at ``params`` on ``x``."""
    fc, fr = make_flow("cached", d, depth, hidden), make_flow("recompute", d, depth, hidden)
    with np.errstate(all="ignore"):
        try:
            z = fc.bijector.forward(fc.split(params)[0], x)[0]
            rt = float(np.max(np.abs(fc.bijector.inverse(fc.split(params)[0], z)[0] - x)))
        except (ValueError, FloatingPointError):
            rt = float("inf")
        try:
            _, gc = fc.loss_and_grad(params, x)
            _, gr = fr.loss_and_grad(params, x)
            rel = max(float(np.max(np.abs(gr[k] - gc[k]))) / max(float(np.max(np.abs(gc[k]))), 1e-300) for k in gc)
        except (ValueError, FloatingPointError) as e:
            rel = f"error: {type(e).__name__}"
    return rt, rel


def plot(path, depths, dims, batch, peaks, ratios):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, d in enumerate(dims):
        c = colors[i % len(colors)]
        a.plot(depths, [peaks[("cached", d, L, batch)] / 2 ** 20 for L in depths], "o-", c=c, label=f"d = {d} cached")
        a.plot(depths, [peaks[("recompute", d, L, batch)] / 2 ** 20 for L in depths], "s--", c=c, mfc="none",
               label=f"d = {d} recompute")
        b.plot(depths, [ratios[(d, L)] for L in depths], "o-", c=c, label=f"d = {d}")
    a.set_xlabel("depth L (affine couplings)")
    a.set_ylabel("peak memory of one training step (MiB)")
    a.set_title(f"memory grows linearly in depth (batch {batch})", fontsize=9)
    a.legend(fontsize=6, ncol=2)
    b.axhline(1.0, c="0.7", lw=0.8)
    b.set_xlabel("depth L")
    b.set_ylabel("time per step: recompute / cached")
    b.set_title("what recomputation costs in time", fontsize=9)
    b.set_ylim(0.8, max(2.2, max(ratios.values()) * 1.05))
    b.legend(fontsize=7)
    for ax in (a, b):                 # a linear axis: a straight line is what "linear in depth" looks like
        ax.set_xticks(depths)
        ax.set_xlim(0, max(depths) + 1)
    fig.tight_layout()
    save_small(fig, path, 90)
    plt.close(fig)


def main(argv=None):
    use_native_kernel(__file__)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16, 32], help="depths L (affine couplings)")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32, 64], help="data dimensions d (at least 2)")
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024],
                   help="batch sizes; the last is the one timed and plotted")
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="conditioner hidden widths")
    p.add_argument("--train-steps", type=int, default=300,
                   help="Adam steps before the gradient comparison on trained parameters")
    p.add_argument("--min-time", type=float, default=0.4, help="seconds of timed calls per step kind and size")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--quick", action="store_true", help="depths 2 4, dims 2 4, batches 64 128: a smoke test")
    p.add_argument("--out", default="out", help="directory for the PNG")
    p.add_argument("--no-plots", action="store_true", help="skip the plot even if matplotlib is installed")
    args = p.parse_args(argv)
    announce_quick(args)
    if args.quick:
        args.depths, args.dims, args.batches, args.train_steps, args.min_time = [2, 4], [2, 4], [64, 128], 5, 0.02
    if min(args.dims) < 2:
        p.error("every d must be at least 2 (a coupling needs two parts)")
    t_start = time.perf_counter()
    for line in env_lines(np, scipy):
        print(line)
    depths, dims, batches, hidden = sorted(args.depths), sorted(args.dims), sorted(args.batches), args.hidden
    batch = batches[-1]
    rng = lambda *purpose: np.random.default_rng([args.seed, *purpose])     # noqa: E731

    # 1. memory
    print(f"\n1. memory: peak of one loss_and_grad (tracemalloc), RealNVP with hidden {hidden}, tanh scale", flush=True)
    peaks = {}
    for d in dims:
        x_all = embedded_moons(batch, d, rng(DATA, d), rng(ROTATION, d))
        for L in depths:
            for kind in KINDS:
                flow = make_flow(kind, d, L, hidden)
                params = perturbed(flow, rng(INIT, d, L), 0.1)
                for n in batches:
                    peaks[(kind, d, L, n)] = peak_bytes(flow, params, x_all[:n])
            mib = {kind: peaks[(kind, d, L, batch)] / 2**20 for kind in KINDS}
            print(f"  d = {d:>3}, L = {L:>3}: peak at batch {batch}: cached {mib['cached']:7.2f} MiB, "
                  f"recompute {mib['recompute']:7.2f} MiB", flush=True)
    fits = {(kind, d): fit_memory([(L, n, peaks[(kind, d, L, n)]) for L in depths for n in batches])
            for kind in KINDS for d in dims}

    # 2. time
    print(f"\n2. time per loss_and_grad step at batch {batch} (median, timed in rotation)", flush=True)
    times, ratios = {}, {}
    for d in dims:
        x = embedded_moons(batch, d, rng(DATA, d), rng(ROTATION, d))
        for L in depths:
            flows = {kind: make_flow(kind, d, L, hidden) for kind in KINDS}
            params = perturbed(flows["cached"], rng(INIT, d, L), 0.1)
            res = time_interleaved({k: (lambda f=f: f.loss_and_grad(params, x)) for k, f in flows.items()},
                                   min_repeats=3 if args.quick else 5, min_time=args.min_time, warmup=1)
            times[(d, L)] = (res["cached"][0], res["recompute"][0])
            ratios[(d, L)] = res["recompute"][0] / res["cached"][0]
            print(f"  d = {d:>3}, L = {L:>3}: cached {res['cached'][0]:8.2f} ms, "
                  f"recompute {res['recompute'][0]:8.2f} ms, ratio {ratios[(d, L)]:.2f}", flush=True)

    # 3. accuracy
    print(f"\n3. accuracy of the recomputed gradients (batch 256; trained: {args.train_steps} Adam steps)", flush=True)
    gaps = []
    for d in dims:
        x_train = embedded_moons(4096, d, rng(DATA, d, 1), rng(ROTATION, d))
        x = x_train[:256]
        for L in sorted({depths[len(depths) // 2], depths[-1]}):
            flow = make_flow("cached", d, L, hidden)
            trained = train(flow, flow.init(rng(INIT, d, L, 1), x_train[:512]), x_train, args.train_steps,
                            rng(TRAIN, d, L))
            random = perturbed(flow, rng(PERTURB, d, L), 0.3)
            row = (d, L) + gradient_gap(d, L, trained, x, hidden) + gradient_gap(d, L, random, x, hidden)
            gaps.append(row)
            print(f"  d = {d:>3}, L = {L:>3}: trained: round trip {row[2]:.1e}, gradients {_fmt(row[3])}; "
                  f"random 0.3: round trip {row[4]:.1e}, gradients {_fmt(row[5])}", flush=True)

    # tables
    print(f"\nmemory fit per d: peak = a + b N + c L + s L N over L in {depths}, N in {batches} "
          f"(s: bytes per layer per sample; c: bytes per layer independent of the batch)")
    rows = []
    for d in dims:
        s_c, c_c, r_c = fits[("cached", d)]
        s_r, c_r, r_r = fits[("recompute", d)]
        rows.append([d, f"{s_c:.1f}", predicted_bytes(d, hidden), f"{s_r:.2f}", f"{c_c / 1e3:.1f}", f"{c_r / 1e3:.1f}",
                     f"{r_c / 1e3:.1f}", f"{r_r / 1e3:.1f}"])
    print(fmt_table(["d", "s cached", "predicted", "s recompute", "c cached kB", "c recompute kB", "resid cached kB",
                     "resid recompute kB"], rows))
    L_max = depths[-1]
    print(f"\ntime per step and peak memory at L = {L_max}, batch {batch}")
    rows = []
    for d in dims:
        tc, tr = times[(d, L_max)]
        rows.append([d, f"{tc:.2f}", f"{tr:.2f}", f"{tr / tc:.2f}", f"{peaks[('cached', d, L_max, batch)] / 2**20:.2f}",
                     f"{peaks[('recompute', d, L_max, batch)] / 2**20:.2f}",
                     f"{min(ratios[(d, L)] for L in depths):.2f}-{max(ratios[(d, L)] for L in depths):.2f}"])
    print(fmt_table(["d", "cached ms", "recompute ms", "ratio", "cached MiB", "recompute MiB", "ratio over L"], rows))
    print("\ngradient difference recompute vs cached (max |g_r - g_c| / max |g_c| over the keys) and round-trip error")
    print(fmt_table(["d", "L", "round trip (trained)", "grad diff (trained)", "round trip (random 0.3)",
                     "grad diff (random 0.3)"], [[d, L, f"{a:.1e}", _fmt(b), f"{c:.1e}", _fmt(e)]
                                                 for d, L, a, b, c, e in gaps]))
    worst_trained = max(float(g[3]) if not isinstance(g[3], str) else np.inf for g in gaps)
    mem_saved = 1 - peaks[("recompute", dims[-1], L_max, batch)] / peaks[("cached", dims[-1], L_max, batch)]
    mean_ratio = float(np.median(list(ratios.values())))
    print(f"\nconclusion: at L = {L_max}, d = {dims[-1]}, batch {batch} recomputation saves "
          f"{100 * mem_saved:.0f}% of the peak memory for {mean_ratio:.2f}x the time (median over the sizes); the "
          f"recomputed gradients of the trained flows agree to {worst_trained:.0e} (relative), those of badly "
          f"conditioned ones (random 0.3) need not.  It pays where memory is the limit and the flow is well "
          f"conditioned: NormalizingFlow(RecomputeSequential(layers), base).")

    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed: skipping the plot (pip install 'npflows[plot]')")
        else:
            os.makedirs(args.out, exist_ok=True)
            path = os.path.join(args.out, "memory_depth.png")
            plot(path, depths, dims, batch, peaks, ratios)
            print(f"wrote {path}")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"total time {time.perf_counter() - t_start:.1f} s; load average at end {load}")
    return dict(fits=fits, times=times, gaps=gaps, peaks=peaks)


def _fmt(v):
    return v if isinstance(v, str) else f"{v:.1e}"


if __name__ == "__main__":
    main()
