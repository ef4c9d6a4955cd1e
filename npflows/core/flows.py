"""Flows: a bijector plus a base distribution, in the two directions of use.

* ``NormalizingFlow(bijector, base)``: ``forward`` maps data x to the base z.  Density by the change of
  variables, trained by maximum likelihood (MAF, RealNVP, Glow, residual flows, CNF).
* ``PushForward(bijector, base)``: ``forward`` maps base samples to data.  Sampling and the density of
  its own samples are exact and differentiable: trained by reverse KL or distillation (IAF, planar, radial).

Parameters of both live in one flat dict: the bijector's keys as they are, the base's under ``"base."``.
"""
import numpy as np

from .._checks import QUIET, all_finite, check_count, check_event, check_finite_result, check_rng, unbox
from ..perf import managed
from .bijector import ERRORS, in_layer
from .compose import prefixed

BASE = "base."
CHUNK_ROWS = "auto"
"""Default rows per pass of :class:`NormalizingFlow`'s batch methods: ``"auto"`` is
:data:`AUTO_CHUNK_ROWS` for the data's dtype."""
AUTO_CHUNK_ROWS = {np.dtype(np.float32): 4096, np.dtype(np.float64): 2048}
"""Rows per pass for ``chunk_rows="auto"``: the same 1 MiB per 64-wide activation in both dtypes.  Measured
with ``scripts/bench_train.py``'s RealNVP on a 2-core AMD EPYC (512 KiB L2, 32 MiB L3), train step: at
batch 4096 one pass beat chunks of 1024 rows (float32 21.3 against 24.2 ms, float64 44.6 against 50.3),
chunks of 2048 matched one pass in float64; at batch 16384 chunks of 4096 were best in float32 (97 against
107 ms for 1024 and 120 for one pass) and 1024-2048 in float64.  Smaller chunks pay the per-layer Python
cost more often; larger ones spill the activations that the backward reads back out of the caches, and
hold more memory (the caches of one pass hold 16 such activations for that model: 16 MiB per chunk)."""


