"""Gaussianization (RBIG, Laparra et al. 2011): what the shared harness cannot say.

* the special functions of the stable tail formulas against mpmath, and the marginal map itself against a
  50-digit evaluation of its definition from |z| = 0 to 1e150;
* the logdet against central differences of the map (independent of the first-order slopes that the traced
  path attaches to the special functions, which the harness's autograd Jacobian relies on);
* the NumPy path's closed forms against the stable path entry by entry, on both sides of their thresholds;
* fit_rbig: gradient-free, deterministic given the rng, a training log-likelihood that rises over the layers and
  equals the flow's own log_prob, save/load, a Gaussian's log-density recovered, bad input refused.
"""
import math

import mpmath as mp
import numpy as np
import pytest

import npflows as nf
from npflows.bijectors import gaussianization as G
from npflows.bijectors.gaussianization import MarginalGaussianization, fit_marginal, fit_rbig


# --------------------------------------------------------------------------- mpmath references
def _mp_log_ncdf(t):
    """log Phi(t) at the working precision for any real t (the Mills-ratio continued fraction below -1e3,
    where mpmath's erfc overflows its integer arithmetic for huge arguments)."""
    if t < -1000:
        x = -t
        tail = mp.mpf(0)
        for j in range(80, 0, -1):
            tail = j / (x + tail)
        return -x * x / 2 - mp.log(mp.sqrt(2 * mp.pi)) - mp.log(x + tail)
    return mp.log(mp.ncdf(t))


def _mp_marginal(mu, s, logits, x):
    """(y, log f(x) - log phi(y)) of one coordinate, by the definition, at enough digits that the squares of
    |z| up to 1e150 cancel to 40 correct digits."""
    zmax = max(abs((mp.mpf(x) - mp.mpf(m)) / mp.exp(mp.mpf(b))) for m, b in zip(mu, s))
    with mp.workdps(60 + int(2 * mp.log10(zmax + 1))):
        lg = [mp.mpf(v) for v in logits]
        lse = mp.log(mp.fsum(mp.exp(v) for v in lg))
        lw = [v - lse for v in lg]
        z = [(mp.mpf(x) - mp.mpf(m)) / mp.exp(mp.mpf(b)) for m, b in zip(mu, s)]
        lF = mp.log(mp.fsum(mp.exp(w + _mp_log_ncdf(v)) for w, v in zip(lw, z)))
        lS = mp.log(mp.fsum(mp.exp(w + _mp_log_ncdf(-v)) for w, v in zip(lw, z)))
        sign = 1
        if lS < lF:
            lF, sign = lS, -1
        y = -mp.sqrt(-2 * lF) if lF < -1 else mp.mpf(0)
        for _ in range(500):
            step = (_mp_log_ncdf(y) - lF) / mp.exp(-y * y / 2 - mp.log(mp.sqrt(2 * mp.pi)) - _mp_log_ncdf(y))
            y -= step
            if abs(step) < mp.mpf(10) ** (-45) * (1 + abs(y)):
                break
        logf = mp.log(mp.fsum(mp.exp(w - mp.mpf(b) - v * v / 2) for w, v, b in zip(lw, z, s))) \
            - mp.log(mp.sqrt(2 * mp.pi))
        return float(sign * y), float(logf + y * y / 2 + mp.log(mp.sqrt(2 * mp.pi)))


