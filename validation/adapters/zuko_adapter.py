"""zuko 1.x (Rozet et al.): the cases whose parameterisation maps onto zuko's transforms.

zuko's univariate transforms soft-clip their unconstrained inputs (``a / (1 + |a / log(slope)|)``).  The
cases with ``scale="softclip"`` (``affine_softclip_zuko``, ``maa_softclip_scale``, ``maf_zuko_softclip``) are
zuko's own parameterisation: their raw scales go unchanged into zuko's ``MonotonicAffineTransform`` with its
default ``slope=1e-3`` (``scale_bound = -log(1e-3)``), i.e. zuko's ``MAF`` and coupling transforms as they ship.
For every other case the adapter inverts that clip, with ``slope = e^-100`` so that every log-scale below 100
in magnitude is reachable, and builds zuko's transforms from the case's values:

* ``AffineCoupling`` (every scale map; the case's MLP and scale map give the log-scale ``s`` and shift
  ``t``), ``AdditiveCoupling``, ``SplineCoupling``: ``CouplingTransform`` (same mask convention: ones
  pass through) with ``MonotonicAffineTransform``, ``AdditiveTransform`` or ``MonotonicRQSTransform``.
* ``MaskedAffineAutoregressive`` (both updates; gated as ``z = x e^{log g} + (1 - g) m``) and
  ``MaskedSplineAutoregressive``: ``AutoregressiveTransform`` with ``D`` passes around the case's MADE.
* ``ElementwiseAffine``, ``ActNorm``: ``MonotonicAffineTransform``.
* ``LULinear``: ``LULinearTransform`` (zuko puts the diagonal in L: ``L_z = L diag(e^s)``,
  ``U_z = I + diag(e^-s) U``), then the permutation and the bias.
* ``Permutation``: ``PermutationTransform``.
* ``RationalQuadraticSpline``, ``SplineCoupling``: ``MonotonicRQSTransform``: its softmax widths and heights
  are set to npflows' minimum-size-adjusted ones, its exp-derivatives to npflows' knot derivatives.
* ``Sequential`` of mappable layers.

Conditional cases (a ``context``, README "Context"): the context is bound into the meta-network as zuko's lazy
transforms do for a given context: a coupling's MLP reads ``[x1, c]``; a conditional MADE is zuko's own
``zuko.nn.MaskedMLP`` (the network of its conditional MAF) with the case's masks, context rows included, and
weights loaded into its ``MaskedLinear`` layers, reading ``[x, c]``.  ``pullback.dcontext`` is torch's
gradient in the context tensor.
"""
import math

import numpy as np

from . import _torch as T_
from ._torch import NotMappable, current_context, mlp, sequential, set_tensor, with_context

NAME = "zuko"
TAKES_CONTEXT = True     # conditional couplings and autoregressive transforms: the context bound into meta
LOG_SLOPE = -100.0               # slope = e^-100: the soft clip is invertible for |value| < 100 (50 for widths)


def _unclip(v, k=1.0):
    """``a`` with ``a / (1 + |k a / log(slope)|) = v``: zuko's soft clip inverted (|v| < |log slope| / k)."""
    import torch
    L = -LOG_SLOPE / k
    if bool((v.abs() >= L).any()):
        raise NotMappable(f"a value {float(v.abs().max()):.3g} beyond zuko's soft clip bound {L:g}")
    return v / (1 - v.abs() / L)


def _zuko():
    import zuko.transforms as zt
    return zt


def _affine_univariate(s, t):
    zt = _zuko()
    return zt.DependentTransform(zt.MonotonicAffineTransform(t, _unclip(s), slope=math.exp(LOG_SLOPE)), 1)


def _affine_native(T, r, t):
    """``scale="softclip"``: the raw scale goes to zuko's ``MonotonicAffineTransform`` as it ships, whose own
    soft clip is the case's log-scale; zuko's default ``slope=1e-3`` when ``scale_bound = -log(1e-3)``."""
    zt = _zuko()
    c = T["scale_bound"]
    kw = {} if c == -math.log(1e-3) else {"slope": math.exp(-c)}
    return zt.DependentTransform(zt.MonotonicAffineTransform(t, r, **kw), 1)


def _as_maps(t):
    def forward(x):
        return t.call_and_ladj(x)

    def inverse(y):
        x = t.inv(y)
        return x, t.inv.log_abs_det_jacobian(y, x)
    return forward, inverse


