"""Gaussianization flows: rotation-based iterative Gaussianization, RBIG (Laparra, Camps-Valls & Malo 2011,
"Iterative Gaussianization: from ICA to Random Rotations", IEEE Trans. Neural Networks 22(4), arXiv:1602.00229).

RBIG maps data towards a standard normal by alternating two cheap steps, each a bijection with an exact
log-determinant:

1. **marginal Gaussianization** (:class:`MarginalGaussianization`): every coordinate through
   :math:`y_d = \\Phi^{-1}(F_d(x_d))`, with :math:`F_d` a smooth estimate of its marginal CDF;
2. **a rotation** (npflows' :class:`~npflows.bijectors.linear.Linear` with an orthogonal weight: PCA or random).

The first makes each marginal standard normal; the rotation mixes the coordinates, so that the next marginal
step sees new non-Gaussian directions.  :class:`RBIG` is the composition of ``n_layers`` such pairs, a
:class:`~npflows.core.compose.Sequential`, and :func:`fit_rbig` fits it greedily, layer by layer, without a
single gradient step.  The fitted map is an ordinary bijector with an ordinary parameter dict, so
``NormalizingFlow(rbig, StandardNormal(D))`` gives its log-density and samples and ``npflows.save``/``load``
store it like any other flow.
"""
import math
import time

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import erfcx, log_ndtr, ndtr, ndtri, ndtri_exp

from .._checks import check_array, check_count, check_rng, unbox
from ..core.bijector import Bijector
from ..core.compose import Sequential
from .linear import Linear
from .planar_radial import InverseNotConverged, solve_increasing

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)          # -log phi(0)
_LOG_SQRT_HALF_PI = 0.5 * math.log(0.5 * math.pi)      # log(Phi(0)/phi(0)) = log sqrt(pi/2)
_SQRT_HALF = math.sqrt(0.5)
_EPS = float(np.finfo(np.float64).eps)
_CF_FROM = 3.0          # log_mills_prime: the continued fraction for t <= -_CF_FROM, the direct form above
_CF_TERMS = 64          # its depth: 2.2e-16 relative at t = -3 (checked against mpmath in the tests)
_CHUNK = 1 << 16        # rows * D * K per pass of the NumPy path: ~0.5 MB per (N, D, K) float64 array
FAST_MIN_TAIL = 1e-9    # the NumPy path's closed forms (see MarginalGaussianization._map) where the smaller tail
FAST_MAX_LOG_DENSITY = 20.0   # probability is at least this and |log f + log sqrt(2 pi)| at most this


# ----------------------------------------------------------------------------- scalar special functions
# The standard normal: phi(t) = exp(-t^2/2)/sqrt(2 pi), Phi(t) its CDF, m(t) = Phi(t)/phi(t) the Mills ratio
# of the lower tail.  Plain NumPy, float64; the layer attaches their derivatives for autograd (see Notes).

def log_mills(t):
    """:math:`L(t) = \\log(\\Phi(t)/\\phi(t))` for :math:`t \\le 37` (float64): ``log(erfcx(-t/sqrt 2)) +
    log sqrt(pi/2)``, since :math:`\\Phi(t) = \\mathrm{erfc}(-t/\\sqrt2)/2` and :math:`\\mathrm{erfcx}(u) =
    e^{u^2}\\mathrm{erfc}(u)`.  Accurate to a few ulps for every :math:`t \\le 0` (about :math:`-\\log|t|` in the
    lower tail, where :math:`\\log\\Phi(t)` itself is :math:`-t^2/2` and would swamp it)."""
    return np.log(erfcx(-_SQRT_HALF * t)) + _LOG_SQRT_HALF_PI


def log_mills_prime(t):
    """:math:`L'(t) = t + 1/m(t) = (1 + t\\,m(t))/m(t)`, without cancellation (float64).

    For :math:`t \\le -3`, with :math:`x = -t`, the Laplace continued fraction of the Mills ratio
    :math:`m(-x) = 1/(x + 1/(x + 2/(x + 3/(x + \\dots))))` gives :math:`L'(t) = 1/(x + 2/(x + 3/(x + \\dots)))`
    (64 terms, backward recurrence: a few ulps, about :math:`1/x`, for every :math:`x \\ge 3`); there
    :math:`t + 1/m(t)` subtracts two numbers of size :math:`|t|` whose difference is :math:`1/|t|`.  For
    :math:`-3 < t \\le 0` the direct :math:`t + e^{-L(t)}` (error below 5e-15 relative); for :math:`t > 0`,
    :math:`t + \\phi(t)/\\Phi(t)` adds two positive terms."""
    t = np.asarray(t, dtype=np.float64)
    out = np.empty_like(t)
    cf = t <= -_CF_FROM
    if cf.any():
        x = -t[cf]
        tail = np.zeros_like(x)
        for j in range(_CF_TERMS, 1, -1):
            tail = j / (x + tail)
        out[cf] = 1.0 / (x + tail)
    mid = ~cf & (t <= 0)
    out[mid] = t[mid] + np.exp(-log_mills(t[mid]))
    pos = t > 0
    tp = t[pos]
    out[pos] = tp + np.exp(-0.5 * tp * tp - _LOG_SQRT_2PI - log_ndtr(tp))
    return out


def inv_mills(t):
    """:math:`1/m(t) = \\phi(t)/\\Phi(t) = \\frac{d}{dt}\\log\\Phi(t)` (float64): ``exp(-L(t))`` for
    :math:`t \\le 0`, :math:`\\exp(\\log\\phi(t) - \\log\\Phi(t))` above (no overflow of :math:`m` there)."""
    t = np.asarray(t, dtype=np.float64)
    out = np.empty_like(t)
    neg = t <= 0
    out[neg] = np.exp(-log_mills(t[neg]))
    tp = t[~neg]
    out[~neg] = np.exp(-0.5 * tp * tp - _LOG_SQRT_2PI - log_ndtr(tp))
    return out


def _tangent(xp, value, slope, a, a0):
    """``value`` as a traced function of ``a`` to first order: ``value + slope * (a - a0)``, where ``a0`` is
    the concrete value of ``a`` (so the result's value is ``value``, its derivative ``slope``).  With NumPy
    (nothing traced) it is ``value`` itself."""
    if xp is np:
        return value
    return value + slope * (a - a0)


def _lse(a, xp):
    """``log(sum(exp(a)))`` over the last axis, shifted by the (concrete) maximum."""
    m = np.max(unbox(a), axis=-1)
    m = np.where(np.isfinite(m), m, 0.0)
    return m + xp.log(xp.sum(xp.exp(a - m[..., None]), axis=-1))


