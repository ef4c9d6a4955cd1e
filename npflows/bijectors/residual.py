"""Invertible residual blocks (i-ResNet) and their log-determinant estimators (Residual Flows).

References: Behrmann, Grathwohl, Chen, Duvenaud & Jacobsen 2019, "Invertible Residual Networks",
arXiv:1811.00995 (the block, its fixed-point inverse, the truncated power series of the logdet with
Hutchinson's trace estimator); Chen, Behrmann, Duvenaud & Jacobsen 2019, "Residual Flows for Invertible
Generative Modeling", arXiv:1906.02735 (the Russian-roulette estimator, eq. 6-7; the Neumann-series gradient,
eq. 8; LipSwish; ActNorm between blocks).
"""
import math

import numpy as np

from .._checks import QUIET, check_rng, unbox
from ..core.bijector import Bijector
from ..core.compose import Sequential
from ..nn.lipschitz import LIP_ACTIVATIONS, SPECTRAL, LipschitzMLP
from ..perf import managed
from .elementwise import ActNorm
from .planar_radial import InverseNotConverged

LOGDETS = ("exact", "series", "roulette")
GRADS = ("backprop", "neumann")
PROBES = ("gaussian", "rademacher")


class ResidualBlock(Bijector):
    """The i-ResNet block :math:`y = x + g(x)` (Behrmann et al. 2019, arXiv:1811.00995), ``g`` a
    :class:`~npflows.nn.lipschitz.LipschitzMLP` ``D -> hidden -> D`` whose weights are spectrally normalised
    so that :math:`\\mathrm{Lip}(g) \\le c < 1`.  ``forward`` is the block; ``inverse`` solves
    :math:`x + g(x) = y` by fixed-point iteration.  The log-determinant is exact (small D) or one of the
    stochastic estimators of Residual Flows (Chen et al. 2019, arXiv:1906.02735).

    Parameters ``net.V0, net.b0, net.V1, ...``: the raw weights :math:`V_l` ``(in, out)`` and biases.

    Parameters
    ----------
    dim : int
        Event size D.
    hidden : sequence of int
        Hidden widths of g (default ``(64, 64)``; may be empty: g affine).
    activation : {"lipswish", "elu", "tanh"}
        1-Lipschitz activations with a continuous derivative (the logdet's gradient needs :math:`\\phi''`):
        LipSwish :math:`z\\,\\mathrm{sigmoid}(z)/1.1` (Chen et al. 2019, smooth), ELU (its
        :math:`\\phi''` jumps at 0, so the logdet's gradient does too: Chen et al.'s reason for LipSwish), tanh.
    lipschitz : float
        The coefficient c: every effective weight is :math:`W = V\\min(1, c/\\sigma(V))`.  Default 0.9.  The
        guarantees (invertibility, convergence of the inverse and of the series) need c < 1; c >= 1 is
        accepted so that their failure can be shown, and the inverse then raises :class:`InverseNotConverged`
        where it does not converge.
    spectral : {"exact", "power"}
        :math:`\\sigma(V)` by SVD, or ``n_power_iter`` steps of power iteration from a fixed start vector
        (stateless, with its own backward through the unrolled iteration); see
        :class:`~npflows.nn.lipschitz.LipschitzMLP`.
    n_power_iter : int
        Power-iteration steps (default 20).  Measured over 200 random Gaussian matrices of each shape from 2x64
        to 128x128, the true norm of the normalised weight exceeded c by at most 9% (99th percentile 5%, median
        0.2%) at 20 steps, by up to 19% at 10 and 25% at 5: a stateless iteration needs more steps than
        Behrmann et al.'s, which carries its vector from one training step to the next.
    logdet : {"exact", "series", "roulette"}
        * ``"exact"``: :math:`\\log\\det(I + J_g)` from the full Jacobian (D tangent passes, batched) and
          ``slogdet``: exact, costs D passes, for small D;
        * ``"series"``: :math:`\\sum_{k=1}^{n}(-1)^{k+1}\\mathrm{tr}(J_g^k)/k` (``n = n_terms``) with Hutchinson's
          estimator :math:`\\mathrm{tr}(A) \\approx v^TAv` (Behrmann et al.): biased by the truncation;
        * ``"roulette"``: the unbiased Russian-roulette estimator (Chen et al., eq. 6-7): ``n_exact`` plus a
          Geometric(``roulette_p``) number of terms, term k weighted by :math:`1/P(N \\ge k)`.
    n_terms : int
        Terms of the truncated series (``"series"``; default 10).
    n_probes : int
        Hutchinson probes per sample (averaged; default 1).
    probe : {"gaussian", "rademacher"}
        The probes' distribution (both have :math:`E[vv^T] = I`).
    n_exact : int
        Roulette: terms always computed beyond the first (default 2; see the Notes for the exact law).
    roulette_p : float
        Roulette: the success probability p in (0, 1) of the geometric number of extra terms (default 0.5).
    grad : {"backprop", "neumann"}
        The logdet's gradient for ``"series"``/``"roulette"``: ``"backprop"`` is the exact derivative of the
        forward's estimate at the drawn probes (it keeps every term's tangents: memory O(n)); ``"neumann"`` is
        the Neumann-series estimator of Chen et al. (eq. 8), an unbiased estimate of the gradient of the
        estimator's expectation that keeps O(1) Jacobian products.  (``"exact"`` has its exact backward.)
    inv_tol : float
        The inverse stops when the Banach a-posteriori bound :math:`\\frac{c}{1-c}\\lVert x_{k+1} - x_k\\rVert`
        on the error of each sample is at most ``inv_tol * max(1, ||x||)`` (2-norms), or when the step is at the
        dtype's rounding level (:math:`32\\,\\epsilon\\max(1, \\lVert x\\rVert)`; this binds in float32).
        Default 1e-10.
    inv_maxiter : int
        The inverse's iteration budget (default 5000): :class:`InverseNotConverged` past it.
    probe_seed : int
        Without an ``rng`` given to ``forward``/``inverse``, the estimators draw from
        ``numpy.random.default_rng(probe_seed)``: the same call gives the same answer.  Training should pass
        an ``rng`` to draw fresh probes (and a fresh roulette length) every step.
    probes : array ``(n_probes, D)``, optional
        Fixed probe vectors, shared by every sample of every call, instead of drawn ones: a case that another
        implementation reproduces exactly (the golden cases store them).  ``n_probes`` is then their number.
    roulette_n : int, optional
        A fixed roulette length N (the number of terms, ``N >= n_exact + 1``) instead of a drawn one.

    Notes
    -----
    **The map.**  :math:`y = x + g(x)`, per sample, with Jacobian :math:`I + J_g(x)`.  Since
    :math:`\\mathrm{Lip}(g) \\le c < 1`, :math:`\\lVert J_g\\rVert_2 \\le c`, every eigenvalue :math:`\\lambda` of
    :math:`J_g` has :math:`|\\lambda| \\le c`, so the eigenvalues :math:`1 + \\lambda` of :math:`I + J_g` have
    positive real part and :math:`\\det(I + J_g) > 0` (complex ones come in conjugate pairs): the logdet is
    :math:`\\log\\det(I + J_g)` with no absolute value, and the map is a bijection (Behrmann et al., thm. 1).

    **Inverse** (Behrmann et al., alg. 1).  :math:`x = y - g(x)` is the fixed point of the contraction
    :math:`T(x) = y - g(x)` (Lipschitz c), so :math:`x_{k+1} = T(x_k)` from :math:`x_0 = y` converges
    (Banach), :math:`\\lVert x_k - x^*\\rVert \\le \\frac{c}{1-c}\\lVert x_k - x_{k-1}\\rVert` and
    :math:`\\lVert x_k - x^*\\rVert \\le c^k\\lVert g(y)\\rVert/(1-c)`: the iteration count grows like
    :math:`\\log(\\mathrm{tol})/\\log c`, about 220 steps for 1e-10 at c = 0.9, 2300 at c = 0.99 (the trained
    block's own Lipschitz constant, often well below c, sets the actual rate).  The count is reported by
    :meth:`inverse_with_stats` as ``{"n_iter": ...}`` (as the CNF reports its NFE).  The inverse's logdet is
    minus the forward logdet at the solved x (with the same estimator and probes).

    **Exact log-determinant.**  The D tangent passes with :math:`T = I` give :math:`M = J_g^T` per sample
    (row k is :math:`J_g e_k`), and :math:`\\ell = \\log\\det(I + M)` by an LU factorisation (``slogdet``).
    Its backward: :math:`d\\ell = \\mathrm{tr}((I + M)^{-1}dM)`, so the cotangent of M is
    :math:`\\bar\\ell\\,(I + M)^{-T}` per sample; it is pulled back through the tangent passes and the network
    by the reverse-over-forward pass of :meth:`LipschitzMLP.reverse <npflows.nn.lipschitz.LipschitzMLP.reverse>`
    (its Notes derive each line: the logdet reaches x and the biases through :math:`\\phi''`), together
    with the output cotangent :math:`\\bar y` (which reaches x directly, :math:`\\bar x = \\bar y + \\dots`,
    and g's parameters through :math:`\\bar g = \\bar y`).

    **Power series** (Behrmann et al., thm. 3).  For :math:`\\lVert J\\rVert_2 < 1`,
    :math:`\\log\\det(I + J) = \\mathrm{tr}\\log(I + J) = \\sum_{k\\ge1}(-1)^{k+1}\\mathrm{tr}(J^k)/k`, and
    Hutchinson: :math:`\\mathrm{tr}(J^k) = E_v[v^TJ^kv]` for :math:`E[vv^T] = I`.  ``forward`` computes
    :math:`w_k = J_g w_{k-1}`, :math:`w_0 = v`, by tangent passes and

    .. math:: \\hat\\ell = \\frac1P\\sum_{p=1}^{P}\\sum_{k=1}^{n}\\frac{(-1)^{k+1}}{k}\\,\\omega_k\\,v_p^Tw_{k,p},

    with :math:`\\omega_k = 1` (series).  Its truncation error is at most
    :math:`D\\sum_{k>n}c^k/k \\le Dc^{n+1}/((n+1)(1-c))` in expectation.

    **Russian roulette** (Chen et al., eq. 6-7).  Draw :math:`m \\sim \\mathrm{Geometric}(p)` on
    :math:`\\{1, 2, \\dots\\}` (NumPy's ``Generator.geometric``), take :math:`N = n_{exact} + m` terms and weight
    term k by :math:`\\omega_k = 1/P(N \\ge k)`, which is 1 for :math:`k \\le n_{exact} + 1` and
    :math:`(1-p)^{-(k - n_{exact} - 1)}` beyond (the law of Residual Flows' code).  Then
    :math:`E_N[\\sum_{k=1}^N t_k/P(N\\ge k)] = \\sum_k t_k P(N\\ge k)/P(N\\ge k) = \\sum_{k\\ge1}t_k`: unbiased.
    Its variance is finite when :math:`\\sum_k t_k^2/P(N \\ge k) < \\infty`, i.e. roughly when
    :math:`\\rho(J_g)^2 < 1 - p` (at p = 0.5: a spectral radius below 0.71; a block with c = 0.9 and
    :math:`\\rho` near c has a heavy-tailed estimate).  One N is drawn per call (shared by the batch);
    the probes are drawn first, ``(N_batch, P, D)``, then m.

    **Backward of an estimate, "backprop".**  Exact derivative of :math:`\\hat\\ell` at the drawn
    :math:`v, N`: the cotangent of :math:`w_k` is :math:`\\bar w_k = \\bar\\ell\\,\\frac{(-1)^{k+1}\\omega_k}{kP}v
    + \\bar T_{k+1}`, where :math:`\\bar T_{k+1}` is the cotangent that the tangent pass of step k+1 sends back
    to its input :math:`w_k`; for k = n..1 the reverse-over-forward pass of step k (tangent input
    :math:`w_{k-1}`, output cotangent :math:`\\bar w_k`) adds its share to :math:`\\bar x` and to every
    :math:`\\bar W_l, \\bar b_l` and returns :math:`\\bar T_k`.  The cache keeps every step's tangents (as a
    tape, the way an autodiff graph would): memory O(n N P H).

    **Neumann gradient** (Chen et al., eq. 8).  :math:`\\partial_\\theta\\log\\det(I + J) =
    \\mathrm{tr}((I + J)^{-1}\\partial_\\theta J)` and :math:`(I + J)^{-1} = \\sum_{k\\ge0}(-J)^k`, so

    .. math:: \\partial_\\theta\\log\\det(I + J) = E_{N,v}\\Big[\\Big(\\sum_{k=0}^{N}\\frac{(-1)^k}{P(N\\ge k)}
              v^TJ^k\\Big)\\,\\partial_\\theta J\\,v\\Big].

    ``forward`` computes :math:`u_k^T = v^TJ^k` by vector-Jacobian products (:math:`u_k = J^Tu_{k-1}`,
    :meth:`~npflows.nn.lipschitz.LipschitzMLP.vjp_linear`), uses :math:`v^Tu_k = v^TJ^kv` for the estimate,
    and keeps only :math:`\\bar u = \\sum_k(-1)^k\\omega'_k u_k` (:math:`\\omega'_k = 1/P(N\\ge k)`, k = 0..N
    for roulette; 1 for k = 0..n-1 for the series, whose expected gradient that is).  ``backward`` is one
    reverse-over-forward pass of the surrogate :math:`\\frac{\\bar\\ell}{P}\\bar u^TJ_g(x)v` with
    :math:`\\bar u, v` held constant: its x-gradient and parameter gradients are unbiased estimates of those
    of :math:`\\log\\det(I + J_g)` (roulette) or of the truncated series' expectation.  The memory is that of
    one Jacobian product, whatever N: the saving Residual Flows exists for (``tests/test_residual.py``
    and ``scripts/bench_residual_logdet.py`` measure it).

    **Cost.**  One network pass for y; ``"exact"``: D tangent passes and a D x D LU per sample;
    ``"series"``/``"roulette"``: n (or N) tangent passes of P probes.  Backward: about twice that.
    """

    def __init__(self, dim, hidden=(64, 64), activation="lipswish", lipschitz=0.9, spectral="exact",
                 n_power_iter=20, logdet="exact", n_terms=10, n_probes=1, probe="gaussian", n_exact=2,
                 roulette_p=0.5, grad="backprop", inv_tol=1e-10, inv_maxiter=5000, probe_seed=0, probes=None,
                 roulette_n=None):
        self.dim = int(dim)
        if self.dim < 1:
            raise ValueError(f"ResidualBlock: dim must be at least 1, got {dim!r}")
        self.hidden = tuple(int(h) for h in hidden)
        if activation not in LIP_ACTIVATIONS:
            raise ValueError(f"ResidualBlock: unknown activation {activation!r}; choose one of {LIP_ACTIVATIONS}")
        if spectral not in SPECTRAL:
            raise ValueError(f"ResidualBlock: unknown spectral {spectral!r}; choose one of {SPECTRAL}")
        if logdet not in LOGDETS:
            raise ValueError(f"ResidualBlock: unknown logdet {logdet!r}; choose one of {LOGDETS}")
        if grad not in GRADS:
            raise ValueError(f"ResidualBlock: unknown grad {grad!r}; choose one of {GRADS}")
        if grad == "neumann" and logdet == "exact":
            raise ValueError("ResidualBlock: grad='neumann' estimates the gradient of a stochastic logdet; "
                             "use it with logdet='series' or 'roulette' (logdet='exact' has its exact backward)")
        if probe not in PROBES:
            raise ValueError(f"ResidualBlock: unknown probe {probe!r}; choose one of {PROBES}")
        self.net = LipschitzMLP(self.dim, self.hidden, activation, lipschitz, spectral, n_power_iter, prefix="net.")
        self.activation, self.lipschitz, self.spectral = activation, self.net.lipschitz, spectral
        self.n_power_iter = self.net.n_power_iter
        self.logdet, self.grad, self.probe = logdet, grad, probe
        self.n_terms = _count("n_terms", n_terms, 1)
        self.n_probes = _count("n_probes", n_probes, 1)
        self.n_exact = _count("n_exact", n_exact, 0)
        p = float(roulette_p)
        if not 0.0 < p < 1.0:
            raise ValueError(f"ResidualBlock: roulette_p must lie in (0, 1), got {roulette_p!r}")
        self.roulette_p = p
        tol = float(inv_tol)
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"ResidualBlock: inv_tol must be a finite number > 0, got {inv_tol!r}")
        self.inv_tol = tol
        self.inv_maxiter = _count("inv_maxiter", inv_maxiter, 1)
        self.probe_seed = int(probe_seed)
        # the two fixed draws are attributes only when given (a description then carries them)
        if probes is not None:
            pr = np.array(probes, dtype=np.float64)
            if pr.ndim != 2 or pr.shape[1] != self.dim or pr.shape[0] < 1 or not np.all(np.isfinite(pr)):
                raise ValueError(f"ResidualBlock: probes must be a finite array (n_probes, {self.dim}), got shape "
                                 f"{pr.shape}")
            pr.flags.writeable = False
            self.probes = pr
            self.n_probes = pr.shape[0]
        if roulette_n is not None:
            self.roulette_n = _count("roulette_n", roulette_n, self.n_exact + 1)

    # ------------------------------------------------------------------ parameters
    def param_shapes(self):
        return self.net.param_shapes()

    def init(self, rng, x=None, dtype=np.float64):
        return self.net.init(rng, dtype=x.dtype if x is not None else dtype)

    @property
    def fixed_probes(self):
        return self.__dict__.get("probes")

    @property
    def fixed_roulette_n(self):
        return self.__dict__.get("roulette_n")

    # ------------------------------------------------------------------ randomness
    def term_weights(self, n):
        """:math:`\\omega_k = 1/P(N \\ge k)` for k = 0..n (all 1 for the series)."""
        k = np.arange(n + 1)
        if self.logdet != "roulette":
            return np.ones(n + 1)
        return (1.0 - self.roulette_p) ** -np.maximum(k - self.n_exact - 1, 0).astype(np.float64)

    def draw(self, n_rows, rng=None):
        """``(probes, n)``: the probes ``(n_rows, P, D)`` (or the fixed ``(1, P, D)``) and the number of terms,
        for the estimators (``(None, None)`` for the exact logdet).  From ``rng``, else
        ``default_rng(probe_seed)``; probes first, then roulette's geometric draw."""
        if self.logdet == "exact":
            return None, None
        if rng is None:
            rng = np.random.default_rng(self.probe_seed)
        fixed = self.fixed_probes
        if fixed is not None:
            V = fixed[None]
        elif self.probe == "gaussian":
            V = rng.standard_normal((n_rows, self.n_probes, self.dim))
        else:
            V = rng.choice(np.array([-1.0, 1.0]), size=(n_rows, self.n_probes, self.dim))
        if self.logdet == "series":
            n = self.n_terms
        elif self.fixed_roulette_n is not None:
            n = self.fixed_roulette_n
        else:
            n = self.n_exact + int(rng.geometric(self.roulette_p))
        return V, n

    # ------------------------------------------------------------------ the contract
    @managed
    def forward(self, params, x, context=None, xp=np, rng=None):
        """``(y, logdet, cache)`` for ``y = x + g(x)``; ``rng`` draws the estimators' probes (and roulette's
        length); without it they come from ``probe_seed``.  ``context`` is accepted and ignored (the block has
        no conditioner), as by every unconditional layer."""
        if rng is not None:
            check_rng(self.name, rng)
        self._check_forward_input(x)
        self.check_params(params, unbox(x).dtype)
        if context is not None:
            context = self._check_context(context, x, "forward")
        with np.errstate(**QUIET):
            y, ld, cache = self._forward(params, x, xp, rng)
            self._check_results("forward", params, x, (("output", y), ("log-determinant", ld)))
        if context is not None:
            from ..core.bijector import ContextCache
            cache = ContextCache(cache, context)
        return y, ld, cache

    def _forward(self, params, x, xp, rng=None):
        net = self.net
        Ws, bs, norms = net.effective(params, xp)
        g, hs, acts, d1s = net.primal(Ws, bs, x, xp)
        ld, extra = self._logdet_of(Ws, d1s, x, xp, rng)
        cache = {"x": x, "Ws": Ws, "norms": norms, "hs": hs, "acts": acts, "d1s": d1s, **extra}
        return x + g, ld, cache

    def _logdet_of(self, Ws, d1s, x, xp, rng):
        """``(logdet, cache entries)`` at the primal point (``d1s``) with the configured estimator."""
        net, n_rows, D = self.net, x.shape[0], self.dim
        dtype = unbox(x).dtype
        if self.logdet == "exact":
            T = np.eye(D, dtype=dtype)[None]
            hd, ads = net.tangents(Ws, d1s, T, xp)
            M = hd[-1]
            A = xp.eye(D, dtype=dtype)[None] + M
            if M.shape[0] != n_rows:             # g affine: one Jacobian for the batch
                A = A + xp.zeros((n_rows, 1, 1), dtype=dtype)
            ld = xp.linalg.slogdet(A)[1]
            return ld, {"T": T, "hd": hd, "ads": ads, "A": A}
        V, n = self.draw(n_rows, rng)
        V = V.astype(dtype)
        w = self.term_weights(n)
        P = V.shape[1]
        coef = [float((-1.0) ** (k + 1) * w[k] / (k * P)) if k else 0.0 for k in range(n + 1)]
        ld = xp.zeros(n_rows, dtype=dtype)
        if self.grad == "neumann":
            u = V + xp.zeros((n_rows, 1, 1), dtype=dtype)
            kmax = n if self.logdet == "roulette" else n - 1
            acc = u
            for k in range(1, n + 1):
                u = net.vjp_linear(Ws, d1s, u, xp)
                ld = ld + coef[k] * xp.sum(xp.sum(u * V, axis=2), axis=1)
                if k <= kmax:
                    acc = acc + float((-1.0) ** k * w[k]) * u
            return ld, {"V": V, "n": n, "u_bar": acc}
        tape, wk = [], V
        for k in range(1, n + 1):
            hd, ads = net.tangents(Ws, d1s, wk, xp)
            tape.append((wk, hd, ads))
            wk = hd[-1]
            ld = ld + coef[k] * xp.sum(xp.sum(wk * V, axis=2), axis=1)
        return ld, {"V": V, "n": n, "coef": coef, "tape": tape}

    def _backward(self, params, dy, dlogdet, cache):
        net = self.net
        x, Ws, hs, acts, d1s = cache["x"], cache["Ws"], cache["hs"], cache["acts"], cache["d1s"]
        c = dlogdet
        Wb_total = bb_total = None
        dx = dy.copy()

        def add(xb, Wb, bb):
            nonlocal dx, Wb_total, bb_total
            dx = dx + xb
            Wb_total = Wb if Wb_total is None else [a + b for a, b in zip(Wb_total, Wb)]
            bb_total = bb if bb_total is None else [a + b for a, b in zip(bb_total, bb)]

        if self.logdet == "exact":
            A = cache["A"]
            hd_bar = c[:, None, None] * np.swapaxes(np.linalg.inv(A), 1, 2)
            xb, _, Wb, bb = net.reverse(Ws, x, hs, acts, d1s, g_bar=dy, T=cache["T"], hd=cache["hd"],
                                        ads=cache["ads"], hd_bar=hd_bar)
            add(xb, Wb, bb)
        elif self.grad == "neumann":
            V = cache["V"]
            P = V.shape[1]
            hd, ads = net.tangents(Ws, d1s, V, np)
            hd_bar = (c / P)[:, None, None] * cache["u_bar"]
            xb, _, Wb, bb = net.reverse(Ws, x, hs, acts, d1s, g_bar=dy, T=V, hd=hd, ads=ads, hd_bar=hd_bar)
            add(xb, Wb, bb)
        else:
            V, coef, tape = cache["V"], cache["coef"], cache["tape"]
            n = len(tape)
            T_bar = None
            for k in range(n, 0, -1):
                wprev, hd, ads = tape[k - 1]
                w_bar = (coef[k] * c)[:, None, None] * V
                if T_bar is not None:
                    w_bar = w_bar + T_bar
                xb, T_bar, Wb, bb = net.reverse(Ws, x, hs, acts, d1s, g_bar=dy if k == n else None, T=wprev,
                                                hd=hd, ads=ads, hd_bar=w_bar, need_T_bar=k > 1)
                add(xb, Wb, bb)
        grads = net.weights_backward(params, cache["norms"], Wb_total)
        for l in range(net.n_layers):
            grads[net.b[l]] = bb_total[l]
        return dx, {k: grads[k] for k in self.param_shapes()}

    # ------------------------------------------------------------------ inverse
    @managed
    def inverse_with_stats(self, params, y, context=None, xp=np, rng=None):
        """``(x, logdet, {"n_iter": k})``: the fixed-point solution of ``x + g(x) = y``, ``log|det dx/dy|``
        (minus the forward logdet at x, same estimator; ``rng`` as in ``forward``), and the iteration count."""
        if rng is not None:
            check_rng(self.name, rng)
        self._check_inverse_input(y)
        self.check_params(params, unbox(y).dtype)
        if context is not None:
            self._check_context(context, y, "inverse")
        with np.errstate(**QUIET):
            x, ld, stats = self._solve(params, y, xp, rng)
            self._check_results("inverse", params, y, (("output", x), ("log-determinant", ld)))
        return x, ld, stats

    @managed
    def inverse(self, params, y, context=None, xp=np, rng=None):
        """``(x, logdet)`` with ``x + g(x) = y`` solved to ``inv_tol``; see :meth:`inverse_with_stats`."""
        return self.inverse_with_stats(params, y, context, xp, rng)[:2]

    def _inverse(self, params, y, xp):
        x, ld, _ = self._solve(params, y, xp, None)
        return x, ld

    def _solve(self, params, y, xp, rng):
        net = self.net
        Ws, bs, norms = net.effective(params, xp)
        y_raw = unbox(y)
        dtype = y_raw.dtype
        c = self.lipschitz
        factor = c / (1.0 - c) if c < 1 else 1.0
        floor = 32.0 * float(np.finfo(dtype).eps)
        x = y
        n_iter = 0
        n = y_raw.shape[0]
        for n_iter in range(1, self.inv_maxiter + 1):
            x_new = y - net.output(Ws, bs, x, xp)
            xn, xo = unbox(x_new).astype(np.float64), unbox(x).astype(np.float64)
            step, size = _norms(xn - xo), np.maximum(1.0, _norms(xn))
            x = x_new
            done = ((factor * step <= self.inv_tol * size) | (step <= floor * size)) & np.isfinite(size)
            if not np.all(np.isfinite(xn)):
                idx = np.flatnonzero(~done)
                raise InverseNotConverged(
                    f"{self.name} inverse: the fixed-point iteration x <- y - g(x) diverged (the iterate overflows "
                    f"{dtype}) at iteration {n_iter}, with {idx.size} of {n} points not converged (indices "
                    f"{idx[:10].tolist()}); lipschitz={c:g}" + ("" if c < 1 else " >= 1: g need not be a contraction"))
            if done.all():
                break
        else:
            idx = np.flatnonzero(~done)
            raise InverseNotConverged(
                f"{self.name} inverse: the fixed-point iteration x <- y - g(x) did not converge for {idx.size} of "
                f"{n} points (indices {idx[:10].tolist()}) within inv_maxiter={self.inv_maxiter} iterations "
                f"(inv_tol {self.inv_tol:g}; the last steps {np.array2string(step[idx[:5]], precision=3)}); "
                + (f"lipschitz={c:g} >= 1: g need not be a contraction" if c >= 1 else
                   f"at lipschitz={c:g} about log(tol)/log(c) = {math.log(self.inv_tol) / math.log(c):.0f} "
                   f"iterations should do; raise inv_maxiter"))
        g, hs, acts, d1s = net.primal(Ws, bs, x, xp)
        ld, _ = self._logdet_of(Ws, d1s, x, xp, rng)
        return x, -ld, {"n_iter": n_iter}

    # ------------------------------------------------------------------ diagnosis
    def _explain(self, direction, params, x):
        if x is None:
            return None
        xr = np.asarray(unbox(x), dtype=np.float64)
        big = float(np.max(np.abs(xr))) if xr.size else 0.0
        dt = unbox(x).dtype
        return (f"the {'input' if direction == 'forward' else 'inverse input'} reaches {big:.3g} and the "
                f"block's pre-activations (at most |x| times ||W|| <= {self.lipschitz:g} per layer, plus the "
                f"biases) or their products overflow {dt}; rescale the data")

    def __repr__(self):
        return (f"ResidualBlock(dim={self.dim}, hidden={self.hidden}, activation={self.activation!r}, "
                f"lipschitz={self.lipschitz:g}, spectral={self.spectral!r}, logdet={self.logdet!r})")


