"""Base distributions on R^D with hand-derived pullbacks.

Every distribution has the same interface as a bijector's parameters (a flat dict owned by the caller)::

    params = d.init(rng, dtype=np.float64)
    logp = d.log_prob(params, z)                     # (N,)
    dz, grads = d.log_prob_backward(params, z, dlogp)  # VJP of log_prob
    z, cache = d.rsample(params, n, rng, dtype)      # reparameterised: z = g(params, noise)
    grads = d.rsample_backward(params, dz, cache)    # VJP of rsample w.r.t. the parameters
    z = d.sample(params, n, rng, dtype)

``log_prob`` and ``rsample`` accept ``xp`` like the bijectors, so autograd can check the pullbacks.
"""
import numpy as np

from ._checks import QUIET, all_finite, check_array, check_finite_result, check_params, unbox

LOG_2PI = float(np.log(2.0 * np.pi))


class Distribution:
    """Base class: subclasses give ``_log_prob`` (traceable with ``xp``), ``log_prob_backward``, ``rsample``.

    ``log_prob`` checks the point, and its result: ``-inf`` is returned only outside the support of a base
    with ``bounded_support`` (a uniform box); any other non-finite log-density raises ``FloatingPointError``.
    """

    dim = None
    bounded_support = False

    @property
    def name(self):
        return type(self).__name__

    def param_shapes(self):
        return {}

    def check_params(self, params, dtype=None):
        """``ValueError`` unless ``params`` has exactly the keys and shapes of :meth:`param_shapes`, finite,
        of ``dtype`` when given (see :func:`npflows._checks.check_params`)."""
        return check_params(self.name, params, self.param_shapes(), dtype)

    def log_prob(self, params, z, xp=np):
        """:math:`\\log p(z)`, shape ``(N,)``; ``-inf`` only outside a bounded support."""
        self._check(z)
        with np.errstate(**QUIET):    # the result is checked below
            lp = self._log_prob(params, z, xp)
        if not all_finite(lp):
            check_finite_result(f"{self.name} log_prob", lp, "the log-density", allow_neg_inf=self.bounded_support,
                                hint=f"its magnitude exceeds the range of {np.dtype(unbox(z).dtype).name} "
                                     f"(the point is too far out; compute in float64 or rescale the data)")
        return lp

    def init(self, rng=None, dtype=np.float64):
        return {}

    def sample(self, params, n, rng, dtype=np.float64):
        return self.rsample(params, n, rng, dtype)[0]

    def rsample_backward(self, params, dz, cache):
        return {}

    def _check(self, z):
        check_array(self.name, z, ndim=2, size=self.dim, what="point")

    def __repr__(self):
        return f"{self.name}(dim={self.dim})"


class StandardNormal(Distribution):
    """:math:`\\mathcal N(0, I_D)`.

    Notes
    -----
    :math:`\\log p(z) = -\\tfrac12\\lVert z\\rVert^2 - \\tfrac D2\\log 2\\pi`, so
    :math:`\\partial \\log p/\\partial z = -z` and the pullback of a cotangent ``g`` is ``-g z``.
    """

    def __init__(self, dim):
        self.dim = int(dim)

    def _log_prob(self, params, z, xp):
        lp = -0.5 * xp.sum(z * z, axis=1) - 0.5 * self.dim * LOG_2PI
        if not all_finite(lp):
            # z*z overflowed: -m (m/2 * sum (z/m)^2) with m = max|z_d| keeps every result that float holds
            m = xp.max(xp.abs(z), axis=1)
            m = xp.where(m > 0, m, 1.0)
            u = z / m[:, None]
            lp = -m * (0.5 * m * xp.sum(u * u, axis=1)) - 0.5 * self.dim * LOG_2PI
        return lp

    def log_prob_backward(self, params, z, dlogp):
        return -dlogp[:, None] * z, {}

    def rsample(self, params, n, rng, dtype=np.float64, xp=np):
        return rng.standard_normal((n, self.dim)).astype(dtype, copy=False), None