def _solve_delta(rho, A, owner):
    """:math:`\\delta` with :math:`\\tilde y = \\rho + \\delta`, :math:`\\log\\Phi(\\tilde y) = -\\rho^2/2 -
    \\log\\sqrt{2\\pi} + A`, i.e. the root of :math:`R(\\delta) = L(\\rho + \\delta) - A - \\delta(\\rho +
    \\delta/2) = 0` (float64 arrays of one shape; see :class:`MarginalGaussianization`'s Notes, "inverse normal").

    Start: ``ndtri_exp`` of the log-probability where :math:`|\\rho| < 10^4` (then :math:`\\rho^2` is exact
    enough and the start is within an ulp of :math:`\\tilde y`), else the first-order asymptote
    :math:`\\delta_0 = (L(\\rho) - A)/\\rho`; then Newton steps :math:`\\delta \\leftarrow \\delta - R\\,m(\\rho
    + \\delta)` (:math:`R' = 1/m`), with :math:`R` evaluated in the form above, which involves no large
    cancelling terms, until a step is below 4 ulps of :math:`\\delta` or the residual at its rounding level
    (two or three steps)."""
    shape = np.shape(rho)
    rho = np.asarray(rho, dtype=np.float64).reshape(-1)
    A = np.asarray(A, dtype=np.float64).reshape(-1)
    near = np.abs(rho) < 1e4
    with np.errstate(all="ignore"):
        ytil = ndtri_exp(np.where(near, -0.5 * rho * rho - _LOG_SQRT_2PI + A, -1.0))
        delta = np.where(near, ytil - rho, (log_mills(np.where(near, -1.0, rho)) - A) / np.where(near, -1.0, rho))
        todo = (rho < 0) & np.isfinite(delta)             # the centre (rho = 0) is ndtri_exp's own accuracy
        for _ in range(30):
            if not todo.any():
                break
            r, d = rho[todo], delta[todo]
            L = log_mills(r + d)
            Ak, prod = A[todo], d * (r + 0.5 * d)
            res = L - Ak - prod
            step = res * np.exp(L)
            d_new = d - step
            delta[todo] = d_new
            # converged: a step within 4 ulps of delta, or a residual at its rounding level (delta = 0 exactly
            # for one kernel, where no relative criterion can be met)
            small = (np.abs(step) <= 4.0 * _EPS * np.abs(d_new) + 1e-300) | \
                (np.abs(res) <= 4.0 * _EPS * (np.abs(L) + np.abs(Ak) + np.abs(prod)))
            idx = np.flatnonzero(todo)
            todo[idx[small | ~np.isfinite(d_new)]] = False
        else:
            raise InverseNotConverged(f"{owner} forward: the inverse normal CDF did not converge for "
                                      f"{int(todo.sum())} entries in 30 Newton steps")
    return delta.reshape(shape)


