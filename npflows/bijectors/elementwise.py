"""Elementwise bijectors: affine scaling (NICE's diagonal scaling, ActNorm) and pointwise nonlinearities.

Every map here acts on each coordinate alone, so its Jacobian is diagonal and
:math:`\\log|\\det J| = \\sum_d \\log|f_d'(x_d)|`.
"""
import math

import numpy as np

from .._checks import check_array, check_interval
from ..core.bijector import Bijector


def sigmoid(x, xp=np):
    """:math:`\\sigma(x) = 1/(1+e^{-x})` to a few ulps in both tails, traceable with ``xp``.

    With :math:`e = e^{-|x|} \\in (0, 1]`: :math:`\\sigma(x) = 1/(1+e)` for :math:`x \\ge 0` and
    :math:`e/(1+e)` for :math:`x < 0`.  Both branches are finite for every finite x (no overflow in the
    branch ``where`` discards), and each is a few correctly rounded operations, so the relative error is
    a few ulps down to :math:`x \\approx -708` (below, :math:`\\sigma(x)` is subnormal and float64 itself
    holds fewer digits; it is 0 below :math:`x \\approx -745`).
    (``(tanh(x/2) + 1)/2`` adds 1 to a number within :math:`2e^{x}` of -1 and keeps no relative digit of
    :math:`\\sigma(x)` below :math:`x \\approx -37`.)  ``-|x|`` is written as ``where(x >= 0, -x, x)`` so
    that autograd differentiates it correctly at 0.
    """
    pos = x >= 0
    e = xp.exp(xp.where(pos, -x, x))
    return xp.where(pos, 1.0, e) / (1.0 + e)


def sigmoid_prime(x):
    """:math:`\\sigma'(x) = \\sigma(x)\\sigma(-x) = e/(1+e)^2` with :math:`e = e^{-|x|}` (even in x): accurate
    in both tails, where :math:`\\sigma(1-\\sigma)` with a rounded :math:`\\sigma` gives 0 for
    :math:`x > 37`.  Plain NumPy (for backward passes)."""
    e = np.exp(-np.abs(x))
    return e / ((1.0 + e) * (1.0 + e))


class ElementwiseAffine(Bijector):
    """:math:`y = x \\odot e^{s} + b` with learnable ``log_scale`` s and ``shift`` b, shapes ``(D,)``.

    With ``shift=False`` this is NICE's final diagonal scaling layer :math:`y = e^{s}\\odot x`
    (Dinh et al. 2014, "NICE", arXiv:1410.8516, section 3.3).

    Notes
    -----
    Jacobian :math:`\\mathrm{diag}(e^{s})`, so :math:`\\log|\\det J| = \\sum_d s_d` for every sample.
    Backward for cotangents :math:`(\\bar y, \\bar\\ell)`:
    :math:`\\bar x = \\bar y\\odot e^{s}`,
    :math:`\\bar b = \\sum_n \\bar y_n`,
    :math:`\\bar s = e^{s}\\odot\\sum_n \\bar y_n\\odot x_n + \\sum_n \\bar\\ell_n` (the last term is the
    logdet path).  Inverse :math:`x = (y - b)\\odot e^{-s}` with logdet :math:`-\\sum_d s_d`.
    """

    def __init__(self, dim, shift=True):
        self.dim, self.shift = int(dim), bool(shift)

    def param_shapes(self):
        return {"log_scale": (self.dim,), "shift": (self.dim,)} if self.shift else {"log_scale": (self.dim,)}

    def init(self, rng, x=None, dtype=np.float64):
        dtype = x.dtype if x is not None else dtype
        return {k: np.zeros(s, dtype) for k, s in self.param_shapes().items()}

    def _forward(self, params, x, xp):
        s = params["log_scale"]
        y = x * xp.exp(s)
        if self.shift:
            y = y + params["shift"]
        return y, xp.sum(s) + xp.zeros(x.shape[0], dtype=x.dtype), x

    def _inverse(self, params, y, xp):
        s = params["log_scale"]
        if self.shift:
            y = y - params["shift"]
        return y * xp.exp(-s), -xp.sum(s) + xp.zeros(y.shape[0], dtype=y.dtype)

    def _backward(self, params, dy, dlogdet, cache):
        e = np.exp(params["log_scale"])
        g = {"log_scale": e * np.einsum("nd,nd->d", dy, cache) + dlogdet.sum()}
        if self.shift:
            g["shift"] = dy.sum(axis=0)
        return dy * e, g

    def __repr__(self):
        return f"{self.name}(dim={self.dim}, shift={self.shift})"


