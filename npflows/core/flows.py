"""Flows: a bijector plus a base distribution, in the two directions of use.

* ``NormalizingFlow(bijector, base)``: ``forward`` maps data x to the base z.  Density by the change of
  variables, trained by maximum likelihood (MAF, RealNVP, Glow, residual flows, CNF).
* ``PushForward(bijector, base)``: ``forward`` maps base samples to data.  Sampling and the density of
  its own samples are exact and differentiable: trained by reverse KL or distillation (IAF, planar, radial).

Parameters of both live in one flat dict: the bijector's keys as they are, the base's under ``"base."``.
"""
import numpy as np

from .._checks import check_array, check_finite_result, check_same_dtype
from .compose import prefixed

BASE = "base."
CHUNK_ROWS = 1024
"""Default rows per pass of :class:`NormalizingFlow`'s batch methods.  A (1024, 64) float64 activation is
512 KiB, so a chunk's working set stays in a core's L2 cache; at batch 4096 this makes the RealNVP train
step of ``scripts/bench_train.py`` about 15% faster in float64 than one pass over the whole batch (31
instead of 36 ms; its arrays spill to L3), float32 unchanged, and it caps the memory that the caches of a
large evaluation take."""


class _Flow:
    def __init__(self, bijector, base):
        if bijector.dim is not None and base.dim is not None and bijector.dim != base.dim:
            raise ValueError(f"{type(self).__name__}: bijector dim {bijector.dim} != base dim {base.dim}")
        clash = [k for k in bijector.param_shapes() if k.startswith(BASE)]
        if clash:
            raise ValueError(f"{type(self).__name__}: bijector keys may not start with 'base.': {clash}")
        self.bijector, self.base = bijector, base
        self.dim = bijector.dim if bijector.dim is not None else base.dim
        self._bkeys = [(BASE + k, k) for k in base.param_shapes()]
        self._fkeys = list(bijector.param_shapes())
        self._n_keys = len(self._fkeys) + len(self._bkeys)

    def param_shapes(self):
        return {**self.bijector.param_shapes(), **prefixed(BASE, self.base.param_shapes())}

    def split(self, params):
        """``(bijector params, base params)`` from the flow's flat dict."""
        if len(params) != self._n_keys:
            want = set(self.param_shapes())
            raise ValueError(f"{type(self).__name__}: parameter keys do not match the model: missing "
                             f"{sorted(want - set(params))}, unexpected {sorted(set(params) - want)}")
        return {k: params[k] for k in self._fkeys}, {k: params[fk] for fk, k in self._bkeys}

    def _merge(self, gb, gd):
        gb = dict(gb)
        for fk, k in self._bkeys:
            gb[fk] = gd[k]
        return gb

    def __repr__(self):
        return f"{type(self).__name__}({self.bijector!r}, {self.base!r})"


