"""Coupling layers: NICE's additive coupling and RealNVP's affine coupling, with any binary mask.

A binary ``mask`` splits the coordinates: where ``mask == 1`` they pass through unchanged (``x1``) and
condition an MLP; where ``mask == 0`` they are transformed (``x2``) by a map whose parameters the MLP
computes from ``x1``.

**Conditional couplings** (``context_dim=C``): the MLP reads ``[x1, context]`` (nflows' and zuko's coupling
conditioners concatenate the context to their input the same way), so the transform's parameters are
functions of :math:`(x_1, c)`.  The Jacobian in x keeps its structure (the context is not transformed), so
the log-determinant is the same formula; the backward gains the context's cotangent, which is the context
part of the MLP's input cotangent for the same output cotangents (:class:`~npflows.nn.MLP`, Notes).
"""
import math

import numpy as np

from ..core.bijector import Bijector, zeros_logdet
from ..core.compose import Sequential
from ..nn.mlp import MLP
from .elementwise import ActNorm, ElementwiseAffine, explain_log_scale, mul_exp, sigmoid, sigmoid_prime


def half_mask(dim, first=True):
    """``[1]*ceil(D/2) + [0]*floor(D/2)`` (or its complement): the first half conditions the second."""
    m = np.arange(dim) < (dim + 1) // 2
    return (m if first else ~m).astype(np.int8)


def alternating_mask(dim, even=True):
    """``[1, 0, 1, 0, ...]`` (or its complement): even coordinates condition odd ones."""
    m = np.arange(dim) % 2 == 0
    return (m if even else ~m).astype(np.int8)


def _as_index(idx):
    """A slice when the indices are contiguous (a view, no copy), else the index array."""
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0] + idx.size))
    return idx


class _Coupling(Bijector):
    """Shared structure: the mask, the split and merge of coordinates, and the conditioner MLP (conditional on
    a context ``(N, context_dim)`` when ``context_dim`` is set)."""

    n_params_per_dim = 1
    takes_context = True

    def __init__(self, mask, hidden=(64, 64), activation="relu", zero_init=True, context_dim=None):
        mask = np.asarray(mask)
        if mask.ndim != 1 or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"{self.name}: mask must be a 1-D array of 0s and 1s, got {mask!r}")
        mask = mask.astype(bool)
        if mask.all() or not mask.any():
            raise ValueError(f"{self.name}: mask must have both 1s (conditioning) and 0s (transformed)")
        self.mask, self.dim = mask, mask.size
        idx1, idx2 = np.flatnonzero(mask), np.flatnonzero(~mask)
        self.d1, self.d2 = idx1.size, idx2.size
        self._i1, self._i2 = _as_index(idx1), _as_index(idx2)
        order = np.concatenate([idx1, idx2])
        self._merge = None if np.array_equal(order, np.arange(self.dim)) else np.argsort(order)
        try:
            self.net = MLP(self.d1, self.n_params_per_dim * self.d2, hidden, activation,
                           zero_last=zero_init, prefix="net.", context_dim=context_dim)
        except ValueError as e:
            raise ValueError(f"{self.name}: {e}") from None
        self.context_dim = self.net.context_dim

    def _net_backward(self, params, dout, cache):
        """The MLP's backward as ``(dx1, grads, dcontext)`` (``dcontext`` None for an unconditional layer)."""
        out = self.net.backward(params, dout, cache)
        return out if len(out) == 3 else (out[0], out[1], None)

    def param_shapes(self):
        return self.net.param_shapes()

    def init(self, rng, x=None, dtype=np.float64):
        return self.net.init(rng, dtype=x.dtype if x is not None else dtype)

    def _split(self, x):
        return x[:, self._i1], x[:, self._i2]

    def _join(self, a, b, xp):
        c = xp.concatenate([a, b], axis=1)
        return c if self._merge is None else c[:, self._merge]

    def __repr__(self):
        return f"{self.name}(mask={self.mask.astype(int).tolist()}, net={self.net!r})"


