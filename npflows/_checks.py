"""Input validation shared by every bijector, distribution and network.

All checks look through autograd's ``ArrayBox`` (without importing autograd) so the very same code
validates plain NumPy arrays and traced values alike.

The contract for errors, shared by every layer, distribution and flow:

* bad input or parameters (wrong type, rank, shape, dtype or keys; NaN or inf; outside the domain) raise
  ``ValueError`` naming the object that refused them, what it expected and what it got;
* a result that is not finite although the input and parameters were valid (overflow that no stable
  formula avoids) raises ``FloatingPointError`` (or one of its documented subclasses, such as
  ``InverseNotConverged`` and ``ODESolveError``) naming the layer, the direction and the quantity;
* the only non-finite value ever returned is a ``-inf`` log-density outside a base's support.
"""
import math
from collections.abc import Mapping

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_sum = np.add.reduce

QUIET = dict(over="ignore", invalid="ignore", divide="ignore")
"""Floating-point warnings are silenced inside a layer: every result is checked afterwards, and a non-finite
one raises an error that names the layer, which a RuntimeWarning printed from deep inside NumPy does not.
Set once per public call (``forward``, ``inverse``, ``backward``, the flows' methods); the ``_call_*`` methods
that containers use run inside it."""


def unbox(x):
    """The concrete ndarray behind ``x`` (autograd wraps traced arrays in boxes with ``_value``)."""
    if type(x) is np.ndarray:      # the common case, without hasattr's failed attribute lookup
        return x
    while hasattr(x, "_value"):
        x = x._value
    return x


def all_finite(a):
    """True when every entry of ``a`` is finite.  One pass without a temporary in the common case: a sum
    is finite only if every term is (NaN and inf propagate; +inf + -inf is NaN); only when the sum is not
    finite, which finite terms can also cause by overflowing it, are the entries looked at one by one."""
    raw = unbox(a)
    if raw.size == 0:
        return True
    if math.isfinite(_sum(raw, axis=None)):      # the ufunc's own reduce: a third of np.sum's call overhead
        return True
    return bool(np.isfinite(raw).all())


CONCAT_MAX = 1 << 17
"""Up to this many entries in all, :func:`all_finite_many` sums one concatenated copy: a reduction's fixed
cost (about 1.5 us) then counts once instead of once per array (48 arrays for an 8-coupling RealNVP: 37
instead of 74 us).  Beyond it the copy would cost more than the calls it saves."""


def all_finite_many(arrays):
    """:func:`all_finite` over several arrays: their sum (of one concatenated copy when they are small,
    else one reduction each, summed into one Python float), then one test."""
    arrays = [unbox(a) for a in arrays]
    if len(arrays) > 1 and sum(a.size for a in arrays) <= CONCAT_MAX:
        total = float(_sum(np.concatenate(arrays, axis=None)))
    else:
        total = 0.0
        for a in arrays:
            if a.size:
                total += float(_sum(a, axis=None))
    if math.isfinite(total):
        return True
    return all(all_finite(a) for a in arrays)      # a sum of finite terms can overflow too


def count_nonfinite(a):
    """``(number of NaN or inf entries, index of the first one or None)`` of ``a``."""
    raw = np.asarray(unbox(a))
    bad = ~np.isfinite(raw)
    n = int(bad.sum())
    return n, (tuple(int(i) for i in np.argwhere(bad)[0]) if n else None)


def check_array(owner, x, ndim=None, size=None, what="input"):
    """Check that ``x`` is a finite float32/float64 array of rank ``ndim`` whose last axis has ``size``.

    ``size`` may be None (any), an int (last axis), or a tuple (the whole event shape after the batch
    axis).  Returns ``x`` unchanged so calls can be chained.
    """
    raw = unbox(x)
    if not isinstance(raw, np.ndarray):
        raise ValueError(f"{owner}: expected the {what} to be a numpy array, got {type(raw).__name__}")
    if raw.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{owner}: expected a float32 or float64 {what}, got dtype {raw.dtype}")
    if ndim is not None and raw.ndim != ndim:
        raise ValueError(f"{owner}: expected the {what} to have rank {ndim} (batch first), got shape {raw.shape}")
    if isinstance(size, tuple):
        if raw.shape[1:] != size:
            raise ValueError(f"{owner}: expected the {what} to have shape (N, {', '.join(map(str, size))}), "
                             f"got {raw.shape}")
    elif size is not None and raw.shape[-1] != size:
        raise ValueError(f"{owner}: expected a {what} with {size} features on the last axis, got shape {raw.shape}")
    if not all_finite(raw):
        bad, first = count_nonfinite(raw)
        raise ValueError(f"{owner}: the {what} contains {bad} NaN or inf value(s) (the first at index {first})")
    return x


