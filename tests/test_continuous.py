"""The CNF beyond the shared harness (which runs the entries of registry_continuous.py): the vector field's
hand-derived products against autograd, the affine worked example, round trips at several tolerances and
methods, Hutchinson's estimator (unbiasedness, gradients), NFE reporting, solver failure and bad input.

Everything runs at D = 2 or 3 with tiny MLPs and small batches; the whole file takes a few seconds.
"""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest
import scipy.linalg

import npflows as nf
from cnf_reference import rk4_forward
from harness import close
from npflows.bijectors import continuous
from npflows.nn.odefield import ODEField


def _perturbed(b, rng, scale=1.0):
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}


def _field_params(F, rng, scale=0.5):
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in F.init(rng, zero_last=False).items()}


# --------------------------------------------------------------------------- the vector field

# one, two (the folded exact trace: ODEField Notes) and three hidden layers, and the affine field
FIELDS = [(3, (5, 4), "tanh"), (2, (6,), "softplus"), (3, (), "tanh"), (2, (3, 4, 5), "softplus"),
          (2, (6, 7), "softplus")]


@pytest.mark.parametrize("dim,hidden,act", FIELDS)
def test_field_jvp_trace_and_hutchinson_match_autograd_jacobian(dim, hidden, act):
    """The forward-mode products against the full Jacobian from autograd (reverse mode, row by row): the same
    sums in a different order, so 1e-12 (relative to the O(1) entries) is rounding with a wide margin."""
    rng = np.random.default_rng(0)
    F = ODEField(dim, hidden, act)
    p = _field_params(F, rng)
    z, t = rng.standard_normal((4, dim)), 0.37
    J = np.stack([autograd.jacobian(lambda zz: F.forward(p, zz[None], t, anp)[0])(z[n]) for n in range(4)])
    f, tr = F.f_and_trace(p, z, t)
    close(tr, np.trace(J, axis1=1, axis2=2), 1e-12, "exact trace")
    close(F.jacobian(p, z, t), J, 1e-12, "jacobian")
    eps = rng.standard_normal((4, dim))
    close(F.f_and_trace(p, z, t, eps)[1], np.einsum("ni,nij,nj->n", eps, J, eps), 1e-12, "eps^T J eps")
    v = rng.standard_normal((4, dim))
    close(F.jvp(p, z, t, v)[1], np.einsum("nij,nj->ni", J, v), 1e-12, "J v")


@pytest.mark.parametrize("dim,hidden,act", FIELDS)
@pytest.mark.parametrize("probe", [False, True])
def test_field_vjp_with_trace_term_matches_autograd(dim, hidden, act, probe):
    """grad of sum(a f) + sum(c q) in z and theta (q: exact trace or Hutchinson's): autograd differentiates the
    traceable forward-mode code (reverse over forward), the hand-written vjp is the derivation in the Notes.
    Same formulas, different rounding order: 1e-12."""
    rng = np.random.default_rng(1)
    F = ODEField(dim, hidden, act)
    p = _field_params(F, rng)
    z, t = rng.standard_normal((4, dim)), -0.6
    a, c = rng.standard_normal((4, dim)), rng.standard_normal(4)
    eps = rng.standard_normal((4, dim)) if probe else None

    def S(args):
        f, q = F.f_and_trace(args[1], args[0], t, eps, anp)
        return anp.sum(a * f) + anp.sum(c * q)
    gz, gp = autograd.grad(S)((z, p))
    f, dz, g = F.vjp(p, z, t, a, c, eps)
    assert list(g) == F.keys
    close(f, F.forward(p, z, t), 0.0, "vjp's f")
    close(dz, gz, 1e-12, "dz")
    for k in p:
        close(g[k], gp[k], 1e-12, f"grad {k}")
    # without the trace term: the plain VJP a^T df
    gz0, gp0 = autograd.grad(lambda args: anp.sum(a * F.forward(args[1], args[0], t, anp)))((z, p))
    _, dz0, g0 = F.vjp(p, z, t, a, None)
    close(dz0, gz0, 1e-12, "dz (no trace term)")
    for k in p:
        close(g0[k], gp0[k], 1e-12, f"grad {k} (no trace term)")


