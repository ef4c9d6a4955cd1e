"""2-D convolution with a hand-written backward, and Glow's coupling network built from it.

``conv2d`` is PyTorch's ``nn.Conv2d(Cin, Cout, (kh, kw), padding=(kh//2, kw//2))`` (stride 1, zero "same"
padding, odd kernels, cross-correlation)::

    out[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v] * x[n, c, i + u - kh//2, j + v - kw//2]

with images ``(N, C, H, W)`` (batch first, channels first) and weights ``(Cout, Cin, kh, kw)``.

Notes
-----
**The forward as one GEMM.**  Write :math:`p_h = k_h/2, p_w = k_w/2` (integer halves) and :math:`x` zero
outside the image.  Gathering every tap of every pixel into the *im2col* matrix

.. math:: X[(n,i,j), (u,v,c)] = x[n, c, i+u-p_h, j+v-p_w]  \\qquad (NHW \\times k_hk_wC_{in})

turns the convolution into one matrix product :math:`\\mathrm{out} = X\\,\\mathcal W + b` with
:math:`\\mathcal W[(u,v,c), o] = W[o,c,u,v]`.  Call the gather :math:`X = G(x)`.  Its adjoint
:math:`G^T` ("col2im") scatters and adds each tap's column block back to the pixel it came from:
:math:`G^T(T)[n,i',j',c] = \\sum_{u,v} T[(n, i'-u+p_h, j'-v+p_w), (u,v,c)]` (terms outside the image drop).

When :math:`C_{out} < C_{in}` (Glow's last layer: 512 hidden channels in, 2C out) the gather of the input
would copy :math:`k_hk_w` times the wide side.  The same sum can instead be split the other way: one GEMM
:math:`Z = x\\,\\mathcal V` with :math:`\\mathcal V[c, (u',v',o)] = W[o, c, k_h-1-u', k_w-1-v']` (the
kernel flipped) gives every tap's contribution at the pixel it *comes from*, and the output is
:math:`\\mathrm{out} = G^T(Z) + b`: substituting :math:`u = k_h-1-u'` (so :math:`i'-u'+p_h = i+u-p_h` as
:math:`k_h - 1 = 2p_h`) shows :math:`G^T(Z)[n,i,j,o] = \\sum_{u,v,c} W[o,c,u,v]\\,x[n,c,i+u-p_h,j+v-p_w]`.
Either way the flops are those of one GEMM (:math:`NHW \\cdot k_hk_w C_{in} C_{out}`) and the copy is
:math:`k_hk_w\\min(C_{in}, C_{out})` per pixel.  A 1x1 kernel needs neither: it is the channel matmul
:math:`x\\,W[:,:,0,0]^T` on the pixels.

**The backward** (vector-Jacobian product) for the cotangent :math:`\\bar o` of the output, read off
the matrix form (the output is linear in :math:`x`, in :math:`W` and in :math:`b`):

* :math:`\\bar b_o = \\sum_{n,i,j} \\bar o[n,o,i,j]` (the bias is added at every pixel);
* input-side form :math:`o = G(x)\\mathcal W`: :math:`\\bar{\\mathcal W} = G(x)^T \\bar o` and
  :math:`\\bar x = G^T(\\bar o\\,\\mathcal W^T)`.  Written out, :math:`\\bar W[o,c,u,v] = \\sum_{n,i,j}
  \\bar o[n,o,i,j]\\,x[n,c,i+u-p_h,j+v-p_w]`: the *correlation of x with the output cotangent*; and
  :math:`\\bar x[n,c,i',j'] = \\sum_{o,u,v} W[o,c,u,v]\\,\\bar o[n,o,i'-u+p_h,j'-v+p_w]`: the *full
  convolution of the cotangent with the kernel*, i.e. a "same" correlation with the kernel flipped in both
  spatial axes and its channel axes swapped;
* output-side form :math:`o = G^T(x\\mathcal V)`: the adjoint of :math:`G^T` is :math:`G`, so
  :math:`\\bar Z = G(\\bar o)`, :math:`\\bar{\\mathcal V} = x^T \\bar Z`, :math:`\\bar x = \\bar Z\\,\\mathcal V^T`
  (the same two sums, computed as the other pair of GEMMs).

The forward's gathered matrix :math:`G(x)` is returned in the cache, so the backward's
:math:`\\bar{\\mathcal W}` needs no second gather: the forward is one GEMM and one gather (or scatter), the
backward two GEMMs and one scatter (or gather).

**Layout and speed.**  The fast NumPy path works in NHWC internally (the pixels as rows, the channels as
the contiguous axis), so every GEMM is a single 2-D BLAS call with the batch and the pixels together as
its long axis.  Measured on this machine (one OpenBLAS thread, float64, 3x3 kernel, 4x4 and 8x8 images,
N = 64 and 256, a loaded 2-core host, so the ratios are indicative): for a narrow input (C = 1..16 into
hidden 64..512) the im2col form with one GEMM was 2.5x to 25x faster than nine per-tap GEMMs in NHWC (each
tap then pays a strided copy *and* a skinny GEMM with inner dimension C); for a narrow output (hidden
64..512 into 4..32 channels) the output-side form was 3x to 12x faster than gathering the hidden
activations (a 9x512-column matrix at N = 256, H = W = 4 is 150 MB in float64) and 1.5x to 8x faster than
per-tap GEMMs.  Hence the rule: gather the narrower side.  The traceable path (any ``xp``) is the literal
sum over taps of zero-padded, shifted slices contracted with ``W[:, :, u, v]``; it gives the same numbers
to rounding.
"""
import numpy as np

