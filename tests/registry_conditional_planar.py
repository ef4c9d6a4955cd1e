"""Harness entries for the amortised planar flow (``ConditionalPlanar``, npflows/bijectors/planar_radial.py):
per-sample planar parameters affine in a context ``(N, C)``, the planar posterior of npflows.vae's VAE.

Each case carries its context, so the shared harness checks the context's cotangent like every other gradient.
Parameters are drawn away from the near-identity initialisation (the heads ``Cw, Cu, Cb`` are 0.01-scale at
init, 0.5 here), so every gradient is non-trivial; ``conditional_planar_folding`` puts raw ``w_n^T u_n`` near -3
for every sample (where only the built-in constraint keeps each map invertible) and the points near each
sample's hyperplane ``a_n = 0``; ``conditional_planar_chain`` is three layers in a Sequential sharing one context
(their context cotangents add up).
"""
import numpy as np

import npflows as nf
from registry import Case, perturbed


def _single(D, C, n=5, scale=0.5):
    def make(rng):
        b = nf.ConditionalPlanar(D, C)
        return Case(b, perturbed(b, rng, scale), rng.standard_normal((n, D)), context=rng.standard_normal((n, C)))
    return make


def _folding(rng):
    """w_n^T u_n = -3 + O(0.05) for every sample: u's heads are zero and u is set against w's mean direction,
    w's heads small; points near each a_n = 0."""
    D, C, n = 3, 2, 5
    b = nf.ConditionalPlanar(D, C)
    w = rng.standard_normal(D)
    ww = np.sum(w * w)
    u = rng.standard_normal(D)
    u = u - np.sum(w * u) / ww * w - 3.0 * w / ww
    p = {"w": w, "u": u, "b": np.array([0.3]), "Cw": 0.02 * rng.standard_normal((C, D)),
         "Cu": np.zeros((C, D)), "Cb": 0.2 * rng.standard_normal((C, 1))}
    h = rng.standard_normal((n, C))
    z = 0.3 * rng.standard_normal((n, D))
    Wn = w + np.sum(h[:, :, None] * p["Cw"][None], axis=1)          # elementwise: no BLAS in the inputs
    Bn = 0.3 + np.sum(h * p["Cb"][:, 0], axis=1)
    z = z - ((np.sum(z * Wn, axis=1) + Bn) / np.sum(Wn * Wn, axis=1))[:, None] * Wn
    return Case(b, p, z + 0.05 * rng.standard_normal((n, D)), context=h)


def _chain(rng):
    D, C, n = 2, 3, 4
    b = nf.Sequential([nf.ConditionalPlanar(D, C) for _ in range(3)])
    return Case(b, perturbed(b, rng, 0.5), rng.standard_normal((n, D)), context=rng.standard_normal((n, C)))


ENTRIES = {
    "conditional_planar_3_ctx2": _single(3, 2),
    "conditional_planar_2_ctx4": _single(2, 4, n=4),
    "conditional_planar_folding": _folding,
    "conditional_planar_chain": _chain,
}