@pytest.mark.parametrize("dim,hidden,act", FIELDS + [(2, (5, 6), "tanh")])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_field_work_arrays_change_no_bit_and_carry_nothing_between_calls(dim, hidden, act, dtype):
    """``work`` (the CNF's per-solve work arrays) gives exactly the numbers of the traceable code without it
    (the same operations in the same order), in float64 and float32 (no upcast), and a work dict reused across
    calls, also for another batch size and after another input, carries nothing from one call to the next."""
    rng = np.random.default_rng(20)
    F = ODEField(dim, hidden, act)
    p = {k: v.astype(dtype) for k, v in _field_params(F, rng).items()}
    work = {}
    for n in (5, 3, 5):
        z, t = rng.standard_normal((n, dim)).astype(dtype), float(rng.uniform(-1, 1))
        eps = rng.standard_normal((n, dim)).astype(dtype)
        a, c = rng.standard_normal((n, dim)).astype(dtype), rng.standard_normal(n).astype(dtype)
        for probe in (None, eps):
            for got, want in zip(F.f_and_trace(p, z, t, probe, work=work), F.f_and_trace(p, z, t, probe)):
                assert got.dtype == want.dtype == dtype and np.array_equal(got, want)
            got = F.vjp(p, z, t, a, c, probe, work=work)
            want = F.vjp(p, z, t, a, c, probe)                 # a fresh work dict
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            assert all(np.array_equal(got[2][k], want[2][k]) for k in F.keys)
        f = F.forward(p, z, t, work=work)
        assert f.dtype == dtype and np.array_equal(f, F.forward(p, z, t))
        assert not any(np.shares_memory(f, w) for w in work.values())       # results are never work arrays
    with pytest.raises(TypeError, match="autograd cannot trace"):
        F.f_and_trace(p, z, t, xp=anp, work={})


