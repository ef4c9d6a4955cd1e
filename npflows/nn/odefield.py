"""A time-dependent vector field for continuous normalizing flows: an MLP on ``[z, t]`` with hand-derived
Jacobian-vector and vector-Jacobian products, the exact trace of its Jacobian (and Hutchinson's estimate
of it), and the gradients of that trace with respect to the state and the parameters.

References: Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural Ordinary Differential Equations",
arXiv:1806.07366; Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud 2019, "FFJORD: Free-form Continuous
Dynamics for Scalable Reversible Generative Models", arXiv:1810.01367.
"""
import numpy as np

from .mlp import hidden_bias_init

FIELD_ACTIVATIONS = ("tanh", "softplus")


def _act(name, h, xp=np):
    """``(act(h), act'(h))`` for the smooth activations (the trace needs the first derivative in the
    forward pass; both forms are traceable)."""
    if name == "tanh":
        a = xp.tanh(h)
        return a, (1.0 - a) * (1.0 + a)
    if name == "softplus":
        return xp.logaddexp(0.0, h), 0.5 * (1.0 + xp.tanh(0.5 * h))      # softplus' = sigmoid
    raise ValueError(f"ODEField: unknown activation {name!r}; choose one of {FIELD_ACTIVATIONS}")


def _act_d2(name, a, d1):
    """``act''(h)`` from ``a = act(h)`` and ``d1 = act'(h)``: tanh'' = -2 tanh (1 - tanh^2); softplus'' =
    sigmoid (1 - sigmoid)."""
    if name == "tanh":
        return -2.0 * a * d1
    return d1 * (1.0 - d1)


