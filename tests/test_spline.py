"""What the harness cannot say about the rational-quadratic spline family (Durkan et al. 2019, arXiv:1906.04032):
monotonicity, identity tails, continuity at the knots and at +-B, points exactly on knots, the stability of the
inverse's root, the knot construction against an independent re-implementation, agreement with nflows, the
coupling's output layout, identity initialisation, and clear errors.

Tolerances (float64, eps = 2.2e-16) are stated where they are used, with their reason.
"""
import math

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import harness
import npflows as nf
from npflows.bijectors.spline import RQSpline, identity_raw_derivative, solve_bin
from registry import Case

EPS = np.finfo(np.float64).eps


def _raw(rng, shape, K, scale=1.0):
    return (scale * rng.standard_normal(shape + (K,)), scale * rng.standard_normal(shape + (K,)),
            scale * rng.standard_normal(shape + (K - 1,)))


def _spline_case(rng, dim=3, K=6, bound=2.0, scale=1.0, **kw):
    b = nf.RationalQuadraticSpline(dim, n_bins=K, bound=bound, **kw)
    rw, rh, rd = _raw(rng, (dim,), K, scale)
    return b, {"raw_widths": rw, "raw_heights": rh, "raw_derivatives": rd}


def _knots(b, p):
    return b.spline.knots(p["raw_widths"], p["raw_heights"], p["raw_derivatives"])


# ----------------------------------------------------------------------------- shape of the map
@pytest.mark.parametrize("K,scale,mins", [(8, 1.0, {}), (5, 3.0, {}), (4, 2.0, dict(min_bin_width=0.1,
                                          min_bin_height=0.1, min_derivative=0.5)), (16, 4.0, {})])
def test_monotone_and_finite_on_a_dense_grid(K, scale, mins):
    """Strictly increasing forward and inverse on a grid through every bin (spacing 4e-4 B: even the
    narrowest bin, 2B * 1e-3 wide, holds several points), with a finite logdet everywhere."""
    rng = np.random.default_rng(K)
    b, p = _spline_case(rng, dim=3, K=K, bound=2.5, scale=scale, **mins)
    kx, ky, _ = _knots(b, p)
    grid = np.linspace(-3.5, 3.5, 20001)
    x = np.sort(np.concatenate([grid[:, None].repeat(3, 1), kx.T]), axis=0)      # with every knot
    y, ld, _ = b.forward(p, x)
    assert np.all(np.diff(y, axis=0) > 0), "forward is not strictly increasing"
    assert np.all(np.isfinite(ld))
    yg = np.sort(np.concatenate([grid[:, None].repeat(3, 1), ky.T]), axis=0)
    xi, ldi = b.inverse(p, yg)
    assert np.all(np.diff(xi, axis=0) > 0), "inverse is not strictly increasing"
    assert np.all(np.isfinite(ldi))


