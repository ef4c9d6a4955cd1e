"""Harness entries for conditional flows: every conditional layer with a context ``(N, C)``, C = 2 or 3.

Each case carries its ``context`` (standard normal, one row per sample), so the shared harness checks the
context's cotangent three ways (autograd, central differences, float32) like every other gradient, and that a
missing or malformed context is refused.  Parameters are perturbed (scale 0.4-0.5) away from the zero last
layers, so every gradient, the context's included, is non-trivial.

* ``cond_affine_coupling``, ``cond_additive_coupling``, ``cond_spline_coupling``: the couplings, MLP on
  ``[x1, context]``;
* ``cond_realnvp_actnorm``: a chain of ActNorms (which ignore the context) and conditional affine couplings,
  whose context cotangent is the sum of the couplings';
* ``cond_maf`` (two layers, orders alternate), ``cond_iaf_gated`` (the IAF paper's gated update, as its
  posterior conditioned on an encoder's context) and ``cond_autoregressive_spline``: MADE with context
  columns of degree 0;
* ``cond_cnf`` (two hidden layers: the folded exact trace) and ``cond_cnf_inverse`` (``Inverse`` of a
  one-hidden-layer CNF: the tangent form of the trace, and ``inverse_backward`` with the context): the
  context as an extra input of the field, its cotangent integrated by the adjoint.  Not traceable (solve_ivp);
  the reference is classical RK4 with the context (:func:`rk4_conditional`), and the tolerances are the CNF
  entries' (tests/registry_continuous.py explains them: every solve at rtol = atol = 1e-8).
"""
import numpy as np

import npflows as nf
from registry import Case, perturbed
from registry_continuous import SOLVER, TOL as CNF_TOL


def rk4_conditional(cnf, params, x, xp, context, n_steps=100, inverse=False):
    """``(y, logdet)`` of a conditional CNF's forward (``t1 -> t0``; ``inverse``: ``t0 -> t1``) by classical RK4
    with ``n_steps`` fixed steps of the augmented ODE ``d(z, ell)/dt = (f(z, t; c), tr df/dz)``, with ``xp`` only
    so that autograd can differentiate it in x, the parameters and the context.  100 steps (half the unconditional
    entries' 200, to halve autograd's tracing time): RK4's global error O(h^4) is ~1e-9 here (h <= 1e-2, O(1)
    fields), far below the 1e-5 at which the adjoint and the solved map are compared with it."""
    t_from, t_to = (cnf.t0, cnf.t1) if inverse else (cnf.t1, cnf.t0)
    h = (t_to - t_from) / n_steps
    F = lambda z, t: cnf.field.f_and_trace(params, z, t, None, xp, context=context)
    z, ell = x, xp.zeros(x.shape[0])
    for i in range(n_steps):
        t = t_from + i * h
        k1, q1 = F(z, t)
        k2, q2 = F(z + 0.5 * h * k1, t + 0.5 * h)
        k3, q3 = F(z + 0.5 * h * k2, t + 0.5 * h)
        k4, q4 = F(z + h * k3, t + h)
        z = z + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        ell = ell + (h / 6.0) * (q1 + 2.0 * q2 + 2.0 * q3 + q4)
    return z, ell


def _case(b, rng, C, n=4, scale=0.4):
    p = perturbed(b, rng, scale)
    x = rng.standard_normal((n,) + b.event_shape)
    return Case(b, p, x, context=rng.standard_normal((n, C)))


def _make(build, C, **kw):
    return lambda rng: _case(build(C), rng, C, **kw)


def _cnf(hidden, C, inverse=False, **kw):
    def make(rng):
        cnf = nf.CNF(2, hidden=hidden, context_dim=C, **SOLVER, **kw)
        b = nf.Inverse(cnf) if inverse else cnf
        p = perturbed(cnf, rng, 0.8)
        ref = lambda params, x, xp=np, context=None: rk4_conditional(cnf, params, x, xp, context, inverse=inverse)
        return Case(b, p, rng.standard_normal((3, 2)), traceable=False, reference=ref, tol=dict(CNF_TOL),
                    context=rng.standard_normal((3, C)))
    return make


ENTRIES = {
    "cond_affine_coupling": _make(lambda C: nf.AffineCoupling([1, 0, 1], hidden=(5, 4), activation="tanh",
                                                              scale="tanh", scale_bound=1.5, context_dim=C), 2),
    "cond_additive_coupling": _make(lambda C: nf.AdditiveCoupling([0, 1, 1, 0], hidden=(6,), context_dim=C), 3),
    "cond_spline_coupling": _make(lambda C: nf.SplineCoupling([1, 0, 0], n_bins=4, bound=2.5, hidden=(6,),
                                                              activation="elu", context_dim=C), 3),
    "cond_realnvp_actnorm": _make(lambda C: nf.realnvp(3, n_layers=2, hidden=(5,), actnorm=True, context_dim=C), 2,
                                  scale=0.3),
    "cond_maf": _make(lambda C: nf.maf(3, n_layers=2, hidden=(6,), activation="tanh", context_dim=C), 2),
    "cond_iaf_gated": _make(lambda C: nf.MaskedAffineAutoregressive(3, hidden=(7, 5), order="reversed",
                                                                     update="gated", context_dim=C), 3),
    "cond_autoregressive_spline": _make(lambda C: nf.MaskedSplineAutoregressive(3, n_bins=4, bound=2.5, hidden=(6,),
                                                                                context_dim=C), 2),
    "cond_cnf": _cnf((5, 4), 2),
    "cond_cnf_inverse": _cnf((6,), 3, inverse=True, t0=0.0, t1=0.7),
}
