"""The error contract, case by case: each hostile input that once gave a silent inf, NaN or wrong number now
gives a finite, accurate answer or an error that names the layer (and its position in a composite) and the
quantity.  The property over every registry entry is tests/test_hostile.py; these are the cases a user met,
with the exact numbers checked against the 50-digit reference where an answer is returned."""
import mpmath as mp
import numpy as np
import pytest

import npflows as nf
from validation import reference as R
from validation.describe import describe


def _reference(b, p, x, inverse=False):
    """``(y, logdet)`` at 50 digits, as float64."""
    with mp.workdps(R.DPS):
        P = {k: R.mpf_array(v) for k, v in p.items()}
        y, ld = (R.inverse if inverse else R.forward)(describe(b), P, R.mpf_array(np.asarray(x, np.float64)))
        return (np.array([[float(v) for v in row] for row in y]), np.array([float(v) for v in ld]))


def _rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), np.finfo(np.float64).tiny)))


def _coupling_with_log_scale(value):
    """An exp-scale AffineCoupling on D = 2 whose raw log-scale is ``value`` for every input (zero weights)."""
    b = nf.AffineCoupling(nf.half_mask(2), hidden=(3,))
    p = b.init(np.random.default_rng(0))
    p["net.b1"] = np.array([value, 0.5])
    return b, p


# ----------------------------------------------------------------------------- the exp scale near overflow
def test_exp_scale_overflow_raises_naming_the_layer_the_log_scale_and_a_remedy():
    b, p = _coupling_with_log_scale(1000.0)
    with pytest.raises(FloatingPointError, match=r"AffineCoupling forward: the output is not finite .*the "
                                                 r"log-scale reaches 1000 .*float64 range.*scale='tanh'"):
        b.forward(p, np.array([[1.0, 2.0]]))


def test_exp_scale_beyond_exp_range_is_exact_where_the_product_is_representable():
    # x2 e^s with s = 1000, x2 = 1e-300 is 1.97e134: exp(1000) overflows but the product does not
    b, p = _coupling_with_log_scale(1000.0)
    x = np.array([[1.0, 1e-300], [0.3, 0.0], [0.3, -2e-310]])
    y, ld, _ = b.forward(p, x)
    y_ref, ld_ref = _reference(b, p, x)
    assert np.all(np.isfinite(y)) and y[1, 1] == 0.5            # 0 * e^1000 + t = t, not NaN
    # the fallback's error is |log|x2| + s| eps ~ 700 * 1.1e-16 relative (mul_exp); 1e-12 leaves a factor 10
    assert _rel(y, y_ref) < 1e-12 and np.array_equal(ld, ld_ref)


def test_round_trip_at_log_scale_minus_1000_is_finite_not_nan():
    # s = -1000: y2 = x2 e^s + t rounds to t, and the exact inverse of that y is x2 = 0 (once 0 * inf = NaN)
    b, p = _coupling_with_log_scale(-1000.0)
    x = np.array([[1.0, 2.0]])
    y, ld, _ = b.forward(p, x)
    xi, ldi = b.inverse(p, y)
    assert y[0, 1] == 0.5 and np.array_equal(xi, [[1.0, 0.0]]) and ldi[0] == 1000.0
    with pytest.raises(FloatingPointError, match="AffineCoupling inverse.*log-scale reaches -1000"):
        b.inverse(p, np.array([[1.0, 2.0]]))                   # (2 - 0.5) e^1000 is not representable


def test_maf_with_exp_scale_overflow_names_the_layer_and_log_scale():
    b = nf.maf(2, n_layers=2, hidden=(4,))
    p = b.init(np.random.default_rng(0))
    p["1.net.b1"] = p["1.net.b1"] + np.array([0.0, 1000.0, 0.0, 0.0])
    with pytest.raises(FloatingPointError, match=r"^Sequential layer 1 \(MaskedAffineAutoregressive\) forward: "
                                                 r"MaskedAffineAutoregressive forward: .*log-scale reaches 1000"):
        b.forward(p, np.array([[0.5, 2.0]]))


