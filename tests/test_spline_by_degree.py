"""The masked spline autoregressive layer's sequential inverse by degree (``MADE.solve_by_degree``): each MADE
unit and each coordinate's spline computed once, against the D-pass reference ``solve(params, y, D)``.

* It equals the reference to rounding for every block size, order, width, depth, activation, tails (linear
  with several bounds and minimum sizes, ``tails=None`` on two intervals) and dtype.
* The public NumPy inverse takes it, the traceable one (``xp=autograd.numpy``) the reference, which stays
  differentiable; a flow's sampling round-trips at D = 8 and D = 64.
* Layers rebuilt by ``npflows.describe.build`` and ``nf.load`` (degrees and masks set after construction)
  solve the same way; masks that the degrees do not describe take the D-pass fallback.
* A bounded spline refuses an input outside its interval with the reference's own message.

Tolerances are relative to ``max(1, max|reference|)`` (``harness.close``) and stated where they are used.
"""
import copy

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import npflows as nf
from harness import close, count_made_calls

# D, n_bins, hidden, activation, hidden degrees, spline options: every tails/bounds branch of the step
CASES = {
    "D1_elu_linear": (1, 4, (3,), "elu", "equal", dict(bound=2.0)),
    "D2_relu_unit_interval": (2, 5, (4, 4), "relu", "equal", dict(tails=None)),
    "D3_tanh_interval": (3, 3, (6,), "tanh", "equal", dict(tails=None, interval=(-1.5, 2.5))),
    "D4_leaky_narrow_random": (4, 6, (3, 2), "leaky_relu", "random", dict(bound=2.5)),
    "D5_tanh_bound1_min_sizes": (5, 8, (8, 8), "tanh", "equal",
                                 dict(bound=1.0, min_bin_width=0.05, min_bin_height=0.02, min_derivative=0.1)),
    "D8_relu_three_layers_random": (8, 4, (20, 7, 30), "relu", "random", dict(bound=3.0)),
    "D17_relu": (17, 8, (40, 40), "relu", "equal", dict(bound=3.0)),
    "D33_elu_bounded_random": (33, 2, (16,), "elu", "random", dict(tails=None)),
}
ORDERS = ("natural", "reversed", "random")


def _case(case, order, dtype, seed=11, n=40):
    """The layer of ``case``, its parameters (init plus noise 0.3, shrunk for wide layers, in ``dtype``) and
    ``n`` inputs: normal with sd 0.75 B for linear tails (about 18% in the tails), uniform on the interval
    for ``tails=None``."""
    D, K, hidden, act, hd, kw = CASES[case]
    rng = np.random.default_rng(seed)
    b = nf.MaskedSplineAutoregressive(D, n_bins=K, hidden=hidden, activation=act, order=order, rng=rng,
                                      hidden_degrees=hd, **kw)
    p = {k: (v + 0.3 / np.sqrt(max(1.0, v.shape[0] / 8)) * rng.standard_normal(v.shape)).astype(dtype)
         for k, v in b.init(rng).items()}
    sp = b.spline
    y = rng.uniform(sp.left, sp.right, (n, D)) if sp.tails is None else 0.75 * sp.bound * rng.standard_normal((n, D))
    return b, p, y.astype(dtype)


def _reference(b, p, y):
    """The D-pass reference inverse of a Sequential of spline layers: ``solve(params, ., D)`` per layer,
    last layer first."""
    for i in range(len(b.layers) - 1, -1, -1):
        y = b.layers[i].solve({k[len(f"{i}."):]: v for k, v in p.items() if k.startswith(f"{i}.")}, y, b.dim)[0]
    return y


def _count(bijector):
    """Call counters on this bijector's MADEs: ``calls[0]`` full passes, ``calls[1]`` by-degree solves."""
    return count_made_calls(bijector, nf.MaskedSplineAutoregressive)


