"""Toy 2-D densities generated in code (no network, no files), each from an explicit Generator.

``two_moons`` follows scikit-learn's ``make_moons`` geometry with t drawn uniformly (not on a grid), and
:func:`two_moons_log_density` gives its exact density, so a model's log-likelihood can be compared with
the limit no model can beat.

:func:`digits` loads real data: the 8x8 handwritten digits that scikit-learn ships with its package (no
network), split into fixed train, validation and test sets.  scikit-learn is an optional extra
(``pip install "npflows[digits]"``), imported only when :func:`digits` is called.
"""
import functools

import numpy as np
from scipy.special import logsumexp

from ._checks import check_count, check_rng

DATASETS = ("two_moons", "eight_gaussians", "checkerboard")


def two_moons(n, rng, noise=0.1, dtype=np.float64):
    """``n`` points: half on the outer arc (cos t, sin t), half on the inner arc (1 - cos t, 0.5 - sin t),
    t ~ U[0, pi], plus isotropic Gaussian noise of standard deviation ``noise``.  Shape ``(n, 2)``."""
    n, rng = check_count("two_moons", n), check_rng("two_moons", rng)
    n_out = n // 2
    t = rng.uniform(0.0, np.pi, n)
    outer = np.arange(n) < n_out
    cx = np.where(outer, np.cos(t), 1.0 - np.cos(t))
    cy = np.where(outer, np.sin(t), 0.5 - np.sin(t))
    x = np.stack([cx, cy], axis=1) + noise * rng.standard_normal((n, 2))
    return x[rng.permutation(n)].astype(dtype)


