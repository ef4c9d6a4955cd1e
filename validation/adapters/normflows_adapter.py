"""normflows 1.7 (Stimper, Liu, Campbell, Fortuin, Schölkopf, Hernández-Lobato 2023): the cases whose
parameterisation maps onto it.

normflows' ``Flow.forward`` is the direction the cases call forward for every mapped transform except the
dense linear map (below); ``Flow.inverse`` is their inverse.  Mappings (npflows case -> normflows), each
exact to rounding:

* ``ActNorm``, ``ElementwiseAffine``: ``flows.ActNorm`` / ``flows.AffineConstFlow`` (``z * exp(s) + t``,
  parameters ``s``, ``t`` of shape ``(1, D)``: the case's ``log_scale`` and ``shift``; ``shift=False``
  without one); the data-dependent initialisation is marked done.
* ``Permutation``: ``flows.Permute(D, mode="shuffle")`` with its ``perm`` and ``inv_perm`` buffers set.
* ``LULinear``: ``flows.mixing._LULinear`` (nflows' LU layer, used by normflows' ``LULinearPermute``) then
  ``flows.mixing._Permutation(perm)``, as in the nflows adapter: ``lower_entries``/``upper_entries`` the
  strict triangles, ``unconstrained_upper_diag = softplus^-1(exp(log_scale) - 1e-3)`` (only where
  ``exp(log_scale) > 1e-3``), bias ``bias[argsort(perm)]``.  (``LULinearPermute`` itself permutes before the
  LU product and draws its own permutation; ``InvertibleAffine(use_lu=True)`` has no bias.)
* ``Linear``: ``flows.InvertibleAffine(D, use_lu=False)`` **in its inverse direction** (its ``inverse`` is
  ``z @ W``, its ``forward`` ``z @ W^-1``) with ``W = case W^T``, then ``flows.AffineConstFlow(shape,
  scale=False)`` with ``t = b``.
* ``AffineCoupling``: with a half mask (``[1]*ceil(D/2) + [0]*floor(D/2)``: split ``"channel"``; its
  complement: ``"channel_inv"``) and ``scale`` ``exp``, ``neg_logsigmoid`` or ``logsigmoid``:
  ``flows.AffineCouplingBlock(param_map, scale_map=...)`` with ``scale_map`` ``"exp"``, ``"sigmoid"``
  (``z2 / sigmoid(r + 2) + t``) or ``"sigmoid_inv"`` (``z2 * sigmoid(r + 2) + t``), the case's MLP as
  ``param_map`` with its columns interleaved to normflows' ``[shift, raw scale]`` pairs (``param[:, 0::2]``
  is the shift).  With any other mask and ``scale="exp"``: ``flows.MaskedAffineFlow(b, t, s)`` (``b = 1``
  passes through, as in the cases), whose ``s`` and ``t`` nets are the case's MLP on the masked input's
  conditioning coordinates, scattered to the transformed ones.
* ``AdditiveCoupling``: ``AffineCouplingBlock(scale=False)`` on half masks, else ``MaskedAffineFlow(b, t)``.
* ``MaskedAffineAutoregressive`` with ``update="affine"``, ``scale="sigmoid"`` (normflows' scale
  ``sigmoid(r + 2) + 1e-3``): ``flows.MaskedAffineAutoregressive`` with the case's MADE as its
  ``autoregressive_net``, columns interleaved to the per-feature ``[raw scale, shift]`` layout.
* ``RationalQuadraticSpline``: ``utils.splines.unconstrained_rational_quadratic_spline`` (linear tails);
  ``SplineCoupling``: ``flows.PiecewiseRationalQuadraticCoupling`` (mask complemented: normflows transforms
  where ``mask > 0``); ``MaskedSplineAutoregressive``: ``flows.MaskedPiecewiseRationalQuadraticAutoregressive``
  with the case's MADE, columns reordered to normflows' per-feature ``(D, 3K - 1)`` layout (a net without
  ``hidden_features`` is not rescaled by normflows).
* ``Planar``: ``flows.Planar(D, act="tanh")`` (the same ``u_hat`` with ``m = log(1 + e^{w.u}) - 1``; ``w``,
  ``u`` of shape ``(1, D)``).  normflows' tanh planar flow has no inverse: declared unavailable.  With
  ``activation="leaky_relu"``: ``Planar(act="leaky_relu")`` with its ``h.negative_slope`` set to the case's
  ``slope`` (normflows' default 0.2), whose closed-form inverse is checked.
* ``Radial``: ``flows.Radial(D)``, which takes ``alpha = |alpha|`` and ``beta = softplus(beta) - |alpha|``:
  the case's ``alpha = softplus(alpha_raw)`` enters as normflows' ``alpha`` (positive, so ``|alpha|`` is
  itself) and ``beta_raw`` as its ``beta``; autograd through ``softplus`` gives the case's cotangents.  The
  cases of npflows' ``Radial(alpha="abs")`` are normflows' parameterisation itself: ``alpha = alpha_raw``.  No
  inverse: declared unavailable.
* ``Sequential`` of mappable layers.

normflows has no LeakyReLU, sigmoid or logit layer, no gated MAF update and no continuous flow.
"""
import numpy as np

