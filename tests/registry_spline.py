"""Harness entries for the rational-quadratic spline family: the elementwise spline, the spline coupling with
several masks, the ``nsf`` stack, the autoregressive spline layer (several orders, D = 1) and its stack, and the
bounded spline (``tails=None`` on [0, 1], nflows' ``rational_quadratic_spline``) as an elementwise layer, a
coupling and an autoregressive layer (``spline_bounded_*``; its transformed inputs uniform on the interval).

Points.  The spline's value and first derivative are continuous at the knots and at +-B, but its second
derivative, hence the derivative of the logdet, jumps there: central differences (step 1e-5) across a knot
converge to the mean of the two one-sided derivatives, not to the backward.  So every harness point is kept at
least ``GAP`` = 1e-3 (100 steps) from every knot of its own spline, and from +-B; points *exactly* on knots,
and at +-B, are checked in ``test_spline.py`` with the checks that do not straddle (round trip, brute-force
logdet, autograd, one-sided differences).  Elementwise entries place points inside chosen bins at relative
positions 0.05..0.95, so every bin is visited; others mix bins and the identity tails.

Parameters are perturbed (scale 0.4-1.5) away from the identity initialisation, so slopes and knot
derivatives differ from bin to bin and every gradient is non-trivial.  Hidden widths 5-7 keep it fast.
"""
import numpy as np

import npflows as nf
from npflows.bijectors.spline import (MaskedSplineAutoregressive, RationalQuadraticSpline, SplineCoupling,
                                      autoregressive_nsf, nsf)
from registry import Case, perturbed

GAP = 1e-3


def _bad(x):
    nan = x.copy()
    nan[1, 0] = np.nan
    return [("inverse", nan), ("inverse", np.full((2, x.shape[1]), np.inf))]


def _too_close(v, knots, bound=None):
    """Entries of ``v`` within GAP of one of their knots (``(..., K+1)``, including the ends +-B or the
    interval's ends)."""
    return np.abs(v[..., None] - knots).min(axis=-1) < GAP


def _bad_bounded(x, idx):
    """A bounded spline (``tails=None``) refuses transformed entries outside its interval [0, 1], both ways."""
    out = []
    for direction, v in (("forward", 1.5), ("forward", -1e-12), ("inverse", 1.0 + 1e-12), ("inverse", -0.25)):
        a = x.copy()
        a[0, idx[0]] = v
        out.append((direction, a))
    return _bad(x) + out


def _in_bins(sp, knots, n, rng):
    """``n`` points per coordinate, bin ``i % K`` of each coordinate at relative position U(0.05, 0.95)."""
    K = sp.n_bins
    k = (np.arange(n)[:, None] + rng.integers(0, K, knots.shape[0])[None, :]) % K
    lo = np.take_along_axis(knots[None].repeat(n, 0), k[..., None], -1)[..., 0]
    hi = np.take_along_axis(knots[None].repeat(n, 0), k[..., None] + 1, -1)[..., 0]
    return lo + rng.uniform(0.05, 0.95, lo.shape) * (hi - lo)


def _elementwise(dim, n=8, scale=0.8, tail_fraction=0.0, **kw):
    def make(rng):
        b = RationalQuadraticSpline(dim, **kw)
        p = perturbed(b, rng, scale)
        kx = b.spline.knots(p["raw_widths"], p["raw_heights"], p["raw_derivatives"])[0]
        x = _in_bins(b.spline, kx, n, rng)
        if b.spline.tails is None:
            assert not _too_close(x, kx[None]).any()
            return Case(b, p, x, _bad_bounded(x, np.arange(dim)))
        tails = rng.uniform(size=x.shape) < tail_fraction
        B = b.spline.bound
        x = np.where(tails, rng.choice([-1.0, 1.0], x.shape) * rng.uniform(B + 0.05, B + 2.0, x.shape), x)
        assert not _too_close(x, kx[None], B).any()
        return Case(b, p, x, _bad(x))
    return make


def _identity_init(rng):
    b = RationalQuadraticSpline(2, n_bins=4, bound=2.0)
    x = rng.uniform(-1.9, 1.9, (6, 2))
    p = b.init(rng)
    kx = b.spline.knots(p["raw_widths"], p["raw_heights"], p["raw_derivatives"])[0]
    x = np.where(_too_close(x, kx[None], 2.0), x + 0.1, x)          # knots at -2, -1, 0, 1, 2
    return Case(b, p, x, _bad(x))


def _transformed_knots(b, p, x):
    """The x-knots of every transformed coordinate of ``b`` (a spline coupling or autoregressive layer) at
    ``x``: ``(N, d, K+1)``, and the indices of those coordinates."""
    if isinstance(b, MaskedSplineAutoregressive):
        rw, rh, rd = b._raw(b.net.forward(p, x)[0], np)
        return b.spline.knots(rw, rh, rd)[0], np.arange(b.dim)
    x1, _ = b._split(x)
    rw, rh, rd, _ = b._raw(p, x1, np)
    return b.spline.knots(rw, rh, rd)[0], np.flatnonzero(~b.mask)


def _points(b, p, rng, n):
    """Normal points (sd 1.2; uniform on the interval for a bounded spline's transformed coordinates) whose
    transformed entries are all GAP away from their knots: redraw the entries that are not (an autoregressive
    layer's knots move with the other coordinates, hence the loop)."""
    sp = b.spline
    draw = (lambda shape: rng.standard_normal(shape) * 1.2) if sp.tails is not None else \
        (lambda shape: rng.uniform(sp.left, sp.right, shape))
    x = rng.standard_normal((n, b.dim)) * 1.2
    if sp.tails is None:                                 # (linear tails: the same draws as before)
        idx = _transformed_knots(b, p, x)[1]
        x[:, idx] = draw((n, idx.size))
    for _ in range(100):
        kx, idx = _transformed_knots(b, p, x)
        close = _too_close(x[:, idx], kx)
        if not close.any():
            return x
        fresh = x.copy()
        fresh[:, idx] = np.where(close, draw(close.shape), x[:, idx])
        x = fresh
    raise RuntimeError("could not place the test points away from the knots")