class AdditiveCoupling(_Coupling):
    """NICE's additive coupling (Dinh et al. 2014, arXiv:1410.8516): :math:`y_1 = x_1`,
    :math:`y_2 = x_2 + t(x_1)` with ``t`` an MLP.  Volume preserving.

    Notes
    -----
    :math:`J = \\begin{pmatrix} I & 0 \\\\ \\partial t/\\partial x_1 & I\\end{pmatrix}` (in split order) is
    unit triangular, so :math:`\\log|\\det J| = 0` exactly.  Backward: :math:`\\bar x_2 = \\bar y_2`,
    :math:`\\bar t = \\bar y_2`, and :math:`\\bar x_1 = \\bar y_1 + \\bar t\\,\\partial t/\\partial x_1` from the
    MLP's backward.  Inverse: :math:`x_2 = y_2 - t(y_1)`.

    Conditional (``context_dim=C``): :math:`t = t(x_1, c)`; the same MLP backward of :math:`\\bar t` gives
    :math:`\\bar c = \\bar t\\,\\partial t/\\partial c` (its context columns), the only path from c.
    """

    def __init__(self, mask, hidden=(64, 64), activation="relu", zero_init=True, context_dim=None):
        super().__init__(mask, hidden, activation, zero_init, context_dim)

    def _forward(self, params, x, xp, context=None):
        x1, x2 = self._split(x)
        t, nc = self.net.forward(params, x1, xp, context)
        return self._join(x1, x2 + t, xp), zeros_logdet(x, xp), nc

    def _inverse(self, params, y, xp, context=None):
        y1, y2 = self._split(y)
        t, _ = self.net.forward(params, y1, xp, context)
        return self._join(y1, y2 - t, xp), zeros_logdet(y, xp)

    def _backward(self, params, dy, dlogdet, cache):
        dy1, dy2 = self._split(dy)
        dx1, grads, dcontext = self._net_backward(params, dy2, cache)
        return self._join(dy1 + dx1, dy2, np), grads, dcontext


# ----------------------------------------------------------------------------- scale parameterisations
# Each maps the raw conditioner output r to the log-scale s(r) and gives ds/dr (None means 1).

def _scale_exp(raw, xp, bound):
    return raw


def _dscale_exp(raw, logs, bound):
    return None


def _scale_tanh(raw, xp, bound):
    return bound * xp.tanh(raw)


def _dscale_tanh(raw, logs, bound):
    # c (1 - tanh^2 r) = c / cosh^2 r = 4c e / (1 + e)^2 with e = exp(-2|r|) in (0, 1]: no cancellation
    # when tanh saturates (1 - th^2 from a rounded th keeps ~3 digits at |r| = 15) and no overflow.
    e = np.exp(-2.0 * np.abs(raw))
    return (4.0 * bound) * e / ((1.0 + e) * (1.0 + e))


def _scale_sigmoid(raw, xp, bound):
    return xp.log(sigmoid(raw + 2.0, xp) + 1e-3)


def _dscale_sigmoid(raw, logs, bound):
    # d/dr log(sigma(u) + 1e-3) = sigma'(u) / (sigma(u) + 1e-3), u = r + 2; sigma' = e/(1 + e)^2 with
    # e = exp(-|u|) keeps its digits in both tails (sigma (1 - sigma) loses them above u ~ 10).
    u = raw + 2.0
    return sigmoid_prime(u) / (sigmoid(u) + 1e-3)


def _scale_softplus(raw, xp, bound):
    return xp.log(xp.logaddexp(0.0, raw) + 1e-3)


def _dscale_softplus(raw, logs, bound):
    # d/dr log(softplus(r) + 1e-3) = sigma(r) / (softplus(r) + 1e-3); both factors accurate in both tails
    return sigmoid(raw) / (np.logaddexp(0.0, raw) + 1e-3)


def _scale_softclip(raw, xp, bound):
    return raw / (1.0 + xp.abs(raw) / bound)


def _dscale_softclip(raw, logs, bound):
    # d/dr r/(1 + |r|/c) = 1/(1 + |r|/c)^2 (both signs; 1 at r = 0): a ratio of positive terms, no
    # cancellation, and it tends to 0 without overflow (c/(c + |r|))^2 for |r| up to the float maximum
    q = bound / (bound + np.abs(raw))
    return q * q


def _scale_logsigmoid(raw, xp, bound):
    return -xp.logaddexp(0.0, -(raw + 2.0))            # log sigma(r + 2), either sign