class ODEField:
    """:math:`f(z, t; \\theta)`: an MLP on the concatenation :math:`u = [z, t]` (time as an input), batch
    first, with ``D`` outputs.

    Layer ``l`` computes :math:`h_l = a_l W_l + b_l`, :math:`a_{l+1} = \\sigma(h_l)` for :math:`l < L`,
    with :math:`a_0 = [z, t]` and output :math:`f = h_L`.  ``W_l`` is ``(in, out)``; the first layer's
    input has ``D + 1`` rows, the last of which multiplies t.  ``hidden=()`` gives the affine field
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

    With ``c = 0`` this is the plain VJP :math:`a^T J` and the tangent work is skipped.  Chen et al. 2018
    (arXiv:1806.07366, eq. 4 and appendix B) need :math:`a^T\\partial f/\\partial z` and
    :math:`a^T\\partial f/\\partial\\theta`; the log-density's adjoint adds
    :math:`c\\,\\partial\\mathrm{tr}J/\\partial(z, \\theta)` (FFJORD's augmented dynamics).
    Initialisation: :math:`W_l \\sim \\mathcal N(0, 1/\\mathrm{fan\\_in})`, hidden biases
    :math:`U(\\pm 1/\\sqrt{\\mathrm{fan\\_in}})`, and with ``zero_last`` a zero last layer (f = 0: the
    flow starts as the identity).
    """

    def __init__(self, dim, hidden=(32, 32), activation="tanh", prefix=""):
        if activation not in FIELD_ACTIVATIONS:
            raise ValueError(f"ODEField: unknown activation {activation!r}; choose one of {FIELD_ACTIVATIONS}")
        self.dim = int(dim)
        if self.dim < 1:
            raise ValueError(f"ODEField: dim must be at least 1, got {dim}")
        self.hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"ODEField: hidden widths must be positive, got {self.hidden}")
        self.sizes = (self.dim + 1,) + self.hidden + (self.dim,)
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
    def _primal(self, params, z, t, xp):
        """Pre-activations ``h_l``, activations ``a_{l+1}`` and derivatives ``act'(h_l)`` of every hidden
        layer, and the output."""
        W0 = params[self.W[0]]
        h = z @ W0[:self.dim] + t * W0[self.dim] + params[self.b[0]]
        acts, d1s = [], []
        for l in range(1, self.n_layers):
            a, d1 = _act(self.activation, h, xp)
            acts.append(a)
            d1s.append(d1)
            h = a @ params[self.W[l]] + params[self.b[l]]
        return h, acts, d1s

    def forward(self, params, z, t, xp=np):
        """:math:`f(z, t)`, shape ``(N, D)``; ``t`` a scalar."""
        return self._primal(params, z, t, xp)[0]

    def _tangents(self, params, V, d1s):
        """The tangents :math:`\\dot h_l` ``(N or 1, K, H)`` of every layer for the tangent tensor ``V``."""
        hd = [V @ params[self.W[0]][:self.dim]]
        for l in range(1, self.n_layers):
            ad = d1s[l - 1][:, None, :] * hd[-1]
            W = params[self.W[l]]       # one (N K, H) GEMM, not N small (K, H) ones
            hd.append((ad.reshape(-1, W.shape[0]) @ W).reshape(ad.shape[0], ad.shape[1], W.shape[1]))
        return hd

    def jvp(self, params, z, t, v, xp=np):
        """``(f, J v)`` for a tangent ``v`` ``(N, D)`` of z."""
        f, _, d1s = self._primal(params, z, t, xp)
        return f, self._tangents(params, v[:, None, :], d1s)[-1][:, 0, :]

    def _probe_tensor(self, probe, xp):
        return xp.eye(self.dim)[None] if probe is None else probe[:, None, :]

    def f_and_trace(self, params, z, t, probe=None, xp=np):
        """``(f, q)``: the field and the exact trace of :math:`\\partial f/\\partial z` (``probe=None``) or
        Hutchinson's estimate :math:`\\epsilon^T(\\partial f/\\partial z)\\epsilon` (``probe`` = ε, ``(N, D)``);
        ``q`` has shape ``(N,)``."""
        f, _, d1s = self._primal(params, z, t, xp)
        V = self._probe_tensor(probe, xp)
        Jv = self._tangents(params, V, d1s)[-1]
        q = xp.sum(xp.sum(Jv * V, axis=2), axis=1)
        return f, q + xp.zeros(z.shape[0], dtype=q.dtype)       # the affine field's trace is the same for all

    def jacobian(self, params, z, t):
        """The full Jacobian :math:`\\partial f/\\partial z` per sample, ``(N, D, D)`` (row i = output i)."""
        f, _, d1s = self._primal(params, z, t, np)
        Jv = self._tangents(params, np.eye(self.dim)[None], d1s)[-1]     # Jv[n, k, i] = dF_i/dz_k
        return np.broadcast_to(np.swapaxes(Jv, 1, 2), (z.shape[0], self.dim, self.dim))

    # ------------------------------------------------------------------ reverse mode (NumPy)
    def vjp(self, params, z, t, a, c=None, probe=None):
        """``(f, dz, grads)``: the field and the gradient of :math:`\\sum_n a_n^T f_n + c_n q_n` in z and in
        every parameter (q the exact trace, or Hutchinson's estimate with ``probe``); ``c=None`` drops the
        trace term.  See the class Notes for the derivation."""
        D = self.dim
        f, acts, d1s = self._primal(params, z, t, np)
        use_q = c is not None and np.any(c)
        if use_q:
            V = self._probe_tensor(probe, np)
            hd = self._tangents(params, V, d1s)
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
                grads[self.W[0]] = np.concatenate([W0, (t * grads[self.b[0]])[None]], axis=0)
                return f, h_bar @ W[:D].T, {k: grads[k] for k in self.keys}
            a_prev, d1 = acts[l - 1], d1s[l - 1]
            gW = a_prev.T @ h_bar
            a_bar = h_bar @ W.T
            if use_q:
                ad = d1[:, None, :] * hd[l - 1]                # dot a_l
                H = ad.shape[2]
                gW = gW + ad.reshape(-1, H).T @ hd_bar.reshape(-1, W.shape[1])
                ad_bar = (hd_bar.reshape(-1, W.shape[1]) @ W.T).reshape(ad.shape)
                h_bar = d1 * a_bar + _act_d2(self.activation, a_prev, d1) * np.sum(
                    np.broadcast_to(hd[l - 1], ad_bar.shape) * ad_bar, axis=1)
                hd_bar = d1[:, None, :] * ad_bar
            else:
                h_bar = d1 * a_bar
            grads[self.W[l]] = gW

    def __repr__(self):
        return f"ODEField(dim={self.dim}, hidden={self.hidden}, activation={self.activation!r})"
