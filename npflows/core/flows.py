"""Flows: a bijector plus a base distribution, in the two directions of use.

* ``NormalizingFlow(bijector, base)``: ``forward`` maps data x to the base z.  Density by the change of
  variables, trained by maximum likelihood (MAF, RealNVP, Glow, residual flows, CNF).
* ``PushForward(bijector, base)``: ``forward`` maps base samples to data.  Sampling and the density of
  its own samples are exact and differentiable: trained by reverse KL or distillation (IAF, planar, radial).

Parameters of both live in one flat dict: the bijector's keys as they are, the base's under ``"base."``.

**Conditional flows.**  Every method takes an optional ``context`` (the bijector's contract,
``npflows.core.bijector``), the flow :math:`p(x \\mid c)` with an unconditional base:

* densities and their gradients take one context row per data row: ``log_prob(params, x, context)`` with
  ``x`` ``(N, *event)`` and ``context`` ``(N, C)``, as nflows' and zuko's ``log_prob`` do;
* sampling draws ``n`` samples *per context row*: ``sample(params, n, rng, context)`` with ``context``
  ``(M, C)`` returns ``(M, n, *event)`` (and ``sample_and_log_prob`` log-densities ``(M, n)``), nflows'
  ``sample(n, context)`` layout (zuko's ``flow(c).sample((n,))`` is the same draws with the two batch axes
  swapped, ``(n, M, *event)``).  The base noise is drawn for the ``M * n`` rows at once, row ``i * n + j``
  being sample ``j`` of context ``i``;
* the methods that return gradients return the context's cotangent as an extra last value when given a
  context (``loss_and_grad`` -> ``(loss, grads, dcontext)``), the contract's rule, so that the model that
  computes the context (a VAE's encoder) can be trained through it; without a context they return what they
  always did.  A conditional flow (``context_dim`` set) refuses a missing or malformed context with
  ``ValueError``.
"""
import numpy as np

import inspect

