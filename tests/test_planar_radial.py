"""Planar and radial flows: what the shared harness cannot say (constraints, the numerical inverse's
tolerance and failure, parameter validation, the traced inverse, use inside a PushForward).

The harness (registry_planar_radial.py) already checks round trip, brute-force logdet, backward against
autograd and central differences, float32 and bad input for every configuration."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import npflows as nf
from npflows.bijectors.planar_radial import solve_increasing


def planar_params(rng, dim, c, w_norm=1.0, b=0.3):
    """Raw planar parameters with |w| = w_norm and w^T u = c exactly."""
    w = rng.standard_normal(dim)
    w *= w_norm / np.linalg.norm(w)
    u = rng.standard_normal(dim)
    u = u - (w @ u) / (w @ w) * w + c * w / (w @ w)
    return {"w": w, "u": u, "b": np.array([b])}


# ----------------------------------------------------------------------------- planar: the constraint
@pytest.mark.parametrize("c", [-50.0, -3.0, -1.0, 0.0, 2.0, 40.0])
def test_planar_constraint_keeps_w_dot_u_hat_above_minus_one(c):
    rng = np.random.default_rng(0)
    b = nf.Planar(4)
    p = planar_params(rng, 4, c)
    u_hat, m, *_ = b.u_hat(p)
    assert float(p["w"] @ p["u"]) == pytest.approx(c, abs=1e-12)
    # w^T u_hat = m = softplus(c) - 1 > -1 (relative 1e-12: a few roundings of O(|c|) terms)
    assert float(p["w"] @ u_hat) == pytest.approx(np.logaddexp(0.0, c) - 1.0, rel=1e-12, abs=1e-12 * abs(c))
    # m > -1 exactly; in floating point m = softplus(c) - 1 rounds to -1 for c < -37, which is why the
    # determinant is evaluated as t^2 + s softplus(c): at a = 0 it is softplus(c) > 0, logdet ~ c
    assert float(m) >= -1.0
    z0 = -p["b"] * p["w"] / (p["w"] @ p["w"])               # the point with a = w^T z + b = 0
    _, logdet, _ = b.forward(p, z0[None, :])
    assert logdet[0] == pytest.approx(np.log(np.logaddexp(0.0, c)), rel=1e-12)
    z2, ld2 = b.inverse(p, b.forward(p, z0[None, :])[0])
    assert np.isfinite(ld2[0])
    # u_hat only moves u along w: the components orthogonal to w are untouched
    perp = lambda v: v - (p["w"] @ v) / (p["w"] @ p["w"]) * p["w"]
    np.testing.assert_allclose(perp(u_hat), perp(p["u"]), atol=1e-12 * (1 + abs(c)))


def test_planar_constraint_is_what_keeps_the_map_invertible():
    """Raw w^T u = -3: the unconstrained map z + u tanh(w^T z + b) has a negative Jacobian determinant
    at a = 0 (it folds the plane); the constrained one stays positive there and is injective."""
    rng = np.random.default_rng(1)
    b = nf.Planar(2)
    p = planar_params(rng, 2, -3.0, b=0.0)
    assert 1.0 + p["w"] @ p["u"] < 0                       # det of the unconstrained map at a = 0
    z = np.linspace(-3, 3, 601)[:, None] * p["w"] / (p["w"] @ p["w"])   # a line across a = 0 along w
    x, logdet, _ = b.forward(p, z)
    assert np.all(np.isfinite(logdet))
    # along w the constrained map is strictly increasing (a + m tanh(a), m > -1): no fold
    assert np.all(np.diff(x @ p["w"]) > 0)
    # and the brute-force determinant agrees in sign with exp(logdet) > 0
    J = autograd.jacobian(lambda v: b.forward(p, anp.reshape(v, (1, 2)), xp=anp)[0].reshape(-1))(z[300])
    assert np.linalg.det(J) > 0


def test_planar_init_is_near_identity():
    b = nf.Planar(3)
    p = b.init(np.random.default_rng(2))
    u_hat = b.u_hat(p)[0]
    assert np.linalg.norm(u_hat) < 0.05            # noise of scale 0.01 per coordinate on u
    x = np.random.default_rng(3).standard_normal((10, 3))
    y, ld, _ = b.forward(p, x)
    assert np.abs(y - x).max() < 0.05 and np.abs(ld).max() < 0.1


# ----------------------------------------------------------------------------- planar: the inverse
@pytest.mark.parametrize("c, w_norm", [(-5.0, 1.0), (0.0, 1.0), (3.0, 0.2), (30.0, 5.0), (-1.0, 10.0)])
def test_planar_inverse_meets_its_tolerance(c, w_norm):
    """Well-conditioned maps (det >= softplus(c) >= 0.0067): the root a = w^T z + b is solved to
    rtol 1e-12 relative to max(1, |a|), so z is recovered to ~1e-12 relative even for |x| up to 1e3."""
    rng = np.random.default_rng(4)
    b = nf.Planar(3)
    p = planar_params(rng, 3, c, w_norm)
    z = rng.standard_normal((300, 3)) * np.logspace(-3, 3, 300)[:, None]
    x, ld, _ = b.forward(p, z)
    z2, ld2 = b.inverse(p, x)
    scale = np.maximum(1.0, np.abs(z).max(axis=1))
    assert (np.abs(z2 - z).max(axis=1) / scale).max() < 1e-12
    assert np.abs(ld + ld2).max() < 1e-12
    # the scalar equation itself: F(a) = a + m tanh(a) - (w^T x + b) vanishes at the recovered a
    m = float(b.u_hat(p)[1])
    a = z2 @ p["w"] + p["b"]
    resid = a + m * np.tanh(a) - (x @ p["w"] + p["b"])
    assert np.abs(resid).max() <= 1e-12 * np.maximum(1.0, np.abs(a)).max()


def test_planar_inverse_nearly_singular_is_accurate_to_its_conditioning():
    """c = -25: det = t^2 + s softplus(c) is ~1e-11 at a = 0; the iteration then stops on the rounding
    level of the residual, and the error of z is eps / det-sized, not a failure."""
    rng = np.random.default_rng(5)
    b = nf.Planar(2)
    p = planar_params(rng, 2, -25.0)
    z = -p["b"] * p["w"] + 1e-3 * rng.standard_normal((50, 2))       # |w| = 1: a = w^T z + b ~ 1e-3
    x, ld, _ = b.forward(p, z)
    z2, ld2 = b.inverse(p, x)
    assert ld.min() < -20                                  # really nearly singular
    assert np.all(np.isfinite(z2)) and np.all(np.isfinite(ld2))
    assert np.abs(b.forward(p, z2)[0] - x).max() < 1e-14  # the forward residual is at rounding level


def test_planar_inverse_raises_when_it_cannot_converge():
    rng = np.random.default_rng(6)
    b = nf.Planar(2, maxiter=1)
    p = planar_params(rng, 2, 5.0)
    x = 10.0 * rng.standard_normal((20, 2))
    with pytest.raises(nf.InverseNotConverged, match=r"Planar: the numerical inverse did not converge"):
        b.inverse(p, x)
    assert issubclass(nf.InverseNotConverged, FloatingPointError)   # density_grid treats it as overflow
    nf.Planar(2).inverse(p, x)                                       # the default budget is enough


def test_solve_increasing_counts_iterations_and_bisects():
    """A flat start: F(a) = a^3 - 1e-6 (F' = 0 at 0): the Newton step from 0 is undefined, bisection
    takes over, and the root 1e-2 is found to rtol."""
    fun = lambda a: (a ** 3 - 1e-6, 3 * a ** 2, 1e-30 + 0 * a)
    a = solve_increasing(fun, np.zeros(1), np.full(1, -1.0), np.full(1, 1.0), 1e-13, 200, "test")
    assert a[0] == pytest.approx(1e-2, rel=1e-12)


def test_planar_rejects_zero_w():
    b = nf.Planar(2)
    p = {"w": np.zeros(2), "u": np.ones(2), "b": np.zeros(1)}
    with pytest.raises(ValueError, match=r"Planar: the parameter w must be finite and nonzero"):
        b.forward(p, np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"Planar"):
        b.inverse(p, np.ones((3, 2)))


# ----------------------------------------------------------------------------- radial
@pytest.mark.parametrize("ar, br", [(-30.0, -30.0), (0.0, -6.0), (20.0, -40.0), (-5.0, 30.0)])
def test_radial_constraint(ar, br):
    b = nf.Radial(2)
    alpha, beta, B = b.alpha_beta({"z0": np.zeros(2), "alpha_raw": np.array([ar]), "beta_raw": np.array([br])})
    # alpha > 0 and B = alpha + beta > 0 hold in floating point too; beta = B - alpha may round to -alpha
    # (br = -40), which is harmless because the map and its logdet use B, never alpha + beta
    assert alpha[0] > 0 and B[0] > 0 and beta[0] >= -alpha[0]
    assert B[0] == pytest.approx(np.logaddexp(0.0, br), rel=1e-15)
    z = np.random.default_rng(0).standard_normal((5, 2))
    _, ld, _ = b.forward({"z0": np.zeros(2), "alpha_raw": np.array([ar]), "beta_raw": np.array([br])}, z)
    assert np.all(np.isfinite(ld))


@pytest.mark.parametrize("ar, br", [(-20.0, -30.0), (0.0, -6.0), (0.0, 0.0), (20.0, 10.0), (-3.0, 40.0)])
def test_radial_inverse_is_exact_to_rounding(ar, br):
    """The quadratic in the radius, in its cancellation-free form: the round trip is exact to a few
    rounding errors (1e-14 relative) from 1e-6 to 1e3 away from z0 and for extreme alpha and beta.

    The logdet is compared at 1e-10: near z0 a contracting map (B = 0.0025) puts x within ~1e-9 of z0,
    so the radius recovered from x - z0 carries an absolute error ~eps |z0|, which log(r + B) magnifies
    by 1/B (the conditioning of the problem, not of the solver)."""
    rng = np.random.default_rng(7)
    b = nf.Radial(3)
    p = {"z0": rng.standard_normal(3), "alpha_raw": np.array([ar]), "beta_raw": np.array([br])}
    d = rng.standard_normal((200, 3)) * np.logspace(-6, 3, 200)[:, None]
    z = p["z0"] + d
    x, ld, _ = b.forward(p, z)
    z2, ld2 = b.inverse(p, x)
    assert (np.abs(z2 - z).max(axis=1) / np.maximum(1.0, np.abs(z).max(axis=1))).max() < 1e-14
    assert np.abs(ld + ld2).max() < 1e-10 * max(1.0, np.abs(ld).max())


def test_radial_init_is_identity_and_centre_is_fixed():
    b = nf.Radial(2)
    p = b.init(np.random.default_rng(8))
    x = np.random.default_rng(9).standard_normal((10, 2))
    y, ld, _ = b.forward(p, x)
    np.testing.assert_allclose(y, x, atol=1e-15)
    np.testing.assert_allclose(ld, 0.0, atol=1e-15)
    p["beta_raw"] = np.array([2.0])
    y0, _, _ = b.forward(p, p["z0"][None, :])
    np.testing.assert_array_equal(y0[0], p["z0"])        # r = 0: x = z0, finite logdet
    dz, g = b.backward(p, np.ones((1, 2)), np.ones(1), b.forward(p, p["z0"][None, :])[2])
    assert np.all(np.isfinite(dz)) and all(np.all(np.isfinite(v)) for v in g.values())


# ----------------------------------------------------------------------------- both
@pytest.mark.parametrize("make", [lambda: nf.Planar(3), lambda: nf.Radial(3)])
def test_traced_inverse_has_the_inverse_jacobian(make):
    """Autograd through ``inverse(xp=autograd.numpy)`` gives the inverse of the forward Jacobian (for the
    planar flow this is the implicit-function derivative of the final traced Newton step), to 1e-10."""
    rng = np.random.default_rng(10)
    b = make()
    p = {k: v + 0.7 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    z = rng.standard_normal((3, 3))
    x = b.forward(p, z)[0]
    def jac(fn, v):
        return autograd.jacobian(lambda t: fn(anp.reshape(t, (3, 3))).reshape(-1))(v.ravel()).reshape(3, 3, 3, 3)
    Jf = jac(lambda t: b.forward(p, t, xp=anp)[0], z)
    Ji = jac(lambda t: b.inverse(p, t, xp=anp)[0], x)
    for i in range(3):
        np.testing.assert_allclose(Ji[i, :, i, :] @ Jf[i, :, i, :], np.eye(3), atol=1e-10)


def _stack(n_layers, kind="planar"):
    layers = [nf.Planar(2) if kind == "planar" or i % 2 else nf.Radial(2) for i in range(n_layers)]
    return nf.PushForward(nf.Sequential(layers), nf.StandardNormal(2))


def test_pushforward_log_prob_of_its_own_samples_matches():
    """32 perturbed layers: log q by the forward pass (sample_and_log_prob) and by 32 numerical inverses
    (log_prob) agree to 1e-9 (the inverse errors of 32 solves, each ~1e-13, amplified by the stack)."""
    rng = np.random.default_rng(11)
    for kind in ("planar", "mixed"):
        flow = _stack(32, kind)
        p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}
        x, logq = flow.sample_and_log_prob(p, 200, np.random.default_rng(12))
        np.testing.assert_allclose(flow.log_prob(p, x), logq, rtol=0, atol=1e-9)


def test_reverse_kl_gradient_through_planar_and_radial_layers():
    """The reverse-KL gradient of a PushForward over planar and radial layers, against central
    differences of the same Monte Carlo objective (same seed, so the same base noise): h = 1e-5,
    tolerance 1e-6 relative, as in the harness."""
    from npflows.targets import Potential
    target = Potential("U2")
    flow = nf.PushForward(nf.Sequential([nf.Planar(2), nf.Radial(2), nf.Planar(2)]), nf.DiagNormal(2))
    rng = np.random.default_rng(13)
    p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}
    obj = lambda q: flow.reverse_kl_and_grad(q, target, 64, np.random.default_rng(14))
    _, g = obj(p)
    assert set(g) == set(p)
    h = 1e-5
    for k in p:
        v = rng.standard_normal(p[k].shape)
        plus, minus = dict(p), dict(p)
        plus[k], minus[k] = p[k] + h * v, p[k] - h * v
        fd = (obj(plus)[0] - obj(minus)[0]) / (2 * h)
        assert abs(np.sum(g[k] * v) - fd) <= 1e-6 * max(1.0, abs(fd)), k


def test_float32_inverse_of_a_stack_stays_float32():
    flow = _stack(8, "mixed")
    p = nf.cast_params({k: v + 0.3 * np.random.default_rng(15).standard_normal(v.shape)
                        for k, v in flow.init(np.random.default_rng(16)).items()}, np.float32)
    x, logq = flow.sample_and_log_prob(p, 50, np.random.default_rng(17))
    assert x.dtype == np.float32 and logq.dtype == np.float32
    lp = flow.log_prob(p, x)
    assert lp.dtype == np.float32
    np.testing.assert_allclose(lp, logq, atol=1e-3)   # float32: 8 layers of ~1e-6 relative error each


def test_reverse_kl_script_smoke(tmp_path, capsys):
    """scripts/reverse_kl_2d.py runs end to end with tiny settings (the measured figures of the default
    run are in the script's docstring); its KL estimate is finite and positive, as a KL must be (up to
    Monte Carlo error, which is far below the KL of a flow after 30 steps)."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "reverse_kl_2d.py")
    spec = importlib.util.spec_from_file_location("reverse_kl_2d", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    results = mod.main(["--flows", "planar", "radial", "--potentials", "U2", "--steps", "30", "--n-eval", "4000",
                        "--no-plots", "--out", str(tmp_path)])
    assert [(r["kind"], r["name"]) for r in results] == [("planar", "U2"), ("radial", "U2")]
    for r in results:
        assert np.isfinite(r["kl"]) and r["kl"] > 0
    assert (tmp_path / "planar_U2.npz").exists()
    flow, params, config = nf.load(tmp_path / "planar_U2.npz")
    assert config["potential"] == "U2" and set(params) == set(results[0]["params"])
    assert isinstance(flow, nf.PushForward) and set(flow.param_shapes()) == set(params)
    assert "KL(q||p)" in capsys.readouterr().out


@pytest.mark.parametrize("c", [-5.0, -1.0, 0.0, 2.0])
@pytest.mark.parametrize("slope", [0.2, 1.0])
def test_leaky_planar_inverse_is_closed_form_on_both_sides_and_at_the_kink(c, slope):
    """The leaky-ReLU planar flow: inputs on both sides of the hinge and exactly on it (a = 0, where
    h'(0) = 1), with w.u_hat = m from -0.993 (c = -5) to 1.13: the closed-form inverse is exact to a few
    ulps (times the condition number 1/softplus(c) <= 150), and the logdet is log(1 + h'(a) m)."""
    rng = np.random.default_rng(5)
    b = nf.Planar(3, activation="leaky_relu", slope=slope)
    p = planar_params(rng, 3, c)
    z = rng.standard_normal((6, 3))
    w = p["w"]
    z[0] -= ((z[0] @ w + p["b"][0]) / (w @ w)) * w                 # a = 0 up to rounding
    x, ld, _ = b.forward(p, z)
    zi, ldi = b.inverse(p, x)
    np.testing.assert_allclose(zi, z, rtol=0, atol=1e-12 * (1 + np.abs(z).max()))
    np.testing.assert_allclose(ldi, -ld, rtol=0, atol=1e-13)
    m = np.logaddexp(0.0, c) - 1.0
    a = z @ w + p["b"][0]
    np.testing.assert_allclose(ld, np.log1p(np.where(a < 0, slope, 1.0) * m), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("kw", [dict(activation="relu"), dict(activation="leaky_relu", slope=0.0),
                                dict(activation="leaky_relu", slope=1.5)])
def test_planar_rejects_bad_activation_or_slope(kw):
    with pytest.raises(ValueError, match="Planar"):
        nf.Planar(2, **kw)


def test_radial_abs_alpha_is_normflows_parameterisation_and_rejects_zero():
    """alpha = |alpha_raw|: a negative alpha_raw gives the same map as its absolute value (the gradient flips
    sign), and alpha_raw = 0, where the map is singular at z0, raises ValueError naming Radial."""
    rng = np.random.default_rng(3)
    b = nf.Radial(2, alpha="abs")
    p = {"z0": rng.standard_normal(2), "alpha_raw": np.array([-0.4]), "beta_raw": np.array([0.3])}
    q = dict(p, alpha_raw=np.array([0.4]))
    x = rng.standard_normal((4, 2))
    (y1, l1, c1), (y2, l2, c2) = b.forward(p, x), b.forward(q, x)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(l1, l2)
    dy, dl = rng.standard_normal((4, 2)), rng.standard_normal(4)
    g1, g2 = b.backward(p, dy, dl, c1)[1], b.backward(q, dy, dl, c2)[1]
    np.testing.assert_allclose(g1["alpha_raw"], -g2["alpha_raw"], rtol=1e-15)
    with pytest.raises(ValueError, match="Radial"):
        b.forward(dict(p, alpha_raw=np.zeros(1)), x)
    with pytest.raises(ValueError, match="Radial"):
        nf.Radial(2, alpha="exp")
