"""The public functional spline (Durkan et al. 2019, arXiv:1906.04032): ``RQSpline`` evaluated from unnormalised
parameters or from explicit knots, forward and inverse, and its hand-derived pullbacks with respect to the input
and the knot parameters (``backward``, ``backward_knots``, ``inverse_backward``, ``inverse_backward_knots``);
the bounded spline (``tails=None``) against nflows' ``rational_quadratic_spline``.

Tolerances (float64).  Hand-derived pullbacks against autograd on the same ``xp`` code: 1e-10 relative to
max(1, |g|) (the same derivative evaluated in a different order: a few hundred roundings through the knot
construction).  Against central differences (step 1e-6, points >= 0.02 of a bin width from every knot, so no
difference straddles a knot): 1e-6, above the O(h^2 f''') truncation (~1e-8 measured) and the roundoff
eps/h ~ 2e-10.  float32: outputs within 1e-4 relative of float64 (the harness's float32 tolerance).
"""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import harness
import npflows as nf
from npflows.bijectors.spline import RQSpline

K = 5


def _knots(rng, shape, bounded=False):
    """Random explicit knots ``shape + (K+1,)``: widths and heights from a Dirichlet-like draw on [lo, hi]."""
    lo, hi = (0.0, 1.0) if bounded else (-2.0, 2.0)
    w = rng.uniform(0.3, 1.0, shape + (K,))
    h = rng.uniform(0.3, 1.0, shape + (K,))
    kx = lo + (hi - lo) * np.concatenate([np.zeros(shape + (1,)), np.cumsum(w, -1) / w.sum(-1, keepdims=True)], -1)
    ky = lo + (hi - lo) * np.concatenate([np.zeros(shape + (1,)), np.cumsum(h, -1) / h.sum(-1, keepdims=True)], -1)
    kx[..., -1] = ky[..., -1] = hi                             # exact ends (identity tails meet them)
    d = rng.uniform(0.2, 3.0, shape + (K + 1,))
    if not bounded:
        d[..., 0] = d[..., -1] = 1.0
    return kx, ky, d


def _inside(rng, kx, n_tail=0):
    """One point per knot row, in a random bin at relative position U(0.02, 0.98)."""
    k = rng.integers(0, K, kx.shape[:-1])
    lo = np.take_along_axis(kx, k[..., None], -1)[..., 0]
    hi = np.take_along_axis(kx, k[..., None] + 1, -1)[..., 0]
    return lo + rng.uniform(0.02, 0.98, lo.shape) * (hi - lo)


CONFIGS = [("linear", False), (None, True)]


@pytest.mark.parametrize("tails,bounded", CONFIGS)
def test_knot_pullback_matches_autograd_and_central_differences(tails, bounded):
    rng = np.random.default_rng(0)
    sp = RQSpline(K, tails=tails)
    kx, ky, d = _knots(rng, (4, 3), bounded)
    x = _inside(rng, kx)
    if tails == "linear":
        x[0, :2] = [-2.5, 3.0]                               # identity tails: dx = dy, no knot cotangent
    y, ld, cache = sp.forward_knots(x, kx, ky, d)
    dy, dl = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    dx, (gkx, gky, gd) = sp.backward_knots(dy, dl, cache)

    def obj(args, xp=anp):
        yy, ll, _ = sp.forward_knots(*args, xp=xp, check=False)
        return xp.sum(dy * yy) + xp.sum(dl * ll)
    auto = autograd.grad(obj)((x, kx, ky, d))
    for ours, theirs, what in zip((dx, gkx, gky, gd), auto, ("x", "x-knots", "y-knots", "derivatives")):
        harness.close(ours, theirs, 1e-10, f"{what} vs autograd")
    h = 1e-6
    for ours, i in zip((dx, gkx, gky, gd), range(4)):
        v = rng.standard_normal(ours.shape)
        if i in (1, 2):
            v[..., [0, -1]] = 0.0                            # keep the domain (tails and bounded ends) fixed
        plus = [a + h * v if j == i else a for j, a in enumerate((x, kx, ky, d))]
        minus = [a - h * v if j == i else a for j, a in enumerate((x, kx, ky, d))]
        fd = (obj(plus, np) - obj(minus, np)) / (2 * h)
        harness.close(np.sum(ours * v), fd, 1e-6, f"argument {i} . v vs central difference")