def test_field_tanh_from_one_exponential_is_accurate_and_never_overflows():
    """tanh = (1 - e) / (1 + e) with e = exp(min(-2h, 700)): within 4e-16 of np.tanh (each is within 2.5e-16
    and 1e-16 of the 40-digit value, measured; 2.2e-16 apart here); its derivative 4 e / (1 + e)^2 within
    1.5e-15 relative of 1 / cosh^2 (5e-16 from the 40-digit value, plus np.cosh's few ulp, squared; 6.7e-16
    here), also in the tails, where (1 - tanh)(1 + tanh) loses every digit (measured: relative error 1 at
    |h| = 30); no overflow at |h| = 1e4 (the clamp leaves tanh' = 4 e^-700 there); autograd's derivative of
    the traceable form is tanh'."""
    from npflows.nn.odefield import _act
    h = np.concatenate([np.linspace(-30, 30, 20001), [0.0, -0.0, 1e-300, -1e-12, 300.0, -300.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):      # e underflows to 0 harmlessly
        a, d1 = _act("tanh", h)
        big = _act("tanh", np.array([-1e4, 1e4]))
    assert np.max(np.abs(a - np.tanh(h))) <= 4e-16
    assert np.max(np.abs(d1 * np.cosh(h) ** 2 - 1.0)) <= 1.5e-15
    assert np.array_equal(big[0], [-1.0, 1.0]) and 0.0 < big[1][0] < 4e-304 and big[1][1] == 0.0
    g = autograd.elementwise_grad(lambda hh: _act("tanh", hh, anp)[0])(np.array([0.0, 0.3, -2.0]))
    close(g, [1.0, 1.0 / np.cosh(0.3) ** 2, 1.0 / np.cosh(2.0) ** 2], 1e-15, "d tanh / dh")


def test_field_rejects_rough_activations():
    with pytest.raises(ValueError, match="ODEField"):
        ODEField(2, (4,), "relu")          # relu'' = 0 a.e.: the trace gradient would be wrong at the kinks


# --------------------------------------------------------------------------- the worked example: affine field


def test_affine_field_logdet_is_minus_trace_times_duration_and_flow_is_expm():
    """f(z, t) = A z + t w + b (hidden=()), per sample with A = W0[:D]^T.  Along every trajectory
    d log p / dt = -tr(A), so logdet = -tr(A) (t1 - t0) for every x, whatever the trajectory: the solver
    integrates a constant, so this holds to rounding (1e-12).  The map itself is the exponential of the
    augmented matrix [[A, w, b], [0, 0, 1], [0, 0, 0]] acting on (z, t, 1), which the adaptive solve matches to
    its tolerance (rtol = atol = 1e-10 here; 1e-8 allows the global error's growth over the interval)."""
    rng = np.random.default_rng(2)
    t0, t1 = -0.3, 1.2
    b = nf.CNF(3, hidden=(), t0=t0, t1=t1, rtol=1e-10, atol=1e-10)
    p = _perturbed(b, rng, 0.8)
    x = 2.0 * rng.standard_normal((7, 3))
    y, ld, _ = b.forward(p, x)
    A = p["W0"][:3].T
    close(ld, np.full(7, -np.trace(A) * (t1 - t0)), 1e-12, "logdet vs -tr(A) (t1 - t0)")
    M = np.zeros((5, 5))
    M[:3, :3], M[:3, 3], M[:3, 4], M[3, 4] = A, p["W0"][3], p["b0"], 1.0
    aug = np.concatenate([x, np.full((7, 1), t1), np.ones((7, 1))], axis=1)
    exact = (scipy.linalg.expm(M * (t0 - t1)) @ aug.T).T
    close(y, exact[:, :3], 1e-8, "solved affine flow vs expm")
    xi, ldi = b.inverse(p, y)
    close(ldi, -ld, 1e-12, "inverse logdet = +tr(A) (t1 - t0)")


# --------------------------------------------------------------------------- round trips, methods, NFE


@pytest.mark.parametrize("method", ["RK45", "DOP853", "RK23", "LSODA", "Radau", "BDF"])
@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-8])
def test_round_trip_to_solver_tolerance(method, tol):
    """inverse(forward(x)) == x and logdets negate, to 100 * the solver tolerance: each solve's global error is
    a modest multiple of its per-step tolerance for this smooth O(1) field (measured 0.01-22x the tolerance for
    RK45, DOP853, RK23, LSODA and Radau); BDF (variable order up to 5, looser global error control) measured up
    to 78x at 1e-8, so it gets 1000x.  A wrong direction of time or sign of the trace misses by O(1).  RK23 at
    1e-8 is slow (third order) and adds nothing, so it is skipped."""
    if method == "RK23" and tol < 1e-6:
        pytest.skip("RK23 (third order) at 1e-8 is slow and adds nothing")
    rng = np.random.default_rng(3)
    b = nf.CNF(2, hidden=(8,), method=method, rtol=tol, atol=tol)
    p = _perturbed(b, rng)
    x = rng.standard_normal((6, 2))
    y, ld, cache = b.forward(p, x)
    x2, ld2, stats = b.inverse_with_stats(p, y)
    factor = 1000 if method == "BDF" else 100
    close(x2, x, factor * tol, f"{method} round trip")
    close(-ld2, ld, factor * tol, f"{method} logdet round trip")
    assert isinstance(cache["nfe"], int) and cache["nfe"] > 0 and stats["nfe"] > 0


