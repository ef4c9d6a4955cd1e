"""Entropic optimal transport between point clouds (log-domain Sinkhorn) and the Schrödinger bridge it gives.

* :func:`sinkhorn_log`: the entropic OT plan between two weighted point clouds (Cuturi 2013,
  arXiv:1306.0895; Peyré & Cuturi 2019, "Computational Optimal Transport", arXiv:1803.00567, chapter 4),
  with the iterations in the log domain so that small regularisations do not underflow;
* :func:`half_sq_cost`: the cost :math:`C_{ij} = |x_i - y_j|^2/2`;
* :func:`sample_plan`, :func:`barycentric_map`: draws from the plan's conditionals, and its mean map;
* :func:`brownian_bridge`: paths of Brownian bridges between coupled pairs, which with the entropic plan for
  :math:`C = |x - y|^2/2` at :math:`\\varepsilon = \\sigma^2` are samples of the Schrödinger bridge between the
  two clouds for Brownian motion with diffusion :math:`\\sigma^2` (see :func:`brownian_bridge`).

Every random draw takes an explicit ``numpy.random.Generator``.
"""
import numpy as np
from scipy.special import logsumexp

from ._checks import check_rng


class SinkhornNotConverged(FloatingPointError):
    """Sinkhorn's iterations did not bring the marginal error below the tolerance within ``max_iter``
    iterations (a ``FloatingPointError``, like the other numerical failures of npflows)."""


def _floats(owner, what, a, ndim):
    a = np.asarray(a) if isinstance(a, (list, tuple)) else a
    if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{owner}: {what} must be a float32 or float64 array, got "
                         f"{getattr(a, 'dtype', type(a).__name__)}")
    if a.ndim != ndim:
        raise ValueError(f"{owner}: {what} must have {ndim} dimension(s), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{owner}: {what} has non-finite entries")
    return a


def half_sq_cost(x, y):
    """:math:`C_{ij} = \\tfrac12|x_i - y_j|^2` for points ``x`` ``(n, d)`` and ``y`` ``(m, d)``: shape ``(n, m)``,
    in their dtype.  Computed from the differences (not as :math:`|x|^2 + |y|^2 - 2x\\cdot y`, which cancels
    for nearby points), one coordinate at a time so the temporaries stay ``(n, m)``."""
    x, y = _floats("half_sq_cost", "x", x, 2), _floats("half_sq_cost", "y", y, 2)
    if x.shape[1] != y.shape[1] or x.dtype != y.dtype:
        raise ValueError(f"half_sq_cost: x {x.shape} {x.dtype} and y {y.shape} {y.dtype} must have the same "
                         f"number of coordinates and dtype")
    C = np.zeros((x.shape[0], y.shape[0]), x.dtype)
    for k in range(x.shape[1]):
        diff = x[:, k, None] - y[None, :, k]
        C += diff * diff
    C *= 0.5
    return C


