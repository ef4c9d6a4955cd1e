"""Coupling layers on images ``(N, C, H, W)``: RealNVP's affine coupling with a checkerboard or a channel
mask, and NICE's additive coupling with the same masks, each conditioned by Glow's convolutional network
(:class:`~npflows.nn.conv.ConvNet`).

The two masks (``b = 1``: passes through unchanged and conditions; ``b = 0``: transformed), drawn for a
4x4 image with C = 4 channels::

    mask="checkerboard", b[c, i, j] = (i + j + parity) % 2       mask="channel" (C = 4)
    the same pattern in every channel:
                                                                 parity=0: channels 0, 1 condition,
       parity=0          parity=1                                          channels 2, 3 are transformed
       0 1 0 1           1 0 1 0                                 parity=1: channels 2, 3 condition,
       1 0 1 0           0 1 0 1                                           channels 0, 1 are transformed
       0 1 0 1           1 0 1 0
       1 0 1 0           0 1 0 1                                 (odd C: the first half is the first
                                                                  ceil(C/2) channels, as torch.chunk)

RealNVP (Dinh et al. 2017, arXiv:1605.08803, section 3.4) alternates checkerboard masks at full resolution
and channel masks after each squeeze; Glow (Kingma & Dhariwal 2018, arXiv:1807.03039) uses channel masks
only, with the first half conditioning (``parity=0``).
"""
import numpy as np

from .._checks import unbox
from ..core.bijector import Bijector, zeros_logdet
from ..nn.conv import ConvNet
from .coupling import SCALES
from .elementwise import explain_log_scale, mul_exp

MASKS = ("checkerboard", "channel")
LAYOUTS = ("scale_shift", "shift_scale", "interleaved")


def checkerboard_mask(shape, parity=0):
    """RealNVP's checkerboard ``b[i, j] = (i + j + parity) % 2`` of an ``(H, W)`` image, as an int8 array
    (1 = conditions, 0 = transformed); the same for every channel."""
    H, W = shape
    return ((np.arange(H)[:, None] + np.arange(W)[None, :] + int(parity)) % 2).astype(np.int8)


def channel_halves(C, parity=0):
    """``(conditioning, transformed)`` channel slices of the channel mask: the first ``ceil(C/2)`` channels
    and the rest (``parity=0``), or the other way round (``parity=1``)."""
    k = (C + 1) // 2
    first, second = slice(0, k), slice(k, C)
    return (first, second) if parity == 0 else (second, first)


class _ImageCoupling(Bijector):
    """Shared structure: the event shape, the mask, the split and merge, and the conditioner ConvNet."""

    n_params_per_channel = 1

    def __init__(self, event_shape, mask="checkerboard", parity=0, hidden=64, kernel=3, activation="relu",
                 zero_init=True):
        self._set_event_shape(event_shape)
        if len(self.event_shape) != 3:
            raise ValueError(f"{self.name}: event_shape must be an image shape (C, H, W), got {event_shape!r}")
        if mask not in MASKS:
            raise ValueError(f"{self.name}: unknown mask {mask!r}; choose one of {MASKS}")
        if parity not in (0, 1):
            raise ValueError(f"{self.name}: parity must be 0 or 1, got {parity!r}")
        C, H, W = self.event_shape
        self.mask, self.parity = mask, int(parity)
        self.hidden, self.kernel, self.activation = int(hidden), int(kernel), activation
        self.zero_init = bool(zero_init)
        if mask == "channel":
            if C < 2:
                raise ValueError(f"{self.name}: a channel mask needs at least 2 channels, got C = {C}")
            self._ia, self._ib = channel_halves(C, self.parity)
            c_in, c_out = self._ia.stop - self._ia.start, self._ib.stop - self._ib.start
            self._b = None
        else:
            if H * W < 2:
                raise ValueError(f"{self.name}: a checkerboard mask needs at least 2 pixels, got H x W = {H} x {W}")
            b = checkerboard_mask((H, W), self.parity)[None]                    # (1, H, W): every channel
            # constants in both float dtypes, so a float32 input is never multiplied by a float64 mask
            self._b = {np.dtype(t): (b.astype(t), (1 - b).astype(t)) for t in (np.float32, np.float64)}
            c_in, c_out = C, C
        self.n_transformed = c_out
        self.net = ConvNet(c_in, self.n_params_per_channel * c_out, self.hidden, self.kernel, activation,
                           zero_init=self.zero_init, prefix="net.")

    def param_shapes(self):
        return self.net.param_shapes()

    def init(self, rng, x=None, dtype=np.float64):
        return self.net.init(rng, dtype=x.dtype if x is not None else dtype)

    def _masks(self, x):
        """``(b, 1 - b)`` of the checkerboard in the dtype of ``x`` (float64 for any other dtype)."""
        return self._b.get(unbox(x).dtype) or self._b[np.dtype(np.float64)]

    def _conditioner_input(self, x):
        """What the network sees: ``b * x`` (checkerboard) or the conditioning channels (channel mask)."""
        if self.mask == "channel":
            return x[:, self._ia]
        return x * self._masks(x)[0]

    def _merge(self, xa, yb, xp):
        """The output of a channel-mask layer: the conditioning channels and the transformed ones in place."""
        return xp.concatenate([xa, yb] if self.parity == 0 else [yb, xa], axis=1)

    def _split_cotangent(self, dy):
        return dy[:, self._ia], dy[:, self._ib]

    def __repr__(self):
        return (f"{self.name}(event_shape={self.event_shape}, mask={self.mask!r}, parity={self.parity}, "
                f"net={self.net!r})")