# --------------------------------------------------------------------------- special functions
def test_mills_ratio_helpers_against_mpmath():
    """log_mills, log_mills_prime (continued fraction below -3, direct above) and inv_mills to a few ulps
    (tolerance 2e-14 relative: each is a handful of correctly rounded operations, or 64 continued-fraction
    terms, which converge to 2e-16 at t = -3 and faster beyond)."""
    t = np.concatenate([-np.geomspace(1e-3, 1e12, 60), [0.0], np.linspace(0.01, 30.0, 30)])
    with mp.workdps(60):
        L, Lp, im = [], [], []
        for v in t:
            v = mp.mpf(v)
            m = mp.ncdf(v) / mp.npdf(v)
            L.append(float(mp.log(m)))
            Lp.append(float(v + 1 / m) if v > -3 else None)
            im.append(float(1 / m))
        for i, v in enumerate(t):                       # L'(t) = (1 + t m)/m needs more digits in the deep tail
            if Lp[i] is None:
                with mp.workdps(60 + int(2 * math.log10(abs(v) + 1))):
                    vv = mp.mpf(v)
                    m = mp.erfc(-vv / mp.sqrt(2)) / 2 / mp.npdf(vv)
                    Lp[i] = float((1 + vv * m) / m)
    L, Lp, im = map(np.array, (L, Lp, im))
    assert np.max(np.abs(G.log_mills(t) - L) / np.maximum(np.abs(L), 1.0)) < 2e-14
    assert np.max(np.abs(G.log_mills_prime(t) - Lp) / np.abs(Lp)) < 2e-14
    # 1/m(t) is exp of an argument of size log(1 + |t|) (t < 0) or t^2/2 (t > 0), whose rounding it carries:
    # a relative (8 + log(1 + |t|) + t^2) eps
    bound = 2.2e-16 * (8.0 + np.log1p(np.abs(t)) + np.maximum(t, 0.0) ** 2)
    assert np.all(np.abs(G.inv_mills(t) - im) / im < bound)


def _layer_1d():
    b = MarginalGaussianization(1, n_components=3)
    p = {"centers": np.array([[-1.0, 0.3, 2.5]]), "log_bandwidth": np.log([[0.7, 0.4, 1.3]]),
         "logits": np.array([[0.2, -0.5, 0.1]])}
    return b, p


def test_marginal_map_is_accurate_from_the_centre_to_far_tails():
    """y and the logdet against the 50-digit definition for |z| from 0 to 1e150 on both sides (z in units of the
    widest bandwidth beyond the outermost centres): y to 4e-16 relative, the logdet to 4 eps (1 + log(1 + |z|))
    of max(1, |.|) (a few roundings of terms of size log|z| <= 350).  The naive log f(x) - log phi(y) would lose everything
    beyond |z| ~ 1e8 and overflow beyond 1e154."""
    b, p = _layer_1d()
    zs = [0.0, 0.5, 3.0, 10.0, 40.0, 100.0, 1e3, 1e4, 1e6, 1e9, 1e20, 1e50, 1e100, 1e150]
    x = np.array(sorted([2.5 + 1.3 * z + 0.1 for z in zs] + [-1.0 - 1.3 * z - 0.1 for z in zs]))[:, None]
    y, ld, _ = b.forward(p, x)
    for i, xi in enumerate(x[:, 0]):
        ry, rl = _mp_marginal(p["centers"][0], p["log_bandwidth"][0], p["logits"][0], xi)
        assert abs(y[i, 0] - ry) <= 4e-16 * abs(ry) + 1e-300, (xi, y[i, 0], ry)
        tol = 4 * 2.2e-16 * (1 + math.log1p(abs(xi))) * max(1.0, abs(rl))
        assert abs(ld[i] - rl) <= tol, (xi, ld[i], rl)
    assert np.all(np.isfinite(b.inverse(p, y)[0]))
    dx, g = b.backward(p, np.ones_like(y), np.ones_like(ld), x)
    assert np.all(np.isfinite(dx)) and all(np.all(np.isfinite(v)) for v in g.values())


def test_logdet_against_central_differences_of_the_map():
    """Independent of the slopes attached for autograd: dy/dx by central differences (step 1e-6 * scale)
    against exp(logdet) per coordinate, 1e-7 relative (truncation h^2 |y'''| ~ 1e-12, rounding eps |y|/h ~
    1e-10)."""
    rng = np.random.default_rng(3)
    b = MarginalGaussianization(1, n_components=4)
    p = {"centers": rng.normal(size=(1, 4)), "log_bandwidth": rng.uniform(-1.0, 0.5, (1, 4)),
         "logits": rng.normal(size=(1, 4))}
    x = np.concatenate([rng.normal(size=20) * 2.0, [-9.0, -25.0, 14.0, 40.0]])[:, None]
    _, ld, _ = b.forward(p, x)
    h = 1e-6 * np.maximum(1.0, np.abs(x))
    fd = (b.forward(p, x + h)[0] - b.forward(p, x - h)[0]) / (2 * h)
    assert np.max(np.abs(fd[:, 0] / np.exp(ld) - 1.0)) < 1e-7