def test_methods_agree_and_nfe_grows_as_tolerance_tightens():
    """Every method solves the same ODE: at rtol = atol = 1e-9 they agree to 1e-6 (a factor ~100 above the
    measured differences).  Tighter tolerances cost more evaluations, forward and adjoint."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 2))
    ref = None
    for method in ("RK45", "DOP853", "LSODA", "Radau", "BDF"):
        b = nf.CNF(2, hidden=(8,), activation="softplus", method=method, rtol=1e-9, atol=1e-9)
        p = _perturbed(b, np.random.default_rng(5))
        y, ld, _ = b.forward(p, x)
        if ref is None:
            ref = (y, ld)
        close(y, ref[0], 1e-6, f"{method} vs RK45 output")
        close(ld, ref[1], 1e-6, f"{method} vs RK45 logdet")
    nfes = []
    for tol in (1e-3, 1e-6, 1e-9):
        b = nf.CNF(2, hidden=(8,), rtol=tol, atol=tol)
        y, ld, cache = b.forward(p, x)
        _, _, st = b.backward_with_stats(p, np.ones_like(y), np.ones_like(ld), cache)
        nfes.append((cache["nfe"], st["nfe"]))
    assert nfes[0][0] < nfes[1][0] < nfes[2][0] and nfes[0][1] < nfes[1][1] < nfes[2][1], nfes


def test_trajectory_starts_at_z_and_ends_at_the_inverse():
    """CNF.trajectory (for plots): row 0 is the start, the last row the inverse map's output (both solves at
    rtol = atol = 1e-8: 1e-6 as the round trips), and intermediate times lie between."""
    rng = np.random.default_rng(14)
    b = nf.CNF(2, hidden=(8,), rtol=1e-8, atol=1e-8)
    p = _perturbed(b, rng)
    z = rng.standard_normal((3, 2))
    path = b.trajectory(p, z, np.linspace(b.t0, b.t1, 5))
    assert path.shape == (5, 3, 2)
    close(path[0], z, 1e-12, "start")
    close(path[-1], b.inverse(p, z)[0], 1e-6, "end vs inverse")
    half = nf.CNF(2, hidden=(8,), t1=0.5, rtol=1e-8, atol=1e-8)
    close(path[2], half.inverse(p, z)[0], 1e-6, "t = 0.5")
    with pytest.raises(ValueError, match="monotone"):
        b.trajectory(p, z, np.array([0.0, 0.5, 0.2]))


def test_backward_keeps_no_trajectory_and_repeats_exactly():
    """O(1) memory: the cache holds the end state (N, D), the probe and the NFE, nothing per solver step; the
    adjoint re-integrates z.  backward twice gives bit-identical answers (no hidden state)."""
    rng = np.random.default_rng(6)
    b = nf.CNF(2, hidden=(8,), rtol=1e-6, atol=1e-6)
    p = _perturbed(b, rng)
    x = rng.standard_normal((5, 2))
    y, ld, cache = b.forward(p, x)
    arrays = [v for v in cache.values() if isinstance(v, np.ndarray)]
    assert sum(a.size for a in arrays) <= x.size and cache["nfe"] > 20
    dy, dl = rng.standard_normal(y.shape), rng.standard_normal(ld.shape)
    one, two = b.backward_with_stats(p, dy, dl, cache), b.backward_with_stats(p, dy, dl, cache)
    close(two[0], one[0], 0.0, "dx twice")
    assert all(np.array_equal(one[1][k], two[1][k]) for k in p) and one[2] == two[2]


def test_each_solve_allocates_its_work_arrays_once(monkeypatch):
    """The hot loops reuse their work arrays: over a whole solve (forward, inverse, adjoint, trajectory) every
    work array is allocated once, at the first evaluation, though the solve makes dozens of them; a solve that
    allocated per evaluation (the glibc trim / page-fault trap) would count NFE times as many."""
    from npflows.nn import odefield
    allocations = []
    real = odefield._buf

    def counting(work, key, shape, dtype):
        if key not in work or work[key].shape != shape:
            allocations.append(key)
        return real(work, key, shape, dtype)
    monkeypatch.setattr(odefield, "_buf", counting)
    rng = np.random.default_rng(21)
    for hidden, trace in (((8, 8), "exact"), ((8, 8), "hutchinson"), ((6, 5, 4), "exact")):
        b = nf.CNF(2, hidden=hidden, trace=trace, rtol=1e-6, atol=1e-6)
        p = _perturbed(b, rng)
        x = rng.standard_normal((9, 2))
        for solve in ("forward", "inverse", "adjoint", "trajectory"):
            allocations.clear()
            if solve == "forward":
                y, ld, cache = b.forward(p, x)
                nfe = cache["nfe"]
            elif solve == "inverse":
                nfe = b.inverse_with_stats(p, x)[2]["nfe"]
            elif solve == "adjoint":
                nfe = b.backward_with_stats(p, rng.standard_normal(y.shape), np.ones(9), cache)[2]["nfe"]
            else:
                b.trajectory(p, x, np.linspace(0.0, 1.0, 3))
                nfe = 20
            assert allocations and len(allocations) == len(set(allocations)) and nfe > 2 * len(hidden), \
                (hidden, trace, solve, allocations)


def test_two_solves_at_once_on_one_cnf_give_the_answers_of_two_solves_in_turn():
    """No hidden mutable state: the work arrays belong to one call, so one CNF can serve two threads at once
    (NumPy releases the GIL inside its loops, so their evaluations interleave) with bit-identical answers."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(22)
    b = nf.CNF(2, hidden=(32, 32), rtol=1e-6, atol=1e-6)
    p = _perturbed(b, rng, 0.3)
    xs = [rng.standard_normal((200, 2)) for _ in range(4)]
    dy = rng.standard_normal((200, 2))

    def both(x):
        y, ld, cache = b.forward(p, x)
        dx, g = b.backward(p, dy, np.ones(200), cache)
        return [y, ld, dx] + [g[k] for k in b.field.keys]
    alone = [both(x) for x in xs]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(both, xs))
    assert all(np.array_equal(u, v) for r, s in zip(alone, together) for u, v in zip(r, s))


