"""Experiment (issue 16, 2): a flow trained on the raw integer digits, without dequantization, next to the same
flow trained on dequantized ones.

**The claim under test.**  A density fitted to discrete data can make its likelihood as large as it likes by
piling its mass onto the integer points: the training "log-likelihood" then climbs without bound, and says
nothing about how well the model predicts the discrete data.  Dequantization (Theis et al. 2016,
arXiv:1511.01844; ``npflows.dequantize``) closes that door: a density scored on x + u, u ~ U[0, 1), gives a
lower bound on log P(x), which can never exceed 0 (bits/dim >= 0).

**Data.**  ``npflows.data.digits``: 1257 train / 180 validation / 360 test images, 64 pixels of K = 17 grey
levels (the split of scripts/train_digits.py).  Both models see logit space, z = logit(0.05 + 0.9 y):

* ``raw``: y = x / 17, the integer images with the same affine scaling and the same logit but *no* noise, one
  fixed copy (what one gets by forgetting the dequantization);
* ``dequantized``: y = (x + u) / 17, a fresh u ~ U[0, 1)^64 every epoch (the digits protocol,
  ``npflows.dequantize.preprocess``).

**Model.**  The same flow for both, from the same initial parameters: MAF (:func:`npflows.maf`; Papamakarios
et al. 2017, arXiv:1705.07057), 5 masked affine autoregressive layers with alternating orders, MADEs 64-128-128-128,
the paper's unbounded log-scale (``scale="exp"``), a standard normal base, float64.  Adam at a constant
learning rate 1e-3 (no decay, so nothing but the data stops a climb), batch 32, 80 epochs (39 steps each),
the same minibatch order for both.

**Measured every epoch**, for each model, in bits per dimension of the discrete images (lower is better;
``npflows.dequantize``'s units, so the two models' numbers are comparable):

* *train objective*: what the training loss says, -(log q_z(z) + log|dz/dy| - 64 ln 17) / (64 ln 2) on the
  training batches, averaged over the epoch: the model's own claim, "train LL" below is its negative;
* *test, dequantized*: the dequantization bound on the 360 test images, 10 draws of u per image (the same
  draws every epoch), the only one of these numbers that is an honest upper bound on -log2 P(x)/64;
* *test at u = 0*: the same formula at the test images' own grid points, no noise (how the raw model is fed).

No model is selected on the test split: both run all epochs and the table gives the last epoch (the minimum
of each curve is printed for information only).  A ``FloatingPointError`` in training (divergence) ends that
model's run and is reported as a finding; an evaluation that overflows or gives a zero density is reported as
"inf".  Writes ``forgotten_dequantization.png`` (train LL and dequantized test bits/dim against the epoch) into
``--out`` (default ``out/``); matplotlib is optional.  Every random draw comes from
``numpy.random.default_rng(SeedSequence([seed, purpose]))``.

**Measured** (the defaults, seed 0; one BLAS thread, OpenBLAS choosing its kernel, on a 2-core machine shared
with other jobs: 263 s in all, load average 9.4 at the start and 7.3 at the end):

===========  ===============  ===================  ==============  ===========  =============
model        train objective  test, dequantized    lowest (info)   epochs inf   test at u = 0
===========  ===============  ===================  ==============  ===========  =============
raw          3.260 -> 0.416   3.171 -> inf         3.117 @ 3       27 of 80     2.695
dequantized  3.370 -> 1.916   2.892 -> 2.517       2.315 @ 29      0            3.104
===========  ===============  ===================  ==============  ===========  =============

(bits/dim; "a -> b": epoch 1 -> epoch 80.)  The raw model's training objective falls steadily, with spikes
(Adam at a constant rate on an ever sharper optimum): 1.58 at epoch 10, 1.06 at 30, 0.69 at 60, 0.42 at 80,
still falling at the end; it did not pass 0 in 80 epochs (memorising the 1257 training images would already
give log2(1257)/64 = 0.16).  Meanwhile its honest score left the scale: 1970 bits/dim at epoch 10, 4e7 at 20,
3e15 at 30, and infinite in 27 of the 36 epochs from 45 on (22 times a layer's output overflowed at a
dequantized test image, 5 times the base density underflowed to zero).  At the test images' own grid points
(u = 0) it scores 1.38-2.0 bits/dim from epoch 4 to 46, better than the dequantized model's honest best
(2.31): the mass sits on the integer grid and nowhere between; later that degrades too (1.5-14 bits/dim), the
mass piling onto the training images' own grid points.  The dequantized model, same flow and recipe, reaches
2.31 at epoch 29 and then overfits (no weight decay or early stopping here: scripts/train_digits.py has the
tuned recipe, 2.00).  Three of the 64 pixels are 0 in every training image, so the raw objective has no lower
bound at all: their scales can shrink for ever.

    python scripts/exp_forgotten_dequantization.py            # the full run: 2-5 minutes (see above)
    python scripts/exp_forgotten_dequantization.py --quick    # a tiny MAF, 3 epochs, 2 draws: a smoke run
    python scripts/exp_forgotten_dequantization.py --epochs 200 --out /tmp/long
"""
import argparse
import math
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_util import env_lines, fmt_table, use_native_kernel  # noqa: E402
from _cli import HelpFormatter, announce_quick  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows as nf  # noqa: E402
from npflows import data  # noqa: E402
from npflows.dequantize import dequantization_bound, logit_transform, preprocess  # noqa: E402

