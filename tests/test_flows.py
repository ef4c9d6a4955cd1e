"""Base distributions and the two flows: densities, pullbacks and objectives against autograd and
independent formulas (scipy.stats), and the clear errors they owe the user."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from scipy import stats

import npflows as nf
from harness import close

DISTRIBUTIONS = {
    "standard_normal": lambda: nf.StandardNormal(3),
    "diag_normal": lambda: nf.DiagNormal(3),
    "logistic": lambda: nf.StandardLogistic(3),
    "uniform": lambda: nf.UniformBox(3, -1.0, 2.0),
    # image events (C, H, W): the same densities over every entry, parameters of the event's shape
    "standard_normal_image": lambda: nf.StandardNormal((2, 1, 3)),
    "diag_normal_image": lambda: nf.DiagNormal((2, 1, 3)),
    "logistic_image": lambda: nf.StandardLogistic((1, 2, 2)),
    "uniform_image": lambda: nf.UniformBox((3, 1, 1), -1.0, 2.0),
}


def _dist_params(d, rng):
    return {k: 0.3 * rng.standard_normal(s) for k, s in d.param_shapes().items()}


def test_log_probs_match_scipy():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 3))
    close(nf.StandardNormal(3).log_prob({}, z), stats.norm.logpdf(z).sum(1), 1e-13, "standard normal")
    d = nf.DiagNormal(3)
    p = _dist_params(d, rng)
    ref = stats.norm.logpdf(z, p["loc"], np.exp(p["log_scale"])).sum(1)
    close(d.log_prob(p, z), ref, 1e-13, "diag normal")
    close(nf.StandardLogistic(3).log_prob({}, z), stats.logistic.logpdf(z).sum(1), 1e-13, "logistic")
    u = nf.UniformBox(3, -1.0, 2.0)
    inside = rng.uniform(-1, 2, (4, 3))
    close(u.log_prob({}, inside), np.full(4, -3 * np.log(3.0)), 1e-14, "uniform inside")
    assert np.all(u.log_prob({}, inside + 5.0) == -np.inf)


@pytest.mark.filterwarnings("ignore:Output seems independent of input")  # the uniform's log-density is flat
@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_log_prob_backward_matches_autograd(name):
    rng = np.random.default_rng(1)
    d = DISTRIBUTIONS[name]()
    p = _dist_params(d, rng)
    z = rng.uniform(-0.9, 1.9, (5,) + d.event_shape)
    w = rng.standard_normal(5)
    dz, g = d.log_prob_backward(p, z, w)
    gz, gp = autograd.grad(lambda a: anp.sum(w * d.log_prob(a[1], a[0], xp=anp)))((z, p))
    close(dz, gz, 1e-12, "dz")
    assert set(g) == set(p)
    for k in p:
        close(g[k], gp[k], 1e-12, k)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_rsample_backward_and_moments(name):
    d = DISTRIBUTIONS[name]()
    rng = np.random.default_rng(2)
    p = _dist_params(d, rng)
    z, cache = d.rsample(p, 4, np.random.default_rng(5))
    dz = rng.standard_normal(z.shape)
    g = d.rsample_backward(p, dz, cache)
    if p:
        ga = autograd.grad(lambda q: anp.sum(dz * d.rsample(q, 4, np.random.default_rng(5), xp=anp)[0]))(p)
        for k in p:
            close(g[k], ga[k], 1e-12, k)
    s = d.sample(p, 20000, np.random.default_rng(3))
    assert s.shape == (20000,) + d.event_shape and np.isfinite(d.log_prob(p, s)).all()
    if name.startswith("uniform"):
        assert s.min() >= -1.0 and s.max() <= 2.0


def _flow(base, chunk_rows=nf.core.flows.CHUNK_ROWS):
    b = nf.Sequential([nf.AffineCoupling(nf.half_mask(3), hidden=(8,), scale="tanh"), nf.LULinear(3),
                       nf.AffineCoupling(nf.half_mask(3, False), hidden=(8,))])
    return nf.NormalizingFlow(b, base, chunk_rows=chunk_rows)


def _perturb(params, rng, s=0.3):
    return {k: v + s * rng.standard_normal(v.shape) for k, v in params.items()}


@pytest.mark.parametrize("chunk_rows", [None, 3], ids=["one-pass", "chunks-3-3-1"])
@pytest.mark.parametrize("base", [nf.StandardNormal(3), nf.DiagNormal(3)], ids=["fixed", "learnable"])
def test_normalizing_flow_gradient_matches_autograd(base, chunk_rows):
    """7 rows in one pass, and in chunks of 3, 3 and 1 (each chunk's cotangents carry the weight 1/7 of the
    whole batch, so a wrong weight or a dropped last chunk shows as an O(1) error)."""
    rng = np.random.default_rng(4)
    flow = _flow(base, chunk_rows)
    p = _perturb(flow.init(rng), rng)
    x = rng.standard_normal((7, 3))

    def mean_ll(q):
        pb, pd = flow.split(q)
        z, ld, _ = flow.bijector.forward(pb, x, xp=anp)
        return anp.mean(flow.base.log_prob(pd, z, xp=anp) + ld)

    value, grads = flow.log_likelihood_and_grad(p, x)
    close(value, mean_ll(p), 1e-13, "mean log-likelihood")
    close(value, flow.log_prob(p, x).mean(), 1e-13, "log_prob mean")
    ga = autograd.grad(mean_ll)(p)
    assert set(grads) == set(p) == set(flow.param_shapes())
    for k in p:
        close(grads[k], ga[k], 1e-8, k)
    lp, dx = flow.log_prob_and_grad_x(p, x)
    gx = autograd.elementwise_grad(lambda xx: flow.base.log_prob(flow.split(p)[1], flow.bijector.forward(
        flow.split(p)[0], xx, xp=anp)[0], xp=anp) + flow.bijector.forward(flow.split(p)[0], xx, xp=anp)[1])(x)
    close(lp, flow.log_prob(p, x), 1e-14, "log_prob_and_grad_x value")
    close(dx, gx, 1e-8, "d log p / dx vs autograd")
    loss, lg = flow.loss_and_grad(p, x)
    assert loss == -value and all(np.array_equal(lg[k], -grads[k]) for k in p)


def test_chunk_rows_is_validated():
    for bad in (0, -1, 2.5, "8", True, "Auto"):
        with pytest.raises(ValueError, match="chunk_rows"):
            _flow(nf.StandardNormal(3), bad)


def test_normalizing_flow_samples_follow_log_prob():
    """Affine flow around N(0, I): samples must have the mean/covariance that log_prob implies."""
    rng = np.random.default_rng(5)
    flow = nf.NormalizingFlow(nf.Linear(2), nf.StandardNormal(2))
    W = np.array([[2.0, 0.5], [0.0, 0.5]])
    p = {"W": W, "b": np.array([1.0, -1.0])}
    x = flow.sample(p, 200000, rng)
    # x = W^{-1}(z - b): mean -W^{-1} b, covariance W^{-1} W^{-T}
    Wi = np.linalg.inv(W)
    np.testing.assert_allclose(x.mean(0), -Wi @ p["b"], atol=0.02)
    np.testing.assert_allclose(np.cov(x.T), Wi @ Wi.T, atol=0.03)
    ref = stats.multivariate_normal(-Wi @ p["b"], Wi @ Wi.T).logpdf(x[:5])
    close(flow.log_prob(p, x[:5]), ref, 1e-12, "log_prob vs scipy multivariate normal")


@pytest.mark.parametrize("base", [nf.StandardNormal(2), nf.DiagNormal(2)], ids=["fixed", "learnable"])
def test_push_forward_reverse_kl_gradient_matches_autograd(base):
    rng = np.random.default_rng(6)
    b = nf.Sequential([nf.AffineCoupling(nf.half_mask(2), hidden=(8,)), nf.Linear(2),
                       nf.AffineCoupling(nf.half_mask(2, False), hidden=(8,), scale="sigmoid")])
    flow = nf.PushForward(b, base)
    p = _perturb(flow.init(rng), rng)
    A = np.array([[1.5, 0.3], [0.3, 0.8]])

    def target(x):   # unnormalised Gaussian: log p = -x^T A x / 2
        return -0.5 * np.einsum("ni,ij,nj->n", x, A, x), -x @ A

    def objective(q):
        pb, pd = flow.split(q)
        z, _ = flow.base.rsample(pd, 9, np.random.default_rng(11), xp=anp)
        x, ld, _ = flow.bijector.forward(pb, z, xp=anp)
        logq = flow.base.log_prob(pd, z, xp=anp) - ld
        return anp.mean(logq + 0.5 * anp.sum(anp.dot(x, A) * x, axis=1))

    value, grads = flow.reverse_kl_and_grad(p, target, 9, np.random.default_rng(11))
    close(value, objective(p), 1e-12, "objective")
    ga = autograd.grad(objective)(p)
    assert set(grads) == set(p)
    for k in p:
        close(grads[k], ga[k], 1e-8, k)
    with pytest.raises(ValueError, match="shape"):
        flow.reverse_kl_and_grad(p, lambda x: (target(x)[0], target(x)[1][:, 0]), 9, np.random.default_rng(1))
    with pytest.raises(FloatingPointError, match="gradient"):
        flow.reverse_kl_and_grad(p, lambda x: (target(x)[0], np.full(x.shape, np.nan)), 9, np.random.default_rng(1))
    x, logq = flow.sample_and_log_prob(p, 5, np.random.default_rng(3))
    close(flow.log_prob(p, x), logq, 1e-10, "density of own samples by inverse vs by forward")


def test_flow_errors_are_clear():
    rng = np.random.default_rng(7)
    flow = nf.NormalizingFlow(nf.realnvp(2, n_layers=2, hidden=(4,)), nf.StandardNormal(2))
    p = flow.init(rng)
    x = rng.standard_normal((4, 2))
    with pytest.raises(ValueError, match="NaN"):
        flow.log_prob(p, np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="float32"):
        flow.log_prob(p, x.astype(np.float32))          # params still float64: refused, not upcast
    with pytest.raises(ValueError, match="shape"):
        flow.log_prob(p, x[:, :1])
    with pytest.raises(ValueError, match="dim"):
        nf.NormalizingFlow(nf.Linear(3), nf.StandardNormal(2))
    # a layer that overflows must not return NaN quietly
    big = dict(p)
    big["0.net.b1"] = np.array([800.0, 0.0])            # log-scale 800: exp overflows to inf
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises((FloatingPointError, ValueError)):
            flow.log_prob(big, x)
    with pytest.raises(ValueError, match="unexpected"):
        flow.log_prob({**p, "0.net.W9": np.zeros(1)}, x)
    p32 = nf.cast_params(p, np.float32)
    assert flow.log_prob(p32, x.astype(np.float32)).dtype == np.float32


def test_singular_linear_raises():
    b = nf.Linear(2)
    x = np.ones((3, 2))
    with pytest.raises(ValueError, match="singular"):
        b.forward({"W": np.array([[1.0, 2.0], [2.0, 4.0]]), "b": np.zeros(2)}, x)
    with pytest.raises(ValueError, match="singular"):
        b.inverse({"W": np.array([[1.0, 1.0], [1.0, 1.0 + 1e-17]]), "b": np.zeros(2)}, x)


def test_inverse_wrapper_swaps_directions():
    rng = np.random.default_rng(8)
    b = nf.Sigmoid(2)
    inv = nf.Inverse(b)
    y = rng.uniform(0.1, 0.9, (4, 2))
    x, ld, _ = inv.forward({}, y)
    close(x, np.log(y / (1 - y)), 1e-14, "Inverse(Sigmoid) is the logit")
    y2, ld2 = inv.inverse({}, x)
    close(y2, y, 1e-14, "round trip")
    close(ld2, -ld, 1e-14, "logdets")
    with pytest.raises(NotImplementedError, match="evaluation only"):
        inv.backward({}, x, ld, None)
