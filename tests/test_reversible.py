"""RecomputeSequential beyond the harness: the same numbers as Sequential's cached path, a cache that holds the
output alone, a training step whose memory does not grow with the depth, errors that name the layer whose
input could not be recovered, and a saved model that keeps the option."""
import inspect
import tracemalloc

import numpy as np
import pytest

import npflows as nf


def _pair(dim=4, n_layers=8, hidden=(8, 8), scale=0.1, seed=0):
    """A RealNVP with ActNorm (``Sequential``), the same layers in a ``RecomputeSequential``, and parameters
    perturbed by ``scale`` away from the identity initialisation."""
    rng = np.random.default_rng(seed)
    s = nf.realnvp(dim, n_layers, hidden=hidden, scale="tanh", actnorm=True)
    p = {k: v + scale * rng.standard_normal(v.shape) for k, v in s.init(rng).items()}
    return s, nf.RecomputeSequential(s.layers), p, rng


def test_same_map_to_the_bit_and_the_cache_is_the_output():
    s, r, p, rng = _pair()
    x = rng.standard_normal((16, 4))
    y, ld, cache = s.forward(p, x)
    y2, ld2, cache2 = r.forward(p, x)
    assert np.array_equal(y, y2) and np.array_equal(ld, ld2)        # the very same code runs forward
    assert cache2[0] is y2 and cache2[1] is None                     # nothing but the output (and no context)
    xi, ldi = s.inverse(p, y)
    xi2, ldi2 = r.inverse(p, y)
    assert np.array_equal(xi, xi2) and np.array_equal(ldi, ldi2)
    assert r.param_shapes() == s.param_shapes()                      # a Sequential's parameters fit unchanged


def test_gradients_agree_with_the_cached_backward():
    """The recomputed inputs differ from the cached ones by the round trip's rounding: here (8 well-conditioned
    layers, parameters 0.1 from the identity) the round trip is exact to ~1e-14, and the gradients agree to
    ~1e-14 relative (measured 2e-14); 1e-11 leaves a wide margin and fails for any wrong term (O(1))."""
    s, r, p, rng = _pair()
    x = rng.standard_normal((32, 4))
    dy, dl = rng.standard_normal((32, 4)), rng.standard_normal(32)
    dx, g = s.backward(p, dy, dl, s.forward(p, x)[2])
    dx2, g2 = r.backward(p, dy, dl, r.forward(p, x)[2])
    assert g2.keys() == g.keys()
    np.testing.assert_allclose(dx2, dx, rtol=0, atol=1e-11 * np.abs(dx).max())
    for k in g:
        np.testing.assert_allclose(g2[k], g[k], rtol=0, atol=1e-11 * max(1.0, np.abs(g[k]).max()), err_msg=k)


def test_training_step_of_a_flow_agrees_and_nests():
    """In ``NormalizingFlow.loss_and_grad`` (chunked), and nested inside a plain ``Sequential``."""
    s, r, p, rng = _pair(n_layers=4)
    x = rng.standard_normal((40, 4))
    for model in (r, nf.Sequential([r, nf.ElementwiseAffine(4)])):
        ref = s if model is r else nf.Sequential([s, nf.ElementwiseAffine(4)])
        params = p if model is r else {**{"0." + k: v for k, v in p.items()}, "1.log_scale": np.full(4, 0.2),
                                       "1.shift": np.full(4, -0.1)}
        a = nf.NormalizingFlow(ref, nf.StandardNormal(4), chunk_rows=16)
        b = nf.NormalizingFlow(model, nf.StandardNormal(4), chunk_rows=16)
        la, ga = a.loss_and_grad(params, x)
        lb, gb = b.loss_and_grad(params, x)
        assert la == lb
        for k in ga:
            np.testing.assert_allclose(gb[k], ga[k], rtol=0, atol=1e-11 * max(1.0, np.abs(ga[k]).max()), err_msg=k)


