"""Bijectors that rearrange the event without changing any value: reshape (and, for images, squeeze and
the multi-scale factoring of RealNVP).

They are volume-preserving permutations of the event's entries, so their log-determinant is zero and their
backward rearranges the cotangent the way the inverse rearranges the values.
"""
import numpy as np

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
