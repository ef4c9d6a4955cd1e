"""Bijectors that rearrange the event without changing any value: reshape, and for images RealNVP's squeeze
(the multi-scale factoring that goes with it is :class:`~npflows.bijectors.multiscale.MultiScale`).

They are volume-preserving permutations of the event's entries, so their log-determinant is zero and their
backward rearranges the cotangent the way the inverse rearranges the values.
"""
import numpy as np

from .._checks import event_shape_of
from ..core.bijector import Bijector, zeros_logdet


class Reshape(Bijector):
    """``(N, *in_shape) -> (N, *out_shape)``, the entries in row-major (C) order: ``x.reshape(N, *out_shape)``.

    How vector data ``(N, 64)`` enters an image flow: ``Reshape(64, (1, 8, 8))`` puts the 8x8 image's rows
    one after another, as ``sklearn.datasets.load_digits().data`` stores them.

    Parameters
    ----------
    in_shape, out_shape : int or tuple of int
        The event shapes; their sizes must agree.

    Notes
    -----
    The Jacobian is the identity matrix on the flattened event (only the index labels change), so
    :math:`\\log|\\det J| = 0` and the vector-Jacobian product is the cotangent reshaped back.
    """

    def __init__(self, in_shape, out_shape):
        self._set_event_shape(in_shape, out_shape)
        self.in_shape, self.out_shape = self.event_shape, self.out_event_shape     # as constructed (describe)

    def _forward(self, params, x, xp):
        return xp.reshape(x, (x.shape[0],) + self.out_event_shape), zeros_logdet(x, xp), None

    def _forward_value(self, params, x, xp):
        return self._forward(params, x, xp)

    def _inverse(self, params, y, xp):
        return xp.reshape(y, (y.shape[0],) + self.event_shape), zeros_logdet(y, xp)

    def _backward(self, params, dy, dlogdet, cache):
        return np.reshape(dy, (dy.shape[0],) + self.event_shape), {}

    def __repr__(self):
        return f"Reshape({self.event_shape}, {self.out_event_shape})"


# Squeeze orders: out channel o(c, di, dj) of input channel c and position (di, dj) in the 2x2 block
SQUEEZE_ORDERS = ("channel_major", "space_to_depth", "checkerboard")
_CHECKER = np.array([0, 3, 1, 2])          # "checkerboard": slot k holds block position p = 2 di + dj = _CHECKER[k]
_CHECKER_INV = np.argsort(_CHECKER)        # ... and position p sits in slot _CHECKER_INV[p]


