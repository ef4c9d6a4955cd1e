"""Unnormalised 2-D target densities for training by sampling (reverse KL), with hand-derived gradients.

The four potentials of Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows",
arXiv:1505.05770, Table 1, with :math:`\\tilde p(z) \\propto e^{-U(z)}`:

.. math::

    w_1(z) &= \\sin(2\\pi z_1/4), \\quad w_2(z) = 3 e^{-\\frac12((z_1 - 1)/0.6)^2}, \\quad
    w_3(z) = 3\\,\\sigma((z_1 - 1)/0.3), \\\\
    U_1(z) &= \\tfrac12\\Big(\\frac{\\lVert z\\rVert - 2}{0.4}\\Big)^2
             - \\log\\Big(e^{-\\frac12(\\frac{z_1 - 2}{0.6})^2} + e^{-\\frac12(\\frac{z_1 + 2}{0.6})^2}\\Big), \\\\
    U_2(z) &= \\tfrac12\\Big(\\frac{z_2 - w_1}{0.4}\\Big)^2, \\\\
    U_3(z) &= -\\log\\Big(e^{-\\frac12(\\frac{z_2 - w_1}{0.35})^2}
              + e^{-\\frac12(\\frac{z_2 - w_1 + w_2}{0.35})^2}\\Big), \\\\
    U_4(z) &= -\\log\\Big(e^{-\\frac12(\\frac{z_2 - w_1}{0.4})^2}
              + e^{-\\frac12(\\frac{z_2 - w_1 + w_3}{0.35})^2}\\Big).

**The envelope.**  :math:`U_2, U_3, U_4` do not grow along :math:`z_1` (they are periodic or constant
in :math:`z_1` far out), so :math:`e^{-U}` is not integrable on the plane and KL(q || p) would not be
defined.  For those three the targets here are :math:`\\log\\tilde p = -U(z) - (z_1/4)^8`.  The factor
:math:`e^{-(z_1/4)^8}` is above 0.996 for :math:`|z_1| \\le 2`, 0.90 at :math:`|z_1| = 3` and
:math:`e^{-1} = 0.37` at :math:`|z_1| = 4`, then vanishes fast (:math:`e^{-26}` at :math:`|z_1| = 6`):
it leaves the middle of the usual :math:`[-4, 4]^2` window untouched and tapers its ends.
:math:`U_1` grows in every direction and has no envelope.

**Gradients** (of :math:`\\log\\tilde p = -U`, derived by hand; a two-component term
:math:`-\\log(e^{e_1} + e^{e_2})` has gradient :math:`-(\\pi_1\\nabla e_1 + \\pi_2\\nabla e_2)` with
:math:`\\pi = \\mathrm{softmax}(e_1, e_2)`):

* :math:`w_1' = \\frac{2\\pi}{4}\\cos(2\\pi z_1/4)`, :math:`w_2' = -w_2 (z_1 - 1)/0.36`,
  :math:`w_3' = 3\\sigma(1-\\sigma)/0.3`; envelope :math:`\\partial_{z_1}(z_1/4)^8 = 2(z_1/4)^7`;
* :math:`U_1`: :math:`\\nabla\\frac12((r-2)/0.4)^2 = \\frac{r-2}{0.16}\\,z/r` (0 at the origin, the
  tip of a cone of density :math:`e^{-12.5}`); the mixture term with :math:`e_\\pm = -\\frac12((z_1\\mp 2)/0.6)^2`
  adds :math:`\\partial_{z_1} = \\sum_\\pm \\pi_\\pm (z_1 \\mp 2)/0.36`;
* :math:`U_2`: with :math:`v = z_2 - w_1`, :math:`\\partial_{z_2} = v/0.16`,
  :math:`\\partial_{z_1} = -v w_1'/0.16`;
* :math:`U_3, U_4`: with :math:`v_1 = z_2 - w_1` (scale :math:`s_1`), :math:`v_2 = z_2 - w_1 + w_k` (scale
  :math:`s_2 = 0.35`), :math:`e_i = -\\frac12 (v_i/s_i)^2`,
  :math:`\\partial_{z_2} U = \\pi_1 v_1/s_1^2 + \\pi_2 v_2/s_2^2`,
  :math:`\\partial_{z_1} U = -\\pi_1 v_1 w_1'/s_1^2 + \\pi_2 v_2 (w_k' - w_1')/s_2^2`.

Every target is a callable ``target(x) -> (log_p, grad_log_p)``, shapes ``(N,)`` and ``(N, 2)``, as
:meth:`npflows.PushForward.reverse_kl_and_grad` takes it.
"""
import math

import numpy as np

from ._checks import check_array

_TAU4 = 2.0 * math.pi / 4.0


def _softmax2(e1, e2):
    """``(log(exp e1 + exp e2), pi1, pi2)`` without overflow."""
    mx = np.maximum(e1, e2)
    a, b = np.exp(e1 - mx), np.exp(e2 - mx)
    tot = a + b
    return mx + np.log(tot), a / tot, b / tot


def _two_bumps(z, w_k, dw_k, s1):
    """``U`` and its gradient for :math:`-\\log(e^{-\\frac12(v_1/s_1)^2} + e^{-\\frac12(v_2/0.35)^2})`."""
    z1, z2 = z[:, 0], z[:, 1]
    w1, dw1 = np.sin(_TAU4 * z1), _TAU4 * np.cos(_TAU4 * z1)
    v1, v2, s2 = z2 - w1, z2 - w1 + w_k, 0.35
    lse, p1, p2 = _softmax2(-0.5 * (v1 / s1) ** 2, -0.5 * (v2 / s2) ** 2)
    g1 = -p1 * v1 * dw1 / s1 ** 2 + p2 * v2 * (dw_k - dw1) / s2 ** 2
    g2 = p1 * v1 / s1 ** 2 + p2 * v2 / s2 ** 2
    return -lse, g1, g2