LEVELS, DIM = data.DIGITS_LEVELS, 64
MODELS = ("raw", "dequantized")
INIT, NOISE, ORDER, TEST = range(4)
"""Purposes of the random streams: ``default_rng(SeedSequence([seed, purpose]))``."""
BITS = DIM * math.log(2.0)
CONST = DIM * math.log(LEVELS)
LESSON = ("without dequantization the training likelihood keeps climbing, far above the dequantized model's, "
          "while the same model's honest (dequantized) bits/dim on the test digits gets worse: its density "
          "collapses onto the integer grid")


def stream(seed, purpose):
    return np.random.default_rng(np.random.SeedSequence([seed, purpose]))


def build(args):
    return nf.NormalizingFlow(nf.maf(DIM, n_layers=args.layers, hidden=tuple(args.hidden), scale=args.scale),
                              nf.StandardNormal(DIM))


def test_bpd(flow, params, x_test, seed, draws):
    """(dequantized bound in bits/dim, at u = 0 in bits/dim, message); inf and the reason when the model's
    density overflows or vanishes there."""
    out, why = [], None
    try:
        bound = dequantization_bound(lambda z: flow.log_prob(params, z), x_test, stream(seed, TEST), LEVELS,
                                     draws=draws)
        out.append(-float(bound.mean()) / BITS)
    except (ValueError, FloatingPointError) as e:
        out.append(math.inf)
        why = str(e)[:200]
    try:
        z, logdet = logit_transform(x_test / LEVELS)
        with np.errstate(over="ignore"):
            lp = flow.log_prob(params, z)
        out.append(-float(np.mean(lp + logdet - CONST)) / BITS if np.isfinite(lp).all() else math.inf)
    except FloatingPointError as e:
        out.append(math.inf)
        why = why or str(e)[:200]
    return out[0], out[1], why