class Squeeze(Bijector):
    """RealNVP's squeeze (Dinh et al. 2017, arXiv:1605.08803, sec. 3.6): ``(N, C, H, W) -> (N, 4C, H/2, W/2)``,
    every 2x2 block of pixels becomes 4 channels of one pixel.  H and W must be even.

    Parameters
    ----------
    event_shape : tuple (C, H, W)
        The input event (H, W even; ``ValueError`` otherwise).
    order : {"channel_major", "space_to_depth", "checkerboard"}
        Which output channel ``o`` receives input channel ``c`` at block position ``(di, dj)`` (row and column
        inside the 2x2 block: ``x[c, 2i + di, 2j + dj] -> y[o, i, j]``):

        * ``"channel_major"`` (default): :math:`o = 4c + 2d_i + d_j`.  nflows' ``SqueezeTransform``,
          normflows' ``Squeeze`` (its ``inverse``: normflows' forward is the unsqueeze), RealNVP's own
          ``squeeze_2x2`` (``real_nvp_utils.py``), openai/glow's ``squeeze2d`` (NHWC: it reshapes to
          ``[N, H/2, 2, W/2, 2, C]`` and transposes to ``[N, H/2, W/2, C, 2, 2]`` before merging, so its
          channel index is also :math:`4c + 2d_i + d_j`) and PyTorch's ``pixel_unshuffle(x, 2)``;
        * ``"space_to_depth"``: :math:`o = (2d_i + d_j)C + c`: TensorFlow's ``tf.nn.space_to_depth`` ("the Y,
          X coordinates within each block become the high order component of the output channel index"), i.e.
          a plain NHWC reshape without Glow's transpose;
        * ``"checkerboard"``: :math:`o = k C + c` with :math:`k = 0, 1, 2, 3` for
          :math:`(d_i, d_j) = (0,0), (1,1), (0,1), (1,0)`: RealNVP's ``squeeze_2x2_ordered`` (its
          ``SQUEEZE_MATRIX`` followed by its channel shuffle), which its multi-scale code uses before
          factoring out half of the channels, so that the first 2C channels are the checkerboard's "white"
          squares (:math:`i + j` even) and the last 2C its "black" ones.

        For one channel the first two orders agree; they differ from C = 2 on.

    Notes
    -----
    The 4x4 single-channel image with its pixels numbered row by row, and its four output channels (2x2
    each, headed by the block position ``(di, dj)`` they hold) in the three orders::

        input (C = 1)    channel_major = space_to_depth         checkerboard
                         ch 0   ch 1   ch 2   ch 3         ch 0   ch 1   ch 2   ch 3
         0  1  2  3      (0,0)  (0,1)  (1,0)  (1,1)        (0,0)  (1,1)  (0,1)  (1,0)
         4  5  6  7
         8  9 10 11      0  2   1  3   4  6   5  7         0  2   5  7   1  3   4  6
        12 13 14 15      8 10   9 11  12 14  13 15         8 10  13 15   9 11  12 14

    With C = 2 (channels a and b) ``channel_major`` gives ``a00 a01 a10 a11 b00 b01 b10 b11`` (each input
    channel's four block positions together) and ``space_to_depth`` gives ``a00 b00 a01 b01 a10 b10 a11 b11``
    (each block position's C channels together); ``checkerboard`` gives ``a00 b00 a11 b11 a01 b01 a10 b10``.

    The map only relabels the entries of the event: on the flattened event its Jacobian is a permutation
    matrix :math:`P`, so :math:`|\\det J| = 1`, :math:`\\log|\\det J| = 0` (no parameters, and the logdet
    cotangent has nothing to reach).  The vector-Jacobian product is :math:`\\bar x = P^T\\bar y = P^{-1}\\bar y`:
    the cotangent is un-squeezed exactly as the inverse un-squeezes the values.

    The computation is a reshape to ``(N, C, H/2, 2, W/2, 2)`` (axes ``n, c, i, di, j, dj``) and a transpose:
    to ``(n, c, di, dj, i, j)`` for ``channel_major``; to ``(n, di, dj, c, i, j)`` for ``space_to_depth``;
    and for ``checkerboard`` the latter with its four block positions taken in the order (0,0), (1,1),
    (0,1), (1,0) (one gather on the block axis); then a reshape to ``(N, 4C, H/2, W/2)``.
    """

    def __init__(self, event_shape, order="channel_major"):
        if order not in SQUEEZE_ORDERS:
            raise ValueError(f"Squeeze: unknown order {order!r}; choose one of {list(SQUEEZE_ORDERS)}")
        shape = event_shape_of("Squeeze", event_shape)
        if len(shape) != 3:
            raise ValueError(f"Squeeze: the event shape must be (C, H, W), got {shape}")
        C, H, W = shape
        if H % 2 or W % 2:
            raise ValueError(f"Squeeze: the height and width must be even, got the event shape {shape}")
        self._set_event_shape(shape, (4 * C, H // 2, W // 2))
        self.order = order

    def _squeeze(self, x, xp):
        C, H, W = self.event_shape
        n, h, w = x.shape[0], H // 2, W // 2
        t = xp.reshape(x, (n, C, h, 2, w, 2))                  # n, c, i, di, j, dj
        if self.order == "channel_major":
            t = xp.transpose(t, (0, 1, 3, 5, 2, 4))            # n, c, di, dj, i, j
        else:
            t = xp.transpose(t, (0, 3, 5, 1, 2, 4))            # n, di, dj, c, i, j
            if self.order == "checkerboard":
                t = xp.reshape(t, (n, 4, C, h, w))[:, _CHECKER]
        return xp.reshape(t, (n, 4 * C, h, w))

    def _unsqueeze(self, y, xp):
        C, H, W = self.event_shape
        n, h, w = y.shape[0], H // 2, W // 2
        if self.order == "channel_major":
            t = xp.transpose(xp.reshape(y, (n, C, 2, 2, h, w)), (0, 1, 4, 2, 5, 3))
        else:
            t = xp.reshape(y, (n, 4, C, h, w))
            if self.order == "checkerboard":
                t = t[:, _CHECKER_INV]
            t = xp.transpose(xp.reshape(t, (n, 2, 2, C, h, w)), (0, 3, 4, 1, 5, 2))
        return xp.reshape(t, (n, C, H, W))

    def _forward(self, params, x, xp):
        return self._squeeze(x, xp), zeros_logdet(x, xp), None

    def _inverse(self, params, y, xp):
        return self._unsqueeze(y, xp), zeros_logdet(y, xp)

    def _backward(self, params, dy, dlogdet, cache):
        return self._unsqueeze(dy, np), {}

    def inverse_backward(self, params, dx, dlogdet, cache):
        """The VJP of the inverse (the un-squeeze), so that ``Inverse(Squeeze(...))`` is a full bijector: the
        un-squeeze's Jacobian is :math:`P^T`, its transpose :math:`P`, so the cotangent is squeezed."""
        return self._squeeze(dx, np), {}

    def __repr__(self):
        return f"Squeeze({self.event_shape}, order={self.order!r})"