from . import Unavailable
from ._torch import NotMappable, mlp, net_module, run as _run, sequential, set_nflows_lu, set_tensor
from ._torch import supports as _supports

NAME = "normflows"
NO_INVERSE = "normflows' {} has no inverse (Flow.inverse raises NotImplementedError)"


def _t(module):
    return (lambda x: module(x)), (lambda y: module.inverse(y))


def _softplus(v):
    import torch
    return torch.logaddexp(v, torch.zeros_like(v))


def _actnorm(T, P, dt):
    import torch
    from normflows.flows import ActNorm, AffineConstFlow
    D = T["dim"]
    if "shift" in P:
        m = ActNorm((D,))
        m.data_dep_init_done = torch.tensor(1.0)
        set_tensor(m, "t", P["shift"][None])
    else:
        m = AffineConstFlow((D,), shift=False)
        m.t = m.t.to(dt)
    set_tensor(m, "s", P["log_scale"][None])
    return _t(m)


def _perm(T, P, dt):
    import torch
    from normflows.flows import Permute
    perm = torch.as_tensor(np.asarray(T["perm"]))
    m = Permute(len(perm), mode="shuffle")
    set_tensor(m, "perm", perm)
    set_tensor(m, "inv_perm", torch.argsort(perm))
    return _t(m)


def _lu(T, P, dt):
    import torch
    from normflows.flows.mixing import _LULinear, _Permutation
    D, perm = T["dim"], np.asarray(T["perm"])
    m = _LULinear(D, identity_init=True)
    set_nflows_lu(m, P, perm, "normflows' LU layer (_LULinear)")
    p = _Permutation(torch.as_tensor(perm))

    def forward(x):
        z, l1 = m(x)
        y, _ = p(z)
        return y, l1

    def inverse(y):
        z, _ = p.inverse(y)
        return m.inverse(z)
    return forward, inverse


def _linear(T, P, dt):
    from normflows.flows import AffineConstFlow, InvertibleAffine
    D = T["dim"]
    m = InvertibleAffine(D, use_lu=False)
    set_tensor(m, "W", P["W"].T)                     # normflows' inverse: z @ W = case's x @ W^T
    b = AffineConstFlow((D,), scale=False)
    b.s = b.s.to(dt)
    set_tensor(b, "t", P["b"][None])

    def forward(x):
        z, l1 = m.inverse(x)
        y, l2 = b(z)
        return y, l1 + l2

    def inverse(y):
        z, l2 = b.inverse(y)
        x, l1 = m(z)
        return x, l1 + l2
    return forward, inverse


