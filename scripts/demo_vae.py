"""A VAE on the binarised 8x8 digits with three posteriors: the diagonal Gaussian, planar flows and an IAF (issue 15).

**Data.**  ``npflows.data.digits``: 1257 train / 180 validation / 360 test images (the fixed split), each pixel
binarised, 1 where its grey level is at least 8 of 16 (``npflows.vae.binarize``).

**Models** (``npflows.vae.VAE``), the same encoder and decoder for all three: encoder MLP 64 -> ``hidden`` ->
(mu, log sigma) in R^L (plus a context h in R^C for the flows), decoder MLP L -> ``hidden`` -> 64 Bernoulli
logits, activation ``tanh``, prior N(0, I).  The posteriors:

* ``gaussian``: q(z|x) = N(mu(x), diag sigma(x)^2), the baseline;
* ``planar``: that Gaussian pushed through ``--planar-layers`` planar maps (Rezende & Mohamed 2015,
  arXiv:1505.05770) whose parameters are amortised, affine in the encoder's context h
  (``npflows.ConditionalPlanar``; ``--planar-global`` for one map shared by every image, ``npflows.Planar``);
* ``iaf``: that Gaussian pushed through ``--iaf-layers`` inverse autoregressive layers conditioned on h (Kingma
  et al. 2016, arXiv:1606.04934): ``npflows.MaskedAffineAutoregressive`` with the paper's gated update, MADE
  ``--iaf-hidden`` reading [z, h], orders alternating, used in its sampling direction.

The encoder's last layer has 2L + C outputs for the flows and 2L for the Gaussian; every other layer is the same.

**Training.**  Adam (lr ``--lr``, batch ``--batch``) on minus the one-sample reparameterised ELBO, every gradient
derived by hand (``VAE.loss_and_grad``; the derivation is in ``VAE``'s Notes).  Every ``--val-every`` epochs the
validation ELBO is estimated with ``--val-samples`` draws per image (the same draws each time: a paired
comparison between epochs); the parameters with the best validation ELBO are kept, and training stops after
``--patience`` epochs without improvement, after ``--epochs``, or at ``--max-minutes``.

**Seeds.**  Each posterior is trained ``--seeds`` times (seeds ``--seed``, ``--seed + 1``, ...: initialisation,
minibatches and noise all change).  On 1257 training images the spread between seeds of one posterior (0.2-0.5
nats of test ELBO: which epoch early stopping keeps, how well the decoder turned out) is as large as the
differences between posteriors, so one model per posterior decides little; the figures below average over the
seeds' models.

**Evaluation** on the 360 test images, once per model, at the end: per image the ELBO (the mean of ``--samples``
log importance weights, so its Monte Carlo error is negligible beside the spread over images) and the
importance-weighted bound log (1/K) sum_k p(x, z_k)/q(z_k|x) with K = ``--samples`` (Burda et al. 2015,
arXiv:1509.00519), from the same draws.  Each image's two bounds are averaged over the seeds' models; the table
gives their means and standard errors over the test images, and the gap of each flow posterior over the
Gaussian: the mean of the per-image differences with the standard error of those paired differences.  The
per-seed figures follow it.  Target (issue 15): each flow posterior improves the test ELBO over the diagonal
Gaussian; this script counts it as met when the gap exceeds twice its standard error.

**Outputs** in ``--out`` (default ``out/vae``): ``reconstructions.png`` (test images and each posterior's
reconstruction, the decoder's pixel probabilities at z = f(mu; h)), ``samples.png`` (decoder probabilities at
64 prior draws per posterior), ``latent.png`` (L = 2 only: f(mu(x); h(x)) of every test image coloured by its
digit, per posterior, and 300 posterior draws for three test images), ``elbo_curves.png`` (validation and
training ELBO per epoch of the three), ``vae_<posterior>_seed<seed>.npz`` (the parameters, and the configuration
as JSON under ``__config__``; ``numpy.load(path, allow_pickle=False)``).  The pictures show the first seed's
models.  PNGs need matplotlib.

**Measured** (the defaults: hidden 128, tanh, lr 2e-3, batch 100, patience 300, 8 amortised planar maps, 2 gated IAF
layers with MADE 32-32, context C = 16, seeds 0, 1, 2, K = 1000; float64, one BLAS thread, OpenBLAS's own kernel,
on a 2-core AMD EPYC shared with other engineers' jobs; the load average at the start and the end of each run).
Nats per test image, +- the standard error over the 360 test images (paired differences for the gaps), each
image's bounds averaged over the three seeds' models:

======  =========  ======  ================  ================  ===============  ===============  ============
L       posterior  params  test ELBO         IW bound          ELBO gap         IW gap           train (each)
======  =========  ======  ================  ================  ===============  ===============  ============
2       gaussian   17,476  -19.876 +- 0.274  -18.945 +- 0.234                                    20-55 s
2       planar     20,220  -19.204 +- 0.300  -18.044 +- 0.251  +0.672 +- 0.140  +0.901 +- 0.117  183-202 s
2       iaf        23,132  -18.954 +- 0.298  -18.029 +- 0.248  +0.922 +- 0.147  +0.916 +- 0.108  50-56 s
8       gaussian   19,792  -18.197 +- 0.224  -16.942 +- 0.201                                    20-26 s
8       planar     24,168  -17.812 +- 0.216  -16.742 +- 0.196  +0.385 +- 0.041  +0.201 +- 0.035  55-64 s
8       iaf        26,624  -17.895 +- 0.223  -16.808 +- 0.200  +0.303 +- 0.031  +0.134 +- 0.028  37-46 s
======  =========  ======  ================  ================  ===============  ===============  ============

Loads 4.2 -> 2.8 (L = 2, 15 minutes for the nine runs and their evaluations) and 1.0 -> 2.6 (L = 8, 7 minutes).
Both flow posteriors meet the target at both L.  The seeds' own ELBO gaps: L = 2 planar +0.386, +0.908, +0.721
(standard error over the seeds 0.153), IAF +0.822, +1.186, +0.757 (0.133); L = 8 planar +0.408, +0.396, +0.352
(0.017), IAF +0.256, +0.309, +0.343 (0.025).  At L = 2 the IW bounds, which approach log p(x), gain as much as the
ELBOs: with a richer posterior, training reaches a better model, not only a tighter bound.  At L = 8 the gains are
smaller but very consistent between seeds, and half or more of each is a tighter bound (the IW gaps are 0.13-0.20
nats).  Evaluation (K = 1000 for 360 images)
takes 3-6 s per model.  The pictures in docs/images/vae_*.png are the L = 2 run's.

How the protocol came about: the architecture and recipe above were set before any run and not changed.  The first
full run trained one model per posterior (seed 0 alone, L = 2): planar +0.386 +- 0.231 (short of two standard
errors), IAF +0.822 +- 0.217.  A validation-only run (``--no-test``) at lr 1e-3, seed 0, then gave validation gaps of
+0.24 +- 0.31 and +0.32 +- 0.23, with the Gaussian's IW bound above both flows': one model per posterior is decided
by the seed as much as by the posterior, so the script averages over three seeds (a change of protocol made after
that first test figure; the recipe stayed).  One map shared by every image (``--planar-global``, 8 Planar layers;
an exploratory run at lr 1e-3, seed 0): test ELBO -19.678 against the Gaussian's -19.704 in the same setting, no
gain, as ``VAE``'s Notes explain; the amortised form (``ConditionalPlanar``) is the default.

Every random draw comes from ``numpy.random.default_rng([seed, posterior id, purpose])``.

Usage::

    python scripts/demo_vae.py                       # L = 2, the three posteriors, the table and the PNGs
    python scripts/demo_vae.py --latent 8 --out out/vae8
    python scripts/demo_vae.py --quick               # a few epochs of tiny models: a smoke run
"""
import argparse
import json
import math
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # tiny matrices: one BLAS thread (set before NumPy loads BLAS)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_util import use_native_kernel  # noqa: E402
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows as nf  # noqa: E402
from npflows import data  # noqa: E402
from npflows.vae import VAE, binarize, iaf_posterior, planar_posterior  # noqa: E402

