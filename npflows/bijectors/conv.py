"""Glow's layers on images and the masked (autoregressive) convolution: per-channel ActNorm, the invertible
1x1 convolution (a dense weight or its LU factorisation) and a PixelCNN-masked convolution whose Jacobian is
triangular in raster order.

Images are ``(N, C, H, W)``, batch first and channels first.  Each layer is built with its event shape
``(C, H, W)``.  A Glow step (Kingma & Dhariwal 2018, arXiv:1807.03039, section 3) is
``Sequential([ActNorm2d, Invertible1x1Conv (or LUInvertible1x1Conv), an affine coupling on channels])``.

The flattened event is the C-order ravel of ``(C, H, W)``: entry ``(c, i, j)`` sits at ``c*H*W + i*W + j``
(channel-major), which is what the harness differentiates.  Writing ``HW = H*W``, a layer that applies the same
``C x C`` matrix ``A`` at every pixel has the Jacobian :math:`A \\otimes I_{HW}` in that order, and
:math:`\\det(A\\otimes I_{HW}) = (\\det A)^{HW}`: that is where every ``H*W`` factor below comes from.
"""
import numpy as np
import scipy.linalg

from .._checks import check_event, event_shape_of, unbox
from ..core.bijector import Bijector
from ..nn.conv import conv2d, conv2d_backward
from .elementwise import explain_log_scale, mul_exp
from .linear import _check_invertible, lu_factor_grads, lu_factors


def image_shape(owner, shape):
    """``shape`` as an image event shape ``(C, H, W)``; ``ValueError`` naming ``owner`` otherwise."""
    shape = event_shape_of(owner, shape)
    if len(shape) != 3:
        raise ValueError(f"{owner}: expected an image event shape (C, H, W), got {shape}")
    return shape


