"""A continuous normalizing flow fitted by maximum likelihood to two-moons (noise 0.1) and eight Gaussians.

Trains ``NormalizingFlow(CNF(2, hidden, "tanh", t in [0, 1]), StandardNormal(2))`` (Chen et al. 2018,
arXiv:1806.07366; Grathwohl et al. 2019, FFJORD, arXiv:1810.01367): the vector field is an MLP on [z, t], the
log-density comes from integrating the exact trace (D = 2: two tangent passes per evaluation) with
``solve_ivp`` (RK45, rtol = atol = ``--tol``, 1e-5 by default), and the gradient from the adjoint method.  Adam
with a cosine schedule, batch 512 drawn with replacement from the training set.  Every ``--log-every`` steps it
prints the mean training loss, steps per second and the mean NFE of the forward and adjoint solves.

At the end: the mean log-likelihood (nats) of ``--n-test`` (10,000) held-out points in data coordinates, at the
training tolerance and again at rtol = atol = 1e-8 (the model's density solved accurately), next to the exact
density's mean on the same points (the limit: ``npflows.data.two_moons_log_density``; for eight Gaussians the
mixture's density).  Writes into ``--out`` (default ``out/``):

* ``<data>_cnf.png``: data, model samples, learned and true density (if matplotlib is installed);
* ``<data>_cnf_trajectories.png``: paths of a few base points from t0 (base) to t1 (data) over the density;
* ``<data>_cnf.npz``: the model, its parameters and configuration (``npflows.save``, no pickle).

Every random draw comes from ``numpy.random.default_rng([seed, dataset, purpose])``.  BLAS is limited to one
thread unless ``OPENBLAS_NUM_THREADS`` etc. are set.

Measured (seed 0, the defaults: MLP 64-64 tanh, batch 512, lr 5e-3 cosine, RK45 at 1e-5; one BLAS thread on a
shared 2-core machine under a load of 2-4, so the times are noisy; 10,000 test points):

    ===============  =====  ========  ==========  =====  ========  =================
    dataset          steps  test LL   exact mean  gap    training  NFE fwd / adjoint
    ===============  =====  ========  ==========  =====  ========  =================
    two_moons        1200   -1.0121   -0.9994     0.013  248 s     83 / 55
    eight_gaussians  1500   -1.7270   -1.7195     0.008  232 s     58 / 32
    two_moons [H]    1200   -1.0182   -0.9994     0.019  159 s     81 / 65
    ===============  =====  ========  ==========  =====  ========  =================

[H]: ``--trace hutchinson`` (FFJORD's estimator, Rademacher probe, a fresh probe per step, fixed within the
step's forward and adjoint solves): one tangent pass per evaluation instead of D = 2, so each evaluation is
cheaper; the noise of the estimate costs 0.006 nats here.  The test LL is always computed with the exact trace.
(NFE: mean over the last 50 steps; the test LL is the same to 4 decimals when the trained model's density is
solved at rtol = atol = 1e-8.)

    python scripts/demo_cnf.py                       # both datasets (several minutes each)
    python scripts/demo_cnf.py --data two_moons
    python scripts/demo_cnf.py --data two_moons --trace hutchinson
    python scripts/demo_cnf.py --quick               # 20 steps, 1,000 test points: a smoke test
"""
import argparse
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick  # noqa: E402
import npflows  # noqa: E402
from demo_2d import PLOT_LOG_DENSITY, TRUE_LOG_DENSITY, mean_log_prob  # noqa: E402

DATASETS = {"two_moons": 0, "eight_gaussians": 1}
TRAIN_DATA, TEST_DATA, INIT, MINIBATCH, SAMPLES, PATHS, PROBES = range(7)
N_TRAIN = 50_000
# per dataset: steps and peak learning rate (eight Gaussians' separated modes need a longer schedule)
RECIPES = {"two_moons": dict(steps=1200, lr=5e-3), "eight_gaussians": dict(steps=1500, lr=5e-3)}


