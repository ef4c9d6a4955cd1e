"""npflows.transport: log-domain Sinkhorn against brute force and the exact assignment, its errors, and the
Brownian-bridge sampler of the Schrödinger bridge."""
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment, minimize, minimize_scalar

from npflows.transport import (SinkhornNotConverged, barycentric_map, brownian_bridge, half_sq_cost, sample_plan,
                               sinkhorn_log)


def _clouds(n, m, seed=0, d=2):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d)), rng.standard_normal((m, d)) + 1.0
    a, b = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, m)
    return x, y, a / a.sum(), b / b.sum()


def _objective(P, C, a, b, eps):
    """<P, C> + eps KL(P || a b^T): the entropic OT objective, written from its definition."""
    return float(np.sum(P * C) + eps * np.sum(P * (np.log(P) - np.log(np.outer(a, b)))))


@pytest.mark.parametrize("eps", [0.05, 0.5, 5.0])
def test_marginals_within_tolerance(eps):
    x, y, a, b = _clouds(7, 5)
    lp, f, g, it, (ea, eb) = sinkhorn_log(a, b, half_sq_cost(x, y), eps, tol=1e-10)
    P = np.exp(lp)
    # the reported errors are the returned plan's; the column sums are exact up to rounding after each sweep
    assert abs(np.abs(P.sum(1) - a).sum() - ea) < 1e-14 and ea <= 1e-10
    assert np.abs(P.sum(0) - b).sum() == pytest.approx(eb, abs=1e-14) and eb < 1e-13
    # the plan has the stationary form log P = log a + log b + (f + g - C)/eps
    np.testing.assert_allclose(lp, np.log(a)[:, None] + np.log(b) + (f[:, None] + g - half_sq_cost(x, y)) / eps,
                               rtol=0, atol=1e-12)
    assert it >= 1


def test_two_by_two_against_a_one_dimensional_brute_force():
    """For 2 x 2 weights the couplings are one-parameter: P = [[p, a1 - p], [b1 - p, 1 - a1 - b1 + p]]; the
    objective is strictly convex in p, minimised here by bounded Brent to 1e-13.  Sinkhorn's plan must agree to
    1e-9 (the minimiser is found to ~sqrt(eps_machine) of the objective's curvature scale at worst; the plans
    agree far better in practice)."""
    a, b = np.array([0.3, 0.7]), np.array([0.6, 0.4])
    C = np.array([[0.0, 1.3], [0.7, 0.2]])
    eps = 0.4

    def P_of(p):
        return np.array([[p, a[0] - p], [b[0] - p, 1 - a[0] - b[0] + p]])

    lo, hi = max(0.0, a[0] + b[0] - 1), min(a[0], b[0])
    res = minimize_scalar(lambda p: _objective(P_of(p), C, a, b, eps), bounds=(lo + 1e-15, hi - 1e-15),
                          method="bounded", options={"xatol": 1e-13})
    lp, *_ = sinkhorn_log(a, b, C, eps, tol=1e-14)
    np.testing.assert_allclose(np.exp(lp), P_of(res.x), rtol=0, atol=1e-9)


def test_three_by_four_against_the_dual_maximised_by_bfgs():
    """The dual max_{f,g} <f, a> + <g, b> - eps sum a_i b_j (exp((f_i + g_j - C_ij)/eps) - 1), concave and smooth,
    maximised by BFGS with its gradient (not by alternating exact updates as Sinkhorn does); the plans built from
    both optima agree, and the primal objective of Sinkhorn's plan is not above the BFGS plan's."""
    x, y, a, b = _clouds(3, 4, seed=3)
    C, eps = half_sq_cost(x, y), 0.3

    def neg_dual(v):
        f, g = v[:3], v[3:]
        E = np.outer(a, b) * np.exp((f[:, None] + g[None] - C) / eps)
        val = f @ a + g @ b - eps * np.sum(E - np.outer(a, b))
        return -val, -np.concatenate([a - E.sum(1), b - E.sum(0)])

    res = minimize(neg_dual, np.zeros(7), jac=True, method="BFGS", options={"gtol": 1e-13, "maxiter": 10_000})
    f, g = res.x[:3], res.x[3:]
    P_bfgs = np.outer(a, b) * np.exp((f[:, None] + g[None] - C) / eps)
    lp, *_ = sinkhorn_log(a, b, C, eps, tol=1e-13)
    np.testing.assert_allclose(np.exp(lp), P_bfgs, rtol=0, atol=1e-8)
    assert _objective(np.exp(lp), C, a, b, eps) <= _objective(P_bfgs, C, a, b, eps) + 1e-10


