"""RBIG (rotation-based iterative Gaussianization) fitted without gradients to two-moons and to the 8x8 digits.

RBIG (Laparra, Camps-Valls & Malo 2011, arXiv:1602.00229) maps data to a standard normal by alternating a
marginal Gaussianization of every coordinate (``npflows.MarginalGaussianization``: a Gaussian kernel-mixture CDF
per coordinate, then the inverse normal CDF) with a rotation (``npflows.Linear`` with an orthogonal weight).
``npflows.fit_rbig`` fits one pair at a time to the data transformed by the pairs before it, with no gradient
step, and stops when the validation log-likelihood has not improved by ``--tol`` for ``--patience`` layers,
keeping the layers up to its best value.  The result is ``NormalizingFlow(RBIG(...), StandardNormal(D))``: an
exact log-density, samples by the numerical inverse, ``npflows.save``/``load`` like any flow.

* **two_moons**: the data of ``scripts/demo_2d.py`` (noise 0.1, 200,000 training points, a 5,000-point validation
  split, the same 10,000 test points: the same ``default_rng([seed, dataset id, purpose])`` streams), random
  rotations, 32 kernels per coordinate.  Reports the mean test log-likelihood in nats beside the exact density's
  (the limit, about -1.00 on these points), against the target of -1.10.
* **digits**: the split and preprocessing of ``scripts/train_digits.py`` (1257 / 180 / 360 images; y = (x + u)/17,
  z = logit(0.05 + 0.9 y)), the model fitted to ``--copies`` dequantized copies of the training images in logit
  space (PCA rotations, 16 kernels), stopped on one dequantized copy of the validation images; the test score
  is the dequantization bound with 10 draws of u per image (``npflows.dequantize.bits_per_dim``), in nats per
  image and in bits/dim, beside the baselines of ``scripts/digits_baselines.py`` (per-pixel categorical 2.43,
  logit Gaussian 2.46).

Writes into ``--out`` (default ``out/``): ``two_moons_rbig.png`` (data, samples, learned and true density),
``two_moons_rbig_layers.png`` and ``digits_rbig_layers.png`` (log-likelihood against the number of layers),
``digits_rbig_samples.png`` (64 samples at temperature 1 and 0.7 beside test images), and the fitted models
``two_moons_rbig.npz``, ``digits_rbig.npz`` (``flow, params, config = npflows.load(path)``).  matplotlib is
optional: without it the plots are skipped with a message.  Progress: one line per fitted layer.

Measured (seed 0, the defaults; one BLAS thread, on a 2-core machine shared with other engineers' jobs, load
average 4.2 at the start and 5.9 at the end; 384 s in all with evaluation and plots):

    ==========  ===============  ===============================  ===============================  =====
    data        layers (fitted)  test                             beside                           fit
    ==========  ===============  ===============================  ===============================  =====
    two_moons   35 (43)          -1.0868 nats                     exact density -0.9994; target    166 s
                                                                  -1.10: meets it
    digits      12 (20)          2.2217 +- 0.0119 bits/dim        categorical 2.43, logit          113 s
                                 (log P(x) >= -98.56 nats/image;  Gaussian 2.46
                                 validation 2.1949)
    ==========  ===============  ===============================  ===============================  =====

The two-moons run's validation log-likelihood creeps up by 1e-4 nats per layer after about 30 layers; a
longer patience (20) kept 50 layers and reached -1.066 on the test points in 6 minutes of fitting under a load of
10.  The digits configuration was chosen on validation bits/dim (10 draws) before the test figure was computed:

    ========  =======  ======  ===================  ==========  ========
    rotation  kernels  copies  layers (fitted)      validation  fit time
    ========  =======  ======  ===================  ==========  ========
    pca       8        1       2 (10)               2.288       12 s
    pca       16       1       2 (10)               2.217       19 s
    random    16       1       14 (22)              2.511       45 s
    pca       16       4       6 (14)               2.197       82 s
    pca       32       4       8 (16)               2.185       162 s
    ========  =======  ======  ===================  ==========  ========

(patience 8, loads 6-8; PCA rotations win by far in 64-D, where a random rotation rarely exposes the structure;
several dequantized copies keep the marginal fits from modelling one draw of u; 32 kernels gain 0.01 for twice
the time, left out for the 10-minute budget).  The default run above stopped at 12 layers, 2.195 on validation.

    python scripts/demo_rbig.py                        # both (under 10 minutes here)
    python scripts/demo_rbig.py --datasets two_moons
    python scripts/demo_rbig.py --quick                # tiny settings: a smoke test
"""
import argparse
import math
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import npflows  # noqa: E402
from demo_2d import N_TEST, N_VAL, PLOT_LOG_DENSITY, TEST_DATA, TRAIN_DATA, SPLIT  # noqa: E402