def sinkhorn_log(a, b, C, eps, tol=1e-9, max_iter=10_000, init=None):
    """The entropic optimal transport plan between weights ``a`` ``(n,)`` and ``b`` ``(m,)`` for the cost ``C``
    ``(n, m)``, by Sinkhorn's iterations in the log domain.

    Parameters
    ----------
    a, b : arrays (n,), (m,)
        Positive weights, each summing to 1 (``ValueError`` otherwise, or for non-finite entries).
    C : array (n, m)
        The cost, finite; ``a``, ``b`` and ``C`` share one dtype (float32 or float64), which the results keep.
    eps : float > 0
        The entropic regularisation :math:`\\varepsilon`, in the units of ``C``.
    tol : float
        Stop when the row marginal's L1 error :math:`\\sum_i|\\sum_j P_{ij} - a_i|` is at most ``tol`` (the
        column marginal is exact to rounding after each iteration, see Notes).
    max_iter : int
        Iterations before :class:`SinkhornNotConverged` is raised.
    init : (f, g), optional
        Starting potentials (``g`` is recomputed from ``f`` first), e.g. the solution at a larger ``eps``
        (eps-scaling: far fewer iterations at a
        small ``eps`` than from zero).

    Returns
    -------
    log_plan : (n, m) array
        :math:`\\log P_{ij}`.
    f, g : arrays (n,), (m,)
        The dual potentials.
    n_iter : int
        Iterations made.
    marginal_errors : (float, float)
        L1 errors of the plan's row and column sums against ``a`` and ``b``, from the returned plan.

    Notes
    -----
    **The problem** (Cuturi 2013; Peyré & Cuturi 2019, chapter 4, in its form with the KL divergence to
    :math:`ab^T`, which differs from the entropy form by a constant on :math:`\\Pi(a, b)`):

    .. math:: P^\\varepsilon = \\arg\\min_{P\\in\\Pi(a, b)} \\langle P, C\\rangle
              + \\varepsilon\\,\\mathrm{KL}(P\\,\\|\\,a b^T),\\qquad
              \\Pi(a, b) = \\{P \\ge 0: P\\mathbf 1 = a,\\ P^T\\mathbf 1 = b\\}.

    Its Lagrangian with multipliers :math:`f, g` is stationary at
    :math:`\\log P_{ij} = \\log a_i + \\log b_j + (f_i + g_j - C_{ij})/\\varepsilon`, and :math:`(f, g)` maximise
    the concave dual :math:`\\langle f, a\\rangle + \\langle g, b\\rangle - \\varepsilon\\sum_{ij} a_i b_j
    (e^{(f_i + g_j - C_{ij})/\\varepsilon} - 1)`.

    **The iteration.**  Maximising the dual in :math:`f` with :math:`g` fixed makes the row sums equal to
    :math:`a` (set :math:`\\sum_j P_{ij} = a_i` and solve for :math:`f_i`), and then in :math:`g` the column
    sums equal to :math:`b`:

    .. math:: f_i \\leftarrow -\\varepsilon\\log\\sum_j \\exp\\big(\\log b_j + (g_j - C_{ij})/\\varepsilon\\big),
              \\qquad
              g_j \\leftarrow -\\varepsilon\\log\\sum_i \\exp\\big(\\log a_i + (f_i - C_{ij})/\\varepsilon\\big).

    This is Sinkhorn's matrix scaling :math:`P = \\mathrm{diag}(u) K \\mathrm{diag}(v)`,
    :math:`K = e^{-C/\\varepsilon}`, with :math:`u = a e^{f/\\varepsilon}`, :math:`v = b e^{g/\\varepsilon}`,
    written with ``logsumexp`` (Peyré & Cuturi, section 4.4): :math:`K` itself underflows to 0 once
    :math:`C_{ij}/\\varepsilon > 745` (float64), which at :math:`\\varepsilon = 0.01` is any pair more than 3.9
    apart for the cost :math:`|x - y|^2/2`, and the scaling form then divides by zero; the log form never
    forms :math:`K`.  After each :math:`g` update the column sums are :math:`b` up to rounding, so the
    stopping test measures the row sums.  The iteration converges linearly, more slowly as
    :math:`\\varepsilon \\to 0` (Peyré & Cuturi, chapter 4); starting from the potentials of a larger
    :math:`\\varepsilon` (``init``) helps.

    **The limit** :math:`\\varepsilon \\to 0`: :math:`P^\\varepsilon` converges to an optimal plan of the
    unregularised problem (Peyré & Cuturi, proposition 4.1); for two clouds of n points with weights 1/n
    there is an optimal plan that is a permutation (Birkhoff), the assignment that
    ``scipy.optimize.linear_sum_assignment`` finds.
    """
    owner = "sinkhorn_log"
    a, b, C = _floats(owner, "a", a, 1), _floats(owner, "b", b, 1), _floats(owner, "C", C, 2)
    if C.shape != (a.size, b.size):
        raise ValueError(f"{owner}: C has shape {C.shape}, expected (len(a), len(b)) = {(a.size, b.size)}")
    if not (a.dtype == b.dtype == C.dtype):
        raise ValueError(f"{owner}: a, b and C must share one dtype, got {a.dtype}, {b.dtype}, {C.dtype}")
    if a.size == 0 or b.size == 0 or np.any(a <= 0) or np.any(b <= 0):
        raise ValueError(f"{owner}: the weights must be non-empty and positive")
    slack = 1e-6 if a.dtype == np.float32 else 1e-10
    if abs(float(a.sum(dtype=np.float64)) - 1) > slack or abs(float(b.sum(dtype=np.float64)) - 1) > slack:
        raise ValueError(f"{owner}: the weights must each sum to 1, got {a.sum():.12g} and {b.sum():.12g}")
    if not (isinstance(eps, (int, float, np.floating, np.integer)) and np.isfinite(eps) and eps > 0):
        raise ValueError(f"{owner}: eps must be a finite number > 0, got {eps!r}")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"{owner}: tol must be > 0, got {tol!r}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"{owner}: max_iter must be an integer >= 1, got {max_iter!r}")
    eps = C.dtype.type(eps)
    la, lb = np.log(a), np.log(b)
    if init is None:
        f, g = np.zeros(a.size, C.dtype), np.zeros(b.size, C.dtype)
    else:
        f, g = (_floats(owner, w, v, 1) for w, v in zip(("init f", "init g"), init))
        if f.shape != a.shape or g.shape != b.shape or f.dtype != C.dtype or g.dtype != C.dtype:
            raise ValueError(f"{owner}: init must be (f, g) of shapes {a.shape}, {b.shape} in {C.dtype}")
    negC, negCT = -C / eps, np.ascontiguousarray(-C.T / eps)
    buf = np.empty(C.shape, C.dtype)
    bufT = np.empty(C.shape[::-1], C.dtype)
    g = -eps * _lse_rows(negCT, la + f / eps, bufT)          # the column sums exact for the starting f
    n_iter, err = 0, np.inf
    while True:
        # the row update; the rows' sums under the current (f, g) are a_i exp((f_i - f_new_i)/eps), so the
        # stopping test costs nothing beyond the update it shares
        f_new = -eps * _lse_rows(negC, lb + g / eps, buf)
        if not (np.all(np.isfinite(f_new)) and np.all(np.isfinite(g))):
            raise FloatingPointError(f"{owner}: the potentials became non-finite at iteration {n_iter} (eps = "
                                     f"{float(eps):g}); the cost is too large for eps in {C.dtype}")
        err = float(np.sum(a * np.abs(np.expm1((f - f_new) / eps))))
        if err <= tol:
            break
        if n_iter == max_iter:
            raise SinkhornNotConverged(f"{owner}: not converged after {max_iter} iterations at eps = {float(eps):g}: "
                                       f"the row marginal's L1 error is {err:.3g} > tol = {tol:g}; raise max_iter, "
                                       f"raise eps, or start from the potentials of a larger eps (init=(f, g))")
        n_iter += 1
        f = f_new
        g = -eps * _lse_rows(negCT, la + f / eps, bufT)      # the column update
    log_plan = la[:, None] + lb[None, :] + (f[:, None] + g[None, :]) / eps + negC
    errors = (float(np.abs(np.exp(_lse(log_plan, 1)) - a).sum()), float(np.abs(np.exp(_lse(log_plan, 0)) - b).sum()))
    return log_plan, f, g, n_iter, errors


