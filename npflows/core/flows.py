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

    Notes
    -----
    The mean log-likelihood of a batch is
    :math:`L = \\frac1N\\sum_n [\\log p_Z(z_n) + \\log|\\det J_f(x_n)|]`, :math:`z_n = f(x_n)`.
    Its gradient is one backward pass of the bijector with the cotangents
    :math:`\\bar z_n = \\frac1N \\nabla_z \\log p_Z(z_n)` (the base's pullback) and
    :math:`\\overline{\\mathrm{logdet}}_n = \\frac1N`; the base's own parameters get their gradient
    from the base's pullback of :math:`\\frac1N`.
    """

    def init(self, rng, x=None, dtype=np.float64):
        """Parameters for the bijector (data-dependent when ``x`` is given) and the base."""
        dtype = x.dtype if x is not None else np.dtype(dtype)
        return {**self.bijector.init(rng, x, dtype=dtype), **prefixed(BASE, self.base.init(rng, dtype=dtype))}

    def _check(self, params, x):
        check_array(type(self).__name__, x, ndim=2, size=self.dim, what="data")
        check_same_dtype(type(self).__name__, params, x.dtype)

    def log_prob(self, params, x):
        """:math:`\\log p(x)`, shape ``(N,)``.  ``-inf`` only where the base has no support; never NaN."""
        self._check(params, x)
        pb, pd = self.split(params)
        z, logdet, _ = self.bijector.forward(pb, x)
        return check_finite_result("NormalizingFlow.log_prob", self.base.log_prob(pd, z) + logdet,
                                   "log_prob", allow_neg_inf=True)

    def log_likelihood_and_grad(self, params, x):
        """Mean log-likelihood of the batch ``x`` ``(N, D)`` and its gradient for every parameter by name."""
        return self._mean_and_grad(params, x, 1.0)

    def loss_and_grad(self, params, x):
        """The training objective: negative mean log-likelihood (nats) and its gradient."""
        return self._mean_and_grad(params, x, -1.0)

    def _mean_and_grad(self, params, x, sign):
        """``sign * mean log p(x)`` and its gradient: the sign rides on the cotangents (no negated copies)."""
        self._check(params, x)
        pb, pd = self.split(params)
        z, logdet, cache = self.bijector.forward(pb, x)
        logp = self.base.log_prob(pd, z) + logdet
        value = check_finite_result("NormalizingFlow", logp.mean(), "the mean log-likelihood")
        w = np.full(x.shape[0], sign / x.shape[0], dtype=x.dtype)
        dz, gd = self.base.log_prob_backward(pd, z, w)
        _, gb = self.bijector.backward(pb, dz, w, cache)
        return sign * float(value), self._merge(gb, gd)

    def log_prob_and_grad_x(self, params, x):
        """``(log p(x), d log p(x) / dx)``, shapes ``(N,)`` and ``(N, D)``: the density as a target for
        another flow (distillation, reverse KL).  One forward and one backward pass with cotangents
        :math:`\\bar z = \\nabla_z\\log p_Z(z)` and :math:`\\overline{\\mathrm{logdet}} = 1`."""
        self._check(params, x)
        pb, pd = self.split(params)
        z, logdet, cache = self.bijector.forward(pb, x)
        logp = check_finite_result("NormalizingFlow.log_prob_and_grad_x", self.base.log_prob(pd, z) + logdet,
                                   "log_prob")
        ones = np.ones(x.shape[0], dtype=x.dtype)
        dz, _ = self.base.log_prob_backward(pd, z, ones)
        dx, _ = self.bijector.backward(pb, dz, ones, cache)
        return logp, dx

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