def _peak(flow, params, x):
    flow.loss_and_grad(params, x)                       # warm-up: one-off allocations (shared constants)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        flow.loss_and_grad(params, x)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_memory_of_a_training_step_does_not_grow_with_depth():
    """tracemalloc (NumPy reports its buffers to it) counts allocated bytes, which do not depend on timing or
    on the BLAS kernel.  From 4 to 16 couplings (batch 1024, 16-unit conditioners) the cached path holds 12 more
    layers of activations, 40 doubles = 320 bytes per sample each (measured 4.0 MB in all: 325 bytes per layer
    per sample); the recomputing path holds one layer's at a time, so only the parameter gradients (338 doubles
    per layer) grow (measured 0.05 MB).  The bounds (> 2 MB, < 10% of the cached growth) are far from both."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 2))
    grow = {}
    for cls in (nf.Sequential, nf.RecomputeSequential):
        peaks = []
        for n_layers in (4, 16):
            b = cls(nf.realnvp(2, n_layers, hidden=(16, 16), scale="tanh").layers)
            flow = nf.NormalizingFlow(b, nf.StandardNormal(2), chunk_rows=None)
            p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}
            peaks.append(_peak(flow, p, x))
        grow[cls.__name__] = peaks[1] - peaks[0]
    assert grow["Sequential"] > 2e6, grow
    assert grow["RecomputeSequential"] < 0.1 * grow["Sequential"], grow


class _BadInverse(nf.ElementwiseAffine):
    """An elementwise affine layer whose inverse overflows (a stand-in for an inverse that fails)."""

    def _inverse(self, params, y, xp):
        return y * np.inf, np.zeros(y.shape[0])


def test_a_failed_recomputation_names_the_layer():
    r = nf.RecomputeSequential([nf.ElementwiseAffine(2), _BadInverse(2), nf.ElementwiseAffine(2)])
    p = r.init(np.random.default_rng(0))
    x = np.ones((3, 2))
    y, ld, cache = r.forward(p, x)                      # forward never inverts: fine
    with pytest.raises(FloatingPointError, match=r"RecomputeSequential layer 1 \(_BadInverse\) backward "
                                                 r"\(recomputing the layer's input by its inverse\)"):
        r.backward(p, np.ones_like(y), np.ones(3), cache)


def test_save_and_load_keep_the_recomputation(tmp_path):
    s, r, p, rng = _pair(n_layers=2)
    flow = nf.NormalizingFlow(r, nf.StandardNormal(4))
    params = {**p}
    nf.save(tmp_path / "m.npz", flow, params)
    loaded, p2, _ = nf.load(tmp_path / "m.npz")
    assert type(loaded.bijector) is nf.RecomputeSequential
    x = rng.standard_normal((5, 4))
    assert np.array_equal(loaded.log_prob(p2, x), flow.log_prob(params, x))


@pytest.mark.skipif("context_dim" not in inspect.signature(nf.AffineCoupling.__init__).parameters,
                    reason="the conditional couplings (context_dim) are not in this tree")
def test_conditional_couplings_get_their_context_back():
    """A conditional chain: the context is kept in the cache, handed to every layer for the inverse and the
    forward that rebuild its cache, and its cotangent is the cached path's."""
    rng = np.random.default_rng(0)
    layers = [nf.AffineCoupling(nf.half_mask(3, i % 2 == 0), hidden=(6,), context_dim=2) for i in range(3)]
    s, r = nf.Sequential(layers), nf.RecomputeSequential(layers)
    p = {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in s.init(rng).items()}
    x, c = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    dy, dl = rng.standard_normal((6, 3)), rng.standard_normal(6)
    a = s.backward(p, dy, dl, s.forward(p, x, c)[2])
    b = r.backward(p, dy, dl, r.forward(p, x, c)[2])
    assert len(a) == len(b) == 3
    for u, v in zip((a[0], a[2]), (b[0], b[2])):
        np.testing.assert_allclose(v, u, rtol=0, atol=1e-12 * np.abs(u).max())
    for k in p:
        np.testing.assert_allclose(b[1][k], a[1][k], rtol=0, atol=1e-12 * max(1.0, np.abs(a[1][k]).max()))
