"""The npflows demo: RealNVP fitted by maximum likelihood to 2-D toy densities.

For each dataset it trains
``NormalizingFlow(realnvp(2, n_layers=8, hidden=(64, 64), scale="tanh"), StandardNormal(2))`` (8 affine
couplings, conditioners 1 -> 64 -> 64 -> 2, log-scales bounded by 2 tanh) with Adam through ``npflows.fit``
(cosine learning-rate decay; the recipes are in ``RECIPES``) on 200,000 points, with early stopping on a
5,000-point validation split, then prints the mean log-likelihood (nats, in the data's own coordinates) on the
training points and on 10,000 held-out test points, next to the same mean under the exact density
(the limit no model can beat in expectation).  It writes into ``--out`` (default ``out/``):

* ``<dataset>.png``: data, model samples, learned density and true density;
* ``<dataset>_history.png``: the training curve;
* ``<dataset>_realnvp.npz``: the trained model, its parameters and the configuration (``npflows.save``, no pickle;
  ``flow, params, config = npflows.load(path)``).

Every random draw comes from an explicit ``numpy.random.default_rng([seed, dataset id, purpose])``.
matplotlib is optional: without it the plots are skipped with a message.

    python scripts/demo_2d.py                 # the default run: a few minutes on 2 CPU cores
    python scripts/demo_2d.py --quick         # 200 steps per dataset: a smoke test
    python scripts/demo_2d.py --datasets two_moons --seed 1 --out out/seed1
"""
import argparse
import os
import sys
import time

# One BLAS thread unless the caller says otherwise (set before NumPy loads BLAS).  The matrices here are
# tiny (512 x 64 x 64), so threads gain little, and on a busy machine OpenBLAS threads that wait for a core
# are ruinous: measured on 2 cores shared with another job, 6-28 ms per step with one thread, 290-410 ms
# with two.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows  # noqa: E402

N_VAL, N_TEST = 5_000, 10_000
# Per dataset: data options, the training recipe of the default run (cosine decay, no warmup) and the
# plotted square (None: fitted to the data).
RECIPES = {
    "two_moons": dict(data_kw={"noise": 0.1}, steps=4000, batch=512, lr=2e-3, box=None),
    "checkerboard": dict(data_kw={}, steps=8000, batch=512, lr=2e-3, box=(-2.5, 2.5)),
    "eight_gaussians": dict(data_kw={}, steps=4000, batch=512, lr=2e-3, box=(-3.0, 3.0)),
}
DEFAULT_DATASETS = ("two_moons", "checkerboard", "eight_gaussians")
# Stream ids for default_rng([seed, dataset id, purpose]): adding a purpose never shifts the others.
TRAIN_DATA, TEST_DATA, SPLIT, INIT, MINIBATCH, SAMPLES = range(6)


# ----------------------------------------------------------------------------- exact log-densities
def checkerboard_log_density(x):
    """``-log 8`` on the 8 dark squares of :func:`npflows.data.checkerboard`, ``-inf`` elsewhere.

    A unit square ``[i, i+1) x [j, j+1)`` inside ``[-2, 2)^2`` is dark exactly when ``i + j`` is even.
    """
    inside = np.all((x >= -2.0) & (x < 2.0), axis=1)
    dark = (np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2 == 0
    return np.where(inside & dark, -np.log(8.0), -np.inf)


def eight_gaussians_log_density(x, radius=2.0, std=0.2):
    """Log-density of :func:`npflows.data.eight_gaussians`: an equal mixture of 8 isotropic normals."""
    k = np.arange(8)
    centres = radius * np.stack([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)], axis=1)
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    return logsumexp(-0.5 * d2 / std ** 2, axis=1) - np.log(8.0) - np.log(2 * np.pi * std ** 2)


