"""The 50-digit reference: every transform's forward and inverse written again, in mpmath, from the
formulas of ``validation/README.md`` (the section of each type is named in its docstring).  Nothing here
calls npflows.

Arrays are NumPy object arrays of mpmath numbers, batch first: ``(N, D)`` vectors or ``(N, C, H, W)``
images (channels first), each transform's input and output in its own event shape; logdets ``(N,)``.  Every formula
accepts complex numbers (``mpc``) so that ``certify.py`` can differentiate it by the complex step
:math:`f'(u) = \\mathrm{Im} f(u + ih)/h` without any subtraction: branches (ReLU, LeakyReLU, ELU) are
decided on the real part, and ``log|det W|`` is written as ``log(det W * sign(Re det W))``, which is
analytic where ``det W != 0``.

A family joins by adding ``FORWARD[type]`` and ``INVERSE[type]`` here (and its README section).
"""
import mpmath as mp
import numpy as np

DPS = 50

# --------------------------------------------------------------------------- elementwise helpers


def vec(f):
    """``f`` applied to every element of an object array (keeps the shape)."""
    uf = np.frompyfunc(f, 1, 1)
    return lambda a: uf(a).astype(object) if isinstance(a, np.ndarray) else f(a)


exp, log, tanh, sqrt = vec(mp.exp), vec(mp.log), vec(mp.tanh), vec(mp.sqrt)


def softplus1(a):
    return mp.log(1 + mp.exp(a))


softplus = vec(softplus1)


def sigmoid1(a):
    return 1 / (1 + mp.exp(-a))


sigmoid = vec(sigmoid1)


def branch(pos, neg, strict=False):
    """Elementwise ``pos(v)`` where ``Re v >= 0`` (``> 0`` if ``strict``), else ``neg(v)``."""
    def f(v):
        r = mp.re(v)
        return pos(v) if (r > 0 if strict else r >= 0) else neg(v)
    return vec(f)


