"""A time-dependent vector field for continuous normalizing flows: an MLP on ``[z, t]`` with hand-derived
Jacobian-vector and vector-Jacobian products, the exact trace of its Jacobian (and Hutchinson's estimate
of it), and the gradients of that trace with respect to the state and the parameters.

References: Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural Ordinary Differential Equations",
arXiv:1806.07366; Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud 2019, "FFJORD: Free-form Continuous
Dynamics for Scalable Reversible Generative Models", arXiv:1810.01367.
"""
import numpy as np

from .mlp import check_context_dim, hidden_bias_init

FIELD_ACTIVATIONS = ("tanh", "softplus")


def _act(name, h, xp=np):
    """``(act(h), act'(h))`` for the smooth activations (the trace needs the first derivative in the
    forward pass; both forms are traceable).

    tanh is computed from one exponential, :math:`e = \\exp(\\min(-2h, 700))`:
    :math:`\\tanh h = (1 - e)/(1 + e)` and :math:`\\tanh' h = 4e/(1 + e)^2` (evaluated as
    ``e / p / p * 4`` with ``p = 1 + e``, which never overflows).  NumPy's float64 ``tanh`` is scalar code on
    CPUs without AVX-512 and costs about 2.7 exponentials there, and the activations are most of an
    evaluation of the field.  The clamp only matters below :math:`h = -350`, where tanh is -1 in float64
    anyway and :math:`\\tanh'` is returned as :math:`4e^{-700} \\approx 4\\cdot10^{-304}` instead of smaller.
    Accuracy (against 40-digit mpmath): absolute error below 2.5e-16 (``np.tanh``: 1e-16), about 2 ulp for
    :math:`|h| \\ge 0.5` (relative accuracy is lost only for tiny :math:`|h|`, where :math:`1 - e` cancels,
    which the O(1) sums of the next layer do not notice); :math:`\\tanh'` within 6e-16 relative, also in
    the tails, where ``(1 - tanh)(1 + tanh)`` loses every digit."""
    if name == "tanh":
        e = xp.exp(xp.minimum(-2.0 * h, 700.0))
        p = 1.0 + e
        return (1.0 - e) / p, e / p / p * 4.0
    if name == "softplus":
        return xp.logaddexp(0.0, h), 0.5 * (1.0 + xp.tanh(0.5 * h))      # softplus' = sigmoid
    raise ValueError(f"ODEField: unknown activation {name!r}; choose one of {FIELD_ACTIVATIONS}")


def _buf(work, key, shape, dtype):
    """The work array ``work[key]`` of this shape and dtype, allocated on first use (or when the shape or
    dtype changed) and reused by every later call with the same ``work``."""
    a = work.get(key)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = work[key] = np.empty(shape, dtype)
    return a


def _add_into(x, y):
    """``x + y``, written into ``x`` where that keeps the dtype of ``x + y`` (else a new array)."""
    if np.result_type(x, y) != x.dtype:
        return x + y
    x += y
    return x


def _mul_into(x, y):
    """``x * y``, written into ``x`` where that keeps the dtype of ``x * y`` (else a new array)."""
    if np.result_type(x, y) != x.dtype:
        return x * y
    x *= y
    return x


def _act_into(name, h, work, l):
    """:func:`_act` into work arrays, the same operations in the same order, so the same bits.  For tanh,
    ``h`` holds :math:`-2h` (see :meth:`ODEField._primal_into`) and is overwritten with :math:`e`."""
    a, d1 = _buf(work, f"a{l}", h.shape, h.dtype), _buf(work, f"d1_{l}", h.shape, h.dtype)
    if name == "tanh":
        e, p = h, _buf(work, f"p{h.shape}", h.shape, h.dtype)
        np.minimum(e, 700.0, out=e)
        np.exp(e, out=e)
        np.add(1.0, e, out=p)
        np.subtract(1.0, e, out=a)
        a /= p
        np.divide(e, p, out=d1)
        d1 /= p
        d1 *= 4.0
    else:
        np.logaddexp(0.0, h, out=a)
        np.multiply(0.5, h, out=d1)
        np.tanh(d1, out=d1)
        np.add(1.0, d1, out=d1)
        np.multiply(0.5, d1, out=d1)
    return a, d1