POSTERIORS = ("gaussian", "planar", "iaf")
INIT, MINIBATCH, NOISE, VALID, TEST, SAMPLES = range(6)
"""Purposes of the random streams ``default_rng([seed, posterior id, purpose])``."""
TIME_BUDGET = 15 * 60
"""Issue 15: every training run finishes in under 15 minutes on this 2-core machine (seconds)."""


def stream(seed, posterior, purpose):
    return np.random.default_rng([seed, POSTERIORS.index(posterior), purpose])


def load_avg():
    return "%.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else "n/a"


def build(posterior, args):
    """The VAE of ``posterior`` (module docstring)."""
    common = dict(hidden=tuple(args.hidden), activation=args.activation)
    L, C = args.latent, args.context
    if posterior == "gaussian":
        return VAE(64, L, **common)
    if posterior == "planar":
        if args.planar_global:
            return VAE(64, L, flow=planar_posterior(L, args.planar_layers), **common)
        return VAE(64, L, flow=planar_posterior(L, args.planar_layers, C), context_dim=C, **common)
    return VAE(64, L, flow=iaf_posterior(L, args.iaf_layers, tuple(args.iaf_hidden), C), context_dim=C, **common)


def train(vae, params, posterior, seed, x_train, x_val, args, say):
    """``(best params, history, seconds, how it stopped)``: the loop of the module docstring."""
    rng_batch, rng_noise = stream(seed, posterior, MINIBATCH), stream(seed, posterior, NOISE)
    state = nf.adam_init(params)
    n, batch = x_train.shape[0], args.batch
    history = {"epoch": [], "train_elbo": [], "val_elbo": []}
    best, best_params, best_epoch, stop = -math.inf, params, 0, f"after {args.epochs} epochs"
    t0 = time.perf_counter()
    running, count = 0.0, 0
    for epoch in range(1, args.epochs + 1):
        perm = rng_batch.permutation(n)
        for b in range(n // batch):
            loss, grads = vae.loss_and_grad(params, x_train[perm[b * batch:(b + 1) * batch]], rng_noise)
            params, state = nf.adam(params, grads, state, lr=args.lr)
            running, count = running - loss, count + 1
        if epoch % args.val_every and epoch != args.epochs:
            continue
        val = float(vae.bounds(params, x_val, stream(seed, posterior, VALID), samples=args.val_samples)[0].mean())
        history["epoch"].append(epoch)
        history["train_elbo"].append(running / count)
        history["val_elbo"].append(val)
        running, count = 0.0, 0
        improved = val > best
        if improved:
            best, best_params, best_epoch = val, params, epoch
        elapsed = time.perf_counter() - t0
        if epoch % (args.val_every * args.print_every) == 0 or epoch == args.epochs:
            say(f"{posterior:8s} seed {seed} epoch {epoch:5d}  train ELBO {history['train_elbo'][-1]:8.3f}  validation "
                f"{val:8.3f}{' *' if improved else '  '} (best {best:.3f} @ {best_epoch})  {elapsed:6.1f} s  "
                f"load {load_avg()}")
        if epoch - best_epoch >= args.patience:
            stop = f"early stop at epoch {epoch} ({args.patience} epochs without a better validation ELBO)"
            break
        if elapsed > 60 * args.max_minutes:
            stop = f"time limit ({args.max_minutes} min) at epoch {epoch}"
            break
    history["best_epoch"] = best_epoch
    return best_params, history, time.perf_counter() - t0, stop


def mean_se(a):
    a = np.asarray(a, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))


