"""nflows 0.14 (Durkan, Bekasov, Murray, Papamakarios): the cases whose parameterisation maps onto it.

Mappings (npflows case -> nflows), each exact to rounding:

* ``ActNorm``, ``ElementwiseAffine``: ``transforms.ActNorm`` (``log_scale``, ``shift``; shift 0 without one).
* ``LULinear``: ``transforms.LULinear`` then ``transforms.Permutation(perm)``: ``lower_entries`` and
  ``upper_entries`` are the strict triangles, ``unconstrained_upper_diag = softplus^-1(exp(log_scale) - 1e-3)``
  (only when ``exp(log_scale) > 1e-3``), nflows' bias is ``bias[argsort(perm)]``.
* ``Linear``: ``transforms.NaiveLinear`` (``_weight``, ``bias``).
* ``Permutation``, ``LeakyReLU``, ``Sigmoid``: the classes of the same names; ``Logit`` with ``alpha = 0``:
  ``transforms.Logit``, with ``alpha > 0``: ``PointwiseAffineTransform(alpha, 1 - 2 alpha)`` then ``Logit``.
* ``AffineCoupling`` with ``scale="sigmoid"`` (nflows' only scale), ``AdditiveCoupling``, ``SplineCoupling``:
  nflows' coupling classes with the mask complemented (nflows transforms where ``mask > 0``) and the case's
  MLP as ``transform_net`` (for the affine coupling its output columns reordered to nflows' shift-then-scale).
* ``RationalQuadraticSpline``: ``splines.unconstrained_rational_quadratic_spline`` with linear tails; a
  bounded one (``tails: null``, ``interval [l, r]``): ``splines.rational_quadratic_spline`` with ``left = bottom = l``,
  ``right = top = r`` (K+1 free derivatives).  A bounded ``SplineCoupling`` on [0, 1]:
  ``PiecewiseRationalQuadraticCouplingTransform(tails=None)``.
* ``MaskedAffineAutoregressive`` with ``update="affine"``, ``scale="softplus"`` (nflows' scale
  ``softplus(r) + 1e-3``): ``transforms.MaskedAffineAutoregressiveTransform`` with the case's MADE (masked
  MLP, any order) as ``autoregressive_net``, its output columns interleaved to nflows' per-feature
  ``[raw scale, shift]`` layout (``view(-1, D, 2)``).  nflows' inverse makes its own D passes from 0.
* ``Sequential`` of mappable layers.
* Conditional cases (a ``context``): the transform is called with nflows' ``context=``, which its couplings
  and MAF hand to the network as ``transform_net(x1, context)``; the case's network appends it to its input,
  ``[x1, c]`` (README "Context").  nflows' own conditional MADE cannot match the cases' (README finding 8).

Image layers (images ``(N, C, H, W)``):

* ``Squeeze`` with ``order="channel_major"``: ``transforms.SqueezeTransform(2)`` (the same order; nflows has no
  other).
* ``ActNorm2d``: ``transforms.ActNorm(C)`` on 4-D input (``scale * x + shift`` per channel, logdet
  ``H W sum(log_scale)``; the same names).
* ``LUInvertible1x1Conv``: ``transforms.OneByOneConvolution(C)`` with its permutation set to the identity
  (nflows permutes the channels *before* its ``L U``; the case permutes after, ``W = P L M``), then
  ``transforms.Permutation(perm, dim=1)``; ``lower_entries``/``upper_entries``/``unconstrained_upper_diag``
  as for ``LULinear`` (only where ``exp(log_scale) > 1e-3``), bias 0.  nflows' diagonal ``softplus(u) + 1e-3``
  is positive, so a case with Glow's signs ``sign[c] = -1`` enters as ``M = (U D + diag(exp(log_scale))) D``,
  ``D = diag(sign)``: the channels with sign -1 are negated before nflows' layer and its ``upper_entries`` are
  the case's ``upper`` with column ``j`` times ``sign[j]`` (negations: exact).
* ``ImageAffineCoupling`` with ``mask="channel"``, ``scale="sigmoid"`` (nflows' ``sigmoid(r + 2) + 1e-3``),
  ``shift_first=False``, and ``ImageAdditiveCoupling`` with ``mask="channel"``: ``AffineCouplingTransform`` /
  ``AdditiveCouplingTransform`` on 4-D input with the mask complemented (1 = transformed channel) and the case's
  ConvNet as ``transform_net``, its output channels reordered to nflows' ``[shift | raw scale]``.
* ``MultiScale`` with ``factor_out="first"``: ``transforms.MultiscaleCompositeTransform(S, split_dim=1)`` (its
  ``torch.chunk`` puts out the first ``ceil(C/2)`` channels, and its output is flat, row-major, in the order of
  the stages), each stage a mapped transform.
* ``Reshape``: ``torch.reshape`` (a relabelling, no arithmetic), inside a case with nflows layers only.

Not mapped: ``Invertible1x1Conv`` (a dense ``W``: nflows' only 1x1 convolution stores LU factors, which cannot
hold a general ``W`` exactly), the ``space_to_depth`` and ``checkerboard`` squeezes, checkerboard couplings
(nflows' coupling mask is a 1-D mask over the channels), other coupling scales or ``shift_first``,
``MultiScale(factor_out="second")``, ``MaskedConv2d``.
"""
import numpy as np

