"""MADE and the masked affine autoregressive bijector: what the shared harness cannot say.

* MADE's autoregressive guarantee, seen in the brute-force Jacobian of the network (autograd through the
  arithmetic, not a reading of the masks), for every order; its backward against autograd and central
  differences (the harness checks bijectors, not networks); the construction-time check firing on a leak.
* The bijector's Jacobian is triangular in its order; the inverse takes exactly D passes and not fewer.
* The by-degree inverse (each MADE unit once) equals the D-pass reference for every block size, order,
  update, scale map, width and dtype, and hands every step the dense pass's final outputs.
* MAF/IAF duality: the same bijector in a NormalizingFlow and a PushForward, with the network evaluations
  counted, and both densities integrating to one.
* The gated update against the formula of Kingma et al. 2016, and its stability.

Tolerances: exact zeros where the structure says zero (a path that does not exist contributes no rounding);
1e-12 for the same closed form evaluated two ways in float64; 1e-8 / 1e-6 for autograd / central differences
as in harness.py.
"""
import copy

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import npflows as nf
from harness import close, count_made_calls
from npflows.bijectors import autoregressive, coupling

ORDERS = {"natural": "natural", "reversed": "reversed", "random": "random", "explicit": np.array([3, 0, 4, 2, 1])}


def _made(order="natural", hidden=(9, 8), k=2, hidden_degrees="equal", seed=0, activation="tanh"):
    rng = np.random.default_rng(seed)
    m = nf.nn.MADE(5, k=k, hidden=hidden, activation=activation, order=ORDERS.get(order, order), rng=rng,
                   hidden_degrees=hidden_degrees)
    p = {key: v + 0.5 * rng.standard_normal(v.shape) for key, v in m.init(rng).items()}
    return m, p, rng


def _jacobian(fn, x):
    """Per-sample Jacobians ``(N, out, in)`` of a row-wise map, by autograd on the traceable path."""
    n, d = x.shape
    J = autograd.jacobian(lambda flat: anp.reshape(fn(anp.reshape(flat, (n, d))), (-1,)))(x.reshape(-1))
    J = J.reshape(n, -1, n, d)
    return np.stack([J[i, :, i, :] for i in range(n)])


# ----------------------------------------------------------------------------- MADE
@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize("k", [1, 3])
def test_made_jacobian_is_autoregressive(order, k):
    """d out[:, j*D + i] / d x_l is exactly 0 unless degree(l) < degree(i), and (tanh units, widths >= D-1,
    generic parameters) non-zero for every such pair: the masks are neither leaky nor over-restrictive."""
    m, p, rng = _made(order, k=k)
    x = rng.standard_normal((6, 5))
    J = _jacobian(lambda a: m.forward(p, a, xp=anp)[0], x)          # (N, k*D, D)
    allowed = m.degrees[None, :] < m.output_degrees[:, None]         # (k*D, D): output c may see input l
    assert np.all(J[:, ~allowed] == 0.0), "an output depends on an input of equal or higher degree"
    assert np.all(np.abs(J).max(axis=0)[allowed] > 1e-6), "an allowed dependence is missing"
    # The same in the autoregressive order: for each parameter j, P J_j P^T is strictly lower triangular.
    for j in range(k):
        Jj = J[:, j * 5:(j + 1) * 5][:, m.order][:, :, m.order]
        assert np.all(np.triu(np.abs(Jj).max(axis=0)) == 0.0)
        assert np.all(np.tril(np.abs(Jj).max(axis=0), -1)[np.tril_indices(5, -1)] > 0)
    np.testing.assert_array_equal(m.connectivity, allowed.T)


