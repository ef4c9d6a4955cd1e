"""Shared plumbing of the PyTorch adapters (nflows, zuko).

An adapter supplies ``build(T, P, dt) -> (forward, inverse)`` for a transform description ``T`` and its
parameters ``P`` as torch tensors that require grad (``{case key: tensor}``); ``forward(x) -> (y, logdet)``
and ``inverse(y) -> (x, logdet)`` call the peer library.  The peer's own parameters are computed from
``P`` inside ``build`` (a change of parameterisation is part of the mapping), so autograd returns the
cotangents of the case's parameters directly.  ``run`` evaluates a case with them.

A conditional case (a ``context`` ``(N, C)``): ``run`` makes the context a tensor that requires grad and builds
the transform inside ``with context(c):``; a builder of a conditional transform (``context_dim`` in ``T``)
reads it with :func:`current_context` and binds it into the peer's conditioner (zuko's way: its lazy
transforms build the transform for a given context; nflows passes ``context=`` through its call, which
:func:`net_module` appends to the network's input), so autograd returns ``pullback.dcontext`` too.
"""
import numpy as np

from . import Unavailable, arrays, conditioner
from ..format import Dynamic


class NotMappable(Exception):
    """The case's transform or parameters have no counterpart in the peer library (reported as skip)."""


def torch_dtype(case):
    import torch
    return {"float64": torch.float64, "float32": torch.float32}[case["dtype"]]


_CONTEXT = Dynamic()


def context(c):
    """``with context(c):`` builders called inside read the case's context tensor ``c`` (or None)."""
    return _CONTEXT.bound(c)


def current_context(T=None):
    """The context tensor of the case being built (None for an unconditional one).  With ``T``: the context
    for a transform ``T`` that is conditional (``context_dim``), None for one that is not; ``NotMappable`` if
    ``T`` is conditional and no context was given or its width differs."""
    c = _CONTEXT.get()
    if T is None:
        return c
    C = T.get("context_dim")
    if C is None:
        return None
    if c is None or c.shape[-1] != C:
        raise NotMappable(f"a conditional {T['type']} (context_dim {C}) without a matching context")
    return c


def with_context(h, c):
    """The conditioner's input ``[h, c]`` (columns; the cases' convention, README "Context"), or ``h``."""
    import torch
    return h if c is None else torch.cat([h, c], dim=-1)


def activation(name):
    import torch
    import torch.nn.functional as F
    return {"relu": torch.relu, "tanh": torch.tanh, "elu": F.elu,
            "leaky_relu": lambda h: F.leaky_relu(h, 0.01)}[name]


def mlp(P, n_layers, act, masks=None, prefix="net."):
    """The conditioner MLP of README.md as a torch function of the case's weights (W of shape (in, out));
    with ``masks``, MADE's masked weights."""
    return conditioner(P, n_layers, activation(act), masks, prefix)


def net_module(fn):
    """A ``torch.nn.Module`` around ``fn(h)``: nflows' couplings call ``transform_net(x, context)``; a context
    (nflows passes the one given to the transform's call) is appended to the input as columns, ``[h, c]``."""
    import torch

    class Net(torch.nn.Module):
        def forward(self, h, context=None):
            return fn(with_context(h, context))
    return Net()


def set_tensor(module, name, tensor):
    """Replace the parameter or buffer ``name`` of ``module`` by ``tensor`` (a function of the leaves)."""
    module._parameters.pop(name, None)
    module._buffers.pop(name, None)
    object.__setattr__(module, name, tensor)


def sub(P, prefix):
    return {k[len(prefix):]: v for k, v in P.items() if k.startswith(prefix)}


def chain(parts):
    """``(forward, inverse)`` of the composition of ``parts``, a list of ``(forward, inverse)`` pairs, layer 0
    first: forward runs them in order, inverse in reverse, and each sums its layers' logdets."""
    def forward(x):
        ld = 0
        for f, _ in parts:
            x, l = f(x)
            ld = ld + l
        return x, ld

    def inverse(y):
        ld = 0
        for _, g in reversed(parts):
            y, l = g(y)
            ld = ld + l
        return y, ld
    return forward, inverse


