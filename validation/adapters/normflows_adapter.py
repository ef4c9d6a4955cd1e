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

Image layers (images ``(N, C, H, W)``; normflows writes them in the sampling direction, so several run
backwards):

* ``Squeeze`` with ``order="channel_major"``: ``flows.Squeeze`` **in its inverse direction** (its ``forward``
  unsqueezes ``(4C, H, W) -> (C, 2H, 2W)``).
* ``ActNorm2d``: ``flows.ActNorm((C, 1, 1))`` (``z * exp(s) + t`` per channel, logdet ``H W sum(s)``): ``s``, ``t``
  of shape ``(1, C, 1, 1)`` are the case's ``log_scale``, ``shift``.
* ``Invertible1x1Conv``: ``flows.Invertible1x1Conv(C, use_lu=False)`` with ``W`` the case's, **inverse direction**
  (its ``inverse`` is ``conv2d(z, W)``, its ``forward`` ``conv2d(z, W^-1)`` with an explicit ``torch.inverse``).
* ``LUInvertible1x1Conv``: ``Invertible1x1Conv(C, use_lu=True)``, inverse direction, with ``P = I[perm]``,
  ``L = lower``, ``U = upper``, ``log_S = log_scale``, ``sign_S = sign`` (its ``W = P @ L @ U``: the case's).
* ``ImageAffineCoupling`` with ``mask="channel"`` (``parity`` 0/1: ``split_mode`` ``"channel"``/``"channel_inv"``):
  ``flows.AffineCouplingBlock``, the case's ConvNet as ``param_map`` (``nets.ConvNet2d`` with kernels ``(k, 1, k)``
  and the weights set, for ReLU and leaky ReLU; else the ConvNet in torch), its last layer's output channels
  reordered to normflows' interleaved ``[shift, raw scale]`` pairs.  ``shift_first=False``: the block's
  ``forward`` with ``scale_map`` ``"exp"``, ``"sigmoid"`` (``scale="neg_logsigmoid"``) or ``"sigmoid_inv"``
  (``"logsigmoid"``).  ``shift_first=True`` (openai Glow's ``(x + t) e^s``): the block's ``inverse``,
  ``(z2 - shift) * sigmoid(r + 2)`` (``"sigmoid"``: ``scale="logsigmoid"``), ``(z2 - shift) / sigmoid(r + 2)``
  (``"sigmoid_inv"``: ``"neg_logsigmoid"``) or ``(z2 - shift) exp(-r)`` (``"exp"``), with the net's last layer
  negated where normflows reads ``-t`` (and ``-r`` for ``exp``): negations, exact.  ``mask="checkerboard"`` with
  ``scale="exp"`` or the additive coupling: ``flows.MaskedAffineFlow(b, t, s)`` on the whole image (``b`` the
  case's checkerboard in every channel; its nets see ``b * z``, as the case's).  ``ImageAdditiveCoupling`` with
  the channel mask: ``AffineCouplingBlock(scale=False)``.
* **A Glow step**, ``ActNorm2d -> (LU)Invertible1x1Conv -> ImageAffineCoupling`` (channel mask, ``shift_first``,
  kernel 3, ReLU or leaky ReLU) inside a ``Sequential``: ``flows.GlowBlock`` **in its inverse direction** (its
  ``inverse`` is ActNorm's inverse, the convolution with ``W``, the coupling's inverse).  GlowBlock's ActNorm runs
  backwards, ``(z - t) exp(-s)``: ``s = -log_scale`` and ``t = -shift * exp(-log_scale)`` (Glow's
  ``(x + b') e^s`` with ``b' = shift e^-s``; ``t`` is rounded once, the one parameter change here that is not
  exact).
* ``MultiScale``: ``normflows.MultiscaleFlow`` (``inverse_and_log_det`` forward, ``forward_and_log_det`` inverse),
  stage ``s`` as its level ``S - 1 - s`` (one flow whose ``inverse`` is the stage), ``Merge("channel")`` for
  ``factor_out="second"`` (even channel counts: ``torch.chunk`` keeps the first ``ceil(C/2)``) and
  ``Merge("channel_inv")`` for ``"first"``; the latents ``z[S-1], ..., z[0]`` flattened and concatenated.
* ``Reshape``: ``torch.reshape`` (a relabelling, no arithmetic), inside a case with normflows layers.

Not mapped: the ``space_to_depth`` and ``checkerboard`` squeezes (normflows has one order); checkerboard
couplings with a scale other than ``exp`` (``MaskedAffineFlow`` has only ``exp``; normflows' own checkerboard
``Split`` gathers half the entries into a half-width tensor, another map); other coupling scales (``tanh``,
``sigmoid``, ``softplus``, ``softclip``); ``MaskedConv2d``.
"""
import numpy as np

from . import Unavailable
from ._images import SQUEEZE_PEER_ORDER, checkerboard, convnet, latent_shapes, n_transformed, out_shape
from ._images import raw_scale_and_shift, refuse_relabelling_only, reshape
from ._torch import NotMappable, chain, mlp, net_module, run as _run, set_nflows_lu, set_tensor, sub
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


# --- image layers ---------------------------------------------------------------------------------------

def _zero_logdet(module_fn):
    """normflows' reshaping flows return the Python int 0 as their logdet: a tensor of zeros instead."""
    import torch

    def f(v):
        out, ld = module_fn(v)
        return out, (ld if torch.is_tensor(ld) else torch.zeros(v.shape[0], dtype=v.dtype))
    return f


def _squeeze(T, P, dt):
    from normflows.flows import Squeeze
    if T["order"] != SQUEEZE_PEER_ORDER:
        raise NotMappable(f"normflows' Squeeze has one order, o = 4c + 2di + dj (channel_major); "
                          f"order={T['order']!r} has no counterpart")
    m = Squeeze()
    return _zero_logdet(m.inverse), _zero_logdet(m.forward)        # its forward unsqueezes


def _set_actnorm(m, s, t):
    import torch
    m.data_dep_init_done = torch.tensor(1.0)
    C = s.shape[0]
    set_tensor(m, "s", s.view(1, C, 1, 1))
    set_tensor(m, "t", t.view(1, C, 1, 1))


def _actnorm2d(T, P, dt):
    from normflows.flows import ActNorm
    m = ActNorm((T["event_shape"][0], 1, 1))
    _set_actnorm(m, P["log_scale"], P["shift"])
    return _t(m)


def _set_conv(m, T, P, dt):
    """Load a case's ``Invertible1x1Conv`` / ``LUInvertible1x1Conv`` into normflows' ``Invertible1x1Conv``."""
    import torch
    if T["type"] == "Invertible1x1Conv":
        set_tensor(m, "W", P["W"])
        return
    C = T["event_shape"][0]
    set_tensor(m, "P", torch.eye(C, dtype=dt)[torch.as_tensor(np.asarray(T["perm"]))])    # (P v)_i = v_perm[i]
    set_tensor(m, "L", P["lower"])
    set_tensor(m, "U", P["upper"])
    set_tensor(m, "log_S", P["log_scale"])
    set_tensor(m, "sign_S", torch.as_tensor(np.asarray(T["sign"]), dtype=dt))
    set_tensor(m, "eye", torch.eye(C, dtype=dt))


def _conv1x1(T, P, dt):
    from normflows.flows import Invertible1x1Conv
    m = Invertible1x1Conv(T["event_shape"][0], use_lu=T["type"] == "LUInvertible1x1Conv")
    _set_conv(m, T, P, dt)
    return (lambda x: m.inverse(x)), (lambda y: m(y))                # normflows' forward applies W^-1


def _coupling_map(T):
    """``(scale_map, inverse_direction, r_sign, t_sign)``: how normflows' AffineCoupling computes the case's
    coupling (see the module docstring)."""
    scale, first = T["scale"], T["shift_first"]
    maps = ({"exp": "exp", "logsigmoid": "sigmoid", "neg_logsigmoid": "sigmoid_inv"} if first
            else {"exp": "exp", "neg_logsigmoid": "sigmoid", "logsigmoid": "sigmoid_inv"})
    if scale not in maps:
        raise NotMappable(f"normflows' affine couplings have the scale maps exp, sigmoid and sigmoid_inv "
                          f"(npflows' exp, neg_logsigmoid, logsigmoid); scale={scale!r} has none")
    r_sign = -1.0 if first and scale == "exp" else 1.0         # (z2 - shift) exp(-r): r = -(case's r)
    return maps[scale], first, r_sign, -1.0 if first else 1.0   # shift = -t in the inverse direction


def _last_layer(T, P, order, sign, dt):
    """The case's parameters with the net's last layer reordered (``order``) and negated (``sign``)."""
    import torch
    Q = dict(P)
    sg = torch.as_tensor(sign, dtype=dt)
    Q["net.W2"] = P["net.W2"][torch.as_tensor(order)] * sg[:, None, None, None]
    Q["net.b2"] = P["net.b2"][torch.as_tensor(order)] * sg
    return Q


def _glow_net(T, P, net_module_in):
    """``net_module_in`` (a normflows ``nets.ConvNet2d`` of the case's sizes, or None) loaded with the case's
    ConvNet weights; the ConvNet in torch where normflows' net has no such activation."""
    if net_module_in is None:
        return net_module(convnet(P, T))
    convs = [m for m in net_module_in.net if type(m).__name__ == "Conv2d"]
    for l, c in enumerate(convs):
        set_tensor(c, "weight", P[f"net.W{l}"])
        set_tensor(c, "bias", P[f"net.b{l}"])
    return net_module_in


LEAKY = {"relu": 0.0, "leaky_relu": 0.01}     # normflows' ConvNet2d: LeakyReLU(leaky) between its layers


def _conv_net2d(T, c_in, c_out):
    from normflows.nets import ConvNet2d
    if T["activation"] not in LEAKY:
        return None
    k = T["kernel"]
    return ConvNet2d((c_in, T["hidden"], T["hidden"], c_out), (k, 1, k), leaky=LEAKY[T["activation"]])


def _image_coupling(T, P, dt):
    from normflows.flows import AffineCouplingBlock, MaskedAffineFlow
    additive = T["type"] == "ImageAdditiveCoupling"
    C, K = T["event_shape"][0], n_transformed(T)
    if T["mask"] == "checkerboard":
        if not additive and T["scale"] != "exp":
            raise NotMappable(f"normflows' MaskedAffineFlow (a masked image) has only the exp scale, and its "
                              f"checkerboard Split is another map; checkerboard with scale={T['scale']!r}")
        net = convnet(P, T)
        b = checkerboard(T, dt)
        if additive:
            return _t(MaskedAffineFlow(b, t=net_module(net)))
        r, t = raw_scale_and_shift(T, K)
        sg = -1.0 if T["shift_first"] else 1.0          # shift_first: its inverse, (z - trans) exp(-scale)
        m = MaskedAffineFlow(b, t=net_module(lambda h: sg * net(h)[:, t]), s=net_module(lambda h: sg * net(h)[:, r]))
        return ((lambda x: m.inverse(x)), (lambda y: m(y))) if T["shift_first"] else _t(m)
    mode = "channel" if T["parity"] == 0 else "channel_inv"
    c_in = C - K
    if additive:
        net = _glow_net(T, P, _conv_net2d(T, c_in, K))
        return _t(AffineCouplingBlock(net, scale=False, split_mode=mode))
    scale_map, inverse, r_sign, t_sign = _coupling_map(T)
    r, t = raw_scale_and_shift(T, K)
    order = np.ravel(np.column_stack([t, r]))                          # [t_0, r_0, t_1, r_1, ...]
    sign = np.ravel(np.column_stack([np.full(K, t_sign), np.full(K, r_sign)]))
    net = _glow_net(T, _last_layer(T, P, order, sign, dt), _conv_net2d(T, c_in, 2 * K))
    m = AffineCouplingBlock(net, scale=True, scale_map=scale_map, split_mode=mode)
    return ((lambda x: m.inverse(x)), (lambda y: m(y))) if inverse else _t(m)


def _is_glow_step(layers):
    """Is ``layers`` (three transform descriptions) a step that normflows' GlowBlock computes?"""
    a, c, k = layers
    return (a["type"] == "ActNorm2d" and c["type"] in ("Invertible1x1Conv", "LUInvertible1x1Conv")
            and k["type"] == "ImageAffineCoupling" and k["mask"] == "channel" and k["shift_first"]
            and k["scale"] in ("exp", "logsigmoid", "neg_logsigmoid") and k["kernel"] == 3
            and k["activation"] in LEAKY and a["event_shape"][0] > 1
            and a["event_shape"] == c["event_shape"] == k["event_shape"])


def _glow_block(layers, P, dt):
    """``flows.GlowBlock`` for a Glow step ``[ActNorm2d, 1x1 conv, coupling]`` (keys ``"0."``, ``"1."``, ``"2."``),
    in its inverse direction."""
    import torch
    from normflows.flows import GlowBlock
    a, c, k = layers
    C, K = k["event_shape"][0], n_transformed(k)
    scale_map, _, r_sign, t_sign = _coupling_map(k)
    m = GlowBlock(C, k["hidden"], scale=True, scale_map=scale_map,
                  split_mode="channel" if k["parity"] == 0 else "channel_inv", leaky=LEAKY[k["activation"]],
                  init_zeros=True, use_lu=c["type"] == "LUInvertible1x1Conv")
    coupling, conv, actnorm = m.flows
    r, t = raw_scale_and_shift(k, K)
    order = np.ravel(np.column_stack([t, r]))
    sign = np.ravel(np.column_stack([np.full(K, t_sign), np.full(K, r_sign)]))
    _glow_net(k, _last_layer(k, sub(P, "2."), order, sign, dt), coupling.flows[1].param_map)
    _set_conv(conv, c, sub(P, "1."), dt)
    s, b = P["0.log_scale"], P["0.shift"]
    _set_actnorm(actnorm, -s, -b * torch.exp(-s))              # its inverse (z - t) e^-s is x e^s + shift
    return (lambda x: m.inverse(x)), (lambda y: m(y))


def _sequential(T, P, dt):
    """``Sequential``, with every Glow step in it as one ``GlowBlock``."""
    layers, parts, i = T["layers"], [], 0
    while i < len(layers):
        if i + 3 <= len(layers) and _is_glow_step(layers[i:i + 3]):
            Q = {f"{j}.{key}": v for j in range(3) for key, v in sub(P, f"{i + j}.").items()}
            parts.append(_glow_block(layers[i:i + 3], Q, dt))
            i += 3
        else:
            parts.append(build(layers[i], sub(P, f"{i}."), dt))
            i += 1
    missing = [g for _, g in parts if isinstance(g, Unavailable)]
    if missing:
        return chain([(f, None) for f, _ in parts])[0], Unavailable(f"a layer: {missing[0].reason}")
    return chain(parts)


def _multiscale(T, P, dt):
    import torch
    from normflows import MultiscaleFlow
    from normflows.flows import Flow, Merge
    S = len(T["stages"])
    if T["factor_out"] == "second":
        odd = [i for i, st in enumerate(T["stages"][:-1]) if out_shape(st)[0] % 2]
        if odd:
            raise NotMappable(f"normflows' Merge('channel') goes on with the first ceil(C/2) channels; "
                              f"factor_out='second' goes on with the first floor(C/2): stage {odd[0]} has odd C")
    parts = [build(st, sub(P, f"{i}."), dt) for i, st in enumerate(T["stages"])]
    if any(isinstance(g, Unavailable) for _, g in parts):
        raise NotMappable("a stage has no inverse in normflows")

    class Stage(Flow):                    # normflows' sampling direction: its inverse is the stage
        def __init__(self, f, g):
            super().__init__()
            self.f, self.g = f, g

        def forward(self, z):
            return self.g(z)

        def inverse(self, z):
            return self.f(z)
    mode = "channel" if T["factor_out"] == "second" else "channel_inv"
    m = MultiscaleFlow([torch.nn.Identity() for _ in range(S)], [[Stage(*parts[S - 1 - i])] for i in range(S)],
                       [Merge(mode) for _ in range(S - 1)], class_cond=False)
    shapes = latent_shapes(T)
    sizes = [int(np.prod(s)) for s in shapes]

    def forward(x):
        z, ld = m.inverse_and_log_det(x)
        return torch.cat([z[S - 1 - s].reshape(x.shape[0], -1) for s in range(S)], dim=1), ld

    def inverse(y):
        pieces = torch.split(y, sizes, dim=1)
        z = [None] * S
        for s in range(S):
            z[S - 1 - s] = pieces[s].reshape(y.shape[0], *shapes[s])
        return m.forward_and_log_det(z)
    return forward, inverse


BUILD.update({
    "Squeeze": _squeeze, "ActNorm2d": _actnorm2d, "Invertible1x1Conv": _conv1x1, "LUInvertible1x1Conv": _conv1x1,
    "ImageAffineCoupling": _image_coupling, "ImageAdditiveCoupling": _image_coupling,
    "MultiScale": _multiscale, "Reshape": reshape,
    "MaskedConv2d": _not("normflows has no masked convolution flow"),
})


def build(T, P, dt):
    if T["type"] == "Sequential":
        return _sequential(T, P, dt)
    if T["type"] not in BUILD:
        raise NotMappable(f"no normflows mapping for {T['type']}")
    return BUILD[T["type"]](T, P, dt)


def supports(case):
    try:
        import normflows  # noqa: F401
    except ImportError:
        return "normflows is not installed (pip install -e '.[peers]')"
    try:
        refuse_relabelling_only(case["transform"], "normflows")
    except NotMappable as e:
        return str(e)
    import warnings
    with warnings.catch_warnings():             # Invertible1x1Conv's constructor calls the deprecated torch.lu
        warnings.simplefilter("ignore")
        return _supports(build, case)


def run(case):
    return _run(build, case)