def train(name, flow, params, x_train, x_test, args, say):
    """Adam over the epochs; returns the history (lists per epoch) and the divergence message (or None)."""
    noise, order = stream(args.seed, NOISE), stream(args.seed, ORDER)
    z_raw, logdet_raw = logit_transform(x_train / LEVELS)
    state = nf.adam_init(params)
    n, batch = x_train.shape[0], args.batch
    hist = {"epoch": [], "train": [], "test": [], "grid": [], "seconds": []}
    diverged = None
    t_run = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        z, logdet = (z_raw, logdet_raw) if name == "raw" else preprocess(x_train, noise, LEVELS)
        perm, total = order.permutation(n), 0.0
        try:
            for b in range(n // batch):
                idx = perm[b * batch:(b + 1) * batch]
                loss, grads = flow.loss_and_grad(params, z[idx])
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss}")
                params, state = nf.adam(params, grads, state, lr=args.lr)
                total += loss - float(logdet[idx].mean()) + CONST
        except FloatingPointError as e:                      # a finding, not a crash
            diverged = f"epoch {epoch}, batch {b + 1}: {str(e)[:200]}"
            say(f"{name}: training DIVERGED at {diverged}")
            break
        train_bpd = total / (n // batch) / BITS
        test, grid, why = test_bpd(flow, params, x_test, args.seed, args.draws)
        for k, v in zip(("epoch", "train", "test", "grid", "seconds"),
                        (epoch, train_bpd, test, grid, time.perf_counter() - t0)):
            hist[k].append(v)
        say(f"{name:<11} epoch {epoch:3d}/{args.epochs}  train objective {train_bpd:8.4f} bpd (train LL "
            f"{-train_bpd:8.4f})  test: dequantized {test:10.4g} bpd, at u = 0 {grid:8.4f} bpd  "
            f"{hist['seconds'][-1]:5.2f} s  total {time.perf_counter() - t_run:6.1f} s"
            + (f"\n    evaluation: {why}" if why else ""))
    return params, hist, diverged


def plot(path, hists, dpi):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9.6, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2)
    finite = [v for h in hists.values() for v in h["test"] if math.isfinite(v)]
    top = 10.0 * max(finite) if finite else 10.0
    for k, (name, h) in enumerate(hists.items()):
        ax.plot(h["epoch"], [-v for v in h["train"]], color=f"C{k}", label=f"{name}")
        epoch, test = np.array(h["epoch"]), np.array(h["test"], float)
        inf = ~np.isfinite(test)
        bx.plot(epoch, np.where(inf, np.nan, test), color=f"C{k}", label=f"{name}")      # NaN: a break
        if inf.any():
            bx.plot(epoch[inf], np.full(inf.sum(), top), "x", ms=4, color=f"C{k}",
                    label=f"{name}: inf (density 0 or overflow)")
    ax.axhline(0.0, color="k", ls=":", lw=1, label="ceiling of any discrete model (P = 1)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train LL, bits/dim (log2 q / 64)")
    ax.set_title("training objective (higher = better)", fontsize=10)
    bx.set_yscale("log")
    bx.set_ylim(bottom=1.0)
    bx.set_xlabel("epoch")
    bx.set_ylabel("test bits/dim, dequantized (log scale)")
    bx.set_title("honest score on the test digits (lower = better)", fontsize=10)
    ax.grid(alpha=0.3)
    bx.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    bx.legend(fontsize=8, loc="center right")
    fig.suptitle("MAF on the 8x8 digits: raw integers vs dequantized", fontsize=10)
    fig.savefig(path, dpi=dpi)


def main(argv=None):
    use_native_kernel(__file__)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=int, default=80, help="epochs for each model")
    p.add_argument("--batch", type=int, default=32, help="images per Adam step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (constant)")
    p.add_argument("--layers", type=int, default=5, help="MAF layers")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128], help="hidden widths of each MADE")
    p.add_argument("--scale", choices=["exp", "tanh", "softclip"], default="exp", help="MAF's log-scale map")
    p.add_argument("--draws", type=int, default=10, help="dequantization draws per test image")
    p.add_argument("--seed", type=int, default=0, help="seed of every random stream")
    p.add_argument("--out", default="out", help="directory for the PNG")
    p.add_argument("--dpi", type=int, default=80, help="resolution of the PNG")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG even if matplotlib is installed")
    p.add_argument("--quick", action="store_true", help="a tiny MAF, 3 epochs, 2 draws: a smoke run")
    args = p.parse_args(argv)
    announce_quick(args)
    if args.quick:
        args.epochs, args.layers, args.hidden, args.draws = 3, 2, [16], 2
    t_start = time.perf_counter()

    def say(msg):
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", flush=True)

    for line in env_lines(np, scipy):
        print(line)
    try:
        (x_train, _), (x_test, _) = data.digits("train"), data.digits("test")
    except ImportError as e:
        print(f"exp_forgotten_dequantization: {e}")
        return 2
    constant = int((x_train.std(axis=0) == 0).sum())
    say(f"digits: {len(x_train)} train / {len(x_test)} test images, {LEVELS} levels, D = {DIM}; {constant} pixels "
        f"are the same in every training image (a raw model can shrink them without limit)")
    hists, diverged, final = {}, {}, {}
    for name in MODELS:
        flow = build(args)
        params = flow.init(stream(args.seed, INIT))             # the same start for both models
        say(f"{name}: MAF, {args.layers} layers, MADE {DIM}-{'-'.join(map(str, args.hidden))}-{2 * DIM}, "
            f"{args.scale} scale, {sum(v.size for v in params.values()):,} parameters; {args.epochs} epochs, "
            f"batch {args.batch}, Adam lr {args.lr:g} constant")
        final[name], hists[name], diverged[name] = train(name, flow, params, x_train, x_test, args, say)

    written = []
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
            os.makedirs(args.out, exist_ok=True)
            written.append(os.path.join(args.out, "forgotten_dequantization.png"))
            plot(written[-1], hists, args.dpi)
        except ImportError:
            print("matplotlib is not installed: skipping the plot (pip install 'npflows[plot]')")
    report(hists, diverged, args, written, t_start)
    return 0