# ---------------------------------------------------------------- pictures
def _tile(images, cols):
    """``(n, 64)`` values in [0, 1] as one array of 8x8 tiles with NaN gaps."""
    n = images.shape[0]
    rows = -(-n // cols)
    out = np.full((rows * 9 - 1, cols * 9 - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = images[i].reshape(8, 8)
    return out


def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def pictures(out, models, x_test, y_test, args, results):
    """The four PNGs of the module docstring; returns their paths."""
    from matplotlib import colormaps
    cmap = colormaps["gray_r"].with_extremes(bad="#b0c4de")
    written = []
    names = list(models)
    # reconstructions: 2 rows of 12 test images, then each posterior's reconstruction of them
    idx = np.concatenate([np.flatnonzero(y_test == d)[:2] for d in range(10)])[:20]
    panels = [("test images (binarised)", x_test[idx])]
    panels += [(f"{p}: reconstruction", models[p][0].reconstruct(models[p][1], x_test[idx])) for p in names]
    fig = _figure((10, 0.75 * len(panels) + 0.3))
    for ax, (title, imgs) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        ax.imshow(_tile(imgs, 20), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    written.append(os.path.join(out, "reconstructions.png"))
    fig.savefig(written[-1], dpi=100)
    # samples
    fig = _figure((3.6 * len(names), 4.0))
    for ax, p in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
        vae, params = models[p]
        ax.imshow(_tile(vae.sample(params, 64, stream(args.seed, p, SAMPLES)), 8), cmap=cmap, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(f"{p}: decoder means at z ~ N(0, I)", fontsize=9)
        ax.set_axis_off()
    written.append(os.path.join(out, "samples.png"))
    fig.savefig(written[-1], dpi=100)
    # latent space (L = 2)
    if args.latent == 2:
        fig = _figure((4.2 * len(names), 4.4))
        tab = colormaps["tab10"]
        picks = [int(np.flatnonzero(y_test == d)[0]) for d in (0, 3, 7)]
        for ax, p in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
            vae, params = models[p]
            z = vae.latent(params, x_test)
            ax.scatter(z[:, 0], z[:, 1], c=[tab(int(d)) for d in y_test], s=9, alpha=0.8, linewidths=0)
            rng = stream(args.seed, p, SAMPLES)
            for i in picks:
                eps = rng.standard_normal((300, 2))
                zs = vae.posterior_sample(params, np.repeat(x_test[i:i + 1], 300, 0), eps)[0]
                ax.scatter(zs[:, 0], zs[:, 1], s=2, color="black", alpha=0.35, linewidths=0)
            for d in range(10):
                ax.scatter([], [], color=tab(d), label=str(d), s=12)
            ax.set_title(f"{p}: test images at f(mu; h) by digit;\nblack: q(z|x) draws for three test digits",
                         fontsize=9)
            ax.set_aspect("equal", "datalim")
            ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="best", markerscale=1.2)
        written.append(os.path.join(out, "latent.png"))
        fig.savefig(written[-1], dpi=100)
    # ELBO curves
    fig = _figure((7.0, 4.4))
    ax = fig.subplots()
    for j, p in enumerate(names):
        h = results[p]["history"][0]
        ax.plot(h["epoch"], h["val_elbo"], color=f"C{j}", label=f"{p}: validation")
        ax.plot(h["epoch"], h["train_elbo"], color=f"C{j}", ls=":", lw=1, label=f"{p}: train (running mean)")
        ax.axvline(h["best_epoch"], color=f"C{j}", lw=0.6, alpha=0.5)
    vals = np.concatenate([results[p]["history"][0]["val_elbo"] for p in names])
    ax.set_ylim(np.percentile(vals, 5) - 1.0, max(np.concatenate(
        [results[p]["history"][0]["train_elbo"] for p in names]).max(), vals.max()) + 0.3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per image)")
    ax.set_title(f"VAE on binarised digits, L = {args.latent}, seed {args.seed}: ELBO per epoch (vertical: kept "
                 f"epoch)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(os.path.join(out, "elbo_curves.png"))
    fig.savefig(written[-1], dpi=100)
    return written


# ---------------------------------------------------------------- main
def main(argv=None):
    use_native_kernel(__file__)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--posteriors", nargs="+", choices=POSTERIORS, default=list(POSTERIORS),
                   help="which posteriors to train (the gaps need gaussian)")
    p.add_argument("--latent", type=int, default=2, help="latent dimension L (2 to 8)")
    p.add_argument("--hidden", type=int, nargs="+", default=[128], help="hidden widths of encoder and decoder")
    p.add_argument("--activation", default="tanh", choices=nf.nn.ACTIVATIONS, help="of encoder and decoder")
    p.add_argument("--context", type=int, default=16, help="size C of the encoder's context h for the flows")
    p.add_argument("--planar-layers", type=int, default=8, help="planar maps in the planar posterior")
    p.add_argument("--planar-global", action="store_true",
                   help="global planar parameters (one map for every image) instead of amortised ones")
    p.add_argument("--iaf-layers", type=int, default=2, help="IAF layers")
    p.add_argument("--iaf-hidden", type=int, nargs="+", default=[32, 32], help="hidden widths of each IAF's MADE")
    p.add_argument("--epochs", type=int, default=3000, help="at most this many epochs")
    p.add_argument("--batch", type=int, default=100, help="images per Adam step")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate")
    p.add_argument("--val-every", type=int, default=10, help="epochs between validation estimates")
    p.add_argument("--val-samples", type=int, default=10, help="posterior draws per validation image")
    p.add_argument("--patience", type=int, default=300, help="epochs without a better validation ELBO before stopping")
    p.add_argument("--max-minutes", type=float, default=14.0, help="stop a training run after this many minutes")
    p.add_argument("--print-every", type=int, default=10, help="print every this many validation estimates")
    p.add_argument("--samples", type=int, default=1000, help="posterior draws K per test image (ELBO and IW bound)")
    p.add_argument("--seed", type=int, default=0, help="the first seed of the random streams")
    p.add_argument("--seeds", type=int, default=3,
                   help="models trained per posterior, seeds --seed, --seed + 1, ...; each image's bounds are "
                        "averaged over them")
    p.add_argument("--out", default=os.path.join("out", "vae"), help="output directory")
    p.add_argument("--no-plots", action="store_true", help="write no PNGs")
    p.add_argument("--no-test", action="store_true",
                   help="leave the test split alone: evaluate on the validation split (for choosing a configuration)")
    p.add_argument("--quick", action="store_true", help="tiny models, a few epochs, K = 50: a smoke run")
    args = p.parse_args(argv)
    announce_quick(args)
    if args.quick:
        args.hidden, args.context, args.planar_layers, args.iaf_hidden = [16], 4, 2, [8]
        args.epochs, args.val_every, args.print_every, args.samples, args.val_samples = 4, 2, 1, 50, 2
        args.seeds = min(args.seeds, 2)
    if not 1 <= args.latent <= 64 or args.samples < 1 or args.batch < 1:
        p.error("--latent must be in 1..64, --samples and --batch at least 1")
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    def say(msg):
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    try:
        (xi_train, _), (xi_val, _), (xi_test, y_test) = (data.digits(s) for s in ("train", "validation", "test"))
    except ImportError as e:
        print(f"demo_vae: {e}")
        return 2
    x_train, x_val, x_test = binarize(xi_train), binarize(xi_val), binarize(xi_test)
    split = "test"
    if args.no_test:                     # every "test" figure below is then a validation figure
        x_test, y_test, split = x_val, data.digits("validation")[1], "validation"
    say(f"binarised digits (pixel >= {8} of 16): {len(x_train)} train / {len(x_val)} validation / {len(x_test)} "
        f"test; L = {args.latent}, encoder/decoder hidden {args.hidden} {args.activation}; numpy {np.__version__}, "
        f"BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}; load {load_avg()}")
    seeds = [args.seed + k for k in range(args.seeds)]
    models, results = {}, {}
    for post in args.posteriors:
        vae = build(post, args)
        say(f"{post}: {vae.flow!r}".replace("\n", " ") if vae.flow is not None else f"{post}: no flow")
        r = results[post] = dict(elbo=[], iw=[], history=[], seconds=[], best_epoch=[], epochs=[])
        for seed in seeds:
            params = vae.init(stream(seed, post, INIT))
            r["n_params"] = int(sum(v.size for v in params.values()))
            say(f"{post} seed {seed}: {r['n_params']:,} parameters "
                f"({sum(v.size for k, v in params.items() if k.startswith('flow.')):,} in the flow), load {load_avg()}")
            load0 = load_avg()
            best, history, seconds, stop = train(vae, params, post, seed, x_train, x_val, args, say)
            t_eval = time.perf_counter()
            elbo, iw = vae.bounds(best, x_test, stream(seed, post, TEST), samples=args.samples)
            say(f"{post} seed {seed}: trained {seconds:.1f} s ({stop}; kept epoch {history['best_epoch']}), load "
                f"{load0} -> {load_avg()}; {split} ELBO {elbo.mean():.3f}, IW {iw.mean():.3f} (K = {args.samples}, "
                f"{time.perf_counter() - t_eval:.1f} s)")
            if seed == seeds[0]:
                models[post] = (vae, best)                       # the pictures show the first seed's model
            for k, v in zip(("elbo", "iw", "history", "seconds", "best_epoch", "epochs"),
                            (elbo, iw, history, seconds, history["best_epoch"], history["epoch"][-1])):
                r[k].append(v)
            np.savez(os.path.join(args.out, f"vae_{post}_seed{seed}.npz"), **best, __config__=np.array(json.dumps(
                {"posterior": post, "seed": seed, "args": vars(args), "best_epoch": history["best_epoch"],
                 "split": split, "elbo": float(elbo.mean()), "iw": float(iw.mean()), "seconds": seconds})))
        r["elbo_mean"], r["iw_mean"] = np.mean(r["elbo"], axis=0), np.mean(r["iw"], axis=0)   # per image, over seeds

    print()
    print(f"VAE on binarised digits, L = {args.latent}, hidden {args.hidden}, {len(seeds)} seed(s) {seeds} per "
          f"posterior: {split} set of {len(x_test)} images, K = {args.samples} posterior draws per image; nats per "
          f"image (higher is better).  Each image's bound is averaged over the seeds' models; +- is the standard "
          f"error over the {split} images (of the paired per-image differences for the gaps)")
    print(f"{'posterior':<10} {'params':>7} {'train s (max)':>14} {split + ' ELBO':>17} {'IW bound':>17} "
          f"{'ELBO gap vs gaussian':>21} {'IW gap vs gaussian':>19}")
    missed = False
    verdicts = []
    for post in args.posteriors:
        r = results[post]
        e, ie = mean_se(r["elbo_mean"]), mean_se(r["iw_mean"])
        gap = giw = ""
        if post != "gaussian" and "gaussian" in results:
            g = mean_se(r["elbo_mean"] - results["gaussian"]["elbo_mean"])
            gi = mean_se(r["iw_mean"] - results["gaussian"]["iw_mean"])
            r["gap"], r["gap_iw"] = g, gi
            gap, giw = f"{g[0]:+.3f} +- {g[1]:.3f}", f"{gi[0]:+.3f} +- {gi[1]:.3f}"
            met = g[0] > 2 * g[1]
            missed |= not met
            verdicts.append(f"target: the {post} posterior improves the {split} ELBO over the diagonal Gaussian by "
                            f"more than 2 standard errors: {g[0]:+.3f} +- {g[1]:.3f} nats: "
                            f"{target_verdict(met, args.quick)}")
        print(f"{post:<10} {r['n_params']:7d} {max(r['seconds']):14.1f} "
              f"{e[0]:9.3f} +- {e[1]:.3f} {ie[0]:9.3f} +- {ie[1]:.3f} {gap:>21} {giw:>19}")
    print(f"\nper seed: {split} ELBO and IW bound (means over the images), kept epoch / epochs run, training seconds; "
          f"the gaps of each seed's pair of models")
    for post in args.posteriors:
        r = results[post]
        for j, seed in enumerate(seeds):
            gap = ""
            if post != "gaussian" and "gaussian" in results:
                gs = mean_se(r["elbo"][j] - results["gaussian"]["elbo"][j])
                gap = f"  ELBO gap {gs[0]:+.3f} +- {gs[1]:.3f}"
            print(f"  {post:<9} seed {seed}: ELBO {r['elbo'][j].mean():8.3f}  IW {r['iw'][j].mean():8.3f}  epochs "
                  f"{r['best_epoch'][j]}/{r['epochs'][j]}  {r['seconds'][j]:6.1f} s{gap}")
        if post != "gaussian" and "gaussian" in results and len(seeds) > 1:
            per_seed = [float((r["elbo"][j] - results["gaussian"]["elbo"][j]).mean()) for j in range(len(seeds))]
            print(f"  {post:<9} mean of the seeds' ELBO gaps {np.mean(per_seed):+.3f}, their standard error over the "
                  f"seeds {np.std(per_seed, ddof=1) / math.sqrt(len(seeds)):.3f}")
    for post in args.posteriors:
        worst = max(results[post]["seconds"])
        over = worst > TIME_BUDGET
        missed |= over
        verdicts.append(f"target: every {post} training run takes under 15 minutes: longest {worst / 60:.1f} min: "
                        f"{target_verdict(not over, args.quick)}")
    print("\n".join(verdicts))
    print(f"load average now: {load_avg()}")
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed: no PNGs written (pip install 'npflows[plot]')")
        else:
            print("wrote " + ", ".join(pictures(args.out, models, x_test, y_test, args, results)))
    return exit_status(missed, args.quick)


if __name__ == "__main__":
    sys.exit(main())