def _lse(A, axis):
    """``scipy.special.logsumexp(A, axis)`` (max-shifted), for the final marginals."""
    m = A.max(axis=axis, keepdims=True)
    return (np.log(np.exp(A - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis)


def _lse_rows(M, v, buf):
    """:math:`\\log\\sum_j \\exp(M_{ij} + v_j)` for every row i, with the maximum of each row shifted out (as
    ``scipy.special.logsumexp``, which computes the same but was measured 2.4x slower here on 1000 x 1000: it
    makes several full-size temporaries); ``buf`` is a work array of M's shape, overwritten."""
    np.add(M, v[None, :], out=buf)
    m = buf.max(axis=1)
    buf -= m[:, None]
    np.exp(buf, out=buf)
    return np.log(buf.sum(axis=1)) + m


def sample_plan(log_plan, rows, rng):
    """For each source index in ``rows``, a target index ``j`` drawn from the plan's conditional
    :math:`P_{ij}/\\sum_k P_{ik}` (inverse-CDF sampling, one uniform draw per row).  Returns ``(len(rows),)``
    integer indices."""
    rng = check_rng("sample_plan", rng)
    lp = np.asarray(log_plan)[np.asarray(rows)]
    cdf = np.cumsum(np.exp(lp - logsumexp(lp, axis=1, keepdims=True)), axis=1)
    u = rng.random(lp.shape[0]) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), lp.shape[1] - 1)


def barycentric_map(log_plan, y):
    """:math:`T(x_i) = \\sum_j P_{ij} y_j / \\sum_j P_{ij}`: where the plan sends source point i on average;
    for a permutation plan, the permutation itself."""
    lp = np.asarray(log_plan)
    w = np.exp(lp - logsumexp(lp, axis=1, keepdims=True))
    return w @ y