def test_deep_realnvp_blames_the_coupling_that_overflowed_not_the_actnorm_after_it():
    b = nf.realnvp(2, n_layers=4, hidden=(4,), actnorm=True)       # ActNorm, coupling, ActNorm, coupling, ...
    p = b.init(np.random.default_rng(0))
    p["3.net.b1"] = p["3.net.b1"] + np.array([800.0, 0.0])        # layer 3 is the second coupling
    for call in (lambda: b.forward(p, np.ones((3, 2))),
                 lambda: nf.NormalizingFlow(b, nf.StandardNormal(2)).log_prob(p, np.ones((3, 2)))):
        with pytest.raises(FloatingPointError, match=r"Sequential layer 3 \(AffineCoupling\) forward") as e:
            call()
        assert "ActNorm" not in str(e.value)


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("make, key", [
    (lambda: nf.ElementwiseAffine(3), "log_scale"),
    (lambda: nf.LULinear(3), "lower"),
    (lambda: nf.AffineCoupling(nf.half_mask(3), hidden=(4,)), "net.W1"),
    (lambda: nf.MaskedAffineAutoregressive(3, hidden=(4,)), "net.b0"),
    (lambda: nf.realnvp(3, n_layers=2, hidden=(4,)), "1.net.W0"),
])
def test_nan_in_a_parameter_is_refused_naming_the_parameter(make, key):
    b = make()
    p = b.init(np.random.default_rng(0))
    p[key] = p[key].copy()
    p[key].flat[0] = np.nan
    x = np.full((2, 3), 0.3)
    for call in (b.forward, b.inverse):
        with pytest.raises(ValueError, match=rf"parameter '{key}' \(shape .*\) contains 1 NaN or inf"):
            call(p, x)


def test_a_parameter_that_would_broadcast_is_refused():
    b = nf.ElementwiseAffine(2)
    p = {"log_scale": np.array([0.5]), "shift": np.zeros(2)}     # the map's logdet would be 1.0, not 0.5
    with pytest.raises(ValueError, match=r"ElementwiseAffine: parameter 'log_scale' has shape \(1,\), expected \(2,\)"):
        b.forward(p, np.ones((3, 2)))
    flow = nf.NormalizingFlow(b, nf.StandardNormal(2))
    with pytest.raises(ValueError, match=r"parameter 'log_scale' has shape \(1,\), expected \(2,\)"):
        flow.log_prob(p, np.ones((3, 2)))


@pytest.mark.parametrize("bad, message", [
    ({"log_scale": np.zeros((2, 1))}, r"parameter 'log_scale' has shape \(2, 1\), expected \(2,\)"),
    ({"log_scale": np.zeros(2, dtype=np.int64)}, r"parameter 'log_scale' has dtype int64"),
    ({"log_scale": np.zeros(2, dtype=np.float32)}, r"parameter 'log_scale' is float32 but the data is float64"),
    ({"log_scale": [0.0, 0.0]}, r"parameter 'log_scale' must be a numpy array of shape \(2,\), got list"),
    ({}, r"parameter keys do not match the model: missing \['log_scale'\]"),
    ({"log_scale": np.zeros(2), "scale": np.zeros(2)}, r"parameter keys do not match the model: missing \[\], "
                                                       r"unexpected \['scale'\]"),
])
def test_wrong_parameters_name_the_layer_the_parameter_and_what_was_expected(bad, message):
    b = nf.ElementwiseAffine(2, shift=False)
    with pytest.raises(ValueError, match="ElementwiseAffine: " + message):
        b.forward(bad, np.ones((3, 2)))


def test_wrong_parameter_in_a_composite_names_its_full_key():
    b = nf.realnvp(2, n_layers=2, hidden=(4,))
    p = b.init(np.random.default_rng(0))
    p["1.net.W1"] = p["1.net.W1"][:, :1]
    with pytest.raises(ValueError, match=r"Sequential: parameter '1.net.W1' has shape \(4, 1\), expected \(4, 2\)"):
        b.forward(p, np.ones((3, 2)))


# ----------------------------------------------------------------------------- Radial at large |z|
@pytest.mark.parametrize("dtype, scale", [(np.float64, 1e155), (np.float64, 1e300), (np.float32, 1e20),
                                          (np.float32, 1e30)])
