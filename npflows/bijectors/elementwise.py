"""Elementwise bijectors: affine scaling (NICE's diagonal scaling, ActNorm) and pointwise nonlinearities.

Every map here acts on each coordinate alone, so its Jacobian is diagonal and
:math:`\\log|\\det J| = \\sum_d \\log|f_d'(x_d)|`.
"""
import math

import numpy as np

from .._checks import check_array, check_interval, unbox
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


def exp_range(dtype):
    """``(lo, hi)``: exp(s) is a normal, finite number of ``dtype`` for lo < s < hi (float64: -708.4, 709.8;
    float32: -87.3, 88.7)."""
    return _EXP_RANGE[np.dtype(dtype)]


_EXP_RANGE = {np.dtype(t): (math.log(float(np.finfo(t).tiny)), math.log(float(np.finfo(t).max)))
              for t in (np.float16, np.float32, np.float64)}


def mul_exp(a, s, xp=np, e=None):
    """:math:`a\\,e^{s}` elementwise (``a`` and ``s`` broadcast), finite and accurate wherever the exact product
    is a normal number of the dtype.  ``e``: ``exp(s)`` if the caller has it already.

    The plain product ``a * exp(s)`` is exact to an ulp or two while :math:`e^{s}` is a normal number.  Outside
    that range it fails although the product may be representable: :math:`e^{s}` overflows (``1e-300 *
    exp(710)`` is inf, ``0 * exp(710)`` NaN; the exact value is 2e8 or 0) or underflows (``1e300 * exp(-1000)``
    gives 0; the exact value is 5e-135).  Only there (one min and one max over ``s`` decide whether to look) is
    the product computed as :math:`\\mathrm{sign}(a)\\,e^{\\log|a| + s}` (0 where a = 0), whose relative error is about
    :math:`|\\log|a| + s|\\,\\epsilon` (below 2e-13 in float64 for any representable result).  A product that
    itself overflows stays inf, for the caller's result check to refuse.
    """
    e = xp.exp(s) if e is None else e
    raw_s = unbox(s)
    lo, hi = exp_range(raw_s.dtype)
    if raw_s.size == 0 or (np.minimum.reduce(raw_s, axis=None) > lo and np.maximum.reduce(raw_s, axis=None) < hi):
        return a * e
    # elementwise: the plain product wherever exp(s) is normal (an ulp or two), the log form only elsewhere;
    # the discarded branch of each where is made finite (e -> 1, s -> 0, a -> 1) so that autograd, which
    # multiplies its zero cotangent by the branch's derivative, never meets 0 * inf
    ok = (s > lo) & (s < hi)
    zero = a == 0
    a_log = xp.where(zero | ok, 1.0, a)
    far = xp.sign(a_log) * xp.exp(xp.log(xp.abs(a_log)) + xp.where(ok, 0.0, s))
    return xp.where(ok, a * xp.where(ok, e, 1.0), xp.where(zero, 0.0 * a_log, far))


def explain_log_scale(owner, logs, direction, hint):
    """The diagnosis of an affine layer whose result is not finite: where the log-scale leaves the range in
    which exp is representable.  ``logs`` is the log-scale s of the map x -> x e^s + t."""
    v = np.asarray(unbox(logs))
    if v.size == 0:
        return None
    lo, hi = exp_range(v.dtype)
    i = np.unravel_index(int(np.argmax(np.abs(v))), v.shape)
    sv = float(v[i])
    if lo < sv < hi and lo < -sv < hi:
        return None
    where = f" (at index {tuple(int(j) for j in i)})" if v.ndim else ""
    return (f"the log-scale reaches {sv:.6g}{where}, and exp(±s) leaves the {v.dtype} range ({lo:.4g}, {hi:.4g}) "
            f"so that the {direction} result is not representable; {hint}")


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
        y = mul_exp(x, s, xp)
        if self.shift:
            y = y + params["shift"]
        return y, xp.sum(s) + xp.zeros(x.shape[0], dtype=x.dtype), x

    def _inverse(self, params, y, xp):
        s = params["log_scale"]
        if self.shift:
            y = y - params["shift"]
        return mul_exp(y, -s, xp), -xp.sum(s) + xp.zeros(y.shape[0], dtype=y.dtype)

    def _explain(self, direction, params, x):
        return explain_log_scale(self.name, params["log_scale"], direction,
                                 "the parameter log_scale has diverged (lower the learning rate) or the input is "
                                 "out of scale")

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


