"""The checks that every registered bijector must pass (the bijector contract of ``npflows.core.bijector``).

Tolerances (float64 unless stated), each relative to the largest magnitude of the quantity compared,
``max|a - b| <= tol * max(1, max|b|)``, so entries near zero are not held to a relative standard that
rounding cannot meet:

* round trip 1e-10: a handful of well-conditioned float64 operations each way;
* logdet vs ``slogdet`` of the brute-force Jacobian 1e-8: the LU factorisation of a small, moderately
  conditioned Jacobian loses a few digits;
* backward vs autograd 1e-8: the same formulas in a different order of rounding;
* the NumPy fast path vs the traceable path 1e-13: the same formulas, but BLAS may fuse a product and
  a sum (FMA) or block a GEMM differently, which changes the last bit or two;
* backward vs central differences 1e-6: a step h = 1e-5 leaves a truncation error O(h^2 f''') ~ 1e-10 and a
  rounding error O(eps |f| / h) ~ 1e-11 for the O(1) test objectives; 1e-6 keeps a wide margin yet catches
  any wrong term (a wrong term is O(1));
* float32 vs float64 1e-4: float32 has eps = 1.2e-7, and a few dozen operations in a chain with O(1)
  condition numbers lose at most ~2-3 of its ~7 digits.

A registry ``Case`` may override any of these (``case.tol``, keyed by the ``tol`` argument names below:
"round_trip", "traced", "logdet", "autograd", "central", "step", "float32"); an entry whose map is solved
numerically to a tolerance (the CNF) ties them to its solver's and says why at its factory.  A case with
``traceable=False`` (forward calls solve_ivp) is checked by central differences of its numerical map for
the brute-force Jacobian, and against autograd on ``case.reference``, a traceable discretisation of the same
map, for the backward.

A case with a ``context`` (a conditional bijector) passes it to every call: every check runs with it, the
backward's third value (the context's cotangent) is compared with autograd and with central differences like
the input's, float32 casts it too, and the bad-input check adds a missing context and malformed ones (wrong
width, rows, rank, dtype, NaN), each of which must raise ``ValueError`` naming the layer.
"""
import autograd
import autograd.numpy as anp
import numpy as np

from npflows import cast_params


def close(a, b, tol, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol:.0e} * {scale:.3g}"


def random_cotangents(rng, y, logdet):
    return rng.standard_normal(y.shape), rng.standard_normal(logdet.shape)


def objective(b, params, x, dy, dl, xp=np, context=None):
    """The scalar whose gradient is the VJP: <dy, y> + <dl, logdet>."""
    y, logdet, _ = b.forward(params, x, context, xp=xp)
    return xp.sum(dy * y) + xp.sum(dl * logdet)


def _tol(case, name, default):
    return case.tol.get(name, default)


def context_of(case):
    """The case's context, or None (cases made before contexts existed have no such field)."""
    return getattr(case, "context", None)


def traced_forward(case, params, x, context=None):
    """``(y, logdet)`` under autograd: the bijector's own ``forward(xp=anp)``, or the case's traceable
    reference where forward cannot be traced (``reference(params, x, xp, context)`` for a conditional case)."""
    if case.traceable:
        return case.bijector.forward(params, x, context, xp=anp)[:2]
    if context is None:
        return case.reference(params, x, anp)
    return case.reference(params, x, anp, context)


def unpack_backward(out, context):
    """``(dx, grads, dcontext)`` of a backward: three values exactly when the forward had a context."""
    if context is None:
        assert len(out) == 2, f"backward without a context returned {len(out)} values, expected (dx, grads)"
        return out[0], out[1], None
    assert len(out) == 3, f"backward after a forward with a context returned {len(out)} values, expected 3"
    assert out[2].shape == np.shape(context), f"dcontext has shape {out[2].shape}, context {np.shape(context)}"
    return out


def central_jacobian(b, p, x, h, context=None):
    """``J[n, :, m, d] = d y_n / d x_{m,d}`` by central differences of the (numerical) forward map."""
    n, d = x.shape[0], x[0].size          # events of any shape, flattened: J is (n, D, n, D)
    J = np.zeros((n, d, n, d))
    for m in range(n):
        for k in range(d):
            e = np.zeros_like(x)
            e.reshape(n, d)[m, k] = h
            J[:, :, m, k] = ((b.forward(p, x + e, context)[0] - b.forward(p, x - e, context)[0]) / (2 * h)
                             ).reshape(n, d)
    return J


def check_round_trip(case, tol=1e-10):
    b, p, x, c = case.bijector, case.params, case.x, context_of(case)
    tol = _tol(case, "round_trip", tol)
    y, ld, _ = b.forward(p, x, c)
    x2, ld2 = b.inverse(p, y, c)
    assert ld.shape == (x.shape[0],) and ld2.shape == (x.shape[0],)
    close(x2, x, tol, "inverse(forward(x))")
    close(-ld2, ld, tol, "inverse logdet vs -forward logdet")