from .mlp import ACTIVATIONS, activate, activate_, activation_grad_, hidden_bias_init

__all__ = ["conv2d", "conv2d_backward", "ConvNet"]


def _check_kernel(W):
    if W.ndim != 4:
        raise ValueError(f"conv2d: the kernel must be (Cout, Cin, kh, kw), got shape {W.shape}")
    kh, kw = W.shape[2], W.shape[3]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"conv2d: 'same' padding needs odd kernel sizes, got {kh}x{kw}")
    return kh, kw


def _valid(n, k, p, u):
    """Output rows ``i`` in [i0, i1) whose tap ``u`` reads an input row ``i + u - p`` inside [0, n)."""
    return max(0, p - u), min(n, n + p - u)


# ---------------------------------------------------------------------------------------- NHWC kernels
def gather(xh, kh, kw):
    """im2col of an NHWC image ``(N, H, W, C)``: ``(N*H*W, kh*kw*C)`` with column ``(u, v, c)`` holding
    ``x[n, i+u-kh//2, j+v-kw//2, c]`` (zero outside the image).  One strided copy per tap."""
    N, H, Wd, C = xh.shape
    ph, pw = kh // 2, kw // 2
    cols = np.empty((N, H, Wd, kh, kw, C), xh.dtype)
    for u in range(kh):
        i0, i1 = _valid(H, kh, ph, u)
        for v in range(kw):
            j0, j1 = _valid(Wd, kw, pw, v)
            if i0 > 0 or i1 < H or j0 > 0 or j1 < Wd:      # a border strip is read from outside: zero it
                cols[:, :, :, u, v, :] = 0
            cols[:, i0:i1, j0:j1, u, v, :] = xh[:, i0 + u - ph:i1 + u - ph, j0 + v - pw:j1 + v - pw, :]
    return cols.reshape(N * H * Wd, kh * kw * C)


def scatter(cols, shape, kh, kw):
    """The adjoint of :func:`gather` (col2im): ``cols`` ``(N*H*W, kh*kw*C)`` -> ``(N, H, W, C)``, each tap's
    block added back at the pixel it was read from."""
    N, H, Wd, C = shape
    ph, pw = kh // 2, kw // 2
    t = cols.reshape(N, H, Wd, kh, kw, C)
    out = t[:, :, :, ph, pw, :].copy()                    # the centre tap covers every pixel
    for u in range(kh):
        i0, i1 = _valid(H, kh, ph, u)
        for v in range(kw):
            if u == ph and v == pw:
                continue
            j0, j1 = _valid(Wd, kw, pw, v)
            out[:, i0 + u - ph:i1 + u - ph, j0 + v - pw:j1 + v - pw, :] += t[:, i0:i1, j0:j1, u, v, :]
    return out


