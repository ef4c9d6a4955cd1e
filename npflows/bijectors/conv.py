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
    :math:`O(\\epsilon\\|W\\|\\|\\hat x\\|)` and its error :math:`\\|\\hat x - x\\|/\\|x\\| \\lesssim c\\,C\\,\\kappa(W)\\,\\epsilon`;
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
