"""The registry of every bijector configuration that the shared harness checks.

Each entry is a factory ``make(rng) -> Case`` in float64.  A new bijector is tested by adding one line,
here or in a family's own ``tests/registry_<family>.py`` whose ``ENTRIES`` dict is merged in below.
Parameters are perturbed away from their initial values (zero last layers, unit scales) so that every
gradient the harness compares is non-trivial.
"""
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import npflows as nf
from npflows.bijectors.coupling import ZUKO_SOFTCLIP_BOUND


@dataclass
class Case:
    bijector: object
    params: dict
    x: np.ndarray
    # extra inputs that must raise ValueError: list of (direction, array)
    bad_inputs: list = field(default_factory=list)
    # False for a forward that autograd cannot trace (a solve_ivp call: the CNF).  The harness then takes
    # the brute-force Jacobian by central differences of the numerical map, and checks backward against
    # autograd applied to ``reference``: ``reference(params, x, xp) -> (y, logdet)``, a traceable stand-in
    # for forward (a fixed-step discretisation of the same ODE) that must agree with it to ``tol["traced"]``.
    traceable: bool = True
    reference: object = None
    # per-check overrides of the harness tolerances (keys: the ``tol`` names in harness.py, plus "step", the
    # central-difference step); an entry that loosens one states why next to its factory
    tol: dict = field(default_factory=dict)
    # the context ``(N, C)`` of a conditional bijector (one row per row of x), passed to every call; the
    # harness then checks its cotangent like any other gradient, and that a missing or malformed one is refused
    context: np.ndarray = None
    # a stochastic logdet (an estimator at fixed probes, not log|det J|) states its own reference for the
    # brute-force check: ``logdet_reference(params, x, J) -> (N,)`` from the per-sample Jacobians J (N, D, D)
    logdet_reference: object = None


QUANTUM_BITS = 30


def machine_free(p, bits=QUANTUM_BITS):
    """Every value rounded to a multiple of 2^-bits: an initialisation that went through LAPACK/BLAS (the 1x1
    convolutions' random rotation by QR, its pivoted LU, a data-dependent init behind a GEMM) differs in its last
    bits between BLAS kernels, and a golden case's inputs must not (``tests/test_blas_kernels.py``).  A value
    moves only if it lies within a rounding error of a grid midpoint: about 1e-7 per value at 2^-30."""
    return {k: np.ldexp(np.round(np.ldexp(v, bits)), -bits) for k, v in p.items()}


def perturbed(b, rng, scale=0.5, x=None, quantize=False):
    """``b.init`` plus Gaussian noise of ``scale`` on every parameter (masks of LULinear keep working:
    entries outside its triangles are ignored by the map).  ``quantize``: the init first made
    :func:`machine_free` (for inits that go through LAPACK or BLAS)."""
    p = b.init(rng, x) if x is not None else b.init(rng)
    if quantize:
        p = machine_free(p)
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in p.items()}


def _normal(rng, n, d):
    return rng.standard_normal((n, d))


def _case(b, rng, n=5, scale=0.5, x=None, bad=(), quantize=False):
    """A Case with standard-normal inputs; ``quantize`` for an init that goes through LAPACK (QR, LU), whose
    last bits differ between BLAS kernels (:func:`machine_free`)."""
    x = rng.standard_normal((n,) + b.event_shape) if x is None else x      # (n, D) or (n, C, H, W)
    return Case(b, perturbed(b, rng, scale, quantize=quantize), x, list(bad))


def _logit(alpha):
    def make(rng):
        b = nf.Logit(3, alpha=alpha)
        x = rng.uniform(0.02, 0.98, (5, 3))
        return Case(b, {}, x, [("forward", np.full((2, 3), 1.5)), ("forward", np.full((2, 3), -0.1)),
                               ("forward", np.zeros((2, 3)) if alpha == 0 else np.full((2, 3), 1.0 + 1e-9))])
    return make


def _sigmoid(rng):
    b = nf.Sigmoid(3)
    return Case(b, {}, 2.0 * _normal(rng, 5, 3), [("inverse", np.full((2, 3), 1.0)),
                                                  ("inverse", np.full((2, 3), -0.5))])


def _actnorm(rng):
    b = nf.ActNorm(3)
    data = 3.0 + 2.0 * _normal(rng, 100, 3)
    p = b.init(rng, data)
    return Case(b, {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in p.items()}, data[:5])


