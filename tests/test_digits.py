"""The digits data, the dequantization protocol and bits per dimension (npflows.data.digits, npflows.dequantize),
and the baselines of scripts/digits_baselines.py.

Every expected value is derived here independently of the code under test: a density whose discrete
likelihood is known in closed form (uniform, piecewise constant on the cells, a standard normal integrated
over each cell by scipy), quadrature by scipy.integrate instead of the script's Gauss-Legendre, autograd's
Jacobian for the logit's log-determinant.  Tests on the real digits skip when scikit-learn, which ships them,
is absent (it is in the ``test`` extra, so CI runs them)."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy.special import expit, log_expit
from scipy.stats import kstest, norm

import npflows
from npflows import data
from npflows.dequantize import (BitsPerDim, bits_per_dim, dequantization_bound, dequantize, discrete_bits_per_dim,
                                logit_transform, preprocess)

ROOT = Path(__file__).resolve().parents[1]
K, ALPHA = 17, 0.05
NO_SKLEARN = "scikit-learn is not installed: the digits ship with it (pip install \"npflows[digits]\", or .[test])"


def images(rng, n, d, levels=K):
    return rng.integers(0, levels, size=(n, d))


def z_of(v, levels=K, alpha=ALPHA):
    """The preprocessing written out: v = x + u -> y = v/K -> p = alpha + (1-2 alpha) y -> logit p."""
    p = alpha + (1 - 2 * alpha) * v / levels
    return np.log(p) - np.log1p(-p)


def y_of_z(z, alpha=ALPHA):
    return (expit(z) - alpha) / (1 - 2 * alpha)


def log_dy_dz(z, alpha=ALPHA):
    """log dy/dz per coordinate: y = (sigma(z) - alpha)/(1 - 2 alpha), dy/dz = sigma(z) sigma(-z)/(1 - 2 alpha)."""
    return log_expit(z) + log_expit(-z) - math.log1p(-2 * alpha)


# ---------------------------------------------------------------- dequantization
def test_dequantized_values_lie_in_their_cell_and_are_uniform_there():
    rng = np.random.default_rng(1)
    x = images(rng, 500, 64)
    y = dequantize(x, np.random.default_rng(2), K)
    assert y.dtype == np.float64 and y.shape == x.shape
    assert np.all(y > x / K) and np.all(y < (x + 1) / K)          # open cell: no draw hit an end for this seed
    assert np.array_equal(np.floor(y * K).astype(int), x)
    u = (y * K - x).ravel()                                         # the noise, back from y: U[0, 1)
    # 32,000 draws: the mean's standard deviation is sqrt(1/12/32000) = 0.0016; KS at a fixed seed
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / u.size)
    assert kstest(u, "uniform").pvalue > 1e-4


def test_dequantize_is_deterministic_given_the_generator_and_fresh_per_call():
    x = images(np.random.default_rng(0), 20, 64)
    a = dequantize(x, np.random.default_rng(5), K)
    assert np.array_equal(a, dequantize(x, np.random.default_rng(5), K))
    rng = np.random.default_rng(5)
    first, second = dequantize(x, rng, K), dequantize(x, rng, K)
    assert np.array_equal(first, a) and not np.any(first == second)
    y32 = dequantize(x, np.random.default_rng(5), K, dtype=np.float32)
    assert y32.dtype == np.float32 and np.array_equal(y32, a.astype(np.float32))
    z32, ld32 = preprocess(x, np.random.default_rng(5), K, dtype=np.float32)
    assert z32.dtype == np.float32 and ld32.dtype == np.float32


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 4)), "integer grey levels"),                        # float: already dequantized?
    (np.zeros((3, 4), dtype=bool), "integer grey levels"),
    (np.full((3, 4), 17), r"0\.\.16"),
    (np.full((3, 4), -1), r"0\.\.16"),
    (np.zeros(4, dtype=int), "rank 2"),
    ([[0, 1]], "numpy integer array"),
])
def test_bad_images_are_refused_by_name(bad, match):
    with pytest.raises(ValueError, match="dequantize: .*" + match):
        dequantize(bad, np.random.default_rng(0), K)


def test_bad_arguments_are_refused():
    x = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        dequantize(x, 0, K)
    with pytest.raises(ValueError, match="levels must be >= 2"):
        dequantize(x, np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        dequantize(x, np.random.default_rng(0), K, dtype=np.int32)
    with pytest.raises(ValueError, match="alpha"):
        preprocess(x, np.random.default_rng(0), K, alpha=0.5)
    with pytest.raises(ValueError, match="Logit"):                    # the bijector's own domain check
        logit_transform(np.array([[1.5]]))


# ---------------------------------------------------------------- the logit and its log-determinant
def test_logit_is_realnvps_map_and_its_logdet_is_the_log_det_of_autograds_jacobian():
    autograd = pytest.importorskip("autograd", reason="autograd (the test extra) computes the brute-force Jacobian")
    anp = pytest.importorskip("autograd.numpy")
    rng = np.random.default_rng(3)
    y = dequantize(images(rng, 5, 64), rng, K)
    y[0, :3] = [0.0, 1.0, 0.5]                                        # the closed ends are in the domain
    z, logdet = logit_transform(y, ALPHA)
    np.testing.assert_allclose(z, z_of(y * K), rtol=1e-13, atol=1e-14)

    def f(row):
        p = ALPHA + (1 - 2 * ALPHA) * row
        return anp.log(p) - anp.log(1 - p)
    jac = autograd.jacobian(f)
    for n in range(y.shape[0]):
        sign, logabs = np.linalg.slogdet(jac(y[n]))
        # the Jacobian is diagonal, so slogdet is a sum of 64 logs: a few ulps of |logdet| ~ 100
        assert sign == 1.0 and logabs == pytest.approx(logdet[n], rel=1e-12)


def test_the_full_chain_from_x_plus_u_has_logdet_minus_d_log_k_by_central_differences():
    """d z_d / d v_d of z(v) = logit(alpha + (1 - 2 alpha) v/K) by central differences, h = 1e-5: truncation
    h^2 |z'''|/6 < 1e-9 relative on the interior cells used (|z'''/z'| < 20 for p in [0.1, 0.9]) and
    rounding eps |z|/h < 1e-10, so 1e-7 relative is a safe bound."""
    rng = np.random.default_rng(4)
    x = rng.integers(1, K - 1, size=(6, 64))                          # interior cells: v +- h stays in [0, K]
    v = x + rng.random(x.shape)
    h = 1e-5
    dz = (z_of(v + h) - z_of(v - h)) / (2 * h)
    _, logdet = logit_transform(v / K)
    np.testing.assert_allclose(np.log(dz).sum(axis=1), logdet - 64 * math.log(K), rtol=1e-7)


# ---------------------------------------------------------------- the bound and bits per dimension
def uniform_y_log_prob(z, alpha=ALPHA):
    """The density in z of y ~ U[0, 1]^D: p_z(z) = prod_d dy/dz."""
    return log_dy_dz(z, alpha).sum(axis=1)


@pytest.mark.parametrize("levels, alpha, d", [(17, 0.05, 64), (256, 0.01, 12)])
def test_a_uniform_density_scores_exactly_log2_k_bits_per_dim(levels, alpha, d):
    """y ~ U[0, 1)^D is v = x + u ~ U[0, K)^D with density K^-D, constant on every cell: P(x) = K^-D exactly and
    Jensen's bound is tight, so bits/dim = log2 K for every image and draw: log2 17 = 4.0874628..., log2 256 = 8.
    The bound is 64 terms of size ~3 that cancel: 1e-12 relative is 100x their rounding."""
    x = images(np.random.default_rng(6), 40, d, levels)
    res = bits_per_dim(lambda z: uniform_y_log_prob(z, alpha), x, np.random.default_rng(7), levels, alpha=alpha,
                       draws=3)
    assert isinstance(res, BitsPerDim)
    assert res.mean == pytest.approx(math.log2(levels), rel=1e-12) and res.stderr < 1e-12


def test_float32_data_give_the_bound_to_float32_accuracy():
    x = images(np.random.default_rng(6), 40, 64)
    z, logdet = preprocess(x, np.random.default_rng(8), K, dtype=np.float32)
    bound = uniform_y_log_prob(z.astype(np.float64)) + logdet.astype(np.float64) - 64 * math.log(K)
    # logdet in float32: 64 terms of size ~3, each to ~1e-7 relative: ~1e-5 nats, 2e-7 bits/dim
    assert np.all(np.abs(-bound / (64 * math.log(2)) - math.log2(K)) < 1e-5)


def test_a_density_constant_on_every_cell_recovers_the_discrete_likelihood_exactly():
    """p_y(y) = prod_d K P_d(floor(K y_d)) is constant on each cell, so the bound equals log P(x) = sum_d log P_d(x_d)
    (no Jensen gap) whatever the draws: the dequantization machinery turns a histogram back into its pmf."""
    rng = np.random.default_rng(9)
    d = 16
    pmf = rng.dirichlet(np.ones(K), size=d)                           # (d, K)
    x = images(rng, 60, d)

    def log_prob(z):
        cell = np.minimum(np.floor(y_of_z(z) * K).astype(int), K - 1)
        return (np.log(K * pmf[np.arange(d), cell]) + log_dy_dz(z)).sum(axis=1)
    log_pmf = np.log(pmf[np.arange(d), x]).sum(axis=1)
    bound = dequantization_bound(log_prob, x, np.random.default_rng(10), K, draws=4, per_draw=True)
    np.testing.assert_allclose(bound, np.broadcast_to(log_pmf, bound.shape), rtol=1e-12)
    got = bits_per_dim(log_prob, x, np.random.default_rng(10), K, draws=4)
    bpd = -log_pmf / (d * math.log(2))
    assert got.mean == pytest.approx(bpd.mean(), rel=1e-12)
    assert got.stderr == pytest.approx(bpd.std(ddof=1) / math.sqrt(bpd.size), rel=1e-9)


def _normal_per_level():
    """For z ~ N(0, 1) in logit space, per grey level k, by scipy's adaptive quadrature: the expected bound
    e(k) = E_u[log phi(z) + log dz/dy] - log K and the exact log P(k) = log(Phi(z(k+1)) - Phi(z(k)))."""
    def integrand(u, k):
        z = z_of(k + u)
        return norm.logpdf(z) - log_dy_dz(z)
    e = np.array([integrate.quad(integrand, 0, 1, args=(k,), epsabs=1e-13, epsrel=1e-13)[0] for k in range(K)])
    edges = z_of(np.arange(K + 1.0))
    return e - math.log(K), np.log(norm.cdf(edges[1:]) - norm.cdf(edges[:-1]))


def test_the_bound_of_a_smooth_density_is_below_its_exact_discrete_likelihood_and_the_draws_estimate_it():
    """A standard normal in logit space: the discrete P(x) is the normal mass of each cell's image (a box),
    known exactly; the bound's expectation is a 1-D integral per level.  Jensen: e(k) < log P(k) strictly (the
    density is not constant on a cell), and the Monte Carlo bound agrees with the expectation to within 4 of its
    standard errors (estimated from the draws themselves)."""
    e, log_p = _normal_per_level()
    assert np.all(log_p - e > 1e-8)   # smallest gap 3.5e-7 (k = 8, z symmetric about 0); quadrature error ~1e-13
    d, draws = 4, 50
    x = images(np.random.default_rng(11), 300, d)
    std_normal = npflows.StandardNormal(d)
    terms = dequantization_bound(lambda z: std_normal.log_prob({}, z), x, np.random.default_rng(12), K,
                                 draws=draws, per_draw=True)
    exact = e[x].sum(axis=1)
    per_draw_means = terms.mean(axis=1)
    se = per_draw_means.std(ddof=1) / math.sqrt(draws)
    assert abs(per_draw_means.mean() - exact.mean()) < 4 * se
    res = bits_per_dim(lambda z: std_normal.log_prob({}, z), x, np.random.default_rng(12), K, draws=draws)
    assert res.mean == pytest.approx(-terms.mean() / (d * math.log(2)), rel=1e-13)     # the same draws
    assert res.mean > -log_p[x].sum(axis=1).mean() / (d * math.log(2))             # an upper bound on bits/dim


def test_any_npflows_flow_plugs_in():
    """A diagonal affine flow to a standard normal is N(-b e^-s, e^-2s) per coordinate: scipy's density with
    the same draws gives the same bits/dim."""
    d = 64
    flow = npflows.NormalizingFlow(npflows.ElementwiseAffine(d), npflows.StandardNormal(d))
    rng = np.random.default_rng(13)
    params = {"log_scale": 0.3 * rng.standard_normal(d), "shift": 0.5 * rng.standard_normal(d)}
    x = images(rng, 50, d)
    got = bits_per_dim(lambda z: flow.log_prob(params, z), x, np.random.default_rng(14), K)
    scale = np.exp(-params["log_scale"])
    ref = bits_per_dim(lambda z: norm.logpdf(z, loc=-params["shift"] * scale, scale=scale).sum(axis=1), x,
                       np.random.default_rng(14), K)
    assert got.mean == pytest.approx(ref.mean, rel=1e-12) and got.stderr == pytest.approx(ref.stderr, rel=1e-9)
    # a float32 model gets float32 z (the same draws, rounded): within float32's accuracy of the float64 figure,
    # ~1e-7 relative per term of 64 terms of size ~5 nats: 1e-5 relative is a safe bound
    p32 = npflows.cast_params(params, "float32")
    seen = []
    got32 = bits_per_dim(lambda z: seen.append(z.dtype) or flow.log_prob(p32, z), x, np.random.default_rng(14), K,
                         dtype=np.float32)
    assert set(seen) == {np.dtype(np.float32)} and got32.mean == pytest.approx(got.mean, rel=1e-5)


def test_discrete_bits_per_dim_by_hand():
    """log P = -10, -14 nats over D = 4: bits/dim 10/(4 ln 2) and 14/(4 ln 2), mean 3/ln 2; for two values the
    sample standard deviation is |a - b|/sqrt 2, so the standard error is |a - b|/2 = 1/(2 ln 2)."""
    res = discrete_bits_per_dim(np.array([-10.0, -14.0]), 4)
    assert res.mean == pytest.approx(3 / math.log(2), rel=1e-15)
    assert res.stderr == pytest.approx(1 / (2 * math.log(2)), rel=1e-15)
    assert math.isnan(discrete_bits_per_dim(np.array([-1.0]), 1).stderr)


@pytest.mark.parametrize("log_prob, match", [
    (lambda z: np.zeros(len(z) + 1), r"shape \(5,\)"),
    (lambda z: np.zeros((len(z), 1)), r"shape \(5,\)"),
    (lambda z: np.zeros(len(z), dtype=int), "float array"),
    (lambda z: np.where(np.arange(len(z)) == 2, np.nan, 0.0), "1 non-finite value"),
    (lambda z: np.full(len(z), -np.inf), "-inf density"),
    ("not callable", "callable"),
])
def test_a_bad_log_prob_is_refused(log_prob, match):
    x = np.zeros((5, 3), dtype=np.int64)
    with pytest.raises(ValueError, match=match):
        bits_per_dim(log_prob, x, np.random.default_rng(0), K)


def test_bad_bound_arguments_are_refused():
    x = np.zeros((5, 3), dtype=np.int64)
    ok = uniform_y_log_prob
    with pytest.raises(ValueError, match="draws must be >= 1"):
        bits_per_dim(ok, x, np.random.default_rng(0), K, draws=0)
    with pytest.raises(ValueError, match="no images"):
        bits_per_dim(ok, x[:0], np.random.default_rng(0), K)
    with pytest.raises(ValueError, match=r"0\.\.16"):
        bits_per_dim(ok, x + 17, np.random.default_rng(0), K)
    with pytest.raises(ValueError, match="finite log-probabilities"):
        discrete_bits_per_dim(np.array([0.0, np.inf]), 3)


# ---------------------------------------------------------------- the digits
@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", reason=NO_SKLEARN)
    return {s: data.digits(s) for s in ("train", "validation", "test")}


def test_the_split_is_the_documented_permutation_disjoint_and_complete(digits):
    from sklearn.datasets import load_digits
    raw = load_digits()
    perm = np.random.default_rng(0).permutation(1797)
    where = {"train": perm[:1257], "validation": perm[1257:1437], "test": perm[1437:]}
    for split, idx in where.items():
        x, labels = digits[split]
        assert x.shape == (len(idx), 64) and x.dtype == np.int64 and labels.dtype == np.int64
        assert np.array_equal(x, raw.data[idx]) and np.array_equal(labels, raw.target[idx])
        assert np.array_equal(data.digits_indices(split), idx)
    assert [len(digits[s][0]) for s in where] == [1257, 180, 360]
    all_idx = np.concatenate([data.digits_indices(s) for s in where])
    assert np.array_equal(np.sort(all_idx), np.arange(1797))             # disjoint and complete
    values = np.concatenate([digits[s][0] for s in where])
    assert np.array_equal(np.unique(values), np.arange(17))              # exactly the 17 levels 0..16
    assert set(np.unique(digits["test"][1])) == set(range(10))


def test_digits_are_deterministic_fresh_copies(digits):
    x, labels = data.digits("test")
    x[0, 0] = 99
    again, labels_again = data.digits("test")
    assert np.array_equal(again, digits["test"][0]) and np.array_equal(labels_again, labels)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        data.digits("val")


def test_without_scikit_learn_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    data._digits_all.cache_clear()
    try:
        with pytest.raises(ImportError, match=r'pip install "npflows\[digits\]"'):
            data.digits("train")
    finally:
        data._digits_all.cache_clear()


# ---------------------------------------------------------------- the baselines (scripts/digits_baselines.py)
@pytest.fixture(scope="module")
def baselines():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import digits_baselines
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return digits_baselines


def test_the_categorical_reproduces_2_43_by_an_independent_count(digits, baselines):
    """Add-one smoothing from one-hot counts (not bincount): log P(x) = sum_d log((n_d,x_d + 1)/(N + 17)); the
    issue states 2.43 to two decimals, so |bpd - 2.43| <= 0.005."""
    train, test = digits["train"][0], digits["test"][0]
    onehot = np.eye(K)[train]                                           # (N, 64, 17)
    probs = (onehot.sum(axis=0) + 1) / (len(train) + K)
    log_pmf = (np.eye(K)[test] * np.log(probs)).sum(axis=(1, 2))
    bpd = -log_pmf.mean() / (64 * math.log(2))
    assert abs(bpd - 2.43) <= 0.005
    script_probs = baselines.categorical_fit(train, smoothing=1.0)
    np.testing.assert_allclose(script_probs.sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(baselines.categorical_log_pmf(script_probs, test), log_pmf, rtol=1e-13)


def test_the_level_moments_agree_with_adaptive_quadrature(baselines):
    m, v, l = baselines.level_moments()
    for k in range(K):
        q = [integrate.quad(g, 0, 1, epsabs=1e-13, epsrel=1e-13)[0] for g in (
            lambda u: z_of(k + u), lambda u: z_of(k + u) ** 2, lambda u: -log_dy_dz(z_of(k + u)))]
        assert m[k] == pytest.approx(q[0], rel=1e-12, abs=1e-13)
        assert v[k] == pytest.approx(q[1] - q[0] ** 2, rel=1e-10)
        assert l[k] == pytest.approx(q[2], rel=1e-12)


def test_the_exact_gaussian_fit_has_the_moments_of_the_dequantized_images(baselines):
    """Three 2-pixel images: the mean and covariance of z over u (uniform on the cells) and over the images,
    by scipy's quad and dblquad, against the law-of-total-covariance formula (1e-10: quadrature tolerance)."""
    x = np.array([[0, 16], [3, 3], [9, 1]])
    mu, cov = baselines.gaussian_fit_exact(x, baselines.level_moments())
    mean = [np.mean([integrate.quad(lambda u: z_of(xn[d] + u), 0, 1, epsabs=1e-14)[0] for xn in x]) for d in (0, 1)]
    second = np.empty((2, 2))
    for d in (0, 1):
        second[d, d] = np.mean([integrate.quad(lambda u: z_of(xn[d] + u) ** 2, 0, 1, epsabs=1e-14)[0] for xn in x])
    second[0, 1] = second[1, 0] = np.mean([integrate.dblquad(lambda u1, u0: z_of(xn[0] + u0) * z_of(xn[1] + u1),
                                                             0, 1, 0, 1, epsabs=1e-13)[0] for xn in x])
    np.testing.assert_allclose(mu, mean, rtol=1e-10)
    np.testing.assert_allclose(cov, second - np.outer(mean, mean), rtol=1e-10, atol=1e-12)


