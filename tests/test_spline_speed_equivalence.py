"""The NumPy path of ``RQSpline`` (column-wise knot construction, the bin counted knot by knot, flat ``take``
gathers, the softplus and in the backward the sigmoid evaluated at each bin's two end derivatives only, the
knot cotangents written by flat index) gives the same numbers as the traceable ``xp`` path and as the one-hot
reference scatter.

Claim tested: bit for bit, float64 and float32, linear tails and ``tails=None``, per-element and shared
(broadcast) parameters, points in the tails, on the knots and at the ends.  The traceable path is run on plain arrays with ``xp=autograd.numpy``: it takes the
``xp is not np`` branches (max and cumsum along the last axis, softplus of every derivative, one-hot gathers)
without tracing anything.

One exception, by design: a parameter cotangent that is exactly zero (an unnormalised parameter of a bin the
element is not in) is now always +0, where the one-hot products gave -0 whenever both end cotangents were
negative (``0 * left + 0 * right``).  Such zeros are compared by value; everything else (outputs, logdets, input
cotangents, every nonzero entry) also in the sign of every zero.
"""
import autograd.numpy as anp
import numpy as np
import pytest

import npflows.bijectors.spline as spline_mod
from npflows.bijectors.spline import RQSpline, MaskedSplineAutoregressive, SplineCoupling


def _reference_scatter(left, right, idx, n_knots):
    """The one-hot scatter the NumPy path replaced (kept here as the reference)."""
    pos = np.arange(n_knots)
    return (idx[..., None] == pos) * left[..., None] + (idx[..., None] + 1 == pos) * right[..., None]


def _case(rng, K, tails, shape, shared, dtype, scale=2.0):
    sp = RQSpline(K, bound=3.0, tails=tails)
    pshape = shape[1:] if shared else shape
    rw, rh = (scale * rng.standard_normal(pshape + (K,)) for _ in range(2))
    rd = scale * rng.standard_normal(pshape + (sp.n_derivatives,))
    lo, hi = sp.left, sp.right
    pad = 0.5 if tails == "linear" else 0.0
    x = rng.uniform(lo - pad, hi + pad, shape)
    kx, ky, _ = sp.knots(rw, rh, rd)
    flat_x = x.reshape(-1)
    kxf = np.broadcast_to(kx, shape + (K + 1,)).reshape(-1, K + 1)
    flat_x[:K + 1] = kxf[np.arange(K + 1), np.arange(K + 1)]        # exactly on every knot, both ends included
    cast = [a.astype(dtype) for a in (x, rw, rh, rd)]
    return sp, cast


CASES = [(K, tails, shared, dtype) for K in (2, 3, 8, 11) for tails in ("linear", None) for shared in (False, True)
         for dtype in (np.float64, np.float32)]


def _equal(a, b, signed_zeros=True):
    """Equal bit for bit (by value, and with ``signed_zeros`` also in the sign of every zero)."""
    return (a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
            and (not signed_zeros or np.array_equal(np.signbit(a), np.signbit(b))))


@pytest.mark.parametrize("K,tails,shared,dtype", CASES)
def test_numpy_path_equals_the_traceable_path_bitwise(K, tails, shared, dtype):
    rng = np.random.default_rng(K + 100 * shared)
    sp, (x, rw, rh, rd) = _case(rng, K, tails, (64, 6), shared, dtype)
    y, ld, _ = sp.forward(x, rw, rh, rd)
    y_t, ld_t, _ = sp.forward(x, rw, rh, rd, xp=anp)
    assert _equal(y, y_t) and _equal(ld, ld_t)
    xi, ldi = sp.inverse(y, rw, rh, rd)
    xi_t, ldi_t = sp.inverse(y, rw, rh, rd, xp=anp)
    assert _equal(xi, xi_t) and _equal(ldi, ldi_t)
    for a, b in zip(sp.knots(rw, rh, rd), sp.knots(rw, rh, rd, xp=anp)):
        assert _equal(a, b)
    kx, ky, kd = sp.knots(rw, rh, rd)                     # explicit knots: the same through *_knots
    assert _equal(sp.forward_knots(x, kx, ky, kd)[0], sp.forward_knots(x, kx, ky, kd, xp=anp)[0])
    assert _equal(sp.inverse_knots(y, kx, ky, kd)[1], sp.inverse_knots(y, kx, ky, kd, xp=anp)[1])