def _norms(a):
    """Row-wise 2-norms of ``a`` ``(N, D)`` without overflow of the squares (scaled by each row's largest
    entry); inf where the row is not finite."""
    m = np.max(np.abs(a), axis=1) if a.shape[1] else np.zeros(a.shape[0])
    safe = np.where((m > 0) & np.isfinite(m), m, 1.0)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(m), safe * np.sqrt(np.sum((a / safe[:, None]) ** 2, axis=1)), np.inf)


def _count(what, n, minimum):
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"ResidualBlock: {what} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def residual_flow(dim, n_blocks=4, hidden=(64, 64), actnorm=True, **block_kw):
    """A residual flow (Chen et al. 2019): ``ActNorm, (ResidualBlock, ActNorm) x n_blocks`` as in Residual
    Flows' toy experiments (without ActNorm: the blocks alone).  ``block_kw`` go to every
    :class:`ResidualBlock` (``activation``, ``lipschitz``, ``spectral``, ``logdet``, ...).  With data,
    ``init(rng, x)`` sets every ActNorm from the activations it sees."""
    layers = [ActNorm(dim)] if actnorm else []
    for _ in range(int(n_blocks)):
        layers.append(ResidualBlock(dim, hidden=hidden, **block_kw))
        if actnorm:
            layers.append(ActNorm(dim))
    return Sequential(layers)