def conv_nhwc(xh, W, b=None):
    """``conv2d`` on an NHWC image ``(N, H, W, Cin)``: ``(out (N, H, W, Cout), cache)``.  The cache holds
    what :func:`conv_nhwc_backward` needs (the im2col matrix, or the input as a pixel matrix)."""
    kh, kw = _check_kernel(W)
    Cout, Cin = W.shape[:2]
    N, H, Wd, _ = xh.shape
    if kh == 1 and kw == 1:                                    # channel matmul on the pixels
        x2 = xh.reshape(N * H * Wd, Cin)
        out = x2 @ W[:, :, 0, 0].T
        cache = ("1x1", x2)
    elif Cin <= Cout:                                          # gather the narrow input, one GEMM
        cols = gather(xh, kh, kw)
        out = cols @ W.transpose(2, 3, 1, 0).reshape(kh * kw * Cin, Cout)
        cache = ("in", cols)
    else:                                                      # one GEMM, scatter the narrow output
        x2 = xh.reshape(N * H * Wd, Cin)
        V = W[:, :, ::-1, ::-1].transpose(1, 2, 3, 0).reshape(Cin, kh * kw * Cout)
        out = scatter(x2 @ V, (N, H, Wd, Cout), kh, kw).reshape(N * H * Wd, Cout)
        cache = ("out", x2)
    if b is not None:
        out += b
    return out.reshape(N, H, Wd, Cout), cache


def conv_nhwc_backward(douth, W, cache, need_dx=True, need_db=True):
    """VJP of :func:`conv_nhwc`: ``(dx (N, H, W, Cin) or None, dW, db or None)`` for ``douth`` ``(N, H, W, Cout)``.
    Each line is the matrix form of the module's Notes."""
    kh, kw = W.shape[2], W.shape[3]
    Cout, Cin = W.shape[:2]
    N, H, Wd, _ = douth.shape
    g = douth.reshape(N * H * Wd, Cout)
    db = np.ones(g.shape[0], g.dtype) @ g if need_db else None       # sum over n, i, j (one BLAS call)
    kind, a = cache
    dx = None
    if kind == "1x1":
        W2 = W[:, :, 0, 0]
        dW = (g.T @ a)[:, :, None, None]                             # dW[o, c] = sum_p g[p, o] x[p, c]
        if need_dx:
            dx = (g @ W2).reshape(N, H, Wd, Cin)                     # dx = g W
    elif kind == "in":
        Wm = W.transpose(2, 3, 1, 0).reshape(kh * kw * Cin, Cout)
        dW = (a.T @ g).reshape(kh, kw, Cin, Cout).transpose(3, 2, 0, 1)   # G(x)^T g
        if need_dx:
            dx = scatter(g @ Wm.T, (N, H, Wd, Cin), kh, kw)          # G^T(g W^T)
    else:
        V = W[:, :, ::-1, ::-1].transpose(1, 2, 3, 0).reshape(Cin, kh * kw * Cout)
        dZ = gather(douth, kh, kw)                                    # adjoint of the output scatter
        dW = (a.T @ dZ).reshape(Cin, kh, kw, Cout)[:, ::-1, ::-1, :].transpose(3, 0, 1, 2)
        if need_dx:
            dx = (dZ @ V.T).reshape(N, H, Wd, Cin)
    return dx, np.ascontiguousarray(dW), db


# ---------------------------------------------------------------------------------------- NCHW API
def _pad(x, ph, pw, xp):
    """Zero padding by concatenation (traceable: autograd has no gradient for ``np.pad``)."""
    N, C, H, Wd = x.shape
    if ph:
        z = xp.zeros((N, C, ph, Wd), dtype=x.dtype)
        x = xp.concatenate([z, x, z], axis=2)
    if pw:
        z = xp.zeros((N, C, H + 2 * ph, pw), dtype=x.dtype)
        x = xp.concatenate([z, x, z], axis=3)
    return x


