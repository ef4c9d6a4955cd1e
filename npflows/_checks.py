"""Input validation shared by every bijector, distribution and network.

All checks look through autograd's ``ArrayBox`` (without importing autograd) so the very same code
validates plain NumPy arrays and traced values alike.  Every failure raises ``ValueError`` naming the
object that refused the input, what it expected and what it got: no NaN is returned quietly.
"""
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def unbox(x):
    """The concrete ndarray behind ``x`` (autograd wraps traced arrays in boxes with ``_value``)."""
    while hasattr(x, "_value"):
        x = x._value
    return x


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
        raise ValueError(f"{owner}: expected a {what} of rank {ndim} (batch first), got shape {raw.shape}")
    if isinstance(size, tuple):
        if raw.shape[1:] != size:
            raise ValueError(f"{owner}: expected a {what} of shape (N, {', '.join(map(str, size))}), "
                             f"got {raw.shape}")
    elif size is not None and raw.shape[-1] != size:
        raise ValueError(f"{owner}: expected a {what} with {size} features on the last axis, got shape {raw.shape}")
    if not np.isfinite(raw).all():
        bad = int(np.size(raw) - np.count_nonzero(np.isfinite(raw)))
        raise ValueError(f"{owner}: the {what} contains {bad} NaN or inf value(s)")
    return x


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


def check_same_dtype(owner, params, dtype):
    """Refuse parameters whose dtype differs from the data's: NumPy would silently upcast float32."""
    for k, v in params.items():
        if v.dtype != dtype:
            raise ValueError(f"{owner}: parameter {k!r} is {v.dtype} but the data is {dtype}; "
                             f"cast them together with npflows.cast_params(params, {np.dtype(dtype).name!r})")


def check_finite_result(owner, value, what, allow_neg_inf=False):
    """Raise when a computed result holds NaN (or +inf, or -inf unless allowed)."""
    v = unbox(value)
    bad = np.isnan(v) | (v == np.inf)
    if not allow_neg_inf:
        bad |= (v == -np.inf)
    if bad.any():
        raise FloatingPointError(f"{owner}: {what} is not finite for {int(bad.sum())} of {v.size} entries "
                                 f"(overflow in a layer, or parameters that diverged)")
    return value


def cast_params(params, dtype):
    """A copy of the flat parameter dict with every array cast to ``dtype`` (float32 or float64)."""
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"cast_params: dtype must be float32 or float64, got {dtype}")
    return {k: np.asarray(v, dtype=dtype) for k, v in params.items()}