def test_adjoint_without_logdet_cotangent_matches_autograd_on_rk4():
    """dlogdet = 0 takes the vjp's branch without the trace term; it must still match autograd on the RK4
    discretisation (tolerances as in registry_continuous.py: 1e-5 at solver tolerance 1e-8)."""
    rng = np.random.default_rng(7)
    b = nf.CNF(2, hidden=(6, 5), activation="softplus", rtol=1e-8, atol=1e-8)
    p = _perturbed(b, rng)
    x = rng.standard_normal((4, 2))
    y, ld, cache = b.forward(p, x)
    dy = rng.standard_normal(y.shape)
    dx, g = b.backward(p, dy, np.zeros_like(ld), cache)
    gx, gp = autograd.grad(lambda a: anp.sum(dy * rk4_forward(b, a[1], a[0], anp, 100)[0]))((x, p))
    close(dx, gx, 1e-5, "dx")
    for k in p:
        close(g[k], gp[k], 1e-5, f"grad {k}")


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_inverse_backward_matches_autograd_on_rk4_and_central_differences(trace):
    """Inverse(CNF).backward (the adjoint of the t0 -> t1 solve) against autograd on RK4 from t0 to t1 and against
    central differences of the solved inverse; tolerances as in registry_continuous.py (1e-5 at solver
    tolerance 1e-8, step 1e-4).  With Hutchinson, the probe of an inverse called without rng (probe_seed)."""
    rng = np.random.default_rng(15)
    cnf = nf.CNF(2, hidden=(6,), activation="softplus", t0=-0.2, t1=0.7, trace=trace, rtol=1e-8, atol=1e-8)
    b = nf.Inverse(cnf)
    p = _perturbed(cnf, rng)
    z = rng.standard_normal((4, 2))
    x, ld, cache = b.forward(p, z)
    dx_, dl = rng.standard_normal(x.shape), rng.standard_normal(ld.shape)
    dz, g = b.backward(p, dx_, dl, cache)
    probe = cnf.draw_probe(4)

    def rk4_obj(a):
        xx, ell = rk4_forward(cnf, a[1], a[0], anp, 100, probe=probe, t_from=cnf.t0, t_to=cnf.t1)
        return anp.sum(dx_ * xx) + anp.sum(dl * ell)
    gz, gp = autograd.grad(rk4_obj)((z, p))
    close(dz, gz, 1e-5, "dz vs autograd on RK4")
    for k in p:
        close(g[k], gp[k], 1e-5, f"grad {k} vs autograd on RK4")
    obj = lambda pp, zz: float(np.sum(dx_ * b.forward(pp, zz)[0]) + np.sum(dl * b.forward(pp, zz)[1]))
    h, v = 1e-4, rng.standard_normal(z.shape)
    close(np.sum(dz * v), (obj(p, z + h * v) - obj(p, z - h * v)) / (2 * h), 1e-5, "dz . v vs central difference")
    for k in p:
        v = rng.standard_normal(p[k].shape)
        fd = (obj({**p, k: p[k] + h * v}, z) - obj({**p, k: p[k] - h * v}, z)) / (2 * h)
        close(np.sum(g[k] * v), fd, 1e-5, f"grad {k} . v vs central difference")


