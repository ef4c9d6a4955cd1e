"""The event-shape contract: image events (N, C, H, W) through the bases, Sequential, the flows and the
harness, and the errors when shapes do not meet.  (Every registry entry is checked by the harness on its own
event shape; this file holds what the harness cannot say.)"""
import numpy as np
import pytest
from scipy import stats

import npflows as nf
from harness import close


def test_image_bases_are_the_vector_bases_on_the_flattened_event():
    """An image base's log-density is the vector base's on the row-major flattened event (scipy as the
    independent reference), and DiagNormal's parameters take the event's shape."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 2, 3, 2))
    close(nf.StandardNormal((2, 3, 2)).log_prob({}, z), stats.norm.logpdf(z).reshape(4, -1).sum(1), 1e-13, "normal")
    d = nf.DiagNormal((2, 3, 2))
    p = {"loc": 0.3 * rng.standard_normal((2, 3, 2)), "log_scale": 0.2 * rng.standard_normal((2, 3, 2))}
    ref = stats.norm.logpdf(z, p["loc"], np.exp(p["log_scale"])).reshape(4, -1).sum(1)
    close(d.log_prob(p, z), ref, 1e-13, "diag normal")
    assert d.param_shapes() == {"loc": (2, 3, 2), "log_scale": (2, 3, 2)}
    with pytest.raises(ValueError, match=r"StandardNormal: expected the point to have shape \(N, 2, 3, 2\)"):
        nf.StandardNormal((2, 3, 2)).log_prob({}, z[:, :1])
    with pytest.raises(ValueError, match="StandardNormal: expected the point to have rank 4"):
        nf.StandardNormal((2, 3, 2)).log_prob({}, z.reshape(4, -1))
    for bad in [(), (2, 0), -1, (2.0, 3), "3"]:
        with pytest.raises(ValueError, match="event shape"):
            nf.StandardNormal(bad)


def test_sequential_checks_that_neighbouring_shapes_meet():
    seq = nf.Sequential([nf.ElementwiseAffine(12), nf.Reshape(12, (3, 2, 2)), nf.Reshape((3, 2, 2), 12)])
    assert seq.event_shape == (12,) and seq.out_event_shape == (12,) and seq.dim == 12
    img = nf.Sequential([nf.ElementwiseAffine(12), nf.Reshape(12, (3, 2, 2))])
    assert img.out_event_shape == (3, 2, 2)
    assert nf.Inverse(img).event_shape == (3, 2, 2) and nf.Inverse(img).out_event_shape == (12,)
    with pytest.raises(ValueError, match=r"layer 1 \(Reshape\) takes events of shape \(2, 6\), but the layers "
                                         r"before it put out \(3, 2, 2\)"):
        nf.Sequential([nf.Reshape(12, (3, 2, 2)), nf.Reshape((2, 6), 12)])
    with pytest.raises(ValueError, match="different size"):
        nf.Reshape(12, (3, 3))


def test_flows_take_data_of_the_bijectors_event_shape_and_a_base_of_its_output_shape():
    rng = np.random.default_rng(1)
    b = nf.Sequential([nf.LULinear(12), nf.Reshape(12, (3, 2, 2))])
    flow = nf.NormalizingFlow(b, nf.DiagNormal((3, 2, 2)))
    assert flow.event_shape == (12,)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}
    x = rng.standard_normal((5, 12))
    # the same model with a vector base (the reshape undone): the same density
    flat = nf.NormalizingFlow(nf.LULinear(12), nf.DiagNormal(12))
    pf = {k[2:] if k.startswith("0.") else k: v.reshape(-1) if k.startswith("base.") else v for k, v in params.items()}
    close(flow.log_prob(params, x), flat.log_prob(pf, x), 1e-13, "image base vs vector base")
    loss, grads = flow.loss_and_grad(params, x)
    loss2, grads2 = flat.loss_and_grad(pf, x)
    close(loss, loss2, 1e-13, "loss")
    assert grads["base.loc"].shape == (3, 2, 2)
    close(grads["base.loc"].reshape(-1), grads2["base.loc"], 1e-13, "base gradient")
    assert flow.sample(params, 7, rng).shape == (7, 12)
    with pytest.raises(ValueError, match=r"output event shape \(3, 2, 2\) != the base's event shape \(12,\)"):
        nf.NormalizingFlow(b, nf.StandardNormal(12))
    with pytest.raises(ValueError, match=r"input event shape \(12,\) != the base's event shape \(3, 2, 2\)"):
        nf.PushForward(b, nf.StandardNormal((3, 2, 2)))
    push = nf.PushForward(b, nf.StandardNormal(12))
    xs, lq = push.sample_and_log_prob({k: v for k, v in params.items() if not k.startswith("base.")}, 4, rng)
    assert xs.shape == (4, 3, 2, 2) and lq.shape == (4,)
    with pytest.raises(ValueError, match="NormalizingFlow.log_prob: expected the data to have rank 2"):
        flow.log_prob(params, x.reshape(5, 3, 2, 2))


def test_temperature_scales_the_base_noise():
    """At temperature T a Gaussian base's samples are loc + T scale eps with the same eps (same seed), so the
    flow's samples at T are the inverse map of T-scaled base points; T = 1 is the plain sample, bit for bit."""
    rng = np.random.default_rng(2)
    d = nf.DiagNormal((2, 2))
    p = {"loc": rng.standard_normal((2, 2)), "log_scale": 0.3 * rng.standard_normal((2, 2))}
    s1 = d.sample(p, 6, np.random.default_rng(9))
    s07 = d.sample(p, 6, np.random.default_rng(9), temperature=0.7)
    close(s07 - p["loc"], 0.7 * (s1 - p["loc"]), 1e-15, "tempered DiagNormal")
    assert np.array_equal(d.sample(p, 6, np.random.default_rng(9), temperature=1), s1)
    flow = nf.NormalizingFlow(nf.LULinear(3), nf.StandardNormal(3))
    fp = {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}
    x = flow.sample(fp, 5, np.random.default_rng(4), temperature=0.5)
    z, _ = flow.bijector.forward(fp, x)[:2]
    close(z, 0.5 * np.random.default_rng(4).standard_normal((5, 3)), 1e-12, "tempered flow sample")
    for bad in [0, -1.0, np.inf, np.nan, "1", True]:
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            flow.sample(fp, 5, rng, temperature=bad)
    with pytest.raises(ValueError, match="Gaussian bases only"):
        nf.NormalizingFlow(nf.LULinear(3), nf.StandardLogistic(3)).sample(fp, 5, rng, temperature=0.7)