# ----------------------------------------------------------------------------- against the reference
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", ORDERS + ("explicit",))
@pytest.mark.parametrize("case", sorted(CASES))
def test_inverse_by_degree_equals_the_D_pass_reference(case, order, dtype):
    """The by-degree inverse against ``solve(params, y, D)`` for every block size from 1 to D, in x and in the
    logdet.

    Both call the same spline inverse on the same raw parameters up to their rounding: MADE's sums are the
    same products grouped differently (MADE.solve_by_degree's Notes), and those differences propagate
    through the D coordinates, amplified where a bin is steep (dx = dy / g; a bin of slope 0.035 between end
    derivatives of 3 and 2 occurs here).  Measured over these cases with seeds 11-20, relative to
    max(1, max|.|): <= 3.9e-14 (float64) and <= 7.1e-5 (float32, the D = 17 case whose logdets reach 38;
    the float32 reference itself is up to 2.7e-5 away from the float64 answer to the same inputs, so this is
    rounding of that size).  1e-12 and 5e-4 leave a 7-25x margin; a wrong unit, prefix, coordinate or
    parameter slice gives O(1) errors."""
    if order == "explicit":
        order = np.random.default_rng(3).permutation(CASES[case][0])
    b, p, y = _case(case, order, dtype)
    D = b.dim
    x_ref, ld_ref = b.solve(p, y, D)
    assert np.all(np.isfinite(x_ref)) and np.all(np.isfinite(ld_ref))
    assert np.abs(ld_ref).max() > 0.1                       # not the identity: the conditioner is used
    tol = 1e-12 if dtype == np.float64 else 5e-4
    for block in (1, 2, 3, None, D):
        x, ld = b._inverse_by_degree(p, y, block)
        assert x.dtype == dtype and ld.dtype == dtype and x.shape == y.shape and ld.shape == (y.shape[0],)
        close(x, x_ref, tol, f"x, block {block}")
        close(ld, ld_ref, tol, f"logdet, block {block}")
    x, ld = b.inverse(p, y)                                 # the public NumPy path is the by-degree one
    x_bd, ld_bd = b._inverse_by_degree(p, y)
    np.testing.assert_array_equal(x, x_bd)
    np.testing.assert_array_equal(ld, ld_bd)


def test_public_inverse_is_one_by_degree_solve_and_the_traced_one_the_reference():
    """Counted on a 3-layer autoregressive NSF: NumPy's inverse (MAF sampling) is one by-degree solve per
    layer and no full pass; the traceable one is D full passes per layer, the reference (to 1e-14: MADE's
    traceable path adds the bias after the product where the NumPy path folds it into the product), and
    autograd differentiates it: its Jacobian is the inverse of the forward's (brute force through the traced
    code, 1e-9: products of 4x4 Jacobians of condition <= 31 in float64, measured <= 2e-14).  The two
    inverses agree to 1e-12 (the reference test's float64 bound)."""
    rng = np.random.default_rng(7)
    D = 4
    b = nf.autoregressive_nsf(D, n_layers=3, n_bins=5, bound=2.0, hidden=(9, 9), order="random", rng=rng)
    p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    y = rng.standard_normal((6, D))
    calls = _count(b)
    x, ld = b.inverse(p, y)
    assert calls == [0, 3]
    xt, ldt = b.inverse(p, y, xp=anp)
    assert calls == [3 * D, 3]
    close(xt, _reference(b, p, y), 1e-14, "traced inverse vs solve")
    close(x, xt, 1e-12, "by-degree vs traced inverse")
    close(ld, ldt, 1e-12, "by-degree vs traced logdet")
    for n in range(2):
        Ji = autograd.jacobian(lambda v: b.inverse(p, anp.reshape(v, (1, -1)), xp=anp)[0][0])(y[n])
        Jf = autograd.jacobian(lambda v: b.forward(p, anp.reshape(v, (1, -1)), xp=anp)[0][0])(x[n])
        close(Ji @ Jf, np.eye(D), 1e-9, f"traced inverse Jacobian x forward Jacobian, sample {n}")


@pytest.mark.parametrize("D", [8, 64])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spline_maf_sampling_round_trips(D, dtype):
    """The benchmark's model (autoregressive_nsf(D), 5 layers, K = 8, MADE hidden (64, 64), parameters
    perturbed by 0.02): samples map back to their base draws and the logdets of the two directions are
    negatives.  Measured over three seeds, relative to max(1, max|.|): <= 6e-15 (float64) and <= 6e-6
    (float32); the bounds are the harness's 1e-10 (float64) and 1e-4 (float32, its float32 tolerance:
    a 17x margin)."""
    rng = np.random.default_rng(0)
    b = nf.autoregressive_nsf(D, n_layers=5, n_bins=8, hidden=(64, 64))
    flow = nf.NormalizingFlow(b, nf.StandardNormal(D))
    p = {k: (v + 0.02 * rng.standard_normal(v.shape)).astype(dtype) for k, v in flow.init(rng).items()}
    x = flow.sample(p, 64, np.random.default_rng(1))
    z = nf.StandardNormal(D).sample({}, 64, np.random.default_rng(1), dtype)
    xi, ldi = b.inverse(p, z)
    close(x, xi, 1e-12 if dtype == np.float64 else 1e-5, "sample vs the inverse of its base draws")
    z2, ld, _ = b.forward(p, x)
    assert x.dtype == dtype and ldi.dtype == dtype and np.abs(ld).max() > 1.0
    tol = 1e-10 if dtype == np.float64 else 1e-4
    close(z2, z, tol, "forward(sample) vs its base draws")
    close(-ldi, ld, tol, "inverse logdet vs -forward logdet")


