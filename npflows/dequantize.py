"""Discrete images as continuous data: uniform dequantization, RealNVP's logit transform, and bits per
dimension of the discrete data as a bound that accounts for both.

A density model :math:`p` (any npflows flow, or a baseline) is fitted to the logit-space vectors
:math:`z`, and its test score is reported as a bound on :math:`-\\log_2 P(x)/D` of the integer images
:math:`x`, never as the density of :math:`z`, which changes with the preprocessing:

.. code-block:: python

    z, logdet = preprocess(x_train, rng, levels=17)            # train on z
    bpd = bits_per_dim(lambda z: flow.log_prob(params, z), x_test, rng, levels=17)
    print(f"{bpd.mean:.3f} +- {bpd.stderr:.3f} bits/dim")

Notes
-----
**Dequantization** (Theis et al. 2016, "A note on the evaluation of generative models", arXiv:1511.01844;
Ho et al. 2019, "Flow++", arXiv:1902.00275, on variational dequantization).  The data are integers
:math:`x \\in \\{0, \\dots, K-1\\}^D`.  A continuous density :math:`p_v` on :math:`[0, K)^D` defines a
discrete model by integrating it over each unit cell, :math:`P(x) = \\int_{[0,1)^D} p_v(x + u)\\,du`, and
Jensen's inequality with :math:`u \\sim U[0,1)^D` gives

.. math:: \\log P(x) \\ge \\mathbb E_u[\\log p_v(x + u)],

with equality exactly when :math:`p_v` is constant on the cell of :math:`x` (Flow++ tightens the bound with a
learned :math:`q(u \\mid x)`; the uniform one is :math:`q = 1`).  Maximising :math:`\\log p_v` on dequantized
data therefore maximises a lower bound on the discrete log-likelihood, and a model cannot cheat by putting
infinite density on the integer points.

**The preprocessing.**  :math:`y = (x + u)/K \\in [0, 1)^D`, then RealNVP's logit (Dinh et al. 2016,
"Density estimation using Real NVP", arXiv:1605.08803, sec. 4.1), which keeps the model away from the
boundary of the unit cube:

.. math:: p = \\alpha + (1 - 2\\alpha) y, \\qquad z = \\log p - \\log(1 - p),

with :math:`\\alpha = 0.05`.  It acts on each coordinate, so its Jacobian is diagonal and
:math:`\\log|\\det \\partial z/\\partial y| = \\sum_d [\\log(1-2\\alpha) - \\log p_d - \\log(1 - p_d)]`; both are
npflows' :class:`~npflows.bijectors.elementwise.Logit` bijector with this ``alpha``, which this module uses
(with its input checks: :math:`y \\in [0, 1]`).

**The bound.**  With :math:`v = x + u = K y`, the change of variables from :math:`v` to :math:`z` gives
:math:`\\log p_v(v) = \\log p_z(z) + \\log|\\det \\partial z/\\partial y| - D \\log K` (the last term is the
Jacobian of :math:`y = v/K`: for the digits, :math:`-64 \\ln 17`).  So

.. math::
    -\\frac{\\log_2 P(x)}{D} \\le \\mathrm{bpd}(x) = -\\frac{\\mathbb E_u[\\log p_z(z) +
    \\log|\\det \\partial z/\\partial y|] - D \\log K}{D \\ln 2},

the expectation estimated by the mean over ``draws`` independent dequantizations of each image.  The mean over
draws is an unbiased estimate of the bound itself (not of a tighter or looser quantity), so more draws only
reduce its Monte Carlo noise.  :func:`bits_per_dim` reports the mean of :math:`\\mathrm{bpd}(x)` over the
images and its standard error over the images.

*A check by hand*: the density uniform on :math:`[0,1)^D` in :math:`y` is :math:`p_v = K^{-D}` on
:math:`[0, K)^D`, constant on every cell, so the bound is exact: :math:`P(x) = K^{-D}` and
:math:`\\mathrm{bpd} = \\log_2 K` (4.0875 for :math:`K = 17`), the cost of a uniform guess among K levels.

**Rounding.**  :math:`u` is drawn from :math:`[0, 1)` in float64 and :math:`(x + u)/K` is rounded, so a
dequantized value lies in the closed cell :math:`[x/K, (x+1)/K]`: it lands on an end with probability below
:math:`2^{-48}` per value, which the bound (an integral over the cell) does not notice.
"""
import math
from typing import NamedTuple

import numpy as np

from ._checks import FLOAT_DTYPES, check_count, check_rng
from .bijectors.elementwise import Logit

ALPHA = 0.05
"""RealNVP's logit squeeze (Dinh et al. 2016, sec. 4.1)."""


