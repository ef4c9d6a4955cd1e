"""The npflows demo: RealNVP fitted by maximum likelihood to 2-D toy densities.

For each dataset it trains ``NormalizingFlow(realnvp(2, n_layers=8, hidden=(64, 64)), StandardNormal(2))``
(8 affine couplings, conditioners 1 -> 64 -> 64 -> 2) with Adam through ``npflows.fit``, early stopping on a
validation split, then prints the mean log-likelihood (nats, in the data's own coordinates) on the
training points and on 10,000 held-out test points, next to the same mean under the exact density
(the limit no model can beat in expectation).  It writes into ``--out`` (default ``out/``):

* ``<dataset>.png``: data, model samples, learned density and true density;
* ``<dataset>_history.png``: the training curve;
* ``<dataset>_realnvp.npz``: the trained parameters and the configuration (``npflows.save``, no pickle).

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

import numpy as np
from scipy.special import logsumexp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows  # noqa: E402

N_TRAIN, N_TEST, VAL_FRACTION = 50_000, 10_000, 0.1
# Per dataset: data options and the training recipe of the default run (cosine decay, no warmup).
RECIPES = {
    "two_moons": dict(data_kw={"noise": 0.1}, steps=4000, batch=256, lr=2e-3),
    "checkerboard": dict(data_kw={}, steps=8000, batch=512, lr=2e-3),
    "eight_gaussians": dict(data_kw={}, steps=4000, batch=512, lr=2e-3),
}
DEFAULT_DATASETS = ("two_moons", "checkerboard", "eight_gaussians")
# Stream ids for default_rng([seed, dataset id, purpose]): adding a purpose never shifts the others.
TRAIN_DATA, TEST_DATA, SPLIT, INIT, MINIBATCH, SAMPLES, BIASES = range(7)


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
def spread_hidden_biases(bijector, params, rng):
    """Draw the hidden-layer biases of every coupling's MLP from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    ``MLP.init`` zeroes all biases.  With a one-dimensional conditioner input (D = 2) every first-layer
    unit is then ``relu(w x1)``, so all 64 start with their kink at ``x1 = 0`` and the network can only
    represent ``a relu(x1) + b relu(-x1)`` until the biases have crawled away from zero.  Spreading them
    (PyTorch's ``nn.Linear`` default) puts the kinks across the data from the first step: on two-moons
    it is worth about 0.07 nats of test log-likelihood at this budget.  The output layer stays zero, so
    every coupling still starts as the identity.
    """
    params = dict(params)
    for i, layer in enumerate(bijector.layers):
        net = getattr(layer, "net", None)
        if net is None:
            continue
        for l in range(net.n_layers - 1):
            key, bound = f"{i}.{net.prefix}b{l}", 1.0 / np.sqrt(net.sizes[l])
            params[key] = rng.uniform(-bound, bound, params[key].shape).astype(params[key].dtype)
    return params


def mean_log_prob(flow, params, x, chunk=10_000):
    return float(np.concatenate([flow.log_prob(params, x[s:s + chunk])
                                 for s in range(0, x.shape[0], chunk)]).mean())


def run(name, ds_id, args, have_plots):
    recipe = RECIPES[name]
    steps = 200 if args.quick else (args.steps or recipe["steps"])
    batch, lr = args.batch or recipe["batch"], args.lr or recipe["lr"]
    rng = lambda purpose: np.random.default_rng([args.seed, ds_id, purpose])  # noqa: E731

    x = npflows.data.load(name, N_TRAIN, rng(TRAIN_DATA), **recipe["data_kw"])
    x_test = npflows.data.load(name, N_TEST, rng(TEST_DATA), **recipe["data_kw"])
    x_train, x_val = npflows.train.split_train_val(x, VAL_FRACTION, rng(SPLIT))

    arch = dict(n_layers=8, hidden=[64, 64], scale=args.scale)
    flow = npflows.NormalizingFlow(npflows.realnvp(2, **{**arch, "hidden": tuple(arch["hidden"])}),
                                   npflows.StandardNormal(2))
    params = flow.init(rng(INIT))
    if args.bias_init == "uniform":
        params = spread_hidden_biases(flow.bijector, params, rng(BIASES))

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
              "base": {"name": "StandardNormal", "dim": 2}, "bias_init": args.bias_init,
              "data": {"name": name, **recipe["data_kw"], "n_train": N_TRAIN, "n_test": N_TEST,
                       "val_fraction": VAL_FRACTION, "seed": args.seed},
              "train": {"steps": steps, "stopped_at": history["stopped_at"], "batch": batch, "lr": lr,
                        "schedule": "cosine", "clip_norm": args.clip_norm, "patience": args.patience},
              "results": {"train_ll": train_ll, "test_ll": test_ll, "limit": limit}}
    npflows.save(path, params, config)
    loaded, _ = npflows.load(path)                       # the saved file reproduces the model exactly
    assert np.array_equal(flow.log_prob(loaded, x_test[:100]), flow.log_prob(params, x_test[:100]))
    written = [path]

    if have_plots:
        from npflows.plotting import plot_density_and_samples, plot_history
        samples = flow.sample(params, 5000, rng(SAMPLES))
        title = f"{name}: RealNVP, test LL {test_ll:.3f} nats" + (f" (limit {limit:.3f})" if limit else "")
        lims = ((-2.5, 2.5), (-2.5, 2.5)) if name != "two_moons" else (None, None)
        written.append(os.path.join(args.out, f"{name}.png"))
        plot_density_and_samples(written[-1], x_test, samples, lambda g: flow.log_prob(params, g),
                                 PLOT_LOG_DENSITY.get(name), title=title, xlim=lims[0], ylim=lims[1])
        written.append(os.path.join(args.out, f"{name}_history.png"))
        val_limit = -float(PLOT_LOG_DENSITY[name](x_val).mean()) if true_lp else None
        plot_history(written[-1], history, title=f"{name}: RealNVP training", limit=val_limit)
    print("wrote " + ", ".join(written))
    return dict(dataset=name, steps=history["stopped_at"], train=train_ll, test=test_ll, limit=limit,
                seconds=seconds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=npflows.data.DATASETS)
    p.add_argument("--steps", type=int, help="Adam steps (default: per dataset, see RECIPES)")
    p.add_argument("--batch", type=int, help="batch size (default: per dataset)")
    p.add_argument("--lr", type=float, help="peak learning rate of the cosine schedule (default: per dataset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="200 steps per dataset: a smoke test")
    p.add_argument("--out", default="out", help="directory for PNGs and saved parameters")
    p.add_argument("--scale", default="exp", choices=["exp", "tanh", "sigmoid"], help="coupling log-scale")
    p.add_argument("--bias-init", default="uniform", choices=["uniform", "zero"],
                   help="hidden biases of the conditioners: PyTorch-style uniform, or MLP.init's zeros")
    p.add_argument("--clip-norm", type=float, default=None, help="gradient-norm clipping")
    p.add_argument("--patience", type=int, default=20, help="early stopping: evaluations (100 steps each)")
    args = p.parse_args(argv)

    try:
        import matplotlib  # noqa: F401
        have_plots = True
    except ImportError:
        have_plots = False
        print("matplotlib is not installed: skipping the plots (pip install 'npflows[plot]')")

    rows = [run(name, npflows.data.DATASETS.index(name), args, have_plots) for name in args.datasets]

    print(f"\n{'dataset':<16}{'steps':>7}{'train LL':>10}{'test LL':>10}{'limit':>10}{'seconds':>9}")
    for r in rows:
        lim = f"{r['limit']:10.4f}" if r["limit"] is not None else f"{'-':>10}"
        print(f"{r['dataset']:<16}{r['steps']:>7}{r['train']:10.4f}{r['test']:10.4f}{lim}{r['seconds']:9.1f}")
    print("LL: mean log-likelihood in nats per point; limit: the exact density's mean on the same test points")


if __name__ == "__main__":
    main()
