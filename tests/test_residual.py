"""What the harness cannot say about the invertible residual block (npflows/bijectors/residual.py): the
log-determinant estimators' bias and variance against the exact value (with a biased control that the same test
fails), the Neumann gradient estimator (its surrogate's gradient exactly, its mean against the exact gradient,
its memory), the Lipschitz bound through a training run, the fixed-point inverse's iteration count and its
failure, and determinism.

Statistical tests.  Each estimate is averaged over ``ROWS`` copies of the same point in one call (independent
probes per row), and the call means are the independent draws: the roulette's length N is shared by a call, so
rows of one call are not independent, calls are.  "Unbiased" is the check ``|mean - exact| <= 3 SE`` with
``SE = std(call means) / sqrt(CALLS)``; a correct estimator fails it with probability 0.27% (the seeds are fixed,
so every run draws the same numbers).  On the test block (c = 0.95, exact logdet -2.0613, eigenvalues of J_g
-0.65, -0.47, -0.32) the roulette's mean is off by 0.003 with SE 0.014 (its call means spread by 0.20: one
length N per call), the 30-term series' by 0.0002 with SE 0.002; the control, the series truncated at 2 terms,
has a bias of 0.257 nats against SE 0.005: it fails the same check by some 50 standard errors, and its mean is
within 3 SE of its own expectation, the exact 2-term series (so the failure is the truncation's bias and
nothing else).
"""
import tracemalloc

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import npflows as nf
from npflows.bijectors.residual import ResidualBlock

ROWS, CALLS = 400, 200


def _control_block(c=0.95, **kw):
    """D = 3, tanh, hidden (8,), zero biases, a point near 0 (tanh' ~ 1), and W1 = -alpha W0^T: then
    J_g ~ W1^T W0^T = -alpha W0 W0^T, with eigenvalues about -0.65, -0.47, -0.32 (W0 = c U diag(1, .85, .7) R,
    U and R random rotations; V1 below c, the identity branch).  A Jacobian with large higher powers, where
    truncating the series matters, yet rho(J)^2 < 1 - p = 0.5, where the roulette's variance is finite."""
    b = ResidualBlock(3, hidden=(8,), activation="tanh", lipschitz=c, **kw)
    rng = np.random.default_rng(4)
    U = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    R = np.linalg.qr(rng.standard_normal((8, 8)))[0][:3]
    V0 = 2.0 * U @ np.diag([1.0, 0.85, 0.7]) @ R               # sigma = 2 > c: W0 = c V0 / 2
    alpha = 0.65 / c ** 2
    p = {"net.V0": V0, "net.b0": np.zeros(8), "net.V1": -alpha * (c * V0 / 2.0).T, "net.b1": np.zeros(3)}
    x = 0.05 * rng.standard_normal((1, 3))
    return b, p, x


def _dense_jacobian(b, p, x):
    """J_g at the single point x by autograd on the traced forward (y = x + g): an independent reference."""
    J = autograd.jacobian(lambda z: b.forward(p, z[None], xp=anp)[0][0])(x[0])
    return J - np.eye(x.shape[1])


def _exact_logdet(b, p, x):
    sign, ld = np.linalg.slogdet(np.eye(x.shape[1]) + _dense_jacobian(b, p, x))
    assert sign > 0
    return ld


def _call_means(b, p, x, seed, calls=CALLS, rows=ROWS):
    rng = np.random.default_rng(seed)
    xs = np.repeat(x, rows, axis=0)
    return np.array([b.forward(p, xs, rng=rng)[1].mean() for _ in range(calls)])


def _z(samples, target):
    se = samples.std(ddof=1) / np.sqrt(samples.size)
    return (samples.mean() - target) / se, se


def unbiased(samples, target):
    return abs(_z(samples, target)[0]) <= 3.0