class DiagNormal(Distribution):
    """:math:`\\mathcal N(\\mu, \\mathrm{diag}(\\sigma^2))` with learnable ``loc`` = mu and
    ``log_scale`` = log sigma, both of shape ``(D,)``.

    Notes
    -----
    With :math:`u = (z-\\mu)/\\sigma`,
    :math:`\\log p = \\sum_d [-\\tfrac12 u_d^2 - \\log\\sigma_d] - \\tfrac D2 \\log 2\\pi`.  Then
    :math:`\\partial/\\partial z = -u/\\sigma`, :math:`\\partial/\\partial\\mu = u/\\sigma`,
    :math:`\\partial/\\partial\\log\\sigma = u^2 - 1`.
    Reparameterised sampling :math:`z = \\mu + \\sigma\\epsilon` pulls ``dz`` back to
    :math:`d\\mu = \\sum_n dz`, :math:`d\\log\\sigma = \\sum_n dz\\,\\sigma\\epsilon`.
    """

    def __init__(self, dim):
        self.dim = int(dim)

    def param_shapes(self):
        return {"loc": (self.dim,), "log_scale": (self.dim,)}

    def init(self, rng=None, dtype=np.float64):
        return {"loc": np.zeros(self.dim, dtype), "log_scale": np.zeros(self.dim, dtype)}

    def _log_prob(self, params, z, xp):
        u = (z - params["loc"]) * xp.exp(-params["log_scale"])
        return -0.5 * xp.sum(u * u, axis=1) - xp.sum(params["log_scale"]) - 0.5 * self.dim * LOG_2PI

    def log_prob_backward(self, params, z, dlogp):
        inv = np.exp(-params["log_scale"])
        u = (z - params["loc"]) * inv
        g = dlogp[:, None]
        dz = -g * u * inv
        return dz, {"loc": -dz.sum(0), "log_scale": (g * (u * u - 1.0)).sum(0)}

    def rsample(self, params, n, rng, dtype=np.float64, xp=np):
        eps = rng.standard_normal((n, self.dim)).astype(dtype, copy=False)
        return params["loc"] + xp.exp(params["log_scale"]) * eps, eps

    def rsample_backward(self, params, dz, cache):
        return {"loc": dz.sum(0), "log_scale": (dz * cache).sum(0) * np.exp(params["log_scale"])}


class UniformBox(Distribution):
    """Uniform on the box ``[low, high]^D`` (fixed bounds).  ``log_prob`` is ``-sum log(high-low)``
    inside and ``-inf`` outside; its gradient in z is zero wherever it is finite."""

    def __init__(self, dim, low=0.0, high=1.0):
        if not high > low:
            raise ValueError(f"UniformBox: need high > low, got low={low}, high={high}")
        self.dim, self.low, self.high = int(dim), float(low), float(high)

    bounded_support = True

    def _log_prob(self, params, z, xp):
        inside = xp.all((z >= self.low) & (z <= self.high), axis=1)
        val = -self.dim * np.log(self.high - self.low)
        return xp.where(inside, val, -np.inf).astype(z.dtype)

    def log_prob_backward(self, params, z, dlogp):
        return np.zeros_like(z), {}

    def rsample(self, params, n, rng, dtype=np.float64, xp=np):
        u = rng.uniform(self.low, self.high, size=(n, self.dim))
        return u.astype(dtype, copy=False), None

    def __repr__(self):
        return f"UniformBox(dim={self.dim}, low={self.low}, high={self.high})"


class StandardLogistic(Distribution):
    """The NICE prior: independent standard logistic components (Dinh et al. 2014, arXiv:1410.8516).

    Notes
    -----
    :math:`\\log p(z) = -\\sum_d [\\mathrm{softplus}(z_d) + \\mathrm{softplus}(-z_d)]`, and
    :math:`\\partial/\\partial z = -\\sigma(z) + \\sigma(-z) = 1 - 2\\sigma(z) = -\\tanh(z/2)`.
    Sampling: :math:`z = \\log u - \\log(1-u)`, ``u`` uniform on (0, 1).
    """

    def __init__(self, dim):
        self.dim = int(dim)

    def _log_prob(self, params, z, xp):
        return -xp.sum(xp.logaddexp(0.0, z) + xp.logaddexp(0.0, -z), axis=1)

    def log_prob_backward(self, params, z, dlogp):
        return -dlogp[:, None] * np.tanh(0.5 * z), {}

    def rsample(self, params, n, rng, dtype=np.float64, xp=np):
        u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=(n, self.dim))
        return (np.log(u) - np.log1p(-u)).astype(dtype, copy=False), None