class _Flow:
    # which side of the bijector the base distribution sits on: its output (NormalizingFlow: forward maps
    # data to the base) or its input (PushForward: forward maps base samples to data)
    _base_at_output = True

    def __init__(self, bijector, base):
        if bijector.dim is not None and base.dim is not None and bijector.dim != base.dim:
            raise ValueError(f"{type(self).__name__}: bijector dim {bijector.dim} != base dim {base.dim}")
        base_side, data_side = ((bijector.out_event_shape, bijector.event_shape) if self._base_at_output
                                else (bijector.event_shape, bijector.out_event_shape))
        if base_side is not None and base.event_shape is not None and base_side != base.event_shape:
            raise ValueError(f"{type(self).__name__}: the bijector's {'output' if self._base_at_output else 'input'} "
                             f"event shape {base_side} != the base's event shape {base.event_shape}")
        self.event_shape = data_side if data_side is not None else base.event_shape
        """The shape of one data point (after the batch axis)."""
        clash = [k for k in bijector.param_shapes() if k.startswith(BASE)]
        if clash:
            raise ValueError(f"{type(self).__name__}: bijector keys may not start with 'base.': {clash}")
        self.bijector, self.base = bijector, base
        self.dim = bijector.dim if bijector.dim is not None else base.dim
        self._bkeys = [(BASE + k, k) for k in base.param_shapes()]
        self._fkeys = list(bijector.param_shapes())
        # the flow checks its data (rank, size, dtype, finiteness) and its base's samples are finite floats, so
        # the bijector's input check is skipped where it is only that generic check
        self._trust_fwd, self._trust_inv = bijector._trusts_container("forward"), bijector._trusts_container("inverse")
        self._all_keys = set(self._fkeys) | {fk for fk, _ in self._bkeys}

    def param_shapes(self):
        return {**self.bijector.param_shapes(), **prefixed(BASE, self.base.param_shapes())}

    def split(self, params):
        """``(bijector params, base params)`` from the flow's flat dict (keys checked, values not)."""
        raw = unbox(params)            # a DictBox when autograd traces the parameters
        if not isinstance(raw, dict):
            raise ValueError(f"{type(self).__name__}: expected the parameters as a dict of arrays, got "
                             f"{type(raw).__name__}")
        if raw.keys() != self._all_keys:
            want = set(self.param_shapes())
            raise ValueError(f"{type(self).__name__}: parameter keys do not match the model: missing "
                             f"{sorted(want - set(raw))}, unexpected {sorted(set(raw) - want)}")
        return {k: params[k] for k in self._fkeys}, {k: params[fk] for fk, k in self._bkeys}

    def checked_split(self, params, dtype):
        """:meth:`split` after validating every parameter once for the whole call: keys, exact shapes,
        ``dtype`` (the data's, or the samples') and finiteness (``ValueError``)."""
        pb, pd = self.split(params)
        self.bijector.check_params(pb, dtype)
        try:
            self.base.check_params(pd, dtype)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__} base ({self.base.name}, keys under 'base.'): {e}") from None
        return pb, pd

    def _sample_dtype(self, params, dtype, owner):
        """The dtype of samples: the parameters' (checked to be one), or ``dtype`` for a flow without
        parameters (float64 by default); a ``dtype`` that contradicts the parameters raises ``ValueError``."""
        first = next(iter(params.values()), None) if isinstance(params, dict) else None
        have = np.dtype(first.dtype) if isinstance(first, (np.ndarray, np.generic)) else None
        if dtype is None:
            return have or np.dtype(np.float64)
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"{owner}: dtype must be float32 or float64, got {dtype}")
        if have is not None and have != dtype:
            raise ValueError(f"{owner}: dtype {dtype} differs from the parameters' {have}; cast them with "
                             f"npflows.cast_params(params, {dtype.name!r})")
        return dtype

    def _bij(self, method, where, *args):
        """Call a bijector method, the error prefixed with the flow's method that made the call."""
        try:
            with np.errstate(**QUIET):
                return getattr(self.bijector, method)(*args)
        except ERRORS as e:
            raise in_layer(e, where) from None

    @staticmethod
    def _total(owner, base_lp, logdet, sign=1.0):
        """``base_lp + sign * logdet``: -inf only where the base itself is -inf (outside its support);
        a sum of two finite terms that overflows raises ``FloatingPointError``."""
        lp = base_lp + logdet if sign > 0 else base_lp - logdet
        if not all_finite(lp):
            bad = ~np.isfinite(lp) & np.isfinite(base_lp)
            if bad.any():
                i = int(np.argmax(bad))
                raise FloatingPointError(f"{owner}: the log-density of sample {i} overflows: base log-density "
                                         f"{base_lp[i]:.6g} {'+' if sign > 0 else '-'} log-determinant "
                                         f"{logdet[i]:.6g} is out of the range of {lp.dtype}")
        return lp

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
    chunk_rows : int, None or "auto", default :data:`CHUNK_ROWS`
        ``log_prob``, ``loss_and_grad``, ``log_likelihood_and_grad`` and ``log_prob_and_grad_x`` pass at
        most this many rows through the bijector at a time (faster for large batches, whose arrays would
        spill out of the CPU's cache, and lighter on memory); the results equal one pass over the whole
        batch up to the order of floating-point sums.  ``None``: one pass.  Where a bijector's result
        for a sample depends on the rest of its batch (an adaptive ODE solver shares one step size over
        the batch), chunks change the result within the solver's tolerance; pass ``None`` to avoid it.
        ``"auto"``: :data:`AUTO_CHUNK_ROWS` for the data's dtype (2048 rows in float64, 4096 in float32).

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
        if not (chunk_rows is None or (isinstance(chunk_rows, str) and chunk_rows == "auto") or (
                isinstance(chunk_rows, (int, np.integer)) and not isinstance(chunk_rows, bool) and chunk_rows >= 1)):
            raise ValueError(f"NormalizingFlow: chunk_rows must be a positive int, None or 'auto', got {chunk_rows!r}")
        self.chunk_rows = chunk_rows if chunk_rows is None or isinstance(chunk_rows, str) else int(chunk_rows)

    def init(self, rng, x=None, dtype=np.float64):
        """Parameters for the bijector (data-dependent when ``x`` is given) and the base."""
        dtype = x.dtype if x is not None else np.dtype(dtype)
        return {**self.bijector.init(rng, x, dtype=dtype), **prefixed(BASE, self.base.init(rng, dtype=dtype))}

    def _check(self, params, x, owner, nonempty=False):
        """Validate the data and the parameters once per call: ``(bijector params, base params)``."""
        check_event(owner, x, self.event_shape, what="data")
        if nonempty and x.shape[0] == 0:
            raise ValueError(f"{owner}: the batch is empty (shape {x.shape}); a mean over no samples is undefined")
        return self.checked_split(params, x.dtype)

    def _chunks(self, n, dtype):
        """Row slices of at most ``chunk_rows`` rows covering ``range(n)`` (one slice if not chunking)."""
        step = self.chunk_rows
        if step is None:
            step = n
        elif step == "auto":
            step = AUTO_CHUNK_ROWS.get(np.dtype(dtype), n)
        return [slice(lo, min(lo + step, n)) for lo in range(0, max(n, 1), max(step, 1))]

    @managed
    def log_prob(self, params, x):
        """:math:`\\log p(x)`, shape ``(N,)``.  ``-inf`` only where the base has no support; never NaN.

        Raises ``ValueError`` for bad data or parameters and ``FloatingPointError`` where a layer overflows
        or the log-density itself is out of the dtype's range; the message names the layer."""
        owner = "NormalizingFlow.log_prob"
        pb, pd = self._check(params, x, owner)
        parts = []
        for s in self._chunks(x.shape[0], x.dtype):
            z, logdet, _ = self._bij("_call_forward", owner, pb, x[s], np, self._trust_fwd, False)
            parts.append(self._total(owner, self.base.log_prob(pd, z), logdet))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @managed
    def log_likelihood_and_grad(self, params, x):
        """Mean log-likelihood of the batch ``x`` ``(N, D)`` and its gradient for every parameter by name."""
        return self._mean_and_grad(params, x, 1.0)

    @managed
    def loss_and_grad(self, params, x):
        """The training objective: negative mean log-likelihood (nats) and its gradient."""
        return self._mean_and_grad(params, x, -1.0)

    def _mean_and_grad(self, params, x, sign):
        """``sign * mean log p(x)`` and its gradient: the sign rides on the cotangents (no negated copies).

        The batch is processed in chunks of ``chunk_rows`` rows, each a forward and a backward pass whose
        cotangents already carry the weight ``sign / N`` of the whole batch, so the gradients of the
        chunks simply add up."""
        owner = "NormalizingFlow.log_likelihood_and_grad" if sign > 0 else "NormalizingFlow.loss_and_grad"
        pb, pd = self._check(params, x, owner, nonempty=True)
        n = x.shape[0]
        total, grads = 0.0, None
        for s in self._chunks(n, x.dtype):
            z, logdet, cache = self._bij("_call_forward", owner, pb, x[s], np, self._trust_fwd)
            logp = self._total(owner, self.base.log_prob(pd, z), logdet)
            check_finite_result(owner, logp, "the log-likelihood", hint="the data lie outside the base's support")
            total += float(np.sum(logp, dtype=np.float64))
            w = np.full(logp.shape[0], sign / n, dtype=x.dtype)
            dz, gd = self.base.log_prob_backward(pd, z, w)
            _, gb = self._bij("backward", owner, pb, dz, w, cache)
            g = self._merge(gb, gd)
            grads = g if grads is None else {k: grads[k] + g[k] for k in grads}
        for fk, _ in self._bkeys:        # the bijector's backward checked its own gradients
            check_finite_result(owner, grads[fk], f"the gradient of {fk!r}")
        return sign * total / n, grads

    @managed
    def log_prob_and_grad_x(self, params, x):
        """``(log p(x), d log p(x) / dx)``, shapes ``(N,)`` and ``(N, D)``: the density as a target for
        another flow (distillation, reverse KL).  One forward and one backward pass with cotangents
        :math:`\\bar z = \\nabla_z\\log p_Z(z)` and :math:`\\overline{\\mathrm{logdet}} = 1`, per chunk."""
        owner = "NormalizingFlow.log_prob_and_grad_x"
        pb, pd = self._check(params, x, owner)
        logps, dxs = [], []
        for s in self._chunks(x.shape[0], x.dtype):
            z, logdet, cache = self._bij("_call_forward", owner, pb, x[s], np, self._trust_fwd)
            logp = check_finite_result(owner, self._total(owner, self.base.log_prob(pd, z), logdet), "log_prob",
                                       hint="the point lies outside the base's support, where the gradient of "
                                            "log p is undefined")
            ones = np.ones(logp.shape[0], dtype=x.dtype)
            dz, _ = self.base.log_prob_backward(pd, z, ones)
            dx, _ = self._bij("backward", owner, pb, dz, ones, cache)
            logps.append(logp)
            dxs.append(dx)
        if len(logps) == 1:
            return logps[0], dxs[0]
        return np.concatenate(logps), np.concatenate(dxs)

    @managed
    def sample(self, params, n, rng, dtype=None, temperature=1.0):
        """``n`` samples :math:`x = f^{-1}(z)`, :math:`z \\sim p_Z`, shape ``(n, *event_shape)``, in the
        parameters' dtype (``dtype`` for a flow without parameters).  ``n`` is an integer >= 0 and ``rng`` a
        ``numpy.random.Generator`` (``ValueError`` otherwise).  ``temperature`` T scales the base's noise
        (Gaussian bases; Glow's "temperature", Kingma & Dhariwal 2018): :math:`z \\sim \\mathcal N(\\mu,
        T^2\\Sigma)`."""
        owner = "NormalizingFlow.sample"
        n, rng = check_count(owner, n), check_rng(owner, rng)
        dtype = self._sample_dtype(params, dtype, owner)
        pb, pd = self.checked_split(params, dtype)
        try:
            z = self.base.sample(pd, n, rng, dtype, temperature=temperature)
        except ValueError as e:
            raise ValueError(f"{owner}: {e}") from None
        z = check_finite_result(owner, z, f"the base sample ({self.base.name})",
                                hint="the base's scale overflows; its log_scale is too large")
        return self._bij("_call_inverse", owner, pb, z, np, self._trust_inv)[0]


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

    _base_at_output = False

    def init(self, rng, dtype=np.float64):
        dtype = np.dtype(dtype)
        return {**self.bijector.init(rng, dtype=dtype), **prefixed(BASE, self.base.init(rng, dtype=dtype))}

    @managed
    def sample_and_log_prob(self, params, n, rng, dtype=None):
        """``(x, log q(x))`` for ``n`` fresh samples; shapes ``(n, D)`` and ``(n,)``, in the parameters' dtype
        (``dtype`` for a flow without parameters).  ``n`` is an integer >= 0 and ``rng`` a
        ``numpy.random.Generator``."""
        x, logq, _ = self._sample(params, n, rng, "PushForward.sample_and_log_prob", dtype=dtype)
        return x, logq

    def _sample(self, params, n, rng, owner, minimum=0, dtype=None):
        n, rng = check_count(owner, n, minimum=minimum), check_rng(owner, rng)
        dtype = self._sample_dtype(params, dtype, owner)
        pb, pd = self.checked_split(params, dtype)
        z, scache = self.base.rsample(pd, n, rng, dtype)
        check_finite_result(owner, z, f"the base sample ({self.base.name})",
                            hint="the base's scale overflows; its log_scale is too large")
        x, logdet, cache = self._bij("_call_forward", owner, pb, z, np, self._trust_fwd)
        logq = check_finite_result(owner, self._total(owner, self.base.log_prob(pd, z), logdet, sign=-1.0), "log q")
        return x, logq, (pb, pd, z, scache, cache)

    @managed
    def log_prob(self, params, x):
        """Density of an arbitrary point: needs the bijector's inverse (sequential or numerical)."""
        owner = "PushForward.log_prob"
        check_event(owner, x, self.event_shape, what="point")
        pb, pd = self.checked_split(params, x.dtype)
        z, logdet_inv = self._bij("_call_inverse", owner, pb, x, np, self._trust_inv)
        return self._total(owner, self.base.log_prob(pd, z), logdet_inv)

    @managed
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
        owner = "PushForward.reverse_kl_and_grad"
        x, logq, (pb, pd, z, scache, cache) = self._sample(params, n, rng, owner, minimum=1)
        logp, glogp = target(x)
        logp, glogp = np.asarray(logp), np.asarray(glogp)
        if logp.shape != (n,) or glogp.shape != x.shape:
            raise ValueError(f"PushForward.reverse_kl_and_grad: target(x) must return log p of shape {(n,)} and "
                             f"its gradient of shape {x.shape}; got {logp.shape} and {glogp.shape}")
        check_finite_result(owner, logp, "the target's log-density", hint="the target returned NaN or inf")
        check_finite_result(owner, glogp, "the target's gradient", hint="the target returned NaN or inf")
        value = check_finite_result(owner, np.mean(logq - logp), "the objective")
        w = np.full(n, 1.0 / n, dtype=x.dtype)
        dz, gb = self._bij("backward", owner, pb, -w[:, None] * glogp, -w, cache)
        dz_base, gd = self.base.log_prob_backward(pd, z, w)
        gs = self.base.rsample_backward(pd, dz + dz_base, scache)
        gd = {k: gd.get(k, 0) + gs.get(k, 0) for k in self.base.param_shapes()}
        for k, g in gd.items():
            check_finite_result(owner, g, f"the gradient of 'base.{k}'")
        return float(value), self._merge(gb, gd)
