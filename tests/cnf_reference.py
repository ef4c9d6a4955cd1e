"""A traceable stand-in for the CNF's solved map, for the harness: the same augmented ODE discretised by
classical fixed-step RK4 (``validation.certify_ode.rk4_forward``, which the validation certification uses too)
and written with ``xp`` only, so autograd can differentiate it (``solve_ivp`` cannot be traced).

RK4's global error is O(h^4): with 200 steps on the registry's intervals (h <= 7.5e-3) and their O(1) fields
it is ~1e-10, far below the 1e-5 relative tolerance at which the adjoint gradients are compared with it.
"""
import numpy as np

from validation.certify_ode import rk4_forward

__all__ = ["rk4_forward", "reference"]


def reference(cnf, n_steps=200):
    """The ``Case.reference`` callable ``(params, x, xp) -> (y, logdet)`` of a CNF harness entry."""
    return lambda params, x, xp=np: rk4_forward(cnf, params, x, xp, n_steps)
