"""Certification of cases whose transform is the solution of an ODE (the CNF), which has no 50-digit reference.

An mpmath recomputation would have to solve the ODE at 50 digits (and once more per scalar input for the
complex-step pullbacks); that is not feasible here.  Instead, and independently of the numbers under test:

1. **Tight solve** (``solver``): the forward and inverse outputs and logdets recomputed with scipy's DOP853 at
   rtol = atol = 1e-13 (the same field, the same augmented ODE), and the pullbacks with autograd applied to
   a classical RK4 discretisation of the forward ODE with ``RK4_STEPS`` fixed steps (error O(h^4) ~ 1e-11
   for the O(1) fields of the cases), which does not use npflows' hand-written adjoint or trace gradients.
   Each stored number gets its digits (NIST's LRE) against these values.  They measure how accurately the
   case's own solve (its ``rtol``, ``atol``) reproduces the exact flow: about -log10(rtol) digits, not 13.
   ``rk4_vs_tight_digits`` is the agreement of the two references on the forward output and logdet.
2. **Brute force** (``autograd``, float64 cases): each sample's stored logdet against ``slogdet`` of the
   autograd Jacobian of the RK4 map, and the stored pullback against autograd on RK4.  Both are limited by
   the stored numbers' solver tolerance, so they are required to agree to ``REQUIRED_DIGITS`` (6), not 8.

A conditional CNF (``context_dim``: the context is one more input of the field, constant along the trajectory)
is certified the same way with the case's ``context``: the tight solve takes it, RK4 feeds it to the field,
and autograd differentiates RK4 in the context too (``pullback.dcontext``).  An ``Inverse`` of a CNF (its
``t0 -> t1`` solve as the forward map) is certified as the CNF with the directions swapped.

The checker requires ``min_digits`` = ``CHECK_DIGITS`` (5) of agreement with these cases' float64 numbers:
the stored numbers themselves carry 6.3 to 8 digits of the exact flow (per number, at rtol = atol = 1e-8), and a
peer solving as accurately may err the other way, so two correct solvers agree to about 6 digits or more.
"""
import math

import numpy as np

TIGHT = {"method": "DOP853", "rtol": 1e-13, "atol": 1e-13}
RK4_STEPS = 500
REQUIRED_DIGITS = 6.0
CHECK_DIGITS = 5.0
SOLVER_CERTIFIED = {"CNF": "an ODE solve: certified against a solve at rtol = atol = 1e-13 and autograd on a "
                           "fixed-step RK4 discretisation (validation/certify_ode.py), not a 50-digit reference"}


def _cnf_of(T):
    """``(the CNF's description, inverted)`` of a transform certified here, or ``(None, False)``."""
    if T["type"] == "CNF":
        return T, False
    if T["type"] == "Inverse" and T["base"]["type"] == "CNF":
        return T["base"], True
    return None, False


def is_solver_certified(T):
    """True for a transform certified here: a top-level CNF, or the ``Inverse`` of one (deeper nestings are
    not supported)."""
    return _cnf_of(T)[0] is not None


def no_reference_note(T):
    """The certification's ``no_reference`` statement for a solver-certified transform."""
    return SOLVER_CERTIFIED["CNF"] + (" (an Inverse: the CNF's t0 -> t1 solve)" if _cnf_of(T)[1] else "")


def rk4_forward(cnf, params, x, xp=np, n_steps=RK4_STEPS, probe=None, t_from=None, t_to=None, context=None):
    """``(z(t_to), ell(t_to))`` for ``z(t_from) = x``, ``ell(t_from) = 0`` by classical RK4 with ``n_steps``
    fixed steps of the CNF's augmented ODE ``d(z, ell)/dt = (f, tr df/dz)`` (default t1 -> t0, i.e. the CNF's
    ``forward``), written with ``xp`` only so that autograd can differentiate it; ``context``: a conditional
    field's context ``(N, C)``."""
    t_from = cnf.t1 if t_from is None else t_from
    t_to = cnf.t0 if t_to is None else t_to
    h = (t_to - t_from) / n_steps
    if context is None:
        F = lambda z, t: cnf.field.f_and_trace(params, z, t, probe, xp)
    else:
        F = lambda z, t: cnf.field.f_and_trace(params, z, t, probe, xp, context=context)
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


def _digits(a, ref):
    """Agreement in digits relative to the largest magnitude (as the harness and ``certify_autograd``)."""
    from .format import MAX_DIGITS
    a, ref = np.asarray(a, float), np.asarray(ref, float)
    err = float(np.max(np.abs(a - ref))) if a.size else 0.0
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1.0)
    return MAX_DIGITS if err == 0 else round(float(min(MAX_DIGITS, -math.log10(err / scale))), 2)


