"""Two baselines for bits/dim on the 8x8 digits, computed in closed form on the split of issue 13.

The data: ``npflows.data.digits`` (scikit-learn's 1,797 images, grey levels 0..16, K = 17 levels, D = 64),
split by ``numpy.random.default_rng(0).permutation(1797)`` into 1257 train / 180 validation / 360 test.
Every figure is test bits/dim of the discrete images (lower is better), its standard error over the 360
test images beside it.  No model here is trained by gradient steps: each is a maximum-likelihood fit in
closed form.

1. **Per-pixel categorical.**  Pixel d takes level k with probability (n_dk + a)/(N + K a), n_dk the count
   in the N = 1257 training images, add-``a`` smoothing with a = 1 (Laplace; ``--smoothing``), pixels
   independent.  A discrete model: its bits/dim is -log2 P(x)/64 exactly, with no dequantization.
2. **Full-covariance Gaussian in logit space.**  z = logit(0.05 + 0.9 (x + u)/17) (``npflows.dequantize``),
   z ~ N(mu, Sigma), scored by the dequantization bound (``npflows.dequantize.bits_per_dim``: the mean over
   10 draws of u per test image of log N(z) + log|dz/dy| - 64 ln 17).  Two fits:

   a. *one dequantized copy* (the issue's protocol as written): the training images dequantized once (one
      draw of u), mu and Sigma their sample mean and covariance (ML, divided by N);
   b. *exact*: the ML Gaussian of the dequantized training distribution itself (the limit of infinitely many
      copies).  Because u is independent across pixels, its mean is the image average of m(x_d) and its
      covariance Cov_n[m(x_n)] + diag(E_n[v(x_nd)]) (law of total covariance), where m(k) and v(k) are the
      mean and variance of logit(0.05 + 0.9 (k + u)/17) over u ~ U[0, 1): 17 one-dimensional integrals,
      by 30-node Gauss-Legendre quadrature (error far below 1e-15: the integrand is analytic on each cell, its
      nearest singularity, p = 0, lies 1.9 half-widths beyond the edge of the first cell).

   For both fits the script also gives the bound's exact expectation over u (no Monte Carlo):
   E_u[(z - mu)' P (z - mu)] = (m(x) - mu)' P (m(x) - mu) + sum_d P_dd v(x_d) with P = Sigma^{-1}, and
   E_u[log|dz/dy|] per level by the same quadrature.  The 10-draw figures scatter around it by their Monte
   Carlo error, printed beside them.

Targets (issue 13 states both figures to two decimals): the categorical 2.43, the logit Gaussian 2.46.  A
baseline reproduces its figure when it rounds to it, |bpd - stated| <= 0.005.  Fit (a) depends on its one
draw of u, so the figure judged for it is the protocol's expected value: the exact expected bound averaged
over ``--fit-seeds`` (20) fits, each to its own dequantized copy (u from ``SeedSequence([seed, 1, s])``; fit 0
is the one in the table).  The test and validation draws come from ``SeedSequence([seed, 2, j])``, the same u
for both Gaussians.

Measured (``--seed 0``, about 4 s; "exact expectation": no Monte Carlo; the Monte Carlo standard error of
the 10-draw figures is 0.0008):

==================================================  ========  ======  ==========  ======
baseline (fitted on the 1257 training images)       test bpd  stderr  validation  stated
==================================================  ========  ======  ==========  ======
categorical, add-1 smoothing                        2.4329    0.0112  2.4286      2.43
Gaussian, one dequantized copy, 10 draws            2.4648    0.0127  2.4575
  exact expectation                                 2.4655    0.0125
  exact expectation, mean over 20 fits              2.4646                        2.46
Gaussian, exact ML fit, 10 draws                    2.4538    0.0122  2.4476
  exact expectation                                 2.4547    0.0120
==================================================  ========  ======  ==========  ======

Both stated figures are reproduced.  What decides the Gaussian's: a covariance estimated from one dequantized
copy carries the noise of that copy and overfits it, which costs 0.010 bits/dim on test against the exact
fit (2.4547, which rounds to 2.45).  The 20 single-copy fits range over 2.4627-2.4660 (sd 0.0008), so one
run reads 2.46 or, from 2.465 up, 2.47.  More copies move it towards the exact fit (``--copies``, mean of 20
fits each): 2 copies 2.4596, 3 2.4580, 5 2.4567, 10 2.4557.  Neither the split nor the draws nor the
smoothing explain 2.46 otherwise: fitting on train + validation (``--fit-on train+validation``, 1437
images) gives 2.4612 for the one-copy protocol, 2.4527 for the exact fit and 2.4314 for the categorical;
the categorical gives 2.4312-2.4329 for add-a smoothing with a from 0.01 to 1 (2.4366 at a = 2); 10 draws
differ from the exact expectation by their Monte Carlo error alone.

Usage::

    python scripts/digits_baselines.py            # the table above
    python scripts/digits_baselines.py --quick    # 2 draws, 3 fits: a smoke run

Needs scikit-learn for the data (``pip install "npflows[digits]"``); without it the script says so and
exits with status 2.
"""
import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import numpy as np  # noqa: E402
from scipy.linalg import cho_solve, solve_triangular  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from npflows import data  # noqa: E402
from npflows.dequantize import ALPHA, dequantization_bound, discrete_bits_per_dim, logit_transform, preprocess  # noqa: E402

