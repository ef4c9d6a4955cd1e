"""Masked affine autoregressive bijector: MAF in a ``NormalizingFlow``, IAF in a ``PushForward``.

One bijector, two flows (see ``npflows.core.flows``):

* ``NormalizingFlow(maf(D), base)`` is MAF (Papamakarios et al. 2017, arXiv:1705.07057): the density of a
  data point is one parallel pass per layer, sampling is ``D`` sequential steps per layer.
* ``PushForward(maf(D), base)`` is IAF (Kingma et al. 2016, arXiv:1606.04934): a sample and its density are
  one parallel pass per layer, the density of a *new* point (``log_prob``) is ``D`` sequential steps.

A sequential inverse computes each unit of the network once, degree by degree (about one pass of
arithmetic in ``D`` small steps), not ``D`` full passes; see the class Notes.

The conditioner is a :class:`~npflows.nn.MADE` (Germain et al. 2015, arXiv:1502.03509).  The scale maps are
those of the affine coupling (:data:`npflows.bijectors.coupling.SCALES`), imported, not copied.
"""
import numpy as np

from ..core.bijector import Bijector
from ..core.compose import Sequential
from ..nn.made import HIDDEN_DEGREES, MADE
from .coupling import SCALES
from .elementwise import exp_range, explain_log_scale, mul_exp
from .linear import Permutation

UPDATES = ("affine", "gated")