def test_estimators_unbiased_and_the_truncated_control_fails():
    b0, p, x = _control_block()
    exact = _exact_logdet(b0, p, x)
    J = _dense_jacobian(b0, p, x)
    rho = max(abs(np.linalg.eigvals(J)))
    assert rho ** 2 < 1 - 0.5, "the roulette's variance is finite only for rho(J)^2 < 1 - p"
    roulette = _call_means(ResidualBlock(3, hidden=(8,), activation="tanh", lipschitz=0.95, logdet="roulette"),
                           p, x, 1)
    series30 = _call_means(ResidualBlock(3, hidden=(8,), activation="tanh", lipschitz=0.95, logdet="series",
                                         n_terms=30, probe="rademacher"), p, x, 2)
    control = _call_means(ResidualBlock(3, hidden=(8,), activation="tanh", lipschitz=0.95, logdet="series",
                                        n_terms=2), p, x, 3)
    # the series' truncation at 30 terms is below 1e-6 here (|tr J^k| <= 3 rho^k): unbiased at this precision
    assert 3 * rho ** 31 / 31 / (1 - rho) < 1e-6
    assert unbiased(roulette, exact), _z(roulette, exact)
    assert unbiased(series30, exact), _z(series30, exact)
    z, se = _z(control, exact)
    assert not unbiased(control, exact), f"the control should fail: z = {z:.1f}"
    assert abs(z) > 10, z
    two_terms = np.trace(J) - np.trace(J @ J) / 2          # the control's own expectation
    assert unbiased(control, two_terms), _z(control, two_terms)


def test_estimator_spread_and_rademacher_beats_gaussian():
    """Hutchinson's variance: for a symmetric part S of A, Var(v^T A v) = 2||S||_F^2 (Gaussian) and
    2(||S||_F^2 - sum_i S_ii^2) (Rademacher), so Rademacher probes are never worse; the measured standard
    deviations of single-probe series estimates (n = 30, bias < 1e-6) follow that."""
    b0, p, x = _control_block()
    rows = 20000
    sd = {}
    for probe in ("gaussian", "rademacher"):
        b = ResidualBlock(3, hidden=(8,), activation="tanh", lipschitz=0.95, logdet="series", n_terms=30, probe=probe)
        ld = b.forward(p, np.repeat(x, rows, axis=0), rng=np.random.default_rng(5))[1]
        sd[probe] = ld.std(ddof=1)
    J = _dense_jacobian(b0, p, x)
    # the estimator is v^T L v with L = sum_k (-1)^(k+1) J^k / k = log(I + J) (to 1e-6); its symmetric part S
    L = sum((-1.0) ** (k + 1) * np.linalg.matrix_power(J, k) / k for k in range(1, 31))
    S = 0.5 * (L + L.T)
    want = {"gaussian": np.sqrt(2 * np.sum(S * S)),
            "rademacher": np.sqrt(2 * (np.sum(S * S) - np.sum(np.diag(S) ** 2)))}
    for probe in sd:   # a sample standard deviation of 20000 draws: relative error ~ 1/sqrt(2 * 20000) = 0.5%
        assert abs(sd[probe] / want[probe] - 1) < 0.05, (probe, sd[probe], want[probe])
    assert sd["rademacher"] < sd["gaussian"]


def _flat(dx, grads, keys):
    return np.concatenate([dx.ravel()] + [grads[k].ravel() for k in keys])