# --------------------------------------------------------------------------- Hutchinson


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased_within_three_standard_errors(probe):
    """At a fixed (z, t), M = 20000 probes: the mean of eps^T J eps is within 3 standard errors of tr J (a
    seeded test that a biased estimator fails: the negative control scales the probe by 1.05, a 10% bias,
    which lies > 3 SE away).  Then the integrated logdet: 4000 copies of one point, each with its own probe,
    whose mean logdet is within 3 SE of the exact-trace logdet (the trajectory does not depend on the probe)."""
    rng = np.random.default_rng(8)
    b = nf.CNF(2, hidden=(8,), trace="hutchinson", probe=probe, rtol=1e-6, atol=1e-6)
    p = _perturbed(b, rng)
    M = 20000
    z = np.repeat(rng.standard_normal((1, 2)), M, axis=0)
    eps = b.draw_probe(M, rng)
    exact = b.field.f_and_trace(p, z[:1], 0.4)[1][0]
    est = b.field.f_and_trace(p, z, 0.4, eps)[1]
    se = est.std(ddof=1) / np.sqrt(M)
    assert abs(est.mean() - exact) < 3 * se, (est.mean(), exact, se)
    biased = b.field.f_and_trace(p, z, 0.4, 1.05 * eps)[1]
    assert abs(biased.mean() - exact) > 3 * biased.std(ddof=1) / np.sqrt(M)
    n = 4000
    x = np.repeat(rng.standard_normal((1, 2)), n, axis=0)
    _, ld_h, cache = b.forward(p, x, rng=rng)
    assert cache["probe"].shape == (n, 2)
    _, ld_exact, _ = nf.CNF(2, hidden=(8,), rtol=1e-6, atol=1e-6).forward(p, x[:1])
    se = ld_h.std(ddof=1) / np.sqrt(n)
    assert abs(ld_h.mean() - ld_exact[0]) < 3 * se, (ld_h.mean(), ld_exact[0], se)
    assert se > 0


