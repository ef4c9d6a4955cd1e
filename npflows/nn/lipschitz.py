"""A Lipschitz-constrained MLP: the residual function ``g`` of an invertible residual block, with forward-mode
tangent passes (Jacobian-vector products), vector-Jacobian products, and the reverse-over-forward derivative of
any quantity built from them.

References: Behrmann, Grathwohl, Chen, Duvenaud & Jacobsen 2019, "Invertible Residual Networks",
arXiv:1811.00995 (spectral normalisation to a coefficient c < 1, section 3); Chen, Behrmann, Duvenaud &
Jacobsen 2019, "Residual Flows for Invertible Generative Modeling", arXiv:1906.02735 (LipSwish, section 4);
Miyato, Kataoka, Koyama & Yoshida 2018, "Spectral Normalization for Generative Adversarial Networks",
arXiv:1802.05957 (the power iteration).
"""
import math

import numpy as np

from .._checks import unbox
from .mlp import hidden_bias_init

LIP_ACTIVATIONS = ("lipswish", "elu", "tanh")
SPECTRAL = ("exact", "power")
LIPSWISH_DIVISOR = 1.1
"""LipSwish (Chen et al. 2019): :math:`\\phi(z) = z\\,\\mathrm{sigmoid}(z)/1.1`; the derivative of
:math:`z\\,\\mathrm{sigmoid}(z)` lies in [-0.0998, 1.0998] (its extrema at :math:`z = \\mp 2.3994`), so
dividing by 1.1 makes it 1-Lipschitz."""


def lip_activation(name, h, xp=np, order=1):
    """``(phi(h), phi'(h))``, or with ``order=2`` ``(phi, phi', phi'')``, of the activation ``name``.

    * ``lipswish``: with :math:`s = \\mathrm{sigmoid}(h) = (1 + \\tanh(h/2))/2` and :math:`1 - s = (1 - \\tanh(h/2))/2`
      (both from one tanh, so neither overflows nor cancels), :math:`\\phi = hs/1.1`,
      :math:`\\phi' = s(1 + h(1 - s))/1.1`, :math:`\\phi'' = s(1 - s)(2 + h(1 - 2s))/1.1`
      (from :math:`s' = s(1 - s)`);
    * ``elu``: :math:`\\phi = h` for :math:`h > 0` else :math:`e^h - 1`; :math:`\\phi' = 1` or :math:`e^h`;
      :math:`\\phi'' = 0` or :math:`e^h` (a jump of the second derivative at 0);
    * ``tanh``: :math:`t = \\tanh h`, :math:`\\phi' = 1 - t^2`, :math:`\\phi'' = -2t(1 - t^2)`.
    """
    if name == "lipswish":
        t = xp.tanh(0.5 * h)
        s, sm = 0.5 * (1.0 + t), 0.5 * (1.0 - t)
        a = h * s / LIPSWISH_DIVISOR
        d1 = s * (1.0 + h * sm) / LIPSWISH_DIVISOR
        if order == 1:
            return a, d1
        return a, d1, s * sm * (2.0 + h * (sm - s)) / LIPSWISH_DIVISOR
    if name == "elu":
        neg = xp.minimum(h, 0.0)
        e = xp.exp(neg)
        a = xp.where(h > 0, h, xp.expm1(neg))
        d1 = xp.where(h > 0, 1.0, e)
        if order == 1:
            return a, d1
        return a, d1, xp.where(h > 0, 0.0, e)
    if name == "tanh":
        t = xp.tanh(h)
        d1 = 1.0 - t * t
        if order == 1:
            return t, d1
        return t, d1, -2.0 * t * d1
    raise ValueError(f"unknown activation {name!r}; choose one of {LIP_ACTIVATIONS}")


def power_start(n, dtype=np.float64):
    """The power iteration's fixed start vector: :math:`v_0 = (1, \\dots, 1)/\\sqrt n`."""
    return np.full(n, 1.0 / math.sqrt(n), dtype=dtype)


