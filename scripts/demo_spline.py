"""A coupling neural spline flow fitted by maximum likelihood to two-moons (noise 0.1).

Trains ``NormalizingFlow(nsf(2, n_layers, n_bins, bound, hidden), StandardNormal(2))``: rational-quadratic
spline couplings (Durkan et al. 2019, arXiv:1906.04032) whose masks alternate, so in 2-D each layer transforms
one coordinate conditioned on the other and the two take turns.  ``--kind autoregressive`` uses
``autoregressive_nsf`` instead (MADE-conditioned spline layers with alternating orders, the layer zuko's NSF
uses).  Adam through ``npflows.fit`` with a cosine
schedule and early stopping on a validation split; then prints the mean log-likelihood (nats) on the training
points and on 10,000 held-out test points, next to the exact density's mean on the same test points (the
limit, ``npflows.data.two_moons_log_density``).  Writes into ``--out`` (default ``out/``):

* ``two_moons_nsf.png`` and ``two_moons_nsf_history.png`` (if matplotlib is installed);
* ``two_moons_nsf.npz``: the model, its parameters and configuration (``npflows.save``, no pickle).

Every random draw comes from ``numpy.random.default_rng([seed, purpose])``.  BLAS is limited to one thread
unless ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` are set: the GEMMs here are small
(batch 512 x 64), and on a shared machine several BLAS threads per process are many times slower than one.

Measured (seed 0, 4,000 Adam steps of batch 512, lr 1e-3 cosine, 8 bins on [-4, 4], hidden 64x64; one BLAS
thread on a shared 2-core machine; the exact density's mean on the same 10,000 test points is -1.0060):

    ===========================  ========  ==============
    model                        test LL   training time
    ===========================  ========  ==============
    5 couplings (the default)    -1.0122    99 s
    8 couplings                  -1.0120   191 s
    5 autoregressive layers      -1.0147   166 s
    ===========================  ========  ==============

The table predates the spread hidden biases of ``MLP.init``/``MADE.init`` (which change the weights drawn
after them).  Re-run of the default on a quiet machine after that change: -1.0123 in 37 s.

    python scripts/demo_spline.py               # the default run (about 2 minutes on one core)
    python scripts/demo_spline.py --quick       # 100 steps, 2,000 test points: a smoke test
"""
import argparse
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick  # noqa: E402
from demo_2d import mean_log_prob  # noqa: E402

NOISE, N_TRAIN, N_TEST, VAL_FRACTION = 0.1, 50_000, 10_000, 0.1
TRAIN_DATA, TEST_DATA, SPLIT, INIT, MINIBATCH, SAMPLES, BIASES = range(7)


