"""Base distributions on R^D with hand-derived pullbacks.

Every distribution has the same interface as a bijector's parameters (a flat dict owned by the caller)::

    params = d.init(rng, dtype=np.float64)
    logp = d.log_prob(params, z)                     # (N,)
    dz, grads = d.log_prob_backward(params, z, dlogp)  # VJP of log_prob
    z, cache = d.rsample(params, n, rng, dtype)      # reparameterised: z = g(params, noise)
    grads = d.rsample_backward(params, dz, cache)    # VJP of rsample w.r.t. the parameters
    z = d.sample(params, n, rng, dtype)

``log_prob`` and ``rsample`` accept ``xp`` like the bijectors, so autograd can check the pullbacks.

Every distribution takes its event shape: an int ``D`` for vectors ``(N, D)``, or a tuple such as
``(C, H, W)`` for images ``(N, C, H, W)``.  The densities factorise over the event's entries, so the
subclasses compute on the flattened event ``(N, D)`` with ``D = prod(shape)``; the public methods reshape
points, samples, cotangents and parameters (``DiagNormal``'s are of the event's shape) around them.
"""
import numpy as np

from ._checks import QUIET, all_finite, check_event, check_finite_result, check_params, event_shape_of, unbox

LOG_2PI = float(np.log(2.0 * np.pi))


class Distribution:
    """Base class: subclasses give ``_log_prob`` (traceable with ``xp``), ``_log_prob_backward`` and
    ``_rsample`` (and ``_rsample_backward`` when they have parameters), all on flattened events ``(N, D)``
    and flattened parameters.

    ``log_prob`` checks the point, and its result: ``-inf`` is returned only outside the support of a base
    with ``bounded_support`` (a uniform box); any other non-finite log-density raises ``FloatingPointError``.

    Attributes
    ----------
    event_shape : tuple of int
        Shape of one event: ``(D,)`` or, for images, ``(C, H, W)``.
    dim : int
        Its size ``D = prod(event_shape)``.
    """

    dim = None
    event_shape = None
    bounded_support = False

    def _set_shape(self, shape):
        self.event_shape = event_shape_of(self.name, shape)
        self.dim = int(np.prod(self.event_shape))

    @property
    def name(self):
        return type(self).__name__

    def param_shapes(self):
        return {}

    def check_params(self, params, dtype=None):
        """``ValueError`` unless ``params`` has exactly the keys and shapes of :meth:`param_shapes`, finite,
        of ``dtype`` when given (see :func:`npflows._checks.check_params`)."""
        return check_params(self.name, params, self.param_shapes(), dtype)

    # ------------------------------------------------------------------ flattening around the subclass
    def _flat(self, a, xp=np):
        """A batch ``(N, *event_shape)`` as ``(N, D)`` (a view; vector events unchanged)."""
        return a if len(self.event_shape) == 1 else xp.reshape(a, (a.shape[0], self.dim))

    def _unflat(self, a, xp=np):
        return a if len(self.event_shape) == 1 else xp.reshape(a, (a.shape[0],) + self.event_shape)

    def _flat_params(self, params, xp=np):
        if len(self.event_shape) == 1 or not params:
            return params
        return {k: xp.reshape(v, (-1,)) for k, v in params.items()}

    def _shaped_grads(self, grads):
        shapes = self.param_shapes()
        return {k: np.reshape(g, shapes[k]) for k, g in grads.items()}

    # ------------------------------------------------------------------ the interface
    def log_prob(self, params, z, xp=np):
        """:math:`\\log p(z)` of ``z`` ``(N, *event_shape)``, shape ``(N,)``; ``-inf`` only outside a bounded
        support."""
        self._check(z)
        with np.errstate(**QUIET):    # the result is checked below
            lp = self._log_prob(self._flat_params(params, xp), self._flat(z, xp), xp)
        if not all_finite(lp):
            check_finite_result(f"{self.name} log_prob", lp, "the log-density", allow_neg_inf=self.bounded_support,
                                hint=f"its magnitude exceeds the range of {np.dtype(unbox(z).dtype).name} "
                                     f"(the point is too far out; compute in float64 or rescale the data)")
        return lp

    def log_prob_backward(self, params, z, dlogp):
        """VJP of :meth:`log_prob`: ``(dz, grads)`` for the cotangent ``dlogp`` ``(N,)``; ``dz`` has the shape of
        ``z`` and ``grads`` the keys and shapes of :meth:`param_shapes`."""
        dz, grads = self._log_prob_backward(self._flat_params(params), self._flat(z), dlogp)
        return self._unflat(dz), self._shaped_grads(grads)

    def rsample(self, params, n, rng, dtype=np.float64, xp=np):
        """Reparameterised samples ``(n, *event_shape)`` and the cache of :meth:`rsample_backward`."""
        z, cache = self._rsample(self._flat_params(params, xp), n, rng, dtype, xp)
        return self._unflat(z, xp), cache

    def rsample_backward(self, params, dz, cache):
        """VJP of :meth:`rsample` for the parameters: ``grads`` with the keys and shapes of
        :meth:`param_shapes`."""
        if not self.param_shapes():
            return {}
        return self._shaped_grads(self._rsample_backward(self._flat_params(params), self._flat(dz), cache))

    def init(self, rng=None, dtype=np.float64):
        return {}

    tempered = False      # True for the Gaussians, whose samples can be drawn at a temperature

    def sample(self, params, n, rng, dtype=np.float64, temperature=1.0):
        """``n`` samples ``(n, *event_shape)``.  ``temperature`` T (Gaussian bases only; Kingma & Dhariwal
        2018, arXiv:1807.03039, sec. 5): the noise is scaled by T, so the samples come from the Gaussian with
        its standard deviations multiplied by T (T < 1 trades diversity for typical samples)."""
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)) \
                or not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"{self.name}.sample: temperature must be a finite number > 0, got {temperature!r}")
        if temperature == 1:
            return self.rsample(params, n, rng, dtype)[0]
        if not self.tempered:
            raise ValueError(f"{self.name}.sample: a temperature other than 1 is defined for Gaussian bases only "
                             f"(StandardNormal, DiagNormal), got {temperature!r}")
        z, _ = self._rsample(self._flat_params(params), n, rng, dtype, np, float(temperature))
        return self._unflat(z)

    def _check(self, z):
        check_event(self.name, z, self.event_shape, what="point")

    def _shape_repr(self):
        return f"dim={self.dim}" if len(self.event_shape) == 1 else f"event_shape={self.event_shape}"

    def __repr__(self):
        return f"{self.name}({self._shape_repr()})"