def test_made_random_hidden_degrees_and_narrow_widths_stay_autoregressive():
    """Germain et al.'s random degrees, and widths below D - 1, may drop dependences but never add one."""
    for hidden, rule in [((9, 8), "random"), ((2, 3), "equal"), ((3,), "random")]:
        m, p, rng = _made("random", hidden=hidden, hidden_degrees=rule, seed=3)
        x = rng.standard_normal((6, 5))
        J = np.abs(_jacobian(lambda a: m.forward(p, a, xp=anp)[0], x)).max(axis=0)
        allowed = m.degrees[None, :] < m.output_degrees[:, None]
        assert np.all(J[~allowed] == 0.0)
        assert np.all((J > 0) <= m.connectivity.T), "a dependence the masks do not allow"
        for l, deg in enumerate(m.hidden_degree_list):
            lo = min((m.degrees if l == 0 else m.hidden_degree_list[l - 1]).min(), 4)
            assert deg.min() >= lo and deg.max() <= 4        # Germain et al.: in {min below, ..., D-1}
    m, _, _ = _made("natural", hidden=(2, 3))
    assert not m.connectivity.T[m.degrees[None, :] < m.output_degrees[:, None]].all(), \
        "width 2 < D-1 cannot carry every dependence (the check above would be vacuous otherwise)"


def test_made_degrees_and_orders():
    m, _, _ = _made("natural")
    np.testing.assert_array_equal(m.degrees, [1, 2, 3, 4, 5])
    m, _, _ = _made("reversed")
    np.testing.assert_array_equal(m.degrees, [5, 4, 3, 2, 1])
    m, _, _ = _made("explicit")                                       # order [3, 0, 4, 2, 1]
    np.testing.assert_array_equal(m.degrees, [2, 5, 4, 1, 3])
    np.testing.assert_array_equal(m.output_degrees, np.tile(m.degrees, 2))
    a, _, _ = _made("random", seed=7)
    b, _, _ = _made("random", seed=7)
    c, _, _ = _made("random", seed=8)
    np.testing.assert_array_equal(a.order, b.order)
    assert any(not np.array_equal(_made("random", seed=s)[0].order, c.order) for s in range(9, 14))
    np.testing.assert_array_equal(a.hidden_degree_list[0], np.arange(9) % 4 + 1)   # "equal": 1..D-1 cyclic


def test_made_dim1_outputs_are_constants():
    m = nf.nn.MADE(1, k=2, hidden=(4, 3))
    rng = np.random.default_rng(0)
    p = {k: v + rng.standard_normal(v.shape) for k, v in m.init(rng).items()}
    out = m.forward(p, rng.standard_normal((7, 1)))[0]
    assert np.all(out == out[0]) and not m.connectivity.any()


def test_made_construction_check_fires_on_a_leak():
    """The guarantee is checked, not assumed: corrupt one output-mask entry and the check raises."""
    m, _, _ = _made("reversed")
    bad = copy.deepcopy(m)
    first = int(np.flatnonzero(bad.output_degrees == 1)[0])     # an output that must be constant
    bad.masks[-1][:, first] = True
    with pytest.raises(AssertionError, match="not autoregressive"):
        bad.check_autoregressive()
    m.check_autoregressive()                                     # the genuine masks pass


def test_made_backward_matches_autograd_and_central_differences():
    m, p, rng = _made("random", activation="relu")
    x = rng.standard_normal((6, 5))
    out, cache = m.forward(p, x)
    close(out, m.forward(p, x, xp=anp)[0], 1e-13, "numpy path vs traceable path")
    g = rng.standard_normal(out.shape)
    dx, grads = m.backward(p, g, cache)
    f = lambda a: anp.sum(g * m.forward(a[1], a[0], xp=anp)[0])
    gx, gp = autograd.grad(f)((x, p))
    close(dx, gx, 1e-8, "dx vs autograd")
    assert set(grads) == set(p)
    for key in p:
        close(grads[key], gp[key], 1e-8, f"{key} vs autograd")
        masked_out = ~m.masks[int(key.split("W")[1])] if "W" in key else np.zeros(p[key].shape, bool)
        assert np.all(grads[key][masked_out] == 0.0), "a masked weight got a gradient"
    h = 1e-5
    for key in p:
        v = rng.standard_normal(p[key].shape)
        fd = (np.sum(g * m.forward({**p, key: p[key] + h * v}, x)[0])
              - np.sum(g * m.forward({**p, key: p[key] - h * v}, x)[0])) / (2 * h)
        close(np.sum(grads[key] * v), fd, 1e-6, f"{key} vs central difference")
    assert m.backward(p, g, cache, need_dx=False)[0] is None


