"""Harness entries for :class:`~npflows.core.reversible.RecomputeSequential`: the same map as ``Sequential``,
whose backward recovers each layer's input by the layer's inverse instead of caching it.  The shared harness
checks its recomputing backward against autograd on the traced forward and against central differences, like
any layer; ``tests/test_reversible.py`` compares it with ``Sequential``'s cached backward.

* ``recompute_couplings``: ActNorm and three affine couplings (exp, tanh and softplus scales, both half masks
  and an alternating one), D = 3, hidden width 5;
* ``recompute_mixed``: an LU linear layer, an additive coupling, a sigmoid-scale affine coupling and a leaky
  ReLU, D = 4: layers whose inverses are a triangular solve, a subtraction, a division and a branch.

Parameters are perturbed (scale 0.3) away from the identity initialisation, so every layer changes its input
and every gradient is non-trivial; the round trip through four layers is then not exact, which is the case
the recomputation must survive.
"""
import numpy as np

import npflows as nf
from registry import Case, perturbed


def _couplings(rng):
    layers = [nf.ActNorm(3),
              nf.AffineCoupling(nf.half_mask(3), hidden=(5,), activation="tanh"),
              nf.AffineCoupling(nf.half_mask(3, first=False), hidden=(5,), scale="tanh", scale_bound=1.5),
              nf.AffineCoupling(nf.alternating_mask(3), hidden=(5,), activation="elu", scale="softplus")]
    b = nf.RecomputeSequential(layers)
    return Case(b, perturbed(b, rng, 0.3), rng.standard_normal((4, 3)))


def _mixed(rng):
    layers = [nf.LULinear(4, perm=rng.permutation(4)),
              nf.AdditiveCoupling(nf.alternating_mask(4), hidden=(5,), activation="tanh"),
              nf.AffineCoupling(nf.half_mask(4), hidden=(6,), scale="sigmoid"),
              nf.LeakyReLU(4, slope=0.3)]
    b = nf.RecomputeSequential(layers)
    return Case(b, perturbed(b, rng, 0.3), rng.standard_normal((4, 4)))


ENTRIES = {
    "recompute_couplings": _couplings,
    "recompute_mixed": _mixed,
}