def _log_scale(T, r):
    import torch
    if T["scale"] == "exp":
        return r
    if T["scale"] == "tanh":
        return T["scale_bound"] * torch.tanh(r)
    if T["scale"] == "softplus":
        return torch.log(torch.logaddexp(r, torch.zeros_like(r)) + 1e-3)     # exact softplus, no threshold
    if T["scale"] == "logsigmoid":
        return torch.nn.functional.logsigmoid(r + 2.0)
    if T["scale"] == "neg_logsigmoid":
        return -torch.nn.functional.logsigmoid(r + 2.0)
    if T["scale"] == "sigmoid":
        return torch.log(torch.sigmoid(r + 2.0) + 1e-3)
    raise NotMappable(f"scale={T['scale']!r} not mapped")


def _coupling(T, P, dt):
    import torch
    zt = _zuko()
    mask = torch.as_tensor(np.asarray(T["mask"]) == 1)
    d2 = int((~mask).sum())
    net = mlp(P, len(T["hidden"]) + 1, T["activation"])
    kind = T["type"]
    ctx = current_context(T)

    def meta(xa):
        out = net(with_context(xa, ctx))
        if kind == "AdditiveCoupling":
            return zt.DependentTransform(zt.AdditiveTransform(out), 1)
        if kind == "AffineCoupling":
            if T["scale"] == "softclip":
                return _affine_native(T, out[:, :d2], out[:, d2:])
            return _affine_univariate(_log_scale(T, out[:, :d2]), out[:, d2:])
        K = T["n_bins"]
        raw = out.reshape(out.shape[0], d2, 3 * K - 1)
        return _rqs(T, raw[..., :K], raw[..., K:2 * K], raw[..., 2 * K:])
    return _as_maps(zt.CouplingTransform(meta, mask))


ZUKO_ACTIVATION = {"relu": "ReLU", "tanh": "Tanh", "elu": "ELU"}


def _made(T, P, dt):
    """The case's MADE as a torch function of ``[x, c]``.  A conditional case runs **zuko's own**
    ``zuko.nn.MaskedMLP`` (the network of zuko's conditional MAF, ``MaskedLinear``: ``x (mask W)^T + b``) with
    the case's masks, context rows included, and weights loaded into its layers; an unconditional one the
    adapter's masked MLP (the same formula, ``README.md``)."""
    import torch
    masks = [torch.as_tensor(np.asarray(m), dtype=dt) for m in T["masks"]]
    if T.get("context_dim") is None or T["activation"] not in ZUKO_ACTIVATION:
        return mlp(P, len(T["hidden"]) + 1, T["activation"], masks=masks)
    from zuko.nn import MaskedLinear, MaskedMLP
    reach = masks[0]
    for m in masks[1:]:
        reach = (reach @ m) > 0
        reach = reach.to(dt)
    net = MaskedMLP((reach.T > 0), hidden_features=list(T["hidden"]),
                    activation=getattr(torch.nn, ZUKO_ACTIVATION[T["activation"]])).to(dt)
    lin = [m for m in net if isinstance(m, MaskedLinear)]
    if len(lin) != len(masks):
        raise NotMappable("zuko's MaskedMLP has another number of layers")
    for l, m in enumerate(lin):
        set_tensor(m, "mask", masks[l].T)                          # (out, in), as torch.nn.Linear's weight
        set_tensor(m, "weight", P[f"net.W{l}"].T)
        set_tensor(m, "bias", P[f"net.b{l}"])
    return net


def _maa(T, P, dt):
    import torch
    zt = _zuko()
    D = T["dim"]
    net = _made(T, P, dt)
    ctx = current_context(T)

    def meta(x):
        out = net(with_context(x, ctx))
        r, b = out[:, :D], out[:, D:]
        if T["update"] == "affine":
            if T["scale"] == "softclip":
                return _affine_native(T, r, b)
            return _affine_univariate(_log_scale(T, r), b)
        u = r + T["gate_bias"]
        logg = torch.nn.functional.logsigmoid(u)
        return _affine_univariate(logg, torch.exp(logg - u) * b)     # (1 - g) = exp(log g - u)
    return _as_maps(zt.AutoregressiveTransform(meta, passes=D))


def _msa(T, P, dt):
    import torch
    zt = _zuko()
    D, K = T["dim"], T["n_bins"]
    net = _made(T, P, dt)
    ctx = current_context(T)

    def meta(x):
        raw = net(with_context(x, ctx)).reshape(x.shape[0], 3 * K - 1, D).transpose(1, 2)     # (N, D, 3K-1)
        return _rqs(T, raw[..., :K], raw[..., K:2 * K], raw[..., 2 * K:])
    return _as_maps(zt.AutoregressiveTransform(meta, passes=D))


