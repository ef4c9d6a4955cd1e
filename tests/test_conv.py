"""conv2d, its hand-derived backward, and the ConvNet (npflows/nn/conv.py).

References, none of them the code under test:

* a naive seven-fold loop that is the definition ``out[n,o,i,j] = b[o] + sum_{c,u,v} W[o,c,u,v]
  x[n,c,i+u-kh//2,j+v-kw//2]`` with the bounds written out (so the fast im2col / output-side / 1x1 paths are
  checked against the formula, not against each other);
* autograd applied to the traceable sum-over-taps path (a different algorithm from the fast path's GEMMs);
* central differences of the NumPy forward;
* ``torch.nn.functional.conv2d`` and ``torch.nn.Conv2d`` in float64 (skipped without torch).

Tolerances, relative to the largest magnitude of the reference (``max|a - b| <= tol * max|b|``):

* 1e-12 against the loop, autograd and torch in float64: the same sums in another order, at most
  ``k*k*Cin`` (<= 150 here) terms of O(1), so rounding differs by ~1e-15; 1e-12 leaves a factor ~100 and any
  wrong term is O(1);
* 1e-7 against central differences: conv2d is linear in x and in W, so the difference quotient has no
  truncation error and only rounding (~eps |f| / h = 1e-16 / 1e-4); the ConvNet's ReLU is piecewise linear,
  so its kinks are avoided by the step h = 1e-6 only with high probability, and the check uses a smooth
  activation (tanh, truncation O(h^2) ~ 1e-12) as well as ReLU at a point checked to stay off the kinks;
* 1e-5 float32 vs float64: float32's eps is 1.2e-7, and a 150-term dot product accumulates ~sqrt(150) eps.
"""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from npflows.nn import ConvNet, conv2d, conv2d_backward
from npflows.nn.conv import conv2d_traceable


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-300))


def naive_conv(x, W, b=None):
    N, C, H, Wd = x.shape
    Co, _, kh, kw = W.shape
    out = np.zeros((N, Co, H, Wd))
    for n in range(N):
        for o in range(Co):
            for i in range(H):
                for j in range(Wd):
                    s = 0.0 if b is None else b[o]
                    for c in range(C):
                        for u in range(kh):
                            for v in range(kw):
                                ii, jj = i + u - kh // 2, j + v - kw // 2
                                if 0 <= ii < H and 0 <= jj < Wd:
                                    s += W[o, c, u, v] * x[n, c, ii, jj]
                    out[n, o, i, j] = s
    return out


# (N, Cin, Cout, H, W, kh, kw): 1x1, 3x3, 5x5 (wider than some images), 1x3, 3x1; Cin < Cout (im2col of the
# input) and Cin > Cout (one GEMM, scatter of the output), non-square images
SHAPES = [(2, 3, 4, 4, 4, 1, 1), (3, 2, 5, 4, 5, 3, 3), (2, 6, 3, 5, 4, 3, 3), (2, 3, 2, 3, 4, 5, 5),
          (2, 2, 6, 6, 3, 5, 5), (2, 4, 3, 3, 5, 1, 3), (1, 2, 2, 4, 3, 3, 1), (3, 1, 1, 2, 2, 3, 3)]


def _data(shape, seed=0, dtype=np.float64):
    N, Ci, Co, H, Wd, kh, kw = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, Ci, H, Wd)).astype(dtype)
    W = rng.standard_normal((Co, Ci, kh, kw)).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    return x, W, b, rng


@pytest.mark.parametrize("shape", SHAPES)
def test_conv2d_matches_the_naive_loop(shape):
    x, W, b, _ = _data(shape)
    ref = naive_conv(x, W, b)
    out = conv2d(x, W, b)
    assert out.shape == ref.shape and out.flags.c_contiguous
    assert rel(out, ref) <= 1e-12
    assert rel(conv2d(x, W), naive_conv(x, W)) <= 1e-12            # without a bias
    assert rel(conv2d_traceable(x, W, b), ref) <= 1e-12            # the traceable path is the same map


@pytest.mark.parametrize("shape", SHAPES)
def test_conv2d_backward_matches_autograd(shape):
    x, W, b, rng = _data(shape)
    out, cache = conv2d(x, W, b, return_cache=True)
    g = rng.standard_normal(out.shape)
    dx, dW, db = conv2d_backward(g, x, W, cache)
    f = lambda x, W, b: anp.sum(conv2d(x, W, b, xp=anp) * g)
    ax, aW, ab = autograd.grad(f, (0, 1, 2))(x, W, b)
    assert dx.shape == x.shape and dW.shape == W.shape and db.shape == b.shape
    assert rel(dx, ax) <= 1e-12 and rel(dW, aW) <= 1e-12 and rel(db, ab) <= 1e-12
    # without the cache (re-gathered from x) the same numbers; the cotangent is not written into
    g0 = g.copy()
    dx2, dW2, db2 = conv2d_backward(g, x, W)
    assert np.array_equal(dx2, dx) and np.array_equal(dW2, dW) and np.array_equal(db2, db)
    assert np.array_equal(g, g0)


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_conv2d_backward_matches_central_differences(shape):
    x, W, b, rng = _data(shape, seed=1)
    g = rng.standard_normal((x.shape[0], W.shape[0]) + x.shape[2:])
    dx, dW, db = conv2d_backward(g, x, W)
    f = lambda x, W, b: float(np.sum(conv2d(x, W, b) * g))
    h = 1e-4
    for _ in range(3):
        vx, vW, vb = rng.standard_normal(x.shape), rng.standard_normal(W.shape), rng.standard_normal(b.shape)
        for d, v, args in ((dx, vx, lambda s: (x + s * vx, W, b)), (dW, vW, lambda s: (x, W + s * vW, b)),
                           (db, vb, lambda s: (x, W, b + s * vb))):
            fd = (f(*args(h)) - f(*args(-h))) / (2 * h)
            assert abs(np.sum(d * v) - fd) <= 1e-7 * max(1.0, abs(fd))


