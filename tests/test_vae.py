"""npflows.vae: the VAE's hand-derived ELBO gradient (against autograd and central differences), its log
importance weights (against a plain re-computation with SciPy's densities and the flows' inverses), the
importance-weighted bound (against log p(x) by quadrature on a 2-D latent grid), dtypes and bad input.

Tolerances: backward vs autograd 1e-8 and vs central differences 1e-6, relative to max(1, |gradient|), as in
tests/harness.py (the same formulas in another order of rounding; a step of 1e-5 on O(10) objectives);
the re-computation 1e-10 (a few dozen float64 operations, no solve except the planar inverse at 1e-12).
"""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logsumexp

import npflows as nf
from npflows.vae import VAE, BernoulliDecoder, FlowDecoder, binarize, iaf_posterior, planar_posterior

from harness import close

D, L, N = 6, 2, 5


def _perturbed(vae, rng, scale=0.3):
    """Parameters moved away from the initialisation, so that no gradient is trivially zero."""
    p = vae.init(rng)
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in p.items()}


def _models():
    return {"gaussian": lambda: VAE(D, L, hidden=(5,), activation="tanh"),
            "planar": lambda: VAE(D, L, hidden=(5,), activation="tanh", flow=planar_posterior(L, 3)),
            "planar_amortised": lambda: VAE(D, L, hidden=(5,), activation="tanh", flow=planar_posterior(L, 2, 3),
                                            context_dim=3),
            "gaussian_relu_2hidden": lambda: VAE(D, 3, hidden=(4, 3), activation="relu"),
            "iaf": lambda: VAE(D, L, hidden=(5,), flow=iaf_posterior(L, 2, (6,), 3), context_dim=3),
            "iaf_affine": lambda: VAE(D, L, hidden=(5,), flow=iaf_posterior(L, 2, (6,), 3, update="affine"),
                                      context_dim=3),
            "flow_decoder": lambda: VAE(D, L, hidden=(5,), decoder=FlowDecoder(
                nf.maf(D, n_layers=2, hidden=(7,), activation="tanh", context_dim=L), L)),
            "flow_decoder_iaf": lambda: VAE(D, L, hidden=(5,), flow=iaf_posterior(L, 1, (4,), 2), context_dim=2,
                                            decoder=FlowDecoder(nf.realnvp(D, n_layers=2, hidden=(5,),
                                                                           scale="tanh", context_dim=L), L))}


