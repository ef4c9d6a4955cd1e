"""Harness entries for the masked affine autoregressive bijector (MAF/IAF) and its builder ``maf``.

Small MADEs (hidden widths 5-7) keep the brute-force Jacobians and central differences fast.  Parameters
are perturbed (scale 0.4) away from the zero-initialised output layer, so every scale, shift and gate
is a non-trivial function of the inputs.  Every order (natural, reversed, random, explicit), every scale
map (exp, tanh, sigmoid and nflows' softplus), both updates, both hidden-degree rules, D = 1 and D = 2, a
too-narrow network (width < D - 1) and the ``maf`` builder (alternating orders, random orders, permutation
layers, and nflows' MAF layout: softplus scales with reversing permutations) are registered.
"""
import numpy as np

import npflows as nf
from npflows.bijectors.coupling import ZUKO_SOFTCLIP_BOUND
from registry import Case, perturbed

MAA = nf.MaskedAffineAutoregressive


def _nan_like(x):
    a = x.copy()
    a[1, 0] = np.nan
    return a


def _case(build, n=5, scale=0.4):
    """``build(rng) -> bijector``; the case uses the same rng for structure, parameters and inputs."""
    def make(rng):
        b = build(rng)
        x = rng.standard_normal((n, b.dim))
        bad = [("inverse", _nan_like(x)), ("inverse", np.full((2, b.dim), np.inf))]
        return Case(b, perturbed(b, rng, scale), x, bad)
    return make


ENTRIES = {
    "maa_natural_exp_relu": _case(lambda rng: MAA(4, hidden=(7, 5))),
    "maa_reversed_tanh_scale": _case(lambda rng: MAA(4, hidden=(6, 6), activation="tanh", order="reversed",
                                                     scale="tanh", scale_bound=1.5)),
    "maa_random_order_sigmoid_scale_elu": _case(lambda rng: MAA(5, hidden=(7,), activation="elu", order="random",
                                                                rng=rng, scale="sigmoid")),
    "maa_explicit_order_leaky": _case(lambda rng: MAA(4, hidden=(6, 5), activation="leaky_relu",
                                                      order=np.array([2, 0, 3, 1]))),
    "maa_random_hidden_degrees": _case(lambda rng: MAA(5, hidden=(7, 7), activation="tanh",
                                                       hidden_degrees="random", rng=rng)),
    "maa_narrow_hidden": _case(lambda rng: MAA(5, hidden=(2,), activation="tanh")),
    "maa_dim1": _case(lambda rng: MAA(1, hidden=(4,))),
    "maa_dim2": _case(lambda rng: MAA(2, hidden=(6, 6), order="reversed")),
    "maa_softplus_scale": _case(lambda rng: MAA(4, hidden=(7, 5), scale="softplus")),
    "maa_softclip_scale": _case(lambda rng: MAA(4, hidden=(7, 5), order="reversed", scale="softclip",
                                                scale_bound=ZUKO_SOFTCLIP_BOUND)),
    "maa_logsigmoid_scale": _case(lambda rng: MAA(3, hidden=(6,), activation="tanh", scale="logsigmoid")),
    "maa_gated": _case(lambda rng: MAA(4, hidden=(7, 5), activation="tanh", update="gated", gate_bias=1.0)),
    "maa_gated_random_order": _case(lambda rng: MAA(3, hidden=(6,), order="random", rng=rng, update="gated")),
    "maf_alternate": _case(lambda rng: nf.maf(4, n_layers=3, hidden=(6,), activation="tanh"), scale=0.3),
    "maf_random_permutations": _case(lambda rng: nf.maf(5, n_layers=2, hidden=(6, 5), order="random", rng=rng,
                                                        permutations=True), scale=0.3),
    "maf_softplus_reverse_permutations": _case(lambda rng: nf.maf(3, n_layers=2, hidden=(6,), scale="softplus",
                                                                  permutations=True), scale=0.3),
    # zuko's MAF as it ships: soft-clipped log-scales (slope 1e-3), orders ascending then descending, ReLU
    "maf_zuko_softclip": _case(lambda rng: nf.maf(3, n_layers=2, hidden=(6, 6), scale="softclip",
                                                  scale_bound=ZUKO_SOFTCLIP_BOUND), scale=0.3),
    "maf_gated_reverse_permutations": _case(lambda rng: nf.maf(3, n_layers=2, hidden=(6,), update="gated",
                                                               permutations=True), scale=0.3),
}
