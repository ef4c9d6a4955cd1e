"""Continuous normalizing flow: the flow of an ODE, solved with ``scipy.integrate.solve_ivp``, with the
log-density by the instantaneous change of variables and gradients by the adjoint method.

References: Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural Ordinary Differential Equations",
arXiv:1806.07366 (the instantaneous change of variables, theorem 1; the adjoint method, section 2 and
appendix B); Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud 2019, "FFJORD: Free-form Continuous
Dynamics for Scalable Reversible Generative Models", arXiv:1810.01367 (Hutchinson's trace estimator with
a probe fixed per solve, section 3).
"""
import numpy as np
from scipy.integrate import solve_ivp

from .._checks import check_array, check_finite_result, unbox
from ..core.bijector import Bijector, ContextCache, split_cache
from ..perf import managed
from ..nn.odefield import ODEField

METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
TRACES = ("exact", "hutchinson")
PROBES = ("gaussian", "rademacher")


class ODESolveError(FloatingPointError):
    """``solve_ivp`` did not reach the end of the time interval (its status was not 0).  A
    ``FloatingPointError``, like :class:`~npflows.bijectors.planar_radial.InverseNotConverged`, so code that
    tolerates numerical failure point by point treats it like an overflow."""


class CNF(Bijector):
    """Continuous normalizing flow (Chen et al. 2018, arXiv:1806.07366; Grathwohl et al. 2019,
    arXiv:1810.01367) with the MLP vector field :class:`~npflows.nn.odefield.ODEField` :math:`f(z, t)`.

    **Direction.**  The ODE :math:`dz/dt = f(z, t)` carries base samples at :math:`t_0` to data at
    :math:`t_1` (FFJORD's convention).  ``forward`` is the density direction used by
    :class:`~npflows.core.NormalizingFlow`: data x is the state at :math:`t_1`, and the ODE is integrated
    *backwards* from :math:`t_1` to :math:`t_0`, giving :math:`z = z(t_0)`.  ``inverse`` integrates
    forwards from :math:`t_0` to :math:`t_1` (sampling).  Both directions are numerical, accurate to the
    solver's tolerance.

    Parameters
    ----------
    dim : int
        Event size D.
    hidden : sequence of int
        Hidden widths of the field's MLP.
    activation : {"tanh", "softplus"}
    t0, t1 : float
        The time interval (``t0 != t1``; the default [0, 1]).
    method : {"RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA"}
        ``solve_ivp``'s method, for every solve (forward, inverse and adjoint).
    rtol, atol : float
        ``solve_ivp``'s tolerances, for every solve.  The error is controlled per step; the global error
        of the solved map is of the same order for the smooth, non-stiff fields trained here.
    trace : {"exact", "hutchinson"}
        The divergence :math:`\\mathrm{tr}(\\partial f/\\partial z)` exactly (D forward-mode passes, batched),
        or Hutchinson's estimate :math:`\\epsilon^T(\\partial f/\\partial z)\\epsilon` with one probe per
        sample, fixed for the whole solve (FFJORD).
    probe : {"gaussian", "rademacher"}
        The distribution of Hutchinson's probe (both have :math:`\\mathbb E[\\epsilon\\epsilon^T] = I`).
    probe_seed : int
        With ``trace="hutchinson"`` and no ``rng`` given to ``forward``/``inverse``, the probe is drawn from
        ``numpy.random.default_rng(probe_seed)``, so the same call gives the same answer (the contract's
        determinism); training should pass a ``rng`` to draw a fresh probe every step.
    max_nfe : int
        The most evaluations of the dynamics one solve may take before it raises :class:`ODESolveError`
        (a stiff or exploding field, e.g. after a diverged update, would otherwise run for minutes or
        hours).  The default 100,000 is some 500 times what the trained flows of this package need.
        ``NormalizingFlow.loss_and_grad`` passes none (the bijector contract has no random input), so it
        would fit one fixed probe's estimate: train a Hutchinson CNF with a loop that calls
        ``forward(params, x, rng=...)`` and ``backward``, as ``train`` in ``scripts/demo_cnf.py`` does.
    context_dim : int, optional
        C: a conditional CNF, :math:`dz/dt = f(z, t; c)` with a context ``(N, C)`` per sample, constant in time
        (an extra input of the field, :class:`~npflows.nn.odefield.ODEField`; zuko's ``CNF`` conditions its
        field the same way).  See Notes, "Context".

    Notes
    -----
    **Log-determinant** (the instantaneous change of variables, Chen et al. 2018, theorem 1).  For the
    flow map :math:`\\Phi_{s\\to t}` of the ODE, Jacobi's formula (Liouville) gives
    :math:`\\frac{d}{dt}\\log|\\det\\partial z(t)/\\partial z(s)| = \\mathrm{tr}\\,J(z(t), t)`,
    :math:`J = \\partial f/\\partial z`; equivalently
    :math:`d\\log p(z(t))/dt = -\\mathrm{tr}\\,J`.  ``forward`` integrates the augmented state
    :math:`(z, \\ell)` of the whole batch at once,

    .. math:: \\frac{d}{dt}\\begin{pmatrix} z \\\\ \\ell \\end{pmatrix}
              = \\begin{pmatrix} f(z, t) \\\\ \\mathrm{tr}\\,J(z, t) \\end{pmatrix},\\qquad
              z(t_1) = x,\\ \\ell(t_1) = 0,

    from :math:`t_1` to :math:`t_0`, and returns :math:`y = z(t_0)` and
    :math:`\\mathrm{logdet} = \\ell(t_0) = \\log|\\det\\partial y/\\partial x| = -\\int_{t_0}^{t_1}
    \\mathrm{tr}\\,J\\,dt`, so that :math:`\\log p(x) = \\log p_Z(y) + \\mathrm{logdet}`.  ``inverse``
    integrates the same system from :math:`t_0` to :math:`t_1` and returns
    :math:`\\ell(t_1) = +\\int_{t_0}^{t_1}\\mathrm{tr}\\,J\\,dt = \\log|\\det\\partial x/\\partial y|`.  For an
    affine field :math:`f = Az + b` the logdet is :math:`-\\mathrm{tr}(A)(t_1 - t_0)` for every x.

    **Backward: the adjoint method** (Chen et al. 2018, section 2, appendix B).  Let
    :math:`F = (f, \\mathrm{tr}J)` be the augmented dynamics and :math:`L` the scalar whose cotangents
    are :math:`\\bar y = \\partial L/\\partial z(t_0)` and :math:`\\bar\\ell = \\partial L/\\partial\\ell(t_0)`.
    The adjoint :math:`\\mathbf a(t) = \\partial L/\\partial(z, \\ell)(t)` obeys
    :math:`d\\mathbf a/dt = -\\mathbf a^T\\partial F/\\partial(z, \\ell)`.  Since F does not depend on
    :math:`\\ell`, :math:`a_\\ell(t) = \\bar\\ell` is constant, and

    .. math:: \\frac{d a_z}{dt} = -\\Big[a_z^T\\frac{\\partial f}{\\partial z}
              + \\bar\\ell\\,\\frac{\\partial\\,\\mathrm{tr}J}{\\partial z}\\Big],\\qquad
              \\frac{dg}{dt} = -\\sum_n\\Big[a_{z,n}^T\\frac{\\partial f}{\\partial\\theta}
              + \\bar\\ell_n\\frac{\\partial\\,\\mathrm{tr}J_n}{\\partial\\theta}\\Big],

    integrated from :math:`t_0` (where :math:`a_z = \\bar y`, :math:`g = 0`) to :math:`t_1`, together
    with :math:`dz/dt = f` started from the stored output :math:`z(t_0) = y`: the trajectory is
    re-integrated, not stored, so memory is O(1) in the number of solver steps.  Then
    :math:`\\bar x = a_z(t_1)` and :math:`\\bar\\theta = g(t_1) = \\int_{t_1}^{t_0}\\mathbf a^T
    \\partial F/\\partial\\theta\\,dt` (check with :math:`f = \\theta`: :math:`y = x - \\theta(t_1 - t_0)`,
    :math:`\\bar\\theta = -(t_1 - t_0)\\bar y`, which is what the integral gives).  The brackets are one
    vector-Jacobian product of (f, tr J) with cotangents :math:`(a_z, \\bar\\ell)`,
    :meth:`ODEField.vjp <npflows.nn.odefield.ODEField.vjp>`, whose trace term is the reverse-over-forward
    derivative derived there.  The adjoint gradient is the derivative of the exact flow; it matches the
    derivative of the solved map up to the two solves' tolerances.  With ``trace="hutchinson"`` the probe
    of the forward solve (kept in the cache) is used again, so the gradient is that of the estimate.
    :meth:`inverse_backward` is the same adjoint for ``inverse`` (a solve from :math:`t_0` to :math:`t_1`):
    integrated from :math:`t_1` back to :math:`t_0`, started from the inverse's output, so ``Inverse(CNF)`` in a
    :class:`~npflows.core.PushForward` is trainable too.

    **Context** (``context_dim=C``).  For a fixed context the flow map of :math:`dz/dt = f(z, t; c)` is the
    flow map of an ODE in z alone, so the log-determinant and the adjoint for :math:`\\bar x`,
    :math:`\\bar\\theta` are those above.  The context is, like :math:`\\theta`, constant in time, but one
    row per sample: its cotangent is the same integral, :math:`\\bar c_n = \\int_{t_1}^{t_0}
    [a_{z,n}^T\\partial f/\\partial c_n + \\bar\\ell_n\\,\\partial\\mathrm{tr}J_n/\\partial c_n]\\,dt`, integrated
    as ``N * C`` more entries of the adjoint state (:math:`dg_c/dt = -[\\dots]`, from 0), whose integrand is
    the field's VJP (:meth:`ODEField.vjp <npflows.nn.odefield.ODEField.vjp>`, Notes, "Context").  The
    context rows ride in the cache, and ``inverse_backward`` receives them in ``Inverse``'s cache
    ``(y, x, context)``.

    **Cost.**  NFE (number of evaluations of the augmented dynamics) is reported for every solve:
    ``cache["nfe"]`` after ``forward``, and the ``stats`` of :meth:`inverse_with_stats` and
    :meth:`backward_with_stats`.  An evaluation costs one MLP pass plus D tangent passes (exact trace)
    or one (Hutchinson); with two hidden layers the exact trace folds into one ``(N, H) x (H, H)`` product
    (:class:`~npflows.nn.odefield.ODEField`, Notes); an adjoint evaluation adds the reverse pass.  Each
    solve creates its own work arrays (a dict local to the call, passed to every evaluation through the
    closure that ``solve_ivp`` calls), so the field's ``(N, H)`` intermediates are allocated once per solve,
    not once per evaluation, whatever glibc's thresholds (without them and without
    :func:`npflows.perf.reuse_freed_memory`, glibc returned them to the system and faulted them in again at
    every evaluation: solves took about twice the time they take after :func:`npflows.perf.keep_freed_memory`).
    Nothing is kept on the object, so one CNF can serve several solves at once.  The adjoint solve controls scipy's RMS
    error norm over its whole state, parameter gradients included, which often lets it take fewer steps than
    the forward solve (torchdiffeq offers a "seminorm" that leaves the gradients out instead; ``solve_ivp``
    has no such option).

    **Precision.**  The state is integrated in float64 whatever the input dtype (explicit solvers in
    float32 cannot reach tolerances below float32's eps); float32 in gives float32 out, rounded at the end.
    """

    def __init__(self, dim, hidden=(32, 32), activation="tanh", t0=0.0, t1=1.0, method="RK45", rtol=1e-5,
                 atol=1e-5, trace="exact", probe="gaussian", probe_seed=0, max_nfe=100_000, context_dim=None):
        try:
            self.field = ODEField(dim, hidden, activation, context_dim=context_dim)
        except ValueError as e:
            raise ValueError(f"CNF: {e}") from None
        self.context_dim = self.field.context_dim
        self.dim, self.hidden, self.activation = self.field.dim, self.field.hidden, activation
        self.t0, self.t1 = float(t0), float(t1)
        if not (np.isfinite(self.t0) and np.isfinite(self.t1)) or self.t0 == self.t1:
            raise ValueError(f"CNF: expected finite t0 != t1, got t0={t0}, t1={t1}")
        if method not in METHODS:
            raise ValueError(f"CNF: unknown solver method {method!r}; choose one of {METHODS}")
        self.method, self.rtol, self.atol = method, float(rtol), float(atol)
        if isinstance(max_nfe, bool) or not isinstance(max_nfe, (int, np.integer)) or max_nfe < 1:
            raise ValueError(f"CNF: max_nfe must be a positive integer, got {max_nfe!r}")
        self.max_nfe = int(max_nfe)
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"CNF: expected positive rtol and atol, got rtol={rtol}, atol={atol}")
        if trace not in TRACES:
            raise ValueError(f"CNF: unknown trace {trace!r}; choose one of {TRACES}")
        if probe not in PROBES:
            raise ValueError(f"CNF: unknown probe {probe!r}; choose one of {PROBES}")
        self.trace, self.probe, self.probe_seed = trace, probe, int(probe_seed)

    # ------------------------------------------------------------------ parameters
    def param_shapes(self):
        return self.field.param_shapes()

    def init(self, rng, x=None, dtype=np.float64):
        """The field's initialisation with a zero last layer: f = 0, the identity map."""
        return self.field.init(rng, dtype=x.dtype if x is not None else dtype)

    # ------------------------------------------------------------------ helpers
    def _prepare(self, params, x, xp, rng):
        if xp is not np:
            raise TypeError(f"{self.name}: forward and inverse call scipy.integrate.solve_ivp and cannot be "
                            f"traced by autograd; differentiate a fixed-step discretisation of "
                            f"{self.name}.field instead (see tests/cnf_reference.py)")
        dtype = unbox(x).dtype
        p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        return p64, np.asarray(x, dtype=np.float64), dtype, self.draw_probe(x.shape[0], rng)

    def _context64(self, context):
        """The context in float64 (the state's precision) for a conditional CNF, else None (ignored)."""
        return None if context is None or self.context_dim is None else np.asarray(context, dtype=np.float64)

    def draw_probe(self, n, rng=None):
        """Hutchinson's probe ``(n, D)`` (None for the exact trace), from ``rng`` or ``probe_seed``."""
        if self.trace == "exact":
            return None
        rng = np.random.default_rng(self.probe_seed) if rng is None else rng
        if self.probe == "gaussian":
            return rng.standard_normal((n, self.dim))
        return rng.choice(np.array([-1.0, 1.0]), size=(n, self.dim))

    def _solve(self, fun, y0, t_from, t_to, what):
        """solve_ivp from ``t_from`` to ``t_to``; only the end state is kept.  Returns ``(end state, nfe)``."""
        count = [0]

        def counted(t, s):
            count[0] += 1
            if count[0] > self.max_nfe:
                raise ODESolveError(f"{self.name}: solve_ivp ({self.method}, rtol={self.rtol:g}, atol={self.atol:g}) "
                                    f"exceeded max_nfe={self.max_nfe} evaluations integrating {what} from "
                                    f"t={t_from:g}, stopped at t={t:.6g}: the field is stiff or exploding here "
                                    f"(diverged parameters?); use an implicit method (Radau, BDF) or raise max_nfe")
            return fun(t, s)

        sol = solve_ivp(counted, (t_from, t_to), y0, method=self.method, rtol=self.rtol, atol=self.atol,
                        t_eval=[t_to])
        if sol.status != 0 or sol.y.shape[1] != 1:
            raise ODESolveError(f"{self.name}: solve_ivp ({self.method}, rtol={self.rtol:g}, atol={self.atol:g}) "
                                f"failed integrating {what} from t={t_from:g} to t={t_to:g} after {count[0]} "
                                f"evaluations: {sol.message}")
        end = sol.y[:, 0]
        check_finite_result(self.name, end, f"the solution of {what}")
        return end, count[0]

    def _integrate(self, p, z, probe, t_from, t_to, what, context=None):
        """``(z(t_to), ell(t_to), nfe)`` for the augmented state started at ``(z, 0)`` at ``t_from``."""
        n, d = z.shape
        field, work = self.field, {}            # this solve's work arrays (see the Notes, "Cost")

        def fun(t, s):
            f, q = field.f_and_trace(p, s[:n * d].reshape(n, d), t, probe, work=work, context=context)
            return np.concatenate([f.ravel(), q])

        end, nfe = self._solve(fun, np.concatenate([z.ravel(), np.zeros(n)]), t_from, t_to, what)
        return end[:n * d].reshape(n, d), end[n * d:], nfe

    # ------------------------------------------------------------------ the contract
    takes_context = True

    @managed
    def forward(self, params, x, context=None, xp=np, rng=None):
        """``(y, logdet, cache)``: ``y = z(t0)`` for ``z(t1) = x``; ``cache["nfe"]`` is the solve's NFE
        (``cache.inner["nfe"]`` when a context was given: the cache is then a ``ContextCache``).
        ``rng`` draws Hutchinson's probe (ignored for the exact trace)."""
        self._check_forward_input(x)
        self.check_params(params, unbox(x).dtype)
        context = self._check_context(context, x, "forward")
        y, ld, cache = self._forward(params, x, xp, context, rng)
        self._check_results("forward", params, x, (("output", y), ("log-determinant", ld)))
        return (y, ld, cache) if context is None else (y, ld, ContextCache(cache, context))

    def _forward(self, params, x, xp, context=None, rng=None):
        p, x64, dtype, probe = self._prepare(params, x, xp, rng)
        c64 = self._context64(context)
        y, ld, nfe = self._integrate(p, x64, probe, self.t1, self.t0, "the forward map (t1 -> t0)", c64)
        cache = {"y": y, "probe": probe, "dtype": dtype, "nfe": nfe, "context": c64}
        return y.astype(dtype), ld.astype(dtype), cache

    @managed
    def inverse_with_stats(self, params, y, context=None, xp=np, rng=None):
        """``(x, logdet, stats)`` with ``x = z(t1)`` for ``z(t0) = y`` and ``stats = {"nfe": ...}``."""
        self._check_inverse_input(y)
        self.check_params(params, unbox(y).dtype)
        context = self._check_context(context, y, "inverse")
        p, y64, dtype, probe = self._prepare(params, y, xp, rng)
        x, ld, nfe = self._integrate(p, y64, probe, self.t0, self.t1, "the inverse map (t0 -> t1)",
                                     self._context64(context))
        x, ld = x.astype(dtype), ld.astype(dtype)
        self._check_results("inverse", params, y, (("output", x), ("log-determinant", ld)))
        return x, ld, {"nfe": nfe}

    def inverse(self, params, y, context=None, xp=np, rng=None):
        """``(x, logdet)``: ``x = z(t1)`` for ``z(t0) = y``, ``logdet = log|det dx/dy|``."""
        return self.inverse_with_stats(params, y, context, xp, rng)[:2]

    def _inverse(self, params, y, xp, context=None):
        return self.inverse_with_stats(params, y, context, xp)[:2]

    @managed
    def trajectory(self, params, z, times, context=None):
        """The states ``z(t)`` at ``times`` ``(T,)`` (monotone, starting anywhere in [t0, t1]) of the ODE
        started at ``z(times[0]) = z``: shape ``(T, N, D)``, for plotting paths from base (t0) to data (t1).
        One ``solve_ivp`` call with ``t_eval``; no logdet.  ``context``: as in ``forward``."""
        check_array(self.name, z, ndim=2, size=self.dim, what="trajectory start")
        self.check_params(params, z.dtype)
        c64 = self._context64(self._check_context(context, z, "trajectory"))
        p, z64, dtype, _ = self._prepare(params, z, np, None)
        times = np.asarray(times, dtype=np.float64)
        n, d = z64.shape
        if times.ndim != 1 or times.size < 2 or not np.all(np.diff(times) > 0) and not np.all(np.diff(times) < 0):
            raise ValueError(f"{self.name}: expected at least two strictly monotone times, got {times}")
        count, work = [0], {}

        def fun(t, s):
            count[0] += 1
            if count[0] > self.max_nfe:
                raise ODESolveError(f"{self.name}: the trajectory exceeded max_nfe={self.max_nfe} evaluations "
                                    f"(stopped at t={t:.6g}); the field is stiff or exploding here")
            return self.field.forward(p, s.reshape(n, d), t, work=work, context=c64).ravel()

        sol = solve_ivp(fun, (times[0], times[-1]), z64.ravel(), method=self.method, rtol=self.rtol,
                        atol=self.atol, t_eval=times)
        if sol.status != 0:
            raise ODESolveError(f"{self.name}: solve_ivp ({self.method}) failed on the trajectory after {count[0]} "
                                f"evaluations: {sol.message}")
        return sol.y.T.reshape(times.size, n, d).astype(dtype)

    def _backward(self, params, dy, dlogdet, cache):
        """The adjoint method: ``(dx, grads, dcontext)`` (``dcontext`` None without a context); see Notes."""
        return self._adjoint_of_forward(params, dy, dlogdet, cache)[:3]

    def _adjoint_of_forward(self, params, dy, dlogdet, cache):
        cache, _ = split_cache(cache)
        return self._adjoint(params, cache["y"], dy, dlogdet, cache["probe"], cache["dtype"], self.t0, self.t1,
                             "the adjoint (t0 -> t1)", cache.get("context"))

    @managed
    def backward_with_stats(self, params, dy, dlogdet, cache):
        """``(dx, grads, stats)``: the adjoint gradient and ``stats = {"nfe": ...}`` of the adjoint solve;
        ``(dx, grads, dcontext, stats)`` for a conditional CNF's forward given a context."""
        dx, grads, dcontext, stats = self._adjoint_of_forward(params, dy, dlogdet, cache)
        return (dx, grads, stats) if dcontext is None else (dx, grads, dcontext, stats)

    @managed
    def inverse_backward(self, params, dx, dlogdet, cache):
        """VJP of ``inverse`` (so that ``Inverse(CNF)`` can be trained, e.g. in a ``PushForward`` by reverse KL):
        ``cache = (y, x)``, the inverse's input and output, as :class:`~npflows.core.Inverse` keeps it
        (``(y, x, context)`` for a conditional CNF given a context: the result is then ``(dy, grads,
        dcontext)``).  The same adjoint ODE with time reversed: from ``t1`` (where ``z = x`` and ``a_z = dx``)
        back to ``t0``.  With ``trace="hutchinson"`` the probe is redrawn from ``probe_seed``, which is the probe
        of an ``inverse`` called without ``rng`` (as ``Inverse.forward`` calls it)."""
        y, x, *rest = cache
        context = self._context64(rest[0] if rest else None)
        x64 = np.asarray(unbox(x), dtype=np.float64)
        out = self._adjoint(params, x64, dx, dlogdet, self.draw_probe(x64.shape[0]), unbox(x).dtype, self.t1,
                            self.t0, "the adjoint of the inverse (t1 -> t0)", context)
        return out[:2] if context is None else out[:3]

    def _adjoint(self, params, y, dy, dlogdet, probe, dtype, t_from, t_to, what, context=None):
        """The adjoint solve from the end state ``y`` of a solve that ended at ``t_from`` (see the Notes)."""
        n, d = y.shape
        check_array(self.name, dy, ndim=2, size=d, what="cotangent dy")
        check_array(self.name, dlogdet, ndim=1, what="cotangent dlogdet")
        if dy.shape[0] != n or dlogdet.shape[0] != n:
            raise ValueError(f"{self.name}: expected cotangents for {n} samples, got dy {dy.shape} and "
                             f"dlogdet {dlogdet.shape}")
        p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        keys = self.field.keys
        sizes = [p[k].size for k in keys]
        c = np.asarray(dlogdet, dtype=np.float64)
        c = c if np.any(c) else None
        nd, field, work = n * d, self.field, {}  # this solve's work arrays
        nc = 0 if context is None else context.size   # the context's gradient: N * C more entries, from 0

        def fun(t, s):
            out = field.vjp(p, s[:nd].reshape(n, d), t, s[nd:2 * nd].reshape(n, d), c, probe, work=work,
                            context=context)
            parts = [out[0].ravel(), -out[1].ravel()] + [-out[2][k].ravel() for k in keys]
            return np.concatenate(parts + ([-out[3].ravel()] if nc else []))

        s0 = np.concatenate([y.ravel(), np.asarray(dy, dtype=np.float64).ravel(), np.zeros(sum(sizes) + nc)])
        end, nfe = self._solve(fun, s0, t_from, t_to, what)
        dx = end[nd:2 * nd].reshape(n, d).astype(dtype)
        grads, i = {}, 2 * nd
        for k, m in zip(keys, sizes):
            grads[k] = end[i:i + m].reshape(p[k].shape).astype(dtype)
            i += m
        dcontext = end[i:i + nc].reshape(context.shape).astype(dtype) if nc else None
        return dx, grads, dcontext, {"nfe": nfe}

    def __repr__(self):
        ctx = "" if self.context_dim is None else f", context_dim={self.context_dim}"
        return (f"CNF(dim={self.dim}, hidden={self.hidden}, activation={self.activation!r}, "
                f"t=[{self.t0:g}, {self.t1:g}], method={self.method!r}, rtol={self.rtol:g}, atol={self.atol:g}, "
                f"trace={self.trace!r}{ctx})")