LEVELS = data.DIGITS_LEVELS
STATED = {"categorical": 2.43, "gaussian": 2.46}
"""Issue 13's figures, two decimals: reproduced when |bpd - stated| <= 0.005."""
QUAD_NODES = 30


# ---------------------------------------------------------------- the per-pixel categorical
def categorical_fit(x, levels=LEVELS, smoothing=1.0):
    """Per-pixel probabilities ``(D, levels)``: (count + smoothing)/(N + levels * smoothing)."""
    counts = np.stack([np.bincount(x[:, d], minlength=levels) for d in range(x.shape[1])])
    return (counts + smoothing) / (x.shape[0] + levels * smoothing)


def categorical_log_pmf(probs, x):
    """log P(x) in nats per image, ``(N,)``: the sum over pixels of log p_d(x_d)."""
    return np.log(probs[np.arange(x.shape[1]), x]).sum(axis=1)


# ---------------------------------------------------------------- the logit Gaussian
def level_moments(levels=LEVELS, alpha=ALPHA, nodes=QUAD_NODES):
    """Per grey level k: the mean m(k), variance v(k) of z = logit(alpha + (1 - 2 alpha)(k + u)/levels) and
    the mean l(k) of log dz/dy, over u ~ U[0, 1); Gauss-Legendre on [0, 1], shapes ``(levels,)``."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    u, w = (t + 1.0) / 2.0, w / 2.0
    y = ((np.arange(levels)[:, None] + u[None, :]) / levels).reshape(-1, 1)
    z, logdet = logit_transform(y, alpha)           # one coordinate per row: logdet is log dz/dy per point
    z, logdet = z.reshape(levels, nodes), logdet.reshape(levels, nodes)
    m = z @ w
    return m, (z - m[:, None]) ** 2 @ w, logdet @ w


def gaussian_fit_samples(z):
    """ML mean and covariance (divided by N) of the rows of ``z``."""
    mu = z.mean(axis=0)
    zc = z - mu
    return mu, zc.T @ zc / z.shape[0]


def gaussian_fit_exact(x, moments):
    """The ML Gaussian of the dequantized distribution of the images ``x`` (infinitely many draws of u):
    mean E_n[m(x_n)], covariance Cov_n[m(x_n)] + diag(E_n[v(x_nd)])."""
    m, v, _ = moments
    mu, cov = gaussian_fit_samples(m[x])
    return mu, cov + np.diag(v[x].mean(axis=0))


def gaussian_log_prob(mu, cov):
    """``log_prob(z)`` of N(mu, cov) by its Cholesky factor, for ``npflows.dequantize.bits_per_dim``."""
    chol = np.linalg.cholesky(cov)
    const = -np.log(np.diag(chol)).sum() - 0.5 * len(mu) * math.log(2 * math.pi)

    def log_prob(z):
        r = solve_triangular(chol, (z - mu).T, lower=True)
        return const - 0.5 * (r * r).sum(axis=0)
    return log_prob


def gaussian_expected_bound(mu, cov, x, moments, levels=LEVELS):
    """E_u of the dequantization bound of N(mu, cov) per image (nats, ``(N,)``), in closed form: the
    Gaussian's expected log-density from the first two moments of z, plus E_u log|dz/dy|, minus D log K."""
    m, v, l = moments
    chol = np.linalg.cholesky(cov)
    prec_diag = np.diag(cho_solve((chol, True), np.eye(len(mu))))
    r = solve_triangular(chol, (m[x] - mu).T, lower=True)
    quad = (r * r).sum(axis=0) + v[x] @ prec_diag
    elog = -0.5 * quad - np.log(np.diag(chol)).sum() - 0.5 * len(mu) * math.log(2 * math.pi)
    return elog + l[x].sum(axis=1) - x.shape[1] * math.log(levels)