def check_numpy_path_matches_traced(case, tol=1e-13):
    """Layers may take a faster in-place route when ``xp`` is NumPy (the MLP does); autograd checks the
    traceable route, so both must compute the same numbers (to rounding: BLAS may fuse differently)."""
    b, p, x, c = case.bijector, case.params, case.x, context_of(case)
    tol = _tol(case, "traced", tol)
    y, ld, _ = b.forward(p, x, c)
    ya, lda = traced_forward(case, p, x, c)
    close(y, ya, tol, "forward output, numpy path vs traceable path")
    close(ld, lda, tol, "forward logdet, numpy path vs traceable path")


def check_logdet_bruteforce(case, tol=1e-8):
    b, p, x, c = case.bijector, case.params, case.x, context_of(case)
    tol = _tol(case, "logdet", tol)
    n, d = x.shape[0], x[0].size          # events of any shape, flattened
    if case.traceable:
        f = lambda flat: anp.reshape(b.forward(p, anp.reshape(flat, x.shape), c, xp=anp)[0], (-1,))
        J = autograd.jacobian(f)(x.reshape(-1)).reshape(n, d, n, d)
    else:
        J = central_jacobian(b, p, x, _tol(case, "step", 1e-5), c)
    _, ld, _ = b.forward(p, x, c)
    ref = getattr(case, "logdet_reference", None)      # an estimator's own value from the dense Jacobians
    refs = None if ref is None else ref(p, x, np.stack([J[i, :, i, :] for i in range(n)]))
    for i in range(n):
        sign, brute = np.linalg.slogdet(J[i, :, i, :])
        assert sign != 0, f"Jacobian of sample {i} is singular"
        close(ld[i], brute if refs is None else refs[i], tol, f"logdet of sample {i} vs "
              f"{'slogdet' if refs is None else 'logdet_reference'} of the brute-force Jacobian")
        off = np.delete(J[i], i, axis=1)
        if case.traceable:
            assert np.all(off == 0), f"sample {i}'s output depends on other samples"
        else:     # a batch solved as one ODE shares its adaptive steps: coupling at the solver's tolerance
            close(off, np.zeros_like(off), tol, f"sample {i}'s output vs other samples (central differences)")


def check_backward_autograd(case, rng, tol=1e-8):
    b, p, x, c = case.bijector, case.params, case.x, context_of(case)
    tol = _tol(case, "autograd", tol)
    y, ld, cache = b.forward(p, x, c)
    dy, dl = random_cotangents(rng, y, ld)
    dx, grads, dc = unpack_backward(b.backward(p, dy, dl, cache), c)
    assert set(grads) == set(p), f"gradient keys {sorted(grads)} != parameter keys {sorted(p)}"
    def traced(args):
        ya, lda = traced_forward(case, args[1], args[0], args[2] if c is not None else None)
        return anp.sum(dy * ya) + anp.sum(dl * lda)
    gx, gp, gc = autograd.grad(traced)((x, p, c if c is not None else np.zeros(0)))
    close(dx, gx, tol, "dx vs autograd")
    if c is not None:
        close(dc, gc, tol, "dcontext vs autograd")
    for k in p:
        assert grads[k].shape == p[k].shape, f"grad {k} has shape {grads[k].shape}, param {p[k].shape}"
        close(grads[k], gp[k], tol, f"grad[{k!r}] vs autograd")
    dx2, grads2, dc2 = unpack_backward(b.backward(p, dy, dl, cache), c)
    close(dx2, dx, 0.0, "backward called twice (hidden state?)")
    if c is not None:
        close(dc2, dc, 0.0, "dcontext of backward called twice (hidden state?)")


def check_backward_central(case, rng, h=1e-5, tol=1e-6, n_dirs=2):
    b, p, x, c = case.bijector, case.params, case.x, context_of(case)
    h, tol = _tol(case, "step", h), _tol(case, "central", tol)
    y, ld, cache = b.forward(p, x, c)
    dy, dl = random_cotangents(rng, y, ld)
    dx, grads, dc = unpack_backward(b.backward(p, dy, dl, cache), c)
    f = lambda p_, x_, c_: objective(b, p_, x_, dy, dl, context=c_)
    for _ in range(n_dirs):
        v = rng.standard_normal(x.shape)
        fd = (f(p, x + h * v, c) - f(p, x - h * v, c)) / (2 * h)
        close(np.sum(dx * v), fd, tol, "dx . v vs central difference")
        if c is not None:
            v = rng.standard_normal(c.shape)
            fd = (f(p, x, c + h * v) - f(p, x, c - h * v)) / (2 * h)
            close(np.sum(dc * v), fd, tol, "dcontext . v vs central difference")
        for k in p:
            v = rng.standard_normal(p[k].shape)
            plus, minus = dict(p), dict(p)
            plus[k], minus[k] = p[k] + h * v, p[k] - h * v
            fd = (f(plus, x, c) - f(minus, x, c)) / (2 * h)
            close(np.sum(grads[k] * v), fd, tol, f"grad[{k!r}] . v vs central difference")