def _coupling(cls, mask, **kw):
    def make(rng):
        return _case(cls(np.asarray(mask), hidden=(7, 5), **kw), rng, scale=0.4)
    return make


REGISTRY = {
    "elementwise_affine": lambda rng: _case(nf.ElementwiseAffine(3), rng),
    "nice_scaling": lambda rng: _case(nf.ElementwiseAffine(4, shift=False), rng),
    "actnorm": _actnorm,
    "leaky_relu": lambda rng: _case(nf.LeakyReLU(3, slope=0.2), rng),
    "sigmoid": _sigmoid,
    "logit": _logit(0.0),
    "logit_alpha": _logit(0.05),
    "permutation_reverse": lambda rng: _case(nf.Permutation.reverse(4), rng),
    "permutation_random": lambda rng: _case(nf.Permutation.random(5, rng), rng),
    "linear": lambda rng: _case(nf.Linear(3), rng, quantize=True),          # QR in the init
    "lu_linear": lambda rng: _case(nf.LULinear(4, perm=rng.permutation(4)), rng),
    "additive_half": _coupling(nf.AdditiveCoupling, nf.half_mask(4)),
    "additive_alternating_tanh": _coupling(nf.AdditiveCoupling, nf.alternating_mask(5), activation="tanh"),
    "affine_exp_relu": _coupling(nf.AffineCoupling, nf.half_mask(2)),
    "affine_exp_half_second": _coupling(nf.AffineCoupling, nf.half_mask(5, first=False), activation="elu"),
    "affine_tanh_leaky": _coupling(nf.AffineCoupling, nf.alternating_mask(4), activation="leaky_relu",
                                   scale="tanh", scale_bound=1.5),
    "affine_sigmoid_tanh": _coupling(nf.AffineCoupling, [0, 1, 1, 0, 1], activation="tanh", scale="sigmoid"),
    "affine_softplus_elu": _coupling(nf.AffineCoupling, [1, 0, 0, 1], activation="elu", scale="softplus"),
    # zuko's soft clip as zuko ships it (slope 1e-3: c = -log 1e-3); normflows' two sigmoid scale maps, on
    # the half masks of its AffineCouplingBlock (split "channel": first half conditions; "channel_inv")
    "affine_softclip_zuko": _coupling(nf.AffineCoupling, nf.alternating_mask(4, even=False), scale="softclip",
                                      scale_bound=ZUKO_SOFTCLIP_BOUND),
    "affine_logsigmoid_half": _coupling(nf.AffineCoupling, nf.half_mask(4), activation="tanh", scale="logsigmoid"),
    "affine_neg_logsigmoid_half_second": _coupling(nf.AffineCoupling, nf.half_mask(5, first=False),
                                                   scale="neg_logsigmoid"),
    "realnvp_actnorm": lambda rng: _case(nf.realnvp(4, n_layers=3, hidden=(6,), actnorm=True), rng, scale=0.3),
    "nice": lambda rng: _case(nf.nice(4, n_layers=2, hidden=(6,), mask="alternating"), rng, scale=0.3),
    "reshape_image": lambda rng: _case(nf.Reshape(12, (3, 2, 2)), rng),
    "reshape_flatten": lambda rng: _case(nf.Reshape((2, 2, 3), 12), rng),
    "sequential_reshape": lambda rng: _case(nf.Sequential([nf.ElementwiseAffine(12), nf.Reshape(12, (3, 2, 2)),
                                                           nf.Reshape((3, 2, 2), (12,)), nf.LULinear(12)]), rng, scale=0.2),
    "sequential_mixed": lambda rng: _case(nf.Sequential([nf.LULinear(3), nf.LeakyReLU(3, 0.5),
                                                         nf.Linear(3), nf.ElementwiseAffine(3)]), rng, scale=0.2,
                                          quantize=True),                  # Linear's QR init
}


def _merge_family_registries():
    """Add the ``ENTRIES`` of every ``tests/registry_<family>.py``; a name may be registered once."""
    for path in sorted(Path(__file__).parent.glob("registry_*.py")):
        entries = importlib.import_module(path.stem).ENTRIES
        dup = set(entries) & set(REGISTRY)
        if dup:
            raise RuntimeError(f"{path.name} registers names that exist already: {sorted(dup)}")
        REGISTRY.update(entries)


_merge_family_registries()