def _pixels(a):
    """``(N, C, H, W) -> (N, C, H*W)``: a view, the pixels of each channel as one row."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _channel_map(A, x, xp):
    """:math:`y[n,:,i,j] = A\\,x[n,:,i,j]` at every pixel: one ``(C, C) @ (N, C, HW)`` matmul."""
    n, c, h, w = x.shape
    return xp.reshape(xp.matmul(A, xp.reshape(x, (n, c, h * w))), (n, c, h, w))


def _channel_grads(A, dy, x):
    """``(dx, G)`` for :math:`y = A x` per pixel: :math:`\\bar x = A^T\\bar y` at every pixel and
    :math:`G = \\sum_{n,i,j}\\bar y[n,:,i,j]\\,x[n,:,i,j]^T` (one GEMM over the batch and the pixels)."""
    dy3, x3 = _pixels(dy), _pixels(x)
    G = np.tensordot(dy3, x3, axes=([0, 2], [0, 2]))
    return np.matmul(A.T, dy3).reshape(dy.shape), G


def _to_columns(a, xp):
    """``(N, C, H, W) -> (C, N*H*W)``: every pixel of every sample as one column (a copy)."""
    return xp.reshape(xp.transpose(a, (1, 0, 2, 3)), (a.shape[1], -1))


def _from_columns(cols, shape, xp):
    n, c, h, w = shape
    return xp.transpose(xp.reshape(cols, (c, n, h, w)), (1, 0, 2, 3))


def _explain_channel_map(A, A_inv_norm, direction, v):
    """The diagnosis of a 1x1 convolution whose result is not finite: the input's magnitude times the largest
    absolute row sum of the matrix applied (``A`` forward; ``A_inv_norm`` = that norm of the inverse)."""
    if direction == "backward" or v is None:
        return None
    raw = np.asarray(unbox(v))
    big = float(np.max(np.abs(raw))) if raw.size else 0.0
    norm = float(np.max(np.sum(np.abs(unbox(A)), axis=1))) if direction == "forward" else float(A_inv_norm)
    top = float(np.finfo(raw.dtype).max)
    if not big * norm > top:
        return None
    which = "the weight" if direction == "forward" else "the weight's inverse"
    return (f"the {direction} input reaches |v| = {big:.6g} and {which} has the largest absolute row sum "
            f"{norm:.6g}, so an output can reach {big * norm:.3g}, beyond the {raw.dtype} maximum {top:.3g}; "
            f"rescale the data")


class ActNorm2d(Bijector):
    """Glow's activation normalisation on images (Kingma & Dhariwal 2018, arXiv:1807.03039, section 3.1):
    a per-channel scale and shift, :math:`y[n,c,i,j] = x[n,c,i,j]\\,e^{s_c} + b_c`.

    The same convention and parameter names as :class:`~npflows.bijectors.elementwise.ActNorm` (``log_scale``
    s, ``shift`` b, each of shape ``(C,)``), shared by every pixel of a channel.  ``init(rng, x)`` sets them
    from a batch so that the output has zero mean and unit variance per channel over the batch and the
    pixels: :math:`s_c = -\\log(\\mathrm{std}_c + \\epsilon)`, :math:`b_c = -\\mathrm{mean}_c\\,e^{s_c}` (population
    standard deviation, ``ddof=0``).  Without data it is the identity.

    Parameters
    ----------
    event_shape : tuple (C, H, W)
    eps : float
        Added to the standard deviation at the data-dependent init (a constant channel gets
        :math:`s = -\\log\\epsilon`).

    Notes
    -----
    **Peers.**  Glow writes :math:`y = (x + b')e^{s}`; ours is the same map with :math:`b = b'e^{s}`.
    nflows' ``ActNorm`` on 4-D input is exactly this map with the same names (``log_scale``, ``shift``,
    :math:`y = e^{s}x + b`, logdet :math:`HW\\sum s`); its init uses the *unbiased* standard deviation over
    :math:`N\\cdot H\\cdot W` values and no :math:`\\epsilon` (:math:`s = -\\log\\mathrm{std}`,
    :math:`b = -\\mathrm{mean}(x/\\mathrm{std})`).  normflows' ``ActNorm((C, 1, 1))`` (an ``AffineConstFlow``)
    is :math:`y = x e^{s} + t` with ``s``, ``t`` of shape ``(1, C, 1, 1)``: ``log_scale = s.ravel()``,
    ``shift = t.ravel()``; its init is ours with the unbiased standard deviation plus :math:`10^{-6}`.

    **Jacobian.**  Each output entry depends on its own input entry only, with derivative :math:`e^{s_c}`, so
    the Jacobian of the flattened event is diagonal, with :math:`e^{s_c}` repeated :math:`HW` times for
    each channel: :math:`\\log|\\det J| = HW\\sum_c s_c`, the same for every sample.

    **Backward** of :math:`\\langle\\bar y, y\\rangle + \\sum_n\\bar\\ell_n\\ell_n`:

    * :math:`\\bar x = \\bar y\\odot e^{s_c}` (the diagonal Jacobian, transposed);
    * :math:`\\bar b_c = \\sum_{n,i,j}\\bar y[n,c,i,j]` (b is added at every pixel of every sample);
    * :math:`\\bar s_c = e^{s_c}\\sum_{n,i,j}\\bar y[n,c,i,j]\\,x[n,c,i,j] + HW\\sum_n\\bar\\ell_n`
      (:math:`\\partial y/\\partial s_c = x e^{s_c}`; the second term is the logdet path,
      :math:`\\partial\\ell_n/\\partial s_c = HW`).

    **Inverse** :math:`x = (y - b_c)\\,e^{-s_c}`, logdet :math:`-HW\\sum_c s_c`.  Products with
    :math:`e^{\\pm s}` go through :func:`~npflows.bijectors.elementwise.mul_exp`, finite wherever the exact
    product is.
    """

    def __init__(self, event_shape, eps=1e-6):
        self._set_event_shape(image_shape(self.name, event_shape))
        self.channels = self.event_shape[0]
        self._hw = self.event_shape[1] * self.event_shape[2]
        self.eps = float(eps)

    def param_shapes(self):
        return {"log_scale": (self.channels,), "shift": (self.channels,)}

    def init(self, rng, x=None, dtype=np.float64):
        if x is None:
            return {k: np.zeros(s, dtype) for k, s in self.param_shapes().items()}
        check_event(self.name, x, self.event_shape, what="initialisation batch")
        if x.shape[0] * self._hw < 2:
            raise ValueError(f"{self.name}: data-dependent init needs at least 2 values per channel, got a batch "
                             f"of {x.shape[0]} image(s) of {self._hw} pixel(s)")
        axes = (0, 2, 3)
        s = -np.log(x.std(axis=axes) + self.eps)
        return {"log_scale": s.astype(x.dtype), "shift": (-x.mean(axis=axes) * np.exp(s)).astype(x.dtype)}

    def _col(self, v, xp):
        return xp.reshape(v, (self.channels, 1, 1))

    def _forward(self, params, x, xp):
        s = params["log_scale"]
        y = mul_exp(x, self._col(s, xp), xp) + self._col(params["shift"], xp)
        return y, self._hw * xp.sum(s) + xp.zeros(x.shape[0], dtype=x.dtype), x

    def _inverse(self, params, y, xp):
        s = params["log_scale"]
        x = mul_exp(y - self._col(params["shift"], xp), -self._col(s, xp), xp)
        return x, -self._hw * xp.sum(s) + xp.zeros(y.shape[0], dtype=y.dtype)

    def _explain(self, direction, params, x):
        return explain_log_scale(self.name, params["log_scale"], direction,
                                 "the parameter log_scale has diverged (lower the learning rate) or the input is "
                                 "out of scale")

    def _backward(self, params, dy, dlogdet, cache):
        e = np.exp(params["log_scale"])
        dy3 = _pixels(dy)
        g = {"log_scale": e * np.einsum("ncp,ncp->c", dy3, _pixels(cache)) + self._hw * dlogdet.sum(),
             "shift": dy3.sum(axis=(0, 2))}
        return dy * e[:, None, None], g

    def __repr__(self):
        return f"ActNorm2d(event_shape={self.event_shape})"


def random_rotation(rng, n):
    """A Haar-distributed random orthogonal ``(n, n)`` matrix: Q of the QR of a Gaussian matrix, its columns'
    signs fixed by R's diagonal (Mezzadri 2007, arXiv:math-ph/0609050), as Glow initialises its 1x1
    convolution.  ``rng`` is a ``numpy.random.Generator``."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


