"""Planar and radial flows (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows",
arXiv:1505.05770, section 4.1 and appendix A).

Both are defined in the generating direction z -> x, so their ``forward`` is the sampling map of a
:class:`~npflows.core.PushForward`.  Their parameters are unconstrained; the constraints of the paper's
appendix A, which make each map invertible, are built in:

* planar: :math:`\\hat u = u + (m(w^T u) - w^T u)\\,w/\\lVert w\\rVert^2`, :math:`m(a) = -1 + \\mathrm{softplus}(a)`,
  so :math:`w^T\\hat u = m(w^T u) > -1`;
* radial: :math:`\\alpha = \\mathrm{softplus}(\\alpha_{raw}) > 0`,
  :math:`\\beta = -\\alpha + \\mathrm{softplus}(\\beta_{raw}) > -\\alpha`.

The planar inverse is a scalar root along ``w`` found by a safeguarded Newton/bisection iteration to a
stated tolerance (in closed form with the leaky ReLU activation); the radial inverse reduces to a quadratic in the radial distance and is exact to
rounding.
"""
import math

import numpy as np

from .._checks import all_finite, unbox
from ..core.bijector import Bijector

# m(a) = -1 + softplus(a) vanishes at a = log(e - 1): the identity planar layer has u = this * w / |w|^2.
_M_ZERO = math.log(math.e - 1.0)


class InverseNotConverged(FloatingPointError):
    """A numerically solved inverse did not reach its tolerance within its iteration budget.

    A ``FloatingPointError`` so that code which tolerates numerical failure point by point (for example
    :func:`npflows.plotting.density_grid`) treats it like an overflow."""


