"""Worked examples from the flow literature that a reader can check by hand, computed independently of
the code under test (closed forms, scipy.stats)."""
import numpy as np
from scipy import stats

import npflows as nf
from harness import close


def test_one_dimensional_affine_change_of_variables():
    """x ~ N(mu, sigma^2) is the flow z = (x - mu)/sigma to N(0, 1):
    log p(x) = log N(z) - log sigma (the textbook change of variables)."""
    mu, sigma = 1.5, 0.4
    flow = nf.NormalizingFlow(nf.ElementwiseAffine(1), nf.StandardNormal(1))
    p = {"log_scale": np.array([-np.log(sigma)]), "shift": np.array([-mu / sigma])}
    x = np.linspace(-1, 4, 11)[:, None]
    close(flow.log_prob(p, x), stats.norm.logpdf(x[:, 0], mu, sigma), 1e-13, "1-D affine flow")
    _, logdet, _ = flow.bijector.forward(p, x)
    close(logdet, np.full(11, -np.log(sigma)), 1e-15, "logdet = log|dz/dx| = -log sigma")


def test_additive_coupling_is_volume_preserving():
    """NICE: the Jacobian of an additive coupling is unit triangular, so logdet = 0 exactly."""
    rng = np.random.default_rng(0)
    b = nf.AdditiveCoupling(nf.half_mask(4), hidden=(16,), zero_init=False)
    p = b.init(rng)
    x = 3.0 * rng.standard_normal((50, 4))
    y, logdet, _ = b.forward(p, x)
    assert np.all(logdet == 0.0)
    assert np.array_equal(y[:, :2], x[:, :2]) and not np.allclose(y[:, 2:], x[:, 2:])


def test_affine_coupling_logdet_is_sum_of_log_scales():
    """RealNVP eq. (6): logdet = sum_j s(x_1)_j, with s read off the conditioner independently."""
    rng = np.random.default_rng(1)
    b = nf.AffineCoupling(nf.half_mask(4), hidden=(16,), zero_init=False)
    p = b.init(rng)
    x = rng.standard_normal((20, 4))
    out, _ = b.net.forward(p, x[:, :2])
    s, t = out[:, :2], out[:, 2:]
    y, logdet, _ = b.forward(p, x)
    close(logdet, s.sum(1), 1e-14, "logdet vs sum(s)")
    close(y[:, 2:], x[:, 2:] * np.exp(s) + t, 1e-14, "y2 = x2 exp(s) + t")


def test_zero_initialised_coupling_starts_as_identity():
    rng = np.random.default_rng(2)
    b = nf.realnvp(3, n_layers=4)
    x = rng.standard_normal((10, 3))
    y, logdet, _ = b.forward(b.init(rng), x)
    assert np.array_equal(y, x) and np.all(logdet == 0)


def test_lu_linear_logdet_is_sum_of_log_diagonal():
    """Glow: det W = det P * prod(diag(U + diag(s))); check against numpy's slogdet of the dense W."""
    rng = np.random.default_rng(3)
    b = nf.LULinear(5, perm=rng.permutation(5))
    p = b.init(rng)
    p["log_scale"] = rng.standard_normal(5)
    W = b.weight(p)
    _, logdet, _ = b.forward(p, rng.standard_normal((2, 5)))
    close(logdet, np.full(2, np.linalg.slogdet(W)[1]), 1e-12, "LU logdet vs slogdet(W)")
    close(logdet, np.full(2, p["log_scale"].sum()), 1e-15, "LU logdet vs sum(log_scale)")


def test_actnorm_initialisation_standardises_the_batch():
    rng = np.random.default_rng(4)
    x = np.array([5.0, -2.0, 0.1]) + np.array([3.0, 0.5, 10.0]) * rng.standard_normal((500, 3))
    b = nf.ActNorm(3)
    y, _, _ = b.forward(b.init(rng, x), x)
    close(y.mean(0), np.zeros(3), 1e-12, "mean after ActNorm init")
    close(y.std(0), np.ones(3), 1e-5, "std after ActNorm init")  # std/(std + eps) = 1 - 2e-6 at std 0.5


def test_sequential_init_passes_data_through_earlier_layers():
    """An ActNorm after a fixed scaling must be initialised on the scaled data, not the raw data."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 2))
    b = nf.Sequential([nf.Linear(2), nf.ActNorm(2)])
    p = b.init(rng, x)
    y, _, _ = b.forward(p, x)
    close(y.mean(0), np.zeros(2), 1e-12, "mean")
    close(y.std(0), np.ones(2), 1e-5, "std")  # ActNorm divides by std + 1e-6


def test_logit_with_alpha_matches_realnvp_formula():
    """RealNVP section 4.1: y = logit(alpha + (1 - 2 alpha) x), logdet = sum log((1-2a)/(p(1-p)))."""
    a = 0.05
    x = np.array([[0.0, 0.5, 1.0]])
    y, logdet, _ = nf.Logit(3, alpha=a).forward({}, x)
    p = a + (1 - 2 * a) * x
    close(y, np.log(p / (1 - p)), 1e-15, "y")
    close(logdet, np.log((1 - 2 * a) / (p * (1 - p))).sum(1), 1e-14, "logdet")


def test_nice_logistic_prior_density():
    """A flow with NICE's logistic prior integrates to one in 1-D (adaptive quadrature on each side of
    the leaky ReLU's kink, where the density jumps)."""
    from scipy.integrate import quad
    rng = np.random.default_rng(6)
    flow = nf.NormalizingFlow(nf.Sequential([nf.ElementwiseAffine(1), nf.LeakyReLU(1, 0.3)]),
                              nf.StandardLogistic(1))
    p = {k: 0.5 * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}
    kink = float(-p["0.shift"][0] * np.exp(-p["0.log_scale"][0]))
    density = lambda x: float(np.exp(flow.log_prob(p, np.array([[x]]))[0]))
    mass = quad(density, -np.inf, kink, epsabs=1e-12)[0] + quad(density, kink, np.inf, epsabs=1e-12)[0]
    assert abs(mass - 1.0) < 1e-8, mass