def check_open_unit(owner, v, src, what):
    """Refuse (``FloatingPointError``) a result ``v`` = sigma(``src``) that rounded onto 0 or 1, the ends of
    the open interval (0, 1): the exact value lies inside, but no float between it and the end exists, and the
    inverse (a logit) of the rounded value would be infinite.  In float64 sigma(u) rounds to 1 for
    u > 36.7 and to 0 for u < -745.1; in float32 for u > 16.6 and u < -103.9."""
    raw = unbox(v)
    bad = (raw <= 0) | (raw >= 1)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        u = float(unbox(src)[i])
        raise FloatingPointError(
            f"{owner}: {what} sigma({u:.6g}) = {float(raw[i])!r} (at index {i}) rounds onto the end of the open "
            f"interval (0, 1) in {raw.dtype}: the exact value lies within {np.finfo(raw.dtype).eps:.2g} of it, "
            f"and the inverse of the rounded value is infinite; keep |{u:.3g}| smaller (rescale the data, or "
            f"use Logit(alpha > 0), whose range is bounded)")
    return v


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

    Inverse :math:`x = \\log y - \\log(1-y)` (``log1p``), defined on (0, 1).  A forward result that rounds
    onto 0 or 1 (float64: x > 36.7 or x < -745.1) raises ``FloatingPointError``: the inverse of the rounded
    value would be infinite (:func:`check_open_unit`).
    """

    def _check_inverse_input(self, y):
        super()._check_inverse_input(y)
        check_interval(self.name, y, 0.0, 1.0, closed=False, what="inverse input")

    def _f(self, x, xp):
        return check_open_unit(f"{self.name} forward", sigmoid(x, xp), x, "the output")

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
    :math:`\\log(1-p) = -\\mathrm{softplus}(y)` for a logdet that stays accurate for large |y|.
    With ``alpha = 0`` the inverse is defined on all of R, but :math:`\\sigma(y)` rounds to 0 below
    :math:`y \\approx -745` and to 1 above :math:`y \\approx 36.7` (float64), where the forward would refuse
    it: such a result raises ``FloatingPointError`` (:func:`check_open_unit`).  With ``alpha > 0`` the range
    of the map is :math:`[\\mathrm{logit}\\,\\alpha, \\mathrm{logit}(1-\\alpha)]`; an inverse input outside it
    raises ``ValueError``, and the result is clipped to [0, 1] (the exact one lies there; rounding may step
    an ulp outside).
    """

    def __init__(self, dim, alpha=0.0):
        super().__init__(dim)
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
                or not 0.0 <= alpha < 0.5:
            raise ValueError(f"Logit: alpha must be a number in [0, 0.5), got {alpha!r}")
        self.alpha = float(alpha)
        self._log_c = math.log1p(-2.0 * self.alpha)

    def _check_forward_input(self, x):
        super()._check_forward_input(x)
        check_interval(self.name, x, 0.0, 1.0, closed=self.alpha > 0, what="forward input")

    def _check_inverse_input(self, y):
        """With alpha > 0 the map's range is the closed interval [f(0), f(1)] = [logit(alpha), logit(1-alpha)]
        (the ends as this dtype computes them); a point outside has no preimage in [0, 1]."""
        super()._check_inverse_input(y)
        if self.alpha > 0:
            ends = self._f(np.array([0.0, 1.0], dtype=unbox(y).dtype), np)
            check_interval(self.name, y, float(ends[0]), float(ends[1]), closed=True,
                           what="inverse input (the range of the map on [0, 1])")

    def _p(self, x):
        return self.alpha + (1.0 - 2.0 * self.alpha) * x

    def _f(self, x, xp):
        p = self._p(x)
        return xp.log(p) - xp.log1p(-p)

    def _finv(self, y, xp):
        p = sigmoid(y, xp)
        if self.alpha == 0.0:
            return check_open_unit(f"{self.name} inverse", p, y, "the output")
        # y lies in [f(0), f(1)], so the exact x lies in [0, 1]; rounding may step an ulp outside
        return xp.clip((p - self.alpha) / (1.0 - 2.0 * self.alpha), 0.0, 1.0)

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