def solver_reference(case):
    """The independent reference values of a CNF case, ``{quantity: array}`` (float64): outputs and logdets
    by the tight solve (``TIGHT``), pullbacks by autograd on ``RK4_STEPS`` steps of RK4; also returns the
    RK4 forward ``(yr, ldr)`` (for ``rk4_vs_tight_digits``) and, where the case has a pullback, autograd's
    parameter gradients ``gp``."""
    import autograd
    import autograd.numpy as anp

    from .describe import build

    import npflows as nf

    cT, inverted = _cnf_of(case["transform"])
    b = build(cT)                                   # the CNF (an Inverse's base)
    tight = build({**cT, **TIGHT})
    if inverted:
        tight = nf.Inverse(tight)
    P = {k: np.asarray(v, dtype=np.float64) for k, v in case["params"].items()}
    x = np.asarray(case["forward"]["input"], dtype=np.float64)
    y_in = np.asarray(case["inverse"]["input"], dtype=np.float64)
    c = case.get("context")
    c = None if c is None else np.asarray(c, dtype=np.float64)
    span = dict(t_from=b.t0, t_to=b.t1) if inverted else {}     # the case's forward map as an RK4 solve
    probe = b.draw_probe(x.shape[0])
    y, ld, _ = tight.forward(P, x, c)
    xi, ldi = tight.inverse(P, y_in, c)
    ref = {"forward.output": y, "forward.logdet": ld, "inverse.output": xi, "inverse.logdet": ldi}
    yr, ldr = rk4_forward(b, P, x, probe=probe, context=c, **span)
    pb = case.get("pullback")
    gp = None
    if pb:
        dy, dl = np.asarray(pb["dy"]), np.asarray(pb["dlogdet"])

        def obj(args):
            z, ell = rk4_forward(b, args[1], args[0], anp, probe=probe, context=None if c is None else args[2],
                                 **span)
            return anp.sum(dy * z) + anp.sum(dl * ell)
        gx, gp, gc = autograd.grad(obj)((x, P, np.zeros((x.shape[0], 0)) if c is None else c))
        ref["pullback.dx"] = gx
        if c is not None:
            ref["pullback.dcontext"] = gc
        ref.update({f"pullback.dparams[{k}]": gp[k] for k in P})
    return ref, (yr, ldr), gp


def certify_solver(case):
    """The ``solver`` (and, for float64, ``autograd``) parts of a CNF case's certification."""
    import autograd
    import autograd.numpy as anp

    from .describe import build
    from .format import MAX_DIGITS, lre, quantities

    cT, inverted = _cnf_of(case["transform"])
    b = build(cT)
    P = {k: np.asarray(v, dtype=np.float64) for k, v in case["params"].items()}
    x = np.asarray(case["forward"]["input"], dtype=np.float64)
    c = case.get("context")
    c = None if c is None else np.asarray(c, dtype=np.float64)
    span = dict(t_from=b.t0, t_to=b.t1) if inverted else {}
    N, D = x.shape
    probe = b.draw_probe(N)
    ref, (yr, ldr), gp = solver_reference(case)
    y, ld = ref["forward.output"], ref["forward.logdet"]
    pb = case.get("pullback")
    digits = {name: float(lre(val, ref[name]).min()) if np.size(val) else MAX_DIGITS
              for name, val in quantities(case)}
    out = {"solver": {"reference": f"scipy {TIGHT['method']} at rtol = atol = {TIGHT['rtol']:g}; pullbacks: "
                                   f"autograd on RK4 with {RK4_STEPS} steps",
                      "case_tolerance": {"method": b.method, "rtol": b.rtol, "atol": b.atol},
                      "digits": {k: round(v, 2) for k, v in digits.items()},
                      "min_digits": round(min(digits.values()), 2),
                      "rk4_vs_tight_digits": min(_digits(yr, y), _digits(ldr, ld))}}
    if case["dtype"] == "float64" and b.trace == "exact":
        f = lambda flat: anp.reshape(rk4_forward(b, P, anp.reshape(flat, (N, D)), anp, probe=probe, context=c,
                                                 **span)[0], (-1,))
        J = autograd.jacobian(f)(x.reshape(-1)).reshape(N, D, N, D)
        brute = np.array([np.linalg.slogdet(J[i, :, i, :])[1] for i in range(N)])
        a = {"logdet_vs_slogdet_digits": _digits(case["forward"]["logdet"], brute),
             "method": "slogdet of the autograd Jacobian of the RK4 map; pullback vs autograd on RK4",
             "required_digits": REQUIRED_DIGITS}
        if pb:
            a["pullback_vs_autograd_digits"] = min([_digits(pb["dx"], ref["pullback.dx"])] +
                                                   [_digits(pb["dparams"][k], gp[k]) for k in P] +
                                                   ([_digits(pb["dcontext"], ref["pullback.dcontext"])]
                                                    if c is not None else []))
        out["autograd"] = a
    return out