def test_tails_are_exactly_the_identity():
    """Outside [-B, B]: y == x bitwise, logdet exactly 0, dx == dy and no parameter gradient, in both
    directions; just inside, the spline is in charge (y != x in general)."""
    rng = np.random.default_rng(1)
    b, p = _spline_case(rng, dim=2, K=5, bound=1.5)
    x = rng.choice([-1.0, 1.0], (7, 2)) * rng.uniform(1.5 + 1e-12, 40.0, (7, 2))
    x[0] = [np.nextafter(1.5, 2.0), np.nextafter(-1.5, -2.0)]
    y, ld, cache = b.forward(p, x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(ld, 0.0)
    xi, ldi = b.inverse(p, x)
    np.testing.assert_array_equal(xi, x)
    np.testing.assert_array_equal(ldi, 0.0)
    dy, dl = rng.standard_normal(x.shape), rng.standard_normal(7)
    dx, g = b.backward(p, dy, dl, cache)
    np.testing.assert_array_equal(dx, dy)
    for k in g:
        np.testing.assert_array_equal(g[k], 0.0)
    inside = b.forward(p, np.full((1, 2), 0.7))[0]
    assert np.all(inside != 0.7), "the test spline should not be the identity inside"


def test_knots_are_hit_exactly_and_value_and_derivative_are_continuous():
    """At an interior knot x_j the map gives the knot's y_j bitwise (xi = 0 of the right bin) and the slope
    delta_j; from the left bin (the float just below x_j, xi = 1 - O(eps)) the value differs by rounding only
    and the slope by rounding only.  Tolerances: a few ulps of B for values (a handful of roundings of O(B)
    quantities); for slopes 1e-12 relative on the knot and 1e-10 from the left, where 1 - xi carries an
    absolute rounding of eps amplified by |d log g / d xi|, which reaches ~1e3 in the narrowest bins of
    these parameters.  A jump of the slope would be O(1): the knot derivatives differ by tens of percent."""
    rng = np.random.default_rng(2)
    B, K = 2.0, 7
    b, p = _spline_case(rng, dim=2, K=K, bound=B, scale=1.5)
    kx, ky, kd = _knots(b, p)
    at = kx[:, 1:K].T.copy()                                       # (K-1, D): one knot per row
    below = np.nextafter(at, -np.inf)
    y_at, ld_at, _ = b.forward(p, at)
    y_below = b.forward(p, below)[0]
    np.testing.assert_array_equal(y_at, ky[:, 1:K].T)
    assert np.max(np.abs(y_below - y_at)) <= 8 * EPS * B * max(1.0, kd.max())
    # per-coordinate logdets: evaluate one coordinate at a time through a 1-D spline
    sp = b.spline
    for side, pts, rtol in (("at", at, 1e-12), ("below", below, 1e-10)):
        _, ld1, _ = sp.forward(pts, p["raw_widths"], p["raw_heights"], p["raw_derivatives"])
        np.testing.assert_allclose(np.exp(ld1), kd[:, 1:K].T, rtol=rtol, err_msg=f"slope {side} the knots")
    assert np.min(np.abs(np.diff(kd[:, 1:K], axis=1)) / kd[:, 2:K]) > 1e-3    # neighbours differ: a jump shows
    # at +-B: the value is +-B bitwise, the slope 1 from inside, and the identity just outside
    edge = np.array([[-B, B]])
    y, _, _ = b.forward(p, edge)
    np.testing.assert_array_equal(y, edge)
    _, ld_edge, _ = sp.forward(edge, p["raw_widths"], p["raw_heights"], p["raw_derivatives"])
    assert np.max(np.abs(ld_edge)) <= 1e-14
    inner = np.nextafter(edge, 0.0)
    _, ld_inner, _ = sp.forward(inner, p["raw_widths"], p["raw_heights"], p["raw_derivatives"])
    assert np.max(np.abs(ld_inner)) <= 1e-12


def _on_knot_case(rng):
    b, p = _spline_case(rng, dim=3, K=5, bound=2.0, scale=0.8)
    kx = _knots(b, p)[0]
    x = np.concatenate([kx.T, [[0.3, -0.4, 1.1]]])              # every knot of every coordinate, +-B included
    return Case(b, p, x)


def test_points_exactly_on_knots_pass_the_checks_that_do_not_straddle():
    """Round trip, numpy vs traced path, brute-force logdet and backward vs autograd on points exactly on
    every knot and at +-B.  Not here: the harness's central differences (they straddle the knot; see
    registry_spline.py) and its float32 comparison (rounding a knot point to float32 may move it into the
    neighbouring bin, whose logdet gradient differs by O(1): the float64 answer is not the float32 target)."""
    case = _on_knot_case(np.random.default_rng(3))
    harness.check_round_trip(case)
    harness.check_numpy_path_matches_traced(case)
    harness.check_logdet_bruteforce(case)
    harness.check_backward_autograd(case, np.random.default_rng(4))


def test_backward_on_knots_matches_one_sided_differences():
    """On a knot the backward is that of the bin on the right (at x = B, of the last bin, on the left).
    Second-order one-sided differences into that bin, (-3 f(x) + 4 f(x + h) - f(x + 2h)) / 2h, agree to
    O(h^2 |f'''|) + O(eps |f| / h).  With h = 1e-6 that is < 1e-4 + 1e-9 even for |f'''| ~ 1e8 in the
    narrowest bins here; tolerance 1e-6 relative to max(1, |f'|) (gradients here reach ~1e3)."""
    rng = np.random.default_rng(6)
    case = _on_knot_case(rng)
    b, p, x = case.bijector, case.params, case.x
    B = b.spline.bound
    y, ld, cache = b.forward(p, x)
    dy, dl = rng.standard_normal(y.shape), rng.standard_normal(ld.shape)
    dx, _ = b.backward(p, dy, dl, cache)
    h = 1e-6
    step = np.where(x >= B, -h, h)                                  # into the bin whose formulas are used
    f = lambda xs: harness.objective(b, p, xs, dy, dl)              # noqa: E731
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x1, x2 = x.copy(), x.copy()
            x1[i, j] += step[i, j]
            x2[i, j] += 2 * step[i, j]
            fd = (-3 * f(x) + 4 * f(x1) - f(x2)) / (2 * step[i, j])
            assert abs(dx[i, j] - fd) <= 1e-6 * max(1.0, abs(fd)), (i, j, dx[i, j], fd)


def test_logdet_gradient_jumps_at_a_knot():
    """Why knots are excluded from the central-difference check: the slope of the logdet differs from the
    left bin to the right bin (the second derivative of a rational-quadratic spline is discontinuous)."""
    rng = np.random.default_rng(7)
    b, p = _spline_case(rng, dim=1, K=4, bound=2.0, scale=1.0)
    xk = _knots(b, p)[0][0, 2]
    h = 1e-6
    ld = lambda v: float(b.forward(p, np.array([[v]]))[1][0])     # noqa: E731
    right, left = (ld(xk + h) - ld(xk)) / h, (ld(xk) - ld(xk - h)) / h
    assert abs(right - left) > 1e-3


# ----------------------------------------------------------------------------- the inverse's root
def _ref_root(delta, h, s, d0, d1):
    """The root in [0, 1] at 60 digits, from the same float inputs."""
    import mpmath
    with mpmath.workdps(60):
        dl, h, s, d0, d1 = map(mpmath.mpf, (float(delta), float(h), float(s), float(d0), float(d1)))
        c2 = d0 + d1 - 2 * s
        a, b, c = dl * c2 + h * (s - d0), h * d0 - dl * c2, -s * dl
        if a == 0:
            return float(-c / b)
        r = [(-b + sg * mpmath.sqrt(b * b - 4 * a * c)) / (2 * a) for sg in (1, -1)]
        return float(min(r, key=lambda v: abs(v - mpmath.mpf("0.5"))))


def test_inverse_root_is_accurate_near_bin_edges_where_the_textbook_root_is_not():
    """``solve_bin`` against a 60-digit reference, for bins from nearly linear (a = 0 exactly: the textbook
    root (-b + sqrt(b^2 - 4ac)) / 2a is 0/0) to extreme slopes (min derivative 1e-3, s from 1e-3 to 1e3), at
    rises delta/h from 1e-15 to 1.  Tolerance 1e-12 relative in xi: the stable form has no cancellation
    (see RQSpline's Notes), so the error is a few eps times the conditioning of the root.  The textbook form
    fails this tolerance (or returns NaN) on the same grid: the test can tell the two apart."""
    pytest.importorskip("mpmath")
    fracs = [0.0, 1e-15, 1e-12, 1e-9, 1e-6, 1e-3, 0.1, 0.5, 0.9, 1 - 1e-9, 1.0]
    bins = [(1.0, 1.0, 1.0), (1.0, 1e-3, 1e-3), (1.0, 1e-3, 5.0), (1.0, 5.0, 1e-3), (1e-3, 1.0, 1.0),
            (1e3, 1.0, 1.0), (2.0, 1e-3, 30.0), (0.3, 2.0, 0.7)]
    worst, textbook_worst = 0.0, 0.0
    for s, d0, d1 in bins:
        h = 0.7
        for f in fracs:
            delta = f * h
            xi = float(solve_bin(np.float64(delta), h, s, d0, d1))
            ref = _ref_root(delta, h, s, d0, d1)
            err = abs(xi - ref) / max(abs(ref), 1e-300) if ref != 0 else abs(xi)
            worst = max(worst, err)
            c2 = d0 + d1 - 2 * s
            a, b_, c = delta * c2 + h * (s - d0), h * d0 - delta * c2, -s * delta
            with np.errstate(all="ignore"):
                naive = (-b_ + np.sqrt(np.float64(b_ * b_ - 4 * a * c))) / (2 * a)
            terr = abs(naive - ref) / max(abs(ref), 1e-300) if ref != 0 else abs(naive)
            textbook_worst = max(textbook_worst, terr if np.isfinite(terr) else np.inf)
    assert worst <= 1e-12, worst
    assert textbook_worst > 1e-6, "the grid does not exercise the cancellation it is meant to"


def test_inverse_root_is_accurate_at_the_top_of_a_bin_with_a_steep_end():
    """Issue 9's example: a bin of width w = 1, height h = 1e-3 (slope s = 1e-3), start derivative 1e-3 and end
    derivative 234, at the rise y - y_k that the forward gives at xi = 0.999998 (evaluated in 50 digits, then
    rounded).  There b = h d0 - delta c2 < 0, and the single form 2c / (-b - sqrt(b^2 - 4ac)) subtracts two
    numbers that agree to ~5 digits.  Tolerance: 2 ulp of the 50-digit root of the quadratic at the stored
    (rounded) rise; measured 0 ulp.  The former single form gave 0.9999980000069184: an error of 6.9e-12
    relative, 62315 ulp (6.6e-12 = 59145 ulp with d0 = 1, 1.7e-11 with d0 = 0.5)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    h, s, d0, d1 = 1e-3, 1e-3, 1e-3, 234.0
    xi_in = mpmath.mpf(0.999998)
    tau = xi_in * (1 - xi_in)
    delta = float(h * (s * xi_in ** 2 + d0 * tau) / (s + (d0 + d1 - 2 * s) * tau))
    D, H, S, D0, D1 = map(mpmath.mpf, (delta, h, s, d0, d1))
    c2 = D0 + D1 - 2 * S
    a, b, c = D * c2 + H * (S - D0), H * D0 - D * c2, -S * D
    assert b < 0                                             # the regime of the issue
    ref = (-b + mpmath.sqrt(b * b - 4 * a * c)) / (2 * a)
    xi = solve_bin(np.float64(delta), h, s, d0, d1)
    assert abs(mpmath.mpf(float(xi)) - ref) <= 2 * np.spacing(float(ref)), (float(xi), ref)
    # float32 in, float32 out, within 2 float32 ulp of the same root
    xi32 = solve_bin(np.float32(delta), np.float32(h), np.float32(s), np.float32(d0), np.float32(d1), np)
    assert xi32.dtype == np.float32 and abs(float(xi32) - float(ref)) <= 2 * np.spacing(np.float32(ref))


def test_inverse_logdet_is_accurate_at_the_top_of_a_steep_bin():
    """Near the top of a bin (xi = 1 - 1e-4 ... 1 - 5e-7) whose end derivative 234 dwarfs its slope 1e-3, the
    inverse logdet against the 50-digit value at the stored (rounded) output: 1 - xi by subtraction would carry
    an absolute error of an ulp of 1 into tau, D and M; the inverse takes it from the mirrored bin instead (see
    RQSpline's Notes).  Tolerance 1e-13 relative (measured worst 1.0e-14; 1.2e-11 with 1 - xi subtracted)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    worst = 0.0
    for d0v in (1e-3, 0.5, 1.0, 3.0):
        for w in (1.0, 0.3):
            for om in ("2e-6", "5e-7", "1e-5", "1e-4"):
                kx, ky, d = np.array([0.0, w, 2.0]), np.array([0.0, 1e-3 * w, 2.0]), np.array([d0v, 234.0, 1.0])
                h, s, d0, d1 = mpmath.mpf(1e-3 * w), mpmath.mpf(1e-3 * w) / w, mpmath.mpf(d0v), mpmath.mpf(234)
                c2 = d0 + d1 - 2 * s
                xi0 = 1 - mpmath.mpf(om)
                t0 = xi0 * (1 - xi0)
                y = float(h * (s * xi0 ** 2 + d0 * t0) / (s + c2 * t0))
                D = mpmath.mpf(y)
                a, b, c = D * c2 + h * (s - d0), h * d0 - D * c2, -s * D
                xi = (-b + mpmath.sqrt(b * b - 4 * a * c)) / (2 * a)          # b < 0 here
                tau = xi * (1 - xi)
                ref = -mpmath.log(s ** 2 * (d1 * xi ** 2 + 2 * s * tau + d0 * (1 - xi) ** 2) / (s + c2 * tau) ** 2)
                _, ld = nf.rational_quadratic_spline_knots(np.array([y]), kx, ky, d, inverse=True, tails=None)
                worst = max(worst, float(abs(ld[0] - ref) / abs(ref)))
    assert worst <= 1e-13, worst


def test_inverse_round_trips_at_the_edges_of_every_bin():
    """y at each y-knot and a few ulps to either side: inverse lands in the right bin, stays monotone, and
    forward(inverse(y)) returns y to 4 ulps of B."""
    rng = np.random.default_rng(8)
    b, p = _spline_case(rng, dim=2, K=6, bound=3.0, scale=2.0)
    ky = _knots(b, p)[1]
    offsets = np.array([-1e-9, -1e-13, -4 * EPS, 0.0, 4 * EPS, 1e-13, 1e-9])
    y = np.sort((ky.T[:, None, :] + offsets[None, :, None] * 3.0).reshape(-1, 2), axis=0)
    y = np.clip(y, -3.0, 3.0)
    x, _ = b.inverse(p, y)
    assert np.all(np.diff(x, axis=0) >= 0)
    y2 = b.forward(p, x)[0]
    assert np.max(np.abs(y2 - y)) <= 4 * EPS * 3.0 * 10, np.max(np.abs(y2 - y))


# ----------------------------------------------------------------------------- the construction, independently
def _ref_knots(raw, min_size, B, dtype):
    """Steps 1-6 of RQSpline's Notes for one scalar's row of unnormalised sizes, written from the paper's
    description (softmax, affine minimum, cumulative sum from -B, end knots pinned) in scalar arithmetic of
    ``dtype``; the exponentials are the platform's (the same ``np.exp`` call), everything else is scalar."""
    f = np.dtype(dtype).type
    K = raw.shape[-1]
    e = np.exp(raw - raw.max())
    Z = e[0]
    for v in e[1:]:
        Z = f(Z + v)
    cw, mw = f(1.0 - min_size * K), f(min_size)
    total, knots = f(0.0), [f(-B)]
    for j in range(K - 1):
        total = f(total + f(mw + f(cw * f(e[j] / Z))))
        knots.append(f(f(f(2.0 * B) * total) + f(-B)))
    return np.array(knots + [f(B)], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_knot_construction_is_reproduced_bit_for_bit(dtype):
    """The knots equal bitwise an independent scalar re-implementation of the documented steps, in float64
    and float32; the end knots are exactly +-B and the end derivatives exactly 1."""
    rng = np.random.default_rng(9)
    K, B = 7, 2.5
    sp = RQSpline(K, B, min_bin_width=0.01, min_bin_height=0.002, min_derivative=0.05)
    rw, rh, rd = (a.astype(dtype) for a in _raw(rng, (4,), K, 2.0))
    kx, ky, kd = sp.knots(rw, rh, rd)
    assert kx.dtype == ky.dtype == kd.dtype == dtype
    for i in range(4):
        np.testing.assert_array_equal(kx[i], _ref_knots(rw[i], 0.01, B, dtype))
        np.testing.assert_array_equal(ky[i], _ref_knots(rh[i], 0.002, B, dtype))
    assert np.all(kx[:, 0] == -B) and np.all(kx[:, -1] == B) and np.all(ky[:, 0] == -B) and np.all(ky[:, -1] == B)
    assert np.all(kd[:, 0] == 1.0) and np.all(kd[:, -1] == 1.0)
    sp_ref = [[0.05 + (max(v, 0.0) + math.log1p(math.exp(-abs(v)))) for v in row] for row in rd.astype(float)]
    np.testing.assert_allclose(kd[:, 1:-1], np.array(sp_ref), rtol=2 * np.finfo(dtype).eps)


def _paper_spline(x, kx, ky, kd):
    """Durkan et al. eq. 4 (value) and eq. 5 (derivative) for one scalar, bins located by a linear scan,
    identity outside [kx[0], kx[-1]]."""
    K = len(kx) - 1
    if x < kx[0] or x > kx[-1]:
        return x, 1.0
    k = max(j for j in range(K) if x >= kx[j])
    w, h = kx[k + 1] - kx[k], ky[k + 1] - ky[k]
    s, xi = h / w, (x - kx[k]) / w
    den = s + (kd[k + 1] + kd[k] - 2 * s) * xi * (1 - xi)
    y = ky[k] + h * (s * xi ** 2 + kd[k] * xi * (1 - xi)) / den
    g = s ** 2 * (kd[k + 1] * xi ** 2 + 2 * s * xi * (1 - xi) + kd[k] * (1 - xi) ** 2) / den ** 2
    return y, g


def test_values_and_slopes_match_the_paper_formulas():
    """Value and log-slope against eq. 4-5 evaluated in scalar Python on the code's knots (checked bitwise
    above), at random points, knots and tails.  Tolerance 1e-13 (relative to max(1, |ref|)): the same
    formulas with a different order of a dozen roundings."""
    rng = np.random.default_rng(10)
    b, p = _spline_case(rng, dim=3, K=6, bound=2.0, scale=1.5)
    kx, ky, kd = _knots(b, p)
    x = np.concatenate([rng.uniform(-2.5, 2.5, (20, 3)), kx.T])
    sp = b.spline
    y, ld, _ = sp.forward(x, p["raw_widths"], p["raw_heights"], p["raw_derivatives"])
    for n in range(x.shape[0]):
        for d in range(3):
            yr, gr = _paper_spline(float(x[n, d]), kx[d].tolist(), ky[d].tolist(), kd[d].tolist())
            assert abs(y[n, d] - yr) <= 1e-13 * max(1.0, abs(yr))
            assert abs(ld[n, d] - math.log(gr)) <= 1e-13 * max(1.0, abs(math.log(gr)))


# ----------------------------------------------------------------------------- nflows, the reference code
def test_agrees_with_nflows_values_and_gradients():
    """nflows' ``unconstrained_rational_quadratic_spline`` (linear tails) in float64: values and logdets of
    both directions to 1e-12 (they differ only in the rounding of softmax sums, of the end derivatives, which
    nflows computes as 1 + O(eps), and of torch's softplus); and our hand-derived backward against torch's
    autograd through nflows, for the input and all three unnormalised arrays, to 1e-10 (the same gradient,
    relative to max(1, |g|); a few hundred roundings through cumsum and softmax)."""
    torch = pytest.importorskip("torch")
    rq = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
    rng = np.random.default_rng(11)
    N, D, K, B = 40, 3, 8, 3.0
    rw, rh, rd = _raw(rng, (N, D), K, 1.5)
    x = rng.uniform(-4.0, 4.0, (N, D))
    sp = RQSpline(K, B)
    kx = sp.knots(rw, rh, rd)[0]
    # some points exactly on knots and +-B: on the larger of our knot and nflows' (its torch softmax sums in
    # its own order, so a knot can differ by an ulp; a point between the two would be in different bins and
    # get different one-sided pullbacks, a convention, not an error), so both put it in the bin on the right
    tw = torch.softmax(torch.tensor(rw), -1)
    theirs = (2 * B * torch.nn.functional.pad(torch.cumsum(1e-3 + (1 - 1e-3 * K) * tw, -1), (1, 0)) - B).numpy()
    theirs[..., 0], theirs[..., -1] = -B, B
    x[:K + 1, 0] = np.maximum(kx, theirs)[np.arange(K + 1), 0, np.arange(K + 1)]
    y, ld, cache = sp.forward(x, rw, rh, rd)
    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)   # noqa: E731
    tx, tw, th, td = t(x), t(rw), t(rh), t(rd)
    ty, tld = rq.unconstrained_rational_quadratic_spline(tx, tw, th, td, inverse=False, tails="linear",
                                                          tail_bound=B)
    harness.close(y, ty.detach().numpy(), 1e-12, "forward value vs nflows")
    harness.close(ld, tld.detach().numpy(), 1e-12, "forward logdet vs nflows")
    xi, ldi = sp.inverse(y, rw, rh, rd)
    txi, tldi = rq.unconstrained_rational_quadratic_spline(torch.tensor(y), torch.tensor(rw), torch.tensor(rh),
                                                            torch.tensor(rd), inverse=True, tails="linear",
                                                            tail_bound=B)
    harness.close(xi, txi.numpy(), 1e-12, "inverse vs nflows")
    harness.close(ldi, tldi.numpy(), 1e-12, "inverse logdet vs nflows")
    dy, dl = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    ((ty * torch.tensor(dy)).sum() + (tld * torch.tensor(dl)).sum()).backward()
    dx, (gw, gh, gd) = sp.backward(dy, dl, cache)
    for ours, theirs, what in ((dx, tx, "x"), (gw, tw, "widths"), (gh, th, "heights"), (gd, td, "derivatives")):
        harness.close(ours, theirs.grad.numpy(), 1e-10, f"gradient of {what} vs torch autograd through nflows")


def test_functional_form_matches_the_bijector():
    rng = np.random.default_rng(12)
    b, p = _spline_case(rng, dim=2, K=4, bound=2.0)
    x = rng.uniform(-3, 3, (5, 2))
    out, ld = nf.rational_quadratic_spline(x, p["raw_widths"], p["raw_heights"], p["raw_derivatives"], bound=2.0)
    y, logdet, _ = b.forward(p, x)
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(ld.sum(1), logdet)
    back, _ = nf.rational_quadratic_spline(out, p["raw_widths"], p["raw_heights"], p["raw_derivatives"],
                                           inverse=True, bound=2.0)
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="rational_quadratic_spline"):
        nf.rational_quadratic_spline(x, p["raw_widths"], p["raw_heights"], p["raw_heights"])


# ----------------------------------------------------------------------------- layers, builders, errors
def test_coupling_layout_is_as_documented():
    """With zero last weights the conditioner outputs its last bias for every input: laid out as
    (d2, 3K - 1) = [widths K | heights K | derivatives K-1] per transformed coordinate, the coupling must
    give exactly the elementwise spline of those parameters on x2, and leave x1 untouched."""
    rng = np.random.default_rng(13)
    K, mask = 4, np.array([0, 1, 0, 1, 0])
    c = nf.SplineCoupling(mask, n_bins=K, bound=2.0, hidden=(5,))
    p = c.init(rng)
    last = c.net._b[-1]
    p[last] = rng.standard_normal(p[last].shape)
    raw = p[last].reshape(3, 3 * K - 1)
    x = rng.uniform(-2.5, 2.5, (6, 5))
    y, ld, _ = c.forward(p, x)
    ref, ref_ld = nf.rational_quadratic_spline(x[:, [0, 2, 4]], raw[:, :K], raw[:, K:2 * K], raw[:, 2 * K:],
                                               bound=2.0)
    np.testing.assert_array_equal(y[:, [1, 3]], x[:, [1, 3]])
    np.testing.assert_array_equal(y[:, [0, 2, 4]], ref)
    np.testing.assert_allclose(ld, ref_ld.sum(1), rtol=0, atol=1e-15)


@pytest.mark.parametrize("make", [lambda: nf.RationalQuadraticSpline(3, n_bins=6, bound=2.0),
                                  lambda: nf.SplineCoupling(nf.alternating_mask(3), n_bins=5, hidden=(8,)),
                                  lambda: nf.nsf(3, n_layers=3, n_bins=8, hidden=(8, 8)),
                                  lambda: nf.MaskedSplineAutoregressive(3, n_bins=5, hidden=(8,), order="reversed"),
                                  lambda: nf.autoregressive_nsf(3, n_layers=2, n_bins=4, hidden=(8,))])
def test_initialisation_is_the_identity(make):
    """Equal bins and unit knot derivatives: y = x and logdet 0 to rounding (1e-14), inside and outside."""
    b = make()
    rng = np.random.default_rng(14)
    p = b.init(rng)
    x = rng.uniform(-4.0, 4.0, (50, 3))
    y, ld, _ = b.forward(p, x)
    assert np.max(np.abs(y - x)) <= 1e-14 and np.max(np.abs(ld)) <= 1e-14
    p32 = nf.cast_params(p, np.float32)
    y32 = b.forward(p32, x.astype(np.float32))[0]
    assert y32.dtype == np.float32 and np.max(np.abs(y32 - x)) <= 4e-6


def test_nsf_alternates_masks_and_names_parameters():
    b = nf.nsf(2, n_layers=4, n_bins=8, bound=4.0, hidden=(16, 16))
    assert [layer.mask.tolist() for layer in b.layers] == [[True, False], [False, True]] * 2
    assert all(layer.spline.bound == 4.0 and layer.spline.n_bins == 8 for layer in b.layers)
    shapes = b.param_shapes()
    assert shapes["0.net.W0"] == (1, 16) and shapes["3.net.W2"] == (16, 23) and shapes["3.net.b2"] == (23,)


def test_flow_training_step_gradient_matches_autograd():
    """The whole NormalizingFlow objective through nsf: the hand-derived gradient against autograd (1e-8)."""
    rng = np.random.default_rng(15)
    flow = nf.NormalizingFlow(nf.nsf(2, n_layers=2, n_bins=4, bound=3.0, hidden=(6,)), nf.StandardNormal(2))
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}
    x = nf.data.two_moons(16, rng)
    loss, grads = flow.loss_and_grad(params, x)

    def ref(pr):
        z, logdet, _ = flow.bijector.forward(pr, x, xp=anp)
        return -anp.mean(-0.5 * anp.sum(z * z, axis=1) - np.log(2 * np.pi) + logdet)
    g = autograd.grad(ref)(params)
    assert abs(loss - ref(params)) <= 1e-12
    for k in params:
        harness.close(grads[k], g[k], 1e-8, k)