class Invertible1x1Conv(Bijector):
    """Glow's invertible 1x1 convolution with a dense weight (Kingma & Dhariwal 2018, arXiv:1807.03039,
    section 3.2): :math:`y[n,:,i,j] = W\\,x[n,:,i,j]` at every pixel, ``W`` of shape ``(C, C)`` (parameter
    ``"W"``, as :class:`~npflows.bijectors.linear.Linear`; no bias: Glow's ActNorm carries the shift).

    ``init(rng)`` draws a random rotation (:func:`random_rotation`), so the layer starts volume preserving.
    A weight whose condition number exceeds :math:`1/(C\\epsilon)` is refused (``ValueError``), as by
    ``Linear``.

    Notes
    -----
    **The map** is PyTorch's ``conv2d(x, W.reshape(C, C, 1, 1))``, normflows' ``Invertible1x1Conv(C,
    use_lu=False)`` (whose *forward* applies :math:`W^{-1}` and whose ``inverse`` applies W: our forward is
    its inverse, with the same ``W``).

    **Jacobian.**  With the flattened event in channel-major order (entry :math:`(c, p)`, pixel
    :math:`p = iW + j`), :math:`y_{o,p} = \\sum_c W_{oc}x_{c,p}`, so :math:`\\partial y_{o,p}/\\partial x_{c,q} =
    W_{oc}\\,\\delta_{pq}` and :math:`J = W\\otimes I_{HW}` (pixel-major it is :math:`I_{HW}\\otimes W`, the same
    matrix with rows and columns permuted alike, which keeps the determinant).  Since
    :math:`\\det(A\\otimes B) = (\\det A)^{m}(\\det B)^{n}` for A of order n and B of order m,
    :math:`\\det J = (\\det W)^{HW}` and

    .. math:: \\log|\\det J| = HW\\,\\log|\\det W|,

    computed once per batch with ``slogdet`` (an LU factorisation, :math:`O(C^3)`).  Forgetting the factor
    HW is the classic error (the logdet of one pixel, not of the image); the test suite checks it against
    the brute-force Jacobian.

    **Backward** of :math:`\\langle\\bar y, y\\rangle + \\sum_n\\bar\\ell_n\\ell_n`:

    * :math:`\\bar x[n,:,i,j] = W^T\\bar y[n,:,i,j]` (:math:`J^T = W^T\\otimes I_{HW}`);
    * :math:`\\bar W = \\sum_{n,i,j}\\bar y[n,:,i,j]\\,x[n,:,i,j]^T + \\big(\\sum_n\\bar\\ell_n\\big)\\,HW\\,W^{-T}`.
      The first term: :math:`\\partial y_{o,p}/\\partial W_{oc} = x_{c,p}`, summed over every pixel of
      every sample.  The second is Jacobi's formula, :math:`d\\det W = \\det W\\,\\mathrm{tr}(W^{-1}dW)`, so
      :math:`d\\log|\\det W| = \\mathrm{tr}(W^{-1}dW) = \\langle W^{-T}, dW\\rangle`, i.e.
      :math:`\\partial\\log|\\det W|/\\partial W = W^{-T}`, times the factor HW of every logdet.

    **Inverse** :math:`x[n,:,i,j] = W^{-1}y[n,:,i,j]` by ``solve`` (one LU factorisation with partial
    pivoting, then two triangular solves for all :math:`N\\cdot HW` pixel columns at once), logdet
    :math:`-HW\\log|\\det W|`.  Not by multiplying with an explicitly computed :math:`W^{-1}`: ``solve`` is
    backward stable, the computed :math:`\\hat x` solving :math:`(W + \\delta W)\\hat x = y` with
    :math:`\\|\\delta W\\| \\le c\\,C\\epsilon\\|W\\|`, so its residual :math:`\\|W\\hat x - y\\|` is
    :math:`O(\\epsilon\\|W\\|\\|\\hat x\\|)` and its error
    :math:`\\|\\hat x - x\\|/\\|x\\| \\lesssim c\\,C\\,\\kappa(W)\\,\\epsilon`;
    the product with a computed inverse is not backward stable, and its residual can be :math:`\\kappa(W)`
    times larger (Higham 2002, *Accuracy and Stability of Numerical Algorithms*, section 14.1), which
    matters exactly for the nearly singular weights this layer is tested on.  The round trip of a weight
    with :math:`\\kappa(W) = 10^8` is accurate to about :math:`\\kappa(W)\\,C\\,\\epsilon \\approx 10^{-7}`
    relative, and no better: the forward product rounds y by :math:`\\epsilon|W||x|` already.
    """

    def __init__(self, event_shape):
        self._set_event_shape(image_shape(self.name, event_shape))
        self.channels = self.event_shape[0]
        self._hw = self.event_shape[1] * self.event_shape[2]

    def param_shapes(self):
        return {"W": (self.channels, self.channels)}

    def init(self, rng, x=None, dtype=np.float64):
        """A random rotation (:func:`random_rotation`): orthogonal, logdet 0 (a data batch ``x`` only sets the
        dtype)."""
        dtype = x.dtype if x is not None else dtype
        return {"W": random_rotation(rng, self.channels).astype(dtype)}

    def weight(self, params, xp=np):
        """The ``(C, C)`` matrix applied at every pixel."""
        return params["W"]

    def _check_param_values(self, params):
        _check_invertible(self.name, params["W"])

    def _forward(self, params, x, xp):
        W = params["W"]
        logdet = self._hw * xp.linalg.slogdet(W)[1]
        return _channel_map(W, x, xp), logdet + xp.zeros(x.shape[0], dtype=x.dtype), x

    def _inverse(self, params, y, xp):
        W = params["W"]
        try:
            x = _from_columns(xp.linalg.solve(W, _to_columns(y, xp)), y.shape, xp)
        except np.linalg.LinAlgError:
            raise FloatingPointError(f"{self.name} inverse: the weight is singular in {unbox(W).dtype}") from None
        return x, -self._hw * xp.linalg.slogdet(W)[1] + xp.zeros(y.shape[0], dtype=y.dtype)

    def _explain(self, direction, params, x):
        W = unbox(params["W"])
        inv_norm = np.max(np.sum(np.abs(np.linalg.inv(W)), axis=1)) if direction == "inverse" else None
        return _explain_channel_map(W, inv_norm, direction, x)

    def _backward(self, params, dy, dlogdet, cache):
        W = params["W"]
        dx, G = _channel_grads(W, dy, cache)
        return dx, {"W": G + (self._hw * dlogdet.sum()) * np.linalg.inv(W).T}

    def __repr__(self):
        return f"Invertible1x1Conv(event_shape={self.event_shape})"