@pytest.mark.parametrize("shape", SHAPES[:5])
def test_conv2d_float32_in_float32_out(shape):
    x, W, b, rng = _data(shape)
    x32, W32, b32 = x.astype(np.float32), W.astype(np.float32), b.astype(np.float32)
    out32, cache = conv2d(x32, W32, b32, return_cache=True)
    assert out32.dtype == np.float32
    assert rel(out32, conv2d(x, W, b)) <= 1e-5
    g = rng.standard_normal(out32.shape)
    grads32 = conv2d_backward(g.astype(np.float32), x32, W32, cache)
    grads64 = conv2d_backward(g, x, W)
    for a32, a64 in zip(grads32, grads64):
        assert a32.dtype == np.float32 and rel(a32, a64) <= 1e-5


def test_conv2d_refuses_even_kernels_and_mismatched_channels():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        conv2d(x, np.zeros((3, 2, 2, 3)))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        conv2d(x, np.zeros((3, 3, 3, 3)))


@pytest.mark.parametrize("shape", SHAPES)
def test_conv2d_matches_torch(shape):
    torch = pytest.importorskip("torch")
    x, W, b, rng = _data(shape, seed=2)
    tx, tW, tb = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    to = torch.nn.functional.conv2d(tx, tW, tb, padding=(W.shape[2] // 2, W.shape[3] // 2))
    out, cache = conv2d(x, W, b, return_cache=True)
    assert rel(out, to.detach().numpy()) <= 1e-12
    g = rng.standard_normal(out.shape)
    to.backward(torch.tensor(g))
    dx, dW, db = conv2d_backward(g, x, W, cache)
    for a, t in ((dx, tx), (dW, tW), (db, tb)):
        assert rel(a, t.grad.numpy()) <= 1e-12


# ------------------------------------------------------------------------------------------------ ConvNet
NETS = [(2, 4, 5, 3, "relu"), (4, 3, 6, 1, "tanh"), (1, 8, 3, 5, "elu"), (6, 2, 7, 3, "leaky_relu"),
        (3, 6, 4, 3, "tanh")]


def _net(cfg, seed=0, noise=0.3):
    ci, co, hidden, k, act = cfg
    net = ConvNet(ci, co, hidden, k, act, prefix="net.")
    rng = np.random.default_rng(seed)
    p = {key: v + noise * rng.standard_normal(v.shape) for key, v in net.init(rng).items()}
    x = rng.standard_normal((3, ci, 4, 5))
    return net, p, x, rng


@pytest.mark.parametrize("cfg", NETS)
def test_convnet_backward_matches_autograd(cfg):
    net, p, x, rng = _net(cfg)
    out, cache = net.forward(p, x)
    assert out.shape == (3, cfg[1], 4, 5)
    out_traced, _ = net.forward(p, x, anp)
    assert rel(out, out_traced) <= 1e-12                       # the NumPy (NHWC) path is the same map
    g = rng.standard_normal(out.shape)
    dx, grads = net.backward(p, g, cache)
    f = lambda x, p: anp.sum(net.forward(p, x, anp)[0] * g)
    ax, ap = autograd.grad(f, (0, 1))(x, p)
    assert set(grads) == set(p) == {f"net.{w}{l}" for w in "Wb" for l in range(3)}
    assert rel(dx, ax) <= 1e-12
    for k in p:
        assert grads[k].shape == p[k].shape and rel(grads[k], ap[k]) <= 1e-12, k
    dx2, grads2 = net.backward(p, g, cache)                     # no hidden state: the same answer twice
    assert np.array_equal(dx2, dx) and all(np.array_equal(grads2[k], grads[k]) for k in p)
    _, gp = net.backward(p, g, cache, need_dx=False)
    assert _ is None and all(np.array_equal(gp[k], grads[k]) for k in p)


@pytest.mark.parametrize("cfg", [NETS[1], NETS[4], NETS[0]])
def test_convnet_backward_matches_central_differences(cfg):
    net, p, x, rng = _net(cfg, seed=3)
    out, cache = net.forward(p, x)
    g = rng.standard_normal(out.shape)
    dx, grads = net.backward(p, g, cache)
    f = lambda x, p: float(np.sum(net.forward(p, x)[0] * g))
    h = 1e-6
    if cfg[4] == "relu":     # precondition: the steps (~1e-5 in every pre-activation) cross no ReLU kink
        h0 = conv2d(x, p["net.W0"], p["net.b0"])
        h1 = conv2d(np.maximum(h0, 0), p["net.W1"], p["net.b1"])
        assert min(np.abs(h0).min(), np.abs(h1).min()) > 1e-4
    for _ in range(2):
        v = rng.standard_normal(x.shape)
        fd = (f(x + h * v, p) - f(x - h * v, p)) / (2 * h)
        assert abs(np.sum(dx * v) - fd) <= 1e-7 * max(1.0, abs(fd))
        for k in p:
            v = rng.standard_normal(p[k].shape)
            fd = (f(x, {**p, k: p[k] + h * v}) - f(x, {**p, k: p[k] - h * v})) / (2 * h)
            assert abs(np.sum(grads[k] * v) - fd) <= 1e-7 * max(1.0, abs(fd)), k


def test_convnet_init_zero_last_layer_he_weights_and_float32():
    net = ConvNet(3, 4, hidden=64, kernel=3)
    assert net.param_shapes() == {"W0": (64, 3, 3, 3), "b0": (64,), "W1": (64, 64, 1, 1), "b1": (64,),
                                  "W2": (4, 64, 3, 3), "b2": (4,)}
    rng = np.random.default_rng(0)
    p = net.init(rng)
    x = rng.standard_normal((5, 3, 4, 4))
    out, _ = net.forward(p, x)
    assert np.all(out == 0)                                     # zero_init: the coupling starts as the identity
    # He: var W = 2 / fan_in, fan_in = Cin k k (27 for W0, 64 for W1); 1728 and 4096 draws give the sample
    # variance to ~3.4% and ~2.2% (one standard error), so 15% is > 4 standard errors
    assert abs(p["W0"].var() * 27 / 2 - 1) < 0.15 and abs(p["W1"].var() * 64 / 2 - 1) < 0.15
    assert np.all(np.abs(p["b0"]) <= 1 / np.sqrt(27)) and np.all(np.abs(p["b1"]) <= 1 / np.sqrt(64))
    assert p["b0"].std() > 0.05
    p32 = net.init(np.random.default_rng(0), dtype=np.float32)
    assert all(v.dtype == np.float32 for v in p32.values())
    q = {k: v + 0.1 for k, v in p32.items()}
    out32, cache = net.forward(q, x.astype(np.float32))
    dx32, g32 = net.backward(q, np.ones_like(out32), cache)
    assert out32.dtype == dx32.dtype == np.float32 and all(v.dtype == np.float32 for v in g32.values())
    nz = ConvNet(3, 4, hidden=8, zero_init=False).init(rng)
    assert np.any(nz["W2"] != 0)


def test_convnet_refuses_bad_structure():
    with pytest.raises(ValueError, match="odd"):
        ConvNet(2, 2, 4, kernel=2)
    with pytest.raises(ValueError, match="activation"):
        ConvNet(2, 2, 4, activation="gelu")
    with pytest.raises(ValueError, match="at least one channel"):
        ConvNet(2, 0, 4)


@pytest.mark.parametrize("cfg", [NETS[0], NETS[3]])
def test_convnet_equals_torch_modules_with_the_same_weights(cfg):
    """The parameters are PyTorch's nn.Conv2d layout: a torch Sequential with the same weights (as in
    normflows' ConvNet2d) gives the same output and gradients."""
    torch = pytest.importorskip("torch")
    net, p, x, rng = _net(cfg, seed=4)
    ci, co, hidden, k, act = cfg
    acts = {"relu": torch.nn.ReLU(), "leaky_relu": torch.nn.LeakyReLU(0.01)}
    layers = [torch.nn.Conv2d(ci, hidden, k, padding=k // 2), acts[act], torch.nn.Conv2d(hidden, hidden, 1), acts[act],
              torch.nn.Conv2d(hidden, co, k, padding=k // 2)]
    tnet = torch.nn.Sequential(*layers).double()
    with torch.no_grad():
        for l, layer in zip(range(3), (layers[0], layers[2], layers[4])):
            layer.weight.copy_(torch.tensor(p[f"net.W{l}"]))
            layer.bias.copy_(torch.tensor(p[f"net.b{l}"]))
    tx = torch.tensor(x, requires_grad=True)
    to = tnet(tx)
    out, cache = net.forward(p, x)
    assert rel(out, to.detach().numpy()) <= 1e-12
    g = rng.standard_normal(out.shape)
    to.backward(torch.tensor(g))
    dx, grads = net.backward(p, g, cache)
    assert rel(dx, tx.grad.numpy()) <= 1e-12
    for l, layer in zip(range(3), (layers[0], layers[2], layers[4])):
        assert rel(grads[f"net.W{l}"], layer.weight.grad.numpy()) <= 1e-12
        assert rel(grads[f"net.b{l}"], layer.bias.grad.numpy()) <= 1e-12