class NormalizingFlow(_Flow):
    """Density model :math:`p(x) = p_Z(f(x))\\,|\\det \\partial f/\\partial x|` with ``f`` = ``bijector.forward``.

    Parameters
    ----------
    bijector : Bijector
        Its ``forward`` maps data to the base space.
    base : distribution
        The base density :math:`p_Z`.
    chunk_rows : int or None, default :data:`CHUNK_ROWS`
        ``log_prob``, ``loss_and_grad``, ``log_likelihood_and_grad`` and ``log_prob_and_grad_x`` pass at
        most this many rows through the bijector at a time (faster for large batches, whose arrays would
        spill out of the CPU's cache, and lighter on memory); the results equal one pass over the whole
        batch up to the order of floating-point sums.  ``None``: one pass.  Where a bijector's result
        for a sample depends on the rest of its batch (an adaptive ODE solver shares one step size over
        the batch), chunks change the result within the solver's tolerance; pass ``None`` to avoid it.

    Notes
    -----
    The mean log-likelihood of a batch is
    :math:`L = \\frac1N\\sum_n [\\log p_Z(z_n) + \\log|\\det J_f(x_n)|]`, :math:`z_n = f(x_n)`.
    Its gradient is one backward pass of the bijector with the cotangents
    :math:`\\bar z_n = \\frac1N \\nabla_z \\log p_Z(z_n)` (the base's pullback) and
    :math:`\\overline{\\mathrm{logdet}}_n = \\frac1N`; the base's own parameters get their gradient
    from the base's pullback of :math:`\\frac1N`.
    """

    def __init__(self, bijector, base, chunk_rows=CHUNK_ROWS):
        super().__init__(bijector, base)
        if chunk_rows is not None and not (isinstance(chunk_rows, (int, np.integer)) and chunk_rows >= 1):
            raise ValueError(f"NormalizingFlow: chunk_rows must be a positive int or None, got {chunk_rows!r}")
        self.chunk_rows = None if chunk_rows is None else int(chunk_rows)

    def init(self, rng, x=None, dtype=np.float64):
        """Parameters for the bijector (data-dependent when ``x`` is given) and the base."""
        dtype = x.dtype if x is not None else np.dtype(dtype)
        return {**self.bijector.init(rng, x, dtype=dtype), **prefixed(BASE, self.base.init(rng, dtype=dtype))}

    def _check(self, params, x):
        check_array(type(self).__name__, x, ndim=2, size=self.dim, what="data")
        check_same_dtype(type(self).__name__, params, x.dtype)

    def _chunks(self, n):
        """Row slices of at most ``chunk_rows`` rows covering ``range(n)`` (one slice if not chunking)."""
        step = n if self.chunk_rows is None else self.chunk_rows
        return [slice(lo, min(lo + step, n)) for lo in range(0, max(n, 1), max(step, 1))]

    def log_prob(self, params, x):
        """:math:`\\log p(x)`, shape ``(N,)``.  ``-inf`` only where the base has no support; never NaN."""
        self._check(params, x)
        pb, pd = self.split(params)
        parts = []
        for s in self._chunks(x.shape[0]):
            z, logdet, _ = self.bijector.forward(pb, x[s])
            parts.append(self.base.log_prob(pd, z) + logdet)
        logp = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return check_finite_result("NormalizingFlow.log_prob", logp, "log_prob", allow_neg_inf=True)

    def log_likelihood_and_grad(self, params, x):
        """Mean log-likelihood of the batch ``x`` ``(N, D)`` and its gradient for every parameter by name."""
        return self._mean_and_grad(params, x, 1.0)

    def loss_and_grad(self, params, x):
        """The training objective: negative mean log-likelihood (nats) and its gradient."""
        return self._mean_and_grad(params, x, -1.0)

    def _mean_and_grad(self, params, x, sign):
        """``sign * mean log p(x)`` and its gradient: the sign rides on the cotangents (no negated copies).

        The batch is processed in chunks of ``chunk_rows`` rows, each a forward and a backward pass whose
        cotangents already carry the weight ``sign / N`` of the whole batch, so the gradients of the
        chunks simply add up."""
        self._check(params, x)
        pb, pd = self.split(params)
        n = x.shape[0]
        total, grads = 0.0, None
        for s in self._chunks(n):
            z, logdet, cache = self.bijector.forward(pb, x[s])
            logp = self.base.log_prob(pd, z) + logdet
            check_finite_result("NormalizingFlow", logp, "the log-likelihood")
            total += float(np.sum(logp, dtype=np.float64))
            w = np.full(logp.shape[0], sign / n, dtype=x.dtype)
            dz, gd = self.base.log_prob_backward(pd, z, w)
            _, gb = self.bijector.backward(pb, dz, w, cache)
            g = self._merge(gb, gd)
            grads = g if grads is None else {k: grads[k] + g[k] for k in grads}
        return sign * total / n, grads

    def log_prob_and_grad_x(self, params, x):
        """``(log p(x), d log p(x) / dx)``, shapes ``(N,)`` and ``(N, D)``: the density as a target for
        another flow (distillation, reverse KL).  One forward and one backward pass with cotangents
        :math:`\\bar z = \\nabla_z\\log p_Z(z)` and :math:`\\overline{\\mathrm{logdet}} = 1`, per chunk."""
        self._check(params, x)
        pb, pd = self.split(params)
        logps, dxs = [], []
        for s in self._chunks(x.shape[0]):
            z, logdet, cache = self.bijector.forward(pb, x[s])
            logp = check_finite_result("NormalizingFlow.log_prob_and_grad_x", self.base.log_prob(pd, z) + logdet,
                                       "log_prob")
            ones = np.ones(logp.shape[0], dtype=x.dtype)
            dz, _ = self.base.log_prob_backward(pd, z, ones)
            dx, _ = self.bijector.backward(pb, dz, ones, cache)
            logps.append(logp)
            dxs.append(dx)
        if len(logps) == 1:
            return logps[0], dxs[0]
        return np.concatenate(logps), np.concatenate(dxs)

    def sample(self, params, n, rng):
        """``n`` samples :math:`x = f^{-1}(z)`, :math:`z \\sim p_Z`, in the parameters' dtype."""
        pb, pd = self.split(params)
        dtype = next(iter(params.values())).dtype if params else np.float64
        z = self.base.sample(pd, n, rng, dtype)
        return self.bijector.inverse(pb, z)[0]