def sequential(build):
    """``Sequential`` from the adapter's ``build``: layer 0 first, keys under ``"i."``.  If a layer's inverse
    is :class:`~validation.adapters.Unavailable`, so is the stack's (the first such layer's reason)."""
    def make(T, P, dt):
        parts = [build(L, sub(P, f"{i}."), dt) for i, L in enumerate(T["layers"])]
        missing = [g for _, g in parts if isinstance(g, Unavailable)]
        forward, inverse = chain(parts)
        return forward, (Unavailable(f"a layer: {missing[0].reason}") if missing else inverse)
    return make


def run(build, case):
    """Every quantity of ``case`` computed through ``build`` (see the module docstring)."""
    import torch
    dt = torch_dtype(case)
    c = arrays(case)
    P = {k: torch.tensor(v, dtype=dt, requires_grad=True) for k, v in c.params.items()}
    x = torch.tensor(c.x, dtype=dt, requires_grad=True)
    ctx = None if c.context is None else torch.tensor(c.context, dtype=dt, requires_grad=True)
    with context(ctx):
        forward, inverse = build(case["transform"], P, dt)
    y, ld = forward(x)
    ld = ld.expand(x.shape[0]) if ld.dim() == 0 else ld
    out = {"forward.output": y, "forward.logdet": ld}
    if c.dy is not None:
        obj = (y * torch.tensor(c.dy)).sum() + (ld * torch.tensor(c.dlogdet)).sum()
        keys = list(P)
        extra = [] if ctx is None else [ctx]
        g = torch.autograd.grad(obj, [x] + extra + [P[k] for k in keys], allow_unused=True)
        out["pullback.dx"] = g[0]
        if ctx is not None:
            out["pullback.dcontext"] = torch.zeros_like(ctx) if g[1] is None else g[1]
            g = (g[0],) + g[2:]
        for k, gk in zip(keys, g[1:]):
            out[f"pullback.dparams[{k}]"] = torch.zeros_like(P[k]) if gk is None else gk
    if isinstance(inverse, Unavailable):
        res = {k: v.detach().cpu().numpy() for k, v in out.items()}
        res["inverse"] = inverse
        return res
    with torch.no_grad():
        xi, ldi = inverse(torch.tensor(c.y, dtype=dt))
        ldi = ldi.expand(xi.shape[0]) if ldi.dim() == 0 else ldi
    out["inverse.output"], out["inverse.logdet"] = xi, ldi
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def supports(build, case):
    """``None`` if ``build`` maps the case, else the reason."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed"
    try:
        c = arrays(case)
        import torch
        P = {k: torch.tensor(v, dtype=torch_dtype(case)) for k, v in c.params.items()}
        ctx = None if c.context is None else torch.tensor(c.context, dtype=torch_dtype(case))
        with context(ctx):
            build(case["transform"], P, torch_dtype(case))
    except NotMappable as e:
        return str(e)
    return None


def softplus_inverse(v):
    """``u`` with ``softplus(u) = v`` (v > 0), accurate for small and large v."""
    import torch
    return v + torch.log(-torch.expm1(-v))


NFLOWS_LU_EPS = 1e-3      # nflows' LULinear (and normflows' copy, _LULinear): diagonal softplus(u) + 1e-3


def set_nflows_lu(m, P, perm, what):
    """Load the case's ``LULinear`` parameters into nflows' ``LULinear`` layout (``m``: that class or
    normflows' copy of it): the strict triangles as ``lower_entries`` / ``upper_entries``, the diagonal
    ``exp(log_scale)`` as ``softplus(u) + 1e-3`` (so it must exceed 1e-3; ``NotMappable`` otherwise, naming
    ``what``), and the bias permuted so that applying ``perm`` afterwards gives the case's map."""
    import torch
    D = len(perm)
    if not bool((P["log_scale"] > np.log(NFLOWS_LU_EPS)).all()):
        raise NotMappable(f"{what} has the diagonal softplus(u) + 1e-3 > 1e-3; this case has "
                          f"exp(log_scale) down to {float(torch.exp(P['log_scale'].min())):.3g}")
    lo, up = np.tril_indices(D, -1), np.triu_indices(D, 1)
    set_tensor(m, "lower_entries", P["lower"][lo[0], lo[1]])
    set_tensor(m, "upper_entries", P["upper"][up[0], up[1]])
    set_tensor(m, "unconstrained_upper_diag", softplus_inverse(torch.exp(P["log_scale"]) - NFLOWS_LU_EPS))
    set_tensor(m, "bias", P["bias"][torch.as_tensor(np.argsort(perm))])


def np_perm(T):
    return np.asarray(T["perm"])