def test_small_eps_approaches_the_exact_assignment():
    """Equal clouds of 16 points, weights 1/16: the optimal plan is the permutation of linear_sum_assignment
    (unique for points in general position).  From eps = 1 down to 1e-3 (eps-scaling; at 1e-3, C/eps reaches
    ~1e4 and the kernel exp(-C/eps) underflows to 0 for some pairs), the cost's excess over the optimum falls
    at every step (measured 8%, 0.5%, 2e-4, 3e-6); at 1e-3 the plan puts 99.85% of its mass on the permutation
    and its barycentric map is within 0.004 of it (bounds: 99%, 1e-4, 0.02).  The tolerance 1e-5 on the
    marginals keeps the test to a few thousand iterations: Sinkhorn converges slowly at small eps (tens of
    thousands of iterations to 1e-9 for clouds like these), and the marginals are tested above."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((16, 2)), rng.standard_normal((16, 2)) * 1.5 + 2.0
    C = half_sq_cost(x, y)
    assert C.max() / 1e-3 > 745
    r, perm = linear_sum_assignment(C)
    w = np.full(16, 1 / 16)
    init, excess = None, []
    for eps in (1.0, 0.1, 0.01, 1e-3):
        lp, f, g, it, errs = sinkhorn_log(w, w.copy(), C, eps, tol=1e-5, max_iter=50_000, init=init)
        init = (f, g)
        excess.append(np.sum(np.exp(lp) * C) / C[r, perm].mean() - 1)
    assert np.all(np.diff(excess) < 0) and 0 <= excess[-1] < 1e-4, excess
    assert np.all(np.isfinite(lp)) and errs[0] <= 1e-5
    assert np.exp(lp)[r, perm].sum() > 0.99
    np.testing.assert_allclose(barycentric_map(lp, y), y[perm], rtol=0, atol=0.02)


def test_non_convergence_and_bad_input_raise_clear_errors():
    x, y, a, b = _clouds(6, 6)
    C = half_sq_cost(x, y)
    with pytest.raises(SinkhornNotConverged, match=r"not converged after 2 iterations at eps = 0.01"):
        sinkhorn_log(a, b, C, 0.01, tol=1e-12, max_iter=2)
    assert issubclass(SinkhornNotConverged, FloatingPointError)
    for bad, match in [((a * 2, b, C, 0.1), "sum to 1"), ((a, b, C[:, :5], 0.1), "shape"),
                       ((a, b, C, 0.0), "eps"), ((a, b, C.astype(np.float32), 0.1), "dtype"),
                       ((-a, b, C, 0.1), "positive"), ((a, b, np.where(C > 1, np.nan, C), 0.1), "non-finite")]:
        with pytest.raises(ValueError, match=match):
            sinkhorn_log(*bad)


def test_float32_in_gives_float32_out():
    x, y, a, b = _clouds(5, 4)
    x, y, a, b = (v.astype(np.float32) for v in (x, y, a, b))
    lp, f, g, it, errs = sinkhorn_log(a, b, half_sq_cost(x, y), 0.5, tol=1e-5)
    assert lp.dtype == f.dtype == g.dtype == np.float32 and errs[0] <= 1e-5


def test_brownian_bridge_endpoints_and_covariance():
    """Endpoints exact; the covariance of X_s and X_t over 40,000 paths (one coordinate: 80,000 samples) equals
    eps (min(s, t) - s t) to 3% of eps/4 (the standard error of a sample covariance of this size is ~0.5%)."""
    rng = np.random.default_rng(0)
    n, eps = 40_000, 0.3
    x0, x1 = np.zeros((n, 2)), np.ones((n, 2))
    t = np.array([0.0, 0.25, 0.5, 0.9, 1.0])
    X = brownian_bridge(x0, x1, eps, t, rng)
    assert X.shape == (5, n, 2)
    np.testing.assert_array_equal(X[0], x0)
    np.testing.assert_allclose(X[-1], x1, rtol=0, atol=1e-15)
    np.testing.assert_allclose(X.mean(axis=1)[:, 0], t, rtol=0, atol=0.01)
    R = (X - t[:, None, None] * (x1 - x0)).transpose(0, 2, 1).reshape(5, -1)   # the bridge's noise, per time
    cov = R[1:4] @ R[1:4].T / R.shape[1]
    s = t[1:4]
    np.testing.assert_allclose(cov, eps * (np.minimum.outer(s, s) - np.outer(s, s)), rtol=0, atol=0.03 * eps / 4)


def test_sample_plan_draws_from_the_rows_conditionals():
    """50,000 draws from one row of a plan: frequencies within 4 standard errors of the conditional."""
    x, y, a, b = _clouds(3, 5)
    lp, *_ = sinkhorn_log(a, b, half_sq_cost(x, y), 0.5)
    j = sample_plan(lp, np.full(50_000, 1), np.random.default_rng(1))
    p = np.exp(lp[1] - np.log(np.exp(lp[1]).sum()))
    freq = np.bincount(j, minlength=5) / j.size
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / j.size) + 1e-12)
