"""Conditional flows beyond the shared harness (which checks every conditional entry's context cotangent three
ways, tests/registry_conditional.py): the contract's rule for layers without a conditioner, the conditioner
networks' context terms, the by-degree inverse with a context, and the flows' methods (densities, gradients,
sampling n per context row, reverse KL, fit, init).

Tolerances: against autograd on the same formulas 1e-10 (a handful of operations in a different order); the
by-degree inverse against the reference solve 1e-12 (the same sums grouped differently, O(1) values); central
differences with h = 1e-6 on O(1) objectives 1e-6 (truncation ~h^2, rounding ~eps/h = 2e-10); a sampled
log-density against the density through the inverse 1e-9 (one round trip of a well-conditioned map).
"""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import npflows as nf
from harness import close
from npflows.nn.made import MADE
from npflows.nn.mlp import MLP
from npflows.nn.odefield import ODEField
from registry import REGISTRY

UNCONDITIONAL = sorted(k for k in REGISTRY if getattr(REGISTRY[k](np.random.default_rng(0)), "context", None) is None)


def _perturbed(p, rng, scale=0.4):
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in p.items()}


# ----------------------------------------------------------------------------------------- the contract's rule
@pytest.mark.parametrize("name", UNCONDITIONAL)
def test_layers_without_a_conditioner_accept_and_ignore_a_context(name):
    """The same numbers with or without a context; backward then returns three values, the third zeros of the
    context's shape and the input's dtype (nothing reads it)."""
    case = REGISTRY[name](np.random.default_rng(0))
    b, p, x = case.bijector, case.params, case.x
    assert b.context_dim is None
    c = np.random.default_rng(1).standard_normal((x.shape[0], 2))
    y, ld, cache = b.forward(p, x)
    yc, ldc, cachec = b.forward(p, x, c)
    assert np.array_equal(y, yc) and np.array_equal(ld, ldc)
    assert np.array_equal(b.inverse(p, y)[0], b.inverse(p, y, c)[0])
    dy, dl = np.ones_like(y), np.ones_like(ld)
    out, outc = b.backward(p, dy, dl, cache), b.backward(p, dy, dl, cachec)
    assert len(out) == 2 and len(outc) == 3
    assert np.array_equal(out[0], outc[0]) and all(np.array_equal(out[1][k], outc[1][k]) for k in p)
    assert outc[2].shape == c.shape and outc[2].dtype == c.dtype and not outc[2].any()
    with pytest.raises(ValueError, match="context"):             # still checked: one row per sample
        b.forward(p, x, c[:-1])


def test_sequential_and_inverse_context_width():
    a = nf.AffineCoupling(nf.half_mask(3), hidden=(4,), context_dim=2)
    assert nf.Sequential([nf.ActNorm(3), a, nf.LULinear(3)]).context_dim == 2
    assert nf.Inverse(a).context_dim == 2 and nf.Sequential([nf.ActNorm(3)]).context_dim is None
    with pytest.raises(ValueError, match="disagree on the context's width"):
        nf.Sequential([a, nf.AffineCoupling(nf.half_mask(3, False), hidden=(4,), context_dim=3)])
    with pytest.raises(ValueError, match="context_dim"):
        nf.AffineCoupling(nf.half_mask(3), context_dim=0)
    with pytest.raises(ValueError, match="context_dim"):
        nf.maf(3, context_dim=2.0)


def test_a_conditional_layer_inside_a_chain_is_named_when_the_context_is_missing():
    b = nf.Sequential([nf.ActNorm(3), nf.MaskedAffineAutoregressive(3, hidden=(5,), context_dim=2)])
    p = b.init(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"Sequential.*needs a context of shape \(N, 2\)"):
        b.forward(p, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"Sequential inverse: a conditional layer \(context_dim=2\) needs"):
        b._call_inverse(p, np.zeros((2, 3)))          # the internal path checks it too
    with pytest.raises(ValueError, match=r"MaskedAffineAutoregressive inverse: .* needs a context"):
        b.layers[1]._call_inverse({k[2:]: v for k, v in p.items() if k.startswith("1.")}, np.zeros((2, 3)))