def _bpd(bound, dim=64):
    return discrete_bits_per_dim(bound, dim)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--draws", type=int, default=10, help="dequantization draws per test image")
    p.add_argument("--smoothing", type=float, default=1.0, help="add-a smoothing of the categorical (1: Laplace)")
    p.add_argument("--fit-seeds", type=int, default=20,
                   help="independent fits (a), each to its own dequantized copy, whose exact expected bounds are averaged")
    p.add_argument("--copies", type=int, default=1,
                   help="dequantized copies of the training images that fit (a) is fitted to (the issue's: 1)")
    p.add_argument("--fit-on", choices=("train", "train+validation"), default="train",
                   help="the images the baselines are fitted to")
    p.add_argument("--seed", type=int, default=0, help="seed of every dequantization draw")
    p.add_argument("--quick", action="store_true", help="2 draws and 3 fits: a smoke run")
    args = p.parse_args(argv)
    for name in ("draws", "copies", "fit_seeds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    announce_quick(args)
    if args.quick:
        args.draws, args.fit_seeds = 2, 3
    t0 = time.perf_counter()

    def say(msg):
        print(f"[{time.perf_counter() - t0:6.2f} s] {msg}", flush=True)

    try:
        splits = {s: data.digits(s)[0] for s in ("train", "validation", "test")}
    except ImportError as e:
        print(f"digits_baselines: {e}")
        return 2
    fit = splits["train"] if args.fit_on == "train" else np.concatenate([splits["train"], splits["validation"]])
    say(f"digits: {len(splits['train'])} train / {len(splits['validation'])} validation / {len(splits['test'])} "
        f"test images, {LEVELS} levels, D = 64; fitted on {args.fit_on} ({len(fit)} images)")
    rows = []

    probs = categorical_fit(fit, smoothing=args.smoothing)
    cat = {s: _bpd(categorical_log_pmf(probs, splits[s])) for s in ("test", "validation")}
    rows.append((f"categorical, add-{args.smoothing:g} smoothing", cat, "categorical"))
    say(f"categorical fitted: test {cat['test'].mean:.4f} bits/dim")
    sweep = ", ".join(f"a={a:g}: {_bpd(categorical_log_pmf(categorical_fit(fit, smoothing=a), splits['test'])).mean:.4f}"
                      for a in (0.01, 0.1, 0.5, 1.0, 2.0))
    say(f"categorical test bits/dim against the smoothing: {sweep}")

    moments = level_moments()
    # fit s (of --fit-seeds) draws its u from SeedSequence([seed, 1, s]); fit 0 is the one-copy row's.  The test and
    # validation draws come from SeedSequence([seed, 2, j]), the same u for both Gaussians (a paired comparison).
    fits = []
    fit_copies = np.concatenate([fit] * args.copies)
    for s in range(args.fit_seeds):
        rng = np.random.default_rng(np.random.SeedSequence([args.seed, 1, s]))
        mu, cov = gaussian_fit_samples(preprocess(fit_copies, rng, LEVELS)[0])
        fits.append((mu, cov, _bpd(gaussian_expected_bound(mu, cov, splits["test"], moments)).mean))
    singles = np.array([f[2] for f in fits])
    protocol = float(singles.mean())
    one = "one dequantized copy" if args.copies == 1 else f"{args.copies} dequantized copies"
    say(f"Gaussian on {one}, {len(singles)} independent fits (exact expectation each): mean {protocol:.4f}, "
        f"sd {singles.std(ddof=1) if len(singles) > 1 else float('nan'):.4f}, range {singles.min():.4f}-"
        f"{singles.max():.4f}")
    for label, (mu, cov), extra in (
            (f"Gaussian, {one}", fits[0][:2],
             (f"  exact expectation, mean over {len(singles)} fits", protocol, "gaussian")),
            ("Gaussian, exact ML fit", gaussian_fit_exact(fit, moments), None)):
        log_prob = gaussian_log_prob(mu, cov)
        res, mc_se = {}, None
        for j, s in enumerate(("test", "validation")):
            # bits_per_dim(log_prob, images, rng, LEVELS, draws) is _bpd of the mean over draws of these terms;
            # the terms themselves also give the Monte Carlo error of that mean
            terms = dequantization_bound(log_prob, splits[s], np.random.default_rng(np.random.SeedSequence(
                [args.seed, 2, j])), LEVELS, draws=args.draws, per_draw=True)
            res[s] = _bpd(terms.mean(axis=0))
            if s == "test" and args.draws > 1:
                mc_se = terms.mean(axis=1).std(ddof=1) / math.sqrt(args.draws) / (64 * math.log(2))
        expected = _bpd(gaussian_expected_bound(mu, cov, splits["test"], moments))
        say(f"{label}: test {res['test'].mean:.4f} bits/dim over {args.draws} draws, Monte Carlo standard error "
            f"{mc_se if mc_se is not None else float('nan'):.4f}; exact expectation {expected.mean:.4f} (difference "
            f"{res['test'].mean - expected.mean:+.4f})")
        rows.append((f"{label}, {args.draws} draws", res, None))
        rows.append(("  exact expectation", {"test": expected}, None))
        if extra:
            rows.append((extra[0], {"test": extra[1]}, extra[2]))

    print()
    print(f"test bits/dim of the discrete digits (lower is better); stderr over the {len(splits['test'])} test images")
    if args.fit_on != "train":
        print("(the validation images are part of the fit here: the validation column is not held out)")
    print(f"{'baseline':<56} {'test bpd':>9} {'stderr':>8} {'validation':>11} {'stated':>7}")
    missed = False
    for label, res, key in rows:
        t = res["test"]
        mean, se = (t.mean, f"{t.stderr:8.4f}") if hasattr(t, "stderr") else (t, " " * 8)
        val = f"{res['validation'].mean:11.4f}" if "validation" in res else " " * 11
        stated = STATED.get(key)
        print(f"{label:<56} {mean:9.4f} {se} {val} {'' if stated is None else f'{stated:7.2f}'}")
    print()
    judged = [("categorical", rows[0][1]["test"].mean, "the categorical"),
              ("gaussian", protocol, f"the logit Gaussian on {one} (mean of {len(singles)} fits' exact expectations)")]
    for key, value, what in judged:
        met = abs(value - STATED[key]) <= 0.005
        missed |= not met
        print(f"target: {what} reproduces the stated {STATED[key]:.2f} (|{value:.4f} - {STATED[key]:.2f}| <= 0.005): "
              f"{target_verdict(met, args.quick)}")
    say("done")
    return exit_status(missed, args.quick)


if __name__ == "__main__":
    sys.exit(main())