TARGET_MOONS = -1.10
"""Issue 14: RBIG reaches a test log-likelihood of at least -1.10 nats on two-moons (the limit is about -1.01)."""
BASELINES = {"categorical": 2.43, "logit Gaussian": 2.46}
"""Issue 13's digits baselines, test bits/dim (``scripts/digits_baselines.py`` reproduces both)."""
FIT, SAMPLES, DIGITS_ID = 10, 11, 100          # stream purposes (demo_2d uses 0..5), the digits' dataset id


def load_avg():
    try:
        return "%.1f" % os.getloadavg()[0]
    except OSError:
        return "n/a"


def plot_layers(path, hist, title, ylabel, extra=None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    layers = np.arange(1, len(hist["train_ll"]) + 1)
    ax.plot(layers, hist["train_ll"], label="training")
    ax.plot(layers, hist["val_ll"], label="validation")
    ax.axvline(hist["n_layers"], color="grey", ls=":", label=f"kept: {hist['n_layers']} layers")
    for y, lab, style in (extra or []):
        ax.axhline(y, color="k", ls=style, lw=0.8, label=lab)
    lo = min(min(hist["train_ll"]), min(hist["val_ll"]))
    hi = max(max(hist["train_ll"]), max(hist["val_ll"]))
    ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.3 * (hi - lo + 1e-9))
    ax.set_xlabel("RBIG layers (marginal Gaussianization + rotation)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def two_moons(args, have_plots):
    ds_id = npflows.data.DATASETS.index("two_moons")
    rng = lambda purpose: np.random.default_rng([args.seed, ds_id, purpose])  # noqa: E731
    n_train = 3000 if args.quick else args.n_train
    n_test = 1000 if args.quick else N_TEST
    x = npflows.data.load("two_moons", n_train + N_VAL, rng(TRAIN_DATA), noise=0.1)
    x_test = npflows.data.load("two_moons", N_TEST, rng(TEST_DATA), noise=0.1)[:n_test]
    x_train, x_val = npflows.train.split_train_val(x, N_VAL / x.shape[0], rng(SPLIT))
    K = 8 if args.quick else args.components
    max_layers = 3 if args.quick else args.max_layers
    print(f"\n== two_moons: {x_train.shape[0]} train / {x_val.shape[0]} val / {x_test.shape[0]} test points; RBIG with "
          f"random rotations, {K} kernels per coordinate, at most {max_layers} layers (load {load_avg()})", flush=True)
    t0 = time.perf_counter()
    b, params, hist = npflows.fit_rbig(x_train, rng(FIT), max_layers=max_layers, tol=args.tol, patience=args.patience,
                                       rotation="random", n_components=K, x_val=x_val, verbose=True)
    seconds = time.perf_counter() - t0
    flow = npflows.NormalizingFlow(b, npflows.StandardNormal(2))
    test_ll = float(flow.log_prob(params, x_test).mean())
    limit = float(npflows.data.two_moons_log_density(x_test, noise=0.1).mean())
    met = test_ll >= TARGET_MOONS
    print(f"two_moons: {b.n_layers} layers kept of {hist['layers_fitted']} fitted ({hist['stopped']}); test LL "
          f"{test_ll:.4f} nats (exact density on the same points {limit:.4f}); target >= {TARGET_MOONS}: "
          f"{target_verdict(met, args.quick)}  [fit {seconds:.0f} s, load {load_avg()}]", flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "two_moons_rbig.npz")
    config = {"data": {"name": "two_moons", "noise": 0.1, "n_train": x_train.shape[0], "n_val": x_val.shape[0],
                       "n_test": x_test.shape[0], "seed": args.seed},
              "fit": {"rotation": "random", "n_components": K, "max_layers": max_layers, "tol": args.tol,
                      "patience": args.patience, "stopped": hist["stopped"]},
              "results": {"test_ll": test_ll, "limit": limit, "layers": b.n_layers, "fit_seconds": seconds}}
    npflows.save(path, flow, params, config)
    loaded, p2, _ = npflows.load(path)
    assert np.array_equal(loaded.log_prob(p2, x_test[:100]), flow.log_prob(params, x_test[:100]))
    written = [path]
    if have_plots:
        from npflows.plotting import plot_density_and_samples
        t1 = time.perf_counter()
        samples = flow.sample(params, 500 if args.quick else 5000, rng(SAMPLES))
        written.append(os.path.join(args.out, "two_moons_rbig.png"))
        plot_density_and_samples(written[-1], x_test, samples, lambda g: flow.log_prob(params, g),
                                 PLOT_LOG_DENSITY["two_moons"],
                                 title=f"two_moons: RBIG ({b.n_layers} layers, no gradients), test LL {test_ll:.3f} "
                                       f"nats (limit {limit:.3f})")
        written.append(os.path.join(args.out, "two_moons_rbig_layers.png"))
        plot_layers(written[-1], hist, "two_moons: RBIG log-likelihood against the layer count", "mean LL (nats)",
                    [(limit, "exact density, test points", "--"), (test_ll, "RBIG, test points", "-.")])
        print(f"plots: {time.perf_counter() - t1:.0f} s")
    print("wrote " + ", ".join(written))
    return dict(data="two_moons", layers=b.n_layers, score=f"{test_ll:.4f} nats", beside=f"limit {limit:.4f}",
                seconds=seconds, missed=not met)


def digits(args, have_plots):
    from npflows.dequantize import ALPHA, bits_per_dim, dequantization_bound, preprocess
    try:
        x_train, x_val, x_test = (npflows.data.digits(s)[0] for s in ("train", "validation", "test"))
    except ImportError as e:
        print(f"digits: skipped ({e})")
        return None
    rng = lambda purpose: np.random.default_rng([args.seed, DIGITS_ID, purpose])  # noqa: E731
    levels = npflows.data.DIGITS_LEVELS
    copies = 1 if args.quick else args.copies
    K = 4 if args.quick else args.digits_components
    max_layers = 2 if args.quick else args.max_layers
    draws = 2 if args.quick else 10
    z = np.concatenate([preprocess(x_train, rng(20 + c), levels)[0] for c in range(copies)])
    z_val = preprocess(x_val, rng(1), levels)[0]
    print(f"\n== digits: {x_train.shape[0]} train images x {copies} dequantized copies, {x_val.shape[0]} validation, "
          f"{x_test.shape[0]} test; logit space (alpha {ALPHA}), RBIG with PCA rotations, {K} kernels per pixel, "
          f"at most {max_layers} layers (load {load_avg()})", flush=True)
    t0 = time.perf_counter()
    b, params, hist = npflows.fit_rbig(z, rng(FIT), max_layers=max_layers, tol=args.tol, patience=args.patience,
                                       rotation="pca", n_components=K, x_val=z_val, verbose=True)
    seconds = time.perf_counter() - t0
    flow = npflows.NormalizingFlow(b, npflows.StandardNormal(64))
    lp = lambda q: flow.log_prob(params, q)  # noqa: E731
    val = bits_per_dim(lp, x_val, rng(2), levels, draws=draws)
    bound = dequantization_bound(lp, x_test, rng(3), levels, draws=draws)          # nats per image
    bpd = -bound / (64 * math.log(2.0))
    test = (float(bpd.mean()), float(bpd.std(ddof=1) / math.sqrt(bpd.size)))
    print(f"digits: {b.n_layers} layers kept of {hist['layers_fitted']} fitted ({hist['stopped']}); test: "
          f"log P(x) >= {bound.mean():.2f} nats per image ({bound.mean() / 64:.4f} nats/dim), {test[0]:.4f} +- "
          f"{test[1]:.4f} bits/dim over {draws} draws (validation {val.mean:.4f}); baselines: "
          + ", ".join(f"{k} {v}" for k, v in BASELINES.items())
          + f"  [fit {seconds:.0f} s, load {load_avg()}]", flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "digits_rbig.npz")
    config = {"data": {"name": "digits", "levels": levels, "alpha": ALPHA, "copies": copies, "seed": args.seed},
              "fit": {"rotation": "pca", "n_components": K, "max_layers": max_layers, "tol": args.tol,
                      "patience": args.patience, "stopped": hist["stopped"]},
              "results": {"test_bpd": test[0], "test_bpd_stderr": test[1], "test_nats_per_image": float(bound.mean()),
                          "val_bpd": val.mean, "layers": b.n_layers, "fit_seconds": seconds}}
    npflows.save(path, flow, params, config)
    written = [path]
    if have_plots:
        from train_digits import save_png, tile, to_levels
        s1 = to_levels(flow.sample(params, 64, rng(SAMPLES)))
        s07 = to_levels(flow.sample(params, 64, rng(SAMPLES + 1), temperature=0.7))
        written.append(os.path.join(args.out, "digits_rbig_samples.png"))
        save_png(written[-1], [tile(s1, 8), tile(s07, 8), tile(x_test[:64].astype(float), 8)],
                 ["RBIG samples, T = 1", "RBIG samples, T = 0.7", "test images"], 3.0)
        written.append(os.path.join(args.out, "digits_rbig_layers.png"))
        scale = -1.0 / (64 * math.log(2.0))
        h2 = {**hist, "train_ll": [v * scale for v in hist["train_ll"]], "val_ll": [v * scale for v in hist["val_ll"]]}
        plot_layers(written[-1], h2, "digits: RBIG in logit space (lower is better; the densities of z, not bits/dim "
                    "of the images)", "- log p(z) / (64 ln 2)")
    print("wrote " + ", ".join(written))
    return dict(data="digits", layers=b.n_layers, score=f"{test[0]:.4f} bits/dim",
                beside="categorical 2.43, logit Gaussian 2.46", seconds=seconds, missed=False)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["two_moons", "digits"], choices=["two_moons", "digits"],
                   help="what to fit, in order")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--n-train", type=int, default=200_000, help="two-moons training points (plus 5,000 for validation)")
    p.add_argument("--components", type=int, default=32, help="kernels per coordinate, two-moons")
    p.add_argument("--digits-components", type=int, default=16, help="kernels per pixel, digits")
    p.add_argument("--copies", type=int, default=4, help="dequantized copies of the digits' training images")
    p.add_argument("--max-layers", type=int, default=150, help="fit_rbig's layer budget")
    p.add_argument("--patience", type=int, default=8, help="layers without a validation gain of --tol before stopping")
    p.add_argument("--tol", type=float, default=1e-4, help="the validation gain that counts, nats per point")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke test")
    p.add_argument("--out", default="out", help="directory for PNGs and saved models")
    args = p.parse_args(argv)
    announce_quick(args)
    try:
        import matplotlib  # noqa: F401
        have_plots = True
    except ImportError:
        have_plots = False
        print("matplotlib is not installed: skipping the plots (pip install 'npflows[plot]')")
    t0 = time.perf_counter()
    rows = []
    for name in args.datasets:
        r = (two_moons if name == "two_moons" else digits)(args, have_plots)
        if r is not None:
            rows.append(r)
    print(f"\n{'data':<11}{'layers':>7}  {'test':<18}{'beside':<40}{'fit s':>7}")
    for r in rows:
        print(f"{r['data']:<11}{r['layers']:>7}  {r['score']:<18}{r['beside']:<40}{r['seconds']:7.0f}")
    print(f"total {time.perf_counter() - t0:.0f} s with evaluation and plots (load average {load_avg()}, one BLAS "
          f"thread)")
    return exit_status(any(r["missed"] for r in rows), args.quick)


if __name__ == "__main__":
    sys.exit(main())