@pytest.mark.parametrize("make,match", [
    (lambda: nf.RationalQuadraticSpline(2, n_bins=1), "RationalQuadraticSpline: n_bins"),
    (lambda: nf.RationalQuadraticSpline(2, n_bins=2.5), "n_bins"),
    (lambda: nf.RationalQuadraticSpline(0), "dim"),
    (lambda: nf.RationalQuadraticSpline(2, bound=0.0), "bound"),
    (lambda: nf.RationalQuadraticSpline(2, bound=np.inf), "bound"),
    (lambda: nf.RationalQuadraticSpline(2, n_bins=5, min_bin_width=0.2), "min_bin_width"),
    (lambda: nf.RationalQuadraticSpline(2, min_bin_height=-0.1), "min_bin_height"),
    (lambda: nf.RationalQuadraticSpline(2, min_derivative=-1.0), "min_derivative"),
    (lambda: nf.SplineCoupling([1, 0], n_bins=1), "SplineCoupling: n_bins"),
    (lambda: nf.SplineCoupling([1, 1]), "SplineCoupling: mask"),
    (lambda: nf.nsf(2, n_layers=0), "nsf: n_layers"),
    (lambda: nf.nsf(2, mask="diagonal"), "mask"),
    (lambda: nf.MaskedSplineAutoregressive(3, n_bins=1), "MaskedSplineAutoregressive: n_bins"),
    (lambda: nf.MaskedSplineAutoregressive(3, order="random"), "MaskedSplineAutoregressive: .*rng"),
    (lambda: nf.MaskedSplineAutoregressive(3, order=[0, 0, 1]), "MaskedSplineAutoregressive: .*permutation"),
    (lambda: nf.autoregressive_nsf(3, order="sideways"), "autoregressive_nsf: unknown order"),
    (lambda: nf.autoregressive_nsf(3, order="random"), "autoregressive_nsf: .*rng"),
])
def test_bad_construction_raises_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_non_finite_parameters_raise_instead_of_returning_nan():
    rng = np.random.default_rng(16)
    b, p = _spline_case(rng, dim=2, K=4, bound=2.0)
    p["raw_heights"][1, 2] = np.nan
    x = rng.uniform(-1, 1, (3, 2))
    for call in (b.forward, b.inverse):
        with pytest.raises(ValueError, match=r"RationalQuadraticSpline: parameter 'raw_heights' \(shape \(2, 4\)\) "
                                             r"contains 1 NaN or inf value\(s\) \(the first at index \(1, 2\)\)"):
            call(p, x)