class MaskedAffineAutoregressive(Bijector):
    """:math:`z = x\\odot e^{s(x)} + t(x)` with :math:`s_i, t_i` functions of :math:`x_{<i}` (in the order).

    Parameters
    ----------
    dim : int
        ``D``.
    hidden, activation, order, rng, hidden_degrees
        The conditioner :class:`~npflows.nn.MADE` (``k = 2``); ``order`` is ``"natural"``, ``"reversed"``,
        ``"random"`` (drawn from ``rng`` here, at construction) or an explicit permutation (coordinates
        first to last).  Its parameters are under ``"net."``.
    update : {"affine", "gated"}
        ``"affine"``: :math:`z = x e^{s} + t` with :math:`(r, t)` = MADE(x) and :math:`s = s(r)` by ``scale``.
        ``"gated"``: the IAF paper's update (Kingma et al. 2016, Algorithm 1),
        :math:`z = \\sigma\\odot x + (1-\\sigma)\\odot m` with :math:`\\sigma = \\mathrm{sigmoid}(r + c)`,
        :math:`(r, m)` = MADE(x) and the constant gate bias :math:`c` = ``gate_bias``.
    scale : {"exp", "tanh", "sigmoid", "softplus", "softclip", "logsigmoid", "neg_logsigmoid"}
        For ``update="affine"``: ``s = r``, ``s = b tanh(r)`` with ``b`` = ``scale_bound``,
        ``e^s = sigmoid(r + 2) + 1e-3`` (normflows' ``MaskedAffineAutoregressive``), ``e^s = softplus(r) + 1e-3``
        (nflows 0.14's ``MaskedAffineAutoregressiveTransform``; its scales are bounded below by 1e-3 and grow
        only linearly in r, so the inverse divides by at most 1e3), ``s = r / (1 + |r|/b)`` (zuko's soft clip:
        zuko's ``MAF`` as it ships is ``scale="softclip"`` with ``scale_bound = -log(1e-3)``,
        :data:`~npflows.bijectors.coupling.ZUKO_SOFTCLIP_BOUND`), ``e^s = sigmoid(r + 2)`` or
        ``e^s = 1/sigmoid(r + 2)``; the maps and their derivatives are those of :class:`~npflows.AffineCoupling`.
    gate_bias : float
        For ``update="gated"``: the paper's advice is to start with :math:`\\sigma` near 1 (``r + c`` "close
        to +1 or +2"), so each layer first changes its input only slightly; default 2.
    zero_init : bool
        Zero MADE's output layer: ``r = t = 0`` at initialisation (the identity map for "exp" and "tanh";
        :math:`z = \\mathrm{sigmoid}(c)\\,x` for "gated").
    context_dim : int, optional
        C: a conditional layer (conditional MAF; in a ``PushForward`` the IAF posterior conditioned on an
        encoder's context, Kingma et al. 2016, sec. 4): MADE also reads a context ``(N, C)`` (see Notes).

    Notes
    -----
    **Layout.**  MADE's output ``out`` ``(N, 2D)``: ``out[:, :D]`` is :math:`r` (the raw log-scale, or the
    gate's pre-activation) and ``out[:, D:]`` is :math:`t` (or the gate's target :math:`m`), both in the
    coordinates' original index order.  By MADE's masks, :math:`r_i, t_i` depend only on the
    :math:`x_l` of lower degree, :math:`m(l) < m(i)`.

    **Jacobian.**  Order the coordinates by degree.  :math:`\\partial z_i/\\partial x_l = 0` for
    :math:`m(l) > m(i)` (no dependence at all) and :math:`\\partial z_i/\\partial x_i = e^{s_i}` (the
    coefficients of coordinate ``i`` do not depend on :math:`x_i`), so in that order the Jacobian is lower
    triangular with diagonal :math:`e^{s}`, and

    .. math:: \\log|\\det \\partial z/\\partial x| = \\sum_i s_i(x).

    For the gated update :math:`z = x e^{s} + t` with :math:`s = \\log\\sigma`, :math:`t = (1-\\sigma)m`, so
    the logdet is :math:`\\sum_i\\log\\sigma_i` (Kingma et al. 2016, Algorithm 1).  It is computed stably as
    :math:`\\log\\sigma(u) = -\\log(1 + e^{-u})` (``logaddexp``) and :math:`1 - \\sigma(u) = e^{\\log\\sigma(u) - u}`,
    with :math:`u = r + c`.

    **Forward is one parallel pass**: all of :math:`r, t` come from one MADE evaluation on :math:`x`.

    **Inverse, the reference: D sequential passes.**  Solve :math:`x = (z - t(x))\\odot e^{-s(x)}` pass by
    pass: :math:`x^{(0)} = 0` and

    .. math:: x^{(p+1)}_i = (z_i - t_i(x^{(p)}))\\,e^{-s_i(x^{(p)})} \\text{ if } m(i) \\le p + 1,
              \\quad x^{(p+1)}_i = 0 \\text{ otherwise.}

    By induction on the degree, after pass ``p`` every coordinate of degree :math:`\\le p` is exact: its
    coefficients read only coordinates of lower degree, exact since an earlier pass, and exact values stay
    exact.  After ``D`` passes all are exact, and the :math:`s` of the last pass is :math:`s(x)` (it read the
    coordinates of degree :math:`\\le D-1`, all exact by then), so the inverse logdet is :math:`-\\sum_i s_i`
    without a further pass.  Fewer passes are not enough in general (:meth:`solve` exposes them).
    The coordinates not yet solved are held at 0 rather than updated with the rest (the plain fixed-point
    iteration from :math:`x^{(0)} = z`): their intermediate values would be garbage of any size (with log-scales
    of 15, :math:`e^{15}` times the answer, whose own log-scales then overflow :math:`e^{-s}`), and a masked
    weight times an infinite input is NaN, not 0.  Holding them at 0 changes no exact coordinate (they enter
    only through masked, zero weights), so MADE only ever sees solved coordinates and zeros; overflow in the
    discarded entries is ignored, and a solution that is itself not finite raises ``FloatingPointError``.

    **The same solve, each unit once** (the NumPy path of :meth:`inverse`; the traceable ``xp`` path is the
    reference above, :meth:`solve`).  Pass :math:`p+1` above recomputes every unit of MADE, but the only
    values it changes are those that read the coordinate of degree :math:`p+1`, just solved: a hidden unit of
    degree :math:`d` reads only coordinates of degree :math:`\\le d` (through the masks), so it takes its
    final value in pass :math:`d + 1` and keeps it.  :meth:`MADE.solve_by_degree` therefore computes, at
    step :math:`k = 0, \\dots, D-1`, the hidden units of degree :math:`k` (from final values) and then
    :math:`r_i, t_i` of the coordinate of degree :math:`m(i) = k+1` from the hidden units of degree
    :math:`\\le k`, exactly the values that pass :math:`k+1` of the reference uses for that coordinate, and
    sets

    .. math:: x_i = (z_i - t_i)\\,e^{-s_i}, \\qquad m(i) = k + 1,

    the reference's update of the one coordinate that the pass solves.  Each value is the same sum of the
    same products as in the reference, with the masked zeros left out and the terms grouped differently
    (by block), so the result agrees with the reference to rounding, not bitwise; the log-scales
    :math:`s_i` are those of the last pass, so the logdet is :math:`-\\sum_i s_i` as before.  The arithmetic is
    about one MADE pass instead of :math:`D`, and no cache is built.  No unsolved coordinate is ever read, so
    no garbage arises at all; the product :math:`(z_i - t_i)e^{-s_i}` is the plain one unless some
    :math:`e^{-s_i}` leaves the normal range, in which case the solve is repeated with ``mul_exp``'s exact
    form (as the reference uses everywhere).

    **Backward** for cotangents :math:`(\\bar z, \\bar\\ell)` (:math:`\\bar\\ell` per sample, broadcast over
    the coordinates), affine update, from :math:`z = x e^{s} + t`, :math:`\\ell = \\sum_i s_i`:

    * :math:`\\bar x \\mathrel{+}= \\bar z\\odot e^{s}` (the direct path, holding :math:`s, t` fixed);
    * :math:`\\bar s = \\bar z\\odot x\\odot e^{s} + \\bar\\ell` (the second term is the logdet path);
    * :math:`\\bar r = \\bar s\\odot s'(r)` (``SCALES``' derivative; 1 for "exp") and :math:`\\bar t = \\bar z`;
    * MADE's backward of :math:`[\\bar r, \\bar t]` gives its parameter gradients and the path of
      :math:`\\bar x` through the conditioner, added to the direct path.

    Gated update, from :math:`z = \\sigma x + (1-\\sigma) m`, :math:`\\ell = \\sum_i\\log\\sigma_i`,
    :math:`\\sigma = \\mathrm{sigmoid}(u)`, :math:`u = r + c`:

    * :math:`\\bar x \\mathrel{+}= \\bar z\\odot\\sigma`;
    * :math:`\\bar\\sigma = \\bar z\\odot(x - m)` (from :math:`\\partial z/\\partial\\sigma = x - m`);
    * :math:`\\bar u = \\bar\\sigma\\odot\\sigma(1-\\sigma) + \\bar\\ell\\,(1-\\sigma)`, using
      :math:`\\sigma' = \\sigma(1-\\sigma)` and :math:`(\\log\\sigma)' = 1 - \\sigma`; :math:`\\bar r = \\bar u`
      (the bias is a constant);
    * :math:`\\bar m = \\bar z\\odot(1-\\sigma)`; then MADE's backward of :math:`[\\bar r, \\bar m]` as above.

    **Conditional** (``context_dim=C``, a context :math:`c` ``(N, C)``).  MADE reads ``[x, c]`` with the
    context columns as inputs of degree 0 (:class:`~npflows.nn.MADE`, Notes, "Context"): every hidden unit of
    the first layer sees c, so :math:`r_i, t_i` are functions of :math:`(x_{<i}, c)` and even the first
    coordinate's depend on c.  For a fixed c nothing above changes: the Jacobian in x is triangular with
    diagonal :math:`e^{s}` (c is not transformed), the logdet is :math:`\\sum_i s_i`, and the inverse solves
    degree by degree with c held fixed (its term joins the first layer's bias in the by-degree solve).  In the
    backward, c enters only through MADE's output, whose cotangent :math:`[\\bar r, \\bar t]` (or
    :math:`[\\bar r, \\bar m]`) is formed above with the logdet path included; MADE's backward of it returns
    :math:`\\bar c`, the context columns of its input cotangent, beside the conditioner path of :math:`\\bar x`.
    """

    takes_context = True

    def __init__(self, dim, hidden=(64, 64), activation="relu", order="natural", rng=None, update="affine",
                 scale="exp", scale_bound=2.0, gate_bias=2.0, hidden_degrees="equal", zero_init=True,
                 context_dim=None):
        if update not in UPDATES:
            raise ValueError(f"MaskedAffineAutoregressive: unknown update {update!r}; choose one of {UPDATES}")
        if scale not in SCALES:
            raise ValueError(f"MaskedAffineAutoregressive: unknown scale {scale!r}; choose one of {list(SCALES)}")
        if update == "gated" and scale != "exp":
            raise ValueError("MaskedAffineAutoregressive: scale applies to update='affine' only; the gated "
                             f"update has its own sigmoid gate (got scale={scale!r})")
        if not scale_bound > 0:
            raise ValueError(f"MaskedAffineAutoregressive: scale_bound must be > 0, got {scale_bound}")
        if not np.isfinite(gate_bias):
            raise ValueError(f"MaskedAffineAutoregressive: gate_bias must be finite, got {gate_bias}")
        try:
            self.net = MADE(dim, 2, hidden, activation, order, rng, hidden_degrees, zero_last=zero_init,
                            prefix="net.", context_dim=context_dim)
        except ValueError as e:
            raise ValueError(f"MaskedAffineAutoregressive: {e}") from None
        self.dim, self.context_dim = self.net.dim, self.net.context_dim
        self.update, self.scale = update, scale
        self.scale_bound, self.gate_bias = float(scale_bound), float(gate_bias)   # python floats: no upcast
        self._s, self._ds = SCALES[scale]

    @property
    def order(self):
        """The coordinates first to last (MADE's order)."""
        return self.net.order

    def param_shapes(self):
        return self.net.param_shapes()

    def init(self, rng, x=None, dtype=np.float64):
        return self.net.init(rng, dtype=x.dtype if x is not None else dtype)

    # ------------------------------------------------------------------ the elementwise update
    def _coefficients(self, out, xp):
        """``(logs, t, aux)`` of the map ``z = x * exp(logs) + t`` from MADE's output ``out``."""
        D = self.dim
        return self._coefficients_of(out[:, :D], out[:, D:], xp)

    def _coefficients_of(self, r, b, xp):
        """``_coefficients`` from the two halves of MADE's output (any shape: elementwise)."""
        if self.update == "affine":
            logs = self._s(r, xp, self.scale_bound)
            return logs, b, (r,)
        u = r + self.gate_bias
        logs = -xp.logaddexp(0.0, -u)          # log sigmoid(u), stable for either sign of u
        sig, one_minus = xp.exp(logs), xp.exp(logs - u)
        return logs, one_minus * b, (b, sig, one_minus)

    def _forward(self, params, x, xp, context=None):
        out, nc = self.net.forward(params, x, xp, context)
        logs, t, aux = self._coefficients(out, xp)
        e = xp.exp(logs)
        z = mul_exp(x, logs, xp, e) + t
        return z, xp.sum(logs, axis=1), (x, logs, e, aux, nc)

    def solve(self, params, z, n_passes, xp=np, context=None):
        """The first ``n_passes`` passes of the sequential inverse: ``(x, logdet)``, exact on the
        coordinates of degree ``<= n_passes`` and 0 on the others (see Notes).  ``n_passes = D`` is the
        reference for :meth:`inverse` (without its finiteness check): its traceable path runs it, its NumPy
        path computes the same solve with each MADE unit once."""
        mp = self.net.masked_params(params, xp)
        x, logs = xp.zeros_like(z), None
        deg = self.net.degrees
        with np.errstate(over="ignore", invalid="ignore"):   # only in entries that are discarded or checked
            for p in range(1, int(n_passes) + 1):
                out, _ = self.net.apply(mp, x, xp, context)
                logs, t, _ = self._coefficients(out, xp)
                x_new = mul_exp(z - t, -logs, xp)
                x = x_new if p >= self.dim else xp.where(deg <= p, x_new, 0.0)   # unsolved ones stay 0
        if logs is None:
            return x, xp.zeros(z.shape[0], dtype=z.dtype)
        return x, -xp.sum(logs, axis=1)

    def _inverse(self, params, z, xp, context=None):
        if xp is not np:                                 # traceable: the reference D-pass solve
            return self.solve(params, z, self.dim, xp, context)
        return self._inverse_by_degree(params, z, context=context)   # the caller refuses a non-finite solution

    def _inverse_by_degree(self, params, z, block=None, context=None):
        """:meth:`solve` with ``n_passes = D``, each MADE unit computed once (NumPy only; see Notes);
        ``block``: :meth:`MADE.solve_by_degree`'s."""
        n, D = z.shape
        zt = np.ascontiguousarray(z.T)                   # rows: coordinates, in their index order
        logs = np.empty((D, n), z.dtype)                 # log-scales, by degree
        order, affine, exact = self.net.order, self.update == "affine", []

        def step(t, out, x_t):                           # out[0] = r, out[1] = t (or m) of coordinate order[t]
            if affine:
                logs[t], shift = self._s(out[0], np, self.scale_bound), out[1]
            else:
                logs[t], shift, _ = self._coefficients_of(out[0], out[1], np)
            np.subtract(zt[order[t]], shift, out=x_t)
            np.negative(logs[t], out=out[0])             # out[0] is scratch from here
            if exact:
                x_t[...] = mul_exp(x_t, out[0], np)
            else:                                        # mul_exp's own product where e^{-s} is normal
                x_t *= np.exp(out[0], out=out[0])

        x = self.net.solve_by_degree(params, step, n, z.dtype, block, context=context)
        lo, hi = exp_range(z.dtype)
        if logs.size and not (-logs.max() > lo and -logs.min() < hi):
            exact.append(True)                           # some e^{-s} is not normal: again, with mul_exp
            x = self.net.solve_by_degree(params, step, n, z.dtype, block, context=context)
        return x, -np.sum(logs, axis=0)

    def _explain(self, direction, params, x, context=None):
        if direction == "backward":
            return None
        if direction == "inverse":       # the log-scales of the first pass of the solve whose result overflows
            for n_passes in range(1, self.dim + 1):
                xk = self.solve(params, x, n_passes, np, context)[0]
                if not np.all(np.isfinite(xk)):
                    break
            x = self.solve(params, x, n_passes - 1, np, context)[0]
        logs = self._coefficients(self.net.forward(params, x, np, context)[0], np)[0]
        hint = ("use a bounded scale (scale='tanh' or 'softclip') or rescale the input"
                if self.update == "affine" and self.scale == "exp" else "rescale the input")
        return explain_log_scale(self.name, logs, direction, hint)

    def _backward(self, params, dz, dlogdet, cache):
        x, logs, e, aux, nc = cache
        dl = dlogdet[:, None]
        dx_direct = dz * e
        if self.update == "affine":
            (r,) = aux
            dr = dx_direct * x + dl                          # ds
            ds_dr = self._ds(r, logs, self.scale_bound)
            if ds_dr is not None:
                dr *= ds_dr
            dt = dz
        else:
            m, sig, one_minus = aux
            dsig = dz * (x - m)
            dr = (dsig * sig + dl) * one_minus               # du = dsig sig(1-sig) + dl (1-sig)
            dt = dz * one_minus                              # dm
        dnet, grads, *dcontext = self.net.backward(params, np.concatenate([dr, dt], axis=1), nc)
        dnet += dx_direct
        return dnet, grads, (dcontext[0] if dcontext else None)

    def __repr__(self):
        extra = f"scale={self.scale!r}" if self.update == "affine" else f"gate_bias={self.gate_bias}"
        return (f"MaskedAffineAutoregressive(dim={self.dim}, update={self.update!r}, {extra}, "
                f"order={self.order.tolist()}, hidden={self.net.hidden})")