def _dscale_logsigmoid(raw, logs, bound):
    return sigmoid(-(raw + 2.0))                        # (log sigma)'(u) = 1 - sigma(u) = sigma(-u)


def _scale_neg_logsigmoid(raw, xp, bound):
    return xp.logaddexp(0.0, -(raw + 2.0))             # -log sigma(r + 2) = softplus(-(r + 2))


def _dscale_neg_logsigmoid(raw, logs, bound):
    return -sigmoid(-(raw + 2.0))


SCALES = {"exp": (_scale_exp, _dscale_exp), "tanh": (_scale_tanh, _dscale_tanh),
          "sigmoid": (_scale_sigmoid, _dscale_sigmoid), "softplus": (_scale_softplus, _dscale_softplus),
          "softclip": (_scale_softclip, _dscale_softclip), "logsigmoid": (_scale_logsigmoid, _dscale_logsigmoid),
          "neg_logsigmoid": (_scale_neg_logsigmoid, _dscale_neg_logsigmoid)}

#: zuko's default ``slope = 1e-3`` as ``scale_bound`` of ``scale="softclip"``: ``c = -log(1e-3) = 3 log 10``.
ZUKO_SOFTCLIP_BOUND = -math.log(1e-3)


class AffineCoupling(_Coupling):
    """RealNVP's affine coupling (Dinh et al. 2016, arXiv:1605.08803, eq. 4-6):
    :math:`y_1 = x_1`, :math:`y_2 = x_2 \\odot e^{s} + t` with :math:`(r, t) = \\mathrm{MLP}(x_1)`.

    Parameters
    ----------
    mask : array of 0/1, shape (D,)
        1 = passes through and conditions, 0 = transformed.
    hidden, activation : conditioner MLP widths and activation.
    scale : {"exp", "tanh", "sigmoid", "softplus", "softclip", "logsigmoid", "neg_logsigmoid"}
        How the raw output r becomes the log-scale s:

        * ``"exp"``: :math:`s = r` (RealNVP);
        * ``"tanh"``: :math:`s = c\\tanh(r)`, bounded by :math:`c` = ``scale_bound`` (stabilises training);
        * ``"sigmoid"``: :math:`e^{s} = \\sigma(r + 2) + 10^{-3}` (nflows' ``AffineCouplingTransform``);
        * ``"softplus"``: :math:`e^{s} = \\mathrm{softplus}(r) + 10^{-3}` (nflows'
          ``MaskedAffineAutoregressiveTransform``): scales in :math:`(10^{-3}, \\infty)`, growing only
          linearly in r;
        * ``"softclip"``: :math:`s = r/(1 + |r|/c)`, :math:`c` = ``scale_bound``: zuko's soft clip
          (``MonotonicAffineTransform``, ``slope`` :math:`= e^{-c}`; zuko's default ``slope=1e-3`` is
          :math:`c = 3\\log 10 \\approx 6.908`, :data:`ZUKO_SOFTCLIP_BOUND`): linear near 0, bounded by
          :math:`c` like ``"tanh"`` but approaching it only algebraically;
        * ``"logsigmoid"``: :math:`e^{s} = \\sigma(r + 2)`, scales in (0, 1) (normflows'
          ``AffineCoupling(scale_map="sigmoid_inv")``; the sigmoid scale of Glow's coupling,
          Kingma & Dhariwal 2018, arXiv:1807.03039);
        * ``"neg_logsigmoid"``: :math:`e^{s} = 1/\\sigma(r + 2)`, scales in :math:`(1, \\infty)` (normflows'
          ``AffineCoupling(scale_map="sigmoid")``, which divides by :math:`\\sigma(r + 2)`).
    scale_bound : float
        :math:`c` of ``"tanh"`` and ``"softclip"``; ignored by the other scales.
    zero_init : bool
        Zero the MLP's last layer, so r = t = 0 at initialisation (the identity map for "exp" and "tanh").
    context_dim : int, optional
        C: a conditional coupling, :math:`(r, t) = \\mathrm{MLP}(x_1, c)` for a context ``(N, C)`` (see Notes).

    Notes
    -----
    The MLP's output has ``2 * d2`` columns: ``[:, :d2]`` is r and ``[:, d2:]`` is t.
    In split order :math:`J = \\begin{pmatrix} I & 0 \\\\ \\ast & \\mathrm{diag}(e^{s})\\end{pmatrix}`,
    triangular, so :math:`\\log|\\det J| = \\sum_j s_j(x_1)` per sample.

    Backward for :math:`(\\bar y, \\bar\\ell)`:

    * :math:`\\bar x_2 = \\bar y_2 \\odot e^{s}`;
    * :math:`\\bar s = \\bar y_2\\odot x_2\\odot e^{s} + \\bar\\ell` (the second term is the logdet path);
    * :math:`\\bar r = \\bar s\\odot s'(r)` and :math:`\\bar t = \\bar y_2`;
    * :math:`\\bar x_1 = \\bar y_1 + ` the MLP's backward of :math:`[\\bar r, \\bar t]`.

    :math:`s'(r)` of each scale map (``SCALES``), in forms that keep their digits where the map saturates:

    * ``"exp"``: 1;
    * ``"tanh"``: :math:`c(1 - \\tanh^2 r) = c/\\cosh^2 r = 4c\\,q/(1+q)^2` with :math:`q = e^{-2|r|}`
      (``1 - th**2`` from a rounded ``th`` cancels: ~3 digits left at :math:`|r| = 15`);
    * ``"sigmoid"``: :math:`s = \\log(\\sigma(u) + 10^{-3})`, :math:`u = r + 2`, so
      :math:`s' = \\sigma'(u)/(\\sigma(u) + 10^{-3})` with :math:`\\sigma'(u) = q/(1+q)^2`, :math:`q = e^{-|u|}`
      (:func:`~npflows.bijectors.elementwise.sigmoid_prime`);
    * ``"softplus"``: :math:`s = \\log(\\mathrm{softplus}(r) + 10^{-3})` and
      :math:`\\mathrm{softplus}' = \\sigma`, so :math:`s' = \\sigma(r)/(\\mathrm{softplus}(r) + 10^{-3})`
      (softplus by ``logaddexp(0, r)``, :math:`\\sigma` by :func:`~npflows.bijectors.elementwise.sigmoid`:
      both keep their digits for r of either sign);
    * ``"softclip"``: for :math:`r \\ge 0`, :math:`s = rc/(c + r)` and :math:`s' = c^2/(c + r)^2`; for
      :math:`r < 0` the same with :math:`-r` (s is odd), so :math:`s' = (c/(c + |r|))^2` for every r: positive
      terms only, no cancellation or overflow however far the clip saturates (:math:`s'` is continuous at
      0, where it is 1; :math:`s''` jumps there, which no first derivative sees);
    * ``"logsigmoid"``: :math:`s = \\log\\sigma(u) = -\\mathrm{softplus}(-u)`, :math:`u = r + 2`, and
      :math:`s' = 1 - \\sigma(u) = \\sigma(-u)` (computed as :math:`\\sigma(-u)`, accurate in both tails, not as
      the cancelling :math:`1 - \\sigma(u)`);
    * ``"neg_logsigmoid"``: :math:`s = \\mathrm{softplus}(-u)`, :math:`s' = -\\sigma(-u)`.

    Inverse: :math:`x_2 = (y_2 - t(y_1))\\odot e^{-s(y_1)}`, logdet :math:`-\\sum_j s_j`.

    **Conditional** (``context_dim=C``, a context :math:`c` ``(N, C)``): :math:`(r, t) = \\mathrm{MLP}([x_1, c])`.
    For a fixed c the map of x is the coupling above, so the Jacobian and logdet are unchanged
    (:math:`\\partial y/\\partial c` is not part of the Jacobian: c is not transformed).  The context enters only
    through :math:`(r, t)`, whose cotangents :math:`[\\bar r, \\bar t]` the backward has already formed (the
    logdet path included), so the MLP's backward of the same :math:`[\\bar r, \\bar t]` returns
    :math:`\\bar c = [\\bar r, \\bar t]\\,\\partial(r, t)/\\partial c` beside :math:`\\bar x_1`.
    """

    n_params_per_dim = 2

    def __init__(self, mask, hidden=(64, 64), activation="relu", scale="exp", scale_bound=2.0, zero_init=True,
                 context_dim=None):
        if scale not in SCALES:
            raise ValueError(f"AffineCoupling: unknown scale {scale!r}; choose one of {list(SCALES)}")
        if not scale_bound > 0:
            raise ValueError(f"AffineCoupling: scale_bound must be > 0, got {scale_bound}")
        super().__init__(mask, hidden, activation, zero_init, context_dim)
        self.scale, self.scale_bound = scale, float(scale_bound)
        self._s, self._ds = SCALES[scale]

    def _params_of(self, params, x1, xp, context=None):
        out, nc = self.net.forward(params, x1, xp, context)
        raw, t = out[:, :self.d2], out[:, self.d2:]
        return raw, self._s(raw, xp, self.scale_bound), t, nc

    def _forward(self, params, x, xp, context=None):
        x1, x2 = self._split(x)
        raw, logs, t, nc = self._params_of(params, x1, xp, context)
        e = xp.exp(logs)
        y = self._join(x1, mul_exp(x2, logs, xp, e) + t, xp)
        return y, xp.sum(logs, axis=1), (x2, raw, logs, e, nc)

    def _inverse(self, params, y, xp, context=None):
        y1, y2 = self._split(y)
        _, logs, t, _ = self._params_of(params, y1, xp, context)
        return self._join(y1, mul_exp(y2 - t, -logs, xp), xp), -xp.sum(logs, axis=1)

    def _explain(self, direction, params, x, context=None):
        if direction == "backward":
            return None
        _, logs, _, _ = self._params_of(params, self._split(x)[0], np, context)
        hint = ("use a bounded scale (scale='tanh' or 'softclip') or rescale the input" if self.scale == "exp"
                else "rescale the input")
        return explain_log_scale(self.name, logs, direction, hint)

    def _backward(self, params, dy, dlogdet, cache):
        x2, raw, logs, e, nc = cache
        dy1, dy2 = self._split(dy)
        dy2e = dy2 * e
        ds = dy2e * x2 + dlogdet[:, None]
        dr = self._ds(raw, logs, self.scale_bound)
        if dr is not None:
            ds *= dr
        dx1, grads, dcontext = self._net_backward(params, np.concatenate([ds, dy2], axis=1), nc)
        return self._join(dy1 + dx1, dy2e, np), grads, dcontext

    def __repr__(self):
        return (f"AffineCoupling(mask={self.mask.astype(int).tolist()}, scale={self.scale!r}, "
                f"net={self.net!r})")