from ._images import SQUEEZE_PEER_ORDER, convnet, n_transformed, out_shape, raw_scale_and_shift
from ._images import refuse_relabelling_only, reshape
from ._torch import NotMappable, current_context, mlp, net_module, run as _run, sequential, set_nflows_lu, set_tensor, sub
from ._torch import supports as _supports

NAME = "nflows"
TAKES_CONTEXT = True     # conditional couplings: the context goes through nflows' context= to the network


def _t(module, ctx=None):
    """``(forward, inverse)`` of an nflows transform; ``ctx``: a conditional case's context, passed to every
    call as nflows' ``context=`` (its couplings and MAF hand it to the network, see ``net_module``)."""
    if ctx is None:
        return (lambda x: module(x)), (lambda y: module.inverse(y))
    return (lambda x: module(x, context=ctx)), (lambda y: module.inverse(y, context=ctx))


def _actnorm(T, P, dt):
    import torch
    from nflows.transforms import ActNorm
    m = ActNorm(T["dim"])
    m.eval()
    m.initialized.fill_(True)
    set_tensor(m, "log_scale", P["log_scale"])
    set_tensor(m, "shift", P["shift"] if "shift" in P else torch.zeros(T["dim"], dtype=dt))
    return _t(m)


def _lu(T, P, dt):
    import torch
    from nflows.transforms import LULinear, Permutation
    D, perm = T["dim"], np.asarray(T["perm"])
    m = LULinear(D, identity_init=True)
    set_nflows_lu(m, P, perm, "nflows' LULinear")
    p = Permutation(torch.as_tensor(perm))

    def forward(x):
        z, l1 = m(x)
        y, l2 = p(z)
        return y, l1 + l2

    def inverse(y):
        z, l2 = p.inverse(y)
        x, l1 = m.inverse(z)
        return x, l1 + l2
    return forward, inverse


def _linear(T, P, dt):
    from nflows.transforms import NaiveLinear
    m = NaiveLinear(T["dim"], orthogonal_initialization=False)
    set_tensor(m, "_weight", P["W"])
    set_tensor(m, "bias", P["b"])
    return _t(m)


def _perm(T, P, dt):
    import torch
    from nflows.transforms import Permutation
    return _t(Permutation(torch.as_tensor(np.asarray(T["perm"]))))


def _leaky(T, P, dt):
    from nflows.transforms import LeakyReLU
    return _t(LeakyReLU(negative_slope=T["slope"]))


def _sigmoid(T, P, dt):
    from nflows.transforms import Sigmoid
    return _t(Sigmoid())


def _logit(T, P, dt):
    import torch
    from nflows.transforms import CompositeTransform, Logit, PointwiseAffineTransform
    if T["alpha"] == 0.0:
        return _t(Logit())
    a = T["alpha"]
    return _t(CompositeTransform([PointwiseAffineTransform(torch.tensor(a, dtype=dt), torch.tensor(1 - 2 * a, dtype=dt)),
                                  Logit()]))


def _coupling_net(T, P, order=None):
    net = mlp(P, len(T["hidden"]) + 1, T["activation"])
    if order is None:
        return lambda n_in, n_out: net_module(net)
    return lambda n_in, n_out: net_module(lambda h: net(h)[:, order])


def _affine(T, P, dt):
    from nflows.transforms import AffineCouplingTransform
    if T["scale"] != "sigmoid":
        raise NotMappable(f"nflows' AffineCouplingTransform makes its scale as sigmoid(r + 2) + 1e-3; "
                          f"scale={T['scale']!r} has no counterpart")
    mask = np.asarray(T["mask"])
    d2 = int((mask == 0).sum())
    order = np.r_[np.arange(d2, 2 * d2), np.arange(d2)]       # nflows reads [shift, raw scale]
    return _t(AffineCouplingTransform(1 - mask, _coupling_net(T, P, order)), current_context(T))


def _additive(T, P, dt):
    from nflows.transforms import AdditiveCouplingTransform
    return _t(AdditiveCouplingTransform(1 - np.asarray(T["mask"]), _coupling_net(T, P)), current_context(T))