def mpf_array(a):
    """A float array as an object array of exact ``mpf`` copies of its doubles."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty(a.shape, dtype=object)
    for i in np.ndindex(a.shape):
        out[i] = mp.mpf(float(a[i]))
    return out


def rowsum(a):
    """Sum over every axis but the first: ``(N, ...) -> (N,)``."""
    a = a.reshape(a.shape[0], -1)
    return np.array([mp.fsum(r) for r in a], dtype=object)


def full(n, v):
    out = np.empty(n, dtype=object)
    out[:] = [v] * n
    return out


# --------------------------------------------------------------------------- logdets as sums of terms
# Every logdet below is, as README.md writes it, a sum of terms (one per coordinate, per layer of a
# Sequential, or the two of the radial flow).  In ``summand_magnitudes()`` mode the same code returns
# sum |term| instead of sum term: the certification's summation condition number sum |term| / |sum|, which
# measures the cancellation that the rounding of the terms themselves suffers and that the condition
# number with respect to the inputs does not see.  Outputs are unaffected by the mode.

_MAGNITUDES = [False]


class summand_magnitudes:
    """Context manager: logdets come back as ``sum |term|`` (see above)."""

    def __enter__(self):
        _MAGNITUDES.append(True)

    def __exit__(self, *exc):
        _MAGNITUDES.pop()


def ldsum(a):
    """A logdet per sample from its terms ``(N, ...)``: their sum, or in ``summand_magnitudes`` mode the sum
    of their magnitudes."""
    if _MAGNITUDES[-1]:
        a = np.vectorize(abs, otypes=[object])(a)
    return rowsum(a)


def ldtotal(terms):
    """One logdet from a sequence of terms (shared by the batch): ``fsum``, or ``fsum`` of magnitudes."""
    return mp.fsum(abs(t) for t in terms) if _MAGNITUDES[-1] else mp.fsum(terms)


def ldterm(v):
    """A logdet that enters a larger sum as one term (a layer's): ``|v|`` in ``summand_magnitudes`` mode,
    where ``v`` is already that layer's sum of magnitudes up to sign."""
    return np.vectorize(abs, otypes=[object])(v) if _MAGNITUDES[-1] else v


# --------------------------------------------------------------------------- README "ElementwiseAffine", "ActNorm"


def affine_forward(T, P, x):
    s = P["log_scale"]
    y = x * exp(s)
    if "shift" in P:
        y = y + P["shift"]
    return y, full(x.shape[0], ldtotal(s))


def affine_inverse(T, P, y):
    s = P["log_scale"]
    if "shift" in P:
        y = y - P["shift"]
    return y * exp(-s), full(y.shape[0], -ldtotal(s))


# --------------------------------------------------------------------------- README "LeakyReLU"


def leaky_forward(T, P, x):
    a = mp.mpf(T["slope"])
    y = branch(lambda v: v, lambda v: a * v)(x)
    ld = branch(lambda v: mp.mpf(0), lambda v: mp.log(a))(x)
    return y, ldsum(ld)


def leaky_inverse(T, P, y):
    a = mp.mpf(T["slope"])
    x = branch(lambda v: v, lambda v: v / a)(y)
    ld = branch(lambda v: mp.mpf(0), lambda v: mp.log(a))(x)
    return x, -ldsum(ld)


# --------------------------------------------------------------------------- README "Sigmoid"


def _log_sigmoid_prime(x):
    # log sigma'(x) = log sigma(x) + log sigma(-x) = -softplus(-x) - softplus(x)
    return -softplus(-x) - softplus(x)


def sigmoid_forward(T, P, x):
    return sigmoid(x), ldsum(_log_sigmoid_prime(x))


def sigmoid_inverse(T, P, y):
    x = log(y) - log(1 - y)
    return x, ldsum(-log(y) - log(1 - y))


# --------------------------------------------------------------------------- README "Logit"


def logit_forward(T, P, x):
    al = mp.mpf(T["alpha"])
    c = 1 - 2 * al
    p = al + c * x
    return log(p) - log(1 - p), ldsum(mp.log(c) - log(p) - log(1 - p))


def logit_inverse(T, P, y):
    al = mp.mpf(T["alpha"])
    c = 1 - 2 * al
    x = (sigmoid(y) - al) / c
    # log p = -softplus(-y), log(1 - p) = -softplus(y)
    return x, -ldsum(mp.log(c) + softplus(-y) + softplus(y))


# --------------------------------------------------------------------------- README "Permutation"


def perm_forward(T, P, x):
    return x[:, np.asarray(T["perm"])], full(x.shape[0], mp.mpf(0))


def perm_inverse(T, P, y):
    return y[:, np.argsort(T["perm"])], full(y.shape[0], mp.mpf(0))


# --------------------------------------------------------------------------- README "Linear", "LULinear"


def _logabsdet(W):
    d = mp.det(mp.matrix(W.tolist()))
    return mp.log(d if mp.re(d) > 0 else -d)


def _solve(W, r):
    """``x`` with ``W x_n = r_n`` for every row ``r_n`` of ``r``."""
    A = mp.matrix(W.tolist())
    out = np.empty(r.shape, dtype=object)
    for n in range(r.shape[0]):
        sol = mp.lu_solve(A, mp.matrix(list(r[n])))
        out[n] = [sol[i] for i in range(r.shape[1])]
    return out


def linear_forward(T, P, x):
    W = P["W"]
    return x @ W.T + P["b"], full(x.shape[0], _logabsdet(W))


def linear_inverse(T, P, y):
    W = P["W"]
    return _solve(W, y - P["b"]), full(y.shape[0], -_logabsdet(W))


def _lu_product(L, M):
    """``L @ M`` for L lower and M upper triangular: ``(L M)[i, j] = sum_{k <= min(i, j)} L[i, k] M[k, j]``,
    summed in increasing k, term after term, as a matrix product of object arrays sums; the terms with
    ``k > min(i, j)`` are exact zeros at the end of each sum and are left out (adding them changes no digit),
    which makes the product three times faster."""
    D = L.shape[0]
    out = np.empty((D, D), dtype=object)
    for i in range(D):
        for j in range(D):
            acc = L[i, 0] * M[0, j]
            for k in range(1, min(i, j) + 1):
                acc = acc + L[i, k] * M[k, j]
            out[i, j] = acc
    return out


_WEIGHTS = []        # [(key, inputs held, weight)]: the last few LU weights, see _cached_weight


def _cached_weight(make, key, held):
    """``make()``, or the weight computed last for the very same parameter arrays (compared by identity; the
    arrays are held, so no identity is reused).  The certification evaluates a transform once per scalar
    input and parameter; an LU weight changes only with its own parameters, so most evaluations reuse it."""
    key = key + (mp.mp.prec,)
    for k, h, W in _WEIGHTS:
        if k == key and all(a is b for a, b in zip(h, held)):
            return W
    W = make()
    _WEIGHTS.insert(0, (key, held, W))
    del _WEIGHTS[8:]
    return W


def lu_weight(T, P):
    """``W = P_perm L (U + diag(exp(log_scale)))``: L unit lower triangular from the strictly lower
    entries of ``lower``, U from the strictly upper entries of ``upper``, ``W[i] = (L M)[perm[i]]``."""
    def make():
        D = T["dim"]
        L = np.empty((D, D), dtype=object)
        M = np.empty((D, D), dtype=object)
        for i in range(D):
            for j in range(D):
                L[i, j] = P["lower"][i, j] if i > j else mp.mpf(1 if i == j else 0)
                M[i, j] = P["upper"][i, j] if i < j else (mp.exp(P["log_scale"][i]) if i == j else mp.mpf(0))
        return _lu_product(L, M)[np.asarray(T["perm"])]
    held = (P["lower"], P["upper"], P["log_scale"])
    return _cached_weight(make, ("LU", tuple(T["perm"]), tuple(map(id, held))), held)


def lu_forward(T, P, x):
    return x @ lu_weight(T, P).T + P["bias"], full(x.shape[0], ldtotal(P["log_scale"]))


def lu_inverse(T, P, y):
    return _solve(lu_weight(T, P), y - P["bias"]), full(y.shape[0], -ldtotal(P["log_scale"]))


# --------------------------------------------------------------------------- README "Coupling layers"

LEAKY_SLOPE = mp.mpf(0.01)
ACT = {
    "relu": branch(lambda v: v, lambda v: mp.mpf(0), strict=True),
    "leaky_relu": branch(lambda v: v, lambda v: LEAKY_SLOPE * v, strict=True),
    "tanh": tanh,
    "elu": branch(lambda v: v, lambda v: mp.exp(v) - 1, strict=True),
}


def mlp(P, prefix, n_layers, activation, x):
    """``h_{l+1} = act(h_l @ W_l + b_l)``, no activation after the last layer."""
    h = x
    for l in range(n_layers):
        h = h @ P[f"{prefix}W{l}"] + P[f"{prefix}b{l}"]
        if l < n_layers - 1:
            h = ACT[activation](h)
    return h


# --------------------------------------------------------------------------- the context of a conditional case

_CONTEXT = [None]     # the context (N, C) of the evaluation under way (an object array), see :class:`context`


class context:
    """``with context(c):`` every evaluation inside reads the context ``c`` ``(N, C)`` (one row per row of
    the input; None: no context).  :func:`forward` and :func:`inverse` take it as an argument and set it;
    the layers of a composite see the same context (README "Context").  A conditional transform
    (``context_dim`` in its description) feeds it to its conditioner network as ``C`` more input columns:
    the coupling MLP reads ``[x1, c]`` (the last C rows of ``W0`` multiply the context), MADE reads
    ``[x, c]`` (the context rows of its first mask, stored in ``masks``, are all ones: degree 0)."""

    def __init__(self, c):
        self.c = c

    def __enter__(self):
        _CONTEXT.append(self.c)
        return self

    def __exit__(self, *exc):
        _CONTEXT.pop()


def _with_context(T, u):
    """The conditioner's input: ``u`` for an unconditional transform, ``[u, c]`` (columns) for a conditional
    one (``T["context_dim"]`` = C), ``c`` the current context."""
    C = T.get("context_dim")
    if C is None:
        return u
    c = _CONTEXT[-1]
    if c is None or c.shape != (u.shape[0], C):
        raise ValueError(f"{T['type']} reference: a conditional transform needs a context of shape "
                         f"({u.shape[0]}, {C}), got {None if c is None else c.shape}")
    return np.concatenate([u, c], axis=1)


def _split(T, x):
    m = np.asarray(T["mask"])
    return np.flatnonzero(m == 1), np.flatnonzero(m == 0)


def _join(i1, i2, a, b):
    out = np.empty((a.shape[0], a.shape[1] + b.shape[1]), dtype=object)
    out[:, i1], out[:, i2] = a, b
    return out


def _net(T, P, x1):
    return mlp(P, "net.", len(T["hidden"]) + 1, T["activation"], _with_context(T, x1))


def additive_forward(T, P, x):
    i1, i2 = _split(T, x)
    return _join(i1, i2, x[:, i1], x[:, i2] + _net(T, P, x[:, i1])), full(x.shape[0], mp.mpf(0))


def additive_inverse(T, P, y):
    i1, i2 = _split(T, y)
    return _join(i1, i2, y[:, i1], y[:, i2] - _net(T, P, y[:, i1])), full(y.shape[0], mp.mpf(0))


SIGMOID_EPS = mp.mpf(1e-3)


def log_scale_of(T, r):
    """The log-scale s from the raw output r: exp: s = r; tanh: s = c tanh(r); sigmoid:
    exp(s) = sigmoid(r + 2) + 1e-3 (nflows' coupling); softplus: exp(s) = softplus(r) + 1e-3 (nflows' MAF);
    softclip: s = r / (1 + |r|/c) (zuko); logsigmoid / neg_logsigmoid: exp(s) = sigmoid(r + 2)^(+-1) (normflows)."""
    if T["scale"] == "exp":
        return r
    if T["scale"] == "tanh":
        return mp.mpf(T["scale_bound"]) * tanh(r)
    if T["scale"] == "sigmoid":
        return log(sigmoid(r + 2) + SIGMOID_EPS)
    if T["scale"] == "softplus":
        return log(softplus(r) + SIGMOID_EPS)
    if T["scale"] == "softclip":                 # zuko: s = r / (1 + |r| / c), |r| decided on Re r
        c = mp.mpf(T["scale_bound"])
        return branch(lambda v: v / (1 + v / c), lambda v: v / (1 - v / c))(r)
    if T["scale"] == "logsigmoid":               # normflows' "sigmoid_inv": exp(s) = sigmoid(r + 2)
        return log(sigmoid(r + 2))
    if T["scale"] == "neg_logsigmoid":           # normflows' "sigmoid": exp(s) = 1 / sigmoid(r + 2)
        return -log(sigmoid(r + 2))
    raise KeyError(T["scale"])


def affine_coupling_forward(T, P, x):
    i1, i2 = _split(T, x)
    out = _net(T, P, x[:, i1])
    d2 = i2.size
    s, t = log_scale_of(T, out[:, :d2]), out[:, d2:]
    return _join(i1, i2, x[:, i1], x[:, i2] * exp(s) + t), ldsum(s)


def affine_coupling_inverse(T, P, y):
    i1, i2 = _split(T, y)
    out = _net(T, P, y[:, i1])
    d2 = i2.size
    s, t = log_scale_of(T, out[:, :d2]), out[:, d2:]
    return _join(i1, i2, y[:, i1], (y[:, i2] - t) * exp(-s)), -ldsum(s)


# --------------------------------------------------------------------------- README "Masked affine autoregressive"


def _made(T, P, x):
    """MADE: the MLP with every weight multiplied by its 0/1 mask (``T["masks"]``); a conditional MADE reads
    ``[x, c]``, its first mask's last C rows (the context's, degree 0) all ones."""
    Q = dict(P)
    for l, m in enumerate(T["masks"]):
        Q[f"net.W{l}"] = P[f"net.W{l}"] * np.asarray(m)
    return mlp(Q, "net.", len(T["hidden"]) + 1, T["activation"], _with_context(T, x))


def _maa_coefficients(T, x, P):
    """``(s, t)`` of ``z = x exp(s) + t`` from MADE's output at ``x``."""
    D = T["dim"]
    out = _made(T, P, x)
    r, b = out[:, :D], out[:, D:]
    if T["update"] == "affine":
        return log_scale_of(T, r), b
    sig = sigmoid(r + mp.mpf(T["gate_bias"]))       # z = sig x + (1 - sig) m
    return log(sig), (1 - sig) * b


def maa_forward(T, P, x):
    s, t = _maa_coefficients(T, x, P)
    return x * exp(s) + t, ldsum(s)


def maa_inverse(T, P, z):
    x = z
    for _ in range(T["dim"]):                    # D passes of x <- (z - t(x)) exp(-s(x)), from x = z
        s, t = _maa_coefficients(T, x, P)
        x = (z - t) * exp(-s)
    s, _ = _maa_coefficients(T, x, P)
    return x, -ldsum(s)


# --------------------------------------------------------------------------- README "Rational-quadratic spline"


def _domain(T):
    """``(left, right)``: ``[-B, B]`` with linear tails, ``interval`` for a bounded spline (``tails: null``)."""
    if "tails" in T and T["tails"] is None:
        return mp.mpf(T["interval"][0]), mp.mpf(T["interval"][1])
    return -mp.mpf(T["bound"]), mp.mpf(T["bound"])


def _knots(T, u, m):
    """Knots ``(K+1,)`` on [left, right] from unnormalised sizes ``u`` ``(K,)``: softmax, minimum size m."""
    K, (L, R) = T["n_bins"], _domain(T)
    e = [mp.exp(v) for v in u]
    Z = mp.fsum(e)
    sizes = [mp.mpf(m) + (1 - K * mp.mpf(m)) * v / Z for v in e]
    return [L] + [L + (R - L) * mp.fsum(sizes[:j]) for j in range(1, K)] + [R]


def _n_raw(T):
    """Unnormalised parameters per scalar: 3K - 1 (linear tails) or 3K + 1 (bounded)."""
    return 3 * T["n_bins"] + (1 if "tails" in T and T["tails"] is None else -1)


def _knot_derivatives(T, v):
    inner = [mp.mpf(T["min_derivative"]) + softplus1(a) for a in v]
    if "tails" in T and T["tails"] is None:
        return inner                                  # K+1 free derivatives
    return [mp.mpf(1)] + inner + [mp.mpf(1)]


def _bin(T, v, knots):
    """Count of interior knots <= v, an exact comparison of the stored input with the 50-digit knots (a point
    exactly on a knot belongs to the bin on its right).  Decided on the real parts: the complex step of
    ``certify.py`` perturbs only the imaginary parts, so it never moves a point to another bin."""
    return sum(1 for kn in knots[1:-1] if mp.re(v) >= mp.re(kn))


def rq_scalar(T, v, rw, rh, rd, inverse=False):
    """One spline, one scalar: ``(out, log|d out / d in|)``; identity outside [-B, B]."""
    L, R = _domain(T)
    if not L <= mp.re(v) <= R and not ("tails" in T and T["tails"] is None):
        return v, mp.mpf(0)
    # a bounded spline has no outside (the cases' inputs are inside); a point moved past an end by
    # certify.py's 1e-20 perturbation is evaluated on the end bin's rational function continued beyond it
    kx, ky = _knots(T, rw, T["min_bin_width"]), _knots(T, rh, T["min_bin_height"])
    kd = _knot_derivatives(T, rd)
    k = _bin(T, v, ky if inverse else kx)
    w, h = kx[k + 1] - kx[k], ky[k + 1] - ky[k]
    s, d0, d1 = h / w, kd[k], kd[k + 1]
    if inverse:                                  # y = y_k + h A(xi)/D(xi) as a quadratic in xi
        dl = v - ky[k]
        c2 = d0 + d1 - 2 * s
        a, b, c = dl * c2 + h * (s - d0), h * d0 - dl * c2, -s * dl
        r = mp.sqrt(b * b - 4 * a * c)           # the root in [0, 1], in the form that does not cancel
        xi = 2 * c / (-b - r) if mp.re(b) >= 0 else (-b + r) / (2 * a)
    else:
        xi = (v - kx[k]) / w
    tau = xi * (1 - xi)
    A = s * xi ** 2 + d0 * tau
    Dn = s + (d0 + d1 - 2 * s) * tau
    g = s ** 2 * (d1 * xi ** 2 + 2 * s * tau + d0 * (1 - xi) ** 2) / Dn ** 2
    if inverse:
        return kx[k] + xi * w, -mp.log(g)
    return ky[k] + h * A / Dn, mp.log(g)


def _rq_apply(T, v, raw, inverse):
    """``raw(n, j) -> (rw, rh, rd)`` gives the unnormalised parameters of element ``(n, j)``."""
    out = np.empty(v.shape, dtype=object)
    ld = np.empty(v.shape, dtype=object)
    for n, j in np.ndindex(v.shape):
        out[n, j], ld[n, j] = rq_scalar(T, v[n, j], *raw(n, j), inverse=inverse)
    return out, ldsum(ld)


def rqs_forward(T, P, x, inverse=False):
    raw = lambda n, j: (list(P["raw_widths"][j]), list(P["raw_heights"][j]), list(P["raw_derivatives"][j]))
    return _rq_apply(T, x, raw, inverse)


def _msa_raw(T, P, x):
    """MADE's output ``(N, (3K-1) D)`` read as ``(N, 3K-1, D)``: parameter j of coordinate i in column j D + i."""
    K, D = T["n_bins"], T["dim"]
    out = _made(T, P, x).reshape(x.shape[0], _n_raw(T), D)
    return lambda n, j: (list(out[n, :K, j]), list(out[n, K:2 * K, j]), list(out[n, 2 * K:, j]))


def msa_forward(T, P, x):
    return _rq_apply(T, x, _msa_raw(T, P, x), False)


def msa_inverse(T, P, y):
    x = y
    for _ in range(T["dim"]):                    # D passes from x = y: x <- f^-1(y; theta(x))
        x, _ = _rq_apply(T, y, _msa_raw(T, P, x), True)
    _, ld = _rq_apply(T, x, _msa_raw(T, P, x), False)
    return x, -ld


def _spline_coupling(T, P, x, inverse):
    i1, i2 = _split(T, x)
    K = T["n_bins"]
    out = _net(T, P, x[:, i1]).reshape(x.shape[0], i2.size, _n_raw(T))
    raw = lambda n, j: (list(out[n, j, :K]), list(out[n, j, K:2 * K]), list(out[n, j, 2 * K:]))
    y2, ld = _rq_apply(T, x[:, i2], raw, inverse)
    return _join(i1, i2, x[:, i1], y2), ld


# --------------------------------------------------------------------------- README "Planar", "Radial"


def _planar_parts(P):
    w, u, b = P["w"], P["u"], P["b"][0]
    c = mp.fsum(w * u)
    m = softplus1(c) - 1
    ww = mp.fsum(w * w)
    return w, u + (m - c) / ww * w, b, m


def _planar_h(T, a):
    """``(h(a), h'(a))``: tanh, or the leaky ReLU with slope T["slope"] (h' = 1 at a = 0)."""
    if T.get("activation", "tanh") == "tanh":
        t = tanh(a)
        return t, 1 - t * t
    al = mp.mpf(T["slope"])
    return branch(lambda v: v, lambda v: al * v)(a), branch(lambda v: mp.mpf(1), lambda v: al)(a)


def planar_forward(T, P, z):
    w, uh, b, m = _planar_parts(P)
    a = z @ w + b
    t, dt = _planar_h(T, a)
    # det(I + uh psi^T) = 1 + uh . psi, psi = h'(a) w  (matrix determinant lemma)
    return z + t[:, None] * uh[None, :], log(1 + dt * mp.fsum(uh * w))


def planar_inverse(T, P, x):
    w, uh, b, m = _planar_parts(P)
    yv = x @ w + b
    if T.get("activation", "tanh") == "leaky_relu":     # a + m h(a) = yv: a = yv / (1 + h'(a) m), sign(a) = sign(yv)
        al = mp.mpf(T["slope"])
        a = branch(lambda v: v / (1 + m), lambda v: v / (1 + al * m))(yv)
        t, dt = _planar_h(T, a)
        return x - t[:, None] * uh[None, :], -log(1 + dt * m)
    a = np.empty(x.shape[0], dtype=object)
    for n in range(x.shape[0]):        # a + m tanh(a) = w.x + b, Newton from a = w.x + b
        an = yv[n]
        for _ in range(200):
            th = mp.tanh(an)
            step = (an + m * th - yv[n]) / (1 + m * (1 - th * th))
            an = an - step
            if abs(step) < mp.mpf(10) ** (-DPS + 5) * (1 + abs(an)):
                break
        else:
            raise ArithmeticError("planar reference inverse: Newton did not converge")
        a[n] = an
    t = tanh(a)
    return x - t[:, None] * uh[None, :], -log(1 + (1 - t * t) * m)


def _planar_inverse_bracketed(T, P, x):
    """The tanh planar inverse with a safeguarded Newton: the root of the increasing ``g(a) = a + m tanh(a) - yv``
    (m > -1) lies in ``[yv - |m|, yv + |m|]``; a Newton step leaving the bracket (``m`` near -1, where plain
    Newton from ``a = yv`` can cycle) is replaced by bisection.  Decided on real parts (the complex step)."""
    w, uh, b, m = _planar_parts(P)
    yv = x @ w + b
    a = np.empty(x.shape[0], dtype=object)
    for n in range(x.shape[0]):
        lo, hi = yv[n] - abs(mp.re(m)), yv[n] + abs(mp.re(m))
        an = yv[n]
        for _ in range(2000):
            th = mp.tanh(an)
            g = an + m * th - yv[n]
            if mp.re(g) < 0:
                lo = an
            else:
                hi = an
            new = an - g / (1 + m * (1 - th * th))
            if not mp.re(lo) <= mp.re(new) <= mp.re(hi):
                new = (lo + hi) / 2
            if abs(new - an) < mp.mpf(10) ** (-DPS + 5) * (1 + abs(an)):
                an = new
                break
            an = new
        else:
            raise ArithmeticError("conditional planar reference inverse: no convergence")
        a[n] = an
    t = tanh(a)
    return x - t[:, None] * uh[None, :], -log(1 + (1 - t * t) * m)


def _conditional_planar(T, P, v, one):
    """ConditionalPlanar: sample n is the planar map with ``w_n = w + c_n Cw``, ``u_n = u + c_n Cu``,
    ``b_n = b + c_n Cb`` (``c`` the context, README "Context"); ``one(T, P_n, v[n:n+1])`` evaluates it."""
    c = _CONTEXT[-1]
    if c is None or c.shape != (v.shape[0], T["context_dim"]):
        raise ValueError(f"ConditionalPlanar reference: needs a context of shape ({v.shape[0]}, {T['context_dim']})")
    outs, lds = [], []
    for n in range(v.shape[0]):
        Pn = {"w": P["w"] + np.dot(c[n], P["Cw"]), "u": P["u"] + np.dot(c[n], P["Cu"]),
              "b": P["b"] + np.dot(c[n], P["Cb"])}
        o, l = one(T, Pn, v[n:n + 1])
        outs.append(o)
        lds.append(l)
    return np.concatenate(outs, axis=0), np.concatenate(lds, axis=0)


def _radial_parts(P, T=None):
    a = P["alpha_raw"][0]                        # alpha = |alpha_raw| (normflows) on Re, else softplus
    alpha = (a if mp.re(a) > 0 else -a) if (T or {}).get("alpha") == "abs" else softplus1(a)
    beta = -alpha + softplus1(P["beta_raw"][0])
    return P["z0"], alpha, beta


def _radial_logdet(D, alpha, beta, r):
    h = 1 / (alpha + r)
    dh = -h * h
    a, b = (D - 1) * log(1 + beta * h), log(1 + beta * h + beta * dh * r)
    return ldterm(a) + ldterm(b)


def radial_forward(T, P, z):
    z0, alpha, beta = _radial_parts(P, T)
    d = z - z0
    r = sqrt(rowsum(d * d))
    h = 1 / (alpha + r)
    return z + (beta * h)[:, None] * d, _radial_logdet(z.shape[1], alpha, beta, r)


def radial_inverse(T, P, x):
    z0, alpha, beta = _radial_parts(P, T)
    e = x - z0
    rho = sqrt(rowsum(e * e))
    B = alpha + beta
    # rho = r (1 + beta/(alpha + r))  <=>  r^2 + (B - rho) r - alpha rho = 0, the non-negative root
    r = ((rho - B) + sqrt((B - rho) ** 2 + 4 * alpha * rho)) / 2
    z = z0 + e / (1 + beta / (alpha + r))[:, None]
    return z, -_radial_logdet(x.shape[1], alpha, beta, r)


# --------------------------------------------------------------------------- README "Reshape"


def reshape_forward(T, P, x):
    """The entries in row-major order, regrouped: ``(N, *in_shape) -> (N, *out_shape)``; logdet 0."""
    return x.reshape((x.shape[0],) + tuple(T["out_shape"])), full(x.shape[0], mp.mpf(0))


def reshape_inverse(T, P, y):
    return y.reshape((y.shape[0],) + tuple(T["in_shape"])), full(y.shape[0], mp.mpf(0))


# --------------------------------------------------------------------------- README "Squeeze"

SQUEEZE_SLOT = {"checkerboard": {(0, 0): 0, (1, 1): 1, (0, 1): 2, (1, 0): 3}}


def _squeeze_channel(order, C, c, di, dj):
    """The output channel of input channel ``c`` at block position ``(di, dj)``."""
    if order == "channel_major":
        return 4 * c + 2 * di + dj
    if order == "space_to_depth":
        return (2 * di + dj) * C + c
    return SQUEEZE_SLOT[order][(di, dj)] * C + c


def _squeeze_index(T):
    """``[(c, 2i + di, 2j + dj), (o, i, j)]`` pairs: where each input entry goes."""
    C, H, W = T["event_shape"]
    return [((c, 2 * i + di, 2 * j + dj), (_squeeze_channel(T["order"], C, c, di, dj), i, j))
            for c in range(C) for i in range(H // 2) for j in range(W // 2) for di in (0, 1) for dj in (0, 1)]


def squeeze_forward(T, P, x):
    """``x[n, c, 2i + di, 2j + dj] -> y[n, o, i, j]``, o from the order; logdet 0."""
    C, H, W = T["event_shape"]
    y = np.empty((x.shape[0], 4 * C, H // 2, W // 2), dtype=object)
    for a, b in _squeeze_index(T):
        y[(slice(None),) + b] = x[(slice(None),) + a]
    return y, full(x.shape[0], mp.mpf(0))


def squeeze_inverse(T, P, y):
    C, H, W = T["event_shape"]
    x = np.empty((y.shape[0], C, H, W), dtype=object)
    for a, b in _squeeze_index(T):
        x[(slice(None),) + a] = y[(slice(None),) + b]
    return x, full(y.shape[0], mp.mpf(0))


# --------------------------------------------------------------------------- README "ActNorm2d", 1x1 convolutions


def _per_channel(v):
    """A ``(C,)`` parameter as ``(C, 1, 1)``, to broadcast over an image ``(N, C, H, W)``."""
    return np.asarray(v, dtype=object).reshape(-1, 1, 1)


def _hw(T):
    return T["event_shape"][1] * T["event_shape"][2]


def actnorm2d_forward(T, P, x):
    s = P["log_scale"]
    return x * exp(_per_channel(s)) + _per_channel(P["shift"]), full(x.shape[0], _hw(T) * ldtotal(s))


def actnorm2d_inverse(T, P, y):
    s = P["log_scale"]
    return (y - _per_channel(P["shift"])) * exp(-_per_channel(s)), full(y.shape[0], -_hw(T) * ldtotal(s))


def _channel_map(A, x):
    """``y[n, :, i, j] = A x[n, :, i, j]`` at every pixel."""
    return np.tensordot(A, x, axes=([1], [1])).transpose(1, 0, 2, 3)


def _channel_solve(A, y):
    """``x`` with ``A x[n, :, i, j] = y[n, :, i, j]`` at every pixel (mpmath's LU solve per pixel)."""
    N, C, H, W = y.shape
    cols = y.transpose(0, 2, 3, 1).reshape(-1, C)
    return _solve(A, cols).reshape(N, H, W, C).transpose(0, 3, 1, 2)


def conv1x1_forward(T, P, x):
    W = P["W"]
    return _channel_map(W, x), full(x.shape[0], _hw(T) * _logabsdet(W))


def conv1x1_inverse(T, P, y):
    W = P["W"]
    return _channel_solve(W, y), full(y.shape[0], -_hw(T) * _logabsdet(W))


def lu_conv_weight(T, P):
    """``W = P_perm L (U + diag(sign exp(log_scale)))``, ``W[i] = (L M)[perm[i]]``, as ``lu_weight``."""
    C = T["event_shape"][0]
    sign = T["sign"]
    L = np.empty((C, C), dtype=object)
    M = np.empty((C, C), dtype=object)
    for i in range(C):
        for j in range(C):
            L[i, j] = P["lower"][i, j] if i > j else mp.mpf(1 if i == j else 0)
            M[i, j] = P["upper"][i, j] if i < j else (sign[i] * mp.exp(P["log_scale"][i]) if i == j else mp.mpf(0))
    return _lu_product(L, M)[np.asarray(T["perm"])]


def lu_conv_forward(T, P, x):
    return _channel_map(lu_conv_weight(T, P), x), full(x.shape[0], _hw(T) * ldtotal(P["log_scale"]))


def lu_conv_inverse(T, P, y):
    return _channel_solve(lu_conv_weight(T, P), y), full(y.shape[0], -_hw(T) * ldtotal(P["log_scale"]))


# --------------------------------------------------------------------------- README "Conditioner ConvNet"


def conv2d(x, W, b=None):
    """Cross-correlation, stride 1, zero "same" padding: ``out[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v]
    x[n, c, i + u - kh//2, j + v - kw//2]`` (x zero outside the image); ``W`` ``(Cout, Cin, kh, kw)``."""
    N, C, H, Wd = x.shape
    Co, _, kh, kw = W.shape
    ph, pw = kh // 2, kw // 2
    xp = np.empty((N, C, H + 2 * ph, Wd + 2 * pw), dtype=object)
    xp[...] = mp.mpf(0)
    xp[:, :, ph:ph + H, pw:pw + Wd] = x
    out = None
    for u in range(kh):
        for v in range(kw):
            t = np.tensordot(W[:, :, u, v], xp[:, :, u:u + H, v:v + Wd], axes=([1], [1]))   # (Cout, N, H, W)
            out = t if out is None else out + t
    out = out.transpose(1, 0, 2, 3)
    return out if b is None else out + _per_channel(b)


def convnet(P, prefix, activation, x):
    """Glow's conditioner: conv kxk -> act -> conv 1x1 -> act -> conv kxk, keys ``<prefix>W0, b0, ..., b2``."""
    h = x
    for l in range(3):
        h = conv2d(h, P[f"{prefix}W{l}"], P[f"{prefix}b{l}"])
        if l < 2:
            h = ACT[activation](h)
    return h


# --------------------------------------------------------------------------- README "Sequential", "Inverse"


def _sub(P, prefix):
    return {k[len(prefix):]: v for k, v in P.items() if k.startswith(prefix)}


_LAYERS = []          # [(key, held, result)]: recent layer evaluations inside composites, see _layer_forward
_LAYERS_KEPT = 64


def _layer_forward(L, P, x):
    """``forward(L, P, x)`` of one layer of a composite, or its result from a recent call on the very same
    description, parameter arrays and input array (compared by identity; they are held, so no identity is
    reused, and nothing here writes into an array once it has been passed on).  The certification evaluates
    a composite once per scalar parameter with only that parameter changed: every layer before the one that
    owns it sees the same arrays again, so only the layers from it on are recomputed.  The numbers are the
    same as without the reuse."""
    held = (L, x, _CONTEXT[-1]) + tuple(P[k] for k in sorted(P))
    key = (tuple(sorted(P)), mp.mp.prec, _MAGNITUDES[-1])
    for i, (k, h, r) in enumerate(_LAYERS):
        if k == key and len(h) == len(held) and all(a is b for a, b in zip(h, held)):
            _LAYERS.insert(0, _LAYERS.pop(i))
            return r
    r = forward(L, P, x)
    _LAYERS.insert(0, (key, held, r))
    del _LAYERS[_LAYERS_KEPT:]
    return r


def seq_forward(T, P, x):
    ld = full(x.shape[0], mp.mpf(0))
    for i, L in enumerate(T["layers"]):
        x, l = _layer_forward(L, _sub(P, f"{i}."), x)
        ld = ld + ldterm(l)
    return x, ld


def seq_inverse(T, P, y):
    ld = full(y.shape[0], mp.mpf(0))
    for i in range(len(T["layers"]) - 1, -1, -1):
        y, l = inverse(T["layers"][i], _sub(P, f"{i}."), y)
        ld = ld + ldterm(l)
    return y, ld


# --------------------------------------------------------------------------- README "MaskedConv2d"


def masked_kernel(T, P):
    """The effective kernel ``(C, C, k, k)``: ``weight`` on the taps before the centre in raster order (all of
    them, or only those up and to the left for ``taps = "quadrant"``) and on the centre's strict lower
    triangle in channels (o reads c < o); ``exp(log_diag[o])`` at the centre's diagonal; zero elsewhere."""
    C, k = T["event_shape"][0], T["kernel_size"]
    p = k // 2
    K = np.empty((C, C, k, k), dtype=object)
    for o in range(C):
        for c in range(C):
            for u in range(k):
                for v in range(k):
                    before = u < p or (u == p and v < p)
                    if T["taps"] == "quadrant":
                        before = before and u <= p and v <= p
                    if before or (u == p and v == p and c < o):
                        K[o, c, u, v] = P["weight"][o, c, u, v]
                    elif u == p and v == p and c == o:
                        K[o, c, u, v] = mp.exp(P["log_diag"][o])
                    else:
                        K[o, c, u, v] = mp.mpf(0)
    return K


def masked_conv_forward(T, P, x):
    return conv2d(x, masked_kernel(T, P), P["bias"]), full(x.shape[0], _hw(T) * ldtotal(P["log_diag"]))


def masked_conv_inverse(T, P, y):
    """Raster-order substitution: pixel by pixel, channel by channel, ``x[c, i, j] = (y[c, i, j] - bias[c] -
    (every other term of the convolution, all at entries already solved)) / exp(log_diag[c])``."""
    K = masked_kernel(T, P)
    N, C, H, W = y.shape
    k = T["kernel_size"]
    p = k // 2
    x = np.empty(y.shape, dtype=object)
    for i in range(H):
        for j in range(W):
            for o in range(C):
                for n in range(N):
                    terms = []
                    for c in range(C):
                        for u in range(k):
                            for v in range(k):
                                ii, jj = i + u - p, j + v - p
                                if (c, u, v) == (o, p, p) or not (0 <= ii < H and 0 <= jj < W) or K[o, c, u, v] == 0:
                                    continue
                                terms.append(K[o, c, u, v] * x[n, c, ii, jj])
                    x[n, o, i, j] = (y[n, o, i, j] - P["bias"][o] - mp.fsum(terms)) / K[o, o, p, p]
    return x, full(N, -_hw(T) * ldtotal(P["log_diag"]))


# --------------------------------------------------------------------------- README "ImageAffineCoupling", ...


def _image_halves(T):
    """``(conditioning, transformed)`` channel index arrays of a channel mask: the first ceil(C/2) channels and
    the rest (``parity`` 0), or the other way round (1)."""
    C = T["event_shape"][0]
    k = (C + 1) // 2
    a, b = np.arange(k), np.arange(k, C)
    return (a, b) if T["parity"] == 0 else (b, a)


def _checkerboard(T):
    """``b[c, i, j] = (i + j + parity) % 2`` (1 = conditions), the same in every channel, as mpf 0 and 1."""
    C, H, W = T["event_shape"]
    b = np.empty((C, H, W), dtype=object)
    for c, i, j in np.ndindex(C, H, W):
        b[c, i, j] = mp.mpf((i + j + T["parity"]) % 2)
    return b


def _image_net(T, P, u):
    return convnet(P, "net.", T["activation"], u)


def _image_rt(T, h):
    """``(r, t)`` from the network's 2K output channels by the layout."""
    K = h.shape[1] // 2
    if T["layout"] == "scale_shift":
        return h[:, :K], h[:, K:]
    if T["layout"] == "shift_scale":
        return h[:, K:], h[:, :K]
    return h[:, 1::2], h[:, 0::2]                     # interleaved: t = 0::2, r = 1::2


def _image_affine_params(T, P, v):
    """``(s, t)`` of the transformed entries at input v (x or y: their conditioning halves agree): the whole
    image, masked by m = 1 - b, for the checkerboard; the transformed channels for the channel mask."""
    if T["mask"] == "checkerboard":
        b = _checkerboard(T)
        r, t = _image_rt(T, _image_net(T, P, v * b))
        m = 1 - b
        return log_scale_of(T, r) * m, t * m
    ia, _ = _image_halves(T)
    r, t = _image_rt(T, _image_net(T, P, v[:, ia]))
    return log_scale_of(T, r), t


def _image_merge(T, v, vb):
    """The image with its transformed channels replaced by ``vb`` (channel mask)."""
    ia, ib = _image_halves(T)
    out = np.empty(v.shape, dtype=object)
    out[:, ia], out[:, ib] = v[:, ia], vb
    return out


def image_affine_forward(T, P, x):
    s, t = _image_affine_params(T, P, x)
    xb = x if T["mask"] == "checkerboard" else x[:, _image_halves(T)[1]]
    yb = (xb + t) * exp(s) if T["shift_first"] else xb * exp(s) + t
    return (yb if T["mask"] == "checkerboard" else _image_merge(T, x, yb)), ldsum(s)


def image_affine_inverse(T, P, y):
    s, t = _image_affine_params(T, P, y)
    yb = y if T["mask"] == "checkerboard" else y[:, _image_halves(T)[1]]
    xb = yb * exp(-s) - t if T["shift_first"] else (yb - t) * exp(-s)
    return (xb if T["mask"] == "checkerboard" else _image_merge(T, y, xb)), -ldsum(s)


def _image_shift(T, P, v):
    if T["mask"] == "checkerboard":
        b = _checkerboard(T)
        return _image_net(T, P, v * b) * (1 - b)
    return _image_net(T, P, v[:, _image_halves(T)[0]])


def image_additive_forward(T, P, x, sign=1):
    t = _image_shift(T, P, x)
    if T["mask"] == "checkerboard":
        return x + sign * t, full(x.shape[0], mp.mpf(0))
    return _image_merge(T, x, x[:, _image_halves(T)[1]] + sign * t), full(x.shape[0], mp.mpf(0))


# --------------------------------------------------------------------------- README "MultiScale"


def event_shapes(T):
    """``(input event shape, output event shape)`` of the transform ``T``, from its description alone."""
    t = T["type"]
    if t in ("Sequential", "RecomputeSequential"):
        return event_shapes(T["layers"][0])[0], event_shapes(T["layers"][-1])[1]
    if t == "Inverse":
        a, b = event_shapes(T["base"])
        return b, a
    if t == "Reshape":
        return tuple(T["in_shape"]), tuple(T["out_shape"])
    if t == "Squeeze":
        C, H, W = T["event_shape"]
        return (C, H, W), (4 * C, H // 2, W // 2)
    if t == "MultiScale":
        sizes = [int(np.prod(s)) for s in _latent_shapes(T)]
        return event_shapes(T["stages"][0])[0], (sum(sizes),)
    if "event_shape" in T:
        return tuple(T["event_shape"]), tuple(T["event_shape"])
    if "dim" in T:
        return (T["dim"],), (T["dim"],)
    if "mask" in T:
        return (len(T["mask"]),), (len(T["mask"]),)
    if "perm" in T:
        return (len(T["perm"]),), (len(T["perm"]),)
    raise KeyError(f"no event shape for {t}")


def _n_factored(T, C):
    """Channels factored out of a stage output with ``C`` channels: ``ceil(C/2)`` (either half)."""
    return (C + 1) // 2


def _latent_shapes(T):
    stages = T["stages"]
    out = []
    for s, S in enumerate(stages):
        o = event_shapes(S)[1]
        out.append(o if s == len(stages) - 1 else (_n_factored(T, o[0]),) + tuple(o[1:]))
    return out


def _ms_split(T, y):
    """``(factored out, kept)`` channels of a stage output: ``first``: the first ceil(C/2) go out; ``second``:
    the first floor(C/2) are kept, the last ceil(C/2) go out."""
    C = y.shape[1]
    k = _n_factored(T, C)
    return (y[:, :k], y[:, k:]) if T["factor_out"] == "first" else (y[:, C - k:], y[:, :C - k])


def multiscale_forward(T, P, x):
    """Stage s maps h_s to y_s; all but the last put half of y_s's channels out and pass the other half on;
    the output is every scale's part flattened row-major, concatenated in the order of the stages."""
    N, h, pieces = x.shape[0], x, []
    ld = full(N, mp.mpf(0))
    last = len(T["stages"]) - 1
    for s, S in enumerate(T["stages"]):
        y, l = _layer_forward(S, _sub(P, f"{s}."), h)
        ld = ld + ldterm(l)
        if s < last:
            o, h = _ms_split(T, y)
        else:
            o = y
        pieces.append(o.reshape(N, -1))
    return np.concatenate(pieces, axis=1), ld


def multiscale_inverse(T, P, z):
    N = z.shape[0]
    shapes = _latent_shapes(T)
    bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    o = [z[:, bounds[s]:bounds[s + 1]].reshape((N,) + tuple(shapes[s])) for s in range(len(shapes))]
    ld = full(N, mp.mpf(0))
    y = o[-1]
    for s in range(len(shapes) - 1, -1, -1):
        h, l = inverse(T["stages"][s], _sub(P, f"{s}."), y)
        ld = ld + ldterm(l)
        if s > 0:
            y = np.concatenate([o[s - 1], h] if T["factor_out"] == "first" else [h, o[s - 1]], axis=1)
    return h, ld


# --------------------------------------------------------------------------- README "ResidualBlock"
LIPSWISH_DIVISOR = mp.mpf(11) / 10


def _res_act(name, v):
    """``(phi(v), phi'(v))`` of the block's activation for one (real or complex) number."""
    if name == "lipswish":                          # v sigmoid(v) / 1.1
        s = sigmoid1(v)
        return v * s / LIPSWISH_DIVISOR, s * (1 + v * (1 - s)) / LIPSWISH_DIVISOR
    if name == "elu":
        if mp.re(v) > 0:
            return v, mp.mpf(1)
        e = mp.exp(v)
        return e - 1, e
    t = mp.tanh(v)
    return t, 1 - t * t


def _res_sigma_exact(V):
    """The largest singular value of ``V``, analytic in its entries (for the complex step): the top eigenpair
    ``(lambda, q)`` of the real Gram matrix ``G`` of Re V (``mp.eigsy``), then ``sqrt(q^T G(V) q)`` with the
    complex Gram matrix; at real V this is ``sqrt(lambda)``, and a complex perturbation of V changes it by the
    first-order term ``q^T dG q`` (the eigenvalue's derivative), exactly as the complex step needs."""
    A = V.T @ V if V.shape[1] <= V.shape[0] else V @ V.T        # the smaller Gram matrix
    n = A.shape[0]
    E, Q = mp.eigsy(mp.matrix([[mp.re(A[i, j]) for j in range(n)] for i in range(n)]))
    k = max(range(n), key=lambda i: E[i])
    q = [Q[i, k] for i in range(n)]
    return mp.sqrt(mp.fsum(q[i] * A[i, j] * q[j] for i in range(n) for j in range(n)))


def _res_sigma_power(V, steps):
    """The power-iteration estimate: from ``v_0 = (1, ..., 1)/sqrt(n)``, ``v <- V^T V v / |V^T V v|`` ``steps``
    times, then ``|V v|`` (norms as ``sqrt(sum of squares)``, analytic)."""
    n = V.shape[1]
    v = np.array([1 / mp.sqrt(n)] * n, dtype=object)
    for _ in range(steps):
        sv = (V @ v) @ V
        v = sv / mp.sqrt(mp.fsum(e * e for e in sv))
    t = V @ v
    return mp.sqrt(mp.fsum(e * e for e in t))


def _res_weights(T, P):
    """The effective weights ``W_l = V_l min(1, c / sigma(V_l))`` (branch on the real part) and the biases."""
    c = mp.mpf(T["lipschitz"])
    Ws, bs = [], []
    for l in range(len(T["hidden"]) + 1):
        V = P[f"net.V{l}"]
        sigma = _res_sigma_exact(V) if T["spectral"] == "exact" else _res_sigma_power(V, T["n_power_iter"])
        Ws.append(V * (c / sigma) if mp.re(sigma) > c else V)
        bs.append(P[f"net.b{l}"])
    return Ws, bs


def _res_g(T, Ws, bs, x):
    """``(g(x), J_g(x))`` for one point ``x`` ``(D,)``: ``h_l = a_l W_l + b_l``, ``a_{l+1} = phi(h_l)``, and the
    Jacobian ``dg/dx = W_L^T diag(phi'(h_{L-1})) ... diag(phi'(h_0)) W_0^T`` (``D x D``, row i = output i)."""
    h = x @ Ws[0] + bs[0]
    Jx = Ws[0].T                                      # d h_0 / d x
    for l in range(1, len(Ws)):
        a, d1 = zip(*[_res_act(T["activation"], v) for v in h])
        h = np.array(a, dtype=object) @ Ws[l] + bs[l]
        Jx = Ws[l].T @ (np.array(d1, dtype=object)[:, None] * Jx)
    return h, Jx


def _res_term_weights(T, n):
    """``w_k = 1 / P(N >= k)``, k = 0..n: 1 for the series; for the roulette 1 up to ``n_exact + 1`` and
    ``(1 - p)^-(k - n_exact - 1)`` beyond."""
    if T["logdet"] != "roulette":
        return [mp.mpf(1)] * (n + 1)
    q = 1 - mp.mpf(T["roulette_p"])
    return [mp.mpf(1) if k <= T["n_exact"] + 1 else q ** -(k - T["n_exact"] - 1) for k in range(n + 1)]


def _res_estimate(T, G):
    """The stochastic logdet at the stored probes for one point with ``J_g = G`` (``D x D``, any indexable):
    ``(1/P) sum_p sum_{k=1}^{n} (-1)^(k+1) w_k v_p^T G^k v_p / k``, as a list of terms (see ``ldtotal``)."""
    probes = [[mp.mpf(e) for e in v] for v in T["probes"]]
    n = T["n_terms"] if T["logdet"] == "series" else T["roulette_n"]
    w = _res_term_weights(T, n)
    D = len(probes[0])
    terms = []
    for v in probes:
        u = list(v)
        for k in range(1, n + 1):
            u = [mp.fsum(G[i, j] * u[j] for j in range(D)) for i in range(D)]
            terms.append((-1) ** (k + 1) * w[k] * mp.fsum(v[i] * u[i] for i in range(D)) / (k * len(probes)))
    return terms


def residual_logdet_from_jacobian(T, J):
    """The logdet a ``ResidualBlock`` with a stochastic logdet states, from the Jacobian ``J = I + J_g`` of its
    forward map at one point (an mp.matrix or a float array): the estimator applied to ``J - I`` (the check of
    the estimate against a brute-force Jacobian).  None for every other transform (whose logdet is log|det J|)."""
    if T["type"] != "ResidualBlock" or T["logdet"] == "exact":
        return None
    D = len(T["probes"][0])
    G = np.empty((D, D), dtype=object)
    for i in range(D):
        for j in range(D):
            G[i, j] = mp.mpf(J[i, j]) - (1 if i == j else 0)
    return mp.fsum(_res_estimate(T, G))


def residual_forward(T, P, x):
    """``y = x + g(x)``; logdet ``log det(I + J_g)`` or the estimator at the stored probes."""
    Ws, bs = _res_weights(T, P)
    y = np.empty(x.shape, dtype=object)
    ld = np.empty(x.shape[0], dtype=object)
    for n in range(x.shape[0]):
        g, G = _res_g(T, Ws, bs, x[n])
        y[n] = x[n] + g
        if T["logdet"] == "exact":
            d = mp.det(mp.eye(x.shape[1]) + mp.matrix(G.tolist()))
            v = mp.log(d if mp.re(d) > 0 else -d)
            ld[n] = abs(v) if _MAGNITUDES[-1] else v           # one term (see ``ldterm``)
        else:
            ld[n] = ldtotal(_res_estimate(T, G))
    return y, ld


def residual_inverse(T, P, y):
    """``x`` with ``x + g(x) = y``: 20 fixed-point steps from ``x = y``, then Newton
    ``x <- x - (I + J_g)^-1 (x + g(x) - y)`` to 1e-45; logdet minus the forward's at x."""
    Ws, bs = _res_weights(T, P)
    D = y.shape[1]
    x = np.empty(y.shape, dtype=object)
    for n in range(y.shape[0]):
        xn = y[n].copy()
        for _ in range(20):
            xn = y[n] - _res_g(T, Ws, bs, xn)[0]
        for _ in range(100):
            g, G = _res_g(T, Ws, bs, xn)
            r = xn + g - y[n]
            step = mp.lu_solve(mp.eye(D) + mp.matrix(G.tolist()), mp.matrix(list(r)))
            xn = np.array([xn[i] - step[i] for i in range(D)], dtype=object)
            if max(abs(step[i]) for i in range(D)) < mp.mpf(10) ** -45 * (1 + max(abs(e) for e in xn)):
                break
        else:
            raise ArithmeticError("residual block reference inverse: Newton did not converge")
        x[n] = xn
    ld = residual_forward(T, P, x)[1]
    return x, -ld


LOGDET_FROM_JACOBIAN = {"ResidualBlock": residual_logdet_from_jacobian}
"""Types whose logdet is not log|det J| of their own Jacobian J (a stochastic estimate): ``f(T, J)`` gives the
stated logdet from J at one point, or None where it is log|det J| after all."""


def logdet_from_jacobian(T, J):
    """The logdet the transform ``T`` states at one point from its Jacobian ``J`` (``D x D``), where that is not
    log|det J| (see :data:`LOGDET_FROM_JACOBIAN`); None where it is."""
    f = LOGDET_FROM_JACOBIAN.get(T["type"])
    return None if f is None else f(T, J)


# --------------------------------------------------------------------------- README "MarginalGaussianization", "RBIG"

def _ncdf(t):
    """Phi(t) = erfc(-t/sqrt 2)/2, for real t and for the complex step's t = a + ib with |b| tiny against the
    working precision's scale: Phi(a) + i b phi(a), exact to the working precision (the next terms are
    O(b^2)).  (mpmath's complex erfc does not keep the relative accuracy of a tiny imaginary part: at a = -2.5
    its complex-step derivative errs by 3e-8.)"""
    if isinstance(t, mp.mpc):
        a, b = mp.re(t), mp.im(t)
        if b != 0:
            if abs(b) > mp.mpf(10) ** -40 * (1 + abs(a)):
                raise ArithmeticError("MarginalGaussianization reference: Phi of a complex number that is not a "
                                      "complex step")
            return mp.mpc(mp.erfc(-a / mp.sqrt(2)) / 2, b * mp.exp(-a * a / 2) / mp.sqrt(2 * mp.pi))
        t = a
    return mp.erfc(-t / mp.sqrt(2)) / 2


def _log_ncdf_inv(lp):
    """y with log Phi(y) = lp (lp <= log 1/2 on its real part; complex lp for the complex step): Newton on
    log Phi, which is increasing and concave, from -sqrt(-2 Re lp) (or 0), first on the real part, then on lp."""
    r = mp.re(lp)
    y = -mp.sqrt(-2 * r) if r < -1 else mp.mpf(0)
    for target, steps in ((r, 400), (lp, 20)):
        for _ in range(steps):
            P = _ncdf(y)
            step = (mp.log(P) - target) * P / (mp.exp(-y * y / 2) / mp.sqrt(2 * mp.pi))
            y = y - step
            if abs(step) < mp.mpf(10) ** (-DPS + 5) * (1 + abs(y)):
                break
        else:
            raise ArithmeticError("MarginalGaussianization reference: the inverse normal CDF did not converge")
    return y


def _mg_parts(P, d):
    """Weights, centres and bandwidths of coordinate d: pi = softmax(logits), mu, h = exp(log_bandwidth)."""
    lg = list(P["logits"][d])
    m = max(lg, key=lambda v: mp.re(v))
    e = [mp.exp(v - m) for v in lg]
    tot = mp.fsum(e)
    return [v / tot for v in e], list(P["centers"][d]), [mp.exp(v) for v in P["log_bandwidth"][d]]


def _mg_scalar(pi, mu, h, x):
    """(F(x), S(x) = 1 - F(x), log f(x)) of one coordinate's kernel mixture, each summed as written (S from
    Phi(-z), so that it keeps its digits where F is close to 1)."""
    z = [(x - m) / b for m, b in zip(mu, h)]
    F = mp.fsum(w * _ncdf(v) for w, v in zip(pi, z))
    S = mp.fsum(w * _ncdf(-v) for w, v in zip(pi, z))
    f = mp.fsum(w * mp.exp(-v * v / 2) / (b * mp.sqrt(2 * mp.pi)) for w, v, b in zip(pi, z, h))
    return F, S, mp.log(f)


def marginal_gaussianization_forward(T, P, x):
    """y_d = Phi^-1(F_d(x_d)) from the smaller tail (Phi^-1(F), or -Phi^-1(1 - F)); logdet = sum_d
    [log f_d(x_d) - log phi(y_d)]."""
    N, D = x.shape
    y = np.empty((N, D), dtype=object)
    terms = np.empty((N, D), dtype=object)
    for d in range(D):
        pi, mu, h = _mg_parts(P, d)
        for n in range(N):
            F, S, lf = _mg_scalar(pi, mu, h, x[n, d])
            yv = _log_ncdf_inv(mp.log(F)) if mp.re(F) <= mp.re(S) else -_log_ncdf_inv(mp.log(S))
            y[n, d] = yv
            terms[n, d] = lf + yv * yv / 2 + mp.log(mp.sqrt(2 * mp.pi))
    return y, ldsum(terms)


def marginal_gaussianization_inverse(T, P, y):
    """x_d = F_d^-1(Phi(y_d)): Newton on log F(x) = log Phi(y) (y <= 0) or log S(x) = log Phi(-y), safeguarded
    by bisection of [min_k(mu_k + h_k y), max_k(mu_k + h_k y)]; logdet = -(log f(x) - log phi(y))."""
    N, D = y.shape
    x = np.empty((N, D), dtype=object)
    terms = np.empty((N, D), dtype=object)
    for d in range(D):
        pi, mu, h = _mg_parts(P, d)
        for n in range(N):
            yv = y[n, d]
            up = mp.re(yv) > 0
            target = mp.log(_ncdf(-yv if up else yv))
            ends = [m + b * yv for m, b in zip(mu, h)]
            lo, hi = min(ends, key=mp.re), max(ends, key=mp.re)
            a = (lo + hi) / 2
            for _ in range(2000):
                F, S, lf = _mg_scalar(pi, mu, h, a)
                g = (target - mp.log(S)) if up else (mp.log(F) - target)       # increasing in a
                if mp.re(g) < 0:
                    lo = a
                else:
                    hi = a
                dg = mp.exp(lf) / (S if up else F)
                new = a - g / dg
                if not (mp.re(lo) < mp.re(new) < mp.re(hi)):
                    new = (lo + hi) / 2
                if abs(new - a) < mp.mpf(10) ** (-DPS + 5) * (1 + abs(a)):
                    a = new
                    break
                a = new
            else:
                raise ArithmeticError("MarginalGaussianization reference inverse: no convergence")
            x[n, d] = a
            terms[n, d] = -(_mg_scalar(pi, mu, h, a)[2] + yv * yv / 2 + mp.log(mp.sqrt(2 * mp.pi)))
    return x, ldsum(terms)


def rbig_layers(T):
    """An RBIG description as its Sequential: n_layers pairs (MarginalGaussianization, Linear)."""
    D, K = T["dim"], T["n_components"]
    pair = [{"type": "MarginalGaussianization", "dim": D, "n_components": K}, {"type": "Linear", "dim": D}]
    return {"type": "Sequential", "layers": pair * T["n_layers"]}


FORWARD = {
    "ElementwiseAffine": affine_forward, "ActNorm": affine_forward, "LeakyReLU": leaky_forward,
    "Sigmoid": sigmoid_forward, "Logit": logit_forward, "Permutation": perm_forward,
    "Linear": linear_forward, "LULinear": lu_forward, "AdditiveCoupling": additive_forward,
    "AffineCoupling": affine_coupling_forward, "Planar": planar_forward, "Radial": radial_forward,
    "ConditionalPlanar": lambda T, P, z: _conditional_planar(T, P, z, planar_forward),
    "Sequential": seq_forward, "Inverse": lambda T, P, x: inverse(T["base"], P, x),
    "RecomputeSequential": seq_forward,            # the same map: only the backward (recomputed) differs
    "MaskedAffineAutoregressive": maa_forward, "RationalQuadraticSpline": rqs_forward,
    "SplineCoupling": lambda T, P, x: _spline_coupling(T, P, x, False),
    "MaskedSplineAutoregressive": msa_forward, "Reshape": reshape_forward, "Squeeze": squeeze_forward,
    "ActNorm2d": actnorm2d_forward, "Invertible1x1Conv": conv1x1_forward, "LUInvertible1x1Conv": lu_conv_forward,
    "MultiScale": multiscale_forward, "MaskedConv2d": masked_conv_forward,
    "ImageAffineCoupling": image_affine_forward, "ImageAdditiveCoupling": image_additive_forward,
    "ResidualBlock": residual_forward,
    "MarginalGaussianization": marginal_gaussianization_forward,
    "RBIG": lambda T, P, x: seq_forward(rbig_layers(T), P, x),
}
INVERSE = {
    "ElementwiseAffine": affine_inverse, "ActNorm": affine_inverse, "LeakyReLU": leaky_inverse,
    "Sigmoid": sigmoid_inverse, "Logit": logit_inverse, "Permutation": perm_inverse,
    "Linear": linear_inverse, "LULinear": lu_inverse, "AdditiveCoupling": additive_inverse,
    "AffineCoupling": affine_coupling_inverse, "Planar": planar_inverse, "Radial": radial_inverse,
    "ConditionalPlanar": lambda T, P, x: _conditional_planar(T, P, x, _planar_inverse_bracketed),
    "Sequential": seq_inverse, "Inverse": lambda T, P, y: forward(T["base"], P, y),
    "RecomputeSequential": seq_inverse,
    "MaskedAffineAutoregressive": maa_inverse,
    "RationalQuadraticSpline": lambda T, P, y: rqs_forward(T, P, y, inverse=True),
    "SplineCoupling": lambda T, P, y: _spline_coupling(T, P, y, True),
    "MaskedSplineAutoregressive": msa_inverse, "Reshape": reshape_inverse, "Squeeze": squeeze_inverse,
    "ActNorm2d": actnorm2d_inverse, "Invertible1x1Conv": conv1x1_inverse, "LUInvertible1x1Conv": lu_conv_inverse,
    "MultiScale": multiscale_inverse, "MaskedConv2d": masked_conv_inverse,
    "ImageAffineCoupling": image_affine_inverse,
    "ImageAdditiveCoupling": lambda T, P, y: image_additive_forward(T, P, y, sign=-1),
    "ResidualBlock": residual_inverse,
    "MarginalGaussianization": marginal_gaussianization_inverse,
    "RBIG": lambda T, P, y: seq_inverse(rbig_layers(T), P, y),
}


def forward(T, P, x, c=None):
    """``(y, logdet)`` of transform ``T`` at ``x``; ``c``: the context (N, C) of a conditional case (None:
    the context already set by an enclosing call, if any)."""
    if c is None:
        return FORWARD[T["type"]](T, P, x)
    with context(c):
        return FORWARD[T["type"]](T, P, x)


def inverse(T, P, y, c=None):
    """``(x, logdet)`` of transform ``T``'s inverse at ``y``; ``c`` as in :func:`forward`."""
    if c is None:
        return INVERSE[T["type"]](T, P, y)
    with context(c):
        return INVERSE[T["type"]](T, P, y)


def missing_types(T):
    """Types in the description ``T`` (nested) that have no reference here."""
    out = set()
    if T["type"] not in FORWARD or T["type"] not in INVERSE:
        out.add(T["type"])
    for L in children(T):
        out |= missing_types(L)
    return out


def children(T):
    """The transforms nested in the description ``T``: a ``Sequential``'s ``layers``, an ``Inverse``'s
    ``base``, a ``MultiScale``'s ``stages`` (any value that is a description or a list of them)."""
    out = []
    for v in T.values():
        if isinstance(v, dict) and "type" in v:
            out.append(v)
        elif isinstance(v, list):
            out += [e for e in v if isinstance(e, dict) and "type" in e]
    return out