def maf(dim, n_layers=5, hidden=(64, 64), activation="relu", order="alternate", rng=None, permutations=False,
        update="affine", scale="exp", scale_bound=2.0, gate_bias=2.0, hidden_degrees="equal", zero_init=True,
        context_dim=None):
    """A stack of ``n_layers`` :class:`MaskedAffineAutoregressive` layers: MAF in a ``NormalizingFlow``,
    IAF in a ``PushForward`` (the same bijector; see the module docstring).

    Parameters
    ----------
    order : {"alternate", "random"}
        ``"alternate"``: the order is reversed from one layer to the next (MAF's default, Papamakarios et
        al. 2017), so a coordinate that comes first in one layer comes last in the next.
        ``"random"``: an independent random order per layer, drawn from ``rng``.
    permutations : bool
        ``False``: each MADE gets its order directly (no extra layers).  ``True``: every MADE uses the
        natural order and a :class:`~npflows.Permutation` (reversing, or random) sits between consecutive
        layers, as in nflows.  The two are the same family of maps.
    rng : numpy.random.Generator, optional
        Required for ``order="random"`` or ``hidden_degrees="random"``.

    Other parameters are those of :class:`MaskedAffineAutoregressive` (``context_dim``: every layer
    conditional on the same context).  Parameters of layer ``i`` are under ``"i.net."``.
    """
    if order not in ("alternate", "random"):
        raise ValueError(f"maf: unknown order {order!r}; choose 'alternate' or 'random'")
    if int(n_layers) < 1:
        raise ValueError(f"maf: n_layers must be >= 1, got {n_layers}")
    if (order == "random" or hidden_degrees == "random") and not isinstance(rng, np.random.Generator):
        raise ValueError("maf: order='random' or hidden_degrees='random' needs rng, a numpy.random.Generator")
    if hidden_degrees not in HIDDEN_DEGREES:
        raise ValueError(f"maf: unknown hidden_degrees {hidden_degrees!r}; choose one of {HIDDEN_DEGREES}")
    kw = dict(hidden=hidden, activation=activation, rng=rng, update=update, scale=scale, scale_bound=scale_bound,
              gate_bias=gate_bias, hidden_degrees=hidden_degrees, zero_init=zero_init, context_dim=context_dim)
    layers = []
    for i in range(int(n_layers)):
        if permutations:
            if i > 0:
                layers.append(Permutation.reverse(dim) if order == "alternate" else Permutation.random(dim, rng))
            layers.append(MaskedAffineAutoregressive(dim, order="natural", **kw))
        else:
            o = ("natural" if i % 2 == 0 else "reversed") if order == "alternate" else "random"
            layers.append(MaskedAffineAutoregressive(dim, order=o, **kw))
    return Sequential(layers)