def test_neumann_backward_is_the_exact_gradient_of_its_surrogate():
    """With the forward's probes v and the kept u = sum_k (-1)^k w_k (J^T)^k v fixed, the Neumann backward is
    the gradient of (dlogdet / P) u^T J_g(x) v plus the output path: checked against autograd of that
    surrogate written with a dense autograd Jacobian (not npflows' tangent passes)."""
    rng = np.random.default_rng(0)
    for logdet in ("series", "roulette"):
        b = ResidualBlock(2, hidden=(5,), activation="lipswish", logdet=logdet, grad="neumann", n_probes=2,
                          n_terms=4)
        p = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
        x = rng.standard_normal((3, 2))
        y, ld, cache = b.forward(p, x, rng=np.random.default_rng(1))
        dy, dl = rng.standard_normal(y.shape), rng.standard_normal(ld.shape)
        dx, grads = b.backward(p, dy, dl, cache)
        V, u = cache["V"], cache["u_bar"]
        P = V.shape[1]

        def surrogate(args):
            q, z = args
            out = anp.sum(dy * b.forward(q, z, xp=anp)[0])
            for n in range(z.shape[0]):
                Jn = autograd.jacobian(lambda r: b.forward(q, r[None], xp=anp)[0][0])(z[n]) - np.eye(2)
                for k in range(P):
                    out = out + dl[n] / P * anp.dot(u[n, k], anp.dot(Jn, V[0 if V.shape[0] == 1 else n, k]))
            return out
        gp, gx = autograd.grad(surrogate)((p, x))
        np.testing.assert_allclose(dx, gx, rtol=1e-9, atol=1e-11)
        for k in p:
            np.testing.assert_allclose(grads[k], gp[k], rtol=1e-9, atol=1e-11, err_msg=k)
        # and the forward's estimate is the backprop forward's (same probes, same N): VJPs vs JVPs
        b2 = ResidualBlock(2, hidden=(5,), activation="lipswish", logdet=logdet, n_probes=2, n_terms=4)
        np.testing.assert_allclose(b2.forward(p, x, rng=np.random.default_rng(1))[1], ld, rtol=1e-12, atol=1e-14)


def test_neumann_gradient_is_unbiased_for_the_exact_logdet_gradient():
    """Mean of the roulette Neumann gradient of sum(logdet) over many draws against the exact logdet's gradient
    (logdet="exact" backward, checked by the harness), projected on 4 fixed random directions of the whole
    (x, parameters) gradient: each within 3 SE (family-wise false failure <= 1.1%).  The control, the Neumann
    gradient of the 2-term series (an estimate of the gradient of the truncated series), fails."""
    b0, p, x = _control_block()
    rows, calls = 200, 200
    xs = np.repeat(x, rows, axis=0)
    keys = sorted(p)
    exact = nf.ResidualBlock(3, hidden=(8,), activation="tanh", lipschitz=0.95)
    y, ld, cache = exact.forward(p, xs)
    target = _flat(*exact.backward(p, np.zeros_like(y), np.full(rows, 1.0 / rows), cache), keys)
    dirs = np.random.default_rng(9).standard_normal((4, target.size))

    def draws(block, seed):
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(calls):
            y, ld, cache = block.forward(p, xs, rng=rng)
            out.append(dirs @ _flat(*block.backward(p, np.zeros_like(y), np.full(rows, 1.0 / rows), cache), keys))
        return np.array(out)

    rou = draws(ResidualBlock(3, hidden=(8,), activation="tanh", lipschitz=0.95, logdet="roulette",
                              grad="neumann"), 11)
    ctl = draws(ResidualBlock(3, hidden=(8,), activation="tanh", lipschitz=0.95, logdet="series", n_terms=2,
                              grad="neumann"), 12)
    t = dirs @ target
    for j in range(4):
        assert unbiased(rou[:, j], t[j]), (j, _z(rou[:, j], t[j]))
    assert not all(unbiased(ctl[:, j], t[j]) for j in range(4)), [_z(ctl[:, j], t[j]) for j in range(4)]