GRAM_FROM = 16
"""Above this smaller side, :func:`top_singular` takes the top eigenpair of the smaller Gram matrix (LAPACK's
``syevr`` for that one pair) instead of a full SVD: 3-4.5x faster at 64x64 and 128x128 (measured 1.1 against
3.6 ms and 3.5 against 16 ms, one thread, under load), equally accurate for the top pair."""


def top_singular(V):
    """``(sigma_1, u_1, v_1)``: the largest singular value of ``V`` ``(m, n)`` and its unit singular vectors
    (``V v_1 = sigma_1 u_1``).  A full SVD for small matrices; above :data:`GRAM_FROM`, the top eigenpair
    :math:`(\\lambda, q)` of the smaller Gram matrix (:math:`V^TV` or :math:`VV^T`), :math:`\\sigma_1 =
    \\sqrt\\lambda` and the other vector :math:`Vq/\\sigma_1` (or :math:`V^Tq/\\sigma_1`): the largest eigenvalue
    of a Gram matrix has a relative error of a few eps, so :math:`\\sigma_1` does too."""
    m, n = V.shape
    if min(m, n) <= GRAM_FROM:
        U, S, Vt = np.linalg.svd(V, full_matrices=False)
        return S[0], U[:, 0], Vt[0]
    from scipy.linalg import eigh
    right = n <= m
    G = V.T @ V if right else V @ V.T
    k = G.shape[0] - 1
    w, q = eigh(G, subset_by_index=[k, k], driver="evr", check_finite=False)
    sigma = np.sqrt(np.maximum(w[0], 0)).astype(V.dtype)
    q = q[:, 0]
    other = (V @ q if right else q @ V) / sigma if sigma > 0 else np.zeros(m if right else n, V.dtype)
    return (sigma, other, q) if right else (sigma, q, other)