def _bounded(T):
    return "tails" in T and T["tails"] is None


def _spline_kw(T):
    dom = dict(tails="linear", tail_bound=T["bound"]) if not _bounded(T) else dict(tails=None)
    return dict(num_bins=T["n_bins"], **dom, min_bin_width=T["min_bin_width"],
                min_bin_height=T["min_bin_height"], min_derivative=T["min_derivative"])


def _spline_coupling(T, P, dt):
    from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform
    if _bounded(T) and list(T["interval"]) != [0.0, 1.0]:
        raise NotMappable("nflows' coupling with tails=None lives on [0, 1]; this case's interval is "
                          f"{T['interval']}")
    return _t(PiecewiseRationalQuadraticCouplingTransform(1 - np.asarray(T["mask"]), _coupling_net(T, P),
                                                          **_spline_kw(T)), current_context(T))


def _spline(T, P, dt):
    from nflows.transforms.splines.rational_quadratic import rational_quadratic_spline
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline
    kw = _spline_kw(T)
    kw.pop("num_bins")
    if _bounded(T):                 # nflows' bounded spline: [left, right] onto [bottom, top], K+1 derivatives
        left, right = T["interval"]
        kw = dict(left=left, right=right, bottom=left, top=right, min_bin_width=T["min_bin_width"],
                  min_bin_height=T["min_bin_height"], min_derivative=T["min_derivative"])
        rqs = rational_quadratic_spline
    else:
        rqs = unconstrained_rational_quadratic_spline

    def apply(v, inverse):
        n = v.shape[0]
        e = lambda a: a.unsqueeze(0).expand(n, *a.shape)
        out, ld = rqs(v, e(P["raw_widths"]), e(P["raw_heights"]), e(P["raw_derivatives"]), inverse=inverse, **kw)
        return out, ld.sum(dim=1)
    return (lambda x: apply(x, False)), (lambda y: apply(y, True))


def _maa(T, P, dt):
    import torch
    from nflows.transforms import MaskedAffineAutoregressiveTransform
    if T["update"] != "affine" or T["scale"] != "softplus":
        what = "the gated update" if T["update"] != "affine" else f"scale={T['scale']!r}"
        raise NotMappable("nflows 0.14's MaskedAffineAutoregressiveTransform makes its scale as "
                          f"softplus(r) + 1e-3 (npflows' scale='softplus'); {what} has no counterpart")
    D = T["dim"]
    masks = [torch.as_tensor(np.asarray(m), dtype=dt) for m in T["masks"]]
    net = mlp(P, len(T["hidden"]) + 1, T["activation"], masks=masks)
    order = np.ravel(np.column_stack([np.arange(D), np.arange(D, 2 * D)]))   # [r_0, t_0, r_1, t_1, ...]
    m = MaskedAffineAutoregressiveTransform(features=D, hidden_features=1, num_blocks=1,
                                            use_residual_blocks=False)
    m.autoregressive_net = net_module(lambda h: net(h)[:, order])
    return _t(m, current_context(T))


def _not(reason):
    def f(T, P, dt):
        raise NotMappable(reason)
    return f


BUILD = {
    "ActNorm": _actnorm, "ElementwiseAffine": _actnorm, "LULinear": _lu, "Linear": _linear,
    "Permutation": _perm, "LeakyReLU": _leaky, "Sigmoid": _sigmoid, "Logit": _logit,
    "AffineCoupling": _affine, "AdditiveCoupling": _additive, "SplineCoupling": _spline_coupling,
    "RationalQuadraticSpline": _spline,
    "MaskedAffineAutoregressive": _maa,
    "MaskedSplineAutoregressive": _not("nflows' MADE has equal hidden widths, its own degrees and a per-feature "
                                       "output layout; not mapped"),
    "Planar": _not("nflows has no planar flow"), "Radial": _not("nflows has no radial flow"),
}


# --- image layers ---------------------------------------------------------------------------------------

def _squeeze(T, P, dt):
    from nflows.transforms import SqueezeTransform
    if T["order"] != SQUEEZE_PEER_ORDER:
        raise NotMappable(f"nflows' SqueezeTransform has one order, o = 4c + 2di + dj (channel_major); "
                          f"order={T['order']!r} has no counterpart")
    return _t(SqueezeTransform(factor=2))


def _actnorm2d(T, P, dt):
    from nflows.transforms import ActNorm
    m = ActNorm(T["event_shape"][0])
    m.eval()
    m.initialized.fill_(True)
    set_tensor(m, "log_scale", P["log_scale"])
    set_tensor(m, "shift", P["shift"])
    return _t(m)