def _peak_bytes(block, p, x, rng_seed=0):
    tracemalloc.start()
    try:
        y, ld, cache = block.forward(p, x, rng=np.random.default_rng(rng_seed))
        block.backward(p, np.zeros_like(y), np.ones_like(ld), cache)
        del cache
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_neumann_gradient_memory_is_flat_in_the_number_of_terms():
    """tracemalloc's peak of one forward + backward (N = 256, D = 16, hidden 64x64, one probe): backprop through
    the series keeps every term's tangents (O(n): here 4 arrays of 256 x 64 and one of 256 x 16 per term, 0.56
    MB); the Neumann estimator keeps one vector u (O(1)).  Measured: backprop 5.3 MB at n = 5 and 24.8 MB at
    n = 40; Neumann 2.9 MB at both (the primal activations and the backward's temporaries)."""
    rng = np.random.default_rng(0)
    peaks = {}
    for grad in ("backprop", "neumann"):
        for n in (5, 40):
            b = ResidualBlock(16, hidden=(64, 64), logdet="series", n_terms=n, grad=grad)
            p = b.init(rng)
            x = rng.standard_normal((256, 16))
            peaks[grad, n] = _peak_bytes(b, p, x)
    assert peaks["backprop", 40] > 4 * peaks["backprop", 5], peaks
    assert peaks["neumann", 40] < 1.3 * peaks["neumann", 5], peaks
    assert peaks["neumann", 40] * 5 < peaks["backprop", 40], peaks


@pytest.mark.parametrize("spectral, slack", [("exact", 1e-12), ("power", 0.1)])
def test_lipschitz_bound_holds_after_every_update(spectral, slack):
    """A short Adam run (lr 3e-2, 30 steps on two-moons) of a residual flow: after every update, the largest
    singular value of every effective weight (by SVD) is <= c (exact: to 1e-12 relative) or <= c (1 + 0.1)
    (20 power-iteration steps from the fixed start; the measured excess over random Gaussian matrices up to 128
    wide: median 2e-3, 99th percentile 5e-2, maximum 9e-2), and |g(a) - g(b)| <= Lip |a - b| on 500 random
    pairs, with Lip = the product of the layers' bounds."""
    c = 0.9
    rng = np.random.default_rng(0)
    flow = nf.NormalizingFlow(nf.residual_flow(2, n_blocks=2, hidden=(16, 16), lipschitz=c, spectral=spectral,
                                               n_power_iter=20), nf.StandardNormal(2))
    data = nf.data.two_moons(256, rng)
    params = flow.init(rng, data)
    state = nf.adam_init(params)
    blocks = [(i, l) for i, l in enumerate(flow.bijector.layers) if isinstance(l, ResidualBlock)]
    worst = 0.0
    for step in range(30):
        _, g = flow.loss_and_grad(params, data)
        params, state = nf.adam(params, g, state, lr=3e-2)
        for i, blk in blocks:
            sub = {k[len(f"{i}."):]: v for k, v in params.items() if k.startswith(f"{i}.")}
            Ws, bs, _ = blk.net.effective(sub)
            norms = [np.linalg.svd(W, compute_uv=False)[0] for W in Ws]
            worst = max(worst, max(norms) / c)
            assert max(norms) <= c * (1 + slack), (step, i, norms)
            a, bb = rng.standard_normal((500, 2)) * 2, rng.standard_normal((500, 2)) * 2
            ga, gb = blk.net.output(Ws, bs, a), blk.net.output(Ws, bs, bb)
            lip = np.prod(norms)
            assert np.all(np.linalg.norm(ga - gb, axis=1) <= lip * np.linalg.norm(a - bb, axis=1) * (1 + 1e-12))
            assert lip <= c * (1 + slack) ** len(norms)
    assert worst > 0.99 if spectral == "exact" else worst > 0.9       # the bound is active, not vacuous