def test_made_init_zeroes_masked_weights():
    m = nf.nn.MADE(6, k=2, hidden=(16, 16), zero_last=False, prefix="net.")
    p = m.init(np.random.default_rng(0), dtype=np.float32)
    assert set(p) == {"net.W0", "net.b0", "net.W1", "net.b1", "net.W2", "net.b2"}
    for l, mask in enumerate(m.masks):
        W = p[f"net.W{l}"]
        assert W.dtype == np.float32 and np.all(W[~mask] == 0) and np.all(W[mask] != 0)


@pytest.mark.parametrize("kw, match", [
    (dict(order="sideways"), "unknown order"), (dict(order=np.array([0, 1, 1, 2, 3])), "permutation"),
    (dict(order=np.arange(4)), "permutation"), (dict(order="random"), "needs rng"),
    (dict(hidden_degrees="random"), "needs rng"), (dict(hidden=()), "hidden layer"),
    (dict(activation="swish"), "activation"), (dict(k=0), ">= 1")])
def test_made_rejects_bad_construction(kw, match):
    with pytest.raises(ValueError, match=f"MADE.*{match}"):
        nf.nn.MADE(5, **{"k": 2, **kw})


# ----------------------------------------------------------------------------- the bijector
def _maa(seed=0, dim=5, **kw):
    rng = np.random.default_rng(seed)
    b = nf.MaskedAffineAutoregressive(dim, hidden=(8, 8), order="random", rng=rng, activation="tanh", **kw)
    p = {k: v + 0.4 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    return b, p, rng


@pytest.mark.parametrize("update", ["affine", "gated"])
def test_jacobian_is_triangular_in_the_order_with_diagonal_exp_s(update):
    b, p, rng = _maa(update=update)
    x = rng.standard_normal((4, 5))
    J = _jacobian(lambda a: b.forward(p, a, xp=anp)[0], x)[:, b.order][:, :, b.order]
    assert np.all(np.triu(J, 1) == 0.0)
    assert np.all(np.abs(np.tril(J, -1)).max(axis=0)[np.tril_indices(5, -1)] > 0)
    out = b.net.forward(p, x)[0]
    logs = b._coefficients(out, np)[0][:, b.order]
    close(np.diagonal(J, axis1=1, axis2=2), np.exp(logs), 1e-12, "diagonal of J vs exp(s)")


def _count_passes(bijector):
    """Call counters on this bijector's MADEs: ``calls[0]`` full passes, ``calls[1]`` by-degree solves."""
    return count_made_calls(bijector, nf.MaskedAffineAutoregressive)


def test_inverse_takes_exactly_D_passes():
    """After p passes exactly the coordinates of degree <= p are right; p = D - 1 is not enough."""
    b, p, rng = _maa(seed=1)
    x = rng.standard_normal((8, 5))
    z, ld, _ = b.forward(p, x)
    deg = b.net.degrees
    for n in range(6):
        xs, lds = b.solve(p, z, n)
        err = np.abs(xs - x).max(axis=0)
        assert np.all(err[deg <= n] < 1e-12), f"pass {n}: a coordinate of degree <= {n} is wrong"
        assert np.all(err[deg > n] > 1e-6), f"pass {n}: a coordinate of degree > {n} is already right"
        assert np.all(xs[:, deg > n] == 0), f"pass {n}: unsolved coordinates are held at 0"
    close(lds, -ld, 1e-12, "logdet of the D-pass solve")
    calls = _count_passes(b)
    b.forward(p, x)
    assert calls == [1, 0]
    b.inverse(p, z, xp=anp)                    # the traceable inverse is the reference: D full passes
    assert calls == [1 + 5, 0]
    b.inverse(p, z)                            # NumPy's: one by-degree solve, no full pass
    assert calls == [1 + 5, 1]


# ----------------------------------------------------------------------------- the by-degree inverse
BY_DEGREE_CASES = {   # D, hidden, activation, update, scale, hidden degrees: every step() branch and scale map
    "D1_elu_softclip": (1, (3,), "elu", "affine", "softclip", "equal"),
    "D2_relu_sigmoid": (2, (4, 4), "relu", "affine", "sigmoid", "equal"),
    "D3_relu_softplus": (3, (6,), "relu", "affine", "softplus", "equal"),
    "D4_elu_logsigmoid": (4, (5, 5), "elu", "affine", "logsigmoid", "equal"),
    "D4_tanh_neg_logsigmoid_random": (4, (5,), "tanh", "affine", "neg_logsigmoid", "random"),
    "D5_tanh_gated_random": (5, (8, 8), "tanh", "gated", "exp", "random"),
    "D7_leaky_narrow_random": (7, (3, 2), "leaky_relu", "affine", "tanh", "random"),
    "D9_relu_three_layers_random": (9, (20, 7, 30), "relu", "affine", "softclip", "random"),
    "D17_relu_tanh": (17, (40, 40), "relu", "affine", "tanh", "equal"),
    "D33_tanh_gated": (33, (16,), "tanh", "gated", "exp", "equal"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", ["natural", "reversed", "random"])
@pytest.mark.parametrize("case", sorted(BY_DEGREE_CASES))
def test_inverse_by_degree_equals_the_D_pass_reference(case, order, dtype):
    """The NumPy inverse (each MADE unit once, by degree, in blocks) against the reference, ``solve`` with D
    full passes, for every block size from 1 (one product per layer per degree) to D (no blocking).

    The two compute the same sums in different orders (split at block starts, masked zeros left out), so
    they agree to rounding, propagated through the D coordinates.  Parameters are perturbed (0.3, shrunk for
    wide layers) but kept well conditioned (max|x| < 1e4 is asserted, so a relative tolerance means
    something).  Measured over these cases, in x and in the logdet, relative to max(1, max|x|): <= 1.3e-15
    (float64) and <= 6e-7 (float32); with three other seeds <= 3.2e-15 and <= 1.2e-6.  1e-13 and 5e-5
    leave a 30-40x margin over the worst of those, and a wrong unit, prefix or step order gives O(1) errors."""
    D, hidden, act, update, scale, hd = BY_DEGREE_CASES[case]
    rng = np.random.default_rng(11)
    b = nf.MaskedAffineAutoregressive(D, hidden=hidden, activation=act, order=order, rng=rng, update=update,
                                      scale=scale, hidden_degrees=hd)
    p = {k: (v + 0.3 / np.sqrt(max(1.0, v.shape[0] / 8)) * rng.standard_normal(v.shape)).astype(dtype)
         for k, v in b.init(rng).items()}
    z = rng.standard_normal((40, D)).astype(dtype)
    x_ref, ld_ref = b.solve(p, z, D)
    assert np.abs(x_ref).max() < 1e4 and np.all(np.isfinite(ld_ref))
    tol = 1e-13 if dtype == np.float64 else 5e-5
    for block in (1, 2, 3, None, D):
        x, ld = b._inverse_by_degree(p, z, block)
        assert x.dtype == dtype and ld.dtype == dtype and x.shape == z.shape and ld.shape == (40,)
        close(x, x_ref, tol, f"x, block {block}")               # relative to max(1, max|x|)
        close(ld, ld_ref, tol, f"logdet, block {block}")
    x, ld = b.inverse(p, z)                                 # the public NumPy path is the by-degree one
    np.testing.assert_array_equal(x, b._inverse_by_degree(p, z)[0])
    if dtype == np.float64:                                 # the traceable path is the reference
        close(b.inverse(p, z, xp=anp)[0], x_ref, 1e-14, "xp=autograd.numpy inverse vs solve")


@pytest.mark.parametrize("k, activation", [(1, "relu"), (2, "tanh"), (3, "elu")])
def test_solve_by_degree_hands_each_step_the_final_outputs(k, activation):
    """MADE.solve_by_degree with an arbitrary nonlinear ``step``: the outputs it hands to step t are those of
    the dense forward pass at the final x (each unit computed once, from values that never change), and
    the weights under a zero of the masks are never read (filled with 1e3, which the dense pass masks out).
    Same sums in another order: float64 agreement to 1e-12 (measured <= 6e-16 on these O(1) values)."""
    rng = np.random.default_rng(5)
    m = nf.nn.MADE(6, k=k, hidden=(9, 11), activation=activation, order="random", rng=rng,
                   hidden_degrees="random")
    p = {key: v + 0.5 * rng.standard_normal(v.shape) for key, v in m.init(rng).items()}
    for l, mask in enumerate(m.masks):
        p[f"W{l}"] = np.where(mask, p[f"W{l}"], 1e3)
    seen = {}

    def step(t, out, x_t):
        seen[t] = out.copy()
        x_t[...] = np.tanh(out.sum(axis=0)) + 0.5 * t        # any function of the outputs will do
        out[...] = np.nan                                    # the rows are scratch: nothing reads them again

    for block in (1, 2, 4, 6):
        seen.clear()
        x = m.solve_by_degree(p, step, 7, np.float64, block=block)
        assert sorted(seen) == list(range(6))
        dense = m.forward(p, x)[0]
        for t, i in enumerate(m.order):
            close(seen[t], dense[:, i::6].T, 1e-12, f"step {t} (coordinate {i}), block {block}")
            close(x[:, i], np.tanh(dense[:, i::6].sum(axis=1)) + 0.5 * t, 1e-12, f"x_{i}")


def test_by_degree_reads_the_degrees_and_masks_of_the_moment():
    """Degrees and masks assigned after construction are honoured: npflows.describe.build (which nf.load
    uses) rebuilds a layer with "equal" degrees and then sets the stored random ones.  Masks that the degrees
    do not describe (here: hidden degrees relabelled one lower, so the masks keep weights the labels would
    drop) take the D-pass fallback, handing each step the same final outputs.  Tolerances as in
    test_inverse_by_degree_equals_the_D_pass_reference (float64)."""
    from npflows.describe import build, describe
    rng = np.random.default_rng(4)
    b = nf.MaskedAffineAutoregressive(6, hidden=(9, 7), order="random", rng=rng, hidden_degrees="random",
                                      activation="tanh")
    p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    z = rng.standard_normal((10, 6))
    x_ref = b.solve(p, z, 6)[0]
    b2 = build(describe(b))
    equal = nf.MaskedAffineAutoregressive(6, hidden=(9, 7)).net.hidden_degree_list      # what build starts from
    assert not all(np.array_equal(u, v) for u, v in zip(b2.net.hidden_degree_list, equal))
    close(b2.inverse(p, z)[0], x_ref, 1e-13, "rebuilt from its description")
    b3 = copy.deepcopy(b)
    b3.net.hidden_degree_list = [np.maximum(d - 1, 1) for d in b.net.hidden_degree_list]
    assert b3.net._plan_by_degree() is None and b.net._plan_by_degree() is not None
    calls = _count_passes(b3)
    close(b3.inverse(p, z)[0], x_ref, 1e-13, "masks the degrees do not describe: D-pass fallback")
    assert calls == [6, 1]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_maf_sampling_at_D64_round_trips(dtype):
    """The benchmark's model (maf(64), 5 layers, MADE 64-128-128-128, parameters perturbed by 0.02):
    samples map back to their base draws and the logdets of the two directions are negatives.  Measured,
    relative to max(1, max|.|): <= 7e-16 (float64) and <= 6e-7 (float32), in z and in the logdet; the
    bounds are the harness's 1e-10 (float64) and 1e-5 (float32: a 15x margin, ~80 ulps)."""
    rng = np.random.default_rng(0)
    b = nf.maf(64, n_layers=5, hidden=(128, 128))
    p = {k: (v + 0.02 * rng.standard_normal(v.shape)).astype(dtype) for k, v in b.init(rng).items()}
    z = rng.standard_normal((64, 64)).astype(dtype)
    x, ld_inv = b.inverse(p, z)
    z2, ld, _ = b.forward(p, x)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    assert x.dtype == dtype and not np.allclose(x, z, atol=0.1)      # not the identity
    close(z2, z, tol, "forward(inverse(z))")
    close(ld, -ld_inv, tol, "logdets of the two directions")


def test_maf_and_iaf_are_the_same_bijector_with_mirrored_costs():
    """MAF = NormalizingFlow(b): density 1 pass per layer, sampling 1 sequential solve (D steps).  IAF =
    PushForward(b): sampling and its density 1 pass per layer, the density of a new point 1 sequential solve.
    Both are exact and agree with each other."""
    D, L = 4, 3
    rng = np.random.default_rng(2)
    b = nf.maf(D, n_layers=L, hidden=(8,), activation="tanh")
    base = nf.StandardNormal(D)
    maf, iaf = nf.NormalizingFlow(b, base), nf.PushForward(b, base)
    p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in maf.init(rng).items()}
    assert set(p) == set(iaf.param_shapes())                      # one parameter dict serves both
    calls = _count_passes(b)

    def passes(fn, *a):
        calls[:] = [0, 0]
        out = fn(*a)
        return out, calls

    x = rng.standard_normal((6, D))
    lp, n = passes(maf.log_prob, p, x)
    assert n == [L, 0]                         # one parallel pass per layer
    xs, n = passes(maf.sample, p, 6, np.random.default_rng(9))
    assert n == [0, L]                         # one sequential solve per layer (D steps, each unit once)
    (xi, logq), n = passes(iaf.sample_and_log_prob, p, 6, np.random.default_rng(9))
    assert n == [L, 0]
    lq, n = passes(iaf.log_prob, p, xi)
    assert n == [0, L]
    close(lq, logq, 1e-10, "IAF density of its own samples: sequential inverse vs the parallel pass")
    # MAF's sample inverts the very draws the IAF pushes forward: f(maf sample) = z = f^{-1}(iaf sample).
    z = base.sample({}, 6, np.random.default_rng(9))
    close(b.forward(p, xs)[0], z, 1e-10, "MAF sample is f^{-1}(z)")
    close(b.inverse(p, xi)[0], z, 1e-10, "IAF sample is f(z)")
    # MAF's sampler as a PushForward of the inverse has MAF's density.
    close(nf.PushForward(nf.Inverse(b), base).log_prob(p, x), lp, 1e-12, "PushForward(Inverse(b)) vs MAF")


@pytest.mark.parametrize("update", ["affine", "gated"])
def test_maf_and_iaf_densities_integrate_to_one(update):
    """Quadrature of exp(log p) on a 2-D grid.  The integrands are smooth, but the perturbed IAF's tails
    reach far (on [-10, 10]^2 it holds only 0.998 of its mass), so the midpoint rule with h = 0.1 runs on
    [-30, 30]^2: measured mass within 1e-7 of 1 for both updates (halving h changes it by less than 1e-9,
    widening [-20, 20] to [-30, 30] by 6e-6); flipping the logdet's sign moves the mass far from 1."""
    rng = np.random.default_rng(3)
    b = nf.maf(2, n_layers=3, hidden=(8,), activation="tanh", update=update)
    base = nf.StandardNormal(2)
    maf, iaf = nf.NormalizingFlow(b, base), nf.PushForward(b, base)
    p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in maf.init(rng).items()}
    t = np.arange(-30.0, 30.0, 0.1) + 0.05
    g = np.stack(np.meshgrid(t, t), -1).reshape(-1, 2)
    for flow in (maf, iaf):
        mass = np.exp(flow.log_prob(p, g)).sum() * 0.1 ** 2
        assert abs(mass - 1.0) < 1e-4, f"{type(flow).__name__} integrates to {mass}"


def test_gated_update_matches_kingma_et_al():
    """z = sigma x + (1 - sigma) m, sigma = sigmoid(r + c), logdet = sum log sigma (IAF paper, Alg. 1)."""
    b, p, rng = _maa(seed=4, update="gated", gate_bias=1.5)
    x = rng.standard_normal((6, 5))
    out = b.net.forward(p, x)[0]
    r, m = out[:, :5], out[:, 5:]
    sig = 1.0 / (1.0 + np.exp(-(r + 1.5)))
    z, ld, _ = b.forward(p, x)
    close(z, sig * x + (1 - sig) * m, 1e-12, "gated z")
    close(ld, np.log(sig).sum(1), 1e-12, "gated logdet")
    b0 = nf.MaskedAffineAutoregressive(5, hidden=(8,), update="gated", gate_bias=2.0)
    z0, ld0, _ = b0.forward(b0.init(rng), x)                  # zero-initialised: z = sigmoid(2) x
    close(z0, x / (1 + np.exp(-2.0)), 1e-15, "gated at init")
    close(ld0, np.full(6, 5 * np.log(1 / (1 + np.exp(-2.0)))), 1e-14, "gated logdet at init")


def test_gated_update_is_stable_for_extreme_gates():
    b, p, rng = _maa(seed=5, update="gated")
    x = rng.standard_normal((3, 5))
    for bias in (-800.0, 800.0):
        q = dict(p)
        last = f"net.b{b.net.n_layers - 1}"
        q[last] = np.concatenate([np.full(5, bias), p[last][5:]])
        with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is benign
            z, ld, cache = b.forward(q, x)
            b.backward(q, np.ones_like(z), np.ones(3), cache)
        assert np.all(np.isfinite(z)) and np.all(np.isfinite(ld))
        if bias < 0:
            assert np.all(ld < -700 * 5)                      # log sigmoid(u) ~ u, not -inf


def test_identity_at_initialisation():
    x = np.random.default_rng(6).standard_normal((4, 3))
    for scale in ("exp", "tanh"):
        b = nf.maf(3, n_layers=2, hidden=(8,), scale=scale)
        z, ld, _ = b.forward(b.init(np.random.default_rng(0)), x)
        assert np.array_equal(z, x) and np.all(ld == 0)


def test_inverse_overflow_raises_instead_of_returning_inf():
    b = nf.MaskedAffineAutoregressive(2, hidden=(4,))
    p = b.init(np.random.default_rng(0))
    p["net.b1"] = np.array([-1000.0, -1000.0, 0.0, 0.0])    # s = -1000, t = 0: inverse x = z exp(1000)
    z = b.forward(p, np.ones((2, 2)))[0]
    # the forward's exact z = exp(-1000) = 5e-435 rounds to 0, and 0 is the exact inverse of that z (not 0 * inf)
    assert np.all(z == 0) and np.all(b.inverse(p, z)[0] == 0)
    with pytest.raises(FloatingPointError, match="MaskedAffineAutoregressive inverse: the output is not finite.*"
                                                 "the log-scale reaches -1000"):
        b.inverse(p, np.ones((2, 2)))


def _large_raw_scale(scale, seed, target=15.0):
    """A MADE layer whose raw log-scale outputs reach ``target`` in magnitude on the returned inputs (the
    validation suite's ``large_raw_scale`` variant)."""
    rng = np.random.default_rng(seed)
    b = nf.MaskedAffineAutoregressive(4, hidden=(7, 5), scale=scale)
    p = {k: v + 0.4 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    x = rng.standard_normal((20, 4))
    f = target / np.abs(b.net.forward(p, x)[0][:, :4]).max()
    p["net.W2"], p["net.b2"] = p["net.W2"].copy(), p["net.b2"].copy()
    p["net.W2"][:, :4] *= f
    p["net.b2"][:4] *= f
    return b, p, x


@pytest.mark.parametrize("scale", ["exp", "tanh", "sigmoid", "softplus"])
@pytest.mark.parametrize("seed", range(4))
def test_inverse_with_large_log_scales_is_finite_and_backward_stable(scale, seed):
    """Raw log-scales up to 15: the plain fixed-point passes from x = z fed MADE not-yet-solved values of
    size ~e^15, whose log-scales overflowed exp(-s) (seeds 2 and 3 with "exp").  Now no warning escapes and
    the solution satisfies the forward map: |forward(x') - z| <= 1e-14 max|z|, since each solved coordinate
    reuses the bit-identical s and t and so reproduces its z_i to a few ulps of max(|z_i|, |t_i|) (measured
    <= 2e-16 relative over these seeds and scales; 1e-14 leaves a 50x margin and still catches any
    wrong pass).  The round trip itself is judged by the conditioning: a backward error of a few ulps of
    max|z| becomes |x' - x| <= |J^-1| max|z| eps to first order (J = dz/dx per sample, from autograd; its
    inverse carries the e^15 amplification), measured <= 1.7 of that bound under the Haswell and
    SandyBridge kernels; 16 leaves a margin for other kernels and still catches any wrong pass (O(1) errors).
    (A fixed 1e-8 relative bound held under one kernel only: SandyBridge's last bits gave 9.7e-8.)"""
    import autograd
    import autograd.numpy as anp
    import warnings
    b, p, x = _large_raw_scale(scale, seed)
    z, ld, _ = b.forward(p, x)
    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("error")
        x2, ld2 = b.inverse(p, z)
    assert np.all(np.isfinite(x2))
    close(b.forward(p, x2)[0], z, 1e-14, "forward(inverse(z)) with log-scales up to 15")
    N, D = x.shape
    for n in range(N):
        J = autograd.jacobian(lambda v: b.forward(p, anp.reshape(v, (1, D)), xp=anp)[0][0])(x[n])
        bound = 16.0 * np.abs(np.linalg.inv(J)) @ np.full(D, np.max(np.abs(z[n]))) * 2.0 ** -52
        assert np.all(np.abs(x2[n] - x[n]) <= bound), (n, np.abs(x2[n] - x[n]), bound)
    close(ld2, -ld, 1e-10, "inverse logdet with log-scales up to 15")


def test_softplus_scale_is_nflows_formula():
    """scale="softplus": z = x (softplus(r) + 1e-3) + t, logdet = sum log(softplus(r) + 1e-3), as nflows 0.14's
    MaskedAffineAutoregressiveTransform (scale = F.softplus(unconstrained_scale) + 1e-3)."""
    rng = np.random.default_rng(3)
    b = nf.MaskedAffineAutoregressive(3, hidden=(6,), scale="softplus")
    p = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    x = rng.standard_normal((6, 3))
    out = b.net.forward(p, x)[0]
    scale = np.log1p(np.exp(out[:, :3])) + 1e-3
    z, ld, _ = b.forward(p, x)
    close(z, x * scale + out[:, 3:], 1e-12, "softplus-scale output")
    close(ld, np.log(scale).sum(axis=1), 1e-12, "softplus-scale logdet")


def test_reuses_the_coupling_scale_maps():
    assert autoregressive.SCALES is coupling.SCALES


def test_maf_builder_orders_and_errors():
    b = nf.maf(4, n_layers=4, hidden=(8,))
    orders = [layer.order.tolist() for layer in b.layers]
    assert orders == [[0, 1, 2, 3], [3, 2, 1, 0]] * 2
    bp = nf.maf(4, n_layers=3, hidden=(8,), permutations=True)
    assert [type(layer).__name__ for layer in bp.layers] == ["MaskedAffineAutoregressive", "Permutation"] * 2 + \
        ["MaskedAffineAutoregressive"]
    assert all(layer.order.tolist() == [0, 1, 2, 3] for layer in bp.layers[::2])
    r1 = nf.maf(4, n_layers=3, hidden=(8,), order="random", rng=np.random.default_rng(1))
    r2 = nf.maf(4, n_layers=3, hidden=(8,), order="random", rng=np.random.default_rng(1))
    assert [layer.order.tolist() for layer in r1.layers] == [layer.order.tolist() for layer in r2.layers]
    assert set(b.param_shapes()) == {f"{i}.net.{w}{l}" for i in range(4) for w in "Wb" for l in range(2)}
    with pytest.raises(ValueError, match="maf.*rng"):
        nf.maf(4, order="random")
    with pytest.raises(ValueError, match="maf.*order"):
        nf.maf(4, order="zigzag")
    with pytest.raises(ValueError, match="MaskedAffineAutoregressive.*scale"):
        nf.MaskedAffineAutoregressive(3, update="gated", scale="tanh")
    with pytest.raises(ValueError, match="MaskedAffineAutoregressive.*MADE.*order"):
        nf.MaskedAffineAutoregressive(3, order=[0, 0, 1])
    with pytest.raises(ValueError, match="MaskedAffineAutoregressive.*update"):
        nf.MaskedAffineAutoregressive(3, update="additive")


def test_maf_fits_a_correlated_gaussian():
    """One layer can represent x2 = a x1 + noise exactly (in either order), so a short fit reaches the
    exact Gaussian log-likelihood: a behavioural check of the whole training path (loss, backward, Adam)."""
    rng = np.random.default_rng(7)
    C = np.array([[1.0, 0.8], [0.8, 1.0]])
    x = rng.multivariate_normal([0.5, -1.0], C, size=2000)
    flow = nf.NormalizingFlow(nf.maf(2, n_layers=2, hidden=(16,)), nf.StandardNormal(2))
    params, _ = nf.fit(flow.loss_and_grad, flow.init(rng), x, rng=rng, steps=400, batch_size=256, lr=1e-2,
                       schedule="cosine", progress=False)
    exact = -0.5 * np.log(np.linalg.det(2 * np.pi * np.e * C))      # expected log-density of the Gaussian
    ll = flow.log_prob(params, x).mean()
    assert ll > exact - 0.05, f"mean log-likelihood {ll:.4f} vs the Gaussian's {exact:.4f}"