def test_hutchinson_probe_is_fixed_per_solve_and_round_trips():
    """Without rng the probe comes from probe_seed, so forward is deterministic and the inverse uses the same
    probe: the estimated logdets of a round trip are negatives (100 * rtol as above).  With rng, a new probe."""
    rng = np.random.default_rng(9)
    b = nf.CNF(2, hidden=(8,), trace="hutchinson", probe="rademacher", rtol=1e-8, atol=1e-8)
    p = _perturbed(b, rng)
    x = rng.standard_normal((5, 2))
    y, ld, cache = b.forward(p, x)
    assert set(np.unique(cache["probe"])) <= {-1.0, 1.0}
    x2, ld2 = b.inverse(p, y)
    close(x2, x, 1e-6, "round trip")
    close(-ld2, ld, 1e-6, "estimated logdets negate")
    _, ld_again, _ = b.forward(p, x)
    close(ld_again, ld, 0.0, "same probe_seed, same answer")
    _, ld_new, _ = b.forward(p, x, rng=np.random.default_rng(1))
    assert np.max(np.abs(ld_new - ld)) > 1e-3


def test_hutchinson_adjoint_matches_central_differences_and_rk4():
    """The adjoint with the cached probe is the gradient of the estimated logdet: against central differences
    of the solved objective (same probe: probe_seed) and autograd on RK4 with that probe; 1e-5 as in
    registry_continuous.py (solver tolerance 1e-8, step 1e-4)."""
    rng = np.random.default_rng(10)
    b = nf.CNF(2, hidden=(6,), activation="softplus", trace="hutchinson", rtol=1e-8, atol=1e-8)
    p = _perturbed(b, rng)
    x = rng.standard_normal((4, 2))
    y, ld, cache = b.forward(p, x)
    dy, dl = rng.standard_normal(y.shape), rng.standard_normal(ld.shape)
    dx, g = b.backward(p, dy, dl, cache)
    probe = cache["probe"]

    def rk4_obj(a):
        z, ell = rk4_forward(b, a[1], a[0], anp, 100, probe=probe)
        return anp.sum(dy * z) + anp.sum(dl * ell)
    gx, gp = autograd.grad(rk4_obj)((x, p))
    close(dx, gx, 1e-5, "dx vs autograd on RK4")
    for k in p:
        close(g[k], gp[k], 1e-5, f"grad {k} vs autograd on RK4")

    def obj(pp, xx):
        yy, ll, _ = b.forward(pp, xx)
        return np.sum(dy * yy) + np.sum(dl * ll)
    h = 1e-4
    for k in p:
        v = rng.standard_normal(p[k].shape)
        fd = (obj({**p, k: p[k] + h * v}, x) - obj({**p, k: p[k] - h * v}, x)) / (2 * h)
        close(np.sum(g[k] * v), fd, 1e-5, f"grad {k} . v vs central difference")


# --------------------------------------------------------------------------- in a flow


def test_normalizing_flow_loss_gradient_matches_central_differences():
    """NormalizingFlow(CNF) trains by maximum likelihood through the adjoint: its loss gradient against central
    differences of the loss (solver tolerance 1e-8, step 1e-4: 1e-5 as in the harness entries)."""
    rng = np.random.default_rng(11)
    flow = nf.NormalizingFlow(nf.CNF(2, hidden=(6,), rtol=1e-8, atol=1e-8), nf.StandardNormal(2))
    p = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in flow.init(rng).items()}
    x = nf.data.two_moons(16, rng)
    loss, g = flow.loss_and_grad(p, x)
    close(loss, -flow.log_prob(p, x).mean(), 1e-12, "loss vs mean log_prob")
    h = 1e-4
    for k in p:
        v = rng.standard_normal(p[k].shape)
        fd = (flow.loss_and_grad({**p, k: p[k] + h * v}, x)[0] - flow.loss_and_grad({**p, k: p[k] - h * v}, x)[0]) / (2 * h)
        close(np.sum(g[k] * v), fd, 1e-5, f"grad {k} . v")
    s = flow.sample(p, 3, rng)
    assert s.shape == (3, 2) and np.all(np.isfinite(s))


# --------------------------------------------------------------------------- failures and bad input