def _act_d2_into(name, a, d1, out):
    """``act''(h)`` into ``out`` from ``a = act(h)`` and ``d1 = act'(h)``: tanh'' = -2 tanh tanh';
    softplus'' = sigmoid (1 - sigmoid)."""
    if name == "tanh":
        np.multiply(-2.0, a, out=out)
        out *= d1
    else:
        np.subtract(1.0, d1, out=out)
        np.multiply(d1, out, out=out)
    return out


class ODEField:
    """:math:`f(z, t; \\theta)`: an MLP on the concatenation :math:`u = [z, t]` (time as an input), batch
    first, with ``D`` outputs.

    Layer ``l`` computes :math:`h_l = a_l W_l + b_l`, :math:`a_{l+1} = \\sigma(h_l)` for :math:`l < L`,
    with :math:`a_0 = [z, t]` and output :math:`f = h_L`.  ``W_l`` is ``(in, out)``; the first layer's
    input has ``D + 1`` rows, the last of which multiplies t.  A conditional field (``context_dim=C``,
    :math:`f(z, t; c)`) reads :math:`a_0 = [z, t, c]`: ``W0`` has ``D + 1 + C`` rows, the last C for the
    context, which is constant in time.  ``hidden=()`` gives the affine field
    :math:`f = z W_0[:D] + t W_0[D] + b_0` (per sample :math:`A z + c(t)` with :math:`A = W_0[:D]^T`).

    Parameters
    ----------
    dim : int
        State size D.
    hidden : sequence of int
        Hidden widths.
    activation : {"tanh", "softplus"}
        Smooth activations only: the trace's gradient needs :math:`\\sigma''`.
    prefix : str
        Prepended to every parameter key.
    context_dim : int, optional
        C: the field also reads a context ``(N, C)``, one row per sample, constant along the trajectory (an
        extra input, as zuko's ``CNF`` concatenates its context to the field's input); every method then takes
        it as ``context=`` and :meth:`vjp` also returns its cotangent.

    Notes
    -----
    **Jacobian-vector products** (forward mode).  A tangent :math:`v` of z (t held fixed) moves
    :math:`\\dot h_0 = v W_0[:D]`, :math:`\\dot a_{l+1} = \\sigma'(h_l) \\odot \\dot h_l`,
    :math:`\\dot h_{l+1} = \\dot a_{l+1} W_{l+1}`, and :math:`J v = \\dot h_L` with
    :math:`J = \\partial f/\\partial z`.  So
    :math:`J = W_L^T \\mathrm{diag}(\\sigma'_{L-1}) W_{L-1}^T \\cdots \\mathrm{diag}(\\sigma'_0) W_0[:D]^T`.

    **The trace and Hutchinson's estimate** are one quadratic form.  With ``K`` tangents :math:`v_k` per
    sample (a tensor ``V`` of shape ``(N, K, D)``, all propagated at once as ``(N, K, H)`` tensors),

    .. math:: q = \\sum_k v_k^T J v_k .

    ``V = I`` (the D unit vectors, K = D) gives the exact trace :math:`\\mathrm{tr}\\,J`, D forward-mode
    passes batched into one; ``V = \\epsilon`` with one probe (K = 1),
    :math:`\\mathbb E[\\epsilon\\epsilon^T] = I`, gives Hutchinson's unbiased estimate
    :math:`\\mathbb E[\\epsilon^T J\\epsilon] = \\mathrm{tr}\\,J` (Grathwohl et al. 2019, section 3.1).

    **Vector-Jacobian product of (f, q)**: the gradient of :math:`S = \\sum_n [a_n^T f_n + c_n q_n]` in z
    and every parameter, for cotangents ``a`` ``(N, D)`` and ``c`` ``(N,)`` (the continuous adjoint needs
    exactly this with ``a`` the state's adjoint and ``c`` the log-density's).  Reverse mode over the
    primal and the tangent computation together ("reverse over forward"): start from
    :math:`\\bar h_L = a` and :math:`\\bar{\\dot h}_L = c\\,V` (since :math:`q = \\sum_k v_k\\cdot\\dot h_{L,k}`);
    for :math:`l = L, \\dots, 0`:

    * :math:`h_l = a_l W_l + b_l` and :math:`\\dot h_l = \\dot a_l W_l`:
      :math:`\\bar W_l = a_l^T\\bar h_l + \\sum_{n,k}\\dot a_{l,nk}^T\\bar{\\dot h}_{l,nk}`,
      :math:`\\bar b_l = \\sum_n \\bar h_l`, :math:`\\bar a_l = \\bar h_l W_l^T`,
      :math:`\\bar{\\dot a}_l = \\bar{\\dot h}_l W_l^T` (the tangent part of :math:`\\bar W_0[:D]` is
      :math:`\\sum_{n,k} v_{nk}^T\\bar{\\dot h}_{0,nk}`, and :math:`\\bar W_0[D] = t\\sum_n\\bar h_0`);
    * :math:`a_l = \\sigma(h_{l-1})` and :math:`\\dot a_l = \\sigma'(h_{l-1})\\odot\\dot h_{l-1}`: the
      primal pre-activation collects both paths, which is where the second derivative enters,

      .. math:: \\bar h_{l-1} = \\sigma'(h_{l-1})\\odot\\bar a_l
                + \\sigma''(h_{l-1})\\odot\\sum_k \\dot h_{l-1,k}\\odot\\bar{\\dot a}_{l,k},
                \\qquad \\bar{\\dot h}_{l-1} = \\sigma'(h_{l-1})\\odot\\bar{\\dot a}_l ;

    * finally :math:`\\bar z = \\bar h_0 W_0[:D]^T` (the time column's cotangent is not needed).

    **Context.**  :math:`h_0 = z W_0[:D] + t W_0[D] + c\\,W_0[D+1:] + b_0`: the context is one more input of
    the first layer, which no tangent of z moves (:math:`\\dot h_0 = v W_0[:D]` as before).  So it is reached
    only through the primal pre-activation :math:`h_0`, whose cotangent :math:`\\bar h_0` above already collects
    both the field's path and the trace's (the :math:`\\sigma''` term), and
    :math:`\\bar c = \\bar h_0 W_0[D+1:]^T`, :math:`\\bar W_0[D+1:] = c^T\\bar h_0` (per sample: the continuous
    adjoint integrates :math:`\\bar c` like a parameter's gradient, one row per sample).

    With ``c = 0`` this is the plain VJP :math:`a^T J` and the tangent work is skipped.  Chen et al. 2018
    (arXiv:1806.07366, eq. 4 and appendix B) need :math:`a^T\\partial f/\\partial z` and
    :math:`a^T\\partial f/\\partial\\theta`; the log-density's adjoint adds
    :math:`c\\,\\partial\\mathrm{tr}J/\\partial(z, \\theta)` (FFJORD's augmented dynamics).

    **Two hidden layers, exact trace: one bilinear form.**  With :math:`L = 3` (``hidden=(H0, H1)``, the
    CNF's usual field) write :math:`s_0 = \\sigma'(h_0)`, :math:`s_1 = \\sigma'(h_1)`.  The Jacobian above
    gives :math:`J_{ik} = \\sum_{j,m} W_2[j,i]\\,s_{1,j}\\,W_1[m,j]\\,s_{0,m}\\,W_0[k,m]`, so

    .. math:: \\mathrm{tr}\\,J = \\sum_{m,j} s_{0,m}\\,M_{mj}\\,s_{1,j} = s_0^T M s_1, \\qquad
              M = W_1 \\odot (W_0[:D]^T W_2^T) \\quad (H_0\\times H_1,\\ \\text{the same for every sample}),

    one ``(N, H0) x (H0, H1)`` product for the batch instead of the D tangents' ``(N D, H0) x (H0, H1)``:
    the unit tangents enter the first layer and leave the last one as rank-one factors, which fold into M.
    (With more hidden layers the middle products need the D tangents anyway, and Hutchinson's probe
    differs per sample; both use the tangents above.)  Its VJP, with :math:`C = W_0[:D]^T W_2^T`,
    :math:`g_1 = c\\odot(s_0 M)`, :math:`g_0 = c\\odot(s_1 M^T)` (rows scaled by :math:`c_n`) and
    :math:`\\bar M = \\sum_n c_n s_{0,n} s_{1,n}^T`:
    :math:`\\bar h_1 = s_1\\odot(a W_2^T) + \\sigma''(h_1)\\odot g_1`,
    :math:`\\bar h_0 = s_0\\odot(\\bar h_1 W_1^T) + \\sigma''(h_0)\\odot g_0`,
    :math:`\\bar W_1 = a_1^T\\bar h_1 + \\bar M\\odot C`, and :math:`\\bar C = \\bar M\\odot W_1` adds
    :math:`(\\bar C W_2)^T` to :math:`\\bar W_0[:D]` and :math:`\\bar C^T W_0[:D]^T` to :math:`\\bar W_2`;
    the rest is the plain VJP.  Every array is ``(N, H)``; besides the primal's product the trace costs five
    ``(N, H) x (H, H)`` products (:math:`s_0 M` and four in reverse) where the tangent form takes
    3D + 2 such products' worth.  Only the order of the sums differs from the tangent form, so the two agree
    to rounding (checked by the tests).

    **Work arrays.**  An ODE solve evaluates the field hundreds of times on arrays of the same shapes.
    ``f_and_trace``, ``forward`` and ``vjp`` take ``work``, a dict that the caller creates for one solve
    and passes to each evaluation; the ``(N, H)`` and ``(N, K, H)`` intermediates are then written into
    arrays kept there (``out=``, in-place updates) instead of being allocated, returned to the system by
    glibc and faulted in again on every call.  The returned arrays are always new.  The operations and
    their order are those of the traceable code, so the numbers are bit-identical with and without
    ``work``; the traceable ``xp`` path itself never writes in place (``work`` is refused under autograd).

    Initialisation: :math:`W_l \\sim \\mathcal N(0, 1/\\mathrm{fan\\_in})`, hidden biases
    :math:`U(\\pm 1/\\sqrt{\\mathrm{fan\\_in}})`, and with ``zero_last`` a zero last layer (f = 0: the
    flow starts as the identity).
    """

    def __init__(self, dim, hidden=(32, 32), activation="tanh", prefix="", context_dim=None):
        if activation not in FIELD_ACTIVATIONS:
            raise ValueError(f"ODEField: unknown activation {activation!r}; choose one of {FIELD_ACTIVATIONS}")
        self.dim = int(dim)
        if self.dim < 1:
            raise ValueError(f"ODEField: dim must be at least 1, got {dim}")
        self.hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"ODEField: hidden widths must be positive, got {self.hidden}")
        self.context_dim = check_context_dim("ODEField", context_dim)
        self.sizes = (self.dim + 1 + (self.context_dim or 0),) + self.hidden + (self.dim,)
        self.activation, self.prefix = activation, str(prefix)
        self.n_layers = len(self.sizes) - 1
        self.W = [f"{prefix}W{l}" for l in range(self.n_layers)]
        self.b = [f"{prefix}b{l}" for l in range(self.n_layers)]
        self.keys = [k for l in range(self.n_layers) for k in (self.W[l], self.b[l])]

    def param_shapes(self):
        return {k: s for l in range(self.n_layers)
                for k, s in ((self.W[l], (self.sizes[l], self.sizes[l + 1])), (self.b[l], (self.sizes[l + 1],)))}

    def init(self, rng, dtype=np.float64, zero_last=True):
        p = {}
        for l in range(self.n_layers):
            fan_in, fan_out = self.sizes[l], self.sizes[l + 1]
            last = l == self.n_layers - 1
            W = np.zeros((fan_in, fan_out)) if last and zero_last else \
                rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
            b = np.zeros(fan_out) if last else hidden_bias_init(rng, np.full(fan_out, fan_in))
            p[self.W[l]], p[self.b[l]] = W.astype(dtype), b.astype(dtype)
        return p

    # ------------------------------------------------------------------ forward passes (traceable)
    def _bias0(self, params, t, context):
        """The first layer's terms that are not z's: :math:`t W_0[D] + b_0` (one row), plus :math:`c W_0[D+1:]`
        for a conditional field (one row per sample)."""
        W0 = params[self.W[0]]
        c0 = t * W0[self.dim] + params[self.b[0]]
        if self.context_dim is None:
            return c0
        if context is None:
            raise ValueError(f"{self!r}: a conditional field needs a context of shape (N, {self.context_dim})")
        return c0 + context @ W0[self.dim + 1:]

    def _primal(self, params, z, t, xp, context=None):
        """The output ``f``, and the activations ``a_{l+1}`` and derivatives ``act'(h_l)`` of every hidden
        layer."""
        W0 = params[self.W[0]]
        h = z @ W0[:self.dim] + self._bias0(params, t, context)      # one pass adds time, bias (and context)
        acts, d1s = [], []
        for l in range(1, self.n_layers):
            a, d1 = _act(self.activation, h, xp)
            acts.append(a)
            d1s.append(d1)
            h = a @ params[self.W[l]] + params[self.b[l]]
        return h, acts, d1s

    def forward(self, params, z, t, xp=np, work=None, context=None):
        """:math:`f(z, t)`, shape ``(N, D)``; ``t`` a scalar.  ``work``: see :meth:`f_and_trace`."""
        if work is not None:
            return self._primal_into(params, z, t, self._work(work, xp), context)[0]
        return self._primal(params, z, t, xp, context)[0]

    def _tangents(self, params, V, d1s):
        """The tangents :math:`\\dot h_l` ``(N or 1, K, H)`` of every layer for the tangent tensor ``V``."""
        hd = [V @ params[self.W[0]][:self.dim]]
        for l in range(1, self.n_layers):
            ad = d1s[l - 1][:, None, :] * hd[-1]
            W = params[self.W[l]]       # one (N K, H) GEMM, not N small (K, H) ones
            hd.append((ad.reshape(-1, W.shape[0]) @ W).reshape(ad.shape[0], ad.shape[1], W.shape[1]))
        return hd

    def jvp(self, params, z, t, v, xp=np, context=None):
        """``(f, J v)`` for a tangent ``v`` ``(N, D)`` of z."""
        f, _, d1s = self._primal(params, z, t, xp, context)
        return f, self._tangents(params, v[:, None, :], d1s)[-1][:, 0, :]

    def _probe_tensor(self, probe, xp, dtype):
        """The tangents ``V``: the D unit vectors ``(1, D, D)`` in the field's dtype (exact trace), or the
        probe ``(N, 1, D)``."""
        return xp.eye(self.dim, dtype=dtype)[None] if probe is None else probe[:, None, :]

    def f_and_trace(self, params, z, t, probe=None, xp=np, work=None, context=None):
        """``(f, q)``: the field and the exact trace of :math:`\\partial f/\\partial z` (``probe=None``) or
        Hutchinson's estimate :math:`\\epsilon^T(\\partial f/\\partial z)\\epsilon` (``probe`` = ε, ``(N, D)``);
        ``q`` has shape ``(N,)``.

        ``work``: None, or a dict that the caller owns and passes to every call of one solve (NumPy only).
        The intermediate arrays of the pass (``(N, H)`` activations, ``(N, K, H)`` tangents) are then
        written into arrays kept in it and reused by the next call, instead of being allocated afresh
        (see the class Notes, "Work arrays").  The returned arrays are always new."""
        if work is not None:
            work = self._work(work, xp)
            f, _, d1s = self._primal_into(params, z, t, work, context)
            if self._folds(probe):
                (s0, s1), M = d1s, self._trace_matrix(params)
                P = np.matmul(s0, M, out=_buf(work, "s0M", s1.shape, np.result_type(s0, M)))
                return f, np.einsum("nj,nj->n", P, s1)
            V = self._probe_tensor(probe, np, f.dtype)
            Jv = self._tangents_into(params, V, d1s, work)[0][-1]
        else:
            f, _, d1s = self._primal(params, z, t, xp, context)
            if self._folds(probe):
                return f, xp.einsum("nj,nj->n", d1s[0] @ self._trace_matrix(params), d1s[1])
            V = self._probe_tensor(probe, xp, f.dtype)
            Jv = self._tangents(params, V, d1s)[-1]
        q = xp.sum(xp.sum(Jv * V, axis=2), axis=1)
        return f, q + xp.zeros(z.shape[0], dtype=q.dtype)       # the affine field's trace is the same for all

    def _folds(self, probe):
        """True where the exact trace is the bilinear form :math:`\\sigma'_0{}^T M \\sigma'_1` (two hidden
        layers; see the Notes)."""
        return probe is None and self.n_layers == 3

    def _trace_matrix(self, params):
        """:math:`M = W_1 \\odot (W_0[:D]^T W_2^T)`, ``(H_0, H_1)``: the exact trace of a two-hidden-layer
        field is :math:`\\sigma'(h_0)^T M\\,\\sigma'(h_1)` per sample (see the Notes)."""
        W0, W1, W2 = (params[k] for k in self.W)
        return W1 * (W0[:self.dim].T @ W2.T)

    def jacobian(self, params, z, t, context=None):
        """The full Jacobian :math:`\\partial f/\\partial z` per sample, ``(N, D, D)`` (row i = output i)."""
        f, _, d1s = self._primal(params, z, t, np, context)
        Jv = self._tangents(params, np.eye(self.dim, dtype=f.dtype)[None], d1s)[-1]     # Jv[n, k, i] = dF_i/dz_k
        return np.broadcast_to(np.swapaxes(Jv, 1, 2), (z.shape[0], self.dim, self.dim))

    # ------------------------------------------------------------------ the same passes into work arrays (NumPy)
    def _work(self, work, xp):
        if xp is not np:
            raise TypeError(f"{self!r}: work arrays are written in place, which autograd cannot trace; "
                            f"pass work=None with xp={getattr(xp, '__name__', xp)}")
        if not isinstance(work, dict):
            raise TypeError(f"{self!r}: work must be a dict (or None), got {type(work).__name__}")
        return work

    def _primal_into(self, params, z, t, work, context=None):
        """:meth:`_primal` with the hidden layers' arrays in ``work``; the output ``f`` is a new array.  Before
        a tanh the layer computes :math:`-2h` directly, with :math:`-2W` and :math:`-2b` (tiny arrays): scaling
        by a power of two is exact, so this is the traceable code's ``-2.0 * h`` bit for bit, one pass fewer."""
        W0 = params[self.W[0]]
        c0 = self._bias0(params, t, context)
        acts, d1s = [], []
        last = self.n_layers == 1
        k = None if last or self.activation != "tanh" else -2.0
        h = np.matmul(z, W0[:self.dim] if k is None else k * W0[:self.dim], out=None if last else _buf(
            work, "h0", (z.shape[0], W0.shape[1]), np.result_type(z, W0)))
        h = _add_into(h, c0 if k is None else k * c0)
        for l in range(1, self.n_layers):
            a, d1 = _act_into(self.activation, h, work, l - 1)
            acts.append(a)
            d1s.append(d1)
            W, b = params[self.W[l]], params[self.b[l]]
            last = l == self.n_layers - 1
            if not last and k is not None:
                W, b = k * W, k * b
            h = _add_into(np.matmul(a, W, out=None if last else _buf(
                work, f"h{l}", (a.shape[0], W.shape[1]), np.result_type(a, W))), b)
        return h, acts, d1s

    def _tangents_into(self, params, V, d1s, work):
        """:meth:`_tangents` into work arrays (same bits), and the tangents :math:`\\dot a_l` ``(N, K, H)``
        of the hidden layers, which :meth:`vjp` needs again."""
        hd, ads = [V @ params[self.W[0]][:self.dim]], []
        for l in range(1, self.n_layers):
            d1, prev, W = d1s[l - 1], hd[-1], params[self.W[l]]
            n, k = np.broadcast_shapes(d1.shape[:1], prev.shape[:1])[0], prev.shape[1]   # (an empty batch: 0)
            ad = np.multiply(d1[:, None, :], prev, out=_buf(work, f"ad{l}", (n, k, d1.shape[1]),
                                                             np.result_type(d1, prev)))
            out = _buf(work, f"hd{l}", (n, k, W.shape[1]), np.result_type(ad, W))
            np.matmul(ad.reshape(-1, W.shape[0]), W, out=out.reshape(-1, W.shape[1]))
            hd.append(out)
            ads.append(ad)
        return hd, ads

    # ------------------------------------------------------------------ reverse mode (NumPy)
    def vjp(self, params, z, t, a, c=None, probe=None, work=None, context=None):
        """``(f, dz, grads)``: the field and the gradient of :math:`\\sum_n a_n^T f_n + c_n q_n` in z and in
        every parameter (q the exact trace, or Hutchinson's estimate with ``probe``); ``c=None`` drops the
        trace term.  A conditional field returns ``(f, dz, grads, dcontext)``.  See the class Notes for the
        derivation.  ``work``: as in :meth:`f_and_trace` (None: a fresh dict for this call)."""
        work = {} if work is None else self._work(work, np)
        D = self.dim
        use_q = c is not None and np.any(c)
        if use_q and self._folds(probe):
            return self._vjp_folded(params, z, t, a, c, work, context)
        f, acts, d1s = self._primal_into(params, z, t, work, context)
        if use_q:
            V = self._probe_tensor(probe, np, f.dtype)
            hd, ads = self._tangents_into(params, V, d1s, work)
            hd_bar = c[:, None, None] * V                      # dq / d(dot h_L) = c V
        grads = {}
        h_bar = a
        for l in range(self.n_layers - 1, -1, -1):
            W = params[self.W[l]]
            grads[self.b[l]] = h_bar.sum(0)
            if l == 0:
                W0 = z.T @ h_bar
                if use_q:
                    W0 = W0 + (hd_bar.sum(0) if probe is None else np.einsum("nkd,nkh->dh", V, hd_bar))
                rows = [W0, (t * grads[self.b[0]])[None]]
                if self.context_dim is not None:           # h_0 += context W_0[D+1:]
                    rows.append(context.T @ h_bar)
                grads[self.W[0]] = np.concatenate(rows, axis=0)
                out = f, h_bar @ W[:D].T, {k: grads[k] for k in self.keys}
                return out if self.context_dim is None else out + (h_bar @ W[D + 1:].T,)
            a_prev, d1 = acts[l - 1], d1s[l - 1]
            gW = a_prev.T @ h_bar
            a_bar = np.matmul(h_bar, W.T, out=_buf(work, f"a_bar{l}", d1.shape, np.result_type(h_bar, W)))
            h_bar_prev = _buf(work, f"h_bar{l - 1}", d1.shape, np.result_type(d1, a_bar))
            if use_q:
                ad = ads[l - 1]                                # dot a_l = act'(h_{l-1}) dot h_{l-1}
                H, Ho = ad.shape[2], W.shape[1]
                gW = gW + ad.reshape(-1, H).T @ hd_bar.reshape(-1, Ho)
                ad_bar = _buf(work, f"ad_bar{l}", ad.shape, np.result_type(hd_bar, W))
                np.matmul(hd_bar.reshape(-1, Ho), W.T, out=ad_bar.reshape(-1, H))
                # h_bar_{l-1} = act' * a_bar + act'' * sum_k (dot h_{l-1} * ad_bar)
                prod = np.multiply(hd[l - 1], ad_bar, out=_buf(work, f"hd_ad_bar{l}", ad_bar.shape,
                                                                 np.result_type(hd[l - 1], ad_bar)))
                second = _mul_into(np.sum(prod, axis=1, out=_buf(work, f"sum_k{l}", d1.shape, prod.dtype)),
                                   _act_d2_into(self.activation, a_prev, d1, _buf(work, f"d2_{l}", d1.shape,
                                                                                   d1.dtype)))
                h_bar = _add_into(np.multiply(d1, a_bar, out=h_bar_prev), second)
                hd_bar = np.multiply(d1[:, None, :], ad_bar, out=_buf(work, f"hd_bar{l - 1}", ad_bar.shape,
                                                                        np.result_type(d1, ad_bar)))
            else:
                h_bar = np.multiply(d1, a_bar, out=h_bar_prev)
            grads[self.W[l]] = gW

    def _vjp_folded(self, params, z, t, a, c, work, context=None):
        """:meth:`vjp` with the exact trace of a two-hidden-layer field as the bilinear form
        :math:`q = \\sigma'_0{}^T M \\sigma'_1` (the Notes, "Two hidden layers"): every array is ``(N, H)``."""
        D = self.dim
        W0, W1, W2 = (params[k] for k in self.W)
        f, (a1, a2), (s0, s1) = self._primal_into(params, z, t, work, context)
        C = W0[:D].T @ W2.T                                    # (H0, H1); M = W1 * C
        M = W1 * C
        cc = c[:, None]
        # output layer: f = a2 W2 + b2
        gW2, gb2 = a2.T @ a, a.sum(0)
        a2_bar = np.matmul(a, W2.T, out=_buf(work, "a_bar2", s1.shape, np.result_type(a, W2)))
        # h1_bar = s1 * a2_bar + act''(h1) * c (s0 M)
        g1 = _mul_into(np.matmul(s0, M, out=_buf(work, "s0M", s1.shape, np.result_type(s0, M))), cc)
        g1 = _mul_into(g1, _act_d2_into(self.activation, a2, s1, _buf(work, "d2_2", s1.shape, s1.dtype)))
        h1_bar = _add_into(np.multiply(s1, a2_bar, out=_buf(work, "h_bar1", s1.shape,
                                                             np.result_type(s1, a2_bar))), g1)
        # hidden layer: h1 = a1 W1 + b1, and M = W1 * C in the trace
        cs0 = np.multiply(cc, s0, out=_buf(work, "cs0", s0.shape, np.result_type(cc, s0)))
        M_bar = cs0.T @ s1                                     # sum_n c_n s0_n s1_n^T
        gW1, gb1 = a1.T @ h1_bar + M_bar * C, h1_bar.sum(0)
        C_bar = M_bar * W1
        a1_bar = np.matmul(h1_bar, W1.T, out=_buf(work, "a_bar1", s0.shape, np.result_type(h1_bar, W1)))
        # h0_bar = s0 * a1_bar + act''(h0) * c (M s1)
        g0 = _mul_into(np.matmul(s1, M.T, out=_buf(work, "s1M", s0.shape, np.result_type(s1, M))), cc)
        g0 = _mul_into(g0, _act_d2_into(self.activation, a1, s0, _buf(work, "d2_1", s0.shape, s0.dtype)))
        h0_bar = _add_into(np.multiply(s0, a1_bar, out=_buf(work, "h_bar0", s0.shape,
                                                             np.result_type(s0, a1_bar))), g0)
        # first layer: h0 = z W0[:D] + t W0[D] + b0, and C = W0[:D]^T W2^T in the trace
        gb0 = h0_bar.sum(0)
        rows = [z.T @ h0_bar + (C_bar @ W2).T, (t * gb0)[None]]
        if self.context_dim is not None:                       # h0 += context W0[D+1:]
            rows.append(context.T @ h0_bar)
        gW0 = np.concatenate(rows, axis=0)
        grads = {self.W[0]: gW0, self.b[0]: gb0, self.W[1]: gW1, self.b[1]: gb1,
                 self.W[2]: gW2 + C_bar.T @ W0[:D].T, self.b[2]: gb2}
        out = f, h0_bar @ W0[:D].T, {k: grads[k] for k in self.keys}
        return out if self.context_dim is None else out + (h0_bar @ W0[D + 1:].T,)

    def __repr__(self):
        ctx = "" if self.context_dim is None else f", context_dim={self.context_dim}"
        return f"ODEField(dim={self.dim}, hidden={self.hidden}, activation={self.activation!r}{ctx})"