def test_radial_is_finite_and_accurate_far_from_its_centre(dtype, scale):
    b = nf.Radial(3)
    rng = np.random.default_rng(1)
    p = {"z0": rng.standard_normal(3), "alpha_raw": np.array([0.3]), "beta_raw": np.array([-0.4])}
    z = scale * np.array([[1.0, -0.5, 0.25], [-0.3, 0.2, 1.0]])
    p_t, z_t = nf.cast_params(p, dtype), z.astype(dtype)
    y, ld, _ = b.forward(p_t, z_t)
    zi, ldi = b.inverse(p_t, y)
    y_ref, ld_ref = _reference(b, nf.cast_params(p_t, np.float64), z_t)
    eps = np.finfo(dtype).eps
    # y is z0 + phi d, phi = (r + B)/(alpha + r) = 1 - O(1/r): a few roundings (10 eps); the logdet is
    # O(1/r) = 1e-155 .. 1e-30, compared absolutely at 10 eps (its terms are O(log r), which cancel)
    assert y.dtype == dtype and _rel(y, y_ref) < 10 * eps
    assert np.max(np.abs(ld - ld_ref)) < 10 * eps * np.log(scale) and np.all(np.isfinite(ldi))
    assert _rel(zi.astype(np.float64), z_t.astype(np.float64)) < 10 * eps


# ----------------------------------------------------------------------------- densities and the base
def test_log_prob_beyond_the_float32_range_raises_instead_of_returning_minus_inf():
    flow = nf.NormalizingFlow(nf.ElementwiseAffine(2), nf.StandardNormal(2))
    p = nf.cast_params(flow.bijector.init(None), np.float32)
    x = np.full((2, 2), 1e30, np.float32)                         # log p = -1e60: below float32's -3.4e38
    with pytest.raises(FloatingPointError, match=r"StandardNormal log_prob: the log-density is not finite.*"
                                                 r"exceeds the range of float32"):
        flow.log_prob(p, x)
    x64 = x.astype(np.float64)                                     # 1.0000000150474662e30
    lp = flow.log_prob(nf.cast_params(p, np.float64), x64)
    assert np.allclose(lp, -x64[:, 0] ** 2 - np.log(2 * np.pi), rtol=1e-15, atol=0)


def test_log_prob_whose_square_overflows_is_still_finite():
    # sum z^2 = 2.88e308 overflows float64 (max 1.8e308), but -sum z^2 / 2 - log(2 pi) = -1.44e308 does not
    flow = nf.NormalizingFlow(nf.ElementwiseAffine(2), nf.StandardNormal(2))
    z = np.array([[1.2e154, 1.2e154]])
    lp = flow.log_prob(flow.bijector.init(None), z)
    assert np.isfinite(lp[0]) and abs(lp[0] / -1.44e308 - 1) < 1e-15
    with pytest.raises(FloatingPointError, match="exceeds the range of float64"):
        flow.log_prob(flow.bijector.init(None), 2 * z)             # -5.76e308: out of range


def test_uniform_box_gives_minus_inf_only_outside_its_support():
    flow = nf.NormalizingFlow(nf.ElementwiseAffine(2), nf.UniformBox(2))
    lp = flow.log_prob(flow.bijector.init(None), np.array([[0.5, 0.5], [1.5, 0.5]]))
    assert lp[0] == 0.0 and lp[1] == -np.inf
    with pytest.raises(FloatingPointError, match="outside the base's support"):
        flow.loss_and_grad(flow.bijector.init(None), np.array([[0.5, 0.5], [1.5, 0.5]]))


def test_rational_quadratic_spline_refuses_nan_input_and_non_finite_results():
    K = 4
    args = (np.zeros((2, K)), np.zeros((2, K)), np.zeros((2, K - 1)))
    with pytest.raises(ValueError, match="rational_quadratic_spline: the input and the unnormalised parameters "
                                         "must be finite"):
        nf.rational_quadratic_spline(np.array([np.nan, 0.5]), *args)
    y, ld = nf.rational_quadratic_spline(np.array([1e300, 0.5]), *args)
    assert np.all(np.isfinite(y)) and y[0] == 1e300 and ld[0] == 0.0      # the linear tail


