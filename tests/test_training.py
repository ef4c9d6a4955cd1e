"""Adam, the fit loop, saving and loading, and the toy data."""
import io

import numpy as np
import pytest

import npflows as nf
from harness import close


def test_adam_first_step_is_lr_times_sign():
    """With bias correction, Adam's first step is lr * g / (|g| + eps) = lr * sign(g) (Kingma & Ba, sec. 2)."""
    p = {"a": np.array([1.0, -2.0, 3.0])}
    g = {"a": np.array([0.5, -4.0, 1e-3])}
    new, state = nf.adam(p, g, nf.adam_init(p), lr=0.1)
    close(new["a"], p["a"] - 0.1 * g["a"] / (np.abs(g["a"]) + 1e-8), 1e-12, "first Adam step")
    assert state["step"] == 1 and p["a"][0] == 1.0          # input not modified


def test_adam_matches_textbook_recursion_and_clips():
    rng = np.random.default_rng(0)
    p = {"w": rng.standard_normal(4)}
    s = nf.adam_init(p)
    m = v = np.zeros(4)
    w = p["w"].copy()
    for t in range(1, 6):
        g = {"w": rng.standard_normal(4)}
        p, s = nf.adam(p, g, s, lr=0.01)
        m = 0.9 * m + 0.1 * g["w"]
        v = 0.999 * v + 0.001 * g["w"] ** 2
        w = w - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    close(p["w"], w, 1e-12, "Adam vs textbook")
    g = {"w": np.array([3.0, 4.0, 0.0, 0.0])}
    q1, _ = nf.adam(p, g, nf.adam_init(p), lr=0.1, clip_norm=1.0)
    q2, _ = nf.adam(p, {"w": g["w"] / 5.0}, nf.adam_init(p), lr=0.1)
    close(q1["w"], q2["w"], 1e-15, "clipping rescales to the norm")
    with pytest.raises(ValueError, match="keys"):
        nf.adam(p, {"x": g["w"]}, s)
    with pytest.raises(FloatingPointError):
        nf.adam(p, {"w": np.array([np.nan, 0, 0, 0])}, s, clip_norm=1.0)


def test_adam_keeps_float32():
    p = {"w": np.ones(3, np.float32)}
    new, s = nf.adam(p, {"w": np.ones(3, np.float32)}, nf.adam_init(p))
    assert new["w"].dtype == np.float32 and s["m"]["w"].dtype == np.float32


def test_fit_learns_a_gaussian_and_stops_early():
    """An affine flow fitted to Gaussian data recovers the data's mean and scale; with a validation
    loss, fit returns the best parameters and stops once they no longer improve."""
    rng = np.random.default_rng(1)
    x = np.array([2.0, -1.0]) + np.array([0.5, 3.0]) * rng.standard_normal((4000, 2))
    flow = nf.NormalizingFlow(nf.ElementwiseAffine(2), nf.StandardNormal(2))
    xt, xv = nf.train.split_train_val(x, 0.2, rng)
    log = io.StringIO()
    p, hist = nf.fit(flow.loss_and_grad, flow.init(rng), xt, rng=rng, steps=3000, batch_size=256, lr=0.05,
                     val_loss=lambda q: -flow.log_prob(q, xv).mean(), eval_every=50, patience=5, out=log)
    assert "val" in log.getvalue() and "steps/s" in log.getvalue()
    close(np.exp(-p["log_scale"]), [0.5, 3.0], 0.05, "fitted scales")
    close(-p["shift"] * np.exp(-p["log_scale"]), [2.0, -1.0], 0.1, "fitted means")
    assert hist["stopped_at"] < 3000
    assert min(hist["val_loss"]) == pytest.approx(-flow.log_prob(p, xv).mean())


def test_fit_is_deterministic_given_seed():
    def run():
        rng = np.random.default_rng(3)
        flow = nf.NormalizingFlow(nf.realnvp(2, n_layers=2, hidden=(8,)), nf.StandardNormal(2))
        x = nf.data.two_moons(512, rng)
        return nf.fit(flow.loss_and_grad, flow.init(rng), x, rng=rng, steps=30, batch_size=64, progress=False)[0]
    a, b = run(), run()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_two_moons_matches_its_exact_density():
    """The generator and the quadrature density agree: the mean log-density of samples is the
    (negative) entropy, about -1.0085 nats at noise 0.1, and histogram mass matches the density."""
    rng = np.random.default_rng(5)
    x = nf.data.two_moons(4000, rng)
    assert x.shape == (4000, 2)
    ll = nf.data.two_moons_log_density(x, n_quad=801).mean()
    assert -1.06 < ll < -0.96          # -1.0085 +- 3 standard errors (sd of log p is about 0.9)
    g = np.linspace(-2.5, 3.5, 121)          # the density is ~0 beyond 5 sigma of the arcs
    X, Y = np.meshgrid(g, g - 0.75)
    dens = np.exp(nf.data.two_moons_log_density(np.stack([X.ravel(), Y.ravel()], 1), n_quad=801))
    assert abs(dens.sum() * (g[1] - g[0]) ** 2 - 1.0) < 1e-3   # Riemann sum of a smooth density, h = 0.05


def test_datasets_are_seeded_and_named():
    for name in nf.data.DATASETS:
        a = nf.data.load(name, 100, np.random.default_rng(0))
        b = nf.data.load(name, 100, np.random.default_rng(0))
        assert a.shape == (100, 2) and np.array_equal(a, b)
    with pytest.raises(ValueError, match="unknown dataset"):
        nf.data.load("spiral", 10, np.random.default_rng(0))


@pytest.mark.parametrize("act", nf.nn.ACTIVATIONS)
def test_mlp_backward_without_input_gradient(act):
    rng = np.random.default_rng(6)
    net = nf.nn.MLP(3, 2, hidden=(5, 4), activation=act)
    p = net.init(rng)
    x = rng.standard_normal((6, 3))
    out, cache = net.forward(p, x)
    dout = rng.standard_normal(out.shape)
    dx, g = net.backward(p, dout, cache)
    none, g2 = net.backward(p, dout, cache, need_dx=False)
    assert none is None and all(np.array_equal(g[k], g2[k]) for k in g)
    with pytest.raises(ValueError, match="activation"):
        nf.nn.MLP(3, 2, activation="gelu")


def test_fit_reports_divergence_with_advice():
    calls = []

    def objective(params, batch):
        calls.append(1)
        if len(calls) > 3:
            raise ValueError("Sequential layer 2 forward: AffineCoupling: the forward input contains 1 NaN")
        return 1.0, {k: np.ones_like(v) for k, v in params.items()}

    with pytest.raises(FloatingPointError, match="diverged.*clip_norm"):
        nf.fit(objective, {"w": np.zeros(2)}, np.zeros((8, 2)), rng=np.random.default_rng(0), steps=10,
               batch_size=4, progress=False)
    with pytest.raises(ValueError):       # failing at the first step is bad input, reported as it is
        nf.fit(lambda p, b: (_ for _ in ()).throw(ValueError("bad")), {"w": np.zeros(2)}, np.zeros((8, 2)),
               rng=np.random.default_rng(0), steps=10, batch_size=4, progress=False)