class ImageAdditiveCoupling(_ImageCoupling):
    """NICE's additive coupling on images (Dinh et al. 2014, arXiv:1410.8516; RealNVP's masks,
    arXiv:1605.08803; Glow's ``flow_coupling=0``, arXiv:1807.03039): volume preserving.

    Checkerboard: :math:`y = x + (1 - b)\\odot t(b\\odot x)`; channel: :math:`y_a = x_a`,
    :math:`y_b = x_b + t(x_a)`.  ``t`` is a :class:`~npflows.nn.conv.ConvNet` with C (checkerboard) or
    :math:`C_b` (channel) output channels.

    Parameters
    ----------
    event_shape : (C, H, W)
    mask : {"checkerboard", "channel"}
        See the module docstring for the pictures.
    parity : {0, 1}
        Which half conditions: checkerboard ``b[i, j] = (i + j + parity) % 2``; channel: the first half
        (0) or the second (1).
    hidden, kernel, activation, zero_init : the ConvNet's width, odd kernel size (the middle layer is 1x1),
        activation, and zero last layer (the layer starts as the identity).

    Notes
    -----
    Order the entries conditioning-first (a permutation, which changes no determinant's magnitude):
    :math:`J = \\begin{pmatrix} I & 0 \\\\ \\partial t/\\partial x_a & I\\end{pmatrix}` is unit lower
    triangular, so :math:`\\log|\\det J| = 0` exactly.  (In the checkerboard form, :math:`b\\odot x` is the
    conditioning half, and :math:`t` is masked by :math:`1 - b`, so the conditioning entries get no shift.)

    Backward for :math:`(\\bar y, \\bar\\ell)` (:math:`\\bar\\ell` has no path: the logdet is constant):

    * checkerboard: :math:`\\bar t = (1 - b)\\odot\\bar y`; the network's backward of :math:`\\bar t` gives
      the cotangent :math:`\\bar u` of its input :math:`u = b\\odot x`, and
      :math:`\\bar x = \\bar y + b\\odot\\bar u`;
    * channel: :math:`\\bar x_b = \\bar y_b`, :math:`\\bar t = \\bar y_b` and
      :math:`\\bar x_a = \\bar y_a + ` the network's backward of :math:`\\bar t`.

    Inverse: :math:`x = y - (1-b)\\odot t(b\\odot y)` (:math:`b\\odot y = b\\odot x`), or
    :math:`x_b = y_b - t(y_a)`; logdet 0.
    """

    def _forward(self, params, x, xp):
        u = self._conditioner_input(x)
        t, nc = self.net.forward(params, u, xp)
        if self.mask == "channel":
            return self._merge(u, x[:, self._ib] + t, xp), zeros_logdet(x, xp), nc
        return x + t * self._masks(x)[1], zeros_logdet(x, xp), nc

    def _inverse(self, params, y, xp):
        u = self._conditioner_input(y)
        t, _ = self.net.forward(params, u, xp)
        if self.mask == "channel":
            return self._merge(u, y[:, self._ib] - t, xp), zeros_logdet(y, xp)
        return y - t * self._masks(y)[1], zeros_logdet(y, xp)

    def _backward(self, params, dy, dlogdet, cache):
        if self.mask == "channel":
            dya, dyb = self._split_cotangent(dy)
            du, grads = self.net.backward(params, dyb, cache)
            return self._merge(dya + du, dyb, np), grads
        b, m = self._masks(dy)
        du, grads = self.net.backward(params, dy * m, cache)
        return dy + b * du, grads


