"""torchdiffeq (Chen et al. 2018, arXiv:1806.07366): the ``CNF`` cases, solved by an independent ODE
solver on a torch implementation of the same vector field.

The mapping (README.md's ``CNF`` section; nothing of npflows is used):

* **Field.**  ``f(z, t) = MLP([z, t])`` from the case's ``W0, b0, ..., W<k>, b<k>`` (``W_l`` of shape
  ``(in, out)``, the time as the last input row of ``W0``), ``tanh`` or the exact softplus
  ``logaddexp(h, 0)`` between layers (not ``F.softplus``, whose ``threshold=20`` returns ``h`` itself,
  off by ``log1p(e^-h)`` up to 2e-9), no activation after the last layer.
* **Augmented state.**  ``d(z, l)/dt = (f, tr df/dz)``, the trace exact: ``sum_i d f_i / d z_i`` by ``D``
  reverse-mode passes of torch autograd (``create_graph=True``, so the trace can itself be differentiated
  for the pullbacks).  Solved with ``torchdiffeq.odeint`` (``dopri5``, Dormand-Prince 5(4), the same
  pair as scipy's RK45, with torchdiffeq's own step control; it steps past the end time and interpolates
  there with its dense output, where scipy shortens the last step): forward from
  ``t1`` back to ``t0`` with ``l(t1) = 0``, inverse from ``t0`` to ``t1``.
* **Pullbacks** of ``sum(dy * y) + sum(dlogdet * logdet)`` for ``x`` and every parameter, by one of:

  - ``adjoint`` (this module, ``python -m validation check torchdiffeq``): ``torchdiffeq.odeint_adjoint``,
    the continuous adjoint method with the case's parameters as ``adjoint_params``: the adjoint ODE's
    vector-Jacobian products come from torch autograd of the field and of its autograd trace (second
    derivatives), an implementation independent of npflows' hand-derived ``ODEField.vjp``;
  - ``backprop`` (``python -m validation check torchdiffeq_backprop``): torch autograd through the
    ``dopri5`` steps of ``odeint`` (discretise-then-differentiate).

A conditional CNF (``context_dim`` C, a case with a ``context``): the field reads ``[z, t, c]``
(``W0[D + 1:]`` multiplies the context, constant in time), the context is a tensor that requires grad (one of
the adjoint's ``adjoint_params``, since the field closes over it), and its cotangent is ``pullback.dcontext``.
An ``Inverse`` of a CNF is the same solve with the directions swapped (forward ``t0 -> t1``).

Tolerances (every solve, the adjoint's included).  float64 cases: ``rtol = atol = 1e-12`` (``RTOL64``),
four orders tighter than the cases' own ``1e-8``: torchdiffeq then agrees with the certification's
independent reference (DOP853 at 1e-13, autograd on RK4; ``validation.certify_ode.solver_reference``) to
9-12 digits, so the agreement the checker reports measures the cases' numbers (6.3-8 digits of the exact
flow, their ``certification.solver``), not this solver.  At ``1e-10`` that agreement is 7.8-10 digits.
float32 cases are solved in float32 (the format's contract: cast and compute in float32) at
``rtol = atol = 1e-8`` (``RTOL32``); their stored numbers are the exact flow at the float32 inputs rounded
to float32.  A float32 solve's error is its truncation error (about the tolerance) plus rounding that
accumulates over its steps; measured worst agreement with the cases (adjoint / backprop):
``1e-6``: 3.9 / 2.8 digits (fails the 4 required), ``1e-7``: 4.1 / 4.2, ``1e-8``: 5.0 / 4.5,
``1e-9``: 5.1 / 4.8; below float32's unit roundoff the step control still works because dopri5's error
estimate scales with the step.
"""
from ._torch import NotMappable  # noqa: F401  (the checker reports NotMappable as a skip)
from . import arrays

NAME = "torchdiffeq"
TAKES_CONTEXT = True
PULLBACK = "adjoint"
METHOD = "dopri5"
RTOL64 = ATOL64 = 1e-12              # see the module docstring
RTOL32 = ATOL32 = 1e-8


def _field(T, P, ctx=None):
    """``f(t, z)`` of README.md's ``CNF`` section as a torch function of the case's parameter tensors (and,
    for a conditional field, of the context tensor ``ctx``, ``(N, C)``)."""
    import torch
    D, L = T["dim"], len(T["hidden"]) + 1
    act = {"tanh": torch.tanh, "softplus": lambda h: torch.logaddexp(h, torch.zeros_like(h))}[T["activation"]]

    def f(t, z):
        W0 = P["W0"]
        h = z @ W0[:D] + t * W0[D] + P["b0"]
        if ctx is not None:
            h = h + ctx @ W0[D + 1:]
        for l in range(1, L):
            h = act(h) @ P[f"W{l}"] + P[f"b{l}"]
        return h
    return f