def test_solver_failure_raises_clear_error(monkeypatch):
    """A solve_ivp status != 0 becomes ODESolveError naming the CNF, the method and solve_ivp's message, in
    every direction; an overflowing field (parameters of 1e200) fails for real, not with NaN."""
    rng = np.random.default_rng(12)
    b = nf.CNF(2, hidden=(4,))
    p = _perturbed(b, rng)
    x = rng.standard_normal((3, 2))
    y, ld, cache = b.forward(p, x)
    big = {**p, "W1": p["W1"] * 1e200}
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(ODESolveError_, match="CNF: solve_ivp"):
        b.forward(big, x)
    real = continuous.solve_ivp

    def failing(*a, **kw):
        sol = real(*a, **kw)
        sol.status, sol.message = -1, "Required step size is less than spacing between numbers."
        return sol
    monkeypatch.setattr(continuous, "solve_ivp", failing)
    for call in (lambda: b.forward(p, x), lambda: b.inverse(p, y),
                 lambda: b.backward(p, np.ones_like(y), np.ones_like(ld), cache)):
        with pytest.raises(ODESolveError_, match="RK45.*spacing between numbers"):
            call()


ODESolveError_ = nf.ODESolveError


def test_bad_parameters_and_configuration_raise_value_error():
    rng = np.random.default_rng(13)
    b = nf.CNF(2, hidden=(4,))
    p = _perturbed(b, rng)
    x = rng.standard_normal((3, 2))
    nan = {**p, "b0": np.full(4, np.nan)}
    with pytest.raises(ValueError, match="CNF.*NaN"):
        b.forward(nan, x)
    with pytest.raises(ValueError, match="CNF: parameter keys do not match the model"):
        b.forward({k: v for k, v in p.items() if k != "W1"}, x)
    with pytest.raises(ValueError, match=r"CNF: parameter 'W1' has shape \(3, 2\), expected \(4, 2\)"):
        b.forward({**p, "W1": p["W1"][:3]}, x)
    with pytest.raises(ValueError, match="CNF.*float32"):
        b.forward(nf.cast_params(p, np.float32), x)
    with pytest.raises(TypeError, match="cannot be traced"):
        b.forward(p, x, xp=anp)
    y, ld, cache = b.forward(p, x)
    with pytest.raises(ValueError, match="CNF: expected cotangents for 3"):
        b.backward(p, np.ones((2, 2)), np.ones(2), cache)
    for kw in (dict(method="Euler"), dict(rtol=0.0), dict(t0=1.0, t1=1.0), dict(trace="stochastic"),
               dict(probe="uniform"), dict(activation="relu")):
        with pytest.raises(ValueError, match="CNF|ODEField"):
            nf.CNF(2, **kw)


# --------------------------------------------------------------------------- validation cases


def test_validation_cases_accept_a_tighter_solver_and_refuse_a_sloppy_one():
    """The CNF's golden cases (validation/cases/cnf_*.json) ask another implementation for 5 digits (float64;
    4 in float32): npflows itself with DOP853 at 1e-11 (a different, more accurate solve) passes them, with the
    same RK45 at 1e-4 it fails: the threshold separates a correct solve from a loose one."""
    import copy

    from validation import check
    from validation import format as F
    from validation.adapters import npflows_adapter
    cases = [c for c in F.load_cases() if c["entry"].startswith("cnf")]
    assert len(cases) >= 6

    def adapter(**solver):
        class A:
            NAME = "npflows " + str(solver)
            supports = staticmethod(lambda case: None)

            @staticmethod
            def run(case):
                case = copy.deepcopy(case)
                case["transform"].update(solver)
                return npflows_adapter.run(case)
        return A
    tight = check.check(adapter(method="DOP853", rtol=1e-11, atol=1e-11), cases, out=lambda s: None)
    assert all(r.status == "pass" for r in tight), [(r.name, r.status, r.first) for r in tight]
    loose = check.check(adapter(rtol=1e-4, atol=1e-4), cases, out=lambda s: None)
    assert all(r.status == "FAIL" for r in loose), [(r.name, r.status, r.worst) for r in loose]
