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

**Conditional flows** (one way for every layer).  ``forward``, ``inverse`` (and the flows' methods) take an
optional ``context``, an array ``(N, C)`` with one row per sample, in the data's dtype::

    y, logdet, cache = b.forward(params, x, context)     # context: (N, C), or None
    x, logdet = b.inverse(params, y, context)
    dx, grads, dcontext = b.backward(params, dy, dlogdet, cache)   # dcontext: (N, C)

The rule: ``backward`` returns ``(dx, grads, dcontext)`` exactly when the ``forward`` that made the cache was
given a context, and ``(dx, grads)`` when it was not.  The caller who passed a context receives its cotangent
(to train an encoder that computes it, as in a VAE), and every caller that passes none, all code written
before contexts existed included, unpacks two values as before.  The alternative of a reserved key in
``grads`` would break "the gradient keys are exactly the parameter keys".  To know which, a ``forward`` given
a context returns its cache wrapped in a :class:`ContextCache` (``cache.inner`` is the layer's own cache).

* A *conditional* layer (constructed with ``context_dim=C``: the couplings, MAF/IAF, the autoregressive
  spline, the CNF) feeds the context to its conditioner network and needs it: ``forward``/``inverse``
  without a context, or with one of the wrong width, raise ``ValueError`` naming the layer.  Its attribute
  ``context_dim`` is C (None for a layer that is not conditional).
* Every other layer accepts a context and ignores it, through this base class, with no code of its own:
  its cotangent is zero (``backward`` returns zeros of the context's shape when nothing reads it).
* ``Sequential`` and ``Inverse`` hand the same context to every layer and sum the layers' context
  cotangents (the context enters every layer, so by the chain rule its cotangent is the sum); a
  ``Sequential`` is conditional when any of its layers is, and its layers must agree on C.
* A context is checked once per public call: a float array of rank 2 (batch first), one row per sample,
  finite, in the input's dtype (float32 data with a float64 context is refused, not silently upcast), and
  of width ``context_dim`` for a conditional bijector; else ``ValueError``.
* ``context`` is the third positional argument of ``forward`` and ``inverse``; ``xp`` (the tracing hook)
  is passed by keyword, ``forward(params, x, context, xp=autograd.numpy)``.

Writing a layer: a layer with no conditioner implements ``_forward(params, x, xp)``, ``_inverse(params, y,
xp)`` and ``_backward(params, dy, dlogdet, cache) -> (dx, grads)`` and never sees a context.  A layer that
reads the context sets the class attribute ``takes_context = True`` and implements ``_forward(params, x, xp,
context)``, ``_inverse(params, y, xp, context)`` and ``_backward(params, dy, dlogdet, cache) -> (dx, grads,
dcontext)`` with ``dcontext`` None when its forward had no context (its cache tells it).  The base class
dispatches on ``takes_context``; containers (``Sequential``, ``Inverse``) take contexts too.

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

from .._checks import (QUIET, all_finite, all_finite_many, check_array, check_event, check_finite_result,
                       check_params, event_shape_of, unbox)
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


def check_context(owner, context, x, width=None):
    """Validate a context for the batch ``x``: ``None`` passes; otherwise a finite float32/float64 array of
    rank 2 with one row per sample of ``x``, in ``x``'s dtype, and ``width`` columns when given.
    ``ValueError`` naming ``owner`` otherwise.  Returns ``context``."""
    if context is None:
        return None
    check_array(owner, context, ndim=2, size=width, what="context")
    raw, xr = unbox(context), unbox(x)
    n = xr.shape[0] if hasattr(xr, "shape") and len(xr.shape) else None
    if n is not None and raw.shape[0] != n:
        raise ValueError(f"{owner}: expected a context with one row per sample ({n}), got shape {raw.shape}")
    if hasattr(xr, "dtype") and raw.dtype != xr.dtype:
        raise ValueError(f"{owner}: the context's dtype {raw.dtype} differs from the input's {xr.dtype}; cast it "
                         f"(no silent up- or downcast)")
    return context


class ContextCache:
    """The cache that a public ``forward`` given a context returns: the bijector's own cache ``inner`` and the
    ``context``, so that ``backward`` returns the context's cotangent (see the module docstring)."""

    __slots__ = ("inner", "context")

    def __init__(self, inner, context):
        self.inner, self.context = inner, context

    def __repr__(self):
        return f"ContextCache(context shape {unbox(self.context).shape})"


def split_cache(cache):
    """``(the bijector's own cache, the context or None)`` of a cache that a public ``forward`` returned."""
    if isinstance(cache, ContextCache):
        return cache.inner, cache.context
    return cache, None


def add_cotangents(a, b):
    """``a + b`` where None stands for a zero cotangent (a layer that does not read the context)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


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
    context_dim = None
    """C for a conditional bijector, which needs a context ``(N, C)``; None for one that needs none."""
    takes_context = False
    """True for a class whose private ``_forward``/``_inverse`` take the context and whose ``_backward`` returns
    its cotangent as a third value (conditional layers, containers); see the module docstring."""

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
        Called only on failure, so it may recompute what it needs.  (A layer that takes a context is called
        with it as a fourth argument when the call had one.)"""
        return None

    def _check_results(self, direction, params, x, outputs, context=None):
        """Raise ``FloatingPointError`` naming the quantity when an output array is not finite.  ``context`` is
        passed (by the ``_call_*`` methods, only to a class that takes contexts) for ``_explain``."""
        for what, a in outputs:
            if not all_finite(a):
                why = None
                try:
                    why = (self._explain(direction, params, x) if context is None
                           else self._explain(direction, params, x, context))
                except Exception:        # a diagnosis must never hide the error it explains
                    why = None
                check_finite_result(f"{self.name} {direction}", a, f"the {what}",
                                    hint=why or "the layer overflows at this input and these parameters")

    # ------------------------------------------------------------------ the contract
    def _check_context(self, context, x, direction):
        """The public methods' check of a context (see :func:`check_context`): presence for a conditional
        bijector, then rank, rows, dtype, finiteness and width."""
        if context is None:
            self._require_context(None, direction)
            return None
        return check_context(f"{self.name} {direction}", context, x, self.context_dim)

    def _require_context(self, context, direction):
        """``ValueError`` when this bijector is conditional and ``context`` is None (or of the wrong width):
        the check that a conditional layer inside a container makes (the container checked the rest)."""
        if self.context_dim is None:
            return
        if context is None:
            raise ValueError(f"{self.name} {direction}: a conditional layer (context_dim={self.context_dim}) needs "
                             f"a context of shape (N, {self.context_dim}); got none")
        shape = unbox(context).shape
        if len(shape) != 2 or shape[1] != self.context_dim:
            raise ValueError(f"{self.name} {direction}: expected a context of shape (N, {self.context_dim}), got "
                             f"shape {shape}")

    @managed
    def forward(self, params, x, context=None, xp=np):
        """``(y, logdet, cache)`` for ``y = f(x)``; ``x`` is ``(N, *event_shape)``, ``y`` is
        ``(N, *out_event_shape)``, logdet ``(N,)``.  ``context``: ``(N, C)`` or None (see the module
        docstring); given one, the cache is a :class:`ContextCache` and ``backward`` returns its cotangent."""
        self._check_forward_input(x)
        self.check_params(params, unbox(x).dtype)
        context = self._check_context(context, x, "forward")
        with np.errstate(**QUIET):
            y, logdet, cache = self._call_forward(params, x, xp, checked_input=True, context=context)
        return (y, logdet, cache) if context is None else (y, logdet, ContextCache(cache, context))

    @managed
    def inverse(self, params, y, context=None, xp=np):
        """``(x, logdet)`` with ``x = f^{-1}(y)`` and ``logdet = log|det dx/dy|`` of shape ``(N,)``; ``context``
        as in :meth:`forward`."""
        self._check_inverse_input(y)
        self.check_params(params, unbox(y).dtype)
        context = self._check_context(context, y, "inverse")
        with np.errstate(**QUIET):
            return self._call_inverse(params, y, xp, checked_input=True, context=context)

    @managed
    def backward(self, params, dy, dlogdet, cache):
        """Vector-Jacobian product of ``forward``: cotangents ``(dy, dlogdet)`` -> ``(dx, grads)``, or
        ``(dx, grads, dcontext)`` when the forward that returned ``cache`` was given a context (``dcontext``
        has the context's shape; zeros where nothing reads the context)."""
        inner, context = split_cache(cache)
        with np.errstate(**QUIET):
            dx, grads, dcontext = self._call_backward(params, dy, dlogdet, inner, with_context=True)
        if not all_finite_many(grads.values()):          # one pass over every gradient; the key on failure
            for k, g in grads.items():
                check_finite_result(f"{self.name} backward", g, f"the gradient of {k!r}",
                                    hint=self._explain("backward", params, None) or "the layer's derivative "
                                         "overflows at this input and these parameters")
        if context is None:
            return dx, grads
        if dcontext is None:                             # nothing in the bijector reads the context
            raw = unbox(context)
            dcontext = np.zeros(raw.shape, raw.dtype)
        return dx, grads, dcontext

    def _call_backward(self, params, dy, dlogdet, cache, with_context=False):
        """``backward`` whose parameter gradients the caller checks (once, for a whole composite); the input
        cotangent (and the context's) is checked here, so a composite names the layer where it overflowed.
        Returns ``(dx, grads)``, or with ``with_context`` ``(dx, grads, dcontext)`` where ``dcontext`` is None
        when no layer read a context (a zero cotangent that was never materialised)."""
        if self.takes_context:
            dx, grads, dcontext = self._backward(params, dy, dlogdet, cache)
        else:
            (dx, grads), dcontext = self._backward(params, dy, dlogdet, cache), None
        checks = [("input cotangent", dx)]
        if dcontext is not None:
            checks.append(("context cotangent", dcontext))
        self._check_results("backward", params, None, checks)      # (a backward diagnosis needs no context)
        return (dx, grads, dcontext) if with_context else (dx, grads)

    def _trusts_container(self, direction):
        """True when this layer's input check is the generic one (rank, size, dtype, finiteness), which the
        previous layer's checked output already satisfies: a container may then skip it."""
        hook = "_check_forward_input" if direction == "forward" else "_check_inverse_input"
        return getattr(type(self), hook) is getattr(Bijector, hook)

    def _call_forward(self, params, x, xp=np, checked_input=False, keep_cache=True, context=None):
        """``forward`` with the parameters (and the context's rank, rows, dtype and finiteness) already validated
        by the caller.  ``keep_cache=False`` (an evaluation that nothing will differentiate, such as
        ``log_prob``) returns the cache as None and lets a container free each layer's intermediate arrays as
        soon as the next layer has its input.  A layer that does not take a context never sees it."""
        if not checked_input:
            self._check_forward_input(x)
        if self.takes_context:
            self._require_context(context, "forward")
            y, logdet, cache = (self._forward(params, x, xp, context) if keep_cache
                                else self._forward_value(params, x, xp, context))
        else:
            y, logdet, cache = self._forward(params, x, xp) if keep_cache else self._forward_value(params, x, xp)
            context = None
        self._check_results("forward", params, x, (("output", y), ("log-determinant", logdet)),
                            **({} if context is None else {"context": context}))
        return y, logdet, (cache if keep_cache else None)

    def _forward_value(self, params, x, xp, *context):
        """``_forward`` for a caller that discards the cache; containers override it to keep none.  (A class
        that takes a context receives it as the last argument, as its ``_forward`` does.)"""
        return self._forward(params, x, xp, *context)

    def _call_inverse(self, params, y, xp=np, checked_input=False, context=None):
        """``inverse`` with the parameters (and the context, as in ``_call_forward``) already validated."""
        if not checked_input:
            self._check_inverse_input(y)
        if self.takes_context:
            self._require_context(context, "inverse")
            x, logdet = self._inverse(params, y, xp, context)
        else:
            x, logdet = self._inverse(params, y, xp)
            context = None
        self._check_results("inverse", params, y, (("output", x), ("log-determinant", logdet)),
                            **({} if context is None else {"context": context}))
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