def conv2d_traceable(x, W, b=None, xp=np):
    """The literal definition: the sum over the ``kh*kw`` taps of shifted, zero-padded slices of ``x``
    contracted with ``W[:, :, u, v]``.  Only ``xp.`` functions and no writes, so autograd can trace it."""
    kh, kw = _check_kernel(W)
    N, C, H, Wd = x.shape
    xpad = _pad(x, kh // 2, kw // 2, xp)
    out = None
    for u in range(kh):
        for v in range(kw):
            t = xp.einsum("nchw,oc->nohw", xpad[:, :, u:u + H, v:v + Wd], W[:, :, u, v])
            out = t if out is None else out + t
    if b is not None:
        out = out + xp.reshape(b, (1, -1, 1, 1))
    return out


def conv2d(x, W, b=None, xp=np, return_cache=False):
    """2-D cross-correlation, stride 1, zero "same" padding, as ``torch.nn.functional.conv2d(x, W, b,
    padding=(kh//2, kw//2))``.

    Parameters
    ----------
    x : array ``(N, Cin, H, W)``
    W : array ``(Cout, Cin, kh, kw)``, kh and kw odd
    b : array ``(Cout,)`` or None
    xp : module
        ``numpy`` (the fast path: im2col and one GEMM, see the module Notes) or ``autograd.numpy`` (the
        traceable sum over taps).
    return_cache : bool
        Also return the cache for :func:`conv2d_backward` (NumPy path only), which then skips re-gathering.

    Returns
    -------
    out : array ``(N, Cout, H, W)`` (C-contiguous on the NumPy path), in the dtype NumPy's promotion of
    ``x`` and ``W`` gives (float32 with float32 stays float32).  With ``return_cache``: ``(out, cache)``.
    """
    if xp is not np:
        if return_cache:
            raise ValueError("conv2d: return_cache needs the NumPy path (xp=numpy)")
        return conv2d_traceable(x, W, b, xp)
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] != W.shape[1]:
        raise ValueError(f"conv2d: x must be (N, {W.shape[1]}, H, W) for a kernel of shape {W.shape}, "
                         f"got {x.shape}")
    outh, cache = conv_nhwc(x.transpose(0, 2, 3, 1), W, b)
    out = np.ascontiguousarray(outh.transpose(0, 3, 1, 2))
    return (out, cache) if return_cache else out


def conv2d_backward(dout, x, W, cache=None):
    """The hand-derived VJP of :func:`conv2d`: ``(dx, dW, db)`` for the output cotangent ``dout``
    ``(N, Cout, H, W)``; ``dx`` is ``(N, Cin, H, W)``, ``dW`` the kernel's shape, ``db`` ``(Cout,)``.

    ``cache`` is the one ``conv2d(..., return_cache=True)`` returned (its im2col matrix is reused), or None
    to recompute it from ``x``.  Derivation: the module's Notes (dW is the correlation of x with dout, dx
    the full convolution of dout with the flipped kernel, db the sum over n, i, j).
    """
    kh, kw = _check_kernel(W)
    if cache is None:
        _, cache = conv_nhwc(np.asarray(x).transpose(0, 2, 3, 1), W)
    dx, dW, db = conv_nhwc_backward(np.asarray(dout).transpose(0, 2, 3, 1), W, cache)
    return np.ascontiguousarray(dx.transpose(0, 3, 1, 2)), dW, db