def _sigmoid(a):
    """The logistic function in a form that never overflows (plain NumPy, keeps the dtype)."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def solve_increasing(fun, y, lo, hi, rtol, maxiter, owner):
    """Solve ``F(a) = 0`` elementwise for a strictly increasing scalar ``F`` bracketed by ``[lo, hi]``.

    Parameters
    ----------
    fun : callable
        ``fun(a) -> (F, dF, noise)``: the residual, its derivative (> 0) and the rounding level of the
        residual (a bound on the error with which ``F`` itself is computed), all arrays like ``a``.
    y, lo, hi : ndarray
        Start point and a bracket with ``F(lo) <= 0 <= F(hi)`` (float64).
    rtol : float
        Stop when the last step was at most ``rtol * max(1, |a|)``, or when ``|F(a)|`` is at its rounding
        level (no step can then be trusted: the root is as accurate as the problem's conditioning allows).
    maxiter : int
        Iteration budget; past it :class:`InverseNotConverged` is raised.

    Notes
    -----
    Each iteration takes the Newton step :math:`a - F/F'` and falls back to bisection of the bracket
    when that step leaves it; the bracket shrinks with the sign of ``F`` at every iterate.  Bisection
    alone halves the bracket, so convergence is guaranteed in about
    :math:`\\log_2(\\mathrm{width}/(\\mathrm{rtol}))` iterations; near the root Newton converges
    quadratically and ends in a few steps.
    """
    a = np.clip(y, lo, hi)
    done = np.zeros(a.shape, bool)
    for _ in range(int(maxiter)):
        F, dF, noise = fun(a)
        lo = np.where(F < 0, a, lo)
        hi = np.where(F > 0, a, hi)
        at_noise = np.abs(F) <= noise
        with np.errstate(divide="ignore", invalid="ignore"):
            a_new = a - F / dF
        outside = ~((a_new > lo) & (a_new < hi)) & ~at_noise
        a_new = np.where(outside, 0.5 * (lo + hi), a_new)
        a_new = np.where(at_noise | done, a, a_new)
        done = done | at_noise | (~outside & (np.abs(a_new - a) <= rtol * np.maximum(1.0, np.abs(a_new))))
        a = a_new
        if done.all():
            return a
    bad = int((~done).sum())
    raise InverseNotConverged(f"{owner}: the numerical inverse did not converge for {bad} of {a.size} "
                              f"points within {maxiter} iterations (rtol {rtol:g})")


class Planar(Bijector):
    """Planar flow :math:`x = f(z) = z + \\hat u\\,\\tanh(w^T z + b)` (Rezende & Mohamed 2015,
    arXiv:1505.05770, eq. 10), with the invertibility constraint of their appendix A built in.

    Parameters ``w`` ``(D,)``, ``u`` ``(D,)`` (unconstrained) and ``b`` ``(1,)``.  ``forward`` is the
    generating direction z -> x; ``inverse`` is solved numerically (see below).

    Parameters
    ----------
    dim : int
        Event size D.
    rtol : float
        Tolerance of the inverse's root :math:`a = w^T z + b`: the last Newton step is at most
        ``rtol * max(1, |a|)``, or the residual is at its rounding level.  Default 1e-12.
    maxiter : int
        Iteration budget of the inverse; :class:`InverseNotConverged` past it.
    activation : {"tanh", "leaky_relu"}
        :math:`h = \\tanh` (the paper's), or the leaky ReLU :math:`h(a) = a` for :math:`a \\ge 0`,
        ``slope`` :math:`\\cdot a` otherwise (normflows' ``Planar(act="leaky_relu")`` with slope 0.2, flowjax's
        ``Planar(negative_slope=...)``), whose inverse is in closed form (see below).
    slope : float
        The leaky ReLU's negative slope :math:`\\alpha \\in (0, 1]` (ignored for tanh): then
        :math:`1 + \\alpha m > 1 - \\alpha \\ge 0` for every :math:`m > -1`, the map stays invertible.

    Notes
    -----
    **Constraint.**  With :math:`c = w^T u`, :math:`\\sigma_+ = \\mathrm{softplus}(c)` and
    :math:`m = \\sigma_+ - 1 > -1`, the paper's
    :math:`\\hat u = u + k\\,w`, :math:`k = (m - c)/\\lVert w\\rVert^2`, gives
    :math:`w^T\\hat u = c + (m - c) = m`.  Any raw ``u`` is allowed; ``w`` must be nonzero.

    **Log-determinant.**  With :math:`a = w^T z + b`, :math:`t = \\tanh a`, :math:`s = 1 - t^2 = h'(a)`,
    the Jacobian :math:`I + s\\,\\hat u w^T` is the identity plus a rank one matrix, so by the matrix
    determinant lemma :math:`\\det = 1 + s\\,w^T\\hat u = 1 + s m` (the paper's
    :math:`1 + \\hat u^T\\psi(z)`, :math:`\\psi = h'(a) w`).  Since :math:`0 < s \\le 1` and
    :math:`m > -1` this is positive, and it is evaluated as the sum of non-negative terms

    .. math:: g = 1 + s m = t^2 + s\\,\\sigma_+, \\qquad \\log|\\det J| = \\log g,

    which stays accurate when :math:`m` is close to -1 (no cancellation in :math:`1 + m`).

    **Leaky ReLU.**  With :math:`t = h(a)` and :math:`s = h'(a) \\in \\{1, \\alpha\\}` (1 for :math:`a \\ge 0`,
    as normflows and flowjax take it at the kink), the same lemma gives
    :math:`g = 1 + s m = (1 - s) + s\\,\\sigma_+`: :math:`\\sigma_+` for :math:`a \\ge 0`, and
    :math:`(1 - \\alpha) + \\alpha\\sigma_+` otherwise, sums of non-negative terms again.  Since :math:`s` is
    piecewise constant, :math:`\\partial g/\\partial a = 0` almost everywhere and the backward below holds
    with the :math:`-2tsm` term dropped.  **Inverse in closed form**: :math:`w^T x + b = a + m h(a) = g\\,a`
    with :math:`g > 0`, so :math:`a` has the sign of :math:`y = w^T x + b`, hence
    :math:`a = y/g_\\pm` with :math:`g_+ = \\sigma_+` (:math:`y \\ge 0`) or
    :math:`g_- = (1-\\alpha) + \\alpha\\sigma_+`, :math:`z = x - \\hat u\\,h(a)` and the logdet
    :math:`-\\log g_\\pm` (exact to rounding, no iteration; ``rtol`` and ``maxiter`` are unused).

    **Backward** for cotangents :math:`(\\bar x_n, \\bar\\ell_n)`, line by line in reverse order of the
    forward pass (all sums over the batch n):

    * through :math:`\\ell = \\log g`: :math:`\\partial g/\\partial a = m\\,ds/da = -2tsm` and
      :math:`\\partial g/\\partial m = s`, so
      :math:`\\bar a_n = s_n\\,\\bar x_n^T\\hat u - 2 t_n s_n m\\,\\bar\\ell_n/g_n` (the first term from
      :math:`x = z + t\\hat u`, :math:`dt/da = s`) and :math:`\\bar m = \\sum_n \\bar\\ell_n s_n/g_n`;
    * :math:`\\bar{\\hat u} = \\sum_n t_n \\bar x_n`;
    * :math:`\\bar z = \\bar x + \\bar a\\,w^T`, :math:`\\bar b = \\sum_n \\bar a_n`, and the direct part
      :math:`\\bar w \\mathrel{+}= \\sum_n \\bar a_n z_n`;
    * through :math:`\\hat u = u + k w`: :math:`\\bar u \\mathrel{+}= \\bar{\\hat u}`,
      :math:`\\bar w \\mathrel{+}= k\\,\\bar{\\hat u}`, :math:`\\bar k = w^T\\bar{\\hat u}`;
    * through :math:`k = (m - c)/\\lVert w\\rVert^2`: :math:`\\bar m \\mathrel{+}= \\bar k/\\lVert w\\rVert^2`,
      :math:`\\bar c = -\\bar k/\\lVert w\\rVert^2`, and
      :math:`\\bar w \\mathrel{+}= 2\\,\\overline{\\lVert w\\rVert^2}\\,w` with
      :math:`\\overline{\\lVert w\\rVert^2} = -\\bar k\\,k/\\lVert w\\rVert^2`;
    * through :math:`m = \\mathrm{softplus}(c) - 1`: :math:`\\bar c \\mathrel{+}= \\bar m\\,\\mathrm{sigmoid}(c)`;
    * through :math:`c = w^T u`: :math:`\\bar w \\mathrel{+}= \\bar c\\,u`, :math:`\\bar u \\mathrel{+}= \\bar c\\,w`.

    **Inverse.**  Given x, project :math:`x = z + \\hat u\\tanh(a)` on ``w`` and add ``b``:
    :math:`w^T x + b = a + (w^T\\hat u)\\tanh a`, so the scalar :math:`a = w^T z + b` solves

    .. math:: F(a) = a + m\\tanh a - y = 0, \\qquad y = w^T x + b,

    with :math:`F'(a) = 1 + m s(a) = g > 0` (evaluated as :math:`t^2 + s\\,\\sigma_+`, like the logdet,
    because :math:`m = \\sigma_+ - 1` rounds to -1 for :math:`c < -37`): F increases strictly from
    -inf to +inf (this is where the constraint :math:`m > -1` is needed), so the root is unique, and
    because :math:`|m\\tanh a| \\le |m|` it lies in :math:`[y - |m|, y + |m|]`.
    :func:`solve_increasing` finds it (in float64 whatever the input dtype) by safeguarded
    Newton/bisection on that bracket; then :math:`z = x - \\hat u\\tanh a`
    and the logdet is :math:`-\\log g(a)`.  Where the map is nearly singular (:math:`g \\ll 1`) the root
    is accurate to :math:`\\epsilon\\,(|a| + |y|)/g`, the conditioning of the problem.
    The solved root enters the traced computation through one more Newton step taken with ``xp``; its
    value changes by a rounding error, but its derivative is the implicit-function derivative
    :math:`-(\\partial F/\\partial\\theta)/F'`, so the inverse can be traced by autograd too.
    """

    def __init__(self, dim, rtol=1e-12, maxiter=100, activation="tanh", slope=0.2):
        self.dim, self.rtol, self.maxiter = int(dim), float(rtol), int(maxiter)
        if self.dim < 1:
            raise ValueError(f"Planar: dim must be at least 1, got {dim}")
        if activation not in ("tanh", "leaky_relu"):
            raise ValueError(f"Planar: unknown activation {activation!r}; choose 'tanh' or 'leaky_relu'")
        if not 0.0 < slope <= 1.0:
            raise ValueError(f"Planar: the leaky ReLU slope must lie in (0, 1] (then 1 + slope * m > 0 for "
                             f"every m > -1), got {slope}")
        self.activation, self.slope = activation, float(slope)

    def param_shapes(self):
        return {"w": (self.dim,), "u": (self.dim,), "b": (1,)}

    def init(self, rng, x=None, dtype=np.float64):
        """``w ~ N(0, I/D)``, ``b = 0`` and ``u`` chosen so that :math:`\\hat u \\approx 0` (plus noise of
        scale 0.01): the layer starts close to the identity.  (``u = 0`` would not: then
        :math:`\\hat u = -0.307\\,w/\\lVert w\\rVert^2`.)"""
        dtype = x.dtype if x is not None else dtype
        w = rng.standard_normal(self.dim) / math.sqrt(self.dim)
        u = _M_ZERO * w / (w @ w) + 0.01 * rng.standard_normal(self.dim)
        return {"w": w.astype(dtype), "u": u.astype(dtype), "b": np.zeros(1, dtype)}

    def _check_param_values(self, params):
        ww = float(np.sum(np.square(unbox(params["w"]), dtype=np.float64)))
        if not ww > 0.0 or not math.isfinite(ww):
            raise ValueError(f"{self.name}: the parameter w must be finite and nonzero (it defines the "
                             f"direction of the map), got |w|^2 = {ww}")

    def u_hat(self, params, xp=np):
        """``(u_hat, m, c, softplus(c), |w|^2, k)``: the constrained direction with
        :math:`w^T\\hat u = m = \\mathrm{softplus}(w^T u) - 1 > -1`."""
        w, u = params["w"], params["u"]
        c = xp.sum(w * u)
        sp = xp.logaddexp(0.0, c)
        m = sp - 1.0
        ww = xp.sum(w * w)
        k = (m - c) / ww
        return u + k * w, m, c, sp, ww, k

    def _act(self, a, xp):
        """``(h(a), h'(a), 1 - h'(a))``, the last without cancellation (``tanh(a)^2`` for tanh)."""
        if self.activation == "tanh":
            t = xp.tanh(a)
            return t, (1.0 - t) * (1.0 + t), t * t
        one = xp.ones_like(a)
        neg = a < 0
        return (xp.where(neg, self.slope * a, a), xp.where(neg, self.slope * one, one),
                xp.where(neg, (1.0 - self.slope) * one, 0.0 * one))

    def _forward(self, params, x, xp):
        w = params["w"]
        u_hat, m, c, sp, ww, k = self.u_hat(params, xp)
        a = x @ w + params["b"]
        t, s, one_minus_s = self._act(a, xp)
        g = one_minus_s + s * sp
        y = x + t[:, None] * u_hat
        return y, xp.log(g), (x, t, s, g, u_hat, m, c, ww, k)

    def _backward(self, params, dy, dlogdet, cache):
        z, t, s, g, u_hat, m, c, ww, k = cache
        w, u = params["w"], params["u"]
        ell = dlogdet / g
        da = s * (dy @ u_hat)
        if self.activation == "tanh":                  # ds/da = -2ts; 0 for the leaky ReLU (a.e.)
            da = da - 2.0 * m * (t * s) * ell
        du_hat = t @ dy
        dz = dy + da[:, None] * w
        dw = da @ z + k * du_hat
        dk = w @ du_hat
        dm = s @ ell + dk / ww
        dc = -dk / ww + dm * _sigmoid(c)
        dww = -dk * k / ww
        dw = dw + 2.0 * dww * w + dc * u
        du = du_hat + dc * w
        return dz, {"w": dw, "u": du, "b": da.sum(keepdims=True)}

    def _inverse(self, params, y, xp):
        w, b = params["w"], params["b"]
        u_hat, m, c, sp, *_ = self.u_hat(params, xp)
        proj = y @ w + b
        if self.activation == "leaky_relu":          # closed form: a = proj / g, g = 1 + h'(a) m
            one = xp.ones_like(proj)
            neg = proj < 0                            # sign(a) = sign(proj), since g > 0
            gpm = xp.where(neg, (1.0 - self.slope) * one + self.slope * sp, sp * one)
            a = proj / gpm
            t = xp.where(neg, self.slope * a, a)
            return y - t[:, None] * u_hat, -xp.log(gpm)
        # the root in float64 on concrete values, whatever the dtype and whether traced
        m64, sp64 = float(unbox(m)), float(unbox(sp))
        p64 = np.asarray(unbox(proj), dtype=np.float64)
        eps = float(np.finfo(np.float64).eps)

        def fun(a):
            th = np.tanh(a)
            F = a + m64 * th - p64
            dF = th * th + (1.0 - th) * (1.0 + th) * sp64        # = 1 + m s, without cancellation
            return F, dF, 4.0 * eps * (np.abs(a) + abs(m64) + np.abs(p64))

        a0 = solve_increasing(fun, p64, p64 - abs(m64), p64 + abs(m64), self.rtol, self.maxiter, self.name)
        a0 = a0.astype(unbox(y).dtype)
        # one traced Newton step from the root: same value, implicit-function derivative
        t0 = xp.tanh(a0)
        s0 = (1.0 - t0) * (1.0 + t0)
        a = a0 - (a0 + m * t0 - proj) / (t0 * t0 + s0 * sp)
        t = xp.tanh(a)
        s = (1.0 - t) * (1.0 + t)
        x = y - t[:, None] * u_hat
        return x, -xp.log(t * t + s * sp)

    def __repr__(self):
        act = "" if self.activation == "tanh" else f", activation='leaky_relu', slope={self.slope}"
        return f"Planar(dim={self.dim}{act})"


def row_norm(d, xp=np):
    """:math:`\\lVert d_n\\rVert_2` per row of ``d`` ``(N, D)``: ``sqrt(sum d^2)``, and where that overflows
    (entries beyond ~1e154 in float64, ~1e19 in float32) :math:`m\\lVert d/m\\rVert` with :math:`m = \\max_i|d_i|`,
    finite whenever the norm itself is."""
    r = xp.sqrt(xp.sum(d * d, axis=1))
    if all_finite(r):
        return r
    m = xp.max(xp.abs(d), axis=1)
    m = xp.where(m > 0, m, 1.0)
    u = d / m[:, None]
    return m * xp.sqrt(xp.sum(u * u, axis=1))


class Radial(Bijector):
    """Radial flow :math:`x = f(z) = z + \\beta h(\\alpha, r)(z - z_0)`, :math:`h = 1/(\\alpha + r)`,
    :math:`r = \\lVert z - z_0\\rVert` (Rezende & Mohamed 2015, arXiv:1505.05770, eq. 14), with
    :math:`\\alpha = \\mathrm{softplus}(\\alpha_{raw}) > 0` and
    :math:`\\beta = -\\alpha + \\mathrm{softplus}(\\beta_{raw}) > -\\alpha` (their appendix A).

    Parameters ``z0`` ``(D,)``, ``alpha_raw`` ``(1,)``, ``beta_raw`` ``(1,)``.

    Parameters
    ----------
    dim : int
        Event size D.
    alpha : {"softplus", "abs"}
        :math:`\\alpha = \\mathrm{softplus}(\\alpha_{raw})`, or :math:`\\alpha = |\\alpha_{raw}|`
        (normflows' ``Radial``, whose parameters ``alpha``, ``beta`` are then ``alpha_raw``, ``beta_raw``
        exactly; ``alpha_raw = 0`` raises ``ValueError``: the map is singular at ``z0`` there).  :math:`\\beta`
        is :math:`\\mathrm{softplus}(\\beta_{raw}) - \\alpha` either way.

    Notes
    -----
    Write :math:`d = z - z_0`, :math:`q = \\alpha + r`, :math:`h = 1/q` and
    :math:`B = \\mathrm{softplus}(\\beta_{raw}) = \\alpha + \\beta > 0`.  Then
    :math:`1 + \\beta h = (r + B)/q =: \\varphi` and the map is :math:`x = z_0 + \\varphi(r)\\,d`.

    **Log-determinant.**  With :math:`h' = -h^2`, the Jacobian
    :math:`(1 + \\beta h) I + \\beta h'(r)\\,d d^T/r` has the eigenvalue :math:`1 + \\beta h` on the
    D - 1 directions orthogonal to ``d`` and :math:`1 + \\beta h + \\beta h' r` along ``d`` (the paper's
    eq. 14).  The latter simplifies, :math:`1 + \\beta h - \\beta r h^2 = 1 + \\beta h^2 (q - r) =
    1 + \\alpha\\beta h^2 = h^2 (q^2 + \\alpha\\beta) = h^2 P` with
    :math:`P = r^2 + 2\\alpha r + \\alpha B`.  Both factors are positive (:math:`r + B > 0`,
    :math:`P > 0`), and the logdet is evaluated from positive terms only:

    .. math:: \\log|\\det J| = (D-1)\\log(r + B) + \\log P - (D+1)\\log q
              = (D-1)\\log(r + B) + \\log \\Pi - D\\log q,

    with :math:`\\Pi = P/q = r\\,\\frac{r + 2\\alpha}{q} + \\alpha\\frac{B}{q}`, the form computed: positive terms
    (no cancellation, however close :math:`\\beta` is to :math:`-\\alpha`) and no overflow (:math:`r^2` would
    overflow for :math:`r > 10^{154}` in float64, :math:`10^{19}` in float32, long before the logdet does).
    Likewise :math:`r = \\lVert d\\rVert` is computed as :math:`m\\lVert d/m\\rVert` with :math:`m = \\max_i |d_i|`
    where :math:`\\sum_i d_i^2` overflows, so the map is finite for every finite input whose image is.

    **Backward** for cotangents :math:`(\\bar x_n, \\bar\\ell_n)`:

    * :math:`x = z_0 + \\varphi d`: :math:`\\bar\\varphi_n = \\bar x_n^T d_n`, :math:`\\bar d = \\varphi\\bar x`
      (direct), :math:`\\bar z_0 \\mathrel{+}= \\sum_n\\bar x_n`;
    * :math:`\\varphi = (r + B)/q`: :math:`\\partial\\varphi/\\partial r = (\\alpha - B)/q^2 = -\\beta h^2`,
      :math:`\\partial\\varphi/\\partial B = h`, :math:`\\partial\\varphi/\\partial\\alpha = -\\varphi h`;
    * the logdet: :math:`\\partial\\ell/\\partial r = (D-1)/(r+B) + 2q/P - (D+1)/q`,
      :math:`\\partial\\ell/\\partial B = (D-1)/(r+B) + \\alpha/P`,
      :math:`\\partial\\ell/\\partial\\alpha = (2r + B)/P - (D+1)/q`, each with :math:`P = q\\Pi`
      (:math:`2q/P = 2/\\Pi`, :math:`\\alpha/P = (\\alpha/q)/\\Pi`, :math:`(2r+B)/P = ((2r+B)/q)/\\Pi`: no overflow);
    * so :math:`\\bar r_n = -\\beta h_n^2\\bar\\varphi_n + \\bar\\ell_n\\,\\partial\\ell/\\partial r`,
      :math:`\\bar B = \\sum_n [h_n\\bar\\varphi_n + \\bar\\ell_n\\,\\partial\\ell/\\partial B]`,
      :math:`\\bar\\alpha = \\sum_n [-\\varphi_n h_n\\bar\\varphi_n + \\bar\\ell_n\\,\\partial\\ell/\\partial\\alpha]`;
    * :math:`r = \\lVert d\\rVert`: :math:`\\bar d \\mathrel{+}= \\bar r\\,d/r` (taken as 0 at r = 0, where the
      map has a kink of measure zero); :math:`\\bar z = \\bar d`, :math:`\\bar z_0 \\mathrel{-}= \\sum_n\\bar d_n`;
    * through the softplus constraints:
      :math:`\\bar\\beta_{raw} = \\bar B\\,\\mathrm{sigmoid}(\\beta_{raw})`,
      :math:`\\bar\\alpha_{raw} = \\bar\\alpha\\,\\mathrm{sigmoid}(\\alpha_{raw})`, or
      :math:`\\bar\\alpha\\,\\mathrm{sign}(\\alpha_{raw})` for ``alpha="abs"`` (B and
      :math:`\\alpha` are the independent coordinates; :math:`\\beta = B - \\alpha`).

    **Inverse.**  :math:`x - z_0 = \\varphi(r) d` with :math:`\\varphi > 0`, so ``x - z0`` points along
    ``d`` and its length is :math:`\\rho = r(r + B)/(\\alpha + r)`, increasing in r from 0 to infinity.
    Solving for the radial distance means solving the quadratic
    :math:`r^2 + (B - \\rho) r - \\alpha\\rho = 0`, whose one non-negative root, with
    :math:`p = B - \\rho` and :math:`\\Delta = \\sqrt{p^2 + 4\\alpha\\rho}`, is taken in the form without
    cancellation: :math:`r = (|p| + \\Delta)/2` when :math:`p \\le 0`, :math:`r = 2\\alpha\\rho/(|p| + \\Delta)`
    when :math:`p > 0`.  Then :math:`z = z_0 + (x - z_0)(\\alpha + r)/(r + B)`.  This is exact to a few
    rounding errors: no iteration, nothing that can fail to converge.
    """

    def __init__(self, dim, alpha="softplus"):
        self.dim = int(dim)
        if self.dim < 1:
            raise ValueError(f"Radial: dim must be at least 1, got {dim}")
        if alpha not in ("softplus", "abs"):
            raise ValueError(f"Radial: unknown alpha map {alpha!r}; choose 'softplus' or 'abs'")
        self.alpha = alpha

    def param_shapes(self):
        return {"z0": (self.dim,), "alpha_raw": (1,), "beta_raw": (1,)}

    def init(self, rng, x=None, dtype=np.float64):
        """``z0 ~ N(0, I)``, :math:`\\alpha = 1` and :math:`\\beta = 0` (the identity map)."""
        dtype = x.dtype if x is not None else dtype
        raw = math.log(math.e - 1.0)                     # softplus(raw) = 1
        a_raw = 1.0 if self.alpha == "abs" else raw
        return {"z0": rng.standard_normal(self.dim).astype(dtype), "alpha_raw": np.full(1, a_raw, dtype),
                "beta_raw": np.full(1, raw, dtype)}

    def _check_param_values(self, params):
        if self.alpha == "abs" and not bool(np.all(np.abs(unbox(params["alpha_raw"])) > 0)):
            raise ValueError(f"{self.name}: with alpha='abs' the parameter alpha_raw must be nonzero "
                             f"(alpha = |alpha_raw| > 0), got {unbox(params['alpha_raw'])}")

    def alpha_beta(self, params, xp=np):
        """``(alpha, beta, B)`` with :math:`\\alpha > 0`, :math:`B = \\alpha + \\beta > 0`."""
        if self.alpha == "abs":
            self._check_param_values(params)
            alpha = xp.abs(params["alpha_raw"])
        else:
            alpha = xp.logaddexp(0.0, params["alpha_raw"])
        B = xp.logaddexp(0.0, params["beta_raw"])
        return alpha, B - alpha, B

    def _logdet(self, r, alpha, B, q, xp):
        """``(logdet, Pi)`` with :math:`\\Pi = P/q` in the positive, overflow-free form of the Notes."""
        Pi = r * ((r + 2.0 * alpha) / q) + alpha * (B / q)
        return float(self.dim - 1) * xp.log(r + B) + xp.log(Pi) - float(self.dim) * xp.log(q), Pi

    def _forward(self, params, x, xp):
        z0 = params["z0"]
        alpha, beta, B = self.alpha_beta(params, xp)
        d = x - z0
        r = row_norm(d, xp)
        q = alpha + r
        phi = (r + B) / q
        y = z0 + phi[:, None] * d
        logdet, Pi = self._logdet(r, alpha, B, q, xp)
        return y, logdet, (d, r, q, phi, Pi, alpha, beta, B)

    def _backward(self, params, dy, dlogdet, cache):
        d, r, q, phi, Pi, alpha, beta, B = cache
        n1, n2 = float(self.dim - 1), float(self.dim + 1)
        h = 1.0 / q
        dphi = np.einsum("nd,nd->n", dy, d)
        dl_r = n1 / (r + B) + 2.0 / Pi - n2 * h                  # 2q/P = 2/Pi
        dl_B = n1 / (r + B) + (alpha * h) / Pi                  # alpha/P
        dl_alpha = ((2.0 * r + B) * h) / Pi - n2 * h            # (2r + B)/P
        dr = -beta * h * h * dphi + dlogdet * dl_r
        dB = (h * dphi + dlogdet * dl_B).sum(keepdims=True)
        dalpha = (-phi * h * dphi + dlogdet * dl_alpha).sum(keepdims=True)
        safe_r = np.where(r > 0, r, 1.0).astype(r.dtype)
        dd = phi[:, None] * dy + (dr / safe_r)[:, None] * d
        dz0 = dy.sum(axis=0) - dd.sum(axis=0)
        dalpha_raw = np.sign(params["alpha_raw"]) if self.alpha == "abs" else _sigmoid(params["alpha_raw"])
        return dd, {"z0": dz0, "alpha_raw": dalpha * dalpha_raw,
                    "beta_raw": dB * _sigmoid(params["beta_raw"])}

    def _inverse(self, params, y, xp):
        z0 = params["z0"]
        alpha, beta, B = self.alpha_beta(params, xp)
        e = y - z0
        rho = row_norm(e, xp)
        p = B - rho
        ap = xp.abs(p)
        # |p| + sqrt(p^2 + 4 alpha rho) > 0 (p = 0 means rho = B > 0); with c = max(1, |p|) the square root is
        # c sqrt((p/c)^2 + 4 alpha (rho/c)/c), whose squares cannot overflow
        c = xp.maximum(ap, 1.0)
        big = ap + c * xp.sqrt((p / c) * (p / c) + 4.0 * alpha * ((rho / c) / c))
        r = xp.where(p > 0, 2.0 * alpha * rho / big, 0.5 * big)
        q = alpha + r
        x = z0 + e * (q / (r + B))[:, None]
        return x, -self._logdet(r, alpha, B, q, xp)[0]

    def __repr__(self):
        return f"Radial(dim={self.dim})" if self.alpha == "softplus" else f"Radial(dim={self.dim}, alpha='abs')"


class ConditionalPlanar(Bijector):
    """Amortised planar flow: :math:`x = z + \\hat u(h)\\tanh(w(h)^T z + b(h))` with parameters that are affine
    in a context :math:`h` ``(N, C)``, one planar map per sample (Rezende & Mohamed 2015, arXiv:1505.05770,
    sec. 4.1 and 6: the inference network outputs the flow's parameters).

    Parameters ``w``, ``u`` ``(D,)``, ``b`` ``(1,)`` (the context-free part, as :class:`Planar`'s) and ``Cw``,
    ``Cu`` ``(C, D)``, ``Cb`` ``(C, 1)``:

    .. math:: w_n = w + h_n C_w, \\qquad u_n = u + h_n C_u, \\qquad b_n = b + h_n C_b.

    The context is required (``context_dim`` = C).  In a VAE the encoder computes :math:`h` and the
    cotangent that ``backward`` returns for it trains the encoder (:class:`npflows.vae.VAE`): the linear
    heads :math:`C` make the flow parameters an output of the encoder, as in the paper.

    Parameters
    ----------
    dim : int
        Event size D.
    context_dim : int
        C.
    rtol, maxiter : float, int
        Of the inverse's root, as in :class:`Planar`.

    Notes
    -----
    **The map, per sample.**  Given :math:`(w_n, u_n, b_n)` the map is :class:`Planar`'s with those
    parameters, so its constraint, Jacobian and log-determinant are :class:`Planar`'s, sample by sample:
    :math:`c_n = w_n^T u_n`, :math:`\\sigma_{+,n} = \\mathrm{softplus}(c_n)`, :math:`m_n = \\sigma_{+,n} - 1 > -1`,
    :math:`\\hat u_n = u_n + k_n w_n` with :math:`k_n = (m_n - c_n)/\\lVert w_n\\rVert^2`, so
    :math:`w_n^T\\hat u_n = m_n`; :math:`a_n = w_n^T z_n + b_n`, :math:`t = \\tanh a`, :math:`s = 1 - t^2`,
    and by the matrix determinant lemma on :math:`I + s_n\\hat u_n w_n^T`

    .. math:: \\log|\\det\\partial x_n/\\partial z_n| = \\log g_n, \\qquad g_n = 1 + s_n m_n = t_n^2 +
              s_n\\sigma_{+,n} > 0.

    The context does not move :math:`z_n` and the map of sample n reads only row n of the context, so the
    Jacobian in :math:`z` is block diagonal over the batch as for any bijector.  A context with
    :math:`w_n = 0` has no planar map (the direction is undefined); the forward then overflows and raises
    ``FloatingPointError`` naming the sample (a set of measure zero that training does not approach: the
    map is invariant to the scale of :math:`w_n` only through :math:`\\hat u_n`).

    **Backward** for cotangents :math:`(\\bar x_n, \\bar\\ell_n)`: :class:`Planar`'s lines with per-sample
    parameters (each sum over the batch there is now a per-sample value), then the affine heads:

    * :math:`\\bar a_n = s_n\\,\\bar x_n^T\\hat u_n - 2t_n s_n m_n\\bar\\ell_n/g_n`,
      :math:`\\bar m_n = s_n\\bar\\ell_n/g_n`;
    * :math:`\\bar{\\hat u}_n = t_n\\bar x_n`; :math:`\\bar z_n = \\bar x_n + \\bar a_n w_n`,
      :math:`\\bar b_n = \\bar a_n`, :math:`\\bar w_n = \\bar a_n z_n`;
    * through :math:`\\hat u_n = u_n + k_n w_n`: :math:`\\bar u_n = \\bar{\\hat u}_n`,
      :math:`\\bar w_n \\mathrel{+}= k_n\\bar{\\hat u}_n`, :math:`\\bar k_n = w_n^T\\bar{\\hat u}_n`;
    * through :math:`k_n = (m_n - c_n)/\\lVert w_n\\rVert^2`: :math:`\\bar m_n \\mathrel{+}= \\bar k_n/\\lVert
      w_n\\rVert^2`, :math:`\\bar c_n = -\\bar k_n/\\lVert w_n\\rVert^2`,
      :math:`\\bar w_n \\mathrel{+}= -2\\bar k_n k_n w_n/\\lVert w_n\\rVert^2`;
    * through :math:`m_n = \\mathrm{softplus}(c_n) - 1`: :math:`\\bar c_n \\mathrel{+}= \\bar m_n\\,
      \\mathrm{sigmoid}(c_n)`; through :math:`c_n = w_n^T u_n`: :math:`\\bar w_n \\mathrel{+}= \\bar c_n u_n`,
      :math:`\\bar u_n \\mathrel{+}= \\bar c_n w_n`;
    * the heads, :math:`w_n = w + h_n C_w` and likewise: :math:`\\bar w = \\sum_n\\bar w_n`,
      :math:`\\bar C_w = h^T\\bar W` (rows :math:`\\bar w_n`), the same for ``u`` and ``b``, and the context's
      cotangent :math:`\\bar h = \\bar W C_w^T + \\bar U C_u^T + \\bar B C_b^T`.

    **Inverse**: per sample, the scalar root of :math:`a + m_n\\tanh a = w_n^T x_n + b_n` in
    :math:`[y_n - |m_n|, y_n + |m_n|]` by :func:`solve_increasing`, then one traced Newton step, exactly as
    :class:`Planar` (whose Notes give the argument) with :math:`m` an array over the batch.
    """

    takes_context = True

    def __init__(self, dim, context_dim, rtol=1e-12, maxiter=100):
        self.dim, self.context_dim = int(dim), int(context_dim)
        if self.dim < 1 or self.context_dim < 1:
            raise ValueError(f"ConditionalPlanar: dim and context_dim must be at least 1, got {dim}, {context_dim}")
        self.rtol, self.maxiter = float(rtol), int(maxiter)

    def param_shapes(self):
        D, C = self.dim, self.context_dim
        return {"w": (D,), "u": (D,), "b": (1,), "Cw": (C, D), "Cu": (C, D), "Cb": (C, 1)}

    def init(self, rng, x=None, dtype=np.float64):
        """:class:`Planar`'s near-identity ``w, u, b`` and small heads (``N(0, 0.01^2/C)``): the layer starts
        close to the identity for every context, and the heads' gradients are not all equal."""
        dtype = x.dtype if x is not None else dtype
        D, C = self.dim, self.context_dim
        w = rng.standard_normal(D) / math.sqrt(D)
        u = _M_ZERO * w / (w @ w) + 0.01 * rng.standard_normal(D)
        heads = {k: 0.01 / math.sqrt(C) * rng.standard_normal((C, n)) for k, n in (("Cw", D), ("Cu", D), ("Cb", 1))}
        return {"w": w.astype(dtype), "u": u.astype(dtype), "b": np.zeros(1, dtype),
                **{k: v.astype(dtype) for k, v in heads.items()}}

    def per_sample(self, params, h, xp=np):
        """``(W, U, B, U_hat, m, c, softplus(c), |w|^2, k)`` per sample: ``(N, D)`` for the vectors and
        ``(N,)`` for the scalars."""
        W = params["w"] + h @ params["Cw"]
        U = params["u"] + h @ params["Cu"]
        B = params["b"][0] + (h @ params["Cb"])[:, 0]
        c = xp.sum(W * U, axis=1)
        sp = xp.logaddexp(0.0, c)
        m = sp - 1.0
        ww = xp.sum(W * W, axis=1)
        k = (m - c) / ww
        return W, U, B, U + k[:, None] * W, m, c, sp, ww, k

    def _forward(self, params, x, xp, context):
        W, U, B, U_hat, m, c, sp, ww, k = self.per_sample(params, context, xp)
        a = xp.sum(W * x, axis=1) + B
        t = xp.tanh(a)
        s = (1.0 - t) * (1.0 + t)
        g = t * t + s * sp
        y = x + t[:, None] * U_hat
        return y, xp.log(g), (x, context, W, U, U_hat, t, s, g, m, c, ww, k)

    def _backward(self, params, dy, dlogdet, cache):
        z, h, W, U, U_hat, t, s, g, m, c, ww, k = cache
        ell = dlogdet / g
        da = s * np.sum(dy * U_hat, axis=1) - 2.0 * m * (t * s) * ell
        dU_hat = t[:, None] * dy
        dz = dy + da[:, None] * W
        dW = da[:, None] * z + k[:, None] * dU_hat
        dk = np.sum(W * dU_hat, axis=1)
        dm = s * ell + dk / ww
        dc = -dk / ww + dm * _sigmoid(c)
        dW = dW + (-2.0 * dk * k / ww)[:, None] * W + dc[:, None] * U
        dU = dU_hat + dc[:, None] * W
        dB = da[:, None]
        grads = {"w": dW.sum(0), "u": dU.sum(0), "b": dB.sum(0),
                 "Cw": h.T @ dW, "Cu": h.T @ dU, "Cb": h.T @ dB}
        dh = dW @ params["Cw"].T + dU @ params["Cu"].T + dB @ params["Cb"].T
        return dz, grads, dh

    def _inverse(self, params, y, xp, context):
        W, U, B, U_hat, m, c, sp, ww, k = self.per_sample(params, context, xp)
        proj = xp.sum(W * y, axis=1) + B
        m64, sp64 = np.asarray(unbox(m), np.float64), np.asarray(unbox(sp), np.float64)
        p64 = np.asarray(unbox(proj), dtype=np.float64)
        eps = float(np.finfo(np.float64).eps)

        def fun(a):
            th = np.tanh(a)
            F = a + m64 * th - p64
            dF = th * th + (1.0 - th) * (1.0 + th) * sp64
            return F, dF, 4.0 * eps * (np.abs(a) + np.abs(m64) + np.abs(p64))

        a0 = solve_increasing(fun, p64, p64 - np.abs(m64), p64 + np.abs(m64), self.rtol, self.maxiter, self.name)
        a0 = a0.astype(unbox(y).dtype)
        t0 = xp.tanh(a0)                       # one traced Newton step: same value, implicit derivative
        s0 = (1.0 - t0) * (1.0 + t0)
        a = a0 - (a0 + m * t0 - proj) / (t0 * t0 + s0 * sp)
        t = xp.tanh(a)
        s = (1.0 - t) * (1.0 + t)
        return y - t[:, None] * U_hat, -xp.log(t * t + s * sp)

    def _explain(self, direction, params, x, context=None):
        if direction == "backward" or context is None:
            return None
        W = params["w"] + context @ params["Cw"]
        ww = np.sum(W * W, axis=1)
        i = int(np.argmin(ww))
        if ww[i] < np.finfo(ww.dtype).tiny ** 0.5:
            return (f"the context of sample {i} makes w(h) = w + h Cw vanish (|w(h)|^2 = {ww[i]:.3g}), where the "
                    f"planar map has no direction and u_hat = u + (m - c) w/|w|^2 overflows")
        return None

    def __repr__(self):
        return f"ConditionalPlanar(dim={self.dim}, context_dim={self.context_dim})"