def test_float32_stays_float32_through_knots_inverse_and_backward():
    rng = np.random.default_rng(17)
    b, p = _spline_case(rng, dim=2, K=5, bound=2.0)
    p32 = nf.cast_params(p, np.float32)
    x = rng.uniform(-3, 3, (4, 2)).astype(np.float32)
    y, ld, cache = b.forward(p32, x)
    xi, ldi = b.inverse(p32, y)
    dx, g = b.backward(p32, np.ones_like(y), np.ones_like(ld), cache)
    assert all(a.dtype == np.float32 for a in (y, ld, xi, ldi, dx, *g.values()))
    assert all(a.dtype == np.float32 for a in _knots(b, p32))


# ----------------------------------------------------------------------------- the autoregressive layer
def _ar_case(rng, order="random", D=4, K=5):
    b = nf.MaskedSplineAutoregressive(D, n_bins=K, bound=2.0, hidden=(9, 9), activation="tanh", order=order,
                                      rng=rng)
    p = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    return b, p, rng.uniform(-1.9, 1.9, (3, D))          # inside [-B, B]: tail entries are exact at once


def test_autoregressive_jacobian_is_triangular_in_the_order_with_the_slopes_on_the_diagonal():
    """From the brute-force Jacobian (autograd on the traced code), not from the masks: in the layer's order
    it is lower triangular, its diagonal is exp(l_i) (the spline slopes, 1e-12), and the strictly lower part is
    not zero (the conditioner is really used)."""
    rng = np.random.default_rng(20)
    b, p, x = _ar_case(rng)
    order = b.order
    sp = b.spline
    for n in range(x.shape[0]):
        J = autograd.jacobian(lambda v: b.forward(p, anp.reshape(v, (1, -1)), xp=anp)[0][0])(x[n])
        Jo = J[np.ix_(order, order)]
        np.testing.assert_array_equal(np.triu(Jo, 1), 0.0)
        assert np.abs(np.tril(Jo, -1)).max() > 1e-3
        out = b.net.forward(p, x[n:n + 1])[0]
        _, ld, _ = sp.forward(x[n:n + 1], *b._raw(out, np))
        np.testing.assert_allclose(np.diag(J), np.exp(ld[0]), rtol=1e-12)