class ImageAffineCoupling(_ImageCoupling):
    """RealNVP's affine coupling on images (Dinh et al. 2017, arXiv:1605.08803, eq. 7-9), with Glow's
    conditioner (Kingma & Dhariwal 2018, arXiv:1807.03039).

    Checkerboard (:math:`b` = the mask, :math:`m = 1 - b`):
    :math:`y = b\\odot x + m\\odot(x\\odot e^{s} + t)` with :math:`(r, t) = \\mathrm{NN}(b\\odot x)` and
    :math:`s = \\mathrm{scale}(r)`; channel: :math:`y_a = x_a`, :math:`y_b = x_b\\odot e^{s} + t` with
    :math:`(r, t) = \\mathrm{NN}(x_a)`.  With ``shift_first=True``, :math:`x\\odot e^{s} + t` becomes Glow's
    :math:`(x + t)\\odot e^{s}`.

    Parameters
    ----------
    event_shape : (C, H, W)
    mask : {"checkerboard", "channel"}
        See the module docstring for the pictures.
    parity : {0, 1}
        Which half conditions: checkerboard ``b[i, j] = (i + j + parity) % 2``; channel: the first half
        (0, Glow's and normflows' ``"channel"``) or the second (1, normflows' ``"channel_inv"``).
    hidden, kernel, activation : the ConvNet's width (Glow: 512), odd kernel size of its first and last
        layers (Glow: 3), and activation.
    scale : str
        How the raw output r becomes the log-scale s: every map of
        :class:`~npflows.bijectors.coupling.AffineCoupling` (``SCALES``: ``"exp"`` (RealNVP), ``"tanh"``,
        ``"sigmoid"`` (nflows: :math:`e^s = \\sigma(r+2) + 10^{-3}`), ``"softplus"``, ``"softclip"``,
        ``"logsigmoid"`` (:math:`e^s = \\sigma(r + 2)`: Glow's, and normflows' ``"sigmoid_inv"``),
        ``"neg_logsigmoid"`` (normflows' ``"sigmoid"``)), with the same derivatives.
    scale_bound : float
        :math:`c` of ``"tanh"`` and ``"softclip"``.
    zero_init : bool
        Zero the network's last layer: r = t = 0 at initialisation (the identity for "exp" and "tanh").
    layout : {"scale_shift", "shift_scale", "interleaved"}
        How r and t are read off the network's 2K output channels (K = C for the checkerboard, the number of
        transformed channels for the channel mask):

        * ``"scale_shift"`` (default; as npflows' vector :class:`~npflows.bijectors.coupling.AffineCoupling`):
          r = channels ``[:K]``, t = ``[K:]``;
        * ``"shift_scale"`` (nflows' ``AffineCouplingTransform``): t = ``[:K]``, r = ``[K:]``;
        * ``"interleaved"`` (openai's Glow, ``shift = h[:, :, :, 0::2]``, ``scale = h[:, :, :, 1::2]`` in
          NHWC, and normflows' ``AffineCoupling``): t = channels ``0::2``, r = ``1::2``.
    shift_first : bool
        False: :math:`x e^s + t` (RealNVP, nflows, normflows); True: :math:`(x + t) e^s` (openai's Glow:
        ``z2 += shift; z2 *= scale``).  The two are the same family of maps (:math:`t' = t e^s`) but not the
        same function of the network's output.

    openai's Glow coupling is exactly ``mask="channel", parity=0, scale="logsigmoid", layout="interleaved",
    shift_first=True`` with an even C, up to the network's differences listed in
    :class:`~npflows.nn.conv.ConvNet` (ActNorm inside the net, the learned output scale, the edge-padding
    channel).  normflows' ``AffineCouplingBlock`` is ``mask="channel", layout="interleaved"`` with
    ``scale`` ``"exp"``, ``"logsigmoid"`` (its ``"sigmoid_inv"``) or ``"neg_logsigmoid"`` (its ``"sigmoid"``,
    the default of its ``GlowBlock``); normflows writes flows in the sampling direction, so its
    ``GlowBlock``'s data-to-latent map is its ``inverse``, :math:`(x - \\mathrm{shift})\\,\\sigma(r + 2)`:
    openai's form with :math:`t = -\\mathrm{shift}`.  normflows' *checkerboard*
    split is a different map: it gathers the entries with :math:`(c + i + j)` odd (the pattern alternates
    across channels too) into a half-width tensor ``(N, C, H, W/2)`` that its network sees, rather than a
    masked full-size image; it is not offered here.  nflows masks channels only (its mask marks the
    *transformed* channels with 1) and reads ``layout="shift_scale"`` with ``scale="sigmoid"``.

    Notes
    -----
    **Jacobian and logdet.**  Order the entries conditioning-first (a permutation: it changes the
    determinant's sign at most).  The conditioning entries pass through unchanged and the network sees only
    them, so :math:`J = \\begin{pmatrix} I & 0 \\\\ \\ast & \\mathrm{diag}(e^{s})\\end{pmatrix}`, block lower
    triangular; :math:`\\log|\\det J| = \\sum s` over the transformed entries (the diagonal block is
    :math:`\\mathrm{diag}(e^{s})` in both orders: :math:`\\partial y_b/\\partial x_b = e^{s}` since
    :math:`s, t` do not depend on :math:`x_b`).  In the checkerboard form the network's r and t are
    computed at every pixel, and both are multiplied by :math:`m = 1 - b`: :math:`s = m\\odot
    \\mathrm{scale}(r)`, :math:`t \\leftarrow m\\odot t`, so a conditioning entry gets :math:`e^0 = 1` and
    shift 0 exactly, the map is :math:`y = x\\odot e^{s} + t` on the whole image, and the logdet is
    :math:`\\sum_{c,i,j} s_{cij}`, the sum of :math:`m\\odot\\mathrm{scale}(r)` over the event.

    **Backward** for :math:`(\\bar y, \\bar\\ell)`, with :math:`e = e^{s}` (``x e^s + t``; the whole image in
    the checkerboard form, :math:`x_b, y_b` in the channel form):

    * :math:`\\bar x \\mathrel{+}= \\bar y\\odot e` (the direct path; :math:`e = 1` on conditioning entries);
    * :math:`\\bar s = \\bar y\\odot x\\odot e + \\bar\\ell` (the output path, and the logdet path:
      :math:`\\partial\\ell/\\partial s = 1` for every entry of every sample, :math:`\\bar\\ell` broadcast);
      with ``shift_first`` (:math:`y = (x + t) e`) it is :math:`\\bar y\\odot(x + t)\\odot e + \\bar\\ell`;
    * :math:`\\bar r = \\bar s\\odot\\mathrm{scale}'(r)\\,[\\odot m]` (``SCALES``' derivative; the mask factor
      in the checkerboard form);
    * :math:`\\bar t = \\bar y\\,[\\odot m]`, or :math:`\\bar y\\odot e\\,[\\odot m]` with ``shift_first``;
    * :math:`(\\bar r, \\bar t)` are placed in the network's output channels by the ``layout`` and the
      ConvNet's backward gives the cotangent :math:`\\bar u` of its input; checkerboard:
      :math:`u = b\\odot x`, so :math:`\\bar x \\mathrel{+}= b\\odot\\bar u`; channel: :math:`u = x_a`, so
      :math:`\\bar x_a = \\bar y_a + \\bar u`.

    **Inverse**: the conditioning half of y equals that of x, so the network computes the same r, t from y,
    and :math:`x = (y - t)\\odot e^{-s}` (``shift_first``: :math:`y\\odot e^{-s} - t`), logdet :math:`-\\sum s`.
    """

    n_params_per_channel = 2

    def __init__(self, event_shape, mask="checkerboard", parity=0, hidden=64, kernel=3, activation="relu",
                 scale="exp", scale_bound=2.0, zero_init=True, layout="scale_shift", shift_first=False):
        if scale not in SCALES:
            raise ValueError(f"ImageAffineCoupling: unknown scale {scale!r}; choose one of {list(SCALES)}")
        if not scale_bound > 0:
            raise ValueError(f"ImageAffineCoupling: scale_bound must be > 0, got {scale_bound}")
        if layout not in LAYOUTS:
            raise ValueError(f"ImageAffineCoupling: unknown layout {layout!r}; choose one of {LAYOUTS}")
        super().__init__(event_shape, mask, parity, hidden, kernel, activation, zero_init)
        self.scale, self.scale_bound = scale, float(scale_bound)
        self.layout, self.shift_first = layout, bool(shift_first)
        self._s, self._ds = SCALES[scale]

    # ---------------------------------------------------------------- the network's output, read and written
    def _read(self, h):
        K = self.n_transformed
        if self.layout == "scale_shift":
            return h[:, :K], h[:, K:]
        if self.layout == "shift_scale":
            return h[:, K:], h[:, :K]
        return h[:, 1::2], h[:, 0::2]

    def _write(self, dr, dt):
        """The cotangent of the network's output from those of r and t: the adjoint of :meth:`_read`."""
        if self.layout == "scale_shift":
            return np.concatenate([dr, dt], axis=1)
        if self.layout == "shift_scale":
            return np.concatenate([dt, dr], axis=1)
        N, K = dr.shape[:2]
        return np.stack([dt, dr], axis=2).reshape((N, 2 * K) + dr.shape[2:])

    def _params_of(self, params, x, xp):
        """``(u, raw, logs, t, net cache)`` at input x (or y: their conditioning halves are equal); in the
        checkerboard form logs and t are masked by m = 1 - b."""
        u = self._conditioner_input(x)
        h, nc = self.net.forward(params, u, xp)
        raw, t = self._read(h)
        logs = self._s(raw, xp, self.scale_bound)
        if self.mask == "checkerboard":
            m = self._masks(x)[1]
            logs, t = logs * m, t * m
        return u, raw, logs, t, nc

    def _affine(self, x, logs, t, xp, e=None):
        if self.shift_first:
            return mul_exp(x + t, logs, xp, e)
        return mul_exp(x, logs, xp, e) + t

    def _forward(self, params, x, xp):
        u, raw, logs, t, nc = self._params_of(params, x, xp)
        e = xp.exp(logs)
        if self.mask == "channel":
            xb = x[:, self._ib]
            y = self._merge(u, self._affine(xb, logs, t, xp, e), xp)
        else:
            xb = x
            y = self._affine(x, logs, t, xp, e)
        return y, xp.sum(logs, axis=(1, 2, 3)), (xb, raw, logs, t, e, nc)

    def _inverse(self, params, y, xp):
        u, _, logs, t, _ = self._params_of(params, y, xp)
        yb = y[:, self._ib] if self.mask == "channel" else y
        xb = mul_exp(yb, -logs, xp) - t if self.shift_first else mul_exp(yb - t, -logs, xp)
        x = self._merge(u, xb, xp) if self.mask == "channel" else xb
        return x, -xp.sum(logs, axis=(1, 2, 3))

    def _backward(self, params, dy, dlogdet, cache):
        xb, raw, logs, t, e, nc = cache
        dl = dlogdet.reshape((-1,) + (1,) * (dy.ndim - 1))
        if self.mask == "channel":
            dya, dyb = self._split_cotangent(dy)
        else:
            dya, dyb = None, dy
        dye = dyb * e                                           # the direct path, and Glow's dt
        ds = dye * (xb + t if self.shift_first else xb) + dl
        dr = self._ds(raw, logs, self.scale_bound)
        if dr is not None:
            ds *= dr
        dt = dye if self.shift_first else dyb
        if self.mask == "checkerboard":
            b, m = self._masks(dy)
            ds *= m
            dt = dt * m
        du, grads = self.net.backward(params, self._write(ds, dt), nc)
        if self.mask == "channel":
            return self._merge(dya + du, dye, np), grads
        return dye + b * du, grads

    def _explain(self, direction, params, x):
        if direction == "backward":
            return None
        h, _ = self.net.forward(params, self._conditioner_input(x), np)
        if not np.all(np.isfinite(h)):
            return (f"the conditioner network's output is not finite (the input reaches "
                    f"{float(np.max(np.abs(x))):.3g}); rescale the input")
        _, _, logs, _, _ = self._params_of(params, x, np)
        hint = ("use a bounded scale (scale='tanh' or 'softclip') or rescale the input" if self.scale == "exp"
                else "rescale the input")
        return explain_log_scale(self.name, logs, direction, hint)

    def __repr__(self):
        return (f"ImageAffineCoupling(event_shape={self.event_shape}, mask={self.mask!r}, parity={self.parity}, "
                f"scale={self.scale!r}, layout={self.layout!r}, shift_first={self.shift_first}, net={self.net!r})")