# ----------------------------------------------------------------------------- rebuilt models, fallback
def test_rebuilt_and_loaded_layers_solve_by_degree_with_their_stored_degrees(tmp_path):
    """describe.build (which nf.load uses) constructs each layer with "equal" hidden degrees and then sets
    the stored random ones and their masks; the by-degree plan is read from those at every call, so the
    rebuilt flow samples as the original's reference does.  Masks that the degrees do not describe (hidden
    degrees relabelled one lower: the masks keep weights the labels would drop) take MADE's D-pass
    fallback, with the same answer.  Tolerance 1e-12 as in the reference test (float64)."""
    from npflows.describe import build, describe
    rng = np.random.default_rng(4)
    D = 6
    b = nf.autoregressive_nsf(D, n_layers=2, n_bins=4, bound=2.0, hidden=(9, 7), activation="tanh",
                              order="random", rng=rng, hidden_degrees="random")
    flow = nf.NormalizingFlow(b, nf.StandardNormal(D))
    p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}
    z = rng.standard_normal((10, D))
    x_ref = _reference(b, p, z)
    equal = nf.MaskedSplineAutoregressive(D, n_bins=4, hidden=(9, 7)).net.hidden_degree_list   # what build starts from
    for layer in b.layers:
        assert not all(np.array_equal(u, v) for u, v in zip(layer.net.hidden_degree_list, equal))

    b2 = build(describe(b))
    calls = _count(b2)
    close(b2.inverse(p, z)[0], x_ref, 1e-12, "rebuilt from its description")
    assert calls == [0, 2]
    nf.save(tmp_path / "ar_nsf.npz", flow, p)
    flow3, p3, _ = nf.load(tmp_path / "ar_nsf.npz")
    calls = _count(flow3.bijector)
    close(flow3.sample(p3, 10, np.random.default_rng(5)), flow.sample(p, 10, np.random.default_rng(5)), 1e-12,
          "samples of the loaded flow")
    assert calls == [0, 2]

    b4 = copy.deepcopy(b)
    for layer in b4.layers:
        layer.net.hidden_degree_list = [np.maximum(d - 1, 1) for d in layer.net.hidden_degree_list]
        assert layer.net._plan_by_degree() is None
    calls = _count(b4)
    close(b4.inverse(p, z)[0], x_ref, 1e-12, "masks the degrees do not describe: D-pass fallback")
    assert calls == [2 * D, 2]


# ----------------------------------------------------------------------------- the bounded spline's domain
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bounded_inverse_refuses_outside_the_interval_as_the_reference_does(dtype):
    """tails=None: an input outside [left, right] (here one ulp past the right end, in the dtype) raises the
    reference's own ValueError naming the same element; the end points themselves are inside and solve."""
    rng = np.random.default_rng(9)
    b = nf.MaskedSplineAutoregressive(4, n_bins=4, hidden=(8,), order="reversed", tails=None,
                                      interval=(-0.3, 0.7))
    p = {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(dtype) for k, v in b.init(rng).items()}
    y = rng.uniform(-0.3, 0.7, (5, 4)).astype(dtype)
    y[1, 0], y[4, 3] = dtype(-0.3), dtype(0.7)
    x, ld = b.inverse(p, y)
    close(x, b.solve(p, y, 4)[0], 1e-12 if dtype == np.float64 else 5e-4, "end points")
    y[2, 1] = np.nextafter(dtype(0.7), dtype(1))
    y[3, 2] = dtype(-5.0)
    with pytest.raises(ValueError) as ref:
        b.solve(p, y, 4)
    with pytest.raises(ValueError) as got:
        b.inverse(p, y)
    assert str(got.value) == str(ref.value)
    assert "element (2, 1)" in str(got.value) and "MaskedSplineAutoregressive" in str(got.value)