def test_autoregressive_inverse_needs_all_D_passes():
    """After p passes the coordinates of degree <= p are exact and the others are not yet (in general); D
    passes give the inverse (round trip 1e-10, the harness's tolerance)."""
    rng = np.random.default_rng(21)
    b, p, x = _ar_case(rng, order="natural")
    y = b.forward(p, x)[0]
    for passes in range(1, b.dim + 1):
        xp_, _ = b.solve(p, y, passes)
        exact = np.abs(xp_ - x) <= 1e-10 * np.abs(x).max()
        assert exact[:, :passes].all(), passes
        if passes < b.dim:
            assert not exact[:, passes:].all(), f"{passes} passes already solved everything"
    xi, ldi = b.inverse(p, y)
    harness.close(xi, x, 1e-10, "inverse")
    harness.close(-ldi, b.forward(p, x)[1], 1e-10, "inverse logdet")


def test_autoregressive_layout_is_as_documented():
    """With zero output weights MADE returns its last bias b for every input; column j*D + i is parameter j
    of coordinate i, so coordinate i is the elementwise spline of b.reshape(3K-1, D)[:, i]."""
    rng = np.random.default_rng(22)
    D, K = 3, 4
    b = nf.MaskedSplineAutoregressive(D, n_bins=K, bound=2.0, hidden=(6,))
    p = b.init(rng)
    last = b.net._b[-1]
    p[last] = rng.standard_normal(p[last].shape)
    raw = p[last].reshape(3 * K - 1, D).T                            # (D, 3K-1)
    x = rng.uniform(-2.5, 2.5, (5, D))
    y, ld, _ = b.forward(p, x)
    ref, ref_ld = nf.rational_quadratic_spline(x, raw[:, :K], raw[:, K:2 * K], raw[:, 2 * K:], bound=2.0)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_allclose(ld, ref_ld.sum(1), rtol=0, atol=1e-15)


def test_autoregressive_nsf_alternates_orders():
    b = nf.autoregressive_nsf(3, n_layers=3, n_bins=4, hidden=(8,))
    assert [layer.order.tolist() for layer in b.layers] == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]


def test_demo_script_runs(tmp_path):
    """Smoke test of scripts/demo_spline.py with tiny settings (the measured figures are in its docstring and
    the closing note; nothing about the likelihood is asserted at 100 steps)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "scripts/demo_spline.py", "--quick", "--no-plots", "--layers", "2",
                          "--hidden", "8", "--out", str(tmp_path)], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "two_moons NSF: train LL" in out.stdout and (tmp_path / "two_moons_nsf.npz").exists()