def test_numpy_closed_forms_agree_with_the_stable_path_across_their_thresholds():
    """Points straddling FAST_MIN_TAIL (tail probability 1e-9: |y| about 6) and the density bound, taking the
    closed forms or the stable path entry by entry; both must give the stable path's numbers to 1e-13 (the
    harness's tolerance for the NumPy path)."""
    b, p = _layer_1d()
    x = np.linspace(-12.0, 14.0, 400)[:, None]
    med = b.medians(p)
    y_fast, ld_fast = b._map(b._as64(p), x, med)
    y_st, ld_st, _ = b._core(b._as64(p), x, np, med)
    assert np.max(np.abs(y_fast - y_st) / np.maximum(1.0, np.abs(y_st))) < 1e-13
    assert np.max(np.abs(ld_fast - ld_st) / np.maximum(1.0, np.abs(ld_st))) < 1e-13
    F = np.exp(np.minimum(G.log_ndtr(y_st), G.log_ndtr(-y_st)))
    assert (F < G.FAST_MIN_TAIL).any() and (F > G.FAST_MIN_TAIL).any()     # both regimes were visited


def test_inverse_between_distant_centres_stays_in_the_gap():
    """Where the CDF is flat (two groups of centres 10 apart) the inverse is as ill-conditioned as dy/dx is
    small (about e^-40 here): it must still return a finite point between the groups whose image is the input
    to the solver's rounding level (8 eps (|y| + |y*| + 1)), not a Newton step of 1e17."""
    b = MarginalGaussianization(1, n_components=4)
    p = {"centers": np.array([[-5.2, -4.9, 4.8, 5.1]]), "log_bandwidth": np.log(np.full((1, 4), 0.5)),
         "logits": np.log([[0.15, 0.15, 0.35, 0.35]])}
    x = np.array([[-1.5], [0.0], [2.0]])
    y, _, _ = b.forward(p, x)
    x2, _ = b.inverse(p, y)
    assert np.all(np.abs(x2) < 5.0)
    assert np.allclose(b.forward(p, x2)[0], y, rtol=0, atol=1e-14)


# --------------------------------------------------------------------------- fitting
def _moons(n, seed):
    return nf.data.load("two_moons", n, np.random.default_rng(seed), noise=0.1)


def test_fit_is_gradient_free_and_deterministic_given_the_rng(monkeypatch):
    """Two fits from equal generators give bit-identical parameters and histories, and no backward runs (every
    backward is replaced by one that raises)."""
    def no_backward(*a, **k):
        raise AssertionError("fit_rbig called a backward")
    monkeypatch.setattr(nf.Bijector, "backward", no_backward)
    monkeypatch.setattr(MarginalGaussianization, "_backward", no_backward)
    x = _moons(600, 0)
    b1, p1, h1 = fit_rbig(x, np.random.default_rng(7), max_layers=4, patience=4, n_components=8)
    b2, p2, h2 = fit_rbig(x, np.random.default_rng(7), max_layers=4, patience=4, n_components=8)
    assert p1.keys() == p2.keys() and all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert h1["train_ll"] == h2["train_ll"] and b1.n_layers == b2.n_layers == 4
    _, p3, _ = fit_rbig(x, np.random.default_rng(8), max_layers=4, patience=4, n_components=8)
    assert not np.array_equal(p1["1.W"], p3["1.W"])            # the rng does draw the random rotations


def test_training_log_likelihood_rises_over_layers_and_is_the_flows_own():
    """On two-moons the fitted map's training log-likelihood rises from the standard normal's to within 0.25
    nats of the exact limit (about -1.0) in 12 layers; each recorded value equals NormalizingFlow.log_prob of
    the flow truncated there (1e-10: the same arithmetic in another order)."""
    x = _moons(4000, 1)
    b, p, h = fit_rbig(x, np.random.default_rng(0), max_layers=12, patience=12, n_components=16)
    ll = np.array(h["train_ll"])
    assert ll[-1] > ll[0] + 0.3 and ll[-1] > -1.25
    assert np.all(np.diff(ll) > -0.02)             # a random rotation may expose little, never lose much
    for L in (1, 5, 12):
        sub = {k: v for k, v in p.items() if int(k.split(".")[0]) < 2 * L}
        flow = nf.NormalizingFlow(nf.RBIG(2, L, 16), nf.StandardNormal(2))
        assert abs(flow.log_prob(sub, x).mean() - ll[L - 1]) < 1e-10


