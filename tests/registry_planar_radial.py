"""Harness entries for the planar and radial flows (npflows/bijectors/planar_radial.py).

Parameters are drawn away from the near-identity initialisation; two entries sit where only the
constraints keep the maps invertible: a raw ``u`` with ``w^T u = -3`` (without the constraint the planar
Jacobian determinant ``1 + (1 - t^2) w^T u`` would be negative near ``a = 0``) and a radial ``beta`` within
0.0025 of ``-alpha``.
"""
import numpy as np

import npflows as nf
from registry import Case, perturbed


def _planar(dim, n=6, scale=0.7, xscale=1.0, **kw):
    def make(rng):
        b = nf.Planar(dim, **kw)
        p = perturbed(b, rng, scale)
        return Case(b, p, xscale * rng.standard_normal((n, dim)))
    return make


def _planar_violating(rng):
    """Raw w^T u = -3 and x near the hyperplane a = 0, where the unconstrained map would fold."""
    b = nf.Planar(3)
    w = rng.standard_normal(3)
    u = rng.standard_normal(3)
    # elementwise products and sums, not BLAS dot products: the golden cases' inputs must be the same bits
    # under every BLAS kernel
    ww = np.sum(w * w)
    u = u - np.sum(w * u) / ww * w - 3.0 * w / ww               # w^T u = -3 up to rounding
    p = {"w": w, "u": u, "b": np.array([0.3])}
    z = 0.3 * rng.standard_normal((6, 3))
    z = z - ((np.sum(z * w, axis=1) + 0.3) / ww)[:, None] * w + 0.2 * rng.standard_normal((6, 1)) * w / ww
    return Case(b, p, z)


def _planar_saturated(rng):
    """Large |w^T z + b| where tanh saturates: s = 1 - t^2 is tiny, g close to 1."""
    b = nf.Planar(2)
    p = {"w": np.array([2.0, -1.5]), "u": np.array([0.4, 0.9]), "b": np.array([0.5])}
    return Case(b, p, 3.0 * rng.standard_normal((6, 2)))


def _radial(dim, n=6, scale=0.7, **kw):
    def make(rng):
        b = nf.Radial(dim, **kw)
        p = perturbed(b, rng, scale)
        return Case(b, p, rng.standard_normal((n, dim)))
    return make


def _radial_contracting(rng):
    """beta_raw = -6: B = alpha + beta = softplus(-6) = 0.0025, the strongest contraction allowed."""
    b = nf.Radial(4)
    p = {"z0": 0.3 * rng.standard_normal(4), "alpha_raw": np.array([0.2]), "beta_raw": np.array([-6.0])}
    return Case(b, p, rng.standard_normal((6, 4)))


def _radial_expanding(rng):
    """Large beta: strong expansion away from z0 (alpha small)."""
    b = nf.Radial(2)
    p = {"z0": np.array([0.5, -0.2]), "alpha_raw": np.array([-1.5]), "beta_raw": np.array([2.5])}
    return Case(b, p, rng.standard_normal((6, 2)))


def _radial_abs_negative(rng):
    """normflows' parameterisation alpha = |alpha_raw| with a negative alpha_raw (normflows' init draws
    alpha from [-1/D, 1/D])."""
    b = nf.Radial(3, alpha="abs")
    p = {"z0": 0.5 * rng.standard_normal(3), "alpha_raw": np.array([-0.3]), "beta_raw": np.array([0.4])}
    return Case(b, p, rng.standard_normal((6, 3)))


def _stack(rng):
    b = nf.Sequential([nf.Planar(2), nf.Radial(2), nf.Planar(2), nf.ElementwiseAffine(2), nf.Radial(2)])
    return Case(b, perturbed(b, rng, 0.5), rng.standard_normal((5, 2)))


ENTRIES = {
    "planar_1d": _planar(1),
    "planar_2d": _planar(2),
    "planar_5d": _planar(5, scale=0.5),
    "planar_violating_raw_u": _planar_violating,
    "planar_saturated": _planar_saturated,
    # the leaky ReLU activation: normflows' Planar(act="leaky_relu") (slope 0.2) and flowjax's negative_slope
    "planar_leaky_3d": _planar(3, activation="leaky_relu"),
    "planar_leaky_slope05_2d": _planar(2, n=8, activation="leaky_relu", slope=0.5),
    "radial_1d": _radial(1),
    "radial_2d": _radial(2),
    "radial_3d": _radial(3),
    "radial_beta_near_minus_alpha": _radial_contracting,
    "radial_expanding": _radial_expanding,
    "planar_radial_stack": _stack,
    "radial_abs_alpha_2d": _radial(2, alpha="abs"),
    "radial_abs_negative_alpha_3d": _radial_abs_negative,
}