class LUInvertible1x1Conv(Bijector):
    """Glow's invertible 1x1 convolution with an LU-factorised weight (Kingma & Dhariwal 2018,
    arXiv:1807.03039, section 3.2): :math:`W = P L (U + \\mathrm{diag}(\\sigma\\odot e^{s}))` applied at every
    pixel, :math:`y[n,:,i,j] = W x[n,:,i,j]`.

    The factors are those of :class:`~npflows.bijectors.linear.LULinear` (shared code:
    :func:`~npflows.bijectors.linear.lu_factors`, :func:`~npflows.bijectors.linear.lu_factor_grads`):
    ``P`` a fixed permutation (``perm``, :math:`(Pv)_i = v_{\\mathrm{perm}[i]}`), ``L`` unit lower triangular
    (parameter ``lower``, strict lower triangle used), ``U`` strictly upper triangular (``upper``, strict
    upper triangle used), ``log_scale`` s ``(C,)``, and Glow's fixed signs :math:`\\sigma` (``sign``, entries
    +-1, default all +1) of the diagonal.  No bias (Glow's ActNorm carries the shift).

    Parameters
    ----------
    event_shape : tuple (C, H, W)
    perm : sequence of int, optional
        The permutation P (default the identity).
    sign : sequence of +-1, optional
        The signs of :math:`U`'s diagonal (default all +1).  Glow takes them, with P, from the LU
        factorisation of its random initial rotation; here they are fixed structure, chosen by the caller.

    Notes
    -----
    **Peers.**  normflows' ``Invertible1x1Conv(C, use_lu=True)`` stores exactly these factors: ``P``
    (``perm = P.argmax(axis=1)``), ``L`` (``lower``), ``U`` (``upper``), ``log_S`` (``log_scale``) and
    ``sign_S`` (``sign``); its *forward* applies :math:`W^{-1}` (our inverse).  nflows'
    ``OneByOneConvolution`` permutes the channels *first* and adds a bias, :math:`y = LU\\,x_{\\mathrm{perm}} + b`
    with :math:`U_{cc} = \\mathrm{softplus}(\\cdot) + 10^{-3}`: its weight is :math:`LUP`, not :math:`PLU`, so it
    maps onto :class:`Invertible1x1Conv` with ``W = L @ U @ P`` followed by ``ActNorm2d`` with
    ``log_scale = 0``, ``shift = b``, not onto this class.

    **Jacobian** :math:`W\\otimes I_{HW}` (see :class:`Invertible1x1Conv`), and
    :math:`\\det W = \\det P\\cdot\\det L\\cdot\\det(U + \\mathrm{diag}(\\sigma e^{s})) = \\pm 1\\cdot 1\\cdot
    \\prod_c\\sigma_c e^{s_c}` (triangular factors: the product of the diagonals), so

    .. math:: \\log|\\det J| = HW\\sum_c s_c,

    :math:`O(C)`, no determinant to compute and never singular while :math:`e^{s}` is a normal number.

    **Backward.**  With :math:`M = U + \\mathrm{diag}(\\sigma e^{s})`, :math:`A = LM`, :math:`W = PA` and
    :math:`G = \\sum_{n,i,j}\\bar y[n,:,i,j]\\,x[n,:,i,j]^T` (the cotangent of W, as for the dense weight):

    * :math:`\\bar A = P^T G` (:math:`W = PA`, P fixed);
    * :math:`\\bar L = \\mathrm{tril}_{-1}(\\bar A M^T)` and :math:`\\bar M = L^T\\bar A` (:math:`A = LM`);
    * :math:`\\bar U = \\mathrm{triu}_{+1}(\\bar M)`;
    * :math:`\\bar s = \\mathrm{diag}(\\bar M)\\odot\\sigma\\odot e^{s} + HW\\sum_n\\bar\\ell_n` (M's diagonal
      :math:`\\sigma e^{s}` is its own derivative in s; the second term is the logdet path);
    * :math:`\\bar x[n,:,i,j] = W^T\\bar y[n,:,i,j]`.

    **Inverse** :math:`x = M^{-1}L^{-1}P^T y` per pixel: two triangular solves (forward and back
    substitution, :math:`O(C^2)` per pixel, no factorisation: the LU *is* the parameterisation), for all
    :math:`N\\cdot HW` pixel columns at once; logdet :math:`-HW\\sum_c s_c`.  (The traceable path, used only
    when the tests differentiate the inverse, solves the same two triangular systems with ``xp.linalg.solve``.)

    **Init** (``init(rng)``): Glow's random rotation, within the fixed P and signs.  Draw a rotation Q
    (:func:`random_rotation`) and factor it with partial pivoting, :math:`Q = P_0 L_0 U_0` (scipy's ``lu``;
    :math:`|L_0| \\le 1`).  :math:`R = P_0^TQ = L_0U_0` is orthogonal and has an unpivoted LU factorisation
    with bounded factors; flipping the signs of columns, :math:`RD = L_0(U_0D)` with
    :math:`D = \\mathrm{diag}(\\mathrm{sign}(\\mathrm{diag}\\,U_0)\\odot\\sigma)`, makes the diagonal's signs
    :math:`\\sigma` and keeps it orthogonal.  So ``lower`` :math:`= L_0`, ``upper`` :math:`= U_0D` off the
    diagonal, ``log_scale`` :math:`= \\log|\\mathrm{diag}\\,U_0|`, and :math:`W = P\\,RD` is orthogonal for any
    P: the layer starts volume preserving (logdet 0 to rounding).
    """

    def __init__(self, event_shape, perm=None, sign=None):
        self._set_event_shape(image_shape(self.name, event_shape))
        C = self.channels = self.event_shape[0]
        self._hw = self.event_shape[1] * self.event_shape[2]
        self.perm = np.arange(C) if perm is None else np.asarray(perm, dtype=np.intp)
        if self.perm.shape != (C,) or not np.array_equal(np.sort(self.perm), np.arange(C)):
            raise ValueError(f"{self.name}: perm must be a permutation of 0..{C - 1}, got {np.asarray(perm).tolist()}")
        self.sign = np.ones(C, np.int8) if sign is None else np.asarray(sign)
        if self.sign.shape != (C,) or not np.isin(self.sign, (-1, 1)).all():
            raise ValueError(f"{self.name}: sign must be {C} entries of +1 or -1, got {np.asarray(sign).tolist()}")
        self.sign = self.sign.astype(np.int8)
        self.P = np.eye(C)[self.perm]                 # (P v)_i = v_{perm[i]}
        self._inv = np.argsort(self.perm)             # (P^T v)_j = v_{_inv[j]}
        self._lo = np.tril(np.ones((C, C), bool), -1)

    def param_shapes(self):
        C = self.channels
        return {"lower": (C, C), "upper": (C, C), "log_scale": (C,)}

    def init(self, rng, x=None, dtype=np.float64):
        """Glow's random rotation within this P and these signs (see Notes): W is orthogonal, logdet 0."""
        dtype = x.dtype if x is not None else dtype
        _, L0, U0 = scipy.linalg.lu(random_rotation(rng, self.channels))
        d = np.diag(U0)
        UD = U0 * (np.sign(d) * self.sign)[None, :]
        return {"lower": (L0 * self._lo).astype(dtype), "upper": (UD * self._lo.T).astype(dtype),
                "log_scale": np.log(np.abs(d)).astype(dtype)}

    def _factors(self, params, xp):
        return lu_factors(params, self._lo, xp, self.sign)

    def weight(self, params, xp=np):
        """The dense ``(C, C)`` matrix W = P L (U + diag(sign * exp(s))) applied at every pixel."""
        L, M = self._factors(params, xp)
        return self.P.astype(params["log_scale"].dtype) @ (L @ M)

    def _forward(self, params, x, xp):
        L, M = self._factors(params, xp)
        W = self.P.astype(x.dtype) @ (L @ M)
        logdet = self._hw * xp.sum(params["log_scale"]) + xp.zeros(x.shape[0], dtype=x.dtype)
        return _channel_map(W, x, xp), logdet, (x, L, M, W)

    def _inverse(self, params, y, xp):
        L, M = self._factors(params, xp)
        r = _to_columns(y, xp)[self._inv]             # P^T y, one column per pixel of every sample
        try:
            if xp is np:
                cols = scipy.linalg.solve_triangular(
                    M, scipy.linalg.solve_triangular(L, r, lower=True, unit_diagonal=True, check_finite=False),
                    lower=False, check_finite=False)     # a non-finite result is refused by the caller
            else:
                cols = xp.linalg.solve(M, xp.linalg.solve(L, r))
        except np.linalg.LinAlgError:                  # exp(s) underflowed to 0 on the diagonal of M
            raise FloatingPointError(f"{self.name} inverse: the weight is singular in {unbox(M).dtype}: "
                                     f"{self._explain('inverse', params, None)}") from None
        x = _from_columns(cols, y.shape, xp)
        return x, -self._hw * xp.sum(params["log_scale"]) + xp.zeros(y.shape[0], dtype=y.dtype)

    def _explain(self, direction, params, x):
        why = explain_log_scale(self.name, params["log_scale"], direction,
                                "the parameter log_scale has diverged (lower the learning rate)")
        if why is None and direction == "forward" and x is not None:
            return _explain_channel_map(self.weight({k: unbox(v) for k, v in params.items()}), None, direction, x)
        return why

    def _backward(self, params, dy, dlogdet, cache):
        x, L, M, W = cache
        dx, G = _channel_grads(W, dy, x)
        g = lu_factor_grads(G[self._inv], L, M, params["log_scale"], self._lo, self.sign)     # A_bar = P^T G
        g["log_scale"] = g["log_scale"] + self._hw * dlogdet.sum()
        return dx, g

    def __repr__(self):
        return (f"LUInvertible1x1Conv(event_shape={self.event_shape}, perm={self.perm.tolist()}, "
                f"sign={self.sign.tolist()})")