@pytest.mark.parametrize("make", [
    lambda C: nf.AffineCoupling([1, 0, 0], hidden=(5,), context_dim=C),
    lambda C: nf.SplineCoupling([0, 1, 1], n_bins=3, hidden=(5,), context_dim=C),
    lambda C: nf.MaskedAffineAutoregressive(3, hidden=(6,), context_dim=C),
    lambda C: nf.MaskedSplineAutoregressive(3, n_bins=3, hidden=(6,), context_dim=C),
    lambda C: nf.CNF(3, hidden=(5,), context_dim=C),
])
def test_the_context_reaches_every_transformed_coordinate(make):
    """d y / d c is non-zero for every transformed coordinate, the first of an autoregressive order included
    (MADE's hidden units of degree 0 see the context alone), at generic parameters (central differences)."""
    rng = np.random.default_rng(0)
    b = make(2)
    p = _perturbed(b.init(rng), rng, 0.5)
    x, c = rng.standard_normal((1, 3)), rng.standard_normal((1, 2))
    transformed = np.ones(3, bool) if not hasattr(b, "mask") else ~b.mask
    h = 1e-4
    for j in range(2):
        e = np.zeros_like(c)
        e[0, j] = h
        dy = (b.forward(p, x, c + e)[0] - b.forward(p, x, c - e)[0]) / (2 * h)
        assert np.all(np.abs(dy[0, transformed]) > 1e-6), (j, dy)
        assert np.all(dy[0, ~transformed] == 0)


# ----------------------------------------------------------------------------------------- conditioner networks
def test_conditional_mlp_backward_against_autograd():
    rng = np.random.default_rng(0)
    for n_in, C, act in [(2, 3, "relu"), (6, 5, "tanh"), (1, 1, "elu")]:       # augmented [x, c, 1] and plain
        m = MLP(n_in, 4, (5, 3), act, context_dim=C)
        assert m.param_shapes()["W0"] == (n_in + C, 5)
        p = _perturbed(m.init(rng), rng)
        x, c, g = rng.standard_normal((4, n_in)), rng.standard_normal((4, C)), rng.standard_normal((4, 4))
        out, cache = m.forward(p, x, np, c)
        close(out, m.forward(p, x, anp, c)[0], 1e-13, "numpy path vs traceable path")
        dx, grads, dc = m.backward(p, g, cache)
        gx, gc, gp = autograd.grad(lambda a: anp.sum(g * m.forward(a[2], a[0], anp, a[1])[0]))((x, c, p))
        close(dx, gx, 1e-10, "dx")
        close(dc, gc, 1e-10, "dcontext")
        for k in p:
            close(grads[k], gp[k], 1e-10, k)
        none, _, dc2 = m.backward(p, g, cache, need_dx=False)
        assert none is None
        close(dc2, dc, 1e-14, "dcontext without dx")
    with pytest.raises(ValueError, match="needs a context"):
        MLP(2, 2, (3,), context_dim=2).forward(MLP(2, 2, (3,), context_dim=2).init(rng), np.zeros((1, 2)))


def test_conditional_made_is_autoregressive_in_x_and_unmasked_in_the_context():
    """The brute-force Jacobian (autograd, the arithmetic rather than the masks): an output of degree m depends
    on no coordinate of degree >= m, and on every context column (generic parameters)."""
    rng = np.random.default_rng(1)
    m = MADE(4, 2, (7, 6), "tanh", order="random", rng=rng, context_dim=3)
    assert m.masks[0].shape == (7, 7) and m.masks[0][4:].all()          # context rows: no mask
    assert min(d.min() for d in m.hidden_degree_list) == 0
    p = _perturbed(m.init(rng), rng)
    x, c = rng.standard_normal((1, 4)), rng.standard_normal((1, 3))
    Jx = autograd.jacobian(lambda z: m.forward(p, z, anp, c)[0])(x)[0, :, 0, :]      # (2D outputs, D inputs)
    Jc = autograd.jacobian(lambda z: m.forward(p, x, anp, z)[0])(c)[0, :, 0, :]
    allowed = m.degrees[None, :] < m.output_degrees[:, None]
    assert np.all(Jx[~allowed] == 0)
    assert np.all(np.abs(Jc) > 0)
    g = rng.standard_normal((1, 8))
    out, cache = m.forward(p, x, np, c)
    dx, grads, dc = m.backward(p, g, cache)
    close(dc, g @ Jc, 1e-10, "dcontext vs the Jacobian")
    close(dx, g @ Jx, 1e-10, "dx vs the Jacobian")
    for W, mask in zip(m._W, m.masks):
        assert np.all(grads[W][~mask] == 0)