class ActNorm(ElementwiseAffine):
    """Glow's activation normalisation (Kingma & Dhariwal 2018, arXiv:1807.03039): the affine map of
    :class:`ElementwiseAffine` whose parameters are initialised from a batch so the output has zero mean
    and unit variance per feature.

    ``init(rng, x)``: :math:`s = -\\log(\\mathrm{std}(x) + \\epsilon)`, :math:`b = -\\mathrm{mean}(x)\\,e^{s}`.
    Without data it starts as the identity.  Glow writes :math:`y = (x + b')e^{s}`; ours is the same
    map with :math:`b = b' e^{s}`.
    """

    def __init__(self, dim, eps=1e-6):
        super().__init__(dim, shift=True)
        self.eps = float(eps)

    def init(self, rng, x=None, dtype=np.float64):
        if x is None:
            return super().init(rng, dtype=dtype)
        check_array(self.name, x, ndim=2, size=self.dim, what="initialisation batch")
        if x.shape[0] < 2:
            raise ValueError(f"{self.name}: data-dependent init needs at least 2 samples, got {x.shape[0]}")
        s = -np.log(x.std(axis=0) + self.eps)
        return {"log_scale": s.astype(x.dtype), "shift": (-x.mean(axis=0) * np.exp(s)).astype(x.dtype)}


class _Pointwise(Bijector):
    """A fixed scalar bijection applied to every coordinate.  Subclasses give ``_f``, ``_finv``,
    ``_log_df`` (traceable with ``xp``) and, in plain NumPy, ``_df`` and ``_dlog_df``.

    Notes
    -----
    :math:`y_d = f(x_d)`, :math:`\\ell = \\sum_d \\log f'(x_d)`.  Backward:
    :math:`\\bar x = \\bar y\\odot f'(x) + \\bar\\ell\\,(\\log f')'(x)`.
    """

    def __init__(self, dim):
        self.dim = int(dim)

    def _forward(self, params, x, xp):
        return self._f(x, xp), xp.sum(self._log_df(x, xp), axis=1), x

    def _inverse(self, params, y, xp):
        x = self._finv(y, xp)
        return x, -xp.sum(self._log_df(x, xp), axis=1)

    def _backward(self, params, dy, dlogdet, cache):
        x = cache
        return dy * self._df(x) + dlogdet[:, None] * self._dlog_df(x), {}


class LeakyReLU(_Pointwise):
    """:math:`y = x` for :math:`x \\ge 0`, :math:`y = a x` otherwise (``slope`` a > 0).

    Notes
    -----
    :math:`\\log f' = 0` or :math:`\\log a`: piecewise constant, so :math:`(\\log f')' = 0` and the
    logdet path contributes nothing to :math:`\\bar x`.
    """

    def __init__(self, dim, slope=0.01):
        super().__init__(dim)
        if not slope > 0:
            raise ValueError(f"LeakyReLU: slope must be > 0 to be invertible, got {slope}")
        self.slope = float(slope)
        self._log_slope = math.log(self.slope)

    def _f(self, x, xp):
        return xp.where(x >= 0, x, self.slope * x)

    def _finv(self, y, xp):
        return xp.where(y >= 0, y, y / self.slope)

    def _log_df(self, x, xp):
        return xp.where(x >= 0, 0.0, self._log_slope).astype(x.dtype)

    def _df(self, x):
        return np.where(x >= 0, 1.0, self.slope).astype(x.dtype)

    def _dlog_df(self, x):
        return np.zeros_like(x)

    def __repr__(self):
        return f"LeakyReLU(dim={self.dim}, slope={self.slope})"