def brownian_bridge(x0, x1, eps, times, rng):
    """Paths of Brownian bridges with diffusion coefficient :math:`\\sigma^2 = \\varepsilon` from ``x0`` ``(n, d)``
    at t = 0 to ``x1`` ``(n, d)`` at t = 1, observed at ``times`` (increasing, in [0, 1]): shape ``(T, n, d)``.

    Notes
    -----
    **The bridge.**  For Brownian motion :math:`B` with :math:`\\mathrm{Var}(B_t - B_s) = \\sigma^2 (t - s) I`
    started at :math:`x_0`, :math:`(B_t, B_1)` is Gaussian with :math:`\\mathrm{Cov}(B_t, B_1) = \\sigma^2 t`,
    :math:`\\mathrm{Var}\\,B_1 = \\sigma^2`; conditioning on :math:`B_1 = x_1` gives mean
    :math:`x_0 + t(x_1 - x_0)` and variance :math:`\\sigma^2 t - (\\sigma^2 t)^2/\\sigma^2 = \\sigma^2 t(1-t)`:

    .. math:: X_t = (1 - t)\\,x_0 + t\\,x_1 + \\sqrt{\\varepsilon\\,t(1 - t)}\\;Z,\\qquad Z\\sim\\mathcal N(0, I)

    at one time.  Jointly over several times the paths are
    :math:`X_t = (1-t)x_0 + t x_1 + \\sigma(W_t - tW_1)` with :math:`W` a standard Wiener process simulated on
    the grid (``times`` plus t = 1): :math:`W_t - tW_1` has covariance :math:`\\min(s, t) - st`, the bridge's.

    **Why this is the Schrödinger bridge.**  The Schrödinger problem asks for the path law closest in KL to
    the reference Brownian motion (diffusion :math:`\\sigma^2`) with the given marginals at t = 0 and 1.  Its
    solution is the reference's bridges mixed over the static coupling :math:`\\pi` that minimises
    :math:`\\mathrm{KL}(\\pi\\,\\|\\,R_{01})` over the couplings of the two marginals (Léonard 2014, "A survey of
    the Schrödinger problem and some of its connections with optimal transport", arXiv:1308.0215),
    where :math:`R_{01}(x, y) \\propto a(x)\\,b(y)\\,e^{-|x - y|^2/(2\\sigma^2)}` is the reference's joint law of
    the endpoints (up to factors of x or y alone, which only add a constant over the couplings).  With
    :math:`C = |x - y|^2/2`,

    .. math:: \\sigma^2\\,\\mathrm{KL}(\\pi\\,\\|\\,R_{01}) = \\langle \\pi, C\\rangle
              + \\sigma^2\\,\\mathrm{KL}(\\pi\\,\\|\\,a b^T) + \\mathrm{const},

    the entropic OT problem of :func:`sinkhorn_log` with :math:`\\varepsilon = \\sigma^2`.  So: draw pairs
    from ``sinkhorn_log(a, b, half_sq_cost(x, y), eps)`` and join each by a Brownian bridge with
    :math:`\\sigma^2 = \\varepsilon`.  As :math:`\\varepsilon \\to 0` the noise vanishes and the plan tends to the
    OT plan: the paths become the straight lines of McCann's displacement interpolation.
    """
    rng = check_rng("brownian_bridge", rng)
    x0, x1 = np.asarray(x0, dtype=np.float64), np.asarray(x1, dtype=np.float64)
    if x0.shape != x1.shape or x0.ndim != 2:
        raise ValueError(f"brownian_bridge: x0 and x1 must both be (n, d), got {x0.shape} and {x1.shape}")
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0) or t[0] < 0 or t[-1] > 1:
        raise ValueError(f"brownian_bridge: times must be increasing in [0, 1], got {times!r}")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"brownian_bridge: eps must be >= 0, got {eps!r}")
    grid = np.append(t, 1.0) if t[-1] < 1 else t
    steps = np.diff(np.concatenate([[0.0], grid]))
    W = np.cumsum(np.sqrt(steps)[:, None, None] * rng.standard_normal((grid.size,) + x0.shape), axis=0)
    bridge = W[:t.size] - t[:, None, None] * W[-1]
    return (1 - t)[:, None, None] * x0 + t[:, None, None] * x1 + np.sqrt(eps) * bridge