@pytest.mark.parametrize("hidden,probe", [((5, 4), None), ((6,), None), ((4, 3, 3), None), ((5, 4), "gaussian")])
def test_conditional_odefield_vjp_against_autograd(hidden, probe):
    """The field's VJP of (f, trace) with the context's cotangent: the folded two-layer form, the tangent form
    (one and three hidden layers) and Hutchinson's estimate."""
    rng = np.random.default_rng(2)
    F = ODEField(2, hidden, "tanh", context_dim=3)
    p = _perturbed(F.init(rng, zero_last=False), rng)
    z, c, t = rng.standard_normal((4, 2)), rng.standard_normal((4, 3)), 0.3
    a, w = rng.standard_normal((4, 2)), rng.standard_normal(4)
    eps = None if probe is None else rng.standard_normal((4, 2))
    f, dz, grads, dc = F.vjp(p, z, t, a, w, eps, context=c)

    def S(args):
        ff, q = F.f_and_trace(args[2], args[0], t, eps, anp, context=args[1])
        return anp.sum(a * ff) + anp.sum(w * q)
    gz, gc, gp = autograd.grad(S)((z, c, p))
    close(f, F.forward(p, z, t, context=c), 1e-14, "f")
    close(dz, gz, 1e-10, "dz")
    close(dc, gc, 1e-10, "dcontext")
    for k in p:
        close(grads[k], gp[k], 1e-10, k)
    work = {}
    close(F.f_and_trace(p, z, t, eps, work=work, context=c)[1], F.f_and_trace(p, z, t, eps, context=c)[1], 1e-13,
          "trace with work arrays")


@pytest.mark.parametrize("kind", ["affine", "gated", "spline"])
def test_by_degree_inverse_with_a_context_matches_the_reference_solve(kind, monkeypatch):
    rng = np.random.default_rng(3)
    D, C = 5, 2
    if kind == "spline":
        b = nf.MaskedSplineAutoregressive(D, n_bins=4, hidden=(9, 7), order="random", rng=rng, context_dim=C)
    else:
        b = nf.MaskedAffineAutoregressive(D, hidden=(9, 7), order="random", rng=rng, update=kind, context_dim=C)
    p = _perturbed(b.init(rng), rng, 0.3)
    z, c = rng.standard_normal((6, D)), rng.standard_normal((6, C))
    ref, ld_ref = b.solve(p, z, D, np, c)
    for block in (1, 2, None):
        x, ld = b._inverse_by_degree(p, z, block, context=c)
        close(x, ref, 1e-12, f"by degree, block {block}")
        close(ld, ld_ref, 1e-12, f"logdet by degree, block {block}")
    monkeypatch.setattr(type(b.net), "_plan_by_degree", lambda self: None)    # masks set by hand: D full passes
    x, ld = b._inverse_by_degree(p, z, context=c)
    close(x, ref, 1e-12, "by passes")
    close(b.forward(p, x, c)[0], z, 1e-10, "round trip")


# ----------------------------------------------------------------------------------------- flows
def _cond_flow(chunk_rows=None):
    b = nf.Sequential([nf.ActNorm(2), nf.AffineCoupling([1, 0], hidden=(6,), activation="tanh", context_dim=3),
                       nf.MaskedAffineAutoregressive(2, hidden=(5,), order="reversed", context_dim=3)])
    return nf.NormalizingFlow(b, nf.DiagNormal(2), chunk_rows=chunk_rows)


def _flow_case(seed=0, n=5):
    rng = np.random.default_rng(seed)
    flow = _cond_flow()
    p = _perturbed(flow.init(rng), rng, 0.4)
    return flow, p, rng.standard_normal((n, 2)), rng.standard_normal((n, 3))


def _traced_log_prob(flow, p, x, c):
    """log p(x | c) under autograd, the DiagNormal base written out here (log N(z; mu, e^{2 log_scale}))."""
    z, ld, _ = flow.bijector.forward({k: p[k] for k in flow.bijector.param_shapes()}, x, c, xp=anp)
    mu, ls = p["base.loc"], p["base.log_scale"]
    u = (z - mu) * anp.exp(-ls)
    return anp.sum(-0.5 * u * u - ls - 0.5 * np.log(2 * np.pi), axis=1) + ld