def train(flow, params, x_train, steps, batch, lr, rng, log_every, out=sys.stdout, probe_rng=None):
    """Adam on the negative mean log-likelihood through the adjoint; prints loss, steps/s and NFE.

    With a Hutchinson CNF, ``probe_rng`` draws a fresh probe for every step (FFJORD): the probe is fixed
    within a step's forward and adjoint solves, so the step's gradient is the exact gradient of an unbiased
    estimate of the loss.  (Without it, the CNF's ``probe_seed`` would give the same probe every step, and
    training would fit that one probe's estimate.)"""
    b, base = flow.bijector, flow.base
    state = npflows.adam_init(params)
    hist = {"step": [], "loss": [], "nfe_forward": [], "nfe_adjoint": []}
    run = nfe_f = nfe_b = n = 0
    t0 = t_start = time.perf_counter()
    for step in range(steps):
        x = x_train[rng.integers(0, x_train.shape[0], batch)]
        pb, pd = flow.split(params)
        z, logdet, cache = b.forward(pb, x, rng=probe_rng)
        loss = -float((base.log_prob(pd, z) + logdet).mean())
        w = np.full(batch, -1.0 / batch)
        dz, gd = base.log_prob_backward(pd, z, w)
        _, gb, stats = b.backward_with_stats(pb, dz, w, cache)
        if not np.isfinite(loss):
            raise FloatingPointError(f"demo_cnf: the loss became {loss} at step {step}")
        lr_t = 0.5 * lr * (1.0 + np.cos(np.pi * step / steps))
        params, state = npflows.adam(params, flow._merge(gb, gd), state, lr=lr_t, clip_norm=10.0)
        run, nfe_f, nfe_b, n = run + loss, nfe_f + cache["nfe"], nfe_b + stats["nfe"], n + 1
        if (step + 1) % log_every == 0 or step == steps - 1:
            rate = n / (time.perf_counter() - t0)
            print(f"step {step + 1:>5}/{steps}  loss {run / n:.4f}  {rate:5.2f} steps/s  NFE forward {nfe_f / n:5.1f}"
                  f"  adjoint {nfe_b / n:5.1f}", file=out, flush=True)
            for k, v in (("step", step + 1), ("loss", run / n), ("nfe_forward", nfe_f / n), ("nfe_adjoint", nfe_b / n)):
                hist[k].append(v)
            run = nfe_f = nfe_b = n = 0
            t0 = time.perf_counter()
    return params, hist, time.perf_counter() - t_start


