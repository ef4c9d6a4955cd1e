"""The bijector contract, which every layer of npflows follows.

A bijector is fixed structure only (sizes, masks, permutations, activation choice).  Its parameters are
a flat ``dict[str, ndarray]`` that the caller owns::

    params = b.init(rng)                         # or b.init(rng, x) for data-dependent init
    y, logdet, cache = b.forward(params, x)      # the closed-form direction, one pass
    x, logdet = b.inverse(params, y)             # exact, or solved numerically to a stated tolerance
    dx, grads = b.backward(params, dy, dlogdet, cache)   # hand-derived VJP of forward

``x`` is a batch of events ``(N, *event_shape)``: ``(N, D)`` vectors or ``(N, C, H, W)`` images (channels
first); ``y`` is ``(N, *out_event_shape)``, the same shape unless the layer rearranges the event (a reshape or
a squeeze).  ``logdet`` is ``log|det dy/dx|`` summed over the event, shape ``(N,)``; ``inverse`` returns
``log|det dx/dy|``.  ``backward`` returns the cotangent of the input and a dict of parameter cotangents
with exactly the keys and shapes of ``params``.

Errors (one contract for every layer): an answer is finite and accurate, or an exception.  Bad input or
parameters (a missing key, a shape that differs from ``param_shapes()`` even where NumPy would broadcast
it, a dtype other than the data's, NaN or inf, a point outside the domain) raise ``ValueError``; a result
that overflows although its inputs were valid raises ``FloatingPointError`` (``InverseNotConverged`` and
``ODESolveError`` are subclasses).  Each message names the layer, the direction and the quantity, and a
composite prefixes the position of the layer where the problem arose: ``"Sequential layer 3
(AffineCoupling) forward: AffineCoupling forward: the output is not finite ...; the log-scale reaches
1000.0 ..."``.  No layer passes an inf or NaN on to the next.
"""
import numpy as np

from .._checks import (QUIET, all_finite, all_finite_many, check_event, check_finite_result, check_params,
                       event_shape_of, unbox)
from ..perf import managed

ERRORS = (ValueError, FloatingPointError)
"""The two documented exception types (``FloatingPointError`` includes its subclasses
``InverseNotConverged`` and ``ODESolveError``): every refusal of npflows is one of them."""

def in_layer(e, where):
    """The exception ``e`` (a ValueError or FloatingPointError) again, of the same type, its message
    prefixed by ``where`` (\"layer 3 (AffineCoupling) forward\"): how a composite names the layer where a
    problem arose.  Subclasses whose constructor wants more than a message fall back to their documented
    base type."""
    msg = f"{where}: {e}"
    try:
        return type(e)(msg)
    except TypeError:
        return (ValueError if isinstance(e, ValueError) else FloatingPointError)(msg)