def test_flow_densities_and_gradients_with_a_context():
    flow, p, x, c = _flow_case()
    assert flow.context_dim == 3
    lp = flow.log_prob(p, x, c)
    close(lp, _traced_log_prob(flow, p, x, c), 1e-12, "log_prob vs the traced composition")
    loss, grads, dc = flow.loss_and_grad(p, x, c)
    g_p, g_c = autograd.grad(lambda a: -anp.mean(_traced_log_prob(flow, a[0], x, a[1])))((p, c))
    close(loss, -np.mean(lp), 1e-12, "loss")
    close(dc, g_c, 1e-10, "loss dcontext")
    for k in p:
        close(grads[k], g_p[k], 1e-10, k)
    ll, grads2, dc2 = flow.log_likelihood_and_grad(p, x, c)
    close(dc2, -dc, 1e-14, "log-likelihood's dcontext is the loss's negated")
    lp2, dx, dc3 = flow.log_prob_and_grad_x(p, x, c)
    gx, gc = autograd.grad(lambda a: anp.sum(_traced_log_prob(flow, p, a[0], a[1])))((x, c))
    close(lp2, lp, 1e-14, "log_prob_and_grad_x's log p")
    close(dx, gx, 1e-10, "d log p / dx")
    close(dc3, gc, 1e-10, "d log p / dc")
    chunked = nf.NormalizingFlow(flow.bijector, flow.base, chunk_rows=2)      # chunks slice the context too
    close(chunked.log_prob(p, x, c), lp, 1e-13, "chunked log_prob")
    loss_c, grads_c, dc_c = chunked.loss_and_grad(p, x, c)
    close(dc_c, dc, 1e-13, "chunked dcontext")
    assert len(flow.loss_and_grad({**p}, x, c)) == 3


def test_flows_refuse_a_missing_or_malformed_context():
    flow, p, x, c = _flow_case()
    with pytest.raises(ValueError, match=r"NormalizingFlow.log_prob: a conditional flow \(context_dim=3\) needs"):
        flow.log_prob(p, x)
    for bad in (c[:, :2], c[:-1], c.astype(np.float32), c[0], np.where(c > 0, np.nan, c)):
        with pytest.raises(ValueError, match="NormalizingFlow.loss_and_grad"):
            flow.loss_and_grad(p, x, bad)
    with pytest.raises(ValueError, match="NormalizingFlow.sample"):
        flow.sample(p, 3, np.random.default_rng(0), context=c.astype(np.float32))
    push = nf.PushForward(flow.bijector, nf.StandardNormal(2))
    pp = {k: v for k, v in p.items() if not k.startswith("base.")}
    with pytest.raises(ValueError, match="no rows"):
        push.reverse_kl_and_grad(pp, lambda x, c: (np.zeros(0), x), 2, np.random.default_rng(0), context=c[:0])


def test_sample_draws_n_per_context_row_in_row_major_order():
    """``(M, n, D)``: sample j of context i is the inverse of base row i * n + j (the base drawn for all M * n
    rows at once)."""
    flow, p, _, c = _flow_case()
    M, n = c.shape[0], 4
    xs = flow.sample(p, n, np.random.default_rng(5), context=c)
    assert xs.shape == (M, n, 2)
    pd = {k[5:]: v for k, v in p.items() if k.startswith("base.")}
    z = flow.base.sample(pd, M * n, np.random.default_rng(5), np.float64)
    pb = {k: v for k, v in p.items() if not k.startswith("base.")}
    for i in (0, M - 1):
        close(xs[i], flow.bijector.inverse(pb, z[i * n:(i + 1) * n], np.repeat(c[i:i + 1], n, 0))[0], 1e-13,
              f"samples of context row {i}")
    assert flow.sample(p, 0, np.random.default_rng(0), context=c).shape == (M, 0, 2)
    assert flow.sample(p, 2, np.random.default_rng(0), context=c[:0]).shape == (0, 2, 2)