def _case(name, seed=0):
    rng = np.random.default_rng([15, seed])
    vae = _models()[name]()
    p = _perturbed(vae, rng)
    if isinstance(vae.decoder, FlowDecoder):
        x = rng.standard_normal((N, D))                 # continuous data (logit space for images)
    else:
        x = (rng.random((N, D)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((N, vae.latent_dim))
    return vae, p, x, eps


@pytest.mark.parametrize("name", list(_models()))
def test_elbo_gradient_matches_autograd(name):
    vae, p, x, eps = _case(name)
    value, grads = vae.elbo_and_grad(p, x, eps)
    f = lambda q: anp.mean(vae.log_weights(q, x, eps, xp=anp))
    assert grads.keys() == p.keys()
    close(value, f(p), 1e-12, "mean ELBO vs the traced log weights")
    want = autograd.grad(f)(p)
    for k in p:
        assert grads[k].shape == p[k].shape and grads[k].dtype == p[k].dtype, k
        close(grads[k], want[k], 1e-8, f"d ELBO / d {k} vs autograd")
        assert np.any(grads[k] != 0), f"gradient of {k} is zero: the test would not see a missing term"


@pytest.mark.parametrize("name", list(_models()))
def test_elbo_gradient_matches_central_differences(name):
    """Directional derivatives along random directions in the whole parameter space, h = 1e-5."""
    vae, p, x, eps = _case(name, seed=1)
    _, grads = vae.elbo_and_grad(p, x, eps)
    rng = np.random.default_rng(3)
    h = 1e-5
    for _ in range(3):
        v = {k: rng.standard_normal(a.shape) for k, a in p.items()}
        plus = vae.elbo_and_grad({k: p[k] + h * v[k] for k in p}, x, eps)[0]
        minus = vae.elbo_and_grad({k: p[k] - h * v[k] for k in p}, x, eps)[0]
        fd = (plus - minus) / (2 * h)
        an = sum(float(np.sum(grads[k] * v[k])) for k in p)
        close(an, fd, 1e-6, "directional derivative vs central differences")


def test_loss_and_grad_is_minus_the_elbo_for_the_same_noise():
    vae, p, x, _ = _case("planar")
    loss, g = vae.loss_and_grad(p, x, np.random.default_rng(7))
    eps = np.random.default_rng(7).standard_normal((N, L))
    value, g2 = vae.elbo_and_grad(p, x, eps)
    assert loss == -value
    for k in p:
        np.testing.assert_array_equal(g[k], -g2[k])


def _mlp(p, prefix, a, n_layers, act=np.tanh):
    for l in range(n_layers):
        a = a @ p[f"{prefix}W{l}"] + p[f"{prefix}b{l}"]
        if l < n_layers - 1:
            a = act(a)
    return a


@pytest.mark.parametrize("name", ["gaussian", "planar", "planar_amortised", "iaf", "flow_decoder_iaf"])
def test_log_weights_equal_log_joint_minus_log_posterior_recomputed(name):
    """ell = log p(x|z) + log N(z; 0, I) - log q(z|x), with the Gaussian and Bernoulli densities from scipy.stats,
    log q by the change of variables through the posterior flow's *inverse* (a different code path from the
    forward logdet), and a flow decoder's log p(x|z) from a NormalizingFlow's log_prob with the context."""
    vae, p, x, eps = _case(name, seed=2)
    ell = vae.log_weights(p, x, eps)
    out = _mlp(p, "enc.", x, 2)
    mu, sig = out[:, :L], np.exp(out[:, L:2 * L])
    z0 = mu + sig * eps
    if vae.flow is None:
        zk, log_q = z0, stats.norm.logpdf(z0, mu, sig).sum(1)
    else:
        pf = {k[len("flow."):]: v for k, v in p.items() if k.startswith("flow.")}
        h = {"context": out[:, 2 * L:]} if vae.context_dim else {}
        zk = vae.flow.forward(pf, z0, **h)[0]
        z0_back, ld_inv = vae.flow.inverse(pf, zk, **h)        # log|det dz0/dzK|
        close(z0_back, z0, 1e-10, "flow round trip")
        log_q = stats.norm.logpdf(z0_back, mu, sig).sum(1) + ld_inv
    if isinstance(vae.decoder, FlowDecoder):
        pd = {k[len("dec."):]: v for k, v in p.items() if k.startswith("dec.")}
        log_px = nf.NormalizingFlow(vae.decoder.bijector, nf.StandardNormal(D)).log_prob(pd, x, context=zk)
    else:
        log_px = stats.bernoulli.logpmf(x, expit(_mlp(p, "dec.", zk, 2))).sum(1)
    close(ell, log_px + stats.norm.logpdf(zk).sum(1) - log_q, 1e-10, "log weights vs scipy")


@pytest.mark.parametrize("name", ["gaussian", "planar", "planar_amortised"])
def test_importance_weights_average_to_p_of_x_by_quadrature(name):
    """The identity under every bound: E_q[p(x, z)/q(z|x)] = p(x) exactly, for any q with the right log q.
    A 2-D latent space, log p(x) = log of the integral of p(x|z) N(z; 0, I) over z by the trapezoid rule on
    [-7, 7]^2 (401^2 nodes, a step of 0.035; the prior's mass outside is below 1e-10 and the integrand is
    smooth at these O(1) weights, so the quadrature error is far below the tolerance).  The encoder is set to give a q
    wider than the prior (sigma about e^0.4), so the weights w = exp(ell - log p(x)) are bounded and their
    sample standard error is a reliable yardstick: their mean over K = 20000 draws must be 1 within 4
    standard errors (a wrong log-determinant or entropy term moves it by O(1)).  vae.bounds on the same
    draws is their log-mean-exp, i.e. log p(x) + log(mean w); and the ELBO estimate lies below log p(x) by the
    KL of q from the true posterior (at least 0.05 nats here, each SE below 0.02)."""
    rng = np.random.default_rng(11)
    vae = {"gaussian": lambda: VAE(D, 2, hidden=(5,)),
           "planar": lambda: VAE(D, 2, hidden=(5,), flow=planar_posterior(2, 2)),
           "planar_amortised": lambda: VAE(D, 2, hidden=(5,), flow=planar_posterior(2, 2, 2), context_dim=2)}[name]()
    p = _perturbed(vae, rng, scale=0.2)
    H = vae.context_dim                      # q wider than the prior: sigma's head small, its bias 0.4
    p["enc.W1"] = p["enc.W1"] * np.r_[1.0, 1.0, 0.1, 0.1, [1.0] * H]
    p["enc.b1"] = p["enc.b1"] * np.r_[1.0, 1.0, 0.0, 0.0, [1.0] * H] + np.r_[0.0, 0.0, 0.4, 0.4, [0.0] * H]
    n = 3
    x = (rng.random((n, D)) < 0.5).astype(np.float64)
    grid = np.linspace(-7.0, 7.0, 401)
    zz = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    w = np.full(401, grid[1] - grid[0])
    w[[0, -1]] *= 0.5
    logw2 = np.log(np.outer(w, w).ravel())
    logits = _mlp(p, "dec.", zz, 2)                   # log p(x|z) = sum x l - log(1 + e^l), here |l| < 10
    log_pz = stats.norm.logpdf(zz).sum(1)
    log_p = np.array([logsumexp(logits @ xi - np.log1p(np.exp(logits)).sum(1) + log_pz + logw2) for xi in x])
    K = 20_000
    eps = np.random.default_rng(1).standard_normal((K, n, 2))          # the draws of vae.bounds, in its order
    ell = vae.log_weights(p, np.tile(x, (K, 1)), eps.reshape(-1, 2)).reshape(K, n)
    wts = np.exp(ell - log_p)
    se = wts.std(0, ddof=1) / np.sqrt(K)
    assert np.all(wts.max(0) < 50), "the weights are not bounded: the yardstick below would be unreliable"
    assert np.all(np.abs(wts.mean(0) - 1.0) < 4 * se), (wts.mean(0), se)
    elbo, iw = vae.bounds(p, x, np.random.default_rng(1), samples=K, chunk_rows=4096)
    close(iw, log_p + np.log(wts.mean(0)), 1e-10, "IW bound = log-mean-exp of the weights")
    close(elbo, ell.mean(0), 1e-10, "ELBO estimate = mean log weight")
    assert np.all(ell.std(0) / np.sqrt(K) < 0.02) and np.all(elbo < log_p - 0.05), (elbo, log_p)
    e1, iw1 = vae.bounds(p, x, np.random.default_rng(5), samples=1)
    close(e1, vae.log_weights(p, x, np.random.default_rng(5).standard_normal((1, n, 2))[0]), 1e-14,
          "K = 1: the ELBO draw")
    close(iw1, e1, 1e-14, "K = 1: the IW bound is the ELBO draw")


def test_bounds_do_not_depend_on_the_chunking():
    """Noise is drawn sample-major, (samples, N, L) in C order, so any chunking gives the same draws."""
    vae, p, x, _ = _case("planar", seed=4)
    a = vae.bounds(p, x, np.random.default_rng(2), samples=37, chunk_rows=N * 37)
    b = vae.bounds(p, x, np.random.default_rng(2), samples=37, chunk_rows=N * 4)
    c = vae.bounds(p, x, np.random.default_rng(2), samples=37, chunk_rows=1)
    for u, v in ((a, b), (a, c)):
        close(u[0], v[0], 1e-12, "ELBO, chunked")
        close(u[1], v[1], 1e-12, "IW bound, chunked")
    assert np.all(a[1] >= a[0])        # Jensen, draw set by draw set


@pytest.mark.parametrize("name", ["gaussian", "planar", "planar_amortised", "iaf", "flow_decoder"])
def test_float32_in_float32_out_and_close_to_float64(name):
    vae, p, x, eps = _case(name, seed=5)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    v32, g32 = vae.elbo_and_grad(p32, x.astype(np.float32), eps.astype(np.float32))
    v64, g64 = vae.elbo_and_grad(p, x, eps)
    assert all(g.dtype == np.float32 for g in g32.values())
    close(v32, v64, 1e-4, "float32 ELBO")
    for k in p:
        close(g32[k], g64[k], 1e-4, f"float32 gradient of {k}")
    e, iw = vae.bounds(p32, x.astype(np.float32), np.random.default_rng(0), samples=8)
    assert np.all(np.isfinite(iw))
    assert vae.sample(p32, 3, np.random.default_rng(0), dtype=np.float32).dtype == np.float32
    assert vae.reconstruct(p32, x.astype(np.float32)).dtype == np.float32


def test_bad_input_raises_value_error_naming_the_model():
    vae, p, x, eps = _case("planar")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="VAE.*binary"):
        vae.elbo_and_grad(p, x * 0.5, eps)
    with pytest.raises(ValueError, match="VAE"):
        vae.elbo_and_grad(p, x[:, :-1], eps)
    with pytest.raises(ValueError, match="eps"):
        vae.elbo_and_grad(p, x, eps[:-1])
    with pytest.raises(ValueError, match="eps"):
        vae.elbo_and_grad(p, x, eps.astype(np.float32))
    with pytest.raises(ValueError, match="VAE.*float32"):
        vae.elbo_and_grad({k: v.astype(np.float32) for k, v in p.items()}, x, eps)
    with pytest.raises(ValueError, match="VAE.*missing"):
        vae.loss_and_grad({k: v for k, v in p.items() if k != "dec.W0"}, x, rng)
    bad = dict(p, **{"enc.b0": p["enc.b0"] * np.nan})
    with pytest.raises(ValueError, match="enc.b0"):
        vae.loss_and_grad(bad, x, rng)
    with pytest.raises(ValueError, match="samples"):
        vae.bounds(p, x, rng, samples=0)
    with pytest.raises(ValueError, match="empty"):
        vae.loss_and_grad(p, x[:0], rng)
    with pytest.raises(ValueError, match="posterior flow acts on"):
        VAE(D, 3, flow=planar_posterior(2, 1))


def test_overflowing_encoder_raises_floating_point_error_naming_sigma():
    vae, p, x, eps = _case("gaussian")
    p = dict(p, **{"enc.b1": p["enc.b1"] + np.r_[0.0, 0.0, 800.0, 0.0]})
    with pytest.raises(FloatingPointError, match="VAE encoder.*sigma.*log_sigma reaches"):
        vae.elbo_and_grad(p, x, eps)


def test_binarize_thresholds_the_digits_at_8_of_16():
    out = binarize(np.array([[0, 7, 8, 16]]))
    np.testing.assert_array_equal(out, [[0.0, 0.0, 1.0, 1.0]])
    assert out.dtype == np.float64
    with pytest.raises(ValueError, match="integer"):
        binarize(np.array([[0.5]]))


def test_bernoulli_decoder_mean_is_the_sigmoid_of_the_logits():
    rng = np.random.default_rng(0)
    dec = BernoulliDecoder(D, L, hidden=(4,))
    p = dec.init(rng)
    z = rng.standard_normal((3, L))
    close(dec.decode(p, z), expit(_mlp(p, "", z, 2)), 1e-14, "decoder mean")