class ConvNet:
    """Glow's coupling network: conv kxk (in -> hidden) -> act -> conv 1x1 (hidden -> hidden) -> act ->
    conv kxk (hidden -> out), on images ``(N, C, H, W)``.

    Parameters
    ----------
    in_channels, out_channels : int
    hidden : int
        Channels of the two hidden layers (Glow: 512).
    kernel : int
        Odd size of the first and last kernels (Glow: 3); the middle one is 1x1.
    activation : {"relu", "leaky_relu", "tanh", "elu"}
    zero_init : bool
        Initialise the last layer's weights and bias to zero, so the output is 0 for every input (a
        coupling whose conditioner is this net starts as the identity map).
    prefix : str
        Prepended to every parameter key (``"net."`` gives ``net.W0``), as for :class:`~npflows.nn.MLP`.

    Parameters are ``W0 (hidden, in, k, k), b0 (hidden,), W1 (hidden, hidden, 1, 1), b1, W2 (out, hidden, k, k),
    b2 (out,)``: PyTorch's ``nn.Conv2d`` weight layout, so a ``state_dict`` maps over by name.

    Notes
    -----
    Forward, with :math:`a_0 = x`: :math:`h_l = W_l \\star a_l + b_l` (:math:`\\star` is :func:`conv2d`),
    :math:`a_{l+1} = \\phi(h_l)` for :math:`l = 0, 1`, output :math:`h_2`.  It is the MLP's recursion with
    each matrix product replaced by a convolution, so its backward is the MLP's with each product's VJP
    replaced by the convolution's (module Notes: :math:`\\bar W = \\mathrm{corr}(a, \\bar h)`,
    :math:`\\bar a = ` full convolution of :math:`\\bar h` with the flipped kernel,
    :math:`\\bar b = \\sum_{n,i,j}\\bar h`).
    From :math:`\\bar h_2 = \\overline{out}`, for :math:`l = 2, 1, 0`:

    * :math:`(\\bar a_l, \\bar W_l, \\bar b_l) = ` ``conv_nhwc_backward`` :math:`(\\bar h_l)`;
    * :math:`\\bar h_{l-1} = \\bar a_l \\odot \\phi'(h_{l-1})`, with :math:`\\phi'` read off :math:`a_l`
      (``activation_grad_``, as in the MLP);

    and :math:`\\bar x = \\bar a_0`.  The 1x1 layer is a plain GEMM over the pixels.  Internally the
    activations are kept NHWC (pixels as rows), so every layer is one 2-D GEMM forward and two backward;
    the cache holds each layer's input (the first layer's as its im2col matrix, which its
    :math:`\\bar W_0` reuses).

    Initialisation, as :class:`~npflows.nn.MLP`: :math:`W_l \\sim \\mathcal N(0, g/\\mathrm{fan\\_in})`,
    fan_in = :math:`C_{in} k_h k_w`, g = 2 for the ReLU family (He et al. 2015, arXiv:1502.01852) and 1
    for tanh; hidden biases :math:`\\sim U(\\pm 1/\\sqrt{\\mathrm{fan\\_in}})` (:func:`hidden_bias_init`); the
    last layer zero when ``zero_init`` (else :math:`\\mathcal N(0, 1/\\mathrm{fan\\_in})`, zero bias).

    What openai's Glow (Kingma & Dhariwal 2018, arXiv:1807.03039; ``model.py`` ``f()``, ``tfops.py``) has
    that this net omits: (1) an ActNorm after each of the first two convolutions (its ``conv2d`` has
    ``do_actnorm=True`` and then no bias); (2) a last layer ``conv2d_zeros`` whose output is multiplied by a
    learned per-channel :math:`e^{3\\,\\mathrm{logs}}` (``logs`` zero-initialised); (3) ``edge_bias=True``:
    each kxk convolution's input gets one extra channel that is 1 in the zero padding and 0 inside, so the
    net can tell border pixels apart.  (1) and (2) do not change what the network can represent: a conv
    followed by a per-channel affine map is a conv with rescaled weights and bias, and the output scale is
    absorbed the same way; they change the gradient geometry (data-dependent normalisation of the hidden
    layers; the last layer's effective step grows with :math:`e^{3\\,\\mathrm{logs}}`), which matters for
    training speed and stability in deep stacks, not for the family of densities.  (3) does add functions
    (a border-dependent offset, which zero padding and a shared bias cannot make); it matters most on small
    images, where most pixels touch the border (on 4x4 latents, 12 of 16), and it can be added as an input
    channel where a comparison needs it.  Since ActNorm's init depends on the data, a weight-for-weight
    comparison with openai's Glow has to fold the two ActNorms and the output scale into ``W``, ``b``
    first.  Its initial weights are :math:`\\mathcal N(0, 0.05^2)`, not He's.  normflows' ``ConvNet2d``
    (the net of its Glow blocks) matches this layout (conv kxk, ReLU, conv 1x1, ReLU, conv kxk with
    ``padding=k//2``, optional ActNorm, zero-init last layer).
    """

    def __init__(self, in_channels, out_channels, hidden=512, kernel=3, activation="relu", zero_init=True,
                 prefix=""):
        if activation not in ACTIVATIONS:
            raise ValueError(f"ConvNet: unknown activation {activation!r}; choose one of {ACTIVATIONS}")
        self.in_channels, self.out_channels, self.hidden = int(in_channels), int(out_channels), int(hidden)
        if min(self.in_channels, self.out_channels, self.hidden) < 1:
            raise ValueError(f"ConvNet: every layer needs at least one channel, got in={in_channels}, "
                             f"hidden={hidden}, out={out_channels}")
        self.kernel = int(kernel)
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"ConvNet: the kernel size must be odd and positive ('same' padding), got {kernel}")
        self.activation, self.zero_init, self.prefix = activation, bool(zero_init), str(prefix)
        self._W = [f"{prefix}W{l}" for l in range(3)]
        self._b = [f"{prefix}b{l}" for l in range(3)]
        k = self.kernel
        self._shapes = [(self.hidden, self.in_channels, k, k), (self.hidden, self.hidden, 1, 1),
                        (self.out_channels, self.hidden, k, k)]

    def param_shapes(self):
        shapes = {}
        for l in range(3):
            shapes[self._W[l]] = self._shapes[l]
            shapes[self._b[l]] = (self._shapes[l][0],)
        return shapes

    def init(self, rng, dtype=np.float64):
        gain = 1.0 if self.activation == "tanh" else 2.0
        p = {}
        for l, shape in enumerate(self._shapes):
            fan_in = shape[1] * shape[2] * shape[3]
            if l == 2:
                W = np.zeros(shape) if self.zero_init else rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
                b = np.zeros(shape[0])
            else:
                W = rng.standard_normal(shape) * np.sqrt(gain / fan_in)
                b = hidden_bias_init(rng, np.full(shape[0], fan_in))
            p[self._W[l]], p[self._b[l]] = W.astype(dtype), b.astype(dtype)
        return p

    def forward(self, params, x, xp=np):
        """``(out, cache)``: ``x`` is ``(N, in_channels, H, W)``, ``out`` is ``(N, out_channels, H, W)``.  Inputs
        are not validated here: the layer that owns the net validates its own input."""
        W = [params[k] for k in self._W]
        b = [params[k] for k in self._b]
        if xp is not np:            # traceable path: the literal definition, no writes into arrays
            h = x
            for l in range(3):
                h = conv2d_traceable(h, W[l], b[l], xp)
                if l < 2:
                    h = activate(self.activation, h, xp)
            return h, None
        a = x.transpose(0, 2, 3, 1)                      # NHWC view; the first gather copies from it
        caches, acts = [], []
        for l in range(3):
            h, c = conv_nhwc(a, W[l], b[l])
            caches.append(c)
            if l < 2:
                a = activate_(self.activation, h)       # h is a fresh array: the activation in place
                acts.append(a)
        return np.ascontiguousarray(h.transpose(0, 3, 1, 2)), (caches, acts)

    def backward(self, params, dout, cache, need_dx=True):
        """``(dx, grads)`` for the cotangent ``dout`` ``(N, out_channels, H, W)``; ``dx`` is None if not
        ``need_dx``.  Derivation: the class Notes."""
        caches, acts = cache
        grads = {}
        g = dout.transpose(0, 2, 3, 1)
        for l in (2, 1, 0):
            want_dx = l > 0 or need_dx
            g, dW, db = conv_nhwc_backward(g, params[self._W[l]], caches[l], need_dx=want_dx)
            grads[self._W[l]], grads[self._b[l]] = dW, db
            if l > 0:
                g = activation_grad_(self.activation, g, acts[l - 1])
        return (np.ascontiguousarray(g.transpose(0, 3, 1, 2)) if need_dx else None), grads

    def __repr__(self):
        return (f"ConvNet({self.in_channels} -> {self.hidden} -> {self.hidden} -> {self.out_channels}, "
                f"kernel={self.kernel}, activation={self.activation!r}, zero_init={self.zero_init})")
