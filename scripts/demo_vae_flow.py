"""A VAE whose decoder is a conditional normalizing flow p(x | z), on the grey-level 8x8 digits, in bits/dim (issue 15).

**Protocol** (the image protocol of ``scripts/train_digits.py``): ``npflows.data.digits``, 1257 train / 180
validation / 360 test images of 64 pixels with 17 grey levels; the model sees the logit-space vectors
y = logit(0.05 + 0.9 (x + u)/17) with fresh dequantization noise u every epoch (``npflows.dequantize.preprocess``).

**Model** (``npflows.vae``): ``VAE(64, L, hidden, decoder=FlowDecoder(flow, L))``: the encoder MLP reads y and
gives q(z|y) = N(mu, diag sigma^2) (``--posterior iaf``: refined by an IAF on the encoder's context, as in
``scripts/demo_vae.py``); the decoder p(y|z) is a conditional flow with the latent z as its context:
``--flow spline`` (default) an autoregressive neural spline flow, ``autoregressive_nsf(64, layers, bins, bound,
hidden, context_dim=L)``, the architecture of train_digits' spline model; ``--flow maf`` a conditional MAF.
The encoder's gradient includes the decoder's context cotangent (``FlowDecoder``'s Notes).

**The bound.**  Three inequalities in a row: log P(x) >= E_u[log p_v(x + u)] (uniform dequantization, Theis et
al. 2016), log p_v(x + u) = log p(y) + log|dy/dv| (the change of variables of the preprocessing), and log p(y) >=
ELBO(y), or >= the importance-weighted bound IW_K(y) with K posterior draws (Burda et al. 2015).  So

    bits/dim <= -(E_u[ELBO(y) + log|dy/dv|] - 64 log 17) / (64 ln 2),

estimated per test image with ``--draws`` draws of u and ``--samples`` posterior draws per y (the ELBO as the
mean log weight, the IW bound as their log-mean-exp, from the same draws); the mean over the 360 test images
with its standard error, and the Monte Carlo error of the u draws.  Both are upper bounds on the discrete
images' bits/dim (in expectation), the IW one tighter; they sit beside issue 13's baselines, the per-pixel
categorical 2.43 and the full-covariance logit Gaussian 2.46 (and train_digits' unconditional spline flow, 2.00).  The
script's target: the ELBO bound below both baselines ("meets it" / "MISSES it", exit status 1 when missed).

**Training** (train_digits' recipe for its spline model): Adam, cosine learning rate over ``--epochs``, decoupled
weight decay (each step shrinks every parameter by lr * wd), an exponential moving average of the parameters
(decay min(ema, (1 + t)/(10 + t)); the average is what is validated and kept), early stopping after
``--patience`` epochs without a better validation bound (ELBO-based, the same u and posterior draws every time),
``--max-minutes`` at most.

**Outputs** in ``--out`` (default ``out/vae_flow``): ``samples.png`` (z ~ N(0, I), then the decoder's inverse at
base draws at temperature 1.0 and 0.7), ``reconstructions.png`` (test images, and the decoder's inverse at the
base's mode for z = mu(y)), ``history.png`` (train and validation bits/dim), ``vae_flow.npz`` (parameters and
the configuration as JSON under ``__config__``).

**Measured** (the defaults: L = 8, encoder 64-128 tanh, Gaussian posterior, decoder 5 autoregressive spline
layers with 8 bins on [-3, 3] and MADE 256-256 reading [y, z], 2,324,304 parameters; float32, seed 0, one BLAS
thread, OpenBLAS's own kernel, a 2-core AMD EPYC shared with other jobs):

=============================================  ========  ======  ======
test bits/dim (upper bounds)                   test bpd  stderr  MC err
=============================================  ========  ======  ======
VAE, flow decoder: ELBO bound (2 u, K = 100)   1.9854    0.0130  0.0004
VAE, flow decoder: IW bound (2 u, K = 100)     1.9711    0.0130  0.0006
VAE, flow decoder: IW bound (1 u, K = 1000)    1.9710    0.0132
train_digits' spline flow (no latent)          1.9999    0.0131  0.0009
per-pixel categorical / logit Gaussian         2.43 / 2.46
=============================================  ========  ======  ======

Training: 525 s (8.8 minutes; median epoch 3.0 s including the validation bound; load 6.3 -> 7.3), early stop at
epoch 183, the kept epoch 123 (validation 1.9983).  The test bounds took 56 s (2 u draws x K = 100) and, with
``--load``, 72 s at load 1.7 for 1 draw x K = 1000.  The same flow without the latent (train_digits' spline model,
the same recipe, its own test draws: not a paired comparison) scores 1.9999, so the latent is worth a little, and
it is used: the reconstructions keep each test digit's identity.  Why K = 100 by default: the decoder passes 450
(load 6) to 5,000 (load 2) rows per second in this evaluation, so 2 x 1000 posterior draws for 360 images take from
2.5 to 27 minutes; K = 100 already agrees with K = 1000 to 0.0001 bits/dim here.  A first run with 2 validation
draws (790 s of training at load 10-12, the same kept epoch 123, validation 1.9992) was stopped during a
4 x 1000-draw evaluation that would have taken most of an hour.

Usage::

    python scripts/demo_vae_flow.py                  # L = 8, spline decoder, the table and the PNGs
    python scripts/demo_vae_flow.py --quick          # a tiny model, 2 epochs: a smoke run
"""
import argparse
import json
import math
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_util import use_native_kernel  # noqa: E402
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows as nf  # noqa: E402
from npflows import data  # noqa: E402
from npflows.dequantize import discrete_bits_per_dim, preprocess  # noqa: E402
from npflows.vae import VAE, FlowDecoder, iaf_posterior  # noqa: E402