def test_describe_round_trips_image_bases():
    from npflows.describe import build_model, describe_model
    for base in [nf.StandardNormal((1, 8, 8)), nf.DiagNormal((2, 4, 4)), nf.UniformBox((1, 2, 2), -2.0, 3.0),
                 nf.StandardNormal(5)]:
        d = describe_model(base)
        again = build_model(d)
        assert type(again) is type(base) and again.event_shape == base.event_shape and repr(again) == repr(base)
    assert describe_model(nf.StandardNormal(5)) == {"type": "StandardNormal", "dim": 5}   # files saved before


def test_fit_and_split_take_image_batches():
    """``fit`` draws batches of whole events, so a flow on (N, C, H, W) data trains like one on vectors: the
    same steps on the same numbers as the flattened model (the Reshape adds no arithmetic)."""
    from npflows.train import split_train_val
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 1, 2, 2)) * [[[[1.0, 2.0], [0.5, 3.0]]]]
    train, val = split_train_val(x, 0.25, np.random.default_rng(0))
    assert train.shape == (30, 1, 2, 2) and val.shape == (10, 1, 2, 2)
    img = nf.NormalizingFlow(nf.Sequential([nf.Reshape((1, 2, 2), 4), nf.ElementwiseAffine(4)]), nf.StandardNormal(4))
    vec = nf.NormalizingFlow(nf.ElementwiseAffine(4), nf.StandardNormal(4))
    p_img = img.init(np.random.default_rng(1))
    p_vec = {k[2:]: v for k, v in p_img.items()}
    kw = dict(steps=20, batch_size=10, lr=1e-2, progress=False)
    p_img, h_img = nf.fit(img.loss_and_grad, p_img, train, rng=np.random.default_rng(2), **kw)
    p_vec, h_vec = nf.fit(vec.loss_and_grad, p_vec, train.reshape(30, 4), rng=np.random.default_rng(2), **kw)
    assert h_img["train_loss"] == h_vec["train_loss"]
    assert all(np.array_equal(p_img["1." + k], v) for k, v in p_vec.items())


def test_data_dependent_init_passes_through_an_inverse_without_parameters():
    """RealNVP's checkerboard-ordered split un-squeezes with ``Inverse(Squeeze)``; an ActNorm2d after it is
    initialised on the data that reach it, and the parameter-free inverse itself needs nothing."""
    b = nf.realnvp_multiscale((1, 8, 8), n_scales=2, hidden=4, actnorm=True, split_order="checkerboard")
    x = np.random.default_rng(1).standard_normal((16, 1, 8, 8))
    params = nf.NormalizingFlow(b, nf.StandardNormal(64)).init(np.random.default_rng(0), x)
    assert set(params) == set(b.param_shapes())
    with pytest.raises(ValueError, match="data-dependent init through an inverse is not supported"):
        nf.Inverse(nf.ActNorm(3)).init(np.random.default_rng(0), np.zeros((4, 3)))