TAPS = ("raster", "quadrant")


def causal_taps(kernel_size, taps="raster"):
    """``(k, k)`` boolean: the spatial taps of a masked convolution that see pixels strictly before the centre
    in raster order (the centre itself excluded).  ``"raster"``: every tap of the rows above the centre and the
    taps left of it in its row (PixelCNN's mask, van den Oord et al. 2016, arXiv:1601.06759); ``"quadrant"``:
    only the taps up and to the left, :math:`u \\le p` and :math:`v \\le p` (a k = 3 kernel is then the 2x2
    causal kernel of the pixel, the one above, the one to the left and the one above-left)."""
    k, p = int(kernel_size), int(kernel_size) // 2
    u, v = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    before = (u < p) | ((u == p) & (v < p))
    return before if taps == "raster" else before & (u <= p) & (v <= p)


class MaskedConv2d(Bijector):
    """A masked (autoregressive) convolution as a flow layer: :math:`y = K \\star x + b` with the kernel masked
    so that the Jacobian is triangular in raster order (PixelCNN's masks, van den Oord et al. 2016,
    arXiv:1601.06759; as an invertible layer: Hoogeboom, van den Berg & Welling 2019, "Emerging convolutions
    for generative normalizing flows", arXiv:1901.11137).

    :math:`\\star` is :func:`npflows.nn.conv.conv2d` (stride 1, zero "same" padding, PyTorch's
    cross-correlation): :math:`y[n,o,i,j] = b_o + \\sum_{c,u,v} K[o,c,u,v]\\,x[n,c,i+u-p,j+v-p]`,
    :math:`p = k/2` (integer half).  The effective kernel K is built from the parameters:

    * taps strictly before the centre in raster order (:func:`causal_taps`): ``weight[:, :, u, v]``, free;
    * the centre tap :math:`(p, p)`: ``weight`` on the strict lower triangle in channels (output channel o
      reads input channels c < o), :math:`e^{\\lambda_o}` on the diagonal (``log_diag`` :math:`\\lambda`, so
      the diagonal is positive and never 0), zero above;
    * taps after the centre: zero.

    Parameters ``weight`` ``(C, C, k, k)`` (entries outside the mask are ignored and get zero gradient, as
    LULinear's triangles), ``log_diag`` ``(C,)``, ``bias`` ``(C,)``.

    Parameters
    ----------
    event_shape : tuple (C, H, W)
    kernel_size : odd int
        k (1 gives the channel-triangular 1x1 convolution).
    taps : {"raster", "quadrant"}
        Which taps before the centre are free (:func:`causal_taps`): all of them in raster order, or only
        those up and to the left.

    Notes
    -----
    **The order and the Jacobian.**  Order the entries of an image pixel by pixel in raster order, the
    channels innermost: :math:`(i, j, c)` before :math:`(i', j', c')` when :math:`(i, j, c) < (i', j', c')`
    lexicographically.  :math:`\\partial y[o,i,j]/\\partial x[c,i',j'] = K[o, c, i'-i+p, j'-j+p]` (zero when
    the offset lies outside the kernel).  A free tap :math:`(u, v)` before the centre reads the pixel
    :math:`(i+u-p, j+v-p)`, which lies before :math:`(i, j)` in raster order (:math:`u < p`: an earlier row;
    :math:`u = p, v < p`: the same row, an earlier column); taps after the centre are zero; the centre tap
    reads the same pixel, channel c into channel o only for :math:`c \\le o`.  So in this order the
    Jacobian (the same for every sample: the map is affine) is lower triangular, with diagonal
    :math:`e^{\\lambda_o}` at every pixel, and

    .. math:: \\log|\\det J| = HW\\sum_o \\lambda_o

    (:math:`O(C)`, the same for every sample).  Reordering the flattened event from channel-major to this
    order permutes rows and columns alike, which keeps the determinant.

    **Backward** of :math:`\\langle\\bar y, y\\rangle + \\sum_n\\bar\\ell_n\\ell_n`.  The convolution's VJP
    (:func:`npflows.nn.conv.conv2d_backward`, derived in that module's Notes) gives :math:`\\bar x` (the full
    convolution of :math:`\\bar y` with the flipped kernel), :math:`\\bar K[o,c,u,v] = \\sum_{n,i,j}\\bar
    y[n,o,i,j]\\,x[n,c,i+u-p,j+v-p]` and :math:`\\bar b_o = \\sum_{n,i,j}\\bar y[n,o,i,j]`.  Then, through
    the construction of K:

    * :math:`\\overline{\\mathrm{weight}} = \\bar K\\odot\\mathrm{mask}` (K equals ``weight`` exactly where the
      mask is 1, and does not depend on it elsewhere);
    * :math:`\\bar\\lambda_o = \\bar K[o,o,p,p]\\,e^{\\lambda_o} + HW\\sum_n\\bar\\ell_n` (the centre
      diagonal is :math:`e^{\\lambda_o}`; the second term is the logdet path);
    * :math:`\\bar b` as above, and :math:`\\bar x` from the convolution.

    **Inverse by raster-order substitution.**  Since the Jacobian is triangular, the pixels can be solved
    one at a time in raster order: at pixel :math:`(i, j)`, every free tap before the centre reads pixels
    already solved, so

    .. math:: r = y[:,i,j] - b - \\sum_{(u,v)\\ \\mathrm{before}} K[:,:,u,v]\\;x[:,i+u-p,j+v-p]

    is known, and :math:`x[:,i,j]` solves the lower-triangular system :math:`K[:,:,p,p]\\,x[:,i,j] = r`
    channel by channel (forward substitution, dividing by :math:`e^{\\lambda_c}`).  Vectorised over the
    batch: :math:`HW` sequential pixel steps, each with :math:`C` sequential channel steps, each pixel costing
    :math:`O(k^2C^2)` per sample (:math:`O(k^2C)` per channel), against one convolution (one GEMM over every
    pixel) forward.  The NumPy path takes the taps in the rows above the centre, which read finished rows
    only, for a whole row at once (one GEMM per row), so only the taps left of the centre and the channel
    solve run pixel by pixel (a 1x1 kernel needs no loop: one triangular solve for every pixel).  Measured
    with ``scripts/bench_masked_conv.py`` (k = 3, float64, one BLAS thread, medians; this 2-core machine was
    shared, load average ~8, and absolute times varied 2x between runs while the ratios held):

    ============  =====  ===========  ==========  ==========  =================
    event         batch  pixel steps  forward ms  inverse ms  inverse / forward
    ============  =====  ===========  ==========  ==========  =================
    (1, 8, 8)         1           64        0.10        0.51                5.0
    (1, 8, 8)        64           64        0.21        0.73                3.5
    (4, 4, 4)         1   16 (x 4 ch)       0.11        0.47                4.5
    (4, 4, 4)        64   16 (x 4 ch)       0.26        0.66                2.5
    ============  =====  ===========  ==========  ==========  =================

    At these sizes the inverse is Python-bound: about 64 sequential NumPy steps in both events
    (:math:`HW = 64` pixels of one channel, or 16 pixels of 4 channels), about 7 us each, nearly independent
    of the batch; it grows with :math:`HW \\cdot C`, the forward with the batch.

    **Accuracy of the inverse.**  The substitution is backward stable (each pixel step is a triangular solve;
    Higham 2002, section 8.1), but the inverse *map* can be ill-conditioned even with unit diagonal: with
    C = 1 and :math:`y_{ij} = x_{ij} + a\\,x_{i,j-1}`, :math:`x_{ij} = \\sum_m (-a)^m y_{i,j-m}`, which grows
    like :math:`|a|^{W}` along a row when :math:`|a| > 1`.  Such growth is the map's, not the algorithm's:
    the round-trip error is bounded by the Jacobian's condition number times :math:`\\epsilon`, and a result
    that overflows raises ``FloatingPointError``.

    **Init**: ``weight`` :math:`\\sim\\mathcal N(0, (0.1)^2/\\mathrm{fan\\_in})` on its free entries
    (fan_in = the most free entries of any output channel), :math:`\\lambda = 0`, :math:`b = 0`: near the identity.
    """

    def __init__(self, event_shape, kernel_size=3, taps="raster"):
        self._set_event_shape(image_shape(self.name, event_shape))
        C = self.channels = self.event_shape[0]
        self._hw = self.event_shape[1] * self.event_shape[2]
        if isinstance(kernel_size, (bool, np.bool_)) or not isinstance(kernel_size, (int, np.integer)) \
                or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"{self.name}: kernel_size must be an odd int >= 1, got {kernel_size!r}")
        if taps not in TAPS:
            raise ValueError(f"{self.name}: taps must be one of {TAPS}, got {taps!r}")
        self.kernel_size, self.taps = int(kernel_size), str(taps)
        k = self.kernel_size
        p = self._p = k // 2
        self._before = causal_taps(k, taps)                                   # (k, k)
        centre = np.zeros((k, k), bool)
        centre[p, p] = True
        lower = np.tril(np.ones((C, C), bool), -1)
        # mask[o, c, u, v]: the entries of ``weight`` that are used
        self.mask = (self._before[None, None] | (centre[None, None] & lower[:, :, None, None]))
        self._diag = np.zeros((C, C, k, k), bool)                           # [o, o, p, p]
        self._diag[np.arange(C), np.arange(C), p, p] = True

    def param_shapes(self):
        C, k = self.channels, self.kernel_size
        return {"weight": (C, C, k, k), "log_diag": (C,), "bias": (C,)}

    def init(self, rng, x=None, dtype=np.float64):
        dtype = x.dtype if x is not None else dtype
        C = self.channels
        fan_in = max(1, int(self.mask.sum(axis=(1, 2, 3)).max()))
        w = rng.standard_normal(self.mask.shape) * (0.1 / np.sqrt(fan_in)) * self.mask
        return {"weight": w.astype(dtype), "log_diag": np.zeros(C, dtype), "bias": np.zeros(C, dtype)}

    def kernel(self, params, xp=np):
        """The effective ``(C, C, k, k)`` kernel K: ``weight`` on the mask, ``exp(log_diag)`` on the centre
        diagonal, zero elsewhere."""
        d = xp.reshape(xp.exp(params["log_diag"]), (self.channels, 1, 1, 1))
        return params["weight"] * self.mask + d * self._diag       # disjoint supports: each entry one term

    def _forward(self, params, x, xp):
        K = self.kernel(params, xp)
        logdet = self._hw * xp.sum(params["log_diag"]) + xp.zeros(x.shape[0], dtype=x.dtype)
        if xp is np:
            y, cc = conv2d(x, K, params["bias"], return_cache=True)
            return y, logdet, (x, K, cc)
        return conv2d(x, K, params["bias"], xp=xp), logdet, (x, K, None)

    def _inverse(self, params, y, xp):
        K = self.kernel(params, xp)
        try:
            x = self._substitute(K, y - xp.reshape(params["bias"], (-1, 1, 1)), xp)
        except np.linalg.LinAlgError:                  # exp(log_diag) underflowed to 0
            raise FloatingPointError(f"{self.name} inverse: a diagonal entry exp(log_diag) is 0 in "
                                     f"{unbox(K).dtype}: {self._explain('inverse', params, None)}") from None
        return x, -self._hw * xp.sum(params["log_diag"]) + xp.zeros(y.shape[0], dtype=y.dtype)

    def _substitute(self, K, r, xp):
        """Solve :math:`K \\star x = r` pixel by pixel in raster order (see Notes)."""
        N, C, H, Wd = r.shape
        k, p = self.kernel_size, self._p
        T = K[:, :, p, p]                                                   # lower triangular
        taps = [(u, v) for u in range(k) for v in range(k) if self._before[u, v]]
        if xp is np:
            return self._substitute_np(K, r)
        # traceable path: the same substitution with lists of solved pixels, no writes into arrays
        rows = []
        for i in range(H):
            row = []
            for j in range(Wd):
                rij = r[:, :, i, j]
                for u, v in taps:
                    a, b = i + u - p, j + v - p
                    if 0 <= a < H and 0 <= b < Wd:
                        src = rows[a][b] if a < i else row[b]
                        rij = rij - xp.dot(src, xp.transpose(K[:, :, u, v]))
                cols = []
                for c in range(C):
                    s = rij[:, c]
                    for c2 in range(c):
                        s = s - T[c, c2] * cols[c2]
                    cols.append(s / T[c, c])
                row.append(xp.stack(cols, axis=1))
            rows.append(row)
        return xp.stack([xp.stack(row, axis=2) for row in rows], axis=2)

    def _substitute_np(self, K, r):
        """The NumPy path of :meth:`_substitute`: the same substitution, each solved pixel written into a
        zero-padded image.  The taps in the rows above the centre read only finished rows, so their sum is
        taken for a whole row at once (one GEMM per row); only the taps left of the centre, in its own row,
        and the channel-by-channel solve run pixel by pixel."""
        N, C, H, Wd = r.shape
        k, p = self.kernel_size, self._p
        T = K[:, :, p, p]
        if p == 0:              # a 1x1 kernel: every pixel is independent, one triangular solve for them all
            cols = scipy.linalg.solve_triangular(T, _to_columns(r, np), lower=True, check_finite=False)
            return np.ascontiguousarray(_from_columns(cols, r.shape, np))
        xpad = np.zeros((N, C, H + 2 * p, Wd + 2 * p), r.dtype)
        K_up = (K[:, :, :p, :] * self._before[:p]).reshape(C, C * p * k).T        # (C*p*k, C)
        K_left = (K[:, :, p, :p] * self._before[p, :p]).reshape(C, C * p).T       # (C*p, C)
        s0, s1, s2, s3 = xpad.strides
        for i in range(H):
            # rows i-p .. i-1 of the image are rows i .. i+p-1 of xpad: their windows (N, W, C, p, k)
            win = np.lib.stride_tricks.as_strided(xpad[:, :, i:, :], (N, Wd, C, p, k), (s0, s3, s1, s2, s3),
                                                  writeable=False)
            row = r[:, :, i, :] - (win.reshape(N * Wd, C * p * k) @ K_up).reshape(N, Wd, C).transpose(0, 2, 1)
            for j in range(Wd):
                rij = row[:, :, j] - xpad[:, :, i + p, j:j + p].reshape(N, C * p) @ K_left
                xpad[:, 0, i + p, j + p] = rij[:, 0] / T[0, 0]
                for c in range(1, C):        # forward substitution through the centre tap's triangle
                    xpad[:, c, i + p, j + p] = (rij[:, c] - xpad[:, :c, i + p, j + p] @ T[c, :c]) / T[c, c]
        return xpad[:, :, p:p + H, p:p + Wd].copy()

    def _explain(self, direction, params, x):
        why = explain_log_scale(self.name, params["log_diag"], direction,
                                "the parameter log_diag has diverged (lower the learning rate)")
        if why is not None or direction != "inverse":
            return why
        K = np.asarray(self.kernel({k: unbox(v) for k, v in params.items()}))
        d = np.exp(unbox(params["log_diag"]))
        off = (np.abs(K).sum(axis=(1, 2, 3)) - d) / d
        return (f"the raster-order substitution amplifies the input: the off-diagonal taps of output channel "
                f"{int(np.argmax(off))} sum to {float(off.max()):.3g} times its diagonal exp(log_diag), and such "
                f"a recursion can grow geometrically over the {self._hw} pixels; the inverse map itself is this "
                f"large (see the Notes on accuracy)")

    def _backward(self, params, dy, dlogdet, cache):
        x, K, cc = cache
        dx, dK, db = conv2d_backward(dy, x, K, cc)
        C, p = self.channels, self._p
        c = np.arange(C)
        dld = dK[c, c, p, p] * np.exp(params["log_diag"]) + self._hw * dlogdet.sum()
        return dx, {"weight": dK * self.mask, "log_diag": dld, "bias": db}

    def __repr__(self):
        return f"MaskedConv2d(event_shape={self.event_shape}, kernel_size={self.kernel_size}, taps={self.taps!r})"