def _layer(cls, n=5, scale=0.4, hidden=(7, 5), **kw):
    def make(rng):
        b = cls(hidden=hidden, rng=rng, **kw) if "order" in kw else cls(hidden=hidden, **kw)
        p = perturbed(b, rng, scale)
        x = _points(b, p, rng, n)
        if b.spline.tails is None:
            return Case(b, p, x, _bad_bounded(x, _transformed_knots(b, p, x)[1]))
        return Case(b, p, x, _bad(x))
    return make


def _coupling(mask, **kw):
    return _layer(lambda **a: SplineCoupling(np.asarray(mask), **a), **kw)


def _autoregressive(dim, **kw):
    return _layer(lambda **a: MaskedSplineAutoregressive(dim, **a), **kw)


def _stack(build, scale=0.3, n=5):
    """Every layer's transformed inputs away from that layer's knots."""
    def make(rng):
        b = build(rng)
        p = perturbed(b, rng, scale)
        for _ in range(200):
            x = rng.standard_normal((n, b.dim))
            h, ok = x, True
            for i, layer in enumerate(b.layers):
                sub = {k[len(f"{i}."):]: v for k, v in p.items() if k.startswith(f"{i}.")}
                kx, idx = _transformed_knots(layer, sub, h)
                ok = ok and not _too_close(h[:, idx], kx).any()
                h = layer.forward(sub, h)[0]
            if ok:
                return Case(b, p, x, _bad(x))
        raise RuntimeError("could not place the test points away from the knots")
    return make


def _step(make, h):
    """``make`` with the central-difference step ``h``: on the unit interval the bins are 2B = 2-6 times
    narrower than the [-B, B] entries', and the logdet's third derivative (1/w^3) makes the O(h^2) truncation
    error of the 1e-5 step 1.5e-6 relative (measured, converging as h^2: 1.4e-8 at 1e-6, roundoff eps/h = 2e-10)."""
    def wrapped(rng):
        c = make(rng)
        c.tol = {**c.tol, "step": h}
        return c
    return wrapped


ENTRIES = {
    "spline_elementwise_bins": _elementwise(3, n_bins=5, bound=2.0),
    "spline_elementwise_bins_and_tails": _elementwise(4, n=8, tail_fraction=0.4, n_bins=8, bound=1.0),
    "spline_elementwise_min_sizes": _elementwise(2, scale=1.5, n_bins=4, bound=3.0, min_bin_width=0.1,
                                                 min_bin_height=0.05, min_derivative=0.3),
    "spline_elementwise_two_bins": _elementwise(1, n=6, scale=1.0, tail_fraction=0.3, n_bins=2, bound=1.5),
    "spline_elementwise_identity_init": _identity_init,
    "spline_coupling_half_2d": _coupling(nf.half_mask(2), n_bins=4, bound=2.0),
    "spline_coupling_half_2d_second": _coupling(nf.half_mask(2, first=False), n_bins=5, bound=3.0),
    "spline_coupling_half5_second_tanh_tails": _coupling(nf.half_mask(5, first=False), n_bins=3, bound=1.0,
                                                         activation="tanh"),
    # scale 0.3 below: at 0.4 these draws give bins whose slope is near the minimum derivative, where a
    # float32 inverse loses more than the harness's 1e-4 through the map's conditioning (1/slope), not a bug.
    "spline_coupling_alternating_elu": _coupling(nf.alternating_mask(4), n_bins=6, bound=2.5, activation="elu",
                                                 scale=0.3),
    "spline_coupling_irregular_leaky_min_sizes": _coupling([0, 1, 1, 0, 1], n_bins=4, bound=2.0,
                                                           activation="leaky_relu", min_bin_width=0.05,
                                                           min_bin_height=0.02, min_derivative=0.1),
    "spline_nsf_alternating": _stack(lambda rng: nsf(3, n_layers=3, n_bins=4, bound=2.0, hidden=(6,),
                                                     mask="alternating")),
    "spline_autoregressive_natural": _autoregressive(4, n_bins=5, bound=2.0, scale=0.3),
    "spline_autoregressive_reversed_tanh_tails": _autoregressive(3, n_bins=4, bound=1.0, hidden=(6, 6),
                                                                 activation="tanh", order="reversed"),
    "spline_autoregressive_random_order_elu": _autoregressive(5, n_bins=3, bound=2.5, hidden=(8,),
                                                              activation="elu", order="random"),
    "spline_autoregressive_dim1": _autoregressive(1, n_bins=6, bound=2.0, hidden=(4,)),
    # nflows' bounded spline (rational_quadratic_spline): [0, 1] onto itself, K+1 free derivatives, no tails
    "spline_bounded_elementwise": _step(_elementwise(3, n=8, scale=0.8, n_bins=5, tails=None), 1e-6),
    "spline_bounded_coupling_half_3d": _step(_coupling(nf.half_mask(3), n_bins=4, tails=None, scale=0.3), 1e-6),
    "spline_bounded_autoregressive_natural": _step(_autoregressive(2, n_bins=4, tails=None, scale=0.3), 1e-6),
    "spline_autoregressive_nsf_random": _stack(lambda rng: autoregressive_nsf(3, n_layers=2, n_bins=4, bound=2.0,
                                                                              hidden=(6,), order="random",
                                                                              rng=rng)),
}