class LipschitzMLP:
    """:math:`g(x) = h_L`, :math:`h_l = a_l W_l + b_l`, :math:`a_0 = x`, :math:`a_{l+1} = \\phi(h_l)`
    (batch first, :math:`W_l` of shape ``(in, out)``), whose effective weights are spectrally normalised,

    .. math:: W_l = V_l\\,\\min\\big(1, c/\\sigma(V_l)\\big),

    so that :math:`\\lVert W_l\\rVert_2 \\le c` and, :math:`\\phi` being 1-Lipschitz,
    :math:`\\mathrm{Lip}(g) \\le \\prod_l\\lVert W_l\\rVert_2 \\le c^{L+1} \\le c`.

    Parameters are the raw weights ``V0, V1, ...`` and the biases ``b0, b1, ...`` (with ``prefix``).

    Parameters
    ----------
    n_in : int
        Input and output width D (g maps R^D to R^D).
    hidden : sequence of int
        Hidden widths (may be empty: then g is the affine map :math:`x W_0 + b_0`).
    activation : {"lipswish", "elu", "tanh"}
    lipschitz : float
        The coefficient c of every layer's normalisation (c > 0; c < 1 makes g a contraction).
    spectral : {"exact", "power"}
        :math:`\\sigma(V)` as the largest singular value (LAPACK's SVD), or the estimate of ``n_power_iter``
        power-iteration steps from the fixed start :func:`power_start` (no state kept between calls).
    n_power_iter : int
        Steps of the power iteration (``spectral="power"``).
    prefix : str
        Prepended to every parameter key (``"net."``).

    Notes
    -----
    **The normalisation, and why the min form.**  Behrmann et al. (i-ResNet) and Chen et al. (Residual Flows)
    both rescale only weights whose norm exceeds c (their code divides by :math:`\\max(1, \\sigma/c)`): a layer
    may then be smaller than c, so a block can learn to be close to the identity, and npflows computes the map
    of their code.  Its price is a kink at :math:`\\sigma(V) = c`, where the derivative jumps from
    :math:`\\partial W/\\partial V = I` to the projection below; the harness's points keep away from it.
    Below c the weight is used as it is, so :math:`\\bar V = \\bar W`.  Above it, :math:`W = cV/\\sigma`, and

    .. math:: \\bar V = \\frac{c}{\\sigma}\\bar W + \\bar\\sigma\\,\\frac{\\partial\\sigma}{\\partial V},
              \\qquad \\bar\\sigma = -\\frac{c}{\\sigma^2}\\langle\\bar W, V\\rangle .

    *Exact:* :math:`\\partial\\sigma/\\partial V = u_1 v_1^T` (the top singular pair: differentiate
    :math:`\\sigma = u_1^T V v_1` with :math:`\\lVert u_1\\rVert = \\lVert v_1\\rVert = 1`; the terms from the
    change of :math:`u_1, v_1` vanish because they stay unit vectors and :math:`V v_1 = \\sigma u_1`).  At a
    repeated top singular value :math:`\\sigma` is not differentiable (its subdifferential is the convex hull
    of :math:`u v^T` over the top singular subspace); the code returns :math:`u_1 v_1^T` for the pair LAPACK
    returns, one subgradient.  This happens on a set of measure zero.  The pair comes from an SVD, or for weights
    wider than :data:`GRAM_FROM` on both sides from the top eigenpair of the smaller Gram matrix
    (:func:`top_singular`); the traceable path (``xp`` = autograd) takes ``svd(V, compute_uv=False)[0]``, whose
    autograd derivative is the same :math:`u_1 v_1^T`.

    *Power iteration* (Miyato et al. 2018, without their persistent vector): from :math:`v_0` =
    :func:`power_start`, for :math:`k = 1..K`: :math:`t_k = V v_{k-1}`, :math:`s_k = V^T t_k`,
    :math:`v_k = s_k/\\lVert s_k\\rVert`; then :math:`t_F = V v_K` and :math:`\\hat\\sigma = \\lVert t_F\\rVert`.
    :math:`\\hat\\sigma \\le \\sigma` always (a Rayleigh quotient), so :math:`\\lVert W\\rVert_2 =
    c\\sigma/\\hat\\sigma` may exceed c by the iteration's relative error: :math:`v_K` deviates from
    :math:`v_1` by about :math:`(\\sigma_2/\\sigma_1)^{2K}`, and the Rayleigh quotient by the square of that,
    :math:`(\\sigma_2/\\sigma_1)^{4K}`, slow where the top two singular values are close (``tests/test_residual.py``
    states and checks the slack).  Its backward is
    the reverse of the unrolled iteration, from :math:`\\bar\\sigma`:

    1. :math:`\\bar t_F = \\bar\\sigma\\,t_F/\\hat\\sigma`; :math:`\\bar V \\mathrel{+}= \\bar t_F v_K^T`;
       :math:`\\bar v_K = V^T\\bar t_F`;
    2. for :math:`k = K..1`: :math:`\\bar s_k = (\\bar v_k - v_k\\langle v_k, \\bar v_k\\rangle)/\\lVert s_k\\rVert`
       (the derivative of a normalisation); :math:`\\bar V \\mathrel{+}= t_k\\bar s_k^T` (from
       :math:`s_k = V^T t_k`); :math:`\\bar t_k = V\\bar s_k`; :math:`\\bar V \\mathrel{+}= \\bar t_k v_{k-1}^T`
       (from :math:`t_k = V v_{k-1}`); :math:`\\bar v_{k-1} = V^T\\bar t_k`.

    :math:`v_0` is a constant.  (If :math:`s_k = 0`, V annihilates the iterate: :math:`\\hat\\sigma = 0` and the
    weight is used unscaled.)

    **Tangents** (forward mode, :meth:`tangents`): for tangents :math:`T` ``(B, K, D)`` of x (B = 1 shares
    them across the batch), :math:`\\dot h_0 = T W_0`, :math:`\\dot a_{l+1} = \\phi'(h_l)\\odot\\dot h_l`,
    :math:`\\dot h_{l+1} = \\dot a_{l+1} W_{l+1}`; :math:`\\dot h_L` holds the products :math:`J_g t` as rows.
    **Cotangents** through the linearised network (:meth:`vjp_linear`): :math:`\\bar h_L = u`,
    :math:`\\bar h_{l-1} = \\phi'(h_{l-1})\\odot(\\bar h_l W_l^T)`, result :math:`\\bar h_0 W_0^T = J_g^T u`.

    **Reverse over forward** (:meth:`reverse`): the gradient of
    :math:`S = \\langle\\bar g, g\\rangle + \\langle\\bar{\\dot h}_L, \\dot h_L\\rangle` in x, T and every
    :math:`W_l, b_l`, for :math:`l = L..0` (sums over the batch and the K tangents):

    * :math:`\\bar W_l = a_l^T\\bar h_l + \\sum_{n,k}\\dot a_l^T\\bar{\\dot h}_l` (with :math:`\\dot a_0 = T`),
      :math:`\\bar b_l = \\sum_n\\bar h_l` (the bias enters the tangents only through :math:`\\phi'(h)`, whose
      derivative is in :math:`\\bar h` below);
    * :math:`\\bar a_l = \\bar h_l W_l^T`, :math:`\\bar{\\dot a}_l = \\bar{\\dot h}_l W_l^T`;
    * through :math:`a_l = \\phi(h_{l-1})` and :math:`\\dot a_l = \\phi'(h_{l-1})\\odot\\dot h_{l-1}`:
      :math:`\\bar h_{l-1} = \\phi'\\odot\\bar a_l + \\phi''\\odot\\sum_k\\dot h_{l-1}\\odot\\bar{\\dot a}_l`
      and :math:`\\bar{\\dot h}_{l-1} = \\phi'\\odot\\bar{\\dot a}_l`;
    * at the input: :math:`\\bar x = \\bar h_0 W_0^T`, :math:`\\bar T = \\bar{\\dot h}_0 W_0^T`.

    Then :meth:`weights_backward` maps every :math:`\\bar W_l` to :math:`\\bar V_l` as above.
    """

    def __init__(self, n_in, hidden=(64, 64), activation="lipswish", lipschitz=0.9, spectral="exact",
                 n_power_iter=20, prefix=""):
        if activation not in LIP_ACTIVATIONS:
            raise ValueError(f"LipschitzMLP: unknown activation {activation!r}; choose one of {LIP_ACTIVATIONS}")
        if spectral not in SPECTRAL:
            raise ValueError(f"LipschitzMLP: unknown spectral norm {spectral!r}; choose one of {SPECTRAL}")
        self.sizes = (int(n_in),) + tuple(int(h) for h in hidden) + (int(n_in),)
        if min(self.sizes) < 1:
            raise ValueError(f"LipschitzMLP: every layer needs at least one unit, got sizes {self.sizes}")
        c = float(lipschitz)
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"LipschitzMLP: lipschitz must be a finite number > 0, got {lipschitz!r}")
        if isinstance(n_power_iter, bool) or not isinstance(n_power_iter, (int, np.integer)) or n_power_iter < 0:
            raise ValueError(f"LipschitzMLP: n_power_iter must be an integer >= 0, got {n_power_iter!r}")
        self.activation, self.lipschitz, self.spectral = activation, c, spectral
        self.n_power_iter = int(n_power_iter)
        self.n_layers = len(self.sizes) - 1
        self.prefix = str(prefix)
        self.V = [f"{prefix}V{l}" for l in range(self.n_layers)]
        self.b = [f"{prefix}b{l}" for l in range(self.n_layers)]

    def param_shapes(self):
        shapes = {}
        for l in range(self.n_layers):
            shapes[self.V[l]] = (self.sizes[l], self.sizes[l + 1])
            shapes[self.b[l]] = (self.sizes[l + 1],)
        return shapes

    def init(self, rng, dtype=np.float64):
        """:math:`V_l \\sim \\mathcal N(0, 1/\\mathrm{fan\\_in})` (then normalised), hidden biases
        :math:`U(\\pm 1/\\sqrt{\\mathrm{fan\\_in}})`, output bias zero."""
        p = {}
        for l in range(self.n_layers):
            fan_in, fan_out = self.sizes[l], self.sizes[l + 1]
            p[self.V[l]] = (rng.standard_normal((fan_in, fan_out)) / math.sqrt(fan_in)).astype(dtype)
            last = l == self.n_layers - 1
            b = np.zeros(fan_out) if last else hidden_bias_init(rng, np.full(fan_out, fan_in))
            p[self.b[l]] = b.astype(dtype)
        return p

    # ------------------------------------------------------------------ spectral normalisation
    def _sigma(self, V, xp):
        """``(sigma, data for the backward)``: the exact largest singular value or the power estimate."""
        if self.spectral == "exact":
            if xp is np:
                sigma, u1, v1 = top_singular(V)
                return sigma, (u1, v1)
            return xp.linalg.svd(V, compute_uv=False)[0], None
        m, n = V.shape
        v = power_start(n, unbox(V).dtype)
        vs, ts, norms = [v], [], []
        for _ in range(self.n_power_iter):
            t = xp.dot(V, v)
            s = xp.dot(t, V)                     # V^T t
            ns = xp.sqrt(xp.sum(s * s))
            if not unbox(ns) > 0:                # V annihilates the iterate: sigma_hat = 0, W = V
                return 0.0 * ns, None
            v = s / ns
            vs.append(v)
            ts.append(t)
            norms.append(ns)
        tF = xp.dot(V, v)
        return xp.sqrt(xp.sum(tF * tF)), (vs, ts, norms, tF)

    def effective(self, params, xp=np):
        """``(Ws, bs, norms)``: the effective weights :math:`W_l = V_l\\min(1, c/\\sigma_l)`, the biases, and
        per layer ``(scale, sigma, backward data)``."""
        Ws, bs, norms = [], [], []
        c = self.lipschitz
        for l in range(self.n_layers):
            V = params[self.V[l]]
            sigma, data = self._sigma(V, xp)
            if unbox(sigma) > c:
                scale = c / sigma
                Ws.append(V * scale)
            else:
                scale = None
                Ws.append(V)
            bs.append(params[self.b[l]])
            norms.append((scale, sigma, data))
        return Ws, bs, norms

    def weights_backward(self, params, norms, Wbars):
        """``{V key: V-bar}`` from the cotangents of the effective weights (see the Notes)."""
        out = {}
        c = self.lipschitz
        for l in range(self.n_layers):
            V, Wb = params[self.V[l]], Wbars[l]
            scale, sigma, data = norms[l]
            if scale is None:
                out[self.V[l]] = Wb
                continue
            sbar = -c / (sigma * sigma) * np.sum(Wb * V)
            Vb = scale * Wb
            if self.spectral == "exact":
                u1, v1 = data
                Vb = Vb + sbar * np.outer(u1, v1)
            else:
                vs, ts, ns, tF = data
                tb = sbar * tF / sigma
                Vb = Vb + np.outer(tb, vs[-1])
                vb = tb @ V
                for k in range(len(ts), 0, -1):
                    v, vprev, t, nk = vs[k], vs[k - 1], ts[k - 1], ns[k - 1]
                    sb = (vb - v * np.dot(v, vb)) / nk
                    tb = V @ sb
                    Vb = Vb + np.outer(t, sb) + np.outer(tb, vprev)
                    vb = tb @ V
            out[self.V[l]] = Vb
        return out

    # ------------------------------------------------------------------ passes (traceable with xp)
    def primal(self, Ws, bs, x, xp=np):
        """``(g, hs, acts, d1s)``: the output, the pre-activations :math:`h_0..h_{L-1}`, the activations
        :math:`a_1..a_L` and :math:`\\phi'(h_0)..\\phi'(h_{L-1})`."""
        h = x
        hs, acts, d1s = [], [], []
        for l in range(self.n_layers):
            if l > 0:
                a, d1 = lip_activation(self.activation, h, xp)
                hs.append(h)
                acts.append(a)
                d1s.append(d1)
                h = a
            h = xp.dot(h, Ws[l]) + bs[l]
        return h, hs, acts, d1s

    def output(self, Ws, bs, x, xp=np):
        """:math:`g(x)` alone (the inverse's iteration)."""
        h = x
        for l in range(self.n_layers):
            if l > 0:
                h = lip_activation(self.activation, h, xp)[0]
            h = xp.dot(h, Ws[l]) + bs[l]
        return h

    def tangents(self, Ws, d1s, T, xp=np):
        """``(hd, ads)``: :math:`\\dot h_0..\\dot h_L` and :math:`\\dot a_1..\\dot a_L` for the tangents ``T``
        ``(B, K, D)`` (B = 1 or N); ``hd[-1]`` ``(N or B, K, D)`` holds :math:`J_g t` for every tangent t."""
        hd = [_matmul3(T, Ws[0], xp)]
        ads = []
        for l in range(1, self.n_layers):
            ad = d1s[l - 1][:, None, :] * hd[-1]
            ads.append(ad)
            hd.append(_matmul3(ad, Ws[l], xp))
        return hd, ads

    def vjp_linear(self, Ws, d1s, U, xp=np):
        """:math:`J_g^T u` for every row u of ``U`` ``(N, K, D)``: the cotangent ``U`` of the output pulled back
        through the network linearised at the primal point (``d1s``)."""
        g = U
        for l in range(self.n_layers - 1, -1, -1):
            g = _matmul3(g, xp.transpose(Ws[l]), xp)
            if l > 0:
                g = d1s[l - 1][:, None, :] * g
        return g

    # ------------------------------------------------------------------ reverse mode (NumPy)
    def reverse(self, Ws, x, hs, acts, d1s, g_bar=None, T=None, hd=None, ads=None, hd_bar=None, need_T_bar=False):
        """``(x_bar, T_bar, Wbars, bbars)``: the gradient of :math:`\\langle\\bar g, g\\rangle +
        \\langle\\bar{\\dot h}_L, \\dot h_L\\rangle` (see the Notes); ``g_bar`` or ``hd_bar`` may be None (zero).
        ``T_bar`` is None unless ``need_T_bar``."""
        L = self.n_layers - 1
        Wbars, bbars = [None] * self.n_layers, [None] * self.n_layers
        d2s = None
        if hd_bar is not None:
            d2s = [lip_activation(self.activation, h, np, order=2)[2] for h in hs]
        h_bar = g_bar
        x_bar = T_bar = None
        n, D = x.shape
        for l in range(L, -1, -1):
            W = Ws[l]
            a = x if l == 0 else acts[l - 1]
            Wb = np.zeros_like(W) if h_bar is None else a.T @ h_bar
            bbars[l] = np.zeros(W.shape[1], W.dtype) if h_bar is None else h_bar.sum(0)
            if hd_bar is not None:
                tin = T if l == 0 else ads[l - 1]
                if tin.shape[0] == 1 and hd_bar.shape[0] != 1:       # tangents shared by the batch
                    Wb = Wb + tin[0].T @ hd_bar.sum(0)
                else:
                    Wb = Wb + tin.reshape(-1, W.shape[0]).T @ hd_bar.reshape(-1, W.shape[1])
            Wbars[l] = Wb
            a_bar = None if h_bar is None else h_bar @ W.T
            ad_bar = None if hd_bar is None else _matmul3(hd_bar, W.T, np)
            if l == 0:
                x_bar = np.zeros_like(x) if a_bar is None else a_bar
                if need_T_bar:
                    T_bar = ad_bar
                break
            d1 = d1s[l - 1]
            h_bar = None if a_bar is None else d1 * a_bar
            if ad_bar is not None:
                second = d2s[l - 1] * np.sum(hd[l - 1] * ad_bar, axis=1)
                h_bar = second if h_bar is None else h_bar + second
                hd_bar = d1[:, None, :] * ad_bar
        return x_bar, T_bar, Wbars, bbars

    def __repr__(self):
        return (f"LipschitzMLP(sizes={self.sizes}, activation={self.activation!r}, lipschitz={self.lipschitz}, "
                f"spectral={self.spectral!r})")


def _matmul3(A, W, xp):
    """``A @ W`` for ``A`` ``(B, K, n)`` and ``W`` ``(n, m)``: one GEMM over the ``B K`` rows."""
    B, K, n = A.shape
    return xp.reshape(xp.dot(xp.reshape(A, (B * K, n)), W), (B, K, W.shape[1]))