def _split_mode(mask):
    """normflows' ``Split`` mode that reproduces a coupling mask, or None."""
    D = mask.size
    first = (np.arange(D) < (D + 1) // 2).astype(int)
    if np.array_equal(mask, first):
        return "channel"
    if np.array_equal(mask, 1 - first):
        return "channel_inv"
    return None


SCALE_MAPS = {"exp": "exp", "neg_logsigmoid": "sigmoid", "logsigmoid": "sigmoid_inv"}


def _scattered(net, mask, cols, dt):
    """A module ``zm -> out`` of shape (N, D): ``net(zm[:, mask == 1])[:, cols]`` placed at ``mask == 0``."""
    import torch
    i1 = torch.as_tensor(np.flatnonzero(mask == 1))
    i2 = torch.as_tensor(np.flatnonzero(mask == 0))

    def f(zm):
        out = net(zm[:, i1])[:, cols]
        return torch.zeros(zm.shape, dtype=zm.dtype).index_copy(1, i2, out)
    return net_module(f)


def _coupling(T, P, dt):
    import torch
    from normflows.flows import AffineCouplingBlock, MaskedAffineFlow
    mask = np.asarray(T["mask"])
    d2 = int((mask == 0).sum())
    net = mlp(P, len(T["hidden"]) + 1, T["activation"])
    mode = _split_mode(mask)
    additive = T["type"] == "AdditiveCoupling"
    if not additive and T["scale"] not in SCALE_MAPS:
        raise NotMappable(f"normflows' affine couplings have the scale maps exp, sigmoid (= npflows' "
                          f"neg_logsigmoid) and sigmoid_inv (= logsigmoid); scale={T['scale']!r} has none")
    if mode is not None:
        if additive:
            return _t(AffineCouplingBlock(net_module(net), scale=False, split_mode=mode))
        order = np.ravel(np.column_stack([np.arange(d2, 2 * d2), np.arange(d2)]))   # [t_0, r_0, t_1, r_1, ...]
        return _t(AffineCouplingBlock(net_module(lambda h: net(h)[:, order]), scale=True,
                                      scale_map=SCALE_MAPS[T["scale"]], split_mode=mode))
    if not additive and T["scale"] != "exp":
        raise NotMappable(f"normflows' MaskedAffineFlow (any mask) has only the exp scale, and its "
                          f"AffineCouplingBlock splits in halves; mask {mask.tolist()} with scale={T['scale']!r}")
    b = torch.as_tensor(mask, dtype=dt)
    t = _scattered(net, mask, np.arange(d2) if additive else np.arange(d2, 2 * d2), dt)
    s = None if additive else _scattered(net, mask, np.arange(d2), dt)
    return _t(MaskedAffineFlow(b, t=t, s=s))


def _maa(T, P, dt):
    import torch
    from normflows.flows import MaskedAffineAutoregressive
    if T["update"] != "affine" or T["scale"] != "sigmoid":
        what = "the gated update" if T["update"] != "affine" else f"scale={T['scale']!r}"
        raise NotMappable("normflows' MaskedAffineAutoregressive makes its scale as sigmoid(r + 2) + 1e-3 "
                          f"(npflows' scale='sigmoid'); {what} has no counterpart")
    D = T["dim"]
    masks = [torch.as_tensor(np.asarray(m), dtype=dt) for m in T["masks"]]
    net = mlp(P, len(T["hidden"]) + 1, T["activation"], masks=masks)
    order = np.ravel(np.column_stack([np.arange(D), np.arange(D, 2 * D)]))   # [r_0, t_0, r_1, t_1, ...]
    m = MaskedAffineAutoregressive(D, 1, num_blocks=1, use_residual_blocks=False)
    m.autoregressive_net = net_module(lambda h: net(h)[:, order])
    return _t(m)


def _spline_kw(T):
    if T.get("tails", "linear") != "linear":
        raise NotMappable("normflows' spline layers take linear tails on [-B, B] only; this case is the "
                          "bounded spline (tails null) on an interval")
    return dict(num_bins=T["n_bins"], tails="linear", tail_bound=T["bound"], min_bin_width=T["min_bin_width"],
                min_bin_height=T["min_bin_height"], min_derivative=T["min_derivative"])


def _spline(T, P, dt):
    from normflows.utils.splines import unconstrained_rational_quadratic_spline as rqs
    kw = _spline_kw(T)
    kw.pop("num_bins")

    def apply(v, inverse):
        e = lambda a: a.unsqueeze(0).expand(v.shape[0], *a.shape)
        out, ld = rqs(v, e(P["raw_widths"]), e(P["raw_heights"]), e(P["raw_derivatives"]), inverse=inverse, **kw)
        return out, ld.sum(dim=1)
    return (lambda x: apply(x, False)), (lambda y: apply(y, True))


def _spline_coupling(T, P, dt):
    import torch
    from normflows.flows.neural_spline.coupling import PiecewiseRationalQuadraticCoupling
    net = mlp(P, len(T["hidden"]) + 1, T["activation"])
    return _t(PiecewiseRationalQuadraticCoupling(torch.as_tensor(1 - np.asarray(T["mask"])),
                                                 lambda n_in, n_out: net_module(net), **_spline_kw(T)))


def _msa(T, P, dt):
    import torch
    from normflows.flows.neural_spline.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressive as MSA
    D, K = T["dim"], T["n_bins"]
    masks = [torch.as_tensor(np.asarray(m), dtype=dt) for m in T["masks"]]
    net = mlp(P, len(T["hidden"]) + 1, T["activation"], masks=masks)
    k = 3 * K - 1
    order = (np.arange(k)[None, :] * D + np.arange(D)[:, None]).ravel()   # normflows' column i k + j = case's j D + i
    m = MSA(D, 1, num_blocks=1, use_residual_blocks=False, **_spline_kw(T))
    m.autoregressive_net = net_module(lambda h: net(h)[:, order])
    return _t(m)


def _planar(T, P, dt):
    from normflows.flows import Planar
    leaky = T.get("activation", "tanh") == "leaky_relu"
    m = Planar((T["dim"],), act="leaky_relu" if leaky else "tanh")
    set_tensor(m, "w", P["w"][None])
    set_tensor(m, "u", P["u"][None])
    set_tensor(m, "b", P["b"])
    if leaky:
        m.h.negative_slope = T["slope"]          # normflows' default 0.2; forward and inverse read it here
        return _t(m)
    return (lambda x: m(x)), Unavailable(NO_INVERSE.format("Planar with act='tanh'"))


def _radial(T, P, dt):
    import torch
    from normflows.flows import Radial
    m = Radial((T["dim"],))
    set_tensor(m, "z_0", P["z0"][None])
    if T.get("alpha", "softplus") == "abs":                      # npflows' Radial(alpha="abs"): normflows' own
        set_tensor(m, "alpha", P["alpha_raw"])
    else:
        set_tensor(m, "alpha", _softplus(P["alpha_raw"]))      # |alpha| = softplus(alpha_raw) > 0
    set_tensor(m, "beta", P["beta_raw"])
    m.d = m.d.to(torch.int64)
    return (lambda x: m(x)), Unavailable(NO_INVERSE.format("Radial"))


def _not(reason):
    def f(T, P, dt):
        raise NotMappable(reason)
    return f


BUILD = {
    "ActNorm": _actnorm, "ElementwiseAffine": _actnorm, "Permutation": _perm, "LULinear": _lu, "Linear": _linear,
    "AffineCoupling": _coupling, "AdditiveCoupling": _coupling, "MaskedAffineAutoregressive": _maa,
    "RationalQuadraticSpline": _spline, "SplineCoupling": _spline_coupling, "MaskedSplineAutoregressive": _msa,
    "Planar": _planar, "Radial": _radial,
    "CNF": _not("normflows has no continuous flow"),
}
for _name in ("LeakyReLU", "Sigmoid", "Logit"):
    BUILD[_name] = _not(f"normflows has no {_name} flow")


def build(T, P, dt):
    if T["type"] == "Sequential":
        return sequential(build)(T, P, dt)
    if T["type"] not in BUILD:
        raise NotMappable(f"no normflows mapping for {T['type']}")
    return BUILD[T["type"]](T, P, dt)


def supports(case):
    try:
        import normflows  # noqa: F401
    except ImportError:
        return "normflows is not installed (pip install -e '.[peers]')"
    return _supports(build, case)


def run(case):
    return _run(build, case)