LEVELS, DIM = data.DIGITS_LEVELS, 64
BASELINES = (("per-pixel categorical", 2.43), ("full-covariance logit Gaussian", 2.46))
"""Issue 13's baselines on the same split (``scripts/digits_baselines.py``)."""
TIME_BUDGET = 15 * 60
INIT, NOISE, ORDER, EPS, VALID_U, VALID_Z, TEST_U, TEST_Z, SAMPLES = range(9)
"""Purposes of the random streams ``default_rng([seed, purpose])``."""
CONST = DIM * math.log(LEVELS)
ARCHITECTURE = ("latent", "hidden", "posterior", "context", "iaf_layers", "iaf_hidden", "flow", "layers", "bins",
                "bound", "flow_hidden", "dtype", "seed")
"""The options that define the model (what ``--load`` takes from the saved file)."""


def stream(seed, purpose):
    return np.random.default_rng([seed, purpose])


def load_avg():
    return "%.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else "n/a"


def build(args):
    L, C = args.latent, args.context
    if args.flow == "spline":
        flow = nf.autoregressive_nsf(DIM, n_layers=args.layers, n_bins=args.bins, bound=args.bound,
                                     hidden=tuple(args.flow_hidden), context_dim=L)
    else:
        flow = nf.maf(DIM, n_layers=args.layers, hidden=tuple(args.flow_hidden), context_dim=L)
    post = {} if args.posterior == "gaussian" else dict(
        flow=iaf_posterior(L, args.iaf_layers, tuple(args.iaf_hidden), C), context_dim=C)
    return VAE(DIM, L, hidden=tuple(args.hidden), activation="tanh", decoder=FlowDecoder(flow, L), **post)


def bound_terms(vae, params, x, rng_u, rng_z, draws, samples, dtype, say=None):
    """Per draw of u and per image, the ELBO-based and IW-based bounds on log P(x) in nats: two arrays
    ``(draws, N)``.  ``say``: a progress line per draw."""
    e_terms, iw_terms = np.empty((draws, x.shape[0])), np.empty((draws, x.shape[0]))
    for s in range(draws):
        y, logdet = preprocess(x, rng_u, LEVELS, dtype=dtype)
        elbo, iw = vae.bounds(params, y, rng_z, samples=samples)
        e_terms[s] = elbo + logdet.astype(np.float64) - CONST
        iw_terms[s] = iw + logdet.astype(np.float64) - CONST
        if say is not None:
            say(f"test draw {s + 1}/{draws} of u: {samples} posterior draws for each of {x.shape[0]} images done, "
                f"load {load_avg()}")
    return e_terms, iw_terms