def _dynamics(T, P, ctx=None):
    """The augmented dynamics ``(t, (z, l)) -> (f, tr df/dz)``, the trace by ``D`` autograd passes."""
    import torch
    f, D = _field(T, P, ctx), T["dim"]

    def dyn(t, state):
        z = state[0]
        if not (torch.is_grad_enabled() and z.requires_grad):
            z = z.detach().requires_grad_(True)      # a no-grad solve (inverse, the adjoint's forward pass)
        with torch.enable_grad():
            fz = f(t, z)
            tr = torch.zeros(z.shape[0], dtype=z.dtype)
            for i in range(D):
                g = torch.autograd.grad(fz[:, i].sum(), z, create_graph=True)[0]
                tr = tr + g[:, i]
        return fz, tr
    return dyn


def _cnf(T):
    """``(the CNF's description, inverted)``: a CNF, or the ``Inverse`` of one."""
    if T["type"] == "Inverse" and T["base"]["type"] == "CNF":
        return T["base"], True
    return T, False


def supports(case):
    T = _cnf(case["transform"])[0]
    if T["type"] != "CNF":
        return f"torchdiffeq solves ODEs: no {T['type']}"
    if T.get("trace", "exact") != "exact":
        return f"trace {T['trace']!r}: the adapter computes the exact trace only"
    try:
        import torch  # noqa: F401
        import torchdiffeq  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed"
    return None


def run(case, pullback=None):
    import torch
    from torchdiffeq import odeint, odeint_adjoint
    pullback = pullback or PULLBACK
    T, inverted = _cnf(case["transform"])
    dt = {"float64": torch.float64, "float32": torch.float32}[case["dtype"]]
    tol = dict(rtol=RTOL64, atol=ATOL64) if dt == torch.float64 else dict(rtol=RTOL32, atol=ATOL32)
    c = arrays(case)
    keys = list(c.params)
    P = {k: torch.tensor(v, dtype=dt, requires_grad=True) for k, v in c.params.items()}
    ctx = None if c.context is None else torch.tensor(c.context, dtype=dt, requires_grad=True)
    extra = () if ctx is None else (ctx,)
    dyn = _dynamics(T, P, ctx)
    fwd_t = torch.tensor([T["t1"], T["t0"]], dtype=dt)           # density direction: t1 -> t0
    inv_t = torch.tensor([T["t0"], T["t1"]], dtype=dt)
    if inverted:
        fwd_t, inv_t = inv_t, fwd_t

    def solve(z0, ts, grad_mode):
        state = (z0, torch.zeros(z0.shape[0], dtype=dt))
        if grad_mode == "adjoint":
            zs, ls = odeint_adjoint(dyn, state, ts, method=METHOD, adjoint_params=tuple(P[k] for k in keys) + extra,
                                    **tol)
        else:
            zs, ls = odeint(dyn, state, ts, method=METHOD, **tol)
        return zs[-1], ls[-1]

    out = {}
    x = torch.tensor(c.x, dtype=dt, requires_grad=c.dy is not None)
    if c.dy is not None:
        y, ld = solve(x, fwd_t, pullback)
        obj = (y * torch.tensor(c.dy, dtype=dt)).sum() + (ld * torch.tensor(c.dlogdet, dtype=dt)).sum()
        g = torch.autograd.grad(obj, [x] + list(extra) + [P[k] for k in keys], allow_unused=True)
        out["pullback.dx"] = g[0]
        if ctx is not None:
            out["pullback.dcontext"] = torch.zeros_like(ctx) if g[1] is None else g[1]
            g = (g[0],) + tuple(g[2:])
        for k, gk in zip(keys, g[1:]):
            out[f"pullback.dparams[{k}]"] = torch.zeros_like(P[k]) if gk is None else gk
    else:
        with torch.no_grad():
            y, ld = solve(x, fwd_t, "none")
    out["forward.output"], out["forward.logdet"] = y, ld
    with torch.no_grad():
        out["inverse.output"], out["inverse.logdet"] = solve(torch.tensor(c.y, dtype=dt), inv_t, "none")
    return {k: v.detach().cpu().numpy() for k, v in out.items()}