def test_the_gaussians_exact_expected_bound_agrees_with_the_monte_carlo_bound(digits, baselines):
    """On the real test images, 20 draws of npflows.dequantize's bound for the exact-fit Gaussian against its
    closed-form expectation: within 4 Monte Carlo standard errors (estimated from the draws)."""
    train, test = digits["train"][0], digits["test"][0]
    moments = baselines.level_moments()
    mu, cov = baselines.gaussian_fit_exact(train, moments)
    terms = dequantization_bound(baselines.gaussian_log_prob(mu, cov), test, np.random.default_rng(15), K, draws=20,
                                 per_draw=True)
    exact = baselines.gaussian_expected_bound(mu, cov, test, moments)
    per_draw = terms.mean(axis=1)
    assert abs(per_draw.mean() - exact.mean()) < 4 * per_draw.std(ddof=1) / math.sqrt(20)
    lp = baselines.gaussian_log_prob(mu, cov)(test[:5].astype(float) / 4 - 2)
    from scipy.stats import multivariate_normal
    np.testing.assert_allclose(lp, multivariate_normal(mu, cov).logpdf(test[:5].astype(float) / 4 - 2), rtol=1e-10)


def test_the_script_reproduces_both_stated_figures(digits, baselines, capsys):
    """The full run (20 fits, 10 draws): exit status 0 and both targets met, the figures it judges within
    0.005 of the issue's 2.43 and 2.46, and the exact-fit Gaussian better than the one-copy one."""
    assert baselines.main([]) == 0
    out = capsys.readouterr().out
    assert out.count(": meets it") == 2 and "MISSES" not in out

    def figure(prefix):
        line = next(ln for ln in out.splitlines() if ln.startswith(prefix))
        return float(line[len(prefix):].split()[0])
    assert abs(figure("categorical, add-1 smoothing") - 2.43) <= 0.005
    assert abs(figure("  exact expectation, mean over 20 fits") - 2.46) <= 0.005
    assert figure("Gaussian, exact ML fit, 10 draws") < figure("Gaussian, one dequantized copy, 10 draws")