@pytest.mark.parametrize("tails,bounded", CONFIGS)
def test_inverse_pullback_matches_autograd_through_the_inverse(tails, bounded):
    """``inverse_backward_knots`` (implicit function theorem, at the forward cache of the solved point)
    against autograd through ``inverse_knots`` (which differentiates the closed-form root)."""
    rng = np.random.default_rng(1)
    sp = RQSpline(K, tails=tails)
    kx, ky, d = _knots(rng, (3, 4), bounded)
    y = _inside(rng, ky)
    x, ld = sp.inverse_knots(y, kx, ky, d)
    y2, ld2, cache = sp.forward_knots(x, kx, ky, d)
    harness.close(y2, y, 1e-13, "round trip")
    harness.close(ld2, -ld, 1e-12, "round-trip logdet")
    dx, dl = rng.standard_normal(y.shape), rng.standard_normal(y.shape)
    dy, grads = sp.inverse_backward_knots(dx, dl, cache)

    def obj(args):
        xx, ll = sp.inverse_knots(*args, xp=anp, check=False)
        return anp.sum(dx * xx) + anp.sum(dl * ll)
    auto = autograd.grad(obj)((y, kx, ky, d))
    for ours, theirs, what in zip((dy, *grads), auto, ("y", "x-knots", "y-knots", "derivatives")):
        harness.close(ours, theirs, 1e-9, f"inverse pullback {what} vs autograd")


def test_raw_inverse_pullback_matches_autograd():
    """``inverse_backward`` for unnormalised parameters shared by a batch (linear tails, points in the tails
    too), against autograd through ``inverse``."""
    rng = np.random.default_rng(2)
    sp = RQSpline(K, bound=2.0)
    rw, rh, rd = rng.standard_normal((3, K)), rng.standard_normal((3, K)), rng.standard_normal((3, K - 1))
    ky = sp.knots(rw, rh, rd)[1]
    y = _inside(rng, np.broadcast_to(ky, (6, 3, K + 1)).copy())
    y[0] = [-2.7, 2.2, 5.0]
    x, ld = sp.inverse(y, rw, rh, rd)
    _, _, cache = sp.forward(x, rw, rh, rd)
    dx, dl = rng.standard_normal(y.shape), rng.standard_normal(y.shape)
    dy, grads = sp.inverse_backward(dx, dl, cache)

    def obj(args):
        xx, ll = sp.inverse(*args, xp=anp, check=False)
        return anp.sum(dx * xx) + anp.sum(dl * ll)
    auto = autograd.grad(obj)((y, rw, rh, rd))
    for ours, theirs, what in zip((dy, *grads), auto, ("y", "raw widths", "raw heights", "raw derivatives")):
        harness.close(ours, theirs, 1e-9, f"inverse pullback {what} vs autograd")


def test_explicit_knots_reproduce_the_raw_path_bit_for_bit():
    """The raw path is ``knots`` then ``forward_knots``: the same numbers, and the knot pullback chained through
    the knot construction is ``backward``."""
    rng = np.random.default_rng(3)
    for sp in (RQSpline(K, bound=3.0), RQSpline(K, tails=None, interval=(-1.0, 2.0))):
        nd = sp.n_derivatives
        rw, rh, rd = rng.standard_normal((4, K)), rng.standard_normal((4, K)), rng.standard_normal((4, nd))
        kx, ky, d = sp.knots(rw, rh, rd)
        x = _inside(rng, kx)
        y, ld, cache = sp.forward(x, rw, rh, rd)
        y2, ld2 = nf.rational_quadratic_spline_knots(x, kx, ky, d, tails=sp.tails)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(ld, ld2)
        xi, ldi = nf.rational_quadratic_spline_knots(y, kx, ky, d, inverse=True, tails=sp.tails)
        np.testing.assert_array_equal((xi, ldi), sp.inverse(y, rw, rh, rd))


def test_float32_in_float32_out():
    rng = np.random.default_rng(4)
    for tails, bounded in CONFIGS:
        sp = RQSpline(K, tails=tails)
        kx, ky, d = _knots(rng, (5, 2), bounded)
        x = _inside(rng, kx)
        y, ld, cache = sp.forward_knots(x, kx, ky, d)
        f = lambda a: a.astype(np.float32)                   # noqa: E731
        y32, ld32, c32 = sp.forward_knots(f(x), f(kx), f(ky), f(d))
        dy, dl = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
        g64 = sp.backward_knots(dy, dl, cache)
        g32 = sp.backward_knots(f(dy), f(dl), c32)
        x32, ldi32 = sp.inverse_knots(y32, f(kx), f(ky), f(d))
        i32 = sp.inverse_backward_knots(f(dy), f(dl), c32)
        for a32, a64 in ((y32, y), (ld32, ld), (x32, x), (ldi32, -ld), (g32[0], g64[0]),
                         *zip(g32[1], g64[1]), (i32[0], None), *zip(i32[1], (None,) * 3)):
            assert a32.dtype == np.float32 and np.all(np.isfinite(a32))
            if a64 is not None:
                harness.close(a32, a64, 1e-4, "float32 vs float64")


