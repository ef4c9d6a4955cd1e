"""What the shared harness cannot say about the image couplings (npflows/bijectors/image_coupling.py): the
masks are the pictures of the docstring, the conditioning half passes through bit for bit, the network never
sees the transformed half, a zero-initialised layer is the identity, the peers' layouts and scale maps are
reproduced (openai's Glow transcribed, normflows' and nflows' own classes, each with an independent torch
network holding the same weights), bad structure is refused and overflow is diagnosed.

Tolerances: 1e-12 relative against the peers in float64 (the same formulas with the network evaluated by
another implementation: rounding only, ~1e-15, and a wrong layout or scale map is an O(1) error); the
structural properties are exact (bitwise).
"""
import numpy as np
import pytest

import npflows as nf
from npflows.bijectors.image_coupling import channel_halves, checkerboard_mask
from registry import perturbed


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def test_masks_are_the_docstring_pictures():
    assert checkerboard_mask((4, 4), 0).tolist() == [[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    assert checkerboard_mask((2, 3), 1).tolist() == [[1, 0, 1], [0, 1, 0]]
    assert channel_halves(4, 0) == (slice(0, 2), slice(2, 4))
    assert channel_halves(4, 1) == (slice(2, 4), slice(0, 2))
    assert channel_halves(3, 0) == (slice(0, 2), slice(2, 3))       # torch.chunk: the first half is ceil(C/2)
    assert channel_halves(3, 1) == (slice(2, 3), slice(0, 2))


def _layers():
    shape = (3, 4, 5)
    for cls in (nf.ImageAffineCoupling, nf.ImageAdditiveCoupling):
        for mask in ("checkerboard", "channel"):
            for parity in (0, 1):
                yield cls(shape, mask=mask, parity=parity, hidden=6)


def _conditioning(b):
    C, H, W = b.event_shape
    if b.mask == "channel":
        keep = np.zeros((C, H, W), bool)
        keep[b._ia] = True
        return keep
    return np.broadcast_to(checkerboard_mask((H, W), b.parity).astype(bool), (C, H, W))


@pytest.mark.parametrize("b", list(_layers()), ids=repr)
def test_conditioning_half_passes_through_and_the_net_never_sees_the_other(b):
    rng = np.random.default_rng(0)
    p = perturbed(b, rng, 0.3)
    x = rng.standard_normal((4,) + b.event_shape)
    keep = _conditioning(b)
    y, ld, _ = b.forward(p, x)
    assert np.array_equal(y[:, keep], x[:, keep])                    # bit for bit
    xi, _ = b.inverse(p, y)
    assert np.array_equal(xi[:, keep], x[:, keep])
    # moving the transformed entries moves the output there by exactly delta * e^s (affine) or delta
    # (additive), with s, t unchanged: the conditioner depends on the conditioning half only
    delta = np.where(keep, 0.0, rng.standard_normal(x.shape))
    y2, ld2, _ = b.forward(p, x + delta)
    assert np.array_equal(ld2, ld)
    assert np.array_equal(y2[:, keep], y[:, keep])
    if isinstance(b, nf.ImageAffineCoupling):
        _, _, logs, t, _ = b._params_of(p, x, np)
        full = lambda v: v if b.mask == "checkerboard" else np.concatenate(
            [np.zeros_like(x[:, b._ia]), v] if b.parity == 0 else [v, np.zeros_like(x[:, b._ia])], axis=1)
        np.testing.assert_allclose(y2 - y, delta * np.exp(full(logs)), rtol=1e-13, atol=1e-15)
    else:
        np.testing.assert_allclose(y2 - y, delta, rtol=0, atol=1e-14)   # (x + d + t) - (x + t): rounding of O(3) values


@pytest.mark.parametrize("scale", ["exp", "tanh", "softclip"])
@pytest.mark.parametrize("mask", ["checkerboard", "channel"])
def test_zero_init_is_the_identity(scale, mask):
    b = nf.ImageAffineCoupling((4, 2, 3), mask=mask, hidden=5, scale=scale)
    rng = np.random.default_rng(1)
    p = b.init(rng)
    x = rng.standard_normal((3, 4, 2, 3))
    y, ld, _ = b.forward(p, x)
    assert np.array_equal(y, x) and np.array_equal(ld, np.zeros(3))
    a = nf.ImageAdditiveCoupling((4, 2, 3), mask=mask, hidden=5)
    assert np.array_equal(a.forward(a.init(rng), x)[0], x)


def test_refuses_bad_structure():
    with pytest.raises(ValueError, match="ImageAffineCoupling: unknown mask"):
        nf.ImageAffineCoupling((2, 4, 4), mask="stripes")
    with pytest.raises(ValueError, match="parity"):
        nf.ImageAffineCoupling((2, 4, 4), parity=2)
    with pytest.raises(ValueError, match="layout"):
        nf.ImageAffineCoupling((2, 4, 4), layout="pairs")
    with pytest.raises(ValueError, match="scale"):
        nf.ImageAffineCoupling((2, 4, 4), scale="relu")
    with pytest.raises(ValueError, match="at least 2 channels"):
        nf.ImageAffineCoupling((1, 4, 4), mask="channel")
    with pytest.raises(ValueError, match="at least 2 pixels"):
        nf.ImageAdditiveCoupling((3, 1, 1), mask="checkerboard")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        nf.ImageAffineCoupling(16)
    with pytest.raises(ValueError, match="odd"):
        nf.ImageAffineCoupling((2, 4, 4), kernel=2)


def test_overflow_is_diagnosed():
    b = nf.ImageAffineCoupling((2, 4, 4), mask="channel", hidden=4)
    rng = np.random.default_rng(2)
    p = perturbed(b, rng, 0.3)
    p["net.b2"] = np.array([800.0, 0.0])                          # the log-scale reaches ~800: exp overflows
    x = rng.standard_normal((2, 2, 4, 4))
    with pytest.raises(FloatingPointError, match="ImageAffineCoupling forward.*log-scale reaches"):
        b.forward(p, x)


# ------------------------------------------------------------------------------------------------ peers
def _torch_net(b, p):
    """An independent torch network with the layer's weights: conv k, ReLU, conv 1x1, ReLU, conv k."""
    torch = pytest.importorskip("torch")
    net = b.net
    k = net.kernel
    f64 = dict(dtype=torch.float64)          # created in float64: copying into float32 weights would round them
    convs = [torch.nn.Conv2d(net.in_channels, net.hidden, k, padding=k // 2, **f64),
             torch.nn.Conv2d(net.hidden, net.hidden, 1, **f64),
             torch.nn.Conv2d(net.hidden, net.out_channels, k, padding=k // 2, **f64)]
    with torch.no_grad():
        for l, c in enumerate(convs):
            c.weight.copy_(torch.tensor(p[f"net.W{l}"]))
            c.bias.copy_(torch.tensor(p[f"net.b{l}"]))
    seq = torch.nn.Sequential(convs[0], torch.nn.ReLU(), convs[1], torch.nn.ReLU(), convs[2])
    return torch, seq


def _case(shape, seed, **kw):
    b = nf.ImageAffineCoupling(shape, hidden=5, **kw)
    rng = np.random.default_rng(seed)
    p = perturbed(b, rng, 0.3)
    return b, p, rng.standard_normal((3,) + shape)


def test_reproduces_openai_glow_coupling():
    """openai/glow model.py, revnet2d_step with flow_coupling=1, in NHWC:
    z1 = z[:, :, :, :n_z // 2]; z2 = z[:, :, :, n_z // 2:]; h = f("f1", z1, width, n_z);
    shift = h[:, :, :, 0::2]; scale = sigmoid(h[:, :, :, 1::2] + 2.); z2 += shift; z2 *= scale;
    logdet += sum(log(scale)); z = concat([z1, z2], 3)."""
    b, p, x = _case((4, 3, 3), 0, mask="channel", parity=0, scale="logsigmoid", layout="interleaved",
                    shift_first=True)
    torch, net = _torch_net(b, p)
    z = x.transpose(0, 2, 3, 1)                                   # NHWC, as openai's code
    n_z = z.shape[3]
    z1, z2 = z[:, :, :, :n_z // 2], z[:, :, :, n_z // 2:]
    h = net(torch.tensor(z1.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    shift, scale = h[:, :, :, 0::2], 1.0 / (1.0 + np.exp(-(h[:, :, :, 1::2] + 2.0)))
    z2 = (z2 + shift) * scale
    logdet = np.log(scale).sum(axis=(1, 2, 3))
    ref = np.concatenate([z1, z2], 3).transpose(0, 3, 1, 2)
    y, ld, _ = b.forward(p, x)
    assert rel(y, ref) <= 1e-12 and rel(ld, logdet) <= 1e-12


@pytest.mark.parametrize("ours,theirs", [("exp", "exp"), ("logsigmoid", "sigmoid_inv"), ("neg_logsigmoid", "sigmoid")])
@pytest.mark.parametrize("parity,split", [(0, "channel"), (1, "channel_inv")])
def test_matches_normflows_affine_coupling_block(ours, theirs, parity, split):
    pytest.importorskip("normflows")
    from normflows.flows import AffineCouplingBlock
    b, p, x = _case((5, 2, 3), 1, mask="channel", parity=parity, scale=ours, layout="interleaved")
    torch, net = _torch_net(b, p)
    block = AffineCouplingBlock(net, scale=True, scale_map=theirs, split_mode=split).double()
    ty, tld = block(torch.tensor(x))
    y, ld, _ = b.forward(p, x)
    assert rel(y, ty.detach().numpy()) <= 1e-12 and rel(ld, tld.detach().numpy()) <= 1e-12
    tx, tldi = block.inverse(ty)
    xi, ldi = b.inverse(p, y)
    assert rel(xi, tx.detach().numpy()) <= 1e-12 and rel(ldi, tldi.detach().numpy()) <= 1e-12


@pytest.mark.parametrize("parity", [0, 1])
def test_matches_nflows_affine_coupling_transform(parity):
    pytest.importorskip("nflows")
    from nflows.transforms.coupling import AffineCouplingTransform
    b, p, x = _case((3, 4, 2), 2, mask="channel", parity=parity, scale="sigmoid", layout="shift_scale")
    torch, net = _torch_net(b, p)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, u, context=None):
            return self.net(u)

    transformed = np.ones(3, int)
    transformed[b._ia] = 0                                       # nflows' mask: 1 marks a transformed channel
    t = AffineCouplingTransform(torch.tensor(transformed), lambda i, o: Net()).double()
    ty, tld = t(torch.tensor(x))
    y, ld, _ = b.forward(p, x)
    assert rel(y, ty.detach().numpy()) <= 1e-12 and rel(ld, tld.detach().numpy()) <= 1e-12
    tx, tldi = t.inverse(ty)
    xi, ldi = b.inverse(p, y)
    assert rel(xi, tx.detach().numpy()) <= 1e-12 and rel(ldi, tldi.detach().numpy()) <= 1e-12


def test_layouts_are_one_map_with_permuted_output_channels():
    """The three layouts read the same r and t from permuted output channels of the last conv: permuting
    W2 and b2 accordingly gives the same layer (to rounding: BLAS may order a GEMM column's sums differently
    in another position, so 1e-13 relative rather than bitwise)."""
    b0, p, x = _case((2, 3, 4), 3, mask="checkerboard")
    K = 2
    # output channel of each layout holding (r_k, t_k): scale_shift: r_k = k, t_k = K + k; shift_scale:
    # t_k = k, r_k = K + k; interleaved: t_k = 2k, r_k = 2k + 1
    for layout, order in (("shift_scale", [2, 3, 0, 1]), ("interleaved", [2, 0, 3, 1])):
        b = nf.ImageAffineCoupling((2, 3, 4), mask="checkerboard", hidden=5, layout=layout)
        q = {**p, "net.W2": p["net.W2"][order], "net.b2": p["net.b2"][order]}
        y0, ld0, c0 = b0.forward(p, x)
        y, ld, c = b.forward(q, x)
        assert rel(y, y0) <= 1e-13 and rel(ld, ld0) <= 1e-13
        dy = np.random.default_rng(4).standard_normal(y.shape)
        dl = np.ones(3)
        dx0, g0 = b0.backward(p, dy, dl, c0)
        dx, g = b.backward(q, dy, dl, c)
        assert rel(dx, dx0) <= 1e-13 and rel(g["net.W2"], g0["net.W2"][order]) <= 1e-13
        assert rel(g["net.W0"], g0["net.W0"]) <= 1e-13