def _u1(z):
    z1 = z[:, 0]
    r = np.sqrt(np.sum(z * z, axis=1))
    lse, pp, pm = _softmax2(-0.5 * ((z1 - 2.0) / 0.6) ** 2, -0.5 * ((z1 + 2.0) / 0.6) ** 2)
    U = 0.5 * ((r - 2.0) / 0.4) ** 2 - lse
    with np.errstate(divide="ignore", invalid="ignore"):
        radial = np.where(r > 0, (r - 2.0) / (0.16 * r), 0.0)
    g = radial[:, None] * z
    g1 = g[:, 0] + (pp * (z1 - 2.0) + pm * (z1 + 2.0)) / 0.36
    return U, g1, g[:, 1]


def _u2(z):
    z1, z2 = z[:, 0], z[:, 1]
    v = z2 - np.sin(_TAU4 * z1)
    return 0.5 * (v / 0.4) ** 2, -v * _TAU4 * np.cos(_TAU4 * z1) / 0.16, v / 0.16


def _u3(z):
    z1 = z[:, 0]
    w2 = 3.0 * np.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)
    return _two_bumps(z, w2, -w2 * (z1 - 1.0) / 0.36, 0.35)


def _u4(z):
    sg = 0.5 * (1.0 + np.tanh(0.5 * (z[:, 0] - 1.0) / 0.3))
    return _two_bumps(z, 3.0 * sg, 3.0 * sg * (1.0 - sg) / 0.3, 0.4)


class Potential:
    """The unnormalised target :math:`\\log\\tilde p(z) = -U_k(z)\\;[-\\,(z_1/4)^8]` as a callable.

    Parameters
    ----------
    name : {"U1", "U2", "U3", "U4"}
        Which potential of Rezende & Mohamed (2015), Table 1.
    envelope : bool, optional
        Subtract :math:`(z_1/4)^8` (see the module notes).  Default: True for U2, U3, U4 (without it
        they are not normalisable), False for U1.

    Calling it on ``x`` ``(N, 2)`` returns ``(log_p, grad_log_p)``.
    """

    _FUNCS = {"U1": _u1, "U2": _u2, "U3": _u3, "U4": _u4}

    def __init__(self, name, envelope=None):
        if name not in self._FUNCS:
            raise ValueError(f"Potential: unknown potential {name!r}; choose one of {sorted(self._FUNCS)}")
        self.name = name
        self.envelope = (name != "U1") if envelope is None else bool(envelope)
        self.dim = 2

    def __call__(self, x):
        check_array(f"Potential({self.name})", x, ndim=2, size=2, what="point")
        U, g1, g2 = self._FUNCS[self.name](x)
        if self.envelope:
            e = x[:, 0] * 0.25
            e4 = (e * e) * (e * e)
            U = U + e4 * e4
            g1 = g1 + 2.0 * e4 * (e * e) * e
        return -U, -np.stack([g1, g2], axis=1)

    def log_prob(self, x):
        """:math:`\\log\\tilde p(x)` only (unnormalised)."""
        return self(x)[0]

    def __repr__(self):
        return f"Potential({self.name!r}, envelope={self.envelope})"


POTENTIALS = ("U1", "U2", "U3", "U4")


def log_normalizer(log_p, half_width=8.0, n=801, chunk=1 << 16):
    """:math:`\\log Z = \\log\\int\\tilde p(x)\\,dx` of a 2-D unnormalised density by quadrature.

    The integrand is summed on the regular ``n x n`` grid over :math:`[-L, L]^2`, ``L = half_width``
    (the trapezoid rule, whose end weights do not matter because the integrand vanishes at the border),
    in log space: :math:`\\log Z \\approx \\mathrm{logsumexp}_{ij} \\log\\tilde p(x_{ij}) + 2\\log h`.

    Parameters
    ----------
    log_p : callable
        ``log_p(x) -> values`` of shape ``(M,)``, or a target returning ``(values, gradient)``.
    half_width : float
        ``L``; the default 8 suits the potentials above (their densities are below :math:`e^{-25}`
        of their peaks at the border; tests/test_targets.py checks that widening the box to
        [-10, 10]^2, or doubling the grid spacing, changes log Z by less than 1e-10, and that the result
        matches the closed form of U2..U4 and an adaptive polar quadrature of U1).
    n : int
        Grid points per axis (spacing ``2L/(n-1)`` = 0.02 by default, against features of width 0.35:
        for smooth integrands the trapezoid rule then converges geometrically).

    Returns
    -------
    float
    """
    if not half_width > 0 or int(n) < 3:
        raise ValueError(f"log_normalizer: need half_width > 0 and n >= 3, got {half_width}, {n}")
    xs = np.linspace(-half_width, half_width, int(n))
    h = float(xs[1] - xs[0])
    xx, yy = np.meshgrid(xs, xs)
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    vals = []
    for s in range(0, pts.shape[0], chunk):
        v = log_p(pts[s:s + chunk])
        vals.append(v[0] if isinstance(v, tuple) else v)
    v = np.concatenate(vals)
    if np.isnan(v).any() or np.isposinf(v).any():
        raise ValueError("log_normalizer: log_p returned NaN or +inf on the grid")
    mx = float(v.max())
    return mx + math.log(float(np.exp(v - mx).sum())) + 2.0 * math.log(h)