def bpd(terms):
    """(BitsPerDim over the images, Monte Carlo error of the draws) from ``(draws, N)`` bounds in nats."""
    mc = (terms.mean(axis=1).std(ddof=1) / math.sqrt(terms.shape[0]) / (DIM * math.log(2))
          if terms.shape[0] > 1 else math.nan)
    return discrete_bits_per_dim(terms.mean(axis=0), DIM), mc


def train(vae, params, x_train, x_val, args, dtype, say):
    noise, order, eps_rng = stream(args.seed, NOISE), stream(args.seed, ORDER), stream(args.seed, EPS)
    n, batch = x_train.shape[0], args.batch
    per_epoch = n // batch
    total = args.epochs * per_epoch
    state = nf.adam_init(params)
    avg = dict(params) if args.ema else None
    history = {"epoch": [], "train_bpd": [], "val_bpd": []}
    best, best_params, best_epoch, stop = math.inf, params, 0, f"after {args.epochs} epochs"
    t0, step = time.perf_counter(), 0
    for epoch in range(1, args.epochs + 1):
        y, logdet = preprocess(x_train, noise, LEVELS, dtype=dtype)
        perm, nll = order.permutation(n), 0.0
        for b in range(per_epoch):
            idx = perm[b * batch:(b + 1) * batch]
            loss, grads = vae.loss_and_grad(params, y[idx], eps_rng)
            lr = 0.5 * args.lr * (1.0 + math.cos(math.pi * step / total))
            params, state = nf.adam(params, grads, state, lr=lr)
            if args.weight_decay:
                params = {k: v - (lr * args.weight_decay) * v for k, v in params.items()}
            if args.ema:
                d = min(args.ema, (1.0 + step) / (10.0 + step))
                avg = {k: d * avg[k] + (1.0 - d) * params[k] for k in params}
            nll += loss - float(logdet[idx].mean()) + CONST
            step += 1
        current = avg if args.ema else params
        e_terms, _ = bound_terms(vae, current, x_val, stream(args.seed, VALID_U), stream(args.seed, VALID_Z),
                                 args.val_draws, args.val_samples, dtype)
        val = bpd(e_terms)[0].mean
        train_bpd = nll / per_epoch / (DIM * math.log(2))
        for k, v in zip(("epoch", "train_bpd", "val_bpd"), (epoch, train_bpd, val)):
            history[k].append(v)
        improved = val < best
        if improved:
            best, best_params, best_epoch = val, current, epoch
        elapsed = time.perf_counter() - t0
        say(f"epoch {epoch:4d}/{args.epochs}  train {train_bpd:.4f} bpd (ELBO)  validation {val:.4f}"
            f"{' *' if improved else '  '} (best {best:.4f} @ {best_epoch})  {elapsed:6.1f} s  load {load_avg()}")
        if args.patience and epoch - best_epoch >= args.patience:
            stop = f"early stop at epoch {epoch} ({args.patience} epochs without a better validation bound)"
            break
        if elapsed > 60 * args.max_minutes:
            stop = f"time limit ({args.max_minutes} min) at epoch {epoch}"
            break
    history["best_epoch"] = best_epoch
    return best_params, history, time.perf_counter() - t0, stop


def pictures(out, vae, params, x_test, y_test, args, dtype, history):
    from train_digits import save_history_png, save_png, tile, to_levels
    written = []
    rng = stream(args.seed, SAMPLES)
    grids = {t: to_levels(vae.sample(params, 64, rng, dtype=dtype, temperature=t)) for t in (1.0, 0.7)}
    save_png(os.path.join(out, "samples.png"), [tile(grids[t], 8) for t in (1.0, 0.7)],
             [f"VAE, flow decoder: z ~ N(0, I), samples at T = {t}" for t in (1.0, 0.7)], 4.0)
    written.append(os.path.join(out, "samples.png"))
    idx = np.concatenate([np.flatnonzero(y_test == d)[:2] for d in range(10)])
    y, _ = preprocess(x_test[idx], stream(args.seed, SAMPLES), LEVELS, dtype=dtype)
    rec = to_levels(vae.reconstruct(params, y))
    save_png(os.path.join(out, "reconstructions.png"), [tile(x_test[idx].astype(float), 10), tile(rec, 10)],
             ["test images", "decoder at the base's mode, z = f(mu(y))"], 4.0)
    written.append(os.path.join(out, "reconstructions.png"))
    save_history_png(os.path.join(out, "history.png"), history,
                     f"VAE with a conditional {args.flow} decoder, L = {args.latent}: bits/dim bound (ELBO)")
    written.append(os.path.join(out, "history.png"))
    return written