def test_push_forward_with_a_context():
    flow, p, x, c = _flow_case()
    push = nf.PushForward(flow.bijector, nf.DiagNormal(2))
    M, n = c.shape[0], 3
    xs, lq = push.sample_and_log_prob(p, n, np.random.default_rng(6), context=c)
    assert xs.shape == (M, n, 2) and lq.shape == (M, n)
    close(push.log_prob(p, xs.reshape(-1, 2), np.repeat(c, n, 0)), lq.reshape(-1), 1e-9,
          "log q of its own samples vs the density through the inverse")

    A = np.array([[0.5, -1.0, 0.3], [0.2, 0.4, -0.6]])

    def target(xx, cc, with_c=False):            # log p(x | c) = -|x - A c|^2 / 2
        r = xx - cc @ A.T
        out = (-0.5 * np.sum(r * r, 1), -r)
        return out + ((r @ A),) if with_c else out

    def value(pp, cc, with_c):
        return push.reverse_kl_and_grad(pp, lambda a, b: target(a, b, with_c), n, np.random.default_rng(7),
                                        context=cc)
    for with_c in (False, True):
        v, grads, dc = value(p, c, with_c)
        assert dc.shape == c.shape
        h, rng = 1e-6, np.random.default_rng(8)
        u = rng.standard_normal(c.shape)
        if with_c:     # the target's dependence on c joins the cotangent: the full derivative of the objective
            fd = (value(p, c + h * u, True)[0] - value(p, c - h * u, True)[0]) / (2 * h)
            close(np.sum(dc * u), fd, 1e-6, "dcontext . u vs central difference")
        else:          # without it, the flow's part only: the objective with the target's c held fixed
            c_rep = np.repeat(c, n, 0)
            fixed = lambda cc: push.reverse_kl_and_grad(p, lambda a, b: target(a, c_rep), n,
                                                        np.random.default_rng(7), context=cc)[0]
            fd = (fixed(c + h * u) - fixed(c - h * u)) / (2 * h)
            close(np.sum(dc * u), fd, 1e-6, "flow's dcontext . u vs central difference")
        k = "1.net.W0"
        u = rng.standard_normal(p[k].shape)
        fd = (value({**p, k: p[k] + h * u}, c, with_c)[0] - value({**p, k: p[k] - h * u}, c, with_c)[0]) / (2 * h)
        close(np.sum(grads[k] * u), fd, 1e-6, f"grad {k} . u vs central difference")


def test_init_and_fit_with_a_context():
    """Data-dependent init runs the conditional layers with the rows' contexts; fit hands each batch its own
    context rows, and a conditional density of x given c is learnt (x = 2 c + 0.1 noise)."""
    rng = np.random.default_rng(9)
    c = rng.standard_normal((400, 1))
    x = np.concatenate([2.0 * c, -c], axis=1) + 0.1 * rng.standard_normal((400, 2))
    flow = nf.NormalizingFlow(nf.realnvp(2, n_layers=4, hidden=(16,), actnorm=True, context_dim=1), nf.StandardNormal(2))
    with pytest.raises(ValueError, match="needs a context"):
        flow.init(rng, x)
    p0 = flow.init(rng, x, context=c)
    seen = []

    def lg(params, batch, cb):
        seen.append(np.max(np.abs(batch[:, 0] - 2.0 * cb[:, 0])))        # the rows travel together
        return flow.loss_and_grad(params, batch, cb)
    p1, hist = nf.fit(lg, p0, x, context=c, rng=rng, steps=300, batch_size=100, lr=1e-2, progress=False)
    assert max(seen) < 0.5
    before, after = -flow.log_prob(p0, x, c).mean(), -flow.log_prob(p1, x, c).mean()
    unconditional = -np.mean(np.sum(-0.5 * ((x - x.mean(0)) / x.std(0)) ** 2 - np.log(x.std(0)) - 0.919, 1))
    assert after < before - 1.0 and after < unconditional - 1.0, (before, after, unconditional)
    with pytest.raises(ValueError, match="one row per data row"):
        nf.fit(flow.loss_and_grad, p0, x, context=c[:-1], rng=rng, steps=1, progress=False)
    with pytest.raises(ValueError, match="pass data too"):
        nf.fit(lambda q, r: (0.0, q), p0, context=c, rng=rng, steps=1, progress=False)


def test_float32_flow_with_a_float32_context():
    flow, p, x, c = _flow_case()
    p32 = nf.cast_params(p, np.float32)
    lp32 = flow.log_prob(p32, x.astype(np.float32), c.astype(np.float32))
    assert lp32.dtype == np.float32
    close(lp32, flow.log_prob(p, x, c), 1e-4, "float32 log_prob")
    xs = flow.sample(p32, 2, np.random.default_rng(0), context=c.astype(np.float32))
    assert xs.dtype == np.float32 and xs.shape == (5, 2, 2)