class Sigmoid(_Pointwise):
    """:math:`y = \\sigma(x) = 1/(1+e^{-x})`, onto (0, 1).

    Notes
    -----
    :math:`\\sigma(x)` by :func:`sigmoid`: :math:`1/(1+e)` or :math:`e/(1+e)` with :math:`e = e^{-|x|}`,
    a few ulps in both tails (the condition number of :math:`\\sigma` is only
    :math:`|x|\\,\\sigma(-x) \\le |x|`, so nothing forces a loss of digits there).

    :math:`f' = \\sigma(x)\\sigma(-x) = e/(1+e)^2`, computed in log space as
    :math:`\\log f' = -\\mathrm{softplus}(-x) - \\mathrm{softplus}(x) = -|x| - 2\\log(1 + e^{-|x|})`
    (``logaddexp``: finite for any finite x and accurate to a few ulps, since both terms have the same
    sign).

    Backward (:class:`_Pointwise`): :math:`\\bar x = \\bar y\\, f'(x) + \\bar\\ell\\,(\\log f')'(x)` with
    :math:`f'(x) = e/(1+e)^2` (:func:`sigmoid_prime`; :math:`\\sigma(1-\\sigma)` would give 0 above
    :math:`x \\approx 37`) and :math:`(\\log f')'(x) = \\sigma(-x) - \\sigma(x) = 1 - 2\\sigma(x) =
    -\\tanh(x/2)` (no cancellation: tanh is accurate to an ulp for every x).

    Inverse :math:`x = \\log y - \\log(1-y)` (``log1p``), defined on (0, 1).
    """

    def _check_inverse_input(self, y):
        super()._check_inverse_input(y)
        check_interval(self.name, y, 0.0, 1.0, closed=False, what="inverse input")

    def _f(self, x, xp):
        return sigmoid(x, xp)

    def _finv(self, y, xp):
        return xp.log(y) - xp.log1p(-y)

    def _log_df(self, x, xp):
        return -xp.logaddexp(0.0, x) - xp.logaddexp(0.0, -x)

    def _df(self, x):
        return sigmoid_prime(x)

    def _dlog_df(self, x):
        return -np.tanh(0.5 * x)


class Logit(_Pointwise):
    """Logit with RealNVP's squeeze :math:`p = \\alpha + (1-2\\alpha)x`, :math:`y = \\log p - \\log(1-p)`
    (Dinh et al. 2016, "Density estimation using Real NVP", arXiv:1605.08803, section 4.1).

    The domain is [0, 1] when ``alpha`` > 0 (dequantised pixels may touch the ends) and (0, 1) when
    ``alpha`` = 0; anything outside raises ``ValueError``.

    Notes
    -----
    :math:`f'(x) = (1-2\\alpha)/(p(1-p))`, so
    :math:`\\log f' = \\log(1-2\\alpha) - \\log p - \\log(1-p)` and
    :math:`(\\log f')' = (1-2\\alpha)(2p-1)/(p(1-p))`.
    Inverse: :math:`p = \\sigma(y)` by :func:`sigmoid` (a few ulps in both tails, so with
    :math:`\\alpha = 0` the inverse of :math:`y \\approx -690` is :math:`\\approx 10^{-300}` to full
    precision), :math:`x = (p-\\alpha)/(1-2\\alpha)`, with :math:`\\log p = -\\mathrm{softplus}(-y)` and
    :math:`\\log(1-p) = -\\mathrm{softplus}(y)` for a logdet that stays accurate for large |y|.  Its
    result lies in [0, 1]: :math:`\\sigma(y)` is 0 only below :math:`y \\approx -745` and 1 above
    :math:`y \\approx 37`, where float64 cannot tell x from 0 or 1.
    """

    def __init__(self, dim, alpha=0.0):
        super().__init__(dim)
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"Logit: alpha must lie in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)
        self._log_c = math.log1p(-2.0 * self.alpha)

    def _check_forward_input(self, x):
        super()._check_forward_input(x)
        check_interval(self.name, x, 0.0, 1.0, closed=self.alpha > 0, what="forward input")

    def _p(self, x):
        return self.alpha + (1.0 - 2.0 * self.alpha) * x

    def _f(self, x, xp):
        p = self._p(x)
        return xp.log(p) - xp.log1p(-p)

    def _finv(self, y, xp):
        p = sigmoid(y, xp)
        return p if self.alpha == 0.0 else (p - self.alpha) / (1.0 - 2.0 * self.alpha)

    def _log_df(self, x, xp):
        p = self._p(x)
        return self._log_c - xp.log(p) - xp.log1p(-p)

    def _inverse(self, params, y, xp):
        x = self._finv(y, xp)
        log_df = self._log_c + xp.logaddexp(0.0, -y) + xp.logaddexp(0.0, y)
        return x, -xp.sum(log_df, axis=1)

    def _df(self, x):
        p = self._p(x)
        return (1.0 - 2.0 * self.alpha) / (p * (1.0 - p))

    def _dlog_df(self, x):
        p = self._p(x)
        return (1.0 - 2.0 * self.alpha) * (2.0 * p - 1.0) / (p * (1.0 - p))

    def __repr__(self):
        return f"Logit(dim={self.dim}, alpha={self.alpha})"