def spread_hidden_biases(bijector, params, rng):
    """Hidden-layer biases of every conditioner (MLP or MADE) redrawn from U(-1/sqrt(n), 1/sqrt(n)), n the
    layer's nominal fan-in (PyTorch's default), from the demo's own random stream.  ``MLP.init`` and
    ``MADE.init`` now spread biases too (MADE on the unmasked fan-in), so this redraw only fixes which
    distribution the demo uses, from its own stream.  With a 1-D conditioner input, zero biases would start
    every first-layer unit with its kink at 0 (see scripts/demo_2d.py).  Output layers are untouched, so
    every layer still starts as the identity."""
    params = dict(params)
    for i, layer in enumerate(bijector.layers):
        net = layer.net
        for l in range(net.n_layers - 1):
            key, bound = f"{i}.{net.prefix}b{l}", 1.0 / np.sqrt(net.sizes[l])
            params[key] = rng.uniform(-bound, bound, params[key].shape).astype(params[key].dtype)
    return params


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--kind", default="coupling", choices=["coupling", "autoregressive"],
                   help="spline couplings (nsf) or MADE-conditioned autoregressive splines (autoregressive_nsf)")
    p.add_argument("--layers", type=int, default=5, help="spline layers (a 2-D coupling transforms one coordinate)")
    p.add_argument("--bins", help="rational-quadratic bins per spline", type=int, default=8)
    p.add_argument("--bound", type=float, default=4.0, help="the splines act on [-bound, bound]")
    p.add_argument("--hidden", help="hidden widths of each coupling's MLP", type=int, nargs="+", default=[64, 64])
    p.add_argument("--steps", help="Adam steps (early stopping may end sooner)", type=int, default=4000)
    p.add_argument("--batch", help="training points per Adam step", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the cosine schedule")
    p.add_argument("--patience", type=int, default=20, help="early stopping: evaluations (100 steps each)")
    p.add_argument("--seed", help="seed of every random draw", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="100 steps and 2,000 test points: a smoke test")
    p.add_argument("--out", help="directory for the PNGs and the saved model", default="out")
    p.add_argument("--no-plots", action="store_true", help="skip the plots even if matplotlib is installed")
    args = p.parse_args(argv)
    announce_quick(args)
    steps, n_test = (100, 2000) if args.quick else (args.steps, N_TEST)
    rng = lambda purpose: np.random.default_rng([args.seed, purpose])   # noqa: E731

    x = npflows.data.two_moons(N_TRAIN, rng(TRAIN_DATA), noise=NOISE)
    x_test = npflows.data.two_moons(n_test, rng(TEST_DATA), noise=NOISE)
    x_train, x_val = npflows.train.split_train_val(x, VAL_FRACTION, rng(SPLIT))
    arch = dict(n_layers=args.layers, n_bins=args.bins, bound=args.bound, hidden=list(args.hidden))
    builder = npflows.nsf if args.kind == "coupling" else npflows.autoregressive_nsf
    flow = npflows.NormalizingFlow(builder(2, **{**arch, "hidden": tuple(arch["hidden"])}), npflows.StandardNormal(2))
    params = spread_hidden_biases(flow.bijector, flow.init(rng(INIT)), rng(BIASES))
    n_par = sum(v.size for v in params.values())
    print(f"two_moons (noise {NOISE}): {x_train.shape[0]} train / {x_val.shape[0]} val / {n_test} test points; "
          f"NSF {args.layers} {args.kind} spline layers, {args.bins} bins on [-{args.bound:g}, {args.bound:g}], "
          f"{'MLP 1' if args.kind == 'coupling' else 'MADE 2'}-{'-'.join(map(str, args.hidden))}-"
          f"{(1 if args.kind == 'coupling' else 2) * (3 * args.bins - 1)}, {n_par} parameters; {steps} steps, "
          f"batch {args.batch}, lr {args.lr:g} cosine", flush=True)

    t0 = time.perf_counter()
    params, history = npflows.fit(flow.loss_and_grad, params, x_train, rng=rng(MINIBATCH), steps=steps,
                                  batch_size=args.batch, lr=args.lr, schedule="cosine",
                                  val_loss=lambda q: -flow.log_prob(q, x_val).mean(),
                                  eval_every=min(100, steps), patience=args.patience)
    seconds = time.perf_counter() - t0
    train_ll, test_ll = mean_log_prob(flow, params, x_train), mean_log_prob(flow, params, x_test)
    limit = float(npflows.data.two_moons_log_density(x_test, noise=NOISE).mean())
    print(f"\ntwo_moons NSF: train LL {train_ll:.4f}   test LL {test_ll:.4f} nats   (exact density on the same "
          f"test points: {limit:.4f}; gap {limit - test_ll:.4f})   training {seconds:.1f} s, "
          f"{history['stopped_at']} steps")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "two_moons_nsf.npz")
    config = {"model": "NormalizingFlow", "bijector": {"builder": f"npflows.{builder.__name__}", "dim": 2, **arch},
              "base": {"name": "StandardNormal", "dim": 2}, "bias_init": "uniform",
              "data": {"name": "two_moons", "noise": NOISE, "n_train": N_TRAIN, "n_test": n_test,
                       "val_fraction": VAL_FRACTION, "seed": args.seed},
              "train": {"steps": steps, "stopped_at": history["stopped_at"], "batch": args.batch, "lr": args.lr,
                        "schedule": "cosine", "patience": args.patience, "seconds": seconds},
              "results": {"train_ll": train_ll, "test_ll": test_ll, "limit": limit}}
    npflows.save(path, flow, params, config)
    loaded_flow, loaded, _ = npflows.load(path)
    assert np.array_equal(loaded_flow.log_prob(loaded, x_test[:100]), flow.log_prob(params, x_test[:100]))
    written = [path]
    try:
        import matplotlib  # noqa: F401
        have_plots = not args.no_plots
    except ImportError:
        have_plots = False
        print("matplotlib is not installed: skipping the plots (pip install 'npflows[plot]')")
    if have_plots:
        from npflows.plotting import plot_density_and_samples, plot_history
        samples = flow.sample(params, 5000, rng(SAMPLES))
        written.append(os.path.join(args.out, "two_moons_nsf.png"))
        plot_density_and_samples(written[-1], x_test, samples, lambda g: flow.log_prob(params, g),
                                 lambda g: npflows.data.two_moons_log_density(g, noise=NOISE, n_quad=401),
                                 title=f"two_moons: NSF, test LL {test_ll:.3f} nats (limit {limit:.3f})")
        written.append(os.path.join(args.out, "two_moons_nsf_history.png"))
        plot_history(written[-1], history, title="two_moons: NSF training",
                     limit=-float(npflows.data.two_moons_log_density(x_val, noise=NOISE).mean()))
    print("wrote " + ", ".join(written))
    return dict(train=train_ll, test=test_ll, limit=limit, seconds=seconds, steps=history["stopped_at"])


if __name__ == "__main__":
    main()