def _lu_conv(T, P, dt):
    import torch
    from nflows.transforms import OneByOneConvolution, Permutation
    C = T["event_shape"][0]
    sign = torch.as_tensor(np.asarray(T["sign"]), dtype=dt)
    m = OneByOneConvolution(C)
    m.permutation = Permutation(torch.arange(C), dim=1)       # nflows' permutation comes first: identity here
    # M = U + diag(sign exp(s)) = (U D + diag(exp(s))) D with D = diag(sign): nflows' diagonal is positive
    Q = {"lower": P["lower"], "upper": P["upper"] * sign[None, :], "log_scale": P["log_scale"],
         "bias": torch.zeros(C, dtype=dt)}
    set_nflows_lu(m, Q, np.arange(C), "nflows' OneByOneConvolution (its LULinear)")
    p = Permutation(torch.as_tensor(np.asarray(T["perm"])), dim=1)
    flip = sign.view(1, C, 1, 1)

    def forward(x):
        z, l1 = m(x * flip)
        y, l2 = p(z)
        return y, l1 + l2

    def inverse(y):
        z, l2 = p.inverse(y)
        x, l1 = m.inverse(z)
        return x * flip, l1 + l2
    return forward, inverse


def _image_coupling(T, P, dt):
    from nflows.transforms import AdditiveCouplingTransform, AffineCouplingTransform
    additive = T["type"] == "ImageAdditiveCoupling"
    if T["mask"] != "channel":
        raise NotMappable("nflows' couplings take a 1-D mask over the channels; the checkerboard has no "
                          "counterpart")
    if not additive and T["scale"] != "sigmoid":
        raise NotMappable(f"nflows' AffineCouplingTransform makes its scale as sigmoid(r + 2) + 1e-3; "
                          f"scale={T['scale']!r} has no counterpart")
    if not additive and T["shift_first"]:
        raise NotMappable("nflows' AffineCouplingTransform computes x * scale + shift; shift_first "
                          "((x + t) * scale) has no counterpart")
    C, K = T["event_shape"][0], n_transformed(T)
    k = (C + 1) // 2
    mask = np.r_[np.zeros(k, int), np.ones(C - k, int)] if T["parity"] == 0 else np.r_[np.ones(k, int),
                                                                                        np.zeros(C - k, int)]
    net = convnet(P, T)
    if additive:
        return _t(AdditiveCouplingTransform(mask, lambda n_in, n_out: net_module(net)))
    r, t = raw_scale_and_shift(T, K)
    order = np.r_[t, r]                                          # nflows reads [shift | raw scale]
    return _t(AffineCouplingTransform(mask, lambda n_in, n_out: net_module(lambda h: net(h)[:, order])))


def _stage(fwd, inv):
    """An nflows ``Transform`` around a mapped transform's two directions."""
    from nflows.transforms.base import Transform

    class Stage(Transform):
        def forward(self, inputs, context=None):
            return fwd(inputs)

        def inverse(self, inputs, context=None):
            return inv(inputs)
    return Stage()


def _multiscale(T, P, dt):
    from nflows.transforms import MultiscaleCompositeTransform
    if T["factor_out"] != "first":
        raise NotMappable("nflows' MultiscaleCompositeTransform puts out the first torch.chunk of every stage "
                          "(factor_out='first'); factor_out='second' has no counterpart")
    m = MultiscaleCompositeTransform(len(T["stages"]), split_dim=1)
    for i, st in enumerate(T["stages"]):
        m.add_transform(_stage(*build(st, sub(P, f"{i}."), dt)), out_shape(st))
    return _t(m)


BUILD.update({
    "Squeeze": _squeeze, "ActNorm2d": _actnorm2d, "LUInvertible1x1Conv": _lu_conv,
    "ImageAffineCoupling": _image_coupling, "ImageAdditiveCoupling": _image_coupling,
    "MultiScale": _multiscale, "Reshape": reshape,
    "Invertible1x1Conv": _not("nflows has no dense 1x1 convolution: OneByOneConvolution stores LU factors "
                              "(L U applied after a permutation, diagonal softplus(u) + 1e-3), which cannot hold a "
                              "general W exactly"),
    "MaskedConv2d": _not("nflows has no masked convolution flow"),
})


def build(T, P, dt):
    if T["type"] == "Sequential":
        return sequential(build)(T, P, dt)
    if T["type"] not in BUILD:
        raise NotMappable(f"no nflows mapping for {T['type']}")
    return BUILD[T["type"]](T, P, dt)


def supports(case):
    try:
        import nflows  # noqa: F401
    except ImportError:
        return "nflows is not installed (pip install -e '.[peers]')"
    try:
        refuse_relabelling_only(case["transform"], "nflows")
    except NotMappable as e:
        return str(e)
    return _supports(build, case)


def run(case):
    return _run(build, case)