def plot_trajectories(path, flow, params, data, rng, title, n_paths=12, n_times=41):
    """Paths of ``n_paths`` base samples from t0 (circles) to t1 (crosses) over the data."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    b = flow.bijector
    pb, pd = flow.split(params)
    z0 = flow.base.sample(pd, n_paths, rng, np.float64)
    paths = b.trajectory(pb, z0, np.linspace(b.t0, b.t1, n_times))
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    ax.scatter(data[:3000, 0], data[:3000, 1], s=2, c="0.8", label="data")
    for i in range(n_paths):
        ax.plot(paths[:, i, 0], paths[:, i, 1], lw=1)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], marker="o", s=18, c="k", label="t0 (base sample)")
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], marker="x", s=24, c="tab:red", label="t1 (data space)")
    ax.set_aspect("equal")
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(name, args, have_plots):
    rng = lambda purpose: np.random.default_rng([args.seed, DATASETS[name], purpose])   # noqa: E731
    recipe = RECIPES[name]
    steps = args.steps or recipe["steps"]
    lr = args.lr or recipe["lr"]
    n_train = 5000 if args.quick else N_TRAIN
    x_train = npflows.data.load(name, n_train, rng(TRAIN_DATA))
    x_test = npflows.data.load(name, args.n_test, rng(TEST_DATA))
    def make_flow(tol, trace="exact"):
        cnf = npflows.CNF(2, hidden=tuple(args.hidden), activation="tanh", rtol=tol, atol=tol, trace=trace,
                          probe=args.probe)
        return npflows.NormalizingFlow(cnf, npflows.StandardNormal(2))

    train_flow = make_flow(args.tol, args.trace)
    flow = make_flow(args.tol)          # evaluation, samples and plots: the exact trace
    params = flow.init(rng(INIT))
    trace_txt = "exact trace" if args.trace == "exact" else f"Hutchinson trace ({args.probe} probe, fresh per step)"
    print(f"\n{name}: {n_train} train / {args.n_test} test points; CNF MLP 3-{'-'.join(map(str, args.hidden))}-2 "
          f"tanh on [z, t], t in [0, 1], {trace_txt}, RK45 rtol = atol = {args.tol:g}, "
          f"{sum(v.size for v in params.values())} parameters; {steps} steps, batch {args.batch}, lr {lr:g} cosine",
          flush=True)
    params, hist, seconds = train(train_flow, params, x_train, steps, args.batch, lr, rng(MINIBATCH), args.log_every,
                                  probe_rng=rng(PROBES) if args.trace == "hutchinson" else None)
    t_eval = time.perf_counter()
    test_ll = mean_log_prob(flow, params, x_test)
    eval_s = time.perf_counter() - t_eval
    tight = make_flow(1e-8)
    test_ll_tight = mean_log_prob(tight, params, x_test)
    limit = float(TRUE_LOG_DENSITY[name](x_test).mean())
    print(f"{name} CNF: test LL {test_ll:.4f} nats at rtol {args.tol:g} ({test_ll_tight:.4f} at rtol 1e-8); exact "
          f"density on the same {args.n_test} points {limit:.4f} (gap {limit - test_ll:.4f}); training {seconds:.0f} s "
          f"({steps / seconds:.2f} steps/s), test evaluation {eval_s:.1f} s; mean NFE over the last "
          f"{args.log_every} steps: forward {hist['nfe_forward'][-1]:.1f}, adjoint {hist['nfe_adjoint'][-1]:.1f}",
          flush=True)

    os.makedirs(args.out, exist_ok=True)
    tag = "" if args.trace == "exact" else "_hutchinson"
    path = os.path.join(args.out, f"{name}_cnf{tag}.npz")
    config = {"model": "NormalizingFlow", "bijector": {"type": "CNF", "dim": 2, "hidden": list(args.hidden),
                                                       "activation": "tanh", "t0": 0.0, "t1": 1.0,
                                                       "method": "RK45", "rtol": args.tol, "atol": args.tol,
                                                       "trained_with_trace": args.trace, "probe": args.probe},
              "base": {"name": "StandardNormal", "dim": 2},
              "data": {"name": name, "n_train": n_train, "n_test": args.n_test, "seed": args.seed},
              "train": {"steps": steps, "batch": args.batch, "lr": lr, "schedule": "cosine", "seconds": seconds},
              "results": {"test_ll": test_ll, "test_ll_rtol_1e-8": test_ll_tight, "limit": limit}}
    npflows.save(path, flow, params, config)
    written = [path]
    if have_plots:
        from npflows.plotting import plot_density_and_samples
        samples = flow.sample(params, 2000 if args.quick else 5000, rng(SAMPLES))
        written.append(os.path.join(args.out, f"{name}_cnf{tag}.png"))
        plot_density_and_samples(written[-1], x_test, samples, lambda g: flow.log_prob(params, g),
                                 PLOT_LOG_DENSITY[name], n_grid=40 if args.quick else 120,
                                 title=f"{name}: CNF, test LL {test_ll:.3f} nats (limit {limit:.3f})")
        written.append(os.path.join(args.out, f"{name}_cnf{tag}_trajectories.png"))
        plot_trajectories(written[-1], flow, params, x_test, rng(PATHS),
                          f"{name}: CNF trajectories, base (t0 = 0) to data (t1 = 1)")
    print("wrote " + ", ".join(written))
    return dict(dataset=name, steps=steps, test=test_ll, test_tight=test_ll_tight, limit=limit, seconds=seconds,
                nfe_forward=hist["nfe_forward"][-1], nfe_adjoint=hist["nfe_adjoint"][-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data", help="toy datasets to train on", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--hidden", help="hidden widths of the ODE field's MLP", type=int, nargs="+", default=[64, 64])
    p.add_argument("--steps", type=int, help="Adam steps (default: the dataset's recipe)")
    p.add_argument("--lr", type=float, help="peak learning rate of the cosine schedule (default: the recipe)")
    p.add_argument("--batch", help="training points per Adam step", type=int, default=512)
    p.add_argument("--tol", type=float, default=1e-5, help="rtol = atol of the solves during training")
    p.add_argument("--trace", default="exact", choices=["exact", "hutchinson"],
                   help="divergence during training (FFJORD's Hutchinson estimator: a fresh probe per step); "
                        "the reported test LL always uses the exact trace")
    p.add_argument("--probe", default="rademacher", choices=["gaussian", "rademacher"],
                   help="Hutchinson's probe distribution")
    p.add_argument("--n-test", type=int, default=10_000, help="held-out points for the test log-likelihood")
    p.add_argument("--log-every", help="steps between progress lines", type=int, default=50)
    p.add_argument("--seed", help="seed of every random draw", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="20 steps, 1,000 test points: a smoke test")
    p.add_argument("--out", help="directory for the PNGs and the saved models", default="out")
    p.add_argument("--no-plots", action="store_true", help="skip the plots even if matplotlib is installed")
    args = p.parse_args(argv)
    announce_quick(args)
    if args.quick:
        args.steps, args.n_test, args.log_every, args.hidden = args.steps or 20, 1000, 10, [16, 16]
    try:
        import matplotlib  # noqa: F401
        have_plots = not args.no_plots
    except ImportError:
        have_plots = False
        print("matplotlib is not installed: skipping the plots (pip install 'npflows[plot]')")
    results = [run(name, args, have_plots) for name in args.data]
    print(f"\n{'dataset':<16}{'steps':>6}{'test LL':>9}{'@1e-8':>9}{'limit':>9}{'gap':>8}{'train s':>9}"
          f"{'NFE fwd':>9}{'NFE adj':>9}")
    for r in results:
        print(f"{r['dataset']:<16}{r['steps']:>6}{r['test']:>9.4f}{r['test_tight']:>9.4f}{r['limit']:>9.4f}"
              f"{r['limit'] - r['test']:>8.4f}{r['seconds']:>9.0f}{r['nfe_forward']:>9.1f}{r['nfe_adjoint']:>9.1f}")
    print("LL: mean log-likelihood in nats per held-out point in data coordinates; @1e-8: the same model's density "
          "solved at rtol = atol = 1e-8; limit: the exact density's mean on the same points")
    return results


if __name__ == "__main__":
    main()