def _masks(dim, n_layers, mask):
    if mask not in ("half", "alternating"):
        raise ValueError(f"unknown mask {mask!r}; choose 'half' or 'alternating'")
    make = half_mask if mask == "half" else alternating_mask
    return [make(dim, i % 2 == 0) for i in range(n_layers)]


def realnvp(dim, n_layers=8, hidden=(64, 64), activation="relu", scale="exp", mask="half",
            actnorm=False, scale_bound=2.0, context_dim=None):
    """A RealNVP bijector: ``n_layers`` affine couplings whose masks alternate, so every coordinate is
    transformed every other layer; optionally an :class:`ActNorm` before each coupling.  ``context_dim``:
    every coupling conditional on the same context ``(N, context_dim)``.

    For D = 2 with ``mask="half"``, each conditioner is an MLP ``1 -> hidden -> 2``.
    """
    layers = []
    for m in _masks(dim, n_layers, mask):
        if actnorm:
            layers.append(ActNorm(dim))
        layers.append(AffineCoupling(m, hidden, activation, scale, scale_bound, context_dim=context_dim))
    return Sequential(layers)


def nice(dim, n_layers=4, hidden=(64, 64), activation="relu", mask="half", context_dim=None):
    """NICE (Dinh et al. 2014): ``n_layers`` additive couplings with alternating masks, then the diagonal
    scaling layer that lets the volume change (``context_dim``: conditional couplings)."""
    layers = [AdditiveCoupling(m, hidden, activation, context_dim=context_dim) for m in _masks(dim, n_layers, mask)]
    return Sequential(layers + [ElementwiseAffine(dim, shift=False)])