@pytest.mark.parametrize("bad,match", [
    (lambda kx, ky, d: (kx[..., ::-1], ky, d), "strictly increasing"),
    (lambda kx, ky, d: (kx, ky, -d), "derivatives must be > 0"),
    (lambda kx, ky, d: (kx, ky + 0.1, d), "first and last"),
    (lambda kx, ky, d: (kx[..., :-1], ky, d), "shapes"),
    (lambda kx, ky, d: (kx, np.where(ky > 0, np.nan, ky), d), "finite"),
])
def test_bad_knots_raise_naming_the_function(bad, match):
    rng = np.random.default_rng(5)
    kx, ky, d = _knots(rng, (2,))
    with pytest.raises(ValueError, match=f"rational_quadratic_spline_knots: .*{match}"):
        nf.rational_quadratic_spline_knots(np.zeros(2), *bad(kx, ky, d))


def test_bounded_spline_refuses_inputs_outside_its_interval():
    rng = np.random.default_rng(6)
    kx, ky, d = _knots(rng, (2,), bounded=True)
    for v, inverse in ((1.0 + 1e-12, False), (-0.5, False), (1.5, True)):
        with pytest.raises(ValueError, match="rational_quadratic_spline_knots: .*outside the spline's domain"):
            nf.rational_quadratic_spline_knots(np.array([0.5, v]), kx, ky, d, inverse=inverse, tails=None)
    b = nf.RationalQuadraticSpline(2, n_bins=K, tails=None)
    with pytest.raises(ValueError, match="RationalQuadraticSpline: .*outside"):
        b.forward(b.init(rng), np.array([[0.2, 1.2]]))
    with pytest.raises(ValueError, match="rational_quadratic_spline: expected .* \\(\\.\\.\\., 6\\)"):
        nf.rational_quadratic_spline(np.zeros(2), np.zeros((2, K)), np.zeros((2, K)), np.zeros((2, K - 1)),
                                     tails=None)


def test_bounded_spline_matches_nflows_rational_quadratic_spline():
    """nflows' ``rational_quadratic_spline`` on [0, 1] (K+1 free derivatives) in float64: values and logdets
    both ways to 1e-12, our pullback against torch autograd through nflows to 1e-10 (as the linear-tail test
    in test_spline.py); points at 0, 1 and inside."""
    torch = pytest.importorskip("torch")
    rq = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
    rng = np.random.default_rng(7)
    N, D = 30, 2
    rw, rh, rd = (rng.standard_normal((N, D, n)) * 1.5 for n in (K, K, K + 1))
    x = rng.uniform(0.0, 1.0, (N, D))
    x[0] = [0.0, 1.0]
    y, ld, cache = nf.RQSpline(K, tails=None).forward(x, rw, rh, rd)
    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)   # noqa: E731
    tx, tw, th, td = t(x), t(rw), t(rh), t(rd)
    ty, tld = rq.rational_quadratic_spline(tx, tw, th, td, inverse=False)
    harness.close(y, ty.detach().numpy(), 1e-12, "forward vs nflows")
    harness.close(ld, tld.detach().numpy(), 1e-12, "logdet vs nflows")
    xi, ldi = nf.rational_quadratic_spline(y, rw, rh, rd, inverse=True, tails=None)
    txi, tldi = rq.rational_quadratic_spline(torch.tensor(y), *(torch.tensor(a) for a in (rw, rh, rd)), inverse=True)
    harness.close(xi, txi.numpy(), 1e-12, "inverse vs nflows")
    harness.close(ldi, tldi.numpy(), 1e-12, "inverse logdet vs nflows")
    dy, dl = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    ((ty * torch.tensor(dy)).sum() + (tld * torch.tensor(dl)).sum()).backward()
    dx, grads = nf.RQSpline(K, tails=None).backward(dy, dl, cache)
    for ours, theirs, what in zip((dx, *grads), (tx, tw, th, td), ("x", "widths", "heights", "derivatives")):
        harness.close(ours, theirs.grad.numpy(), 1e-10, f"gradient of {what} vs torch autograd through nflows")
