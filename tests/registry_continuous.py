"""Harness entries for the continuous normalizing flow (npflows/bijectors/continuous.py).

The CNF's forward calls ``solve_ivp``, which autograd cannot trace, so its entries are ``traceable=False``: the
harness takes the brute-force Jacobian by central differences of the solved map and checks the adjoint
gradients against autograd on a fixed-step RK4 discretisation of the same ODE (tests/cnf_reference.py) and
against central differences of the solved objective.  Every solve runs at rtol = atol = 1e-8 (the issue's
"done when"), and the tolerances follow from that (``TOL``):

* round trip 1e-6 and forward vs RK4 1e-6: each adaptive solve controls its local error at 1e-8 per step;
  the global error of these smooth, non-stiff O(1) flows over a unit interval is a small multiple of that
  (measured 1e-8 to 3e-8), so 1e-6 leaves a factor ~30 and still fails for any wrong term (O(1e-1) or more);
* logdet vs slogdet of the central-difference Jacobian, adjoint vs autograd-on-RK4 and vs central differences
  1e-5 (the issue's figure): step h = 1e-4 gives a truncation error O(h^2) ~ 1e-8, and the solver's error,
  a smooth function of the input of size ~1e-8, adds ~1e-8 to a difference quotient (not 1e-8 / h: the step
  sequence of the adaptive solver varies continuously with the input for such small changes; measured
  errors are ~1e-8);
* float32: the state is integrated in float64 and rounded at the end, so the default 1e-4 holds.

Parameters are perturbed (scale 1) away from the zero last layer so that the flows are far from the identity.
"""
import numpy as np

import npflows as nf
from cnf_reference import reference
from registry import Case, perturbed

# max_nfe: these entries need a few hundred evaluations per solve; the hostile-input sweep (test_hostile.py)
# scales their parameters up to 1e3, which makes the field stiff, and 20,000 evaluations (under a second)
# is where such a solve is refused with ODESolveError instead of running for minutes
SOLVER = dict(rtol=1e-8, atol=1e-8, max_nfe=20_000)
TOL = {"round_trip": 1e-6, "traced": 1e-6, "logdet": 1e-5, "autograd": 1e-5, "central": 1e-5, "step": 1e-4}


def _cnf(dim, n=4, scale=1.0, **kw):
    def make(rng):
        b = nf.CNF(dim, **SOLVER, **kw)
        return Case(b, perturbed(b, rng, scale), rng.standard_normal((n, dim)), traceable=False,
                    reference=reference(b), tol=dict(TOL))
    return make


ENTRIES = {
    "cnf_tanh": _cnf(2, hidden=(8,), activation="tanh"),
    "cnf_softplus_deep": _cnf(2, hidden=(6, 5), activation="softplus", t0=0.0, t1=0.5),
    "cnf_affine_3d": _cnf(3, hidden=(), t0=-0.5, t1=1.0, scale=0.5),
}