class StandardNormal(Distribution):
    """:math:`\\mathcal N(0, I_D)`.

    Notes
    -----
    :math:`\\log p(z) = -\\tfrac12\\lVert z\\rVert^2 - \\tfrac D2\\log 2\\pi`, so
    :math:`\\partial \\log p/\\partial z = -z` and the pullback of a cotangent ``g`` is ``-g z``.
    """

    def __init__(self, shape):
        self._set_shape(shape)

    def _log_prob(self, params, z, xp):
        lp = -0.5 * xp.sum(z * z, axis=1) - 0.5 * self.dim * LOG_2PI
        if not all_finite(lp):
            # z*z overflowed: -m (m/2 * sum (z/m)^2) with m = max|z_d| keeps every result that float holds
            m = xp.max(xp.abs(z), axis=1)
            m = xp.where(m > 0, m, 1.0)
            u = z / m[:, None]
            lp = -m * (0.5 * m * xp.sum(u * u, axis=1)) - 0.5 * self.dim * LOG_2PI
        return lp

    def _log_prob_backward(self, params, z, dlogp):
        return -dlogp[:, None] * z, {}

    tempered = True

    def _rsample(self, params, n, rng, dtype, xp, temperature=1.0):
        eps = rng.standard_normal((n, self.dim))
        return (eps if temperature == 1 else temperature * eps).astype(dtype, copy=False), None