class BitsPerDim(NamedTuple):
    """Bits per dimension over a set of images: ``mean`` and its standard error ``stderr`` over the images
    (sample standard deviation / sqrt(N); NaN for a single image)."""
    mean: float
    stderr: float


def _check_levels(owner, levels):
    return check_count(owner, levels, what="levels", minimum=2)


def _check_images(owner, x, levels):
    """``x``: an integer array (N, D) with every value in 0..levels-1."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{owner}: expected the images as a numpy integer array (N, D), got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{owner}: expected integer grey levels 0..{levels - 1} (an integer dtype), got dtype "
                         f"{x.dtype}; the images must not be dequantized or rescaled already")
    if x.ndim != 2:
        raise ValueError(f"{owner}: expected images of rank 2 (N, D), batch first and flattened, got shape {x.shape}")
    if x.size and (x.min() < 0 or x.max() >= levels):
        bad = x[(x < 0) | (x >= levels)]
        raise ValueError(f"{owner}: grey levels must lie in 0..{levels - 1} (levels={levels}); {bad.size} value(s) "
                         f"do not (e.g. {int(bad.flat[0])})")
    return x


def _logit(owner, dim, alpha):
    """The :class:`~npflows.bijectors.elementwise.Logit` bijector that computes the preprocessing; its
    constructor validates ``alpha`` (the error prefixed with ``owner``)."""
    try:
        return Logit(dim, alpha=alpha)
    except ValueError as e:
        raise ValueError(f"{owner}: {e}") from None


def _dequantize(x, rng, levels, dtype):
    """:func:`dequantize` on arguments already checked."""
    return ((x + rng.random(x.shape)) / levels).astype(dtype, copy=False)


def dequantize(x, rng, levels, dtype=np.float64):
    """Uniform dequantization :math:`y = (x + u)/K`, :math:`u \\sim U[0,1)^D` (module Notes).

    Parameters
    ----------
    x : ndarray of int, shape (N, D)
        Grey levels 0..levels-1.
    rng : numpy.random.Generator
        Draws ``u`` (N*D uniforms, row by row).
    levels : int
        K, the number of grey levels (17 for the digits, 256 for 8-bit images).
    dtype : float32 or float64
        Of the result; ``u`` and the division are float64 either way, then rounded once.

    Returns
    -------
    y : ndarray, shape (N, D)
        In the cell :math:`[x/K, (x+1)/K]` of each value (closed after rounding; module Notes).
    """
    owner = "dequantize"
    levels = _check_levels(owner, levels)
    x = _check_images(owner, x, levels)
    check_rng(owner, rng)
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise ValueError(f"{owner}: dtype must be float32 or float64, got {np.dtype(dtype)}")
    return _dequantize(x, rng, levels, dtype)


def logit_transform(y, alpha=ALPHA):
    """:math:`z = \\mathrm{logit}(\\alpha + (1-2\\alpha)y)` and :math:`\\log|\\det \\partial z/\\partial y|`,
    shapes (N, D) and (N,): npflows' :class:`~npflows.bijectors.elementwise.Logit` (module Notes).

    ``y`` is a float32 or float64 array in [0, 1] (``ValueError`` otherwise, from the bijector); the result
    has its dtype."""
    if not isinstance(y, np.ndarray) or y.ndim != 2:
        raise ValueError(f"logit_transform: expected a float array (N, D), got "
                         f"{getattr(y, 'shape', type(y).__name__)}")
    z, logdet, _ = _logit("logit_transform", y.shape[1], alpha).forward({}, y)
    return z, logdet


def preprocess(x, rng, levels, alpha=ALPHA, dtype=np.float64):
    """Dequantize, then logit: ``(z, logdet)`` with ``logdet`` :math:`= \\log|\\det \\partial z/\\partial y|`
    of shape (N,), so that :math:`\\log p_v(x + u) = \\log p_z(z) + \\mathrm{logdet} - D\\log K`.

    The training data of a model scored by :func:`bits_per_dim`: draw a fresh ``u`` every epoch (or once, as
    a fixed dequantized copy), from an explicit ``rng``."""
    return logit_transform(dequantize(x, rng, levels, dtype), alpha)


def dequantization_bound(log_prob, x, rng, levels, alpha=ALPHA, draws=10, per_draw=False, dtype=np.float64):
    """The dequantization lower bound on :math:`\\log P(x)` in nats, per image (module Notes).

    Parameters
    ----------
    log_prob : callable
        ``log_prob(z) -> (N,)``: the model's log-density of logit-space points ``z`` of shape (N, D), e.g.
        ``lambda z: flow.log_prob(params, z)``.  Called once per draw, with the whole batch.
    x : ndarray of int, shape (N, D)
        The discrete images, grey levels 0..levels-1.
    rng : numpy.random.Generator
        Draws the dequantization noise.
    levels : int
        K.
    alpha : float
        The logit squeeze (0.05, RealNVP's).
    draws : int
        Independent dequantizations of every image (default 10).
    per_draw : bool
        Return every draw's bound ``(draws, N)`` instead of their mean ``(N,)``.
    dtype : float32 or float64
        Of the ``z`` passed to ``log_prob`` (a float32 model needs float32 data); the bound is summed in
        float64 either way.

    Returns
    -------
    ndarray, float64
        :math:`\\frac1S\\sum_{s=1}^S [\\log p_z(z_s) + \\log|\\det \\partial z_s/\\partial y_s|] - D\\log K`, shape
        (N,), or the terms (draws, N).

    Raises
    ------
    ValueError
        For bad images, ``levels``, ``alpha`` or ``draws``, and when ``log_prob`` returns anything but N finite
        numbers (a NaN, an inf, or a ``-inf`` density on dequantized data, whose bound would be infinite).
    """
    owner = "dequantization_bound"
    levels = _check_levels(owner, levels)
    x = _check_images(owner, x, levels)
    check_rng(owner, rng)
    draws = check_count(owner, draws, what="draws", minimum=1)
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise ValueError(f"{owner}: dtype must be float32 or float64, got {np.dtype(dtype)}")
    if not callable(log_prob):
        raise ValueError(f"{owner}: log_prob must be a callable z -> (N,) log-densities, got {type(log_prob).__name__}")
    n, dim = x.shape
    if n == 0:
        raise ValueError(f"{owner}: no images (x has shape {x.shape})")
    logit = _logit(owner, dim, alpha)       # checked once; each draw only dequantizes and transforms
    out = np.empty((draws, n))
    for s in range(draws):
        z, logdet, _ = logit.forward({}, _dequantize(x, rng, levels, dtype))
        lp = log_prob(z)
        lp = np.asarray(lp)
        if lp.shape != (n,) or not np.issubdtype(lp.dtype, np.floating):
            raise ValueError(f"{owner}: log_prob must return a float array of shape ({n},), one log-density per "
                             f"image, got dtype {lp.dtype} and shape {lp.shape}")
        if not np.isfinite(lp).all():
            bad = ~np.isfinite(lp)
            raise ValueError(f"{owner}: log_prob returned {int(bad.sum())} non-finite value(s) of {n} (e.g. "
                             f"{lp[bad][0]!r} at image {int(np.argmax(bad))}) on dequantized data; a -inf density "
                             f"there makes the bound, and bits/dim, infinite")
        out[s] = lp.astype(np.float64) + logdet.astype(np.float64)
    out -= dim * math.log(levels)
    return out if per_draw else out.mean(axis=0)


def discrete_bits_per_dim(log_pmf, dim):
    """Bits per dimension of exact discrete log-probabilities: :math:`-\\log P(x)/(D\\ln 2)` per image, its
    mean and standard error over the images.

    ``log_pmf``: :math:`\\log P(x)` in nats, shape (N,), finite (a discrete model such as the per-pixel
    categorical needs no dequantization); ``dim``: D.  Also the last step of :func:`bits_per_dim`."""
    owner = "discrete_bits_per_dim"
    dim = check_count(owner, dim, what="dim", minimum=1)
    lp = np.asarray(log_pmf, dtype=np.float64)
    if lp.ndim != 1 or lp.size == 0 or not np.isfinite(lp).all():
        raise ValueError(f"{owner}: expected a non-empty 1-D array of finite log-probabilities (nats), got shape "
                         f"{lp.shape}" + ("" if lp.ndim != 1 or lp.size == 0 else " with non-finite values"))
    bpd = -lp / (dim * math.log(2.0))
    stderr = float(bpd.std(ddof=1) / math.sqrt(bpd.size)) if bpd.size > 1 else math.nan
    return BitsPerDim(float(bpd.mean()), stderr)


def bits_per_dim(log_prob, x, rng, levels, alpha=ALPHA, draws=10, dtype=np.float64):
    """Bits per dimension of the discrete images ``x`` under a model of their logit-space form: the
    dequantization bound (:func:`dequantization_bound`, ``draws`` draws per image, default 10) in bits per
    dimension, its mean over the images and the standard error of that mean (module Notes).

    An upper bound on :math:`-\\log_2 P(x)/D` (lower is better); the standard error measures the spread over
    the images, not the Monte Carlo noise of the draws (smaller, and shrinking with ``draws``).  Returns
    :class:`BitsPerDim` ``(mean, stderr)``.  ``dtype``: of the ``z`` that ``log_prob`` receives."""
    bound = dequantization_bound(log_prob, x, rng, levels, alpha=alpha, draws=draws, dtype=dtype)
    return discrete_bits_per_dim(bound, x.shape[1])