class MarginalGaussianization(Bijector):
    """Marginal Gaussianization: :math:`y_d = \\Phi^{-1}(F_d(x_d))` per coordinate, with :math:`F_d` the CDF of
    a Gaussian mixture with ``n_components`` kernels of one bandwidth, a kernel density estimate (Laparra et al.
    2011, arXiv:1602.00229, the marginal step of RBIG).

    .. math:: F_d(x) = \\sum_{k=1}^K \\pi_{dk}\\,\\Phi\\Big(\\frac{x - \\mu_{dk}}{h_d}\\Big), \\qquad
              f_d(x) = F_d'(x) = \\frac1{h_d}\\sum_{k=1}^K \\pi_{dk}\\,\\phi\\Big(\\frac{x - \\mu_{dk}}{h_d}\\Big),

    parameters ``centers`` :math:`\\mu` ``(D, K)``, ``log_bandwidth`` :math:`s = \\log h` ``(D,)`` and
    ``logits`` ``(D, K)``, the weights :math:`\\pi_{dk} = \\mathrm{softmax}_k(\\mathrm{logits}_{dk})`
    (:math:`a_k = \\log\\pi_k` below).  Each coordinate is mapped by its own CDF, shared by the batch.

    **Why a kernel mixture.**  RBIG needs, per coordinate, a CDF estimate that is strictly increasing,
    differentiable (for the logdet and the backward), cheap to fit without gradients and well behaved beyond
    the data.  A Gaussian mixture CDF is all of these: smooth, with a density positive everywhere (so
    :math:`\\Phi^{-1}\\circ F` is a bijection of the real line), and its tails *are* Gaussian tails, so the map is
    asymptotically affine far out, :math:`y \\approx (x - \\mu_{\\min})/h`: no clipping of the CDF at 0 or 1 as
    with a histogram or an empirical CDF, and no separately designed tails as with a monotone spline fitted to
    the empirical CDF.  The fit (:func:`fit_marginal`) is deterministic: centres at the data's quantiles at
    levels spaced evenly on the *Gaussian* scale, :math:`\\Phi(u_k)` with :math:`u_k` evenly spaced, the
    weights the probability each centre stands for, and the bandwidth by maximum likelihood.  Even levels
    (:math:`(k - 1/2)/K`, equal weights) leave the outermost centre at the :math:`1/(2K)` quantile, so the
    mixture's tails are far too light (a kernel of width :math:`h` beyond it): the marginal map then stretches
    every outlier and repeated layers blow them up; on the Gaussian scale the outer centres reach the data's
    extremes with small weights, and a normal marginal is reproduced to a few 1e-4 nats.

    Parameters
    ----------
    dim : int
        D.
    n_components : int
        K, kernels per coordinate.
    rtol, maxiter : float, int
        The inverse's tolerance (last Newton step at most ``rtol * max(1, |x|)``, or the residual at its rounding
        level) and iteration budget; past it :class:`~npflows.bijectors.planar_radial.InverseNotConverged`.

    Notes
    -----
    **Map and Jacobian.**  Each output coordinate depends on its own input coordinate only, so the Jacobian is
    diagonal with :math:`dy_d/dx_d = f_d(x_d)/\\phi(y_d) > 0` (differentiate :math:`\\Phi(y_d) = F_d(x_d)`), and

    .. math:: \\log|\\det J| = \\sum_d \\big[\\log f_d(x_d) - \\log\\phi(y_d)\\big].

    **Stable evaluation in the tails.**  Far out, :math:`F` rounds to 0 or 1 and both :math:`\\log f` and
    :math:`\\log\\phi(y)` are about :math:`-z^2/2` (:math:`z = (x - \\mu)/h`), so the direct formulas give an
    infinite :math:`y` and a logdet that is a difference of two huge numbers.  The layer works in the smaller
    tail and around a reference point, so that no large terms ever cancel:

    * *Side.*  With :math:`m_d` the median of :math:`F_d` (solved once per call from the parameters),
      :math:`\\sigma = +1` for :math:`x \\le m_d` (left: :math:`\\tilde F = F \\le 1/2`) and :math:`-1`
      otherwise (right: :math:`\\tilde F = 1 - F`, by the symmetry :math:`1 - \\Phi(z) = \\Phi(-z)`).  With
      :math:`t_k = \\sigma z_k`, :math:`\\tilde F = \\sum_k\\pi_k\\Phi(t_k)`, :math:`\\tilde y = \\Phi^{-1}(\\tilde
      F) \\le 0` and :math:`y = \\sigma\\tilde y`; the density and :math:`\\phi(y)` are even, so the logdet is
      the same expression on both sides.
    * *Reference.*  All kernels share the bandwidth, so the largest :math:`t_k` belongs to the extreme centre
      :math:`\\mu_r` (the smallest on the left side, the largest on the right).  Let :math:`\\rho = \\min(t_r,
      0)` and :math:`u_k = t_k - \\rho`: in the tail (:math:`t_r < 0`) :math:`u_k = \\sigma(\\mu_r -
      \\mu_k)/h \\le 0` exactly from the centres (far out :math:`x - \\mu_k` rounds to the same number for
      every k, and the differences would be lost), elsewhere :math:`u_k = t_k`.  With
      :math:`q_k = u_k(\\rho + u_k/2) = (t_k^2 - \\rho^2)/2` and the log Mills ratio
      :math:`L(t) = \\log(\\Phi(t)/\\phi(t))` (:func:`log_mills`, about :math:`-\\log|t|` in the lower tail),
      :math:`\\log\\Phi(t_k) = -\\rho^2/2 - \\log\\sqrt{2\\pi} + G_k - q_k` with :math:`G_k = L(t_k)`
      (for :math:`t_k > 0`, where :math:`\\rho = 0`, :math:`G_k - q_k = \\log\\Phi(t_k) + \\log\\sqrt{2\\pi}` is
      computed so, directly), and with :math:`T_k = a_k + G_k - q_k`

      .. math:: A = \\mathrm{LSE}_k(T_k), \\quad \\log\\tilde F = -\\rho^2/2 - \\log\\sqrt{2\\pi} + A,
                \\qquad B = \\mathrm{LSE}_k(a_k - q_k), \\quad \\log f = -s - \\log\\sqrt{2\\pi} - \\rho^2/2 + B.

      :math:`A` and :math:`B` are of the size of :math:`\\log|\\rho|`: only :math:`\\rho^2/2` is large.
    * *Inverse normal.*  Write :math:`\\tilde y = \\rho + \\delta`.  :math:`\\log\\Phi(\\tilde y) = \\log\\tilde F`
      is :math:`(\\tilde y^2 - \\rho^2)/2 = L(\\tilde y) - A`, i.e. :math:`R(\\delta) = L(\\rho + \\delta) - A -
      \\delta(\\rho + \\delta/2) = 0`, solved for :math:`\\delta` itself by ``scipy.special.ndtri_exp`` and
      Newton steps (:math:`R'(\\delta) = L'(\\tilde y) - \\tilde y = 1/m(\\tilde y) > 0`, :math:`m = e^{L}` the
      Mills ratio), so :math:`\\delta` keeps its relative accuracy even where it is tiny against :math:`\\rho`.
      Output :math:`y = \\sigma(\\rho + \\delta)`.
    * *Logdet.*  :math:`\\log f - \\log\\phi(y) = B - s + (\\tilde y^2 - \\rho^2)/2`, that is

      .. math:: \\log|\\det J| = \\sum_d \\big[B_d - s_d + \\delta_d(\\rho_d + \\delta_d/2)\\big],

      a sum of terms of modest size.  Tested (``tests/test_gaussianization.py``, against mpmath) for
      :math:`|z|` from 0 to :math:`10^{150}`: outputs and logdets to a few ulps, with no overflow while
      :math:`x/h` and :math:`y` are representable; the golden cases' far-tail variant holds :math:`|z|` up to
      :math:`10^6`.  Where :math:`(x - \\mu)/h` itself overflows (the exact :math:`y` is not representable
      either) the result check raises ``FloatingPointError``.

    **Derivatives of the special functions.**  :math:`\\frac{d}{dt}\\log\\Phi(t) = 1/m(t) = \\phi(t)/\\Phi(t)`
    (:func:`inv_mills`) and :math:`L'(t) = t + 1/m(t)` (:func:`log_mills_prime`, by a continued fraction where the
    sum cancels).  autograd offers ``erfc`` but neither ``log_ndtr``, ``erfcx`` nor ``ndtri``, and npflows does
    not import autograd; so ``_forward(xp=autograd.numpy)`` evaluates these functions on the concrete values and
    attaches their exact derivatives to first order (``value + slope * (t - t_0)``, whose value is the value
    and whose derivative is the slope), and enters :math:`\\delta` through one Newton step taken with ``xp``
    (its derivative is the implicit-function derivative :math:`d\\delta = m(\\tilde y)\\,[dA -
    (L'(\\tilde y) - \\delta)\\,d\\rho]`).  Everything else (:math:`z, t, u, q, a`, both LSEs, the logdet) is
    traced as written, so autograd checks the structure of the backward below, while central differences (the
    harness) and the 50-digit golden cases check the special-function derivatives independently.  The NumPy
    path computes the same numbers (:meth:`_map`: closed forms where they are as accurate, in row chunks).

    **Backward.**  For the cotangents :math:`(\\bar y, \\bar\\ell)` (per sample n and coordinate d; the kernel
    weights :math:`v_k = \\mathrm{softmax}_k(a_k - q_k)` (the density's) and
    :math:`w_k = \\mathrm{softmax}_k(T_k)` (the CDF's), and :math:`g = e^{B - A + L(\\tilde y)} = h\\,dy/dx`):

    1. :math:`\\partial\\tilde y/\\partial t_k = v_k g`.  From :math:`R = 0`: :math:`d\\tilde y = m(\\tilde y)\\,dA`
       (:math:`\\rho` held fixed: the value of every formula above is independent of the reference, so
       differentiating with :math:`\\rho` fixed gives the total derivative) and
       :math:`\\partial A/\\partial t_k = w_k/m(t_k) = e^{a_k - q_k}/\\sum_j e^{T_j} = v_k e^{B - A}`.
    2. :math:`\\partial\\ell_d/\\partial t_k = v_k c_k` with :math:`c_k = L'(\\tilde y)\\,g - u_k -
       \\sum_j w_j e_j`, :math:`e_j = L'(t_j) - u_j`: from :math:`\\ell_d = B - A + L(\\tilde y) - s`,
       :math:`\\partial B/\\partial t_k = -v_k t_k`, :math:`\\partial A/\\partial t_k = v_k e^{B-A}` and
       :math:`\\partial L(\\tilde y)/\\partial t_k = L'(\\tilde y) v_k g`, and
       :math:`t_k + e^{B-A} = u_k + \\sum_j w_j(L'(t_j) - u_j)` (:math:`\\sum_j w_j = 1`,
       :math:`e^{B-A} = \\sum_j w_j/m(t_j)`).  Every term is small in the tail (:math:`L'` is about
       :math:`1/|t|`), where the naive :math:`\\tilde y g - t_k` cancels two numbers of size :math:`|\\rho|`.
       Where :math:`u_j = t_j` (no tail), :math:`e_j = 1/m(t_j)` (:func:`inv_mills`).
    3. The weights: :math:`\\partial\\tilde y/\\partial a_k = m(\\tilde y)w_k` and, since
       :math:`\\ell = \\log f - \\log\\phi(y)`, :math:`\\partial\\ell/\\partial a_k = v_k + \\tilde y\\,m(\\tilde y)w_k
       = (v_k - w_k) + \\lambda w_k` with :math:`\\lambda = 1 + \\tilde y\\,m(\\tilde y) = L'(\\tilde y)m(\\tilde y)`
       (far out both weights concentrate on one kernel: its :math:`v_k - w_k` is formed as minus the sum of the
       others', and :math:`\\lambda`, about :math:`1/\\tilde y^2`, by the continued fraction of :math:`L'`);
       so :math:`\\bar a_k = \\sum_n[\\sigma\\bar y\\,m(\\tilde y)w_k + \\bar\\ell(v_k + \\tilde y\\,m(\\tilde y)w_k)]`
       and through the softmax :math:`\\overline{\\mathrm{logits}}_k = \\bar a_k - \\pi_k\\sum_j\\bar a_j`.
    4. :math:`\\bar t_k = v_k(\\sigma\\bar y\\,g + \\bar\\ell\\,c_k)` and :math:`\\bar z_k = \\sigma\\bar t_k`.
    5. :math:`z_k = (x - \\mu_k)e^{-s}`: :math:`\\bar x = e^{-s}\\sum_k\\bar z_k`,
       :math:`\\bar\\mu_k = -e^{-s}\\sum_n\\bar z_k` and
       :math:`\\bar s = -\\sum_{n,k}\\bar z_k z_k - \\sum_n\\bar\\ell_n` (the last from the explicit :math:`-s`).

    The backward recomputes these from the cached input (the cache holds only ``x``).

    **Inverse.**  :math:`x_d = F_d^{-1}(\\Phi(y_d))`, the root of the increasing :math:`y(x) - y^*`, by
    safeguarded Newton/bisection (:func:`~npflows.bijectors.planar_radial.solve_increasing`) with the derivative
    :math:`e^{\\ell_d}` and the exact bracket :math:`[\\min_k(\\mu_k + h_k y^*), \\max_k(\\mu_k + h_k y^*)]` (at
    its ends every :math:`(x - \\mu_k)/h_k` is at most, or at least, :math:`y^*`, and :math:`F` is a weighted
    mean of their :math:`\\Phi`), in float64, to ``rtol``; the logdet is minus the forward's at the root.  Where
    :math:`dy/dx` is tiny (between distant centres) the root is as ill-conditioned as the problem:
    :math:`\\epsilon/(dy/dx)`.  Traced, the root enters as :math:`x_0 - [(y(x_0;\\theta) - y^*) - r_0]/(dy/dx)`
    with the concrete residual :math:`r_0` subtracted: the value is :math:`x_0` and the derivative the
    implicit-function one, :math:`dx = (dy^* - \\partial_\\theta y\\,d\\theta)/(dy/dx)`.
    """

    def __init__(self, dim, n_components=32, rtol=1e-12, maxiter=100):
        self.dim = check_count("MarginalGaussianization", dim, what="dim", minimum=1)
        self.n_components = check_count("MarginalGaussianization", n_components, what="n_components", minimum=1)
        self.rtol, self.maxiter = float(rtol), int(maxiter)
        if not 0.0 < self.rtol < 1.0 or self.maxiter < 1:
            raise ValueError(f"MarginalGaussianization: rtol must lie in (0, 1) and maxiter be >= 1, got "
                             f"{rtol!r}, {maxiter!r}")

    def param_shapes(self):
        D, K = self.dim, self.n_components
        return {"centers": (D, K), "log_bandwidth": (D, K), "logits": (D, K)}

    def init(self, rng, x=None, dtype=np.float64):
        """Without data: close to the identity (centres :math:`\\sqrt{1 - h^2}\\,u_k` on an even grid
        :math:`u_k \\in [-3, 3]`, weights :math:`\\propto \\phi(u_k)`, bandwidth :math:`h` = the grid's spacing: a
        mixture within a few 1e-3 of :math:`N(0, 1)`).  With data ``x`` ``(N, D)``: :func:`fit_marginal`
        (``rng`` draws the bandwidth search's subsample when N is large)."""
        if x is not None:
            check_array(self.name, x, ndim=2, size=self.dim, what="initialisation batch")
            return fit_marginal(x, self.n_components, rng)
        K = self.n_components
        u = np.linspace(-3.0, 3.0, K) if K > 1 else np.zeros(1)
        h = 6.0 / (K - 1) if K > 1 else 1.0
        h = min(h, 0.9)
        mu = np.broadcast_to(math.sqrt(1.0 - h * h) * u, (self.dim, K))
        logits = np.broadcast_to(-0.5 * u * u, (self.dim, K))
        return {"centers": mu.astype(dtype), "log_bandwidth": np.full((self.dim, K), math.log(h), dtype),
                "logits": logits.astype(dtype)}

    # ------------------------------------------------------------------ the forward map
    @staticmethod
    def _log_weights(logits, xp=np):
        """:math:`a = \\log\\mathrm{softmax}(\\mathrm{logits})` over the kernels (traceable)."""
        return logits - _lse(logits, xp)[..., None]

    def medians(self, params):
        """The median :math:`m_d` of every :math:`F_d` (``(D,)``, float64), where the layer changes side:
        the root of :math:`\\sum_k\\pi_k\\Phi((m - \\mu_k)/h) = 1/2` in :math:`[\\min\\mu, \\max\\mu]`."""
        mu = np.asarray(unbox(params["centers"]), dtype=np.float64)
        alpha = np.exp(-np.asarray(unbox(params["log_bandwidth"]), dtype=np.float64))
        pi = np.exp(self._log_weights(np.asarray(unbox(params["logits"]), dtype=np.float64)))
        lo, hi = mu.min(axis=1), mu.max(axis=1)
        a = 0.5 * (lo + hi)
        with np.errstate(all="ignore"):
            for _ in range(200):        # safeguarded Newton; it only picks each point's side, so it never raises
                z = (a[:, None] - mu) * alpha
                F = (ndtr(z) * pi).sum(axis=1) - 0.5
                dF = (np.exp(-0.5 * z * z - _LOG_SQRT_2PI) * pi * alpha).sum(axis=1)
                lo, hi = np.where(F < 0, a, lo), np.where(F > 0, a, hi)
                new = a - F / dF
                new = np.where((new > lo) & (new < hi), new, 0.5 * (lo + hi))
                tol = 1e-14 * np.maximum(1.0, np.abs(a))
                if np.all((np.abs(new - a) <= tol) | (hi - lo <= tol) | (F == 0)):
                    return new
                a = new
        return a

    def _core(self, params, x, xp, med):
        """``(y, per-coordinate logdet (N, D), extras)`` for ``x`` ``(N, D)`` float64 (traced or not): the stable
        evaluation of the Notes; ``extras`` the concrete intermediate arrays that the backward needs.  ``params``
        may hold any number of coordinates (rows), with ``x`` one column per row."""
        mu, s = params["centers"], params["log_bandwidth"]               # (D, K) each
        a = self._log_weights(params["logits"], xp)                      # (D, K)
        x_v = unbox(x)
        alpha = xp.exp(-s)                                               # 1/h
        beta = mu * alpha
        left = x_v <= med                                                # (N, D): the side, a constant
        sig = np.where(left, 1.0, -1.0)[..., None]                       # (N, D, 1)
        t = sig * (x[..., None] * alpha[None] - beta[None])              # (N, D, K)
        t_v = unbox(t)
        # r = argmax_k t_k, with ties broken by the exact differences: far out every t_k may round to the same
        # number (x alpha dwarfs beta), so first a candidate, then the differences to it (as d below)
        kk = np.arange(t_v.shape[-1])
        R = (kk == np.argmax(t_v, axis=-1)[..., None]).astype(t_v.dtype)
        al_v, be_v = unbox(alpha)[None], unbox(beta)[None]
        d_v = sig * (x_v[..., None] * (al_v - np.sum(al_v * R, -1, keepdims=True))
                     - (be_v - np.sum(be_v * R, -1, keepdims=True)))
        R = (kk == np.argmax(d_v, axis=-1)[..., None]).astype(t_v.dtype)                # one-hot: r
        t_r = xp.sum(t * R, axis=-1)                                     # the largest t (N, D)
        tail = unbox(t_r) < 0
        rho = xp.where(tail, t_r, 0.0)                                   # (N, D)
        alpha_r = xp.sum(alpha[None] * R, axis=-1)[..., None]
        beta_r = xp.sum(beta[None] * R, axis=-1)[..., None]
        # t_k - t_r without the cancellation of two large t's: exact for kernels of r's bandwidth
        d = sig * (x[..., None] * (alpha[None] - alpha_r) - (beta[None] - beta_r))
        u = xp.where(tail[..., None], d, t)                              # t - rho
        q = u * (rho[..., None] + 0.5 * u)                               # (t^2 - rho^2)/2 >= 0 in the tail
        tk = rho[..., None] + u
        tk_v, q_v = unbox(tk), unbox(q)
        neg = tk_v <= 0
        G = np.empty_like(tk_v)              # L(tk) where tk <= 0, log Phi(tk) + log sqrt(2 pi) where tk > 0
        G[neg] = log_mills(tk_v[neg])
        G[~neg] = log_ndtr(tk_v[~neg]) + _LOG_SQRT_2PI
        if xp is not np:       # G traced to first order in tk (slopes L'(tk) and 1/m(tk)); q traced as written
            slope = np.where(neg, log_mills_prime(tk_v), inv_mills(tk_v))
            G = G + slope * (tk - tk_v)
        T = a[None] + xp.where(neg, G - q, G)
        A = _lse(T, xp)
        B = _lse(a[None] - s[None] - q, xp)
        rho_v, A_v = unbox(rho), unbox(A)
        delta0 = _solve_delta(rho_v, A_v, self.name)
        y0 = rho_v + delta0
        L0 = log_mills(y0)
        m0 = np.exp(L0)
        Ly = _tangent(xp, L0, log_mills_prime(y0), rho, rho_v)
        # one Newton step, traced: its value is delta0 to rounding, its derivative the implicit-function one
        delta = delta0 - (Ly - A - delta0 * (rho + 0.5 * delta0)) * m0
        ytil = rho + delta
        y = sig[..., 0] * ytil
        ld = B + delta * (rho + 0.5 * delta)
        return y, ld, (sig[..., 0], tail, unbox(ytil), tk_v, unbox(u), unbox(T), unbox(a), q_v, A_v, unbox(B),
                       rho_v)

    def _chunks(self, n):
        step = max(1, _CHUNK // max(1, self.dim * self.n_components))
        return [slice(i, min(n, i + step)) for i in range(0, n, step)] or [slice(0, 0)]

    def _map(self, params, x, med):
        """The NumPy path: ``(y, per-coordinate logdet)`` in float64, in row chunks (the (N, D, K) arrays of one
        chunk stay in cache).

        Where the smaller tail probability is at least :data:`FAST_MIN_TAIL` and the density term
        :math:`\\sum_k\\pi_k e^{-t_k^2/2}` at least :data:`FAST_MIN_DENSITY`, the closed forms without logarithms
        are as accurate as the stable ones and about three times cheaper (no ``log_ndtr``/``erfcx``/``log`` per
        kernel): :math:`\\tilde F = \\sum_k\\pi_k\\Phi(t_k)` (``ndtr``), :math:`\\tilde y = \\Phi^{-1}(\\tilde F)`
        (``ndtri``; its error is :math:`\\epsilon\\tilde F/\\phi(\\tilde y) \\le 1.3\\epsilon` absolute, the
        Mills ratio being at most :math:`\\sqrt{\\pi/2}` for :math:`\\tilde y \\le 0`) and
        :math:`\\ell = \\log(\\sum_k\\pi_k e^{-t_k^2/2}) - s + \\tilde y^2/2`, whose two terms are below 20 in
        magnitude there (a cancellation of at most ~40 eps).  Every other entry takes :meth:`_core`.  The harness
        checks that the two paths agree with the traced (stable) path to 1e-13."""
        mu, s = params["centers"], params["log_bandwidth"]
        pi = np.exp(self._log_weights(params["logits"]))
        alpha = np.exp(-s)
        pa = pi * alpha
        y, ld = np.empty_like(x), np.empty_like(x)
        for sl in self._chunks(x.shape[0]):
            xc = x[sl]
            sig = np.where(xc <= med, 1.0, -1.0)
            t = (xc[..., None] - mu) * alpha
            t *= sig[..., None]                                                 # (n, D, K)
            F = (ndtr(t) * pi).sum(axis=-1)
            np.multiply(t, t, out=t)
            t *= -0.5
            np.exp(t, out=t)
            S0 = (t * pa).sum(axis=-1)                                          # h_0 f (h_0 = 1)
            with np.errstate(all="ignore"):
                yt = ndtri(F)
                y[sl] = sig * yt
                lS = np.log(S0)
                ld[sl] = lS + 0.5 * yt * yt
            bad = ~((F >= FAST_MIN_TAIL) & (np.abs(lS) <= FAST_MAX_LOG_DENSITY))
            if bad.any():                                   # the stable path, entry by entry
                r, c = np.nonzero(bad)
                sub = {"centers": mu[c], "log_bandwidth": s[c], "logits": params["logits"][c]}
                ye, le, _ = self._core(sub, xc[r, c][None, :], np, med[c])
                y[sl][r, c], ld[sl][r, c] = ye[0], le[0]
        return y, ld

    @staticmethod
    def _as64(params):
        return {k: np.asarray(unbox(v), dtype=np.float64) for k, v in params.items()}

    def _forward(self, params, x, xp):
        dtype = unbox(x).dtype
        med = self.medians(params)
        if xp is np:
            y, ld = self._map(self._as64(params), np.asarray(x, dtype=np.float64), med)
            return y.astype(dtype, copy=False), ld.sum(axis=1).astype(dtype, copy=False), x
        y, ld, _ = self._core(params, x, xp, med)
        return y, xp.sum(ld, axis=1), x

    # ------------------------------------------------------------------ backward
    def _backward(self, params, dy, dlogdet, cache):
        x = cache
        dtype = x.dtype
        p64 = self._as64(params)
        x64, dy64 = np.asarray(x, np.float64), np.asarray(dy, np.float64)
        dl64 = np.asarray(dlogdet, np.float64)
        med = self.medians(params)
        alpha = np.exp(-p64["log_bandwidth"])                               # (D, K)
        diff = alpha[:, :, None] - alpha[:, None, :]                        # (D, j, k): alpha_j - alpha_k
        dx = np.empty_like(x64)
        dmu, da, ds = (np.zeros_like(p64["centers"]) for _ in range(3))
        with np.errstate(all="ignore"):
            for sl in self._chunks(x64.shape[0]):
                _, _, (sig, tail, ytil, tk, u, T, a, q, A, B, rho) = self._core(p64, x64[sl], np, med)
                v = np.exp(a - p64["log_bandwidth"] - q - B[..., None])     # softmax(a - s - q): the density's
                w = np.exp(T - A[..., None])                                # softmax(T): the CDF's
                Ly = log_mills(ytil)
                my = np.exp(Ly)
                G0 = np.exp(B - A + Ly)                                     # dy/dx
                e = np.where(tail[..., None], log_mills_prime(tk) - u, inv_mills(tk))     # L'(t_j) - u_j
                wd = np.einsum("ndj,djk->ndk", w, diff)                     # sum_j w_j (alpha_j - alpha_k)
                c = ((log_mills_prime(ytil) * G0)[..., None] - np.sum(w * alpha * e, axis=-1, keepdims=True)
                     - alpha * u + rho[..., None] * wd)
                dl = dl64[sl][:, None, None]
                sdy = sig * dy64[sl]
                dz = sig[..., None] * v / alpha * ((sdy * G0)[..., None] + dl * c)   # sigma * (cotangent of t)
                dx[sl] = np.sum(dz * alpha, axis=-1)
                dmu -= np.sum(dz, axis=0) * alpha
                ds -= np.sum(dz * (sig[..., None] * tk) + dl * v, axis=0)
                # d l/d a_k = v_k + y m(y) w_k = (v_k - w_k) + lambda w_k, lambda = 1 + y m(y) = L'(y) m(y): in the
                # tail v and w both concentrate on one kernel, and v_k - w_k of the pivot (the largest v) is
                # formed as minus the sum of the others' (sum_k (v_k - w_k) = 0), not as a difference of two 1s
                dvw = v - w
                piv = np.arange(v.shape[-1]) == np.argmax(v, axis=-1)[..., None]
                dvw = np.where(piv, -np.sum(np.where(piv, 0.0, dvw), axis=-1, keepdims=True), dvw)
                lam = log_mills_prime(ytil) * my
                da += np.sum((sdy * my)[..., None] * w + dl * (dvw + lam[..., None] * w), axis=0)
        pi = np.exp(self._log_weights(p64["logits"]))
        dlogits = da - pi * da.sum(axis=1, keepdims=True)
        grads = {"centers": dmu, "log_bandwidth": ds, "logits": dlogits}
        return dx.astype(dtype, copy=False), {k: v.astype(dtype, copy=False) for k, v in grads.items()}

    # ------------------------------------------------------------------ inverse
    def _inverse(self, params, y, xp):
        dtype = unbox(y).dtype
        p64 = self._as64(params)
        med = self.medians(params)
        ys = np.asarray(unbox(y), dtype=np.float64)
        mu = p64["centers"]
        h = np.exp(p64["log_bandwidth"])
        with np.errstate(all="ignore"):
            ends = mu[None] + h[None] * ys[..., None]                       # (N, D, K)
            lo, hi = ends.min(axis=-1), ends.max(axis=-1)
            pi = np.exp(self._log_weights(p64["logits"]))
            mean = (pi * mu).sum(axis=1)
            spread = np.sqrt((pi * ((mu - mean[:, None]) ** 2 + h * h)).sum(axis=1))
            start = np.clip(med + spread * ys, lo, hi)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise FloatingPointError(f"{self.name} inverse: the preimage of the input overflows float64 (the "
                                     f"bracket centre + bandwidth * y is not finite; max |y| = "
                                     f"{float(np.max(np.abs(ys))):.4g}, max bandwidth {float(h.max()):.4g})")

        def fun(a):
            ya, lda = self._map(p64, a, med)
            dya = np.exp(lda)               # the rounding level of y(a): its own, and that of a's last bit
            return ya - ys, dya, 8.0 * _EPS * (np.abs(ya) + np.abs(ys) + 1.0 + dya * np.abs(a))

        with np.errstate(all="ignore"):
            x0 = solve_increasing(fun, start, lo, hi, self.rtol, self.maxiter, f"{self.name} inverse")
            y0, ld0 = self._map(p64, x0, med)
        if xp is np:
            return x0.astype(dtype, copy=False), -ld0.sum(axis=1).astype(dtype, copy=False)
        # traced: x0 plus the implicit-function derivative -(dy(x0; theta) - dy*)/(dy/dx), with the concrete
        # residual subtracted so that the value is x0 itself (a Newton step could be huge where dy/dx is tiny)
        yt, _, _ = self._core(params, x0, xp, med)
        x = x0 - ((yt - y) - (y0 - ys)) / np.exp(ld0)
        _, ld, _ = self._core(params, x, xp, med)
        return x, -xp.sum(ld, axis=1)

    def _explain(self, direction, params, x):
        s = np.asarray(unbox(params["log_bandwidth"]), dtype=np.float64)
        if s.size and (s.max() > 700 or s.min() < -700):
            return (f"the log-bandwidth reaches {float(s[np.argmax(np.abs(s))]):.6g}, and exp(s) leaves the "
                    f"float64 range, so (x - centre)/bandwidth is not representable")
        if x is not None:
            xa = np.asarray(unbox(x), dtype=np.float64)
            mu = np.asarray(unbox(params["centers"]), dtype=np.float64)
            with np.errstate(all="ignore"):
                z = ((np.abs(xa).max(axis=0) + np.abs(mu).max(axis=1)) * np.exp(-s.min(axis=1)) if xa.size
                     else np.zeros(1))
            if not np.all(np.isfinite(z)) or z.max() > 1e300:
                return (f"|x - centre|/bandwidth reaches {float(np.max(z)):.4g}: the standardised input (and the "
                        f"output, about as large) overflows the {unbox(x).dtype} range")
        return None

    def __repr__(self):
        return f"MarginalGaussianization(dim={self.dim}, n_components={self.n_components})"


def gaussian_grid(n_components, n_points):
    """The grid of :func:`fit_marginal`: ``(u, weights)`` with :math:`u_k` evenly spaced on :math:`[-c, c]`,
    :math:`c = -\\Phi^{-1}(2/N)` (how far out N points reach on the Gaussian scale: about their 2nd smallest and
    largest), and the weights :math:`\\pi_k = \\Phi(\\bar u_{k+1/2}) - \\Phi(\\bar u_{k-1/2})`, the probability
    between the midpoints of the grid (:math:`\\bar u_{1/2} = -\\infty`, :math:`\\bar u_{K+1/2} = \\infty`)."""
    K = n_components
    if K == 1:
        return np.zeros(1), np.ones(1)
    c = -float(ndtri(2.0 / max(n_points, 4)))
    u = np.linspace(-c, c, K)
    edges = np.concatenate([[0.0], ndtr(0.5 * (u[1:] + u[:-1])), [1.0]])
    return u, np.diff(edges)


def fit_marginal(x, n_components, rng=None, max_points=4096, dtype=None):
    """Fit :class:`MarginalGaussianization`'s parameters to the data ``x`` ``(N, D)`` without gradients.

    Per coordinate, on the grid of :func:`gaussian_grid` (even on the Gaussian scale, out to the data's extremes):

    * ``centers``: the sample quantiles at the levels :math:`\\Phi(u_k)` (linear interpolation between order
      statistics); ``logits``: the logarithms of the grid's weights (each centre's share of the probability);
    * ``log_bandwidth`` of the two outermost kernels: the slope of the quantile function over the last unit
      of the Gaussian scale, :math:`Q(\\Phi(-c + 1)) - Q(\\Phi(-c))` on the left (alike on the right): these
      kernels are the mixture's tails, Gaussian tails of the data's own scale there, so that the marginal map is
      about affine with slope 1/(that scale) beyond the data and does not stretch outliers (a kernel as narrow as
      the interior ones would, by a factor of about its inverse width per layer, and RBIG's layers compound it);
    * ``log_bandwidth`` of the interior kernels, one shared value: :math:`\\arg\\max_s` of the mean
      log-likelihood of the mixture (with those centres, weights and tails), by Brent's bounded search
      (``scipy.optimize.minimize_scalar``, no derivatives) over :math:`h \\in [10^{-3}, 2]` times the
      coordinate's standard deviation, on at most ``max_points`` points (a subsample drawn by ``rng`` when there
      are more).  With :math:`K \\ll N` the centres are not data points, the likelihood has an interior maximum,
      and it smooths at about the spacing of the centres.

    Returns ``{"centers", "log_bandwidth", "logits"}``, each ``(D, K)``, in ``dtype`` (default ``x``'s).
    ``ValueError`` for a coordinate without spread.
    """
    owner = "fit_marginal"
    check_array(owner, x, ndim=2, what="data")
    K = check_count(owner, n_components, what="n_components", minimum=1)
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    xs = np.asarray(x, dtype=np.float64)
    n, D = xs.shape
    if n < 4:
        raise ValueError(f"{owner}: needs at least 4 points, got {n}")
    u, weights = gaussian_grid(K, n)
    mu = np.quantile(xs, ndtr(u), axis=0).T                               # (D, K)
    logw = np.log(weights)
    c = float(u[-1])
    sd = xs.std(axis=0)
    if not np.all(sd > 0):
        raise ValueError(f"{owner}: coordinate {int(np.argmin(sd))} of the data is constant; a CDF estimate needs "
                         f"spread")
    ends = np.quantile(xs, ndtr(np.array([-c, 1.0 - c, c - 1.0, c])), axis=0)     # (4, D)
    floor = 1e-3 * sd
    tails = np.stack([np.maximum(ends[1] - ends[0], floor), np.maximum(ends[3] - ends[2], floor)], axis=1)
    sub = xs
    if n > max_points:
        rng = check_rng(owner, rng if rng is not None else np.random.default_rng(0))
        sub = xs[rng.choice(n, max_points, replace=False)]
    s = np.empty((D, K))
    for d in range(D):
        col = sub[:, d][:, None]
        s_tail = np.log(tails[d])

        def log_bandwidths(ls, s_tail=s_tail):
            out = np.full(K, ls)
            out[0], out[-1] = s_tail[0], s_tail[-1]
            return out

        def nll(ls, col=col, m=mu[d]):
            sk = log_bandwidths(ls)
            z = (col - m) * np.exp(-sk)
            e = logw - sk - 0.5 * z * z
            mx = e.max(axis=1, keepdims=True)
            return -float(np.mean(mx[:, 0] + np.log(np.exp(e - mx).sum(axis=1))))

        if K > 2:
            res = minimize_scalar(nll, bounds=(math.log(1e-3 * sd[d]), math.log(2.0 * sd[d])), method="bounded",
                                  options={"xatol": 1e-4})
            s[d] = log_bandwidths(res.x)
        else:
            s[d] = log_bandwidths(0.0)
    logits = np.broadcast_to(logw, (D, K))
    return {"centers": mu.astype(dtype), "log_bandwidth": s.astype(dtype), "logits": logits.astype(dtype)}


# ----------------------------------------------------------------------------- RBIG
ROTATIONS = ("pca", "random")


def rotation_matrix(z, kind, rng):
    """An orthogonal ``(D, D)`` weight for :class:`~npflows.bijectors.linear.Linear` (``y = z @ W.T``):

    * ``"pca"``: the rows of ``W`` are the eigenvectors of the covariance of ``z`` (``numpy.linalg.eigh``) in
      order of decreasing eigenvalue, each signed so that its largest entry in magnitude is positive (so the
      result does not depend on LAPACK's sign choice); the rotated coordinates are uncorrelated;
    * ``"random"``: the Q factor of the QR factorisation of a standard normal matrix drawn by ``rng``, its
      columns signed by R's diagonal (Haar-distributed, Mezzadri 2007).
    """
    D = z.shape[1]
    if kind == "pca":
        zc = z - z.mean(axis=0)
        evals, V = np.linalg.eigh(zc.T @ zc / max(1, z.shape[0] - 1))
        W = V[:, ::-1].T
        big = np.argmax(np.abs(W), axis=1)
        return W * np.sign(W[np.arange(D), big])[:, None]
    if kind == "random":
        q, r = np.linalg.qr(rng.standard_normal((D, D)))
        return q * np.sign(np.diag(r))
    raise ValueError(f"rotation_matrix: unknown rotation {kind!r}; choose one of {ROTATIONS}")


class RBIG(Sequential):
    """Rotation-based iterative Gaussianization (Laparra, Camps-Valls & Malo 2011, arXiv:1602.00229):
    ``n_layers`` pairs (:class:`MarginalGaussianization`, :class:`~npflows.bijectors.linear.Linear`), layer
    ``2l`` the marginal step and ``2l + 1`` the rotation, a :class:`~npflows.core.compose.Sequential` (keys
    ``"0.centers"``, ``"0.log_bandwidth"``, ``"1.W"``, ``"1.b"``, ``"2.centers"``, ...).

    Fit it with :func:`fit_rbig` (greedy, layer by layer, no gradients), or :meth:`init` with data (every
    marginal fitted to the output of the layers before it, random rotations, no stopping rule).  The rotation is a
    general ``Linear`` (weight ``W``, bias ``b``): the fit makes ``W`` orthogonal and ``b = 0``, so its logdet
    :math:`\\log|\\det W|` is 0 to rounding, but any invertible weight is a valid parameter, and the harness
    checks the layer with perturbed, non-orthogonal ones.

    Notes
    -----
    The map is :math:`x \\mapsto R_L G_L \\cdots R_1 G_1 x` with :math:`G_l` marginal Gaussianizations and
    :math:`R_l` rotations, its logdet the sum of the layers' (``Sequential``'s chain rule):
    :math:`\\sum_l \\sum_d [\\log f_{ld} - \\log\\phi(y_{ld})] + \\log|\\det W_l|`.  Why it converges (the paper,
    sec. III): the total correlation of the data drops at each marginal step by exactly the sum of the marginal
    negentropies removed, a rotation leaves the total negentropy :math:`J = KL(p\\,\\|\\,N(0, I))` unchanged
    and moves it back from the marginals into correlations, and :math:`J` decreases to 0 as long as the rotations
    keep exposing non-Gaussian directions (random rotations do, almost surely).
    """

    def __init__(self, dim, n_layers, n_components=32, rtol=1e-12, maxiter=100):
        owner = "RBIG"
        dim = check_count(owner, dim, what="dim", minimum=1)
        self.n_layers = check_count(owner, n_layers, what="n_layers", minimum=1)
        self.n_components = check_count(owner, n_components, what="n_components", minimum=1)
        self.rtol, self.maxiter = float(rtol), int(maxiter)
        layers = []
        for _ in range(self.n_layers):
            layers += [MarginalGaussianization(dim, self.n_components, self.rtol, self.maxiter), Linear(dim)]
        super().__init__(layers)

    def __repr__(self):
        return f"RBIG(dim={self.dim}, n_layers={self.n_layers}, n_components={self.n_components})"


def _log_normal(z):
    return -0.5 * np.einsum("nd,nd->n", z, z) - z.shape[1] * _LOG_SQRT_2PI


def fit_rbig(x, rng, max_layers=100, tol=1e-4, patience=5, rotation="random", n_components=32, x_val=None,
             max_points=4096, rtol=1e-12, maxiter=100, verbose=False, log=print):
    """Fit an :class:`RBIG` flow to the data ``x`` ``(N, D)``, greedily and without gradients.

    Layer by layer: fit the marginal Gaussianization to the current data (:func:`fit_marginal`: quantile
    centres, maximum-likelihood bandwidths), apply it, fit the rotation to its output
    (:func:`rotation_matrix`), apply it; the fitted pair is never revisited.

    **Stopping rule.**  After each layer the mean log-likelihood of the training data under the flow so far,
    :math:`\\mathcal L_l = \\frac1N\\sum_n[\\log N(z_{ln}; 0, I) + \\sum_{j \\le l}\\ell_{jn}]` (nats per point),
    is exact (the change of variables).  Its gain :math:`\\mathcal L_l - \\mathcal L_{l-1}` is the sum over the
    coordinates of :math:`\\frac1N\\sum_n[\\log f_{ld}(z_{nd}) - \\log\\phi(z_{nd})]`, the estimated marginal
    negentropy that layer l removed (the rotation adds nothing): Laparra et al.'s reduction of total
    correlation per layer.  Without ``x_val`` the fit stops when the gain stays below ``tol`` for ``patience``
    consecutive layers (a random rotation can expose little, so one small gain is not enough), or at
    ``max_layers``, and keeps every layer.  With ``x_val`` it tracks the validation log-likelihood instead,
    stops when that has not improved by more than ``tol`` for ``patience`` layers, and keeps the layers up to
    its best value (held-out data decide when the marginal fits start to model noise).

    Parameters
    ----------
    x : ndarray (N, D), float32 or float64
        Training data.
    rng : numpy.random.Generator
        Draws the random rotations and the bandwidth subsamples: the fit is a deterministic function of the
        data and ``rng``'s state.
    max_layers, tol, patience : int, float, int
        The stopping rule above (``tol`` in nats per point).
    rotation : {"random", "pca"}
        :func:`rotation_matrix`'s kind for every layer.
    n_components : int
        Kernels per coordinate of every marginal layer.
    x_val : ndarray (M, D), optional
        Validation data for the stopping rule.
    max_points : int
        Points per bandwidth search (:func:`fit_marginal`).
    rtol, maxiter : the inverse's tolerance and budget of every marginal layer.
    verbose : bool
        Print one line per layer with ``log``.

    Returns
    -------
    bijector : RBIG
    params : dict
        Its parameters, in ``x``'s dtype.
    history : dict
        ``train_ll`` and ``val_ll`` (nats per point after each layer; ``val_ll`` None without ``x_val``),
        ``gain`` (per layer), ``n_layers`` (kept), ``layers_fitted``, ``stopped`` (the reason) and ``seconds``.
    """
    owner = "fit_rbig"
    check_array(owner, x, ndim=2, what="data")
    check_rng(owner, rng)
    max_layers = check_count(owner, max_layers, what="max_layers", minimum=1)
    patience = check_count(owner, patience, what="patience", minimum=1)
    if rotation not in ROTATIONS:
        raise ValueError(f"{owner}: unknown rotation {rotation!r}; choose one of {ROTATIONS}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"{owner}: tol must be a finite number >= 0, got {tol!r}")
    dtype = x.dtype
    D = x.shape[1]
    z = np.asarray(x, dtype=np.float64)
    ld = np.zeros(z.shape[0])
    if x_val is not None:
        check_array(owner, x_val, ndim=2, size=D, what="validation data")
        zv, ldv = np.asarray(x_val, dtype=np.float64), np.zeros(x_val.shape[0])
    marg, lin = MarginalGaussianization(D, n_components, rtol, maxiter), Linear(D)
    layers, hist = [], {"train_ll": [], "val_ll": [] if x_val is not None else None, "gain": []}
    prev = float(np.mean(_log_normal(z)))
    best, best_at, quiet, stopped = -np.inf, 0, 0, f"max_layers ({max_layers})"
    t0 = time.perf_counter()
    for l in range(max_layers):
        pm = fit_marginal(z, n_components, rng, max_points)
        z, l1, _ = marg.forward(pm, z)
        W = rotation_matrix(z, rotation, rng)
        pr = {"W": W, "b": np.zeros(D)}
        z, l2, _ = lin.forward(pr, z)
        ld += l1 + l2
        layers.append((pm, pr))
        ll = float(np.mean(_log_normal(z) + ld))
        gain = ll - prev
        prev = ll
        hist["train_ll"].append(ll)
        hist["gain"].append(gain)
        if x_val is not None:
            zv, lv1, _ = marg.forward(pm, zv)
            zv, lv2, _ = lin.forward(pr, zv)
            ldv += lv1 + lv2
            score = float(np.mean(_log_normal(zv) + ldv))
            hist["val_ll"].append(score)
        else:
            score = ll
        if verbose:
            val = f"  val LL {hist['val_ll'][-1]:.4f}" if x_val is not None else ""
            log(f"RBIG layer {l + 1}: train LL {ll:.4f}{val}  gain {gain:.5f} nats  "
                f"[{time.perf_counter() - t0:.1f} s]")
        if x_val is not None:
            if score > best + tol:
                quiet = 0
            else:
                quiet += 1
            if score > best:
                best, best_at = score, l + 1
            if quiet >= patience:
                stopped = f"validation LL not better by {tol:g} for {patience} layers (best after {best_at})"
                break
        else:
            quiet = quiet + 1 if gain < tol else 0
            best_at = l + 1
            if quiet >= patience:
                stopped = f"gain below {tol:g} for {patience} layers"
                break
    keep = layers[:best_at]
    params = {}
    for i, (pm, pr) in enumerate(keep):
        for k, v in pm.items():
            params[f"{2 * i}.{k}"] = v.astype(dtype)
        for k, v in pr.items():
            params[f"{2 * i + 1}.{k}"] = v.astype(dtype)
    hist.update(n_layers=len(keep), layers_fitted=len(layers), stopped=stopped, seconds=time.perf_counter() - t0)
    return RBIG(D, len(keep), n_components, rtol, maxiter), params, hist