def main(argv=None):
    use_native_kernel(__file__)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--latent", type=int, default=8, help="latent dimension L")
    p.add_argument("--hidden", type=int, nargs="+", default=[128], help="the encoder's hidden widths")
    p.add_argument("--posterior", choices=("gaussian", "iaf"), default="gaussian", help="q(z|y)")
    p.add_argument("--context", type=int, default=16, help="the encoder's context size for --posterior iaf")
    p.add_argument("--iaf-layers", type=int, default=2, help="IAF layers (--posterior iaf)")
    p.add_argument("--iaf-hidden", type=int, nargs="+", default=[32, 32], help="IAF MADE widths")
    p.add_argument("--flow", choices=("spline", "maf"), default="spline", help="the conditional flow of p(y|z)")
    p.add_argument("--layers", type=int, default=5, help="layers of the decoder's flow")
    p.add_argument("--bins", type=int, default=8, help="spline bins")
    p.add_argument("--bound", type=float, default=3.0, help="spline interval [-B, B]")
    p.add_argument("--flow-hidden", type=int, nargs="+", default=[256, 256], help="the decoder flow's MADE widths")
    p.add_argument("--epochs", type=int, default=200, help="at most this many epochs (the cosine schedule's length)")
    p.add_argument("--batch", type=int, default=128, help="images per Adam step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's peak learning rate")
    p.add_argument("--weight-decay", type=float, default=3.0, help="decoupled weight decay (x lr)")
    p.add_argument("--ema", type=float, default=0.995, help="decay of the parameters' moving average (0: off)")
    p.add_argument("--patience", type=int, default=60, help="epochs without a better validation bound")
    p.add_argument("--max-minutes", type=float, default=14.0, help="stop training after this many minutes")
    p.add_argument("--val-draws", type=int, default=1, help="dequantization draws per validation image")
    p.add_argument("--val-samples", type=int, default=4, help="posterior draws per validation image")
    p.add_argument("--draws", type=int, default=2, help="dequantization draws per test image")
    p.add_argument("--samples", type=int, default=100,
                   help="posterior draws K per test image and draw (module docstring: why not 1000)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="of the model and the data")
    p.add_argument("--seed", type=int, default=0, help="seed of every random stream")
    p.add_argument("--out", default=os.path.join("out", "vae_flow"), help="output directory")
    p.add_argument("--no-plots", action="store_true", help="write no PNGs")
    p.add_argument("--load", metavar="NPZ",
                   help="skip training: evaluate the parameters a previous run saved (its architecture too)")
    p.add_argument("--quick", action="store_true", help="a tiny model, 2 epochs, K = 20: a smoke run")
    args = p.parse_args(argv)
    announce_quick(args)
    loaded = None
    if args.load:
        with np.load(args.load, allow_pickle=False) as f:
            loaded = ({k: f[k] for k in f.files if k != "__config__"}, json.loads(str(f["__config__"])))
        for k in ARCHITECTURE:
            setattr(args, k, loaded[1]["args"][k])
    if args.quick:
        args.layers, args.bins, args.flow_hidden, args.hidden, args.latent = 2, 4, [16], [16], 2
        args.epochs, args.samples, args.draws, args.val_draws, args.val_samples = 2, 20, 2, 1, 2
        args.context, args.iaf_hidden = 4, [8]
    dtype = np.dtype(args.dtype)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    def say(msg):
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    try:
        (x_train, _), (x_val, _), (x_test, y_test) = (data.digits(s) for s in ("train", "validation", "test"))
    except ImportError as e:
        print(f"demo_vae_flow: {e}")
        return 2
    vae = build(args)
    params = vae.init(stream(args.seed, INIT), dtype=dtype)
    n_dec = sum(v.size for k, v in params.items() if k.startswith("dec."))
    say(f"digits: {len(x_train)} train / {len(x_val)} validation / {len(x_test)} test, {LEVELS} levels, logit space; "
        f"{args.dtype}; load {load_avg()}")
    say(f"VAE: L = {args.latent}, encoder 64-{'-'.join(map(str, args.hidden))}, posterior {args.posterior}, decoder "
        f"conditional {args.flow} flow ({args.layers} layers, MADE {args.flow_hidden}); "
        f"{sum(v.size for v in params.values()):,} parameters ({n_dec:,} in the decoder)")
    say(f"recipe: {args.epochs} epochs, batch {args.batch}, lr {args.lr:g} cosine, weight decay {args.weight_decay}, "
        f"EMA {args.ema}, patience {args.patience}")
    path = os.path.join(args.out, "vae_flow.npz")
    if loaded is None:
        load0 = load_avg()
        best, history, seconds, stop = train(vae, params, x_train, x_val, args, dtype, say)
        say(f"trained {seconds:.1f} s ({seconds / 60:.2f} min; {stop}; kept epoch {history['best_epoch']}); load "
            f"{load0} -> {load_avg()}")
        config = {"args": vars(args), "best_epoch": history["best_epoch"], "seconds": seconds, "stop": stop,
                  "history": history}
        np.savez(path, **best, __config__=np.array(json.dumps(config)))       # before the (long) evaluation
    else:
        best, config = loaded
        history, seconds = config["history"], config["seconds"]
        vae.check_params(best, dtype)
        say(f"loaded {args.load}: trained {seconds:.1f} s ({config.get('stop')}; kept epoch {config['best_epoch']})")
    t_eval = time.perf_counter()
    e_terms, iw_terms = bound_terms(vae, best, x_test, stream(args.seed, TEST_U), stream(args.seed, TEST_Z),
                                    args.draws, args.samples, dtype, say)
    (e_bpd, e_mc), (iw_bpd, iw_mc) = bpd(e_terms), bpd(iw_terms)
    say(f"test bounds: {args.draws} draws of u x K = {args.samples} posterior draws per image in "
        f"{time.perf_counter() - t_eval:.1f} s")
    print()
    print(f"bits/dim of the discrete test digits (upper bounds; lower is better), +- the standard error over the "
          f"{len(x_test)} images, MC: the Monte Carlo error of the {args.draws} u draws")
    print(f"{'model':<64} {'test bpd':>9} {'stderr':>7} {'MC err':>7}")
    name = f"VAE, flow decoder ({args.flow}), {args.posterior} posterior"
    print(f"{name + ': ELBO bound':<64} {e_bpd.mean:9.4f} {e_bpd.stderr:7.4f} {e_mc:7.4f}")
    print(f"{name + f': IW bound, K = {args.samples}':<64} {iw_bpd.mean:9.4f} {iw_bpd.stderr:7.4f} {iw_mc:7.4f}")
    for label, value in BASELINES:
        print(f"{'baseline: ' + label:<64} {value:9.4f}")
    met = e_bpd.mean < min(v for _, v in BASELINES)
    over = seconds > TIME_BUDGET
    print(f"target: the ELBO bound beats both baselines (< {min(v for _, v in BASELINES)} bits/dim): "
          f"{e_bpd.mean:.4f}: {target_verdict(met, args.quick)}")
    print(f"target: training under 15 minutes: {seconds / 60:.1f} min: {target_verdict(not over, args.quick)}")
    config.setdefault("results", []).append({"draws": args.draws, "samples": args.samples, "test_bpd_elbo": e_bpd.mean,
                                             "test_bpd_iw": iw_bpd.mean, "stderr": e_bpd.stderr})
    np.savez(path, **best, __config__=np.array(json.dumps(config)))
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed: no PNGs written (pip install 'npflows[plot]')")
        else:
            print("wrote " + ", ".join(pictures(args.out, vae, best, x_test, y_test, args, dtype, history)))
    return exit_status(not met or over, args.quick)


if __name__ == "__main__":
    sys.exit(main())