class PushForward(_Flow):
    """Sampler :math:`x = f(z)`, :math:`z \\sim p_Z`, with ``f`` = ``bijector.forward``.

    Notes
    -----
    The density of its own samples is exact in one pass:
    :math:`\\log q(x) = \\log p_Z(z) - \\log|\\det J_f(z)|`.
    For an unnormalised target :math:`\\log\\tilde p`, the reverse-KL objective

    .. math:: \\mathcal L = \\mathbb E_{z}[\\log q(f(z)) - \\log \\tilde p(f(z))]

    is differentiated through the samples (reparameterisation, :math:`z = g(\\phi, \\epsilon)`):
    the bijector gets the cotangents :math:`\\bar x = -\\frac1N\\nabla\\log\\tilde p(x)`,
    :math:`\\overline{\\mathrm{logdet}} = -\\frac1N`; the cotangent that comes back on ``z`` is joined by
    :math:`\\frac1N\\nabla_z\\log p_Z(z)` and pulled through the base's sampler to its parameters,
    which also get the direct term of :math:`\\frac1N\\partial\\log p_Z/\\partial\\phi`.
    ``L`` estimates :math:`\\mathrm{KL}(q\\,\\|\\,p) - \\log Z` where ``Z`` normalises the target.
    """

    def init(self, rng, dtype=np.float64):
        dtype = np.dtype(dtype)
        return {**self.bijector.init(rng, dtype=dtype), **prefixed(BASE, self.base.init(rng, dtype=dtype))}

    def _dtype(self, params):
        return next(iter(params.values())).dtype if params else np.dtype(np.float64)

    def sample_and_log_prob(self, params, n, rng):
        """``(x, log q(x))`` for ``n`` fresh samples; shapes ``(n, D)`` and ``(n,)``."""
        x, logq, _ = self._sample(params, n, rng)
        return x, logq

    def _sample(self, params, n, rng):
        pb, pd = self.split(params)
        z, scache = self.base.rsample(pd, n, rng, self._dtype(params))
        x, logdet, cache = self.bijector.forward(pb, z)
        logq = check_finite_result("PushForward.sample_and_log_prob", self.base.log_prob(pd, z) - logdet, "log q")
        return x, logq, (pb, pd, z, scache, cache)

    def log_prob(self, params, x):
        """Density of an arbitrary point: needs the bijector's inverse (sequential or numerical)."""
        check_array(type(self).__name__, x, ndim=2, size=self.dim, what="point")
        check_same_dtype(type(self).__name__, params, x.dtype)
        pb, pd = self.split(params)
        z, logdet_inv = self.bijector.inverse(pb, x)
        return check_finite_result("PushForward.log_prob", self.base.log_prob(pd, z) + logdet_inv, "log_prob",
                                   allow_neg_inf=True)

    def reverse_kl_and_grad(self, params, target, n, rng):
        """Monte Carlo reverse-KL objective and its gradient.

        Parameters
        ----------
        target : callable
            ``target(x) -> (log_p, grad_log_p)`` with shapes ``(N,)`` and ``(N, D)``: the unnormalised
            target log-density and its gradient in x.
        n : int
            Number of samples.

        Returns
        -------
        value : float
            :math:`\\frac1N\\sum_n [\\log q(x_n) - \\log\\tilde p(x_n)]`.
        grads : dict
            Gradient of ``value`` for every parameter by name.
        """
        x, logq, (pb, pd, z, scache, cache) = self._sample(params, n, rng)
        logp, glogp = target(x)
        logp, glogp = np.asarray(logp), np.asarray(glogp)
        if logp.shape != (n,) or glogp.shape != x.shape:
            raise ValueError(f"PushForward.reverse_kl_and_grad: target(x) must return log p of shape {(n,)} and "
                             f"its gradient of shape {x.shape}; got {logp.shape} and {glogp.shape}")
        check_finite_result("PushForward.reverse_kl_and_grad", glogp, "the target's gradient")
        value = check_finite_result("PushForward.reverse_kl_and_grad", np.mean(logq - logp), "the objective")
        w = np.full(n, 1.0 / n, dtype=x.dtype)
        dz, gb = self.bijector.backward(pb, -w[:, None] * glogp, -w, cache)
        dz_base, gd = self.base.log_prob_backward(pd, z, w)
        gs = self.base.rsample_backward(pd, dz + dz_base, scache)
        gd = {k: gd.get(k, 0) + gs.get(k, 0) for k in self.base.param_shapes()}
        return float(value), self._merge(gb, gd)