class Bijector:
    """Base class: subclasses implement ``_forward``, ``_inverse``, ``_backward`` and ``param_shapes``.

    The public ``forward``/``inverse``/``backward`` validate, call the subclass, and check its results:

    * the parameters (:meth:`check_params`: keys, exact shapes, the data's dtype, finiteness) and the input
      (rank, size, finiteness, dtype, domain) raise ``ValueError`` when bad;
    * every returned array is finite, or ``FloatingPointError`` names the layer, the direction and the
      quantity, with the layer's own diagnosis (:meth:`_explain`) where it has one: no inf or NaN is ever
      passed on to the next layer.

    Containers (``Sequential``, the flows) validate the whole parameter dict once and then call their
    children's ``_call_forward``/``_call_inverse``/``_call_backward``, which check the results (and the input,
    unless it is the generic check that the previous layer's checked output already passed,
    :meth:`_trusts_container`) but not the parameters again; the gradients of a whole composite are checked
    once, in one pass, by its public ``backward``.  ``_forward``/``_inverse`` take ``xp`` (``numpy`` or ``autograd.numpy``), use only
    ``xp.`` functions and never write into arrays, so the harness can trace them.

    Attributes
    ----------
    dim : int
        Number of scalars in one event: ``D`` for vector data ``(N, D)``, ``C*H*W`` for images
        ``(N, C, H, W)``.  A bijection keeps it, so every layer of a composite has the same ``dim``.
    event_shape : tuple of int
        The shape of one input event, after the batch axis: ``(D,)`` (the default, from ``dim``) or
        ``(C, H, W)``.  The input checks, the harness and the golden cases use it.
    out_event_shape : tuple of int
        The shape of one output event of ``forward`` (the input of ``inverse``); equal to ``event_shape``
        except for layers that rearrange the event, such as a squeeze ``(C, H, W) -> (4C, H/2, W/2)``.
    """

    dim = None
    _event_shape = None           # set by layers whose event is not a vector (or whose shape changes)
    _out_event_shape = None

    @property
    def event_shape(self):
        if self._event_shape is not None:
            return self._event_shape
        return None if self.dim is None else (self.dim,)

    @property
    def out_event_shape(self):
        return self._out_event_shape if self._out_event_shape is not None else self.event_shape

    def _set_event_shape(self, shape, out_shape=None):
        """Fix ``event_shape`` (and ``out_event_shape``, default the same) and ``dim`` from it; for layers
        whose event is not a vector or whose forward changes its shape.  ``ValueError`` for a bad shape or
        two shapes of different sizes."""
        self._event_shape = event_shape_of(self.name, shape)
        self._out_event_shape = self._event_shape if out_shape is None else event_shape_of(self.name, out_shape)
        self.dim = int(np.prod(self._event_shape))
        if int(np.prod(self._out_event_shape)) != self.dim:
            raise ValueError(f"{self.name}: the output event shape {self._out_event_shape} has a different size "
                             f"from the input's {self._event_shape}")

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

    def check_params(self, params, dtype=None):
        """Raise ``ValueError`` unless ``params`` has exactly the keys of :meth:`param_shapes`, each a finite
        float array of exactly that shape (one that would broadcast is refused) and of ``dtype`` when given,
        and satisfies the layer's own constraints (:meth:`_check_param_values`)."""
        shapes = self.__dict__.get("_param_shapes_cache")
        if shapes is None:          # fixed structure: computed once per object
            shapes = self._param_shapes_cache = {k: tuple(v) for k, v in self.param_shapes().items()}
        check_params(self.name, params, shapes, dtype)
        self._check_param_values(params)
        return params

    def _check_param_values(self, params):
        """Layer-specific constraints on valid parameters (e.g. Planar's w != 0); raise ``ValueError``."""

    # ------------------------------------------------------------------ validation hooks
    def _check_forward_input(self, x):
        check_event(self.name, x, self.event_shape, what="forward input")

    def _check_inverse_input(self, y):
        check_event(self.name, y, self.out_event_shape, what="inverse input")

    def _explain(self, direction, params, x):
        """A diagnosis of a non-finite result of ``direction`` at input ``x`` (a sentence such as "the
        log-scale reaches 1000.0 and exp overflows float64 above 709.8; use scale='tanh'"), or None.
        Called only on failure, so it may recompute what it needs."""
        return None

    def _check_results(self, direction, params, x, outputs):
        """Raise ``FloatingPointError`` naming the quantity when an output array is not finite."""
        for what, a in outputs:
            if not all_finite(a):
                why = None
                try:
                    why = self._explain(direction, params, x)
                except Exception:        # a diagnosis must never hide the error it explains
                    why = None
                check_finite_result(f"{self.name} {direction}", a, f"the {what}",
                                    hint=why or "the layer overflows at this input and these parameters")

    # ------------------------------------------------------------------ the contract
    @managed
    def forward(self, params, x, xp=np):
        """``(y, logdet, cache)`` for ``y = f(x)``; ``x`` is ``(N, *event_shape)``, ``y`` is
        ``(N, *out_event_shape)``, logdet ``(N,)``."""
        self._check_forward_input(x)
        self.check_params(params, unbox(x).dtype)
        with np.errstate(**QUIET):
            return self._call_forward(params, x, xp, checked_input=True)

    @managed
    def inverse(self, params, y, xp=np):
        """``(x, logdet)`` with ``x = f^{-1}(y)`` and ``logdet = log|det dx/dy|`` of shape ``(N,)``."""
        self._check_inverse_input(y)
        self.check_params(params, unbox(y).dtype)
        with np.errstate(**QUIET):
            return self._call_inverse(params, y, xp, checked_input=True)

    @managed
    def backward(self, params, dy, dlogdet, cache):
        """Vector-Jacobian product of ``forward``: cotangents ``(dy, dlogdet)`` -> ``(dx, grads)``."""
        with np.errstate(**QUIET):
            dx, grads = self._call_backward(params, dy, dlogdet, cache)
        if not all_finite_many(grads.values()):          # one pass over every gradient; the key on failure
            for k, g in grads.items():
                check_finite_result(f"{self.name} backward", g, f"the gradient of {k!r}",
                                    hint=self._explain("backward", params, None) or "the layer's derivative "
                                         "overflows at this input and these parameters")
        return dx, grads

    def _call_backward(self, params, dy, dlogdet, cache):
        """``backward`` whose parameter gradients the caller checks (once, for a whole composite); the input
        cotangent is checked here, so a composite names the layer where it overflowed."""
        dx, grads = self._backward(params, dy, dlogdet, cache)
        self._check_results("backward", params, None, [("input cotangent", dx)])
        return dx, grads

    def _trusts_container(self, direction):
        """True when this layer's input check is the generic one (rank, size, dtype, finiteness), which the
        previous layer's checked output already satisfies: a container may then skip it."""
        hook = "_check_forward_input" if direction == "forward" else "_check_inverse_input"
        return getattr(type(self), hook) is getattr(Bijector, hook)

    def _call_forward(self, params, x, xp=np, checked_input=False, keep_cache=True):
        """``forward`` with the parameters already validated by the caller.  ``keep_cache=False`` (an
        evaluation that nothing will differentiate, such as ``log_prob``) returns the cache as None and lets
        a container free each layer's intermediate arrays as soon as the next layer has its input."""
        if not checked_input:
            self._check_forward_input(x)
        y, logdet, cache = self._forward(params, x, xp) if keep_cache else self._forward_value(params, x, xp)
        self._check_results("forward", params, x, (("output", y), ("log-determinant", logdet)))
        return y, logdet, (cache if keep_cache else None)

    def _forward_value(self, params, x, xp):
        """``_forward`` for a caller that discards the cache; containers override it to keep none."""
        return self._forward(params, x, xp)

    def _call_inverse(self, params, y, xp=np, checked_input=False):
        """``inverse`` with the parameters already validated by the caller."""
        if not checked_input:
            self._check_inverse_input(y)
        x, logdet = self._inverse(params, y, xp)
        self._check_results("inverse", params, y, (("output", x), ("log-determinant", logdet)))
        return x, logdet

    def _backward(self, params, dy, dlogdet, cache):
        raise NotImplementedError(f"{self.name} has no hand-written backward")

    def _forward(self, params, x, xp):
        raise NotImplementedError

    def _inverse(self, params, y, xp):
        raise NotImplementedError

    def __repr__(self):
        if self.event_shape is not None and len(self.event_shape) > 1:
            return f"{self.name}(event_shape={self.event_shape})"
        return f"{self.name}(dim={self.dim})"


def zeros_logdet(x, xp=np):
    """A zero logdet of shape ``(N,)`` in the dtype of ``x`` (volume-preserving maps)."""
    return xp.zeros(x.shape[0], dtype=x.dtype)


def sum_event(a, xp=np):
    """Sum over every axis but the batch axis: ``(N, ...) -> (N,)`` (an empty batch gives ``(0,)``)."""
    return xp.sum(a, axis=tuple(range(1, a.ndim)))