def test_inverse_converges_within_the_stated_count_and_grows_as_c_approaches_1():
    """The a-priori bound: the k-th step |x_k - x_{k-1}| <= c^(k-1) |x_1 - x_0|, so the stopping rule
    c/(1-c) |x_k - x_{k-1}| <= tol max(1, |x|) holds by k = ceil(log(tol max(1, |x|) (1-c) / |x_1 - x_0|) / log c);
    the reported count is at most that (+ 1 for rounding) and grows with c.  Here g is affine (no hidden layer)
    with W = c Q, Q orthogonal with eigenvalues -1 and e^(+-i 3pi/4), so the iteration contracts at exactly
    rate c."""
    rng = np.random.default_rng(0)
    D = 3
    th = 3 * np.pi / 4
    Q = np.array([[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0], [0.0, 0.0, -1.0]])
    y = rng.standard_normal((5, D))
    counts = {}
    for c in (0.5, 0.9, 0.99):
        b = ResidualBlock(D, hidden=(), lipschitz=c, inv_tol=1e-10, inv_maxiter=100_000)
        p = {"net.V0": 2.0 * Q, "net.b0": rng.standard_normal(D)}
        x, ld, stats = b.inverse_with_stats(p, y)
        step0 = np.linalg.norm(b.forward(p, y)[0] - y, axis=1)        # |x_1 - x_0| = |g(y)|
        size = np.maximum(1.0, np.linalg.norm(x, axis=1))
        bound = np.ceil(np.log(1e-10 * size * (1 - c) / step0) / np.log(c)).max() + 1
        assert stats["n_iter"] <= bound, (c, stats, bound)
        assert stats["n_iter"] >= 0.5 * bound, (c, stats, bound)          # the rate really is c here
        np.testing.assert_allclose(b.forward(p, x)[0], y, rtol=0, atol=1e-9)
        counts[c] = stats["n_iter"]
    assert counts[0.5] < counts[0.9] < counts[0.99]


def test_inverse_raises_when_it_cannot_converge():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((4, 2))
    # c >= 1: W = -1.5 I, x <- y + 1.5 x diverges
    b = ResidualBlock(2, hidden=(), lipschitz=1.5)
    p = {"net.V0": -2.0 * np.eye(2), "net.b0": np.zeros(2)}
    with pytest.raises(nf.InverseNotConverged, match=r"ResidualBlock inverse: .*4 of 4 points .*lipschitz=1.5"):
        b.inverse(p, y)
    # c < 1 but too small a budget: the message names the points, the count and the remedy
    b = ResidualBlock(2, hidden=(), lipschitz=0.99, inv_maxiter=5)
    p = {"net.V0": -2.0 * np.eye(2), "net.b0": np.zeros(2)}
    with pytest.raises(nf.InverseNotConverged, match=r"indices \[0, 1, 2, 3\]\) within inv_maxiter=5 iterations"):
        b.inverse(p, y)
    with pytest.raises(FloatingPointError):          # a subclass: code that tolerates overflow tolerates this
        nf.NormalizingFlow(b, nf.StandardNormal(2)).sample(p, 3, rng)


def test_determinism_given_a_seed():
    b = ResidualBlock(3, hidden=(6,), logdet="roulette", n_probes=2)
    rng = np.random.default_rng(0)
    p = b.init(rng)
    x = rng.standard_normal((5, 3))
    a = b.forward(p, x, rng=np.random.default_rng(42))[1]
    np.testing.assert_array_equal(a, b.forward(p, x, rng=np.random.default_rng(42))[1])
    assert not np.array_equal(a, b.forward(p, x, rng=np.random.default_rng(43))[1])
    # without an rng: probe_seed, the same answer every call (and a different seed, another)
    np.testing.assert_array_equal(b.forward(p, x)[1], b.forward(p, x)[1])
    np.testing.assert_array_equal(b.forward(p, x)[1], b.forward(p, x, rng=np.random.default_rng(0))[1])
    other = ResidualBlock(3, hidden=(6,), logdet="roulette", n_probes=2, probe_seed=1)
    assert not np.array_equal(b.forward(p, x)[1], other.forward(p, x)[1])
    # the inverse's logdet uses the same draws: an exact round trip of logdets
    y, ld, _ = b.forward(p, x)
    assert np.allclose(b.inverse(p, y)[1], -ld, rtol=0, atol=1e-9)
    # drawing: probes (N, P, D) first, then the geometric length
    r = np.random.default_rng(7)
    V, n = b.draw(5, np.random.default_rng(7))
    np.testing.assert_array_equal(V, r.standard_normal((5, 2, 3)))
    assert n == 2 + r.geometric(0.5)