TRUE_LOG_DENSITY = {
    "two_moons": lambda x: npflows.data.two_moons_log_density(x, noise=0.1),
    "checkerboard": checkerboard_log_density,
    "eight_gaussians": eight_gaussians_log_density,
}
# For pictures only: 401 quadrature nodes (spacing 0.008, far below the noise 0.1) instead of 4001, so the
# 200 x 200 grid takes a second rather than half a minute.
PLOT_LOG_DENSITY = {**TRUE_LOG_DENSITY,
                    "two_moons": lambda x: npflows.data.two_moons_log_density(x, noise=0.1, n_quad=401)}


# ----------------------------------------------------------------------------- model
def mean_log_prob(flow, params, x):
    """Mean log-density of ``x`` in nats (``NormalizingFlow.log_prob`` already works in cache-sized chunks)."""
    return float(flow.log_prob(params, x).mean())


def run(name, ds_id, args, have_plots):
    recipe = RECIPES[name]
    steps = 200 if args.quick else (args.steps or recipe["steps"])
    batch, lr = args.batch or recipe["batch"], args.lr or recipe["lr"]
    rng = lambda purpose: np.random.default_rng([args.seed, ds_id, purpose])  # noqa: E731

    x = npflows.data.load(name, args.n_train + N_VAL, rng(TRAIN_DATA), **recipe["data_kw"])
    x_test = npflows.data.load(name, N_TEST, rng(TEST_DATA), **recipe["data_kw"])
    x_train, x_val = npflows.train.split_train_val(x, N_VAL / x.shape[0], rng(SPLIT))

    arch = dict(n_layers=8, hidden=[64, 64], activation="relu", scale=args.scale, scale_bound=2.0, mask="half")
    flow = npflows.NormalizingFlow(npflows.realnvp(2, **{**arch, "hidden": tuple(arch["hidden"])}),
                                   npflows.StandardNormal(2))
    params = flow.init(rng(INIT))
    if args.zero_biases:                                 # ablation: MLP.init before it spread the biases
        params = {k: np.zeros_like(v) if ".net.b" in k else v for k, v in params.items()}

    print(f"\n== {name}: {x_train.shape[0]} train / {x_val.shape[0]} val / {x_test.shape[0]} test points; "
          f"RealNVP {arch['n_layers']} couplings, MLP 1-{'-'.join(map(str, arch['hidden']))}-2, "
          f"{sum(v.size for v in params.values())} parameters; {steps} steps, batch {batch}, lr {lr:g} cosine",
          flush=True)
    t0 = time.perf_counter()
    params, history = npflows.fit(flow.loss_and_grad, params, x_train, rng=rng(MINIBATCH), steps=steps,
                                  batch_size=batch, lr=lr, schedule="cosine", clip_norm=args.clip_norm,
                                  val_loss=lambda p: -flow.log_prob(p, x_val).mean(),
                                  eval_every=min(100, steps), patience=args.patience)
    seconds = time.perf_counter() - t0

    train_ll, test_ll = mean_log_prob(flow, params, x_train), mean_log_prob(flow, params, x_test)
    true_lp = TRUE_LOG_DENSITY.get(name)
    limit = float(true_lp(x_test).mean()) if true_lp else None
    lim_txt = f"   (exact density on the same test points: {limit:.4f})" if limit is not None else ""
    print(f"{name}: train LL {train_ll:.4f}   test LL {test_ll:.4f} nats{lim_txt}   [{seconds:.1f} s]")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{name}_realnvp.npz")
    config = {"model": "NormalizingFlow", "bijector": {"builder": "npflows.realnvp", "dim": 2, **arch},
              "base": {"name": "StandardNormal", "dim": 2}, "zero_biases": args.zero_biases,
              "data": {"name": name, **recipe["data_kw"], "n_train": x_train.shape[0], "n_val": x_val.shape[0],
                       "n_test": N_TEST, "seed": args.seed},
              "train": {"steps": steps, "stopped_at": history["stopped_at"], "batch": batch, "lr": lr,
                        "schedule": "cosine", "clip_norm": args.clip_norm, "patience": args.patience},
              "results": {"train_ll": train_ll, "test_ll": test_ll, "limit": limit}}
    npflows.save(path, flow, params, config)
    loaded_flow, loaded, _ = npflows.load(path)          # the saved file rebuilds the model exactly
    assert np.array_equal(loaded_flow.log_prob(loaded, x_test[:100]), flow.log_prob(params, x_test[:100]))
    written = [path]

    if have_plots:
        from npflows.plotting import plot_density_and_samples, plot_history
        samples = flow.sample(params, 5000, rng(SAMPLES))
        title = f"{name}: RealNVP, test LL {test_ll:.3f} nats" + (f" (limit {limit:.3f})" if limit is not None else "")
        written.append(os.path.join(args.out, f"{name}.png"))
        plot_density_and_samples(written[-1], x_test, samples, lambda g: flow.log_prob(params, g),
                                 PLOT_LOG_DENSITY.get(name), title=title, xlim=recipe["box"], ylim=recipe["box"])
        written.append(os.path.join(args.out, f"{name}_history.png"))
        val_limit = -float(PLOT_LOG_DENSITY[name](x_val).mean()) if true_lp else None
        plot_history(written[-1], history, title=f"{name}: RealNVP training", limit=val_limit)
    print("wrote " + ", ".join(written))
    return dict(dataset=name, steps=history["stopped_at"], train=train_ll, test=test_ll, limit=limit,
                seconds=seconds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--datasets", help="toy datasets to train on, in order", nargs="+", default=list(DEFAULT_DATASETS), choices=npflows.data.DATASETS)
    p.add_argument("--steps", type=int, help="Adam steps (default: per dataset, see RECIPES)")
    p.add_argument("--batch", type=int, help="batch size (default: per dataset)")
    p.add_argument("--lr", type=float, help="peak learning rate of the cosine schedule (default: per dataset)")
    p.add_argument("--seed", help="seed of every random draw (data, init, minibatches, samples)", type=int, default=0)
    p.add_argument("--n-train", type=int, default=200_000, help="training points (plus 5,000 for validation)")
    p.add_argument("--quick", action="store_true", help="200 steps per dataset: a smoke test")
    p.add_argument("--out", default="out", help="directory for PNGs and saved parameters")
    p.add_argument("--scale", default="tanh", choices=["exp", "tanh", "sigmoid"], help="coupling log-scale")
    p.add_argument("--zero-biases", action="store_true",
                   help="ablation: zero the conditioners' biases that MLP.init spreads over U(+-1/sqrt(fan_in))")
    p.add_argument("--clip-norm", type=float, default=None, help="gradient-norm clipping")
    p.add_argument("--patience", type=int, default=20, help="early stopping: evaluations (100 steps each)")
    args = p.parse_args(argv)
    announce_quick(args)

    try:
        import matplotlib  # noqa: F401
        have_plots = True
    except ImportError:
        have_plots = False
        print("matplotlib is not installed: skipping the plots (pip install 'npflows[plot]')")

    t0 = time.perf_counter()
    rows = [run(name, npflows.data.DATASETS.index(name), args, have_plots) for name in args.datasets]

    print(f"\n{'dataset':<16}{'steps':>7}{'train LL':>10}{'test LL':>10}{'limit':>10}{'train s':>9}")
    for r in rows:
        lim = f"{r['limit']:10.4f}" if r["limit"] is not None else f"{'-':>10}"
        print(f"{r['dataset']:<16}{r['steps']:>7}{r['train']:10.4f}{r['test']:10.4f}{lim}{r['seconds']:9.1f}")
    print("LL: mean log-likelihood in nats per point; limit: the exact density's mean on the same test points;")
    print(f"train s: seconds in fit.  Total {time.perf_counter() - t0:.0f} s with evaluation and plots.")


if __name__ == "__main__":
    main()