def two_moons_log_density(x, noise=0.1, n_quad=4001):
    """Exact log-density of :func:`two_moons` data (even n), by quadrature over t.

    :math:`p(x) = \\tfrac12\\sum_{arc}\\frac1\\pi\\int_0^\\pi \\mathcal N(x; c_{arc}(t), \\sigma^2 I)\\,dt`,
    the integral by the trapezoid rule on ``n_quad`` nodes (the integrand is smooth and the result
    converges far below 1e-6 nats at the default).
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.linspace(0.0, np.pi, n_quad)
    w = np.full(n_quad, 1.0 / (n_quad - 1))
    w[[0, -1]] *= 0.5                                     # trapezoid weights of (1/pi) * int dt
    centres = np.concatenate([np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)])
    logw = np.log(np.concatenate([w, w]) * 0.5)
    out = np.empty(x.shape[0])
    for s in range(0, x.shape[0], 2048):                  # chunks keep memory at 2048 x 8002
        d2 = ((x[s:s + 2048, None, :] - centres[None]) ** 2).sum(-1)
        out[s:s + 2048] = logsumexp(logw - 0.5 * d2 / noise ** 2, axis=1)
    return out - np.log(2 * np.pi * noise ** 2)


def eight_gaussians(n, rng, radius=2.0, std=0.2, dtype=np.float64):
    """Equal mixture of 8 isotropic Gaussians at the angles k*pi/4 on a circle of ``radius``."""
    n, rng = check_count("eight_gaussians", n), check_rng("eight_gaussians", rng)
    k = rng.integers(0, 8, n)
    centres = radius * np.stack([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)], axis=1)
    return (centres + std * rng.standard_normal((n, 2))).astype(dtype)


def checkerboard(n, rng, dtype=np.float64):
    """Uniform on the 8 dark squares of a 4x4 checkerboard on [-2, 2]^2 (density 1/8 there)."""
    n, rng = check_count("checkerboard", n), check_rng("checkerboard", rng)
    x1 = rng.uniform(-2.0, 2.0, n)
    x2 = rng.uniform(0.0, 1.0, n) - rng.integers(0, 2, n) * 2.0   # in [-2,-1) or [0,1)
    x2 = x2 + (np.floor(x1) % 2)                                     # shift by one on odd columns
    return np.stack([x1, x2], axis=1).astype(dtype)


def load(name, n, rng, **kw):
    """One of :data:`DATASETS` by name."""
    if name not in DATASETS:
        raise ValueError(f"data.load: unknown dataset {name!r}; choose one of {DATASETS}")
    return {"two_moons": two_moons, "eight_gaussians": eight_gaussians, "checkerboard": checkerboard}[name](n, rng, **kw)


DIGITS_LEVELS = 17
"""Grey levels of :func:`digits`: integers 0..16 (each pixel counts the set bits of a 4x4 block of the
original 32x32 bitmaps)."""

DIGITS_SPLITS = {"train": (0, 1257), "validation": (1257, 1437), "test": (1437, 1797)}
"""Positions in the permutation ``numpy.random.default_rng(0).permutation(1797)`` that make each split:
``perm[0:1257]`` train, ``perm[1257:1437]`` validation, ``perm[1437:1797]`` test."""


@functools.lru_cache(maxsize=1)
def _digits_all():
    """All 1,797 images ``(1797, 64)`` int64 and labels, in scikit-learn's order, read-only."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("npflows.data.digits needs scikit-learn, which ships the 8x8 digits with its package "
                          "(no download): pip install \"npflows[digits]\" (or pip install scikit-learn)") from e
    bunch = load_digits()
    raw, labels = np.asarray(bunch.data), np.asarray(bunch.target)
    images = raw.astype(np.int64)
    if (raw.shape != (1797, 64) or labels.shape != (1797,) or not np.array_equal(images, raw)
            or images.min() < 0 or images.max() >= DIGITS_LEVELS):
        raise RuntimeError(f"npflows.data.digits: scikit-learn's load_digits returned data of shape {raw.shape} "
                           f"with values in [{raw.min()}, {raw.max()}]; expected 1797 x 64 integers in "
                           f"0..{DIGITS_LEVELS - 1}")
    images.setflags(write=False)
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def digits_indices(split):
    """Indices into scikit-learn's ``load_digits()`` order of the images in ``split`` (``"train"``,
    ``"validation"`` or ``"test"``), in the order :func:`digits` returns them: the slice
    ``DIGITS_SPLITS[split]`` of ``numpy.random.default_rng(0).permutation(1797)``."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"data.digits: unknown split {split!r}; choose one of {tuple(DIGITS_SPLITS)}")
    start, stop = DIGITS_SPLITS[split]
    return np.random.default_rng(0).permutation(1797)[start:stop]


def digits(split):
    """The 8x8 handwritten digits bundled with scikit-learn (the UCI optical-recognition test set), one split.

    Parameters
    ----------
    split : {"train", "validation", "test"}
        1257, 180 and 360 images: with ``perm = numpy.random.default_rng(0).permutation(1797)`` (indices into
        ``sklearn.datasets.load_digits()``), train is ``perm[0:1257]``, validation ``perm[1257:1437]`` and
        test ``perm[1437:1797]`` (:data:`DIGITS_SPLITS`, :func:`digits_indices`), in that order.

    Returns
    -------
    images : ndarray, int64, shape (N, 64)
        Grey levels 0..16 (:data:`DIGITS_LEVELS` = 17 levels), each row an 8x8 image in row-major order
        (``images.reshape(N, 1, 8, 8)`` gives the NCHW image).  A fresh, writable copy.
    labels : ndarray, int64, shape (N,)
        The digit 0..9 that each image shows.

    Raises
    ------
    ImportError
        When scikit-learn is not installed; the message names the extra, ``pip install "npflows[digits]"``.
    ValueError
        For an unknown ``split``.

    Notes
    -----
    The data never leave the machine: scikit-learn ships them inside its package (``load_digits`` reads a
    local file).  For a continuous density model, dequantize them first (:mod:`npflows.dequantize`).
    """
    idx = digits_indices(split)
    images, labels = _digits_all()
    return images[idx].copy(), labels[idx].copy()