def event_shape_of(owner, shape):
    """``shape`` as an event shape: an int ``D`` is ``(D,)``; a tuple of ints >= 1 is itself.  ``ValueError``
    otherwise."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = tuple(shape)
    except TypeError:
        out = None
    if not out or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in out):
        raise ValueError(f"{owner}: an event shape is an int >= 1 or a non-empty tuple of them, got {shape!r}")
    return tuple(int(s) for s in out)


def check_event(owner, x, event_shape, what="input"):
    """:func:`check_array` for a batch of events ``(N, *event_shape)``: a vector event ``(D,)`` keeps the
    message about the last axis; ``None`` (a shape-agnostic layer) requires rank 2 as before."""
    if event_shape is None:
        return check_array(owner, x, ndim=2, what=what)
    if len(event_shape) == 1:
        return check_array(owner, x, ndim=2, size=event_shape[0], what=what)
    return check_array(owner, x, ndim=1 + len(event_shape), size=tuple(event_shape), what=what)


def check_params(owner, params, shapes, dtype=None):
    """Validate a parameter dict against the model's ``{key: shape}``: the same keys, each value a float32
    or float64 array of exactly its shape (one that would broadcast is refused too), of the data's
    ``dtype`` when given (NumPy would silently upcast float32), and finite.  Raises ``ValueError`` naming
    the parameter, its shape and the expected shape."""
    params = unbox(params)     # autograd traces a dict of parameters as a DictBox
    if not isinstance(params, Mapping):
        raise ValueError(f"{owner}: expected the parameters as a dict of arrays, got {type(params).__name__}")
    if params.keys() != shapes.keys():
        raise ValueError(f"{owner}: parameter keys do not match the model: missing "
                         f"{sorted(set(shapes) - set(params))}, unexpected {sorted(set(params) - set(shapes))}")
    want = None if dtype is None else np.dtype(dtype)
    for k, shape in shapes.items():
        v = params[k]
        if type(v) is np.ndarray and v.shape == shape and (v.dtype == want if want is not None
                                                           else v.dtype in FLOAT_DTYPES):
            continue                    # the common case in one test; the diagnosis below otherwise
        v = unbox(v)
        if not isinstance(v, (np.ndarray, np.generic)):
            raise ValueError(f"{owner}: parameter {k!r} must be a numpy array of shape {tuple(shape)}, got "
                             f"{type(v).__name__}")
        if v.shape != tuple(shape):
            raise ValueError(f"{owner}: parameter {k!r} has shape {v.shape}, expected {tuple(shape)}")
        if v.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{owner}: parameter {k!r} has dtype {v.dtype}, expected float32 or float64")
        if dtype is not None and v.dtype != dtype:
            raise ValueError(f"{owner}: parameter {k!r} is {v.dtype} but the data is {np.dtype(dtype)}; cast "
                             f"them together with npflows.cast_params(params, {np.dtype(dtype).name!r})")
    if not all_finite_many(params[k] for k in shapes):      # one pass; the offending key only on failure
        for k in shapes:
            v = unbox(params[k])
            if not all_finite(v):
                bad, first = count_nonfinite(v)
                raise ValueError(f"{owner}: parameter {k!r} (shape {v.shape}) contains {bad} NaN or inf value(s) "
                                 f"(the first at index {first})")
    return params


def check_count(owner, n, what="n", minimum=0):
    """An integer count ``n >= minimum`` (a Python or NumPy integer, not a float or bool)."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{owner}: {what} must be an integer, got {n!r} ({type(n).__name__})")
    if n < minimum:
        raise ValueError(f"{owner}: {what} must be >= {minimum}, got {n}")
    return int(n)


def check_rng(owner, rng):
    """A ``numpy.random.Generator`` (npflows has no global random state)."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{owner}: rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(0)), "
                         f"got {type(rng).__name__}")
    return rng


def check_positive(owner, value, what):
    """A finite real number > 0 (a learning rate, a norm bound)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}: {what} must be a finite number > 0, got {value!r}")
    return float(value)


def check_interval(owner, x, low, high, closed, what="input"):
    """Check that every entry of ``x`` lies in [low, high] (closed) or (low, high) (open)."""
    raw = unbox(x)
    ok = ((raw >= low) & (raw <= high)) if closed else ((raw > low) & (raw < high))
    if not ok.all():
        lo, hi = ("[", "]") if closed else ("(", ")")
        bad = raw[~ok]
        raise ValueError(f"{owner}: the {what} must lie in {lo}{low}, {high}{hi}; "
                         f"{bad.size} value(s) do not (e.g. {bad.flat[0]!r})")
    return x


def check_finite_result(owner, value, what, allow_neg_inf=False, hint="overflow in a layer, or parameters "
                                                                           "that diverged"):
    """Raise ``FloatingPointError`` when a computed result holds NaN (or +inf, or -inf unless allowed)."""
    if all_finite(value):
        return value
    v = np.asarray(unbox(value))
    bad = np.isnan(v) | (v == np.inf)
    if not allow_neg_inf:
        bad |= (v == -np.inf)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise FloatingPointError(f"{owner}: {what} is not finite for {int(bad.sum())} of {v.size} entries "
                                 f"(the first at index {first}: {v[first]}); {hint}")
    return value


def cast_params(params, dtype):
    """A copy of the flat parameter dict with every array cast to ``dtype`` (float32 or float64)."""
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"cast_params: dtype must be float32 or float64, got {dtype}")
    return {k: np.asarray(v, dtype=dtype) for k, v in params.items()}