class DiagNormal(Distribution):
    """:math:`\\mathcal N(\\mu, \\mathrm{diag}(\\sigma^2))` with learnable ``loc`` = mu and
    ``log_scale`` = log sigma, both of the event's shape (``(D,)`` or ``(C, H, W)``).

    Notes
    -----
    With :math:`u = (z-\\mu)/\\sigma`,
    :math:`\\log p = \\sum_d [-\\tfrac12 u_d^2 - \\log\\sigma_d] - \\tfrac D2 \\log 2\\pi`.  Then
    :math:`\\partial/\\partial z = -u/\\sigma`, :math:`\\partial/\\partial\\mu = u/\\sigma`,
    :math:`\\partial/\\partial\\log\\sigma = u^2 - 1`.
    Reparameterised sampling :math:`z = \\mu + \\sigma\\epsilon` pulls ``dz`` back to
    :math:`d\\mu = \\sum_n dz`, :math:`d\\log\\sigma = \\sum_n dz\\,\\sigma\\epsilon`.
    """

    def __init__(self, shape):
        self._set_shape(shape)

    def param_shapes(self):
        return {"loc": self.event_shape, "log_scale": self.event_shape}

    def init(self, rng=None, dtype=np.float64):
        return {"loc": np.zeros(self.event_shape, dtype), "log_scale": np.zeros(self.event_shape, dtype)}

    def _log_prob(self, params, z, xp):
        u = (z - params["loc"]) * xp.exp(-params["log_scale"])
        return -0.5 * xp.sum(u * u, axis=1) - xp.sum(params["log_scale"]) - 0.5 * self.dim * LOG_2PI

    def _log_prob_backward(self, params, z, dlogp):
        inv = np.exp(-params["log_scale"])
        u = (z - params["loc"]) * inv
        g = dlogp[:, None]
        dz = -g * u * inv
        return dz, {"loc": -dz.sum(0), "log_scale": (g * (u * u - 1.0)).sum(0)}

    tempered = True

    def _rsample(self, params, n, rng, dtype, xp, temperature=1.0):
        eps = rng.standard_normal((n, self.dim))
        eps = (eps if temperature == 1 else temperature * eps).astype(dtype, copy=False)
        return params["loc"] + xp.exp(params["log_scale"]) * eps, eps

    def _rsample_backward(self, params, dz, cache):
        return {"loc": dz.sum(0), "log_scale": (dz * cache).sum(0) * np.exp(params["log_scale"])}


class UniformBox(Distribution):
    """Uniform on the box ``[low, high]^D`` (fixed bounds).  ``log_prob`` is ``-sum log(high-low)``
    inside and ``-inf`` outside; its gradient in z is zero wherever it is finite."""

    def __init__(self, shape, low=0.0, high=1.0):
        if not high > low:
            raise ValueError(f"UniformBox: need high > low, got low={low}, high={high}")
        self._set_shape(shape)
        self.low, self.high = float(low), float(high)

    bounded_support = True

    def _log_prob(self, params, z, xp):
        inside = xp.all((z >= self.low) & (z <= self.high), axis=1)
        val = -self.dim * np.log(self.high - self.low)
        return xp.where(inside, val, -np.inf).astype(z.dtype)

    def _log_prob_backward(self, params, z, dlogp):
        return np.zeros_like(z), {}

    def _rsample(self, params, n, rng, dtype, xp):
        u = rng.uniform(self.low, self.high, size=(n, self.dim))
        return u.astype(dtype, copy=False), None

    def __repr__(self):
        return f"UniformBox({self._shape_repr()}, low={self.low}, high={self.high})"


class StandardLogistic(Distribution):
    """The NICE prior: independent standard logistic components (Dinh et al. 2014, arXiv:1410.8516).

    Notes
    -----
    :math:`\\log p(z) = -\\sum_d [\\mathrm{softplus}(z_d) + \\mathrm{softplus}(-z_d)]`, and
    :math:`\\partial/\\partial z = -\\sigma(z) + \\sigma(-z) = 1 - 2\\sigma(z) = -\\tanh(z/2)`.
    Sampling: :math:`z = \\log u - \\log(1-u)`, ``u`` uniform on (0, 1).
    """

    def __init__(self, shape):
        self._set_shape(shape)

    def _log_prob(self, params, z, xp):
        return -xp.sum(xp.logaddexp(0.0, z) + xp.logaddexp(0.0, -z), axis=1)

    def _log_prob_backward(self, params, z, dlogp):
        return -dlogp[:, None] * np.tanh(0.5 * z), {}

    def _rsample(self, params, n, rng, dtype, xp):
        u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=(n, self.dim))
        return (np.log(u) - np.log1p(-u)).astype(dtype, copy=False), None
