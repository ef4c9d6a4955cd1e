"""The bijector contract, which every layer of npflows follows.

A bijector is fixed structure only (sizes, masks, permutations, activation choice).  Its parameters are
a flat ``dict[str, ndarray]`` that the caller owns::

    params = b.init(rng)                         # or b.init(rng, x) for data-dependent init
    y, logdet, cache = b.forward(params, x)      # the closed-form direction, one pass
    x, logdet = b.inverse(params, y)             # exact, or solved numerically to a stated tolerance
    dx, grads = b.backward(params, dy, dlogdet, cache)   # hand-derived VJP of forward

``logdet`` is ``log|det dy/dx|`` summed over the event, shape ``(N,)``; ``inverse`` returns
``log|det dx/dy|``.  ``backward`` returns the cotangent of the input and a dict of parameter cotangents
with exactly the keys and shapes of ``params``.
"""
import numpy as np

from .._checks import check_array


class Bijector:
    """Base class: subclasses implement ``_forward``, ``_inverse``, ``backward`` and ``param_shapes``.

    The public ``forward``/``inverse`` validate the input (rank, size, finiteness, dtype, domain) and
    then call the subclass.  ``_forward``/``_inverse`` take ``xp`` (``numpy`` or ``autograd.numpy``),
    use only ``xp.`` functions and never write into arrays, so the harness can trace them.

    Attributes
    ----------
    dim : int
        Size of the event (the last axis of ``(N, D)`` data).
    """

    dim = None

    @property
    def name(self):
        return type(self).__name__

    # ------------------------------------------------------------------ parameters
    def param_shapes(self):
        """``{key: shape}`` of the parameters; derived from the structure, no allocation."""
        return {}

    def init(self, rng, x=None, dtype=np.float64):
        """Fresh parameters.  ``rng`` is a ``numpy.random.Generator``; ``x`` (optional) is a data batch for
        data-dependent initialisation, and fixes the dtype when given."""
        return {}

    # ------------------------------------------------------------------ validation hooks
    def _check_forward_input(self, x):
        check_array(self.name, x, ndim=2, size=self.dim, what="forward input")

    def _check_inverse_input(self, y):
        check_array(self.name, y, ndim=2, size=self.dim, what="inverse input")

    # ------------------------------------------------------------------ the contract
    def forward(self, params, x, xp=np):
        """``(y, logdet, cache)`` for ``y = f(x)``; ``x`` is ``(N, D)``, logdet ``(N,)``."""
        self._check_forward_input(x)
        return self._forward(params, x, xp)

    def inverse(self, params, y, xp=np):
        """``(x, logdet)`` with ``x = f^{-1}(y)`` and ``logdet = log|det dx/dy|`` of shape ``(N,)``."""
        self._check_inverse_input(y)
        return self._inverse(params, y, xp)

    def backward(self, params, dy, dlogdet, cache):
        """Vector-Jacobian product of ``forward``: cotangents ``(dy, dlogdet)`` -> ``(dx, grads)``."""
        raise NotImplementedError(f"{self.name} has no hand-written backward")

    def _forward(self, params, x, xp):
        raise NotImplementedError

    def _inverse(self, params, y, xp):
        raise NotImplementedError

    def __repr__(self):
        return f"{self.name}(dim={self.dim})"


def zeros_logdet(x, xp=np):
    """A zero logdet of shape ``(N,)`` in the dtype of ``x`` (volume-preserving maps)."""
    return xp.zeros(x.shape[0], dtype=x.dtype)


def sum_event(a, xp=np):
    """Sum over every axis but the batch axis: ``(N, ...) -> (N,)``."""
    return xp.sum(xp.reshape(a, (a.shape[0], -1)), axis=1)
