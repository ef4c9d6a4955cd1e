"""Training by sampling: flows fitted by reverse KL to the four 2-D potentials of Rezende & Mohamed (2015).

For each potential U1..U4 (:mod:`npflows.targets`; U2-U4 with the envelope exp(-(z1/4)^8) that makes
them normalisable) and each flow it minimises the reverse KL

    L(params) = E_{z ~ N(0, I)} [log q(f(z)) - log p~(f(z))] = KL(q || p) - log Z

with Adam through ``npflows.fit(lambda p, rng: flow.reverse_kl_and_grad(p, target, batch, rng), ...)``,
then estimates

    KL(q || p) = E_q[log q(x) - log p~(x)] + log Z

by Monte Carlo over ``--n-eval`` fresh samples of q (printed with its standard error) and log Z by
quadrature on a grid (``npflows.targets.log_normalizer``; widening the grid changes it by < 1e-10, see
tests/test_targets.py).  The flows, all ``PushForward(bijector, StandardNormal(2))``:

* ``planar``: 32 planar layers (Rezende & Mohamed 2015, K = 32);
* ``radial``: an ElementwiseAffine layer then 32 radial layers;
* ``iaf``: 5 masked affine autoregressive layers (IAF, Kingma et al. 2016), MADE 2 -> 32 -> 32 -> 4, tanh.

It writes into ``--out`` (default ``out/reverse_kl_2d``):

* ``densities.png``: one row per potential: the target density exp(-U)/Z, then each flow's density q(x)
  on the window [-4, 4]^2 (q by the flow's inverse: numerical for planar, closed form for radial,
  sequential for the IAF), titled with the KL estimate;
* ``samples.png``: a histogram of 100,000 samples of each flow, the same layout;
* ``<flow>_<potential>.npz``: the trained parameters and configuration (``npflows.save``).

Every random draw comes from ``numpy.random.default_rng([seed, potential id, flow id, purpose])``.

Measured (default run, seed 0, 10,000 Adam steps of 512 base samples each, cosine decay; KL over 100,000
samples of q, +- one standard error; training seconds on a shared 2-core machine, single-threaded BLAS):

    flow     U1               U2               U3               U4               train s per fit
    planar   0.0023 +- 0.0002  0.0008 +- 0.0002  0.0173 +- 0.0006  0.0141 +- 0.0005   49-65
    radial   0.0126 +- 0.0006  0.0602 +- 0.0009  0.1237 +- 0.0014  0.2542 +- 0.0011   85-130
    iaf      0.0245 +- 0.0007  0.0015 +- 0.0002  0.0176 +- 0.0005  0.0091 +- 0.0005   48-54

Planar (32 layers) and the IAF reach KL < 0.10 nats on all four; 32 radial layers do on U1 and U2 but
not on U3 (0.12) and U4 (0.25): radial maps only contract or expand around points, and cannot bend the
mass onto the branches of U3 and U4 (Rezende & Mohamed's figure 3 shows the same ordering).

    python scripts/reverse_kl_2d.py                       # the default run: ~10 minutes on 2 cores
    python scripts/reverse_kl_2d.py --quick               # 300 steps each: a smoke test
    python scripts/reverse_kl_2d.py --flows planar --potentials U3 --steps 20000
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick  # noqa: E402
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows  # noqa: E402
from npflows.targets import POTENTIALS, Potential, log_normalizer  # noqa: E402

FLOWS = ("planar", "radial", "iaf")
# Per flow: the training recipe of the default run (Adam, cosine decay, batch of base samples).
RECIPES = {
    "planar": dict(steps=10000, batch=512, lr=1e-2),
    "radial": dict(steps=10000, batch=512, lr=1e-2),
    "iaf": dict(steps=10000, batch=512, lr=3e-3),
}
INIT, TRAIN, EVAL, PLOT = range(4)
WINDOW = (-4.0, 4.0)


def build(kind, rng):
    """The bijector of flow ``kind`` (see the module docstring) and its configuration for ``save``."""
    if kind == "planar":
        return npflows.Sequential([npflows.Planar(2) for _ in range(32)]), {"layers": "32 x Planar(2)"}
    if kind == "radial":
        return (npflows.Sequential([npflows.ElementwiseAffine(2)] + [npflows.Radial(2) for _ in range(32)]),
                {"layers": "ElementwiseAffine(2) + 32 x Radial(2)"})
    if kind == "iaf":
        return (npflows.maf(2, n_layers=5, hidden=(32, 32), activation="tanh", rng=rng),
                {"layers": "maf(2, n_layers=5, hidden=(32, 32), activation='tanh')"})
    raise ValueError(f"unknown flow {kind!r}; choose from {FLOWS}")


def kl_estimate(flow, params, target, log_z, n, rng, chunk=20000):
    """``(KL, standard error)`` of :math:`E_q[\\log q - \\log\\tilde p] + \\log Z` over ``n`` samples."""
    diffs, xs = [], []
    for s in range(0, n, chunk):
        x, logq = flow.sample_and_log_prob(params, min(chunk, n - s), rng)
        diffs.append(logq - target(x)[0])
        xs.append(x)
    d = np.concatenate(diffs)
    return float(d.mean() + log_z), float(d.std(ddof=1) / np.sqrt(d.size)), np.concatenate(xs)


def run(kind, name, args, pid, fid, out):
    recipe = dict(RECIPES[kind])
    if args.steps:
        recipe["steps"] = args.steps
    if args.quick:
        recipe["steps"] = 300
    target = Potential(name)
    log_z = log_normalizer(target)
    bij, config = build(kind, np.random.default_rng([args.seed, pid, fid, INIT]))
    flow = npflows.PushForward(bij, npflows.StandardNormal(2))
    params = flow.init(np.random.default_rng([args.seed, pid, fid, INIT]))
    n = recipe["batch"]
    t0 = time.perf_counter()
    params, _ = npflows.fit(lambda p, rng: flow.reverse_kl_and_grad(p, target, n, rng), params,
                            rng=np.random.default_rng([args.seed, pid, fid, TRAIN]), steps=recipe["steps"],
                            lr=recipe["lr"], schedule="cosine", eval_every=max(1, recipe["steps"] // 5),
                            progress=args.verbose)
    train_time = time.perf_counter() - t0
    kl, se, samples = kl_estimate(flow, params, target, log_z, args.n_eval,
                                  np.random.default_rng([args.seed, pid, fid, EVAL]))
    npflows.save(os.path.join(out, f"{kind}_{name}.npz"), flow, params,
                 {**config, "flow": kind, "potential": name, "base": "StandardNormal(2)", **recipe,
                  "seed": args.seed, "kl": kl, "kl_se": se, "log_z": log_z})
    return dict(kind=kind, name=name, kl=kl, se=se, log_z=log_z, time=train_time, flow=flow, params=params,
                samples=samples, target=target, **recipe)


def _grid_figure(rows, cols, size):
    """A ``rows x cols`` grid of axes on an Agg canvas (no pyplot: global matplotlib state untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(size * cols, size * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def plot(results, names, kinds, out):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed (pip install 'npflows[plot]'): plots skipped")
        return
    from npflows.plotting import density_grid
    by = {(r["kind"], r["name"]): r for r in results}
    for what in ("densities", "samples"):
        fig, axes = _grid_figure(len(names), len(kinds) + 1, 2.6)
        for i, name in enumerate(names):
            target = Potential(name)
            log_z = log_normalizer(target)
            xx, yy, lp = density_grid(lambda x: target(x)[0] - log_z, WINDOW, WINDOW, n=200)
            axes[i, 0].pcolormesh(xx, yy, np.exp(lp), shading="auto", cmap="viridis", rasterized=True)
            axes[i, 0].set_title(f"{name}: target" + (" (with envelope)" if target.envelope else ""), fontsize=9)
            for j, kind in enumerate(kinds, start=1):
                r, ax = by[(kind, name)], axes[i, j]
                if what == "densities":
                    xx, yy, lq = density_grid(lambda x: r["flow"].log_prob(r["params"], x), WINDOW, WINDOW, n=200)
                    ax.pcolormesh(xx, yy, np.exp(lq), shading="auto", cmap="viridis", rasterized=True)
                else:
                    ax.hist2d(r["samples"][:, 0], r["samples"][:, 1], bins=200, range=[WINDOW, WINDOW],
                              cmap="viridis", rasterized=True)
                ax.set_title(f"{kind}: KL {r['kl']:.3f}", fontsize=9)
        for ax in axes.ravel():
            ax.set_xlim(*WINDOW)
            ax.set_ylim(*WINDOW)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("reverse KL: target and learned " + ("densities" if what == "densities" else
                                                            "samples (2-D histogram)"))
        path = os.path.join(out, f"{what}.png")
        fig.savefig(path, dpi=100)
        print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    ap.add_argument("--potentials", help="target energies of Rezende & Mohamed (2015), table 1", nargs="+", default=list(POTENTIALS), choices=POTENTIALS)
    ap.add_argument("--flows", help="flows to fit to each target", nargs="+", default=list(FLOWS), choices=FLOWS)
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's number of Adam steps")
    ap.add_argument("--n-eval", type=int, default=100_000, help="samples of q for the KL estimate")
    ap.add_argument("--seed", help="seed of every random draw", type=int, default=0)
    ap.add_argument("--out", help="directory for the PNGs and the saved models", default=os.path.join("out", "reverse_kl_2d"))
    ap.add_argument("--quick", action="store_true", help="300 steps per fit: a smoke test")
    ap.add_argument("--no-plots", help="skip the PNGs even when matplotlib is installed", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="print fit's progress lines")
    args = ap.parse_args(argv)
    announce_quick(args)
    os.makedirs(args.out, exist_ok=True)
    results = []
    print(f"{'flow':<7} {'target':<6} {'steps':>6} {'batch':>5} {'lr':>7} {'log Z':>8} "
          f"{'KL(q||p) nats':>17} {'train s':>8}")
    for fid, kind in enumerate(FLOWS):
        if kind not in args.flows:
            continue
        for pid, name in enumerate(POTENTIALS):
            if name not in args.potentials:
                continue
            r = run(kind, name, args, pid, fid, args.out)
            results.append(r)
            print(f"{kind:<7} {name:<6} {r['steps']:>6} {r['batch']:>5} {r['lr']:>7.0e} {r['log_z']:>8.4f} "
                  f"{r['kl']:>9.4f} +- {r['se']:.4f} {r['time']:>8.1f}", flush=True)
    print(f"KL by Monte Carlo over {args.n_eval} samples of q (+- one standard error); log Z by quadrature.")
    if not args.no_plots:
        kinds = [k for k in FLOWS if k in args.flows]
        names = [n for n in POTENTIALS if n in args.potentials]
        plot(results, names, kinds, args.out)
    return results


if __name__ == "__main__":
    main()