def _elementwise_affine(T, P, dt):
    import torch
    shift = P["shift"] if "shift" in P else torch.zeros_like(P["log_scale"])
    return _as_maps(_affine_univariate(P["log_scale"], shift))


def _lu(T, P, dt):
    import torch
    zt = _zuko()
    D = T["dim"]
    s = P["log_scale"]
    I = torch.eye(D, dtype=dt)
    L = torch.tril(P["lower"], -1) + I
    U = torch.triu(P["upper"], 1)
    LU = torch.tril(L * torch.exp(s)[None, :]) + torch.triu(torch.exp(-s)[:, None] * U, 1)
    t = zt.LULinearTransform(LU)
    perm = torch.as_tensor(np.asarray(T["perm"]))
    inv = torch.argsort(perm)

    def forward(x):
        y, ld = t.call_and_ladj(x)
        return y[:, perm] + P["bias"], ld

    def inverse(y):
        z = (y - P["bias"])[:, inv]
        x = t.inv(z)
        return x, t.inv.log_abs_det_jacobian(z, x)
    return forward, inverse


def _perm(T, P, dt):
    import torch
    return _as_maps(_zuko().PermutationTransform(torch.as_tensor(np.asarray(T["perm"]))))


def _rqs(T, rw, rh, rd):
    """zuko's spline with npflows' knots: widths/heights with the minimum sizes, derivatives m_d + softplus."""
    import torch
    zt = _zuko()
    K = T["n_bins"]

    def logits(raw, m):
        w = m + (1 - K * m) * torch.softmax(raw, dim=-1)          # npflows' normalised sizes
        lw = torch.log(w)
        return _unclip(lw - lw.mean(dim=-1, keepdim=True), 2.0)
    d = T["min_derivative"] + torch.nn.functional.softplus(rd)
    return zt.DependentTransform(zt.MonotonicRQSTransform(logits(rw, T["min_bin_width"]), logits(rh, T["min_bin_height"]),
                                                          _unclip(torch.log(d)), bound=T["bound"],
                                                          slope=math.exp(LOG_SLOPE)), 1)


def _spline(T, P, dt):
    zt = _zuko()
    rw, rh, rd = P["raw_widths"], P["raw_heights"], P["raw_derivatives"]

    def forward(x):
        e = lambda a: a.unsqueeze(0).expand(x.shape[0], *a.shape)
        return _rqs(T, e(rw), e(rh), e(rd)).call_and_ladj(x)

    def inverse(y):
        e = lambda a: a.unsqueeze(0).expand(y.shape[0], *a.shape)
        t = _rqs(T, e(rw), e(rh), e(rd))
        x = t.inv(y)
        return x, t.inv.log_abs_det_jacobian(y, x)
    _rqs(T, rw[None], rh[None], rd[None])           # mappable?
    return forward, inverse


def _not(reason):
    def f(T, P, dt):
        raise NotMappable(reason)
    return f


BUILD = {
    "AffineCoupling": _coupling, "AdditiveCoupling": _coupling, "SplineCoupling": _coupling,
    "MaskedAffineAutoregressive": _maa, "ElementwiseAffine": _elementwise_affine, "ActNorm": _elementwise_affine,
    "LULinear": _lu, "Permutation": _perm, "RationalQuadraticSpline": _spline,
    "MaskedSplineAutoregressive": _msa,
}
for _name in ("LeakyReLU", "Sigmoid", "Logit", "Linear", "Planar", "Radial"):
    BUILD[_name] = _not(f"zuko has no {_name} transform")


def build(T, P, dt):
    if T["type"] == "Sequential":
        return sequential(build)(T, P, dt)
    if "tails" in T and T["tails"] is None:
        raise NotMappable("zuko's MonotonicRQSTransform has identity tails outside [-B, B] and end derivatives 1; "
                          "a bounded spline (tails null, K+1 free derivatives) has no counterpart")
    if T["type"] not in BUILD:
        raise NotMappable(f"no zuko mapping for {T['type']}")
    return BUILD[T["type"]](T, P, dt)


def supports(case):
    try:
        import zuko  # noqa: F401
    except ImportError:
        return "zuko is not installed (pip install -e '.[peers]')"
    return T_.supports(build, case)


def run(case):
    return T_.run(build, case)