def test_logit_inverse_refuses_results_that_round_onto_0_or_1():
    b = nf.Logit(2)
    with pytest.raises(FloatingPointError, match=r"Logit inverse: the output sigma\(800\) = 1.0"):
        b.inverse({}, np.array([[800.0, 0.0]]))
    with pytest.raises(FloatingPointError, match=r"Logit inverse: the output sigma\(-800\) = 0.0"):
        b.inverse({}, np.array([[0.0, -800.0]]))
    x, _ = b.inverse({}, np.array([[36.0, -700.0]]))                # the last ones that round inside (0, 1)
    b.forward({}, x)
    b5 = nf.Logit(2, alpha=0.05)                                    # range [logit 0.05, logit 0.95]
    with pytest.raises(ValueError, match=r"Logit: the inverse input \(the range of the map on \[0, 1\]\)"):
        b5.inverse({}, np.array([[3.0, 0.0]]))
    y = b5.forward({}, np.array([[0.0, 1.0]]))[0]
    x = b5.inverse({}, y)[0]                     # the ends of the range map back into [0, 1], to an absolute
    assert np.all((x >= 0) & (x <= 1)) and np.allclose(x, [[0.0, 1.0]], rtol=0, atol=4 * np.finfo(float).eps)


# ----------------------------------------------------------------------------- sampling and training arguments
def test_empty_batches_and_bad_counts():
    flow = nf.NormalizingFlow(nf.realnvp(2, n_layers=2, hidden=(4,)), nf.StandardNormal(2))
    p = flow.init(np.random.default_rng(0))
    assert flow.log_prob(p, np.zeros((0, 2))).shape == (0,)
    assert flow.sample(p, 0, np.random.default_rng(0)).shape == (0, 2)
    for call in (flow.log_likelihood_and_grad, flow.loss_and_grad):
        with pytest.raises(ValueError, match="the batch is empty"):
            call(p, np.zeros((0, 2)))
    for n, message in ((-1, "n must be >= 0"), (2.5, "n must be an integer"), (True, "n must be an integer"),
                       ("3", "n must be an integer")):
        with pytest.raises(ValueError, match="NormalizingFlow.sample: " + message):
            flow.sample(p, n, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        flow.sample(p, 3, np.random.RandomState(0))
    push = nf.PushForward(nf.Planar(2), nf.StandardNormal(2))
    pp = push.init(np.random.default_rng(0))
    with pytest.raises(ValueError, match="PushForward.reverse_kl_and_grad: n must be >= 1"):
        push.reverse_kl_and_grad(pp, lambda x: (-0.5 * (x * x).sum(1), -x), 0, np.random.default_rng(0))


@pytest.mark.parametrize("kw, message", [
    (dict(steps=0), "steps must be >= 1"), (dict(steps=2.5), "steps must be an integer"),
    (dict(batch_size=0), "batch_size must be >= 1"), (dict(batch_size=9), "batch_size 9 exceeds the 8 rows"),
    (dict(lr=0.0), "lr must be a finite number > 0"), (dict(lr=float("nan")), "lr must be a finite number > 0"),
    (dict(lr=-1e-3), "lr must be a finite number > 0"), (dict(clip_norm=-1.0), "clip_norm must be a finite"),
    (dict(rng=None), "rng must be a numpy.random.Generator"), (dict(eval_every=0), "eval_every must be >= 1"),
    (dict(patience=0), "patience must be >= 1"), (dict(warmup=-1), "warmup must be >= 0"),
    (dict(schedule="linear"), "unknown lr schedule"), (dict(data=np.zeros((0, 2))), "batch_size 4 exceeds the 0"),
    (dict(data=np.full((8, 2), np.nan)), "the data contains 16 NaN"),
    (dict(data=np.zeros(8)), "expected data of rank 2 or more"),
])
def test_fit_refuses_bad_arguments_before_the_first_step(kw, message):
    calls = []

    def objective(params, batch):
        calls.append(1)
        return 0.0, {k: np.zeros_like(v) for k, v in params.items()}

    args = dict(data=np.zeros((8, 2)), rng=np.random.default_rng(0), steps=3, batch_size=4, progress=False)
    args.update(kw)
    data = args.pop("data")
    with pytest.raises(ValueError, match="fit: " + message):
        nf.fit(objective, {"w": np.zeros(2)}, data, **args)
    assert not calls


def test_split_train_val_needs_two_rows():
    from npflows.train import split_train_val
    with pytest.raises(ValueError, match="split_train_val: needs at least 2 rows"):
        split_train_val(np.zeros((1, 2)), 0.2, np.random.default_rng(0))
    train, val = split_train_val(np.arange(4.0).reshape(2, 2), 0.9, np.random.default_rng(0))
    assert train.shape == (1, 2) and val.shape == (1, 2)