from .._checks import QUIET, all_finite, check_count, check_event, check_finite_result, check_rng, unbox
from ..perf import managed
from .bijector import ERRORS, ContextCache, check_context, in_layer
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
        self.context_dim = bijector.context_dim
        """C for a conditional flow (its bijector needs a context ``(N, C)``), else None."""
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

    def _bij(self, method, where, *args, **kwargs):
        """Call a bijector method, the error prefixed with the flow's method that made the call."""
        try:
            with np.errstate(**QUIET):
                return getattr(self.bijector, method)(*args, **kwargs)
        except ERRORS as e:
            raise in_layer(e, where) from None

    def _context(self, owner, context, rows, dtype=None):
        """Validate a context once per call: None for an unconditional flow, else ``(rows, C)`` (``rows``: the
        data, or the number of rows it must have) in ``dtype`` (the data's, when ``rows`` is an array)."""
        if context is None:
            if self.context_dim is not None:
                raise ValueError(f"{owner}: a conditional flow (context_dim={self.context_dim}) needs a context of "
                                 f"shape (N, {self.context_dim}); got none")
            return None
        if isinstance(rows, (int, np.integer)):
            check_context(owner, context, None, self.context_dim)
            raw = unbox(context)
            if dtype is not None and raw.dtype != np.dtype(dtype):
                raise ValueError(f"{owner}: the context's dtype {raw.dtype} differs from the parameters' {np.dtype(dtype)}")
            return context
        return check_context(owner, context, rows, self.context_dim)

    @staticmethod
    def _rows(context, s):
        return None if context is None else context[s]

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

    def init(self, rng, x=None, dtype=np.float64, context=None):
        """Parameters for the bijector (data-dependent when ``x`` is given, computed with the rows' ``context``
        where a conditional layer sits before a data-initialised one) and the base."""
        dtype = x.dtype if x is not None else np.dtype(dtype)
        kw = {"context": context} if context is not None and "context" in inspect.signature(
            self.bijector.init).parameters else {}
        return {**self.bijector.init(rng, x, dtype=dtype, **kw), **prefixed(BASE, self.base.init(rng, dtype=dtype))}

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
    def log_prob(self, params, x, context=None):
        """:math:`\\log p(x)` (:math:`\\log p(x \\mid c)` with ``context`` ``(N, C)``, one row per data row), shape
        ``(N,)``.  ``-inf`` only where the base has no support; never NaN.

        Raises ``ValueError`` for bad data, context or parameters and ``FloatingPointError`` where a layer
        overflows or the log-density itself is out of the dtype's range; the message names the layer."""
        owner = "NormalizingFlow.log_prob"
        pb, pd = self._check(params, x, owner)
        context = self._context(owner, context, x)
        parts = []
        for s in self._chunks(x.shape[0], x.dtype):
            z, logdet, _ = self._bij("_call_forward", owner, pb, x[s], np, self._trust_fwd, False,
                                     context=self._rows(context, s))
            parts.append(self._total(owner, self.base.log_prob(pd, z), logdet))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @managed
    def log_likelihood_and_grad(self, params, x, context=None):
        """Mean log-likelihood of the batch ``x`` ``(N, D)`` and its gradient for every parameter by name;
        with ``context`` ``(N, C)`` also the gradient for the context, ``(N, C)``, as a third value."""
        return self._mean_and_grad(params, x, 1.0, context)

    @managed
    def loss_and_grad(self, params, x, context=None):
        """The training objective: negative mean log-likelihood (nats) and its gradient (and with ``context``
        the context's gradient ``(N, C)``, a third value)."""
        return self._mean_and_grad(params, x, -1.0, context)

    def _mean_and_grad(self, params, x, sign, context=None):
        """``sign * mean log p(x)`` and its gradient: the sign rides on the cotangents (no negated copies).

        The batch is processed in chunks of ``chunk_rows`` rows, each a forward and a backward pass whose
        cotangents already carry the weight ``sign / N`` of the whole batch, so the gradients of the
        chunks simply add up."""
        owner = "NormalizingFlow.log_likelihood_and_grad" if sign > 0 else "NormalizingFlow.loss_and_grad"
        pb, pd = self._check(params, x, owner, nonempty=True)
        context = self._context(owner, context, x)
        n = x.shape[0]
        total, grads, dcs = 0.0, None, []
        for s in self._chunks(n, x.dtype):
            c = self._rows(context, s)
            z, logdet, cache = self._bij("_call_forward", owner, pb, x[s], np, self._trust_fwd, context=c)
            logp = self._total(owner, self.base.log_prob(pd, z), logdet)
            check_finite_result(owner, logp, "the log-likelihood", hint="the data lie outside the base's support")
            total += float(np.sum(logp, dtype=np.float64))
            w = np.full(logp.shape[0], sign / n, dtype=x.dtype)
            dz, gd = self.base.log_prob_backward(pd, z, w)
            if c is None:
                _, gb = self._bij("backward", owner, pb, dz, w, cache)
            else:                        # the cotangent of the chunk's context rows (the base does not read it)
                _, gb, dc = self._bij("backward", owner, pb, dz, w, ContextCache(cache, c))
                dcs.append(dc)
            g = self._merge(gb, gd)
            grads = g if grads is None else {k: grads[k] + g[k] for k in grads}
        for fk, _ in self._bkeys:        # the bijector's backward checked its own gradients
            check_finite_result(owner, grads[fk], f"the gradient of {fk!r}")
        if context is None:
            return sign * total / n, grads
        return sign * total / n, grads, (dcs[0] if len(dcs) == 1 else np.concatenate(dcs))

    @managed
    def log_prob_and_grad_x(self, params, x, context=None):
        """``(log p(x), d log p(x) / dx)``, shapes ``(N,)`` and ``(N, D)``: the density as a target for
        another flow (distillation, reverse KL).  One forward and one backward pass with cotangents
        :math:`\\bar z = \\nabla_z\\log p_Z(z)` and :math:`\\overline{\\mathrm{logdet}} = 1`, per chunk.  With
        ``context`` ``(N, C)``: ``(log p(x | c), d/dx, d/dc)``."""
        owner = "NormalizingFlow.log_prob_and_grad_x"
        pb, pd = self._check(params, x, owner)
        context = self._context(owner, context, x)
        logps, dxs, dcs = [], [], []
        for s in self._chunks(x.shape[0], x.dtype):
            c = self._rows(context, s)
            z, logdet, cache = self._bij("_call_forward", owner, pb, x[s], np, self._trust_fwd, context=c)
            logp = check_finite_result(owner, self._total(owner, self.base.log_prob(pd, z), logdet), "log_prob",
                                       hint="the point lies outside the base's support, where the gradient of "
                                            "log p is undefined")
            ones = np.ones(logp.shape[0], dtype=x.dtype)
            dz, _ = self.base.log_prob_backward(pd, z, ones)
            if c is None:
                dx, _ = self._bij("backward", owner, pb, dz, ones, cache)
            else:
                dx, _, dc = self._bij("backward", owner, pb, dz, ones, ContextCache(cache, c))
                dcs.append(dc)
            logps.append(logp)
            dxs.append(dx)
        out = [logps, dxs] + ([dcs] if context is not None else [])
        return tuple(a[0] if len(a) == 1 else np.concatenate(a) for a in out)

    @managed
    def sample(self, params, n, rng, context=None, dtype=None, temperature=1.0):
        """``n`` samples :math:`x = f^{-1}(z)`, :math:`z \\sim p_Z`, shape ``(n, *event_shape)``, in the
        parameters' dtype (``dtype`` for a flow without parameters).  ``n`` is an integer >= 0 and ``rng`` a
        ``numpy.random.Generator`` (``ValueError`` otherwise).  ``temperature`` T scales the base's noise
        (Gaussian bases; Glow's "temperature", Kingma & Dhariwal 2018): :math:`z \\sim \\mathcal N(\\mu,
        T^2\\Sigma)`.  With ``context`` ``(M, C)``: ``n`` samples from :math:`p(x \\mid c_i)` for every row,
        shape ``(M, n, *event_shape)`` (see the module docstring)."""
        owner = "NormalizingFlow.sample"
        n, rng = check_count(owner, n), check_rng(owner, rng)
        dtype = self._sample_dtype(params, dtype, owner)
        pb, pd = self.checked_split(params, dtype)
        context = self._context(owner, context, n, dtype)
        rows = n if context is None else n * unbox(context).shape[0]
        try:
            z = self.base.sample(pd, rows, rng, dtype, temperature=temperature)
        except ValueError as e:
            raise ValueError(f"{owner}: {e}") from None
        z = check_finite_result(owner, z, f"the base sample ({self.base.name})",
                                hint="the base's scale overflows; its log_scale is too large")
        c = None if context is None else np.repeat(context, n, axis=0)
        x = self._bij("_call_inverse", owner, pb, z, np, self._trust_inv, context=c)[0]
        return x if context is None else x.reshape((context.shape[0], n) + x.shape[1:])


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
    def sample_and_log_prob(self, params, n, rng, context=None, dtype=None):
        """``(x, log q(x))`` for ``n`` fresh samples; shapes ``(n, D)`` and ``(n,)``, in the parameters' dtype
        (``dtype`` for a flow without parameters).  ``n`` is an integer >= 0 and ``rng`` a
        ``numpy.random.Generator``.  With ``context`` ``(M, C)``: ``n`` samples of :math:`q(x \\mid c_i)` per
        row and their log-densities, shapes ``(M, n, D)`` and ``(M, n)``."""
        x, logq, (_, _, _, _, _, context) = self._sample(params, n, rng, "PushForward.sample_and_log_prob",
                                                         dtype=dtype, context=context)
        if context is None:
            return x, logq
        m = context.shape[0]
        return x.reshape((m, n) + x.shape[1:]), logq.reshape(m, n)

    def _sample(self, params, n, rng, owner, minimum=0, dtype=None, context=None):
        """``n`` samples (per context row), flat: ``(x, log q, (pb, pd, z, scache, cache, context))``, rows
        ``i * n + j`` for context ``i``."""
        n, rng = check_count(owner, n, minimum=minimum), check_rng(owner, rng)
        dtype = self._sample_dtype(params, dtype, owner)
        pb, pd = self.checked_split(params, dtype)
        context = self._context(owner, context, n, dtype)
        rows = n if context is None else n * unbox(context).shape[0]
        z, scache = self.base.rsample(pd, rows, rng, dtype)
        check_finite_result(owner, z, f"the base sample ({self.base.name})",
                            hint="the base's scale overflows; its log_scale is too large")
        c = None if context is None else np.repeat(context, n, axis=0)
        x, logdet, cache = self._bij("_call_forward", owner, pb, z, np, self._trust_fwd, context=c)
        logq = check_finite_result(owner, self._total(owner, self.base.log_prob(pd, z), logdet, sign=-1.0), "log q")
        return x, logq, (pb, pd, z, scache, cache, context)

    @managed
    def log_prob(self, params, x, context=None):
        """Density of an arbitrary point (given its context row, ``(N, C)``): needs the bijector's inverse
        (sequential or numerical)."""
        owner = "PushForward.log_prob"
        check_event(owner, x, self.event_shape, what="point")
        pb, pd = self.checked_split(params, x.dtype)
        context = self._context(owner, context, x)
        z, logdet_inv = self._bij("_call_inverse", owner, pb, x, np, self._trust_inv, context=context)
        return self._total(owner, self.base.log_prob(pd, z), logdet_inv)

    @managed
    def reverse_kl_and_grad(self, params, target, n, rng, context=None):
        """Monte Carlo reverse-KL objective and its gradient.

        Parameters
        ----------
        target : callable
            ``target(x) -> (log_p, grad_log_p)`` with shapes ``(N,)`` and ``(N, D)``: the unnormalised
            target log-density and its gradient in x.  With a context, ``target(x, c)`` with ``x`` the
            ``M * n`` samples (flat) and ``c`` their context rows ``(M * n, C)`` (row ``i * n + j`` is
            ``context[i]``); it may return a third array, the gradient of ``log_p`` in ``c`` ``(M * n, C)``,
            which then joins the context's cotangent (the target's own dependence on the context: for a VAE's
            :math:`\\log p(x_i, z)` it has none).
        n : int
            Number of samples (per context row).
        context : ndarray, optional
            ``(M, C)``: the objective is the mean over the ``M * n`` samples of every row.

        Returns
        -------
        value : float
            :math:`\\frac1N\\sum_n [\\log q(x_n) - \\log\\tilde p(x_n)]`.
        grads : dict
            Gradient of ``value`` for every parameter by name.
        dcontext : ndarray, only with a context
            Gradient of ``value`` in the context ``(M, C)``: the sum over each row's ``n`` samples (the row
            enters every one of them).
        """
        owner = "PushForward.reverse_kl_and_grad"
        x, logq, (pb, pd, z, scache, cache, context) = self._sample(params, n, rng, owner, minimum=1,
                                                                    context=context)
        rows = x.shape[0]
        if rows == 0:
            raise ValueError(f"{owner}: the context has no rows; a mean over no samples is undefined")
        c = None if context is None else np.repeat(context, n, axis=0)
        out = target(x) if c is None else target(x, c)
        if not isinstance(out, (tuple, list)) or len(out) not in ((2,) if c is None else (2, 3)):
            raise ValueError(f"{owner}: target must return (log_p, grad_log_p)"
                             f"{'' if c is None else ' or (log_p, grad_log_p, grad_context)'}")
        logp, glogp = np.asarray(out[0]), np.asarray(out[1])
        if logp.shape != (rows,) or glogp.shape != x.shape:
            raise ValueError(f"PushForward.reverse_kl_and_grad: target(x) must return log p of shape {(rows,)} and "
                             f"its gradient of shape {x.shape}; got {logp.shape} and {glogp.shape}")
        check_finite_result(owner, logp, "the target's log-density", hint="the target returned NaN or inf")
        check_finite_result(owner, glogp, "the target's gradient", hint="the target returned NaN or inf")
        value = check_finite_result(owner, np.mean(logq - logp), "the objective")
        w = np.full(rows, 1.0 / rows, dtype=x.dtype)
        if c is None:
            dz, gb = self._bij("backward", owner, pb, -w[:, None] * glogp, -w, cache)
        else:
            dz, gb, dc = self._bij("backward", owner, pb, -w[:, None] * glogp, -w, ContextCache(cache, c))
            if len(out) == 3:
                gc = np.asarray(out[2])
                if gc.shape != c.shape:
                    raise ValueError(f"{owner}: the target's context gradient must have shape {c.shape}, got "
                                     f"{gc.shape}")
                dc = dc - w[:, None] * check_finite_result(owner, gc, "the target's context gradient",
                                                           hint="the target returned NaN or inf")
            dc = dc.reshape(context.shape[0], n, -1).sum(axis=1)
        dz_base, gd = self.base.log_prob_backward(pd, z, w)
        gs = self.base.rsample_backward(pd, dz + dz_base, scache)
        gd = {k: gd.get(k, 0) + gs.get(k, 0) for k in self.base.param_shapes()}
        for k, g in gd.items():
            check_finite_result(owner, g, f"the gradient of 'base.{k}'")
        if c is None:
            return float(value), self._merge(gb, gd)
        return float(value), self._merge(gb, gd), check_finite_result(owner, dc, "the context's gradient")