def report(hists, diverged, args, written, t_start):
    print(f"\nBits/dim of the discrete test digits (lower is better); 'train objective' is what the training loss "
          f"reports, on the data each model is trained on; dequantized: {args.draws} draws per test image")
    rows = []
    for name, h in hists.items():
        if not h["epoch"]:
            rows.append([name, 0, diverged[name] or "no", *["-"] * 6])
            continue
        tests = np.array(h["test"], float)
        best = int(np.argmin(tests)) if np.isfinite(tests).any() else None
        rows.append([name, h["epoch"][-1], "yes: " + diverged[name][:40] if diverged[name] else "no",
                     f"{h['train'][-1]:.4f}", f"{min(h['train']):.4f}", f"{h['test'][-1]:.4g}",
                     f"{h['test'][best]:.4f} @ {h['epoch'][best]}" if best is not None else "inf",
                     int((~np.isfinite(tests)).sum()), f"{h['grid'][-1]:.4f}"])
    print(fmt_table(["model", "epochs", "diverged", "train objective", "lowest", "test, dequantized",
                     "lowest (info)", "epochs inf", "test at u = 0"], rows))
    print("epochs inf: epochs whose dequantized test score was infinite (the model's density overflowed or vanished "
          "at a dequantized test image)")
    print("baselines on the same split (scripts/digits_baselines.py): per-pixel categorical 2.43, full-covariance "
          "logit Gaussian 2.46; log2(17) = 4.0875 is a uniform guess")
    print()
    print(verdict(hists, args.quick))
    if written:
        print("wrote " + ", ".join(written))
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    print(f"total {time.perf_counter() - t_start:.0f} s; load average (1, 5, 15 min) at the end: {load}")


def verdict(hists, quick):
    """The lesson, if the numbers show it: at the last epoch the raw model's training objective is below the
    dequantized model's (it claims a better likelihood) while its dequantized test bits/dim is worse, and that
    bits/dim got worse during training (the last epoch above the curve's minimum)."""
    prefix = "(a --quick smoke run: these numbers are not the experiment's) " if quick else ""
    raw, deq = hists["raw"], hists["dequantized"]
    if not raw["epoch"] or not deq["epoch"]:
        return prefix + "a model ran no epoch: nothing to compare"
    claims_better = raw["train"][-1] < deq["train"][-1]
    is_worse = raw["test"][-1] > deq["test"][-1]
    degrades = raw["test"][-1] > min(raw["test"])
    what = (f"raw: train objective {raw['train'][0]:.3f} -> {raw['train'][-1]:.3f} bpd, dequantized test "
            f"{raw['test'][0]:.4g} -> {raw['test'][-1]:.4g} bpd (lowest {min(raw['test']):.4g}); dequantized: train "
            f"{deq['train'][-1]:.3f}, test {deq['test'][-1]:.4f} bpd")
    if claims_better and is_worse and degrades:
        return prefix + "Lesson: " + LESSON + ".\n  " + what
    return (prefix + "The numbers do not show the whole lesson (raw model claiming a better training likelihood, "
            "scoring worse under dequantization, and getting worse as it trains); what they show:\n  " + what)


if __name__ == "__main__":
    sys.exit(main())