@pytest.mark.parametrize("K,tails,shared,dtype", CASES)
def test_backward_equals_the_one_hot_reference_bitwise(K, tails, shared, dtype, monkeypatch):
    rng = np.random.default_rng(7 + K + 100 * shared)
    sp, (x, rw, rh, rd) = _case(rng, K, tails, (64, 6), shared, dtype)
    dy, dl = (rng.standard_normal(x.shape).astype(dtype) for _ in range(2))
    _, _, cache = sp.forward(x, rw, rh, rd)
    _, _, cache_t = sp.forward(x, rw, rh, rd, xp=anp)    # the cache of the traceable path (one-hot gathers)
    new = [sp.backward(dy, dl, cache), sp.inverse_backward(dy, dl, cache)]
    monkeypatch.setattr(spline_mod, "_scatter", _reference_scatter)
    ref = [sp.backward(dy, dl, cache_t), sp.inverse_backward(dy, dl, cache_t)]
    for (a, ga), (b, gb) in zip(new, ref):
        assert _equal(a, b)
        assert all(_equal(u, v, signed_zeros=False) for u, v in zip(ga, gb))


def test_the_reference_scatter_and_the_equality_check_can_tell_a_difference(monkeypatch):
    """The comparisons above are not vacuous: swapping the two end cotangents changes the result."""
    rng = np.random.default_rng(0)
    sp, (x, rw, rh, rd) = _case(rng, 8, "linear", (32, 4), False, np.float64)
    dy, dl = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    _, _, cache = sp.forward(x, rw, rh, rd)
    good = sp.backward(dy, dl, cache)[1][0]
    monkeypatch.setattr(spline_mod, "_scatter", lambda l, r, i, n: _reference_scatter(r, l, i, n))
    assert not _equal(good, sp.backward(dy, dl, cache)[1][0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["coupling", "autoregressive"])
def test_layer_parameter_views_give_the_traceable_numbers_bitwise(kind, dtype):
    """The layers hand the spline strided views of their conditioner's output (and the autoregressive layer a
    transposed one); the NumPy path reads them as the traceable path does.  (The conditioners' own NumPy and
    traced passes may differ in the last bits, so both spline paths get the NumPy conditioner's output.)"""
    rng = np.random.default_rng(3)
    if kind == "coupling":
        b = SplineCoupling(np.arange(16) % 2, n_bins=8, zero_init=False)
    else:
        b = MaskedSplineAutoregressive(16, n_bins=8, zero_init=False)
    p = {k: (3.0 * v).astype(dtype) for k, v in b.init(rng, dtype=dtype).items()}
    x = (1.5 * rng.standard_normal((128, 16))).astype(dtype)
    if kind == "coupling":
        x1, x2 = b._split(x)
        raw = b._raw(p, x1, np)[:3]
    else:
        x2, raw = x, b._raw(b.net.forward(p, x, np)[0], np)
    assert not raw[0].flags.c_contiguous
    y, ld, _ = b.spline.forward(x2, *raw)
    y_t, ld_t, _ = b.spline.forward(x2, *raw, xp=anp)
    assert _equal(y, y_t) and _equal(ld, ld_t)
    xi, ldi = b.spline.inverse(y, *raw)
    xi_t, ldi_t = b.spline.inverse(y, *raw, xp=anp)
    assert _equal(xi, xi_t) and _equal(ldi, ldi_t)