def check_float32(case, rng, tol=1e-4):
    b, p, x, c = case.bijector, case.params, case.x, context_of(case)
    tol = _tol(case, "float32", tol)
    p32, x32 = cast_params(p, np.float32), x.astype(np.float32)
    c32 = None if c is None else c.astype(np.float32)
    y, ld, cache = b.forward(p, x, c)
    y32, ld32, cache32 = b.forward(p32, x32, c32)
    xi32, ldi32 = b.inverse(p32, y32, c32)
    dy, dl = random_cotangents(rng, y, ld)
    dx, grads, dc = unpack_backward(b.backward(p, dy, dl, cache), c)
    dx32, grads32, dc32 = unpack_backward(b.backward(p32, dy.astype(np.float32), dl.astype(np.float32), cache32), c32)
    outs = {"y": (y32, y), "logdet": (ld32, ld), "inverse x": (xi32, x), "inverse logdet": (ldi32, -ld),
            "dx": (dx32, dx), **{f"grad[{k!r}]": (grads32[k], grads[k]) for k in p}}
    if c is not None:
        outs["dcontext"] = (dc32, dc)
    for what, (a32, a64) in outs.items():
        assert a32.dtype == np.float32, f"float32 in gave {a32.dtype} for {what}"
        assert np.all(np.isfinite(a32)), f"float32 {what} is not finite"
        close(a32, a64, tol, f"float32 {what} vs float64")


def check_bad_input(case):
    import pytest
    b, p, x, c = case.bijector, case.params, case.x, context_of(case)
    nan = x.copy()
    nan[0, 0] = np.nan
    inf = x.copy()
    inf[-1, -1] = np.inf
    # wrong shapes derived from the event shape: no batch axis, a last axis one short (or doubled), and for
    # events of rank > 1 the events flattened to vectors and an extra axis
    bad = [nan, inf, x[0], x[..., :-1] if x.shape[-1] > 1 else np.concatenate([x, x], -1),
           x.astype(np.int64), x.tolist()]
    y = b.forward(p, x, c)[0]
    bad_y = [y[0], np.concatenate([y, y], 1)]
    if x.ndim > 2:
        bad += [x.reshape(x.shape[0], -1), x[..., None]]
    if y.ndim > 2:
        bad_y += [y.reshape(y.shape[0], -1)]
    if y.shape[1:] != x.shape[1:]:          # a layer that changes the event's shape: each side refuses the other's
        bad.append(y)
        bad_y.append(x)
    for arr in bad:
        with pytest.raises(ValueError, match=b.name.split("(")[0]):
            b.forward(p, arr, c)
    for arr in bad_y:
        with pytest.raises(ValueError):
            b.inverse(p, arr, c)
    for direction, arr in case.bad_inputs:
        with pytest.raises(ValueError, match=b.name.split("(")[0]):
            (b.forward if direction == "forward" else b.inverse)(p, arr, c)
    if c is not None:
        check_bad_context(case, y)


def bad_contexts(c, x_dtype):
    """Malformed contexts for a batch whose context is ``c``: none at all, a column short and one too many, a
    row short, no batch axis, an extra axis, a NaN, an inf, integers, a list, and the other float dtype."""
    nan, inf = c.copy(), c.copy()
    nan[0, 0], inf[-1, -1] = np.nan, np.inf
    other = np.float32 if np.dtype(x_dtype) == np.float64 else np.float64
    return [None, c[:, :-1], np.concatenate([c, c[:, :1]], 1), c[:-1], c[0], c[..., None], nan, inf,
            c.astype(np.int64), c.tolist(), c.astype(other)]


def check_bad_context(case, y):
    """A conditional bijector refuses a missing or malformed context in both directions, naming itself."""
    import pytest
    b, p, x, c = case.bijector, case.params, case.x, context_of(case)
    name = b.name.split("(")[0]
    for bad in bad_contexts(c, x.dtype):
        with pytest.raises(ValueError, match=name):
            b.forward(p, x, bad)
        with pytest.raises(ValueError, match=name):
            b.inverse(p, y, bad)


def count_made_calls(bijector, kind):
    """Wrap the MADE of every ``kind`` layer of ``bijector`` (test-local instances) with call counters:
    ``calls[0]`` counts full passes (``apply``), ``calls[1]`` by-degree sequential solves (``solve_by_degree``).
    Returns ``calls``, updated as the wrapped methods run."""
    layers = bijector.layers if hasattr(bijector, "layers") else [bijector]
    calls = [0, 0]
    for layer in layers:
        if isinstance(layer, kind):
            for i, name in enumerate(("apply", "solve_by_degree")):
                inner = getattr(layer.net, name)

                def counted(*a, _inner=inner, _i=i, **k):
                    calls[_i] += 1
                    return _inner(*a, **k)
                setattr(layer.net, name, counted)
    return calls
