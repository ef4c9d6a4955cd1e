"""A traceable stand-in for the CNF's solved map: the same augmented ODE discretised by classical fixed-step
RK4 and written with ``xp`` only, so autograd can differentiate it (``solve_ivp`` cannot be traced).

RK4's global error is O(h^4): with ``n_steps`` = 200 on [0, 1] (h = 5e-3) and the O(1) fields of the tests
it is ~1e-11, far below the 1e-5 relative tolerance at which the adjoint gradients are compared with it.
"""
import numpy as np


def rk4_forward(cnf, params, x, xp=np, n_steps=200, probe=None, t_from=None, t_to=None):
    """``(z(t_to), ell(t_to))`` for ``z(t_from) = x``, ``ell(t_from) = 0`` (default t1 -> t0, i.e. ``forward``)."""
    t_from = cnf.t1 if t_from is None else t_from
    t_to = cnf.t0 if t_to is None else t_to
    h = (t_to - t_from) / n_steps
    F = lambda z, t: cnf.field.f_and_trace(params, z, t, probe, xp)
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


def reference(cnf, n_steps=200):
    """The ``Case.reference`` callable ``(params, x, xp) -> (y, logdet)`` of a CNF harness entry."""
    return lambda params, x, xp=np: rk4_forward(cnf, params, x, xp, n_steps)
