"""Adapters: each maps a case onto one implementation.

An adapter is a module (``validation/adapters/<name>_adapter.py``, or any importable module or ``.py`` file)
with

``NAME``
    a short name for the report;
``supports(case) -> None | str``
    ``None`` if it can run the case, else the reason it cannot (the checker reports it as skipped);
``run(case) -> dict``
    the quantities it computed, as arrays (any float dtype) keyed by the names of
    :func:`validation.format.quantities`: ``"forward.output"``, ``"forward.logdet"``, ``"inverse.output"``,
    ``"inverse.logdet"``, ``"pullback.dx"``, ``"pullback.dparams[<key>]"`` and, for a conditional case (one
    with a ``context``, ``(N, C)``, that the forward, the inverse and the pullback all read),
    ``"pullback.dcontext"``.  **Every quantity must be
    answered**: with an array, or with :class:`Unavailable` ``("reason")`` where the implementation cannot
    compute it (a library without a planar inverse, say).  A key may also name a group: ``"inverse"``,
    ``"pullback"`` or ``"pullback.dparams"`` declare every quantity under it.  A quantity that is neither
    computed nor declared is a failure: a case cannot be passed by half an answer.  An exception whose
    class is named ``NotMappable`` raised by ``run`` reports the case as skipped with its message (for
    limits found only while running).

``TAKES_CONTEXT`` (optional, default False)
    True if ``run`` passes a conditional case's ``context`` (``arrays(case).context``) and answers
    ``"pullback.dcontext"``; the checker skips conditional cases for an adapter without it.

``arrays(case)`` below turns a case into NumPy arrays of the case's dtype.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Unavailable:
    """What an adapter returns for a quantity its implementation cannot compute, with the reason; the
    checker counts it in the coverage summary as declared, not as a failure."""
    reason: str


@dataclass
class CaseArrays:
    dtype: np.dtype
    params: dict          # {key: array}
    x: np.ndarray         # forward input (N, *input event): (N, D) or (N, C, H, W)
    y: np.ndarray         # inverse input (N, *output event): the forward output's shape
    dy: np.ndarray        # cotangent of the forward output, its shape (None if the case has no pullback)
    dlogdet: np.ndarray   # cotangent of the forward logdet, (N,)
    context: np.ndarray = None    # a conditional case's context (N, C), else None


def arrays(case):
    dt = np.dtype(case["dtype"])
    a = lambda v: np.asarray(v, dtype=np.float64).astype(dt)
    pb = case.get("pullback")
    ctx = case.get("context")
    return CaseArrays(dt, {k: a(v) for k, v in case["params"].items()}, a(case["forward"]["input"]),
                      a(case["inverse"]["input"]), a(pb["dy"]) if pb else None, a(pb["dlogdet"]) if pb else None,
                      None if ctx is None else a(ctx))


def conditioner(P, n_layers, f, masks=None, prefix="net."):
    """The cases' conditioner MLP (README.md) as a function of ``h``, for any array library whose arrays
    support ``@``, ``*`` and ``+`` (torch tensors, JAX arrays): ``W`` of shape ``(in, out)``, activation ``f``
    after every layer but the last; with ``masks``, MADE's masked weights ``W * masks[l]``."""
    def net(h):
        for l in range(n_layers):
            W = P[f"{prefix}W{l}"]
            if masks is not None:
                W = W * masks[l]
            h = h @ W + P[f"{prefix}b{l}"]
            if l < n_layers - 1:
                h = f(h)
        return h
    return net