def test_fixed_draws_and_roulette_weights():
    b = ResidualBlock(2, hidden=(4,), logdet="roulette", n_exact=1, roulette_p=0.25, probes=[[1.0, -1.0]],
                      roulette_n=5)
    np.testing.assert_allclose(b.term_weights(5), [1, 1, 1, 4 / 3, 16 / 9, 64 / 27])
    V, n = b.draw(7)
    assert V.shape == (1, 1, 2) and n == 5
    # the series' weights are all 1; the estimate with fixed probes is the same for any batch split
    p = b.init(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((6, 2))
    np.testing.assert_allclose(b.forward(p, x)[1][:3], b.forward(p, x[:3])[1], rtol=1e-14)


def test_constructor_refusals():
    for kw, msg in [(dict(logdet="neumann"), "unknown logdet"), (dict(grad="neumann"), "grad='neumann'"),
                    (dict(activation="relu"), "unknown activation"), (dict(spectral="svd"), "unknown spectral"),
                    (dict(lipschitz=0.0), "lipschitz"), (dict(roulette_p=1.0), "roulette_p"),
                    (dict(probes=np.ones((2, 3))), "probes"), (dict(logdet="roulette", roulette_n=2), "roulette_n"),
                    (dict(n_terms=0), "n_terms"), (dict(inv_tol=-1.0), "inv_tol")]:
        with pytest.raises(ValueError, match=msg):
            ResidualBlock(2, hidden=(3,), **kw)
    with pytest.raises(ValueError, match="ResidualBlock: rng must be a numpy.random.Generator"):
        b = ResidualBlock(2, hidden=(3,))
        b.forward(b.init(np.random.default_rng(0)), np.zeros((1, 2)), rng=0)


def test_residual_flow_builder_and_loss_and_grad_without_rng():
    """``residual_flow`` interleaves ActNorm with the blocks (ActNorm, (block, ActNorm) x n), initialises the
    ActNorms on data, and ``NormalizingFlow.loss_and_grad`` (which passes no rng) trains an estimator block
    with its probe_seed's fixed draws."""
    f = nf.residual_flow(2, n_blocks=3, hidden=(8,), logdet="roulette")
    names = [type(l).__name__ for l in f.layers]
    assert names == ["ActNorm"] + ["ResidualBlock", "ActNorm"] * 3
    flow = nf.NormalizingFlow(f, nf.StandardNormal(2))
    rng = np.random.default_rng(0)
    x = nf.data.two_moons(64, rng)
    p = flow.init(rng, x)
    z = f.forward({k: v for k, v in p.items() if not k.startswith("base.")}, x)[0][:, :]
    assert np.all(np.isfinite(z))
    loss, g = flow.loss_and_grad(p, x)
    assert np.isfinite(loss) and set(g) == set(p)
    assert loss == flow.loss_and_grad(p, x)[0]


def test_large_layers_take_the_gram_matrix_path_with_the_same_gradients():
    """Weights wider than GRAM_FROM on both sides get sigma and its singular vectors from the top eigenpair of
    the smaller Gram matrix instead of an SVD: the harness's autograd and numpy-vs-traced checks on such a
    block (hidden 17 x 18, exact spectral norm)."""
    import harness
    from npflows.nn.lipschitz import GRAM_FROM
    from registry import Case, perturbed
    rng = np.random.default_rng(0)
    b = ResidualBlock(2, hidden=(GRAM_FROM + 1, GRAM_FROM + 2), inv_tol=1e-12)
    p = perturbed(b, rng, 0.3)
    assert min(p["net.V1"].shape) > GRAM_FROM
    case = Case(b, p, rng.standard_normal((4, 2)))
    harness.check_numpy_path_matches_traced(case)
    harness.check_backward_autograd(case, np.random.default_rng(1))
    harness.check_round_trip(case)