def test_fitted_flow_saves_loads_and_samples(tmp_path):
    x = _moons(500, 2)
    b, p, _ = fit_rbig(x, np.random.default_rng(1), max_layers=3, patience=3, n_components=6, rotation="pca")
    flow = nf.NormalizingFlow(b, nf.StandardNormal(2))
    nf.save(tmp_path / "rbig.npz", flow, p, {"what": "test"})
    flow2, p2, cfg = nf.load(tmp_path / "rbig.npz")
    assert isinstance(flow2.bijector, nf.RBIG) and flow2.bijector.n_layers == 3 and cfg == {"what": "test"}
    assert np.array_equal(flow2.log_prob(p2, x), flow.log_prob(p, x))
    s1 = flow.sample(p, 50, np.random.default_rng(3))
    s2 = flow2.sample(p2, 50, np.random.default_rng(3))
    assert np.array_equal(s1, s2) and np.all(np.isfinite(s1))
    z = flow.bijector.forward(p, s1)[0]                 # samples are the inverse of base draws: round trip
    assert np.allclose(flow.bijector.inverse(p, z)[0], s1, atol=1e-9)


def test_rbig_recovers_a_gaussians_log_density():
    """Data from N(m, S) with correlation 0.8 in 3-D, PCA rotations, stopped on 2000 validation points: the
    fitted flow's mean log-density on 4000 test points is within 0.03 nats of the exact one, the median
    per-point difference below 0.12 nats and its standard deviation below 0.25.  Measured: mean -0.010, median
    |difference| 0.073, standard deviation 0.15 (2 layers: a marginal step that is nearly the identity on
    Gaussian marginals, the PCA rotation that decorrelates, and one more marginal step).  What remains is the
    16-kernel mixtures' own error as estimates of normal marginals from 6000 points, largest in the tails."""
    rng = np.random.default_rng(11)
    S = np.array([[1.0, 0.8, 0.3], [0.8, 2.0, -0.5], [0.3, -0.5, 0.7]])
    m = np.array([1.0, -2.0, 0.5])
    Lc = np.linalg.cholesky(S)
    draw = lambda n: m + rng.standard_normal((n, 3)) @ Lc.T          # noqa: E731
    xtr, xv, xt = draw(6000), draw(2000), draw(4000)
    b, p, h = fit_rbig(xtr, np.random.default_rng(0), max_layers=30, patience=5, rotation="pca", n_components=16,
                       x_val=xv)
    lp = nf.NormalizingFlow(b, nf.StandardNormal(3)).log_prob(p, xt)
    d = xt - m
    exact = -0.5 * np.einsum("ni,ij,nj->n", d, np.linalg.inv(S), d) - 0.5 * np.log(np.linalg.det(2 * np.pi * S))
    assert abs(lp.mean() - exact.mean()) < 0.03, (lp.mean(), exact.mean(), h["n_layers"])
    assert np.median(np.abs(lp - exact)) < 0.12 and np.std(lp - exact) < 0.25


def test_bad_input_is_refused():
    x = _moons(100, 3)
    rng = np.random.default_rng(0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="fit_rbig"):
        fit_rbig(bad, rng)
    with pytest.raises(ValueError, match="rotation"):
        fit_rbig(x, rng, rotation="ica")
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        fit_rbig(x, 0)
    with pytest.raises(ValueError, match="constant"):
        fit_marginal(np.column_stack([x[:, 0], np.ones(100)]), 4)
    with pytest.raises(ValueError, match="validation data"):
        fit_rbig(x, rng, x_val=x[:, :1])
    with pytest.raises(ValueError, match="MarginalGaussianization"):
        MarginalGaussianization(0)
    b, p = _layer_1d()
    with pytest.raises(ValueError, match="MarginalGaussianization"):
        b.inverse(p, np.array([[np.inf]]))
    with pytest.raises(FloatingPointError, match="MarginalGaussianization"):   # (x - centre)/h overflows
        b.forward({**p, "log_bandwidth": np.full((1, 3), -700.0)}, np.array([[1e300]]))
