"""The multi-scale architecture of RealNVP and Glow: :class:`MultiScale`, a chain of stages that factors half
of the channels out after every stage but the last, and puts every scale's latents out as one flat vector;
and the builders :func:`realnvp_multiscale` and :func:`glow`.
"""
import numpy as np

from .._checks import check_event, event_shape_of
from ..core.bijector import ERRORS, Bijector, in_layer
from ..core.compose import Inverse, Sequential, prefixed
from .conv import ActNorm2d, Invertible1x1Conv, LUInvertible1x1Conv
from .image_coupling import ImageAffineCoupling
from .reshape import Reshape, Squeeze

FACTOR_OUT = ("first", "second")


class MultiScale(Bijector):
    """RealNVP's multi-scale architecture (Dinh et al. 2017, arXiv:1605.08803, sec. 3.6; Glow's, Kingma &
    Dhariwal 2018, arXiv:1807.03039, fig. 2b): stage ``s`` maps its input event to ``(C_s, H_s, W_s)``;
    after every stage but the last, half of its output channels are factored out (they go straight to the
    output) and the other half is the next stage's input.

    ``forward`` puts out ONE flat vector per sample, shape ``(N, D)``: the factored-out latents of every
    scale, each flattened row-major, in the order of the stages, then the last stage's output flattened.  A
    plain ``StandardNormal(D)`` base therefore scores every scale at once, and
    ``NormalizingFlow.sample(..., temperature=T)`` draws all scales at temperature T.  :meth:`latents` splits
    a flat ``z`` back into the per-scale arrays (shapes :attr:`latent_shapes`), :meth:`from_latents` joins
    them.  (nflows' ``MultiscaleCompositeTransform`` has the same flat layout.)

    Parameters
    ----------
    stages : list of Bijector
        Stage ``s`` has an ``event_shape`` and an ``out_event_shape``; the channel axis is the first axis of
        the event (images ``(C, H, W)``; a vector event ``(D,)`` is split on its only axis).  Stage ``s + 1``
        must take exactly the part of stage ``s``'s output that is kept.  Any bijector can be a stage (a
        ``Sequential`` of couplings and a squeeze, a single layer, ...).
    factor_out : {"first", "second"}
        Which half of stage ``s``'s ``C_s`` output channels is factored out:

        * ``"first"`` (default): the first ``ceil(C_s/2)``, the last ``floor(C_s/2)`` go on (nflows'
          ``MultiscaleCompositeTransform``, ``torch.chunk(y, 2, dim=1)``: its first chunk is put out);
        * ``"second"``: the first ``floor(C_s/2)`` go on and the last ``ceil(C_s/2)`` are factored out (openai
          Glow's ``split2d``: ``z1 = z[..., :n//2]`` goes on, ``z2`` is scored; normflows'
          ``MultiscaleFlow`` with ``Merge(mode="channel")`` for an even ``C_s`` only, since its split keeps
          ``ceil(C_s/2)``; RealNVP's own code, which goes on with the first
          half of its checkerboard-ordered squeeze, see :class:`~npflows.bijectors.reshape.Squeeze`).

    Parameters of stage ``s`` appear under the key prefix ``"s."`` (``"1.3.net.W0"``), as in ``Sequential``.

    Attributes
    ----------
    latent_shapes : list of tuple
        The shape of each scale's part of the output: the factored-out ``(n_out_s, H_s, W_s)`` of every stage
        but the last, then the last stage's ``out_event_shape``.

    Notes
    -----
    **The map.**  With :math:`h_0 = x` and for :math:`s = 0, \\dots, S-1`:

    .. math:: y_s = f_s(h_s), \\qquad (o_s, h_{s+1}) = \\mathrm{split}(y_s) \\ (s < S-1), \\qquad
              o_{S-1} = y_{S-1},

    and :math:`z = (\\mathrm{vec}\\,o_0, \\dots, \\mathrm{vec}\\,o_{S-1})`.  ``split`` takes a block of
    channels out (``factor_out``); ``vec`` is the row-major flattening.

    **The log-determinant.**  Write the map as a composition of maps of the whole vector:
    :math:`F = G_{S-1}\\circ\\dots\\circ G_0`, where :math:`G_s` leaves the already factored
    :math:`o_0, \\dots, o_{s-1}` alone and applies :math:`f_s` to :math:`h_s` followed by the split.  A split,
    a flattening and a concatenation only relabel coordinates (permutation matrices, :math:`|\\det| = 1`), and
    :math:`G_s` acts as :math:`I \\oplus f_s` (block diagonal), so :math:`\\det J_{G_s} = \\pm\\det J_{f_s}(h_s)`
    and, by the product rule for determinants,

    .. math:: \\log|\\det \\partial z/\\partial x| = \\sum_s \\log|\\det J_{f_s}(h_s)|,

    the sum of the stages' own logdets.  (Equivalently: in the order :math:`(o_0, o_1, \\dots)` the Jacobian
    is block lower triangular, since :math:`o_s` depends on :math:`x` only through :math:`h_s`.)

    **The backward** for cotangents :math:`(\\bar z, \\bar\\ell)` of the objective
    :math:`\\langle\\bar z, z\\rangle + \\langle\\bar\\ell, \\log|\\det|\\rangle`:

    * :math:`\\bar o_s` = the slice of :math:`\\bar z` at scale ``s``, reshaped to ``latent_shapes[s]``
      (the adjoint of flatten-and-concatenate is slice-and-reshape);
    * the last stage gets :math:`\\bar y_{S-1} = \\bar o_{S-1}`;
    * every stage gets the same logdet cotangent :math:`\\bar\\ell` (the logdet is a plain sum of the
      stages', :math:`\\partial\\log|\\det|/\\partial\\ell_s = 1`);
    * stage ``s``'s backward returns :math:`\\bar h_s` and its parameter cotangents (keys prefixed ``"s."``);
    * :math:`\\bar y_s = \\mathrm{join}(\\bar o_s, \\bar h_{s+1})`: :math:`y_s` reaches the objective through
      :math:`o_s` (directly in :math:`z`) and through :math:`h_{s+1}` (through the later stages), and the split
      partitions its channels, so its cotangent is the two partial cotangents put back on the channels the
      split took them from (the adjoint of the split is the concatenation, the split's own inverse);
    * :math:`\\bar x = \\bar h_0`.

    **The inverse** takes the pieces of :math:`z` back: :math:`y_{S-1} = o_{S-1}`, :math:`h_s = f_s^{-1}(y_s)`
    and :math:`y_{s-1} = \\mathrm{join}(o_{s-1}, h_s)`, down to :math:`x = h_0`; its logdet is the sum of the
    stages' inverse logdets.

    Glow's learned prior for the factored-out half (its ``split2d_prior``: a zero-initialised convolution
    of the kept half predicting the factored half's mean and log-scale) is not part of this layer; here every
    scale's latents are scored by the one base distribution.
    """

    def __init__(self, stages, factor_out="first"):
        self.stages = list(stages)
        if not self.stages:
            raise ValueError("MultiScale: needs at least one stage")
        if factor_out not in FACTOR_OUT:
            raise ValueError(f"MultiScale: factor_out must be one of {list(FACTOR_OUT)}, got {factor_out!r}")
        self.factor_out = factor_out
        last = len(self.stages) - 1
        for i, b in enumerate(self.stages):
            if not isinstance(b, Bijector):
                raise ValueError(f"MultiScale: stage {i} is a {type(b).__name__}, not a bijector")
            if b.event_shape is None or b.out_event_shape is None:
                raise ValueError(f"MultiScale: stage {i} ({b.name}) states no event shape; a multi-scale stage "
                                 f"needs one (build it with its dim or its (C, H, W))")
        shapes, n_out = [], []
        for i, b in enumerate(self.stages):
            out = b.out_event_shape
            if i == last:
                shapes.append(out)
                continue
            C = out[0]
            if C < 2:
                raise ValueError(f"MultiScale: stage {i} ({b.name}) puts out {C} channel(s) (event {out}); "
                                 f"half of them cannot be factored out")
            k = C - (C + 1) // 2 if factor_out == "first" else C // 2     # channels kept: floor(C/2) either way
            keep = (k,) + out[1:]
            nxt = self.stages[i + 1]
            if nxt.event_shape != keep:
                raise ValueError(f"MultiScale: stage {i + 1} ({nxt.name}) takes events of shape {nxt.event_shape}, "
                                 f"but stage {i} ({b.name}) keeps {keep} of its output {out} (the {factor_out} "
                                 f"half factored out)")
            shapes.append((C - k,) + out[1:])
            n_out.append(C - k)
        self.latent_shapes = shapes
        self._n_out = n_out
        self._sizes = [int(np.prod(s)) for s in shapes]
        self._bounds = np.concatenate([[0], np.cumsum(self._sizes)]).tolist()
        self._set_event_shape(self.stages[0].event_shape, self._bounds[-1])
        self._keys = [[(f"{i}.{k}", k) for k in b.param_shapes()] for i, b in enumerate(self.stages)]
        # (forward, inverse): may the stage's input check be skipped? Only where it is the generic one, which
        # this layer's own input check, or the previous stage's checked output (a slice of it), already did
        self._trusted = [(b._trusts_container("forward"), b._trusts_container("inverse")) for b in self.stages]

    def __len__(self):
        return len(self.stages)

    def __getitem__(self, i):
        return self.stages[i]

    # ------------------------------------------------------------------ structure
    def param_shapes(self):
        out = {}
        for i, b in enumerate(self.stages):
            out.update(prefixed(f"{i}.", b.param_shapes()))
        return out

    def _sub(self, params, i):
        return {k: params[fk] for fk, k in self._keys[i]}

    def _where(self, i, direction):
        return f"{self.name} stage {i} ({self.stages[i].name}) {direction}"

    def _split(self, y, i):
        """``(factored-out part, kept part)`` of stage ``i``'s output ``y`` (channels on axis 1)."""
        m = self._n_out[i]
        if self.factor_out == "first":
            return y[:, :m], y[:, m:]
        k = y.shape[1] - m
        return y[:, k:], y[:, :k]

    def _join(self, out, keep, xp):
        """The inverse of :meth:`_split`: the two parts back on the channel axis."""
        return xp.concatenate([out, keep] if self.factor_out == "first" else [keep, out], axis=1)

    def _pieces(self, z, xp):
        """The flat ``z`` (N, D) as the list of per-scale arrays ``(N, *latent_shapes[s])``."""
        n, b = z.shape[0], self._bounds
        return [xp.reshape(z[:, b[s]:b[s + 1]], (n,) + shape) for s, shape in enumerate(self.latent_shapes)]

    # ------------------------------------------------------------------ latents per scale
    def latents(self, z):
        """The flat output ``z`` of shape ``(N, D)`` as a list of per-scale arrays, scale ``s`` of shape
        ``(N, *latent_shapes[s])`` (views of ``z``, no copy): the factored-out half of every stage, then the
        last stage's output."""
        check_event(f"{self.name}.latents", z, self.out_event_shape, what="flat latent z")
        return self._pieces(z, np)

    def from_latents(self, latents):
        """The inverse of :meth:`latents`: per-scale arrays (one per entry of :attr:`latent_shapes`, a common
        batch size) joined into the flat ``(N, D)`` vector that :meth:`inverse` takes."""
        owner = f"{self.name}.from_latents"
        if not isinstance(latents, (list, tuple)) or len(latents) != len(self.latent_shapes):
            raise ValueError(f"{owner}: expected a list of {len(self.latent_shapes)} arrays of shapes (N, *s) for "
                             f"s in {self.latent_shapes}, got {type(latents).__name__}"
                             + (f" of length {len(latents)}" if isinstance(latents, (list, tuple)) else ""))
        for s, (a, shape) in enumerate(zip(latents, self.latent_shapes)):
            check_event(owner, a, shape, what=f"latent of scale {s}")
        if len({a.shape[0] for a in latents}) > 1 or len({a.dtype for a in latents}) > 1:
            raise ValueError(f"{owner}: the scales' latents differ in batch size or dtype: "
                             f"{[(a.shape, str(a.dtype)) for a in latents]}")
        n = latents[0].shape[0]
        return np.concatenate([np.reshape(a, (n, size)) for a, size in zip(latents, self._sizes)], axis=1)

    # ------------------------------------------------------------------ parameters
    def init(self, rng, x=None, dtype=np.float64):
        """Initialise stage by stage; with data ``x``, each stage sees the part of the data it will actually
        get (so an ActNorm inside a later stage is initialised on the kept channels of the stages before)."""
        params, h, last = {}, x, len(self.stages) - 1
        for i, b in enumerate(self.stages):
            p = b.init(rng, h, dtype=dtype)
            params.update(prefixed(f"{i}.", p))
            if h is not None and i < last:
                h = self._split(b.forward(p, h)[0], i)[1]
        return params

    def _check_param_values(self, params):
        for i, b in enumerate(self.stages):
            if type(b)._check_param_values is Bijector._check_param_values:
                continue                     # no constraints beyond keys, shapes, dtype and finiteness
            try:
                b._check_param_values(self._sub(params, i))
            except ValueError as e:
                raise in_layer(e, self._where(i, "parameters")) from None

    # ------------------------------------------------------------------ the contract
    def _forward(self, params, x, xp, keep_cache=True):
        n, last = x.shape[0], len(self.stages) - 1
        pieces, caches, logdet, h = [], [], None, x
        for i, b in enumerate(self.stages):
            try:
                y, ld, c = b._call_forward(self._sub(params, i), h, xp, checked_input=self._trusted[i][0],
                                           keep_cache=keep_cache)
            except ERRORS as e:
                raise in_layer(e, self._where(i, "forward")) from None
            logdet = ld if logdet is None else logdet + ld
            caches.append(c)
            if i < last:
                y, h = self._split(y, i)
            pieces.append(xp.reshape(y, (n, self._sizes[i])))
        return xp.concatenate(pieces, axis=1), logdet, caches

    def _forward_value(self, params, x, xp):
        return self._forward(params, x, xp, keep_cache=False)

    def _inverse(self, params, z, xp):
        pieces, last = self._pieces(z, xp), len(self.stages) - 1
        logdet, h = None, None
        for i in range(last, -1, -1):
            y = pieces[i] if i == last else self._join(pieces[i], h, xp)
            try:
                h, ld = self.stages[i]._call_inverse(self._sub(params, i), y, xp, checked_input=self._trusted[i][1])
            except ERRORS as e:
                raise in_layer(e, self._where(i, "inverse")) from None
            logdet = ld if logdet is None else logdet + ld
        return h, logdet

    def _backward(self, params, dz, dlogdet, cache):
        dpieces, last = self._pieces(dz, np), len(self.stages) - 1
        grads, dh = {}, None
        for i in range(last, -1, -1):
            dy = dpieces[i] if i == last else self._join(dpieces[i], dh, np)
            try:
                dh, g = self.stages[i]._call_backward(self._sub(params, i), dy, dlogdet, cache[i])
            except ERRORS as e:
                raise in_layer(e, self._where(i, "backward")) from None
            for fk, k in self._keys[i]:
                grads[fk] = g[k]
        return dh, grads

    def _check_results(self, direction, params, x, outputs):
        """Every stage checked its own results (so the error names it), and the flat output only gathers
        them; only the sum of the stages' logdets is new here, and it can overflow although each term is
        finite.  (The gradients of every stage are checked once, by ``backward``, under their full keys.)"""
        if direction != "backward":
            super()._check_results(direction, params, x, [o for o in outputs if o[0] == "log-determinant"])

    def __repr__(self):
        inner = ",\n  ".join(repr(b) for b in self.stages)
        return f"MultiScale(factor_out={self.factor_out!r}, latent_shapes={self.latent_shapes},\n  {inner}\n)"


# ----------------------------------------------------------------------------------------------- builders
def _with_input(owner, core, event_shape, input_shape):
    """``core`` alone, or ``Sequential([Reshape(input_shape, event_shape), core])`` when the data come in
    another shape (the digits pipeline's ``(N, 64)`` vectors for ``(1, 8, 8)`` images)."""
    if input_shape is None or event_shape_of(owner, input_shape) == tuple(event_shape):
        return core
    return Sequential([Reshape(input_shape, event_shape), core])


def _image(owner, event_shape, levels):
    """``(C, H, W)`` whose height and width halve ``levels`` times; ``ValueError`` naming ``owner``."""
    shape = event_shape_of(owner, event_shape)
    if len(shape) != 3:
        raise ValueError(f"{owner}: expected an image event shape (C, H, W), got {shape}")
    C, H, W = shape
    if H % 2 ** levels or W % 2 ** levels:
        raise ValueError(f"{owner}: {levels} squeeze(s) need the height and width divisible by {2 ** levels}, got "
                         f"the event shape {shape}")
    return shape


def realnvp_multiscale(event_shape, n_scales=2, hidden=64, kernel=3, activation="relu", scale="exp",
                       scale_bound=2.0, actnorm=False, factor_out="second", squeeze_order="channel_major",
                       split_order=None, input_shape=None):
    """RealNVP's multi-scale architecture (Dinh et al. 2017, arXiv:1605.08803, sec. 3.6) as a
    :class:`MultiScale` of ``n_scales`` stages of :class:`~npflows.bijectors.image_coupling.ImageAffineCoupling`
    layers.

    Every scale but the last: 3 couplings with alternating checkerboard masks -> :class:`Squeeze` -> 3
    couplings with alternating channel masks, then half of the channels are factored out.  The last scale: 4
    couplings with alternating checkerboard masks.  For the 8x8 digits ``(1, 8, 8)`` and ``n_scales=3``:
    ``(1, 8, 8) -> (4, 4, 4)``, 2 channels out; ``(2, 4, 4) -> (8, 2, 2)``, 4 out; ``(4, 2, 2)`` to the end;
    the latents have shapes ``[(2, 4, 4), (4, 2, 2), (4, 2, 2)]`` (32 + 16 + 16 = 64).

    Parameters
    ----------
    event_shape : (C, H, W)
        H and W divisible by ``2 ** (n_scales - 1)``, and the last scale at least 2 pixels (its checkerboard).
    n_scales : int >= 1
    hidden, kernel, activation : each coupling's :class:`~npflows.nn.conv.ConvNet` (conv kxk -> conv 1x1 ->
        conv kxk, zero-initialised last layer; RealNVP itself used residual networks).  The same width at every
        scale (RealNVP doubled it per scale).
    scale, scale_bound : the couplings' log-scale map (``"exp"``: RealNVP's :math:`e^{s}`; ``"tanh"`` bounds it
        by ``scale_bound``), see :class:`~npflows.bijectors.coupling.AffineCoupling`.
    actnorm : bool
        An :class:`~npflows.bijectors.conv.ActNorm2d` before every coupling (in place of RealNVP's batch
        normalisation, which is not a fixed bijection).
    factor_out : {"second", "first"}
        Which channel half leaves after each scale (:class:`MultiScale`).  Default ``"second"``: RealNVP's own
        code goes on with the first half (and Glow's, and normflows'); ``"first"`` is nflows'.
    squeeze_order : see :class:`Squeeze`: the channel order the channel-mask couplings see.
    split_order : str, optional
        The squeeze order in which half of the channels is factored out, if not ``squeeze_order``: after the
        channel couplings, ``Inverse(Squeeze(.., squeeze_order))`` and ``Squeeze(.., split_order)`` reorder
        the channels (no arithmetic, logdet 0).  RealNVP's own code (``rec_masked_conv_coupling``) is
        ``squeeze_order="channel_major", split_order="checkerboard"``: its channel couplings act after
        ``squeeze_2x2``, it un-squeezes, and it splits after ``squeeze_2x2_ordered``, so the pixels that leave
        form a checkerboard.
    input_shape : int or tuple, optional
        The shape the data come in, if not ``event_shape``: ``input_shape=64`` prepends
        ``Reshape(64, event_shape)`` (the digits pipeline hands ``(N, 64)`` vectors over) and the result is
        ``Sequential([Reshape, MultiScale])``; its per-scale latents are then ``result[-1].latents(z)``.

    Returns
    -------
    MultiScale, or Sequential([Reshape, MultiScale]) with ``input_shape``.
    """
    owner = "realnvp_multiscale"
    if isinstance(n_scales, bool) or not isinstance(n_scales, (int, np.integer)) or n_scales < 1:
        raise ValueError(f"{owner}: n_scales must be an integer >= 1, got {n_scales!r}")
    shape = _image(owner, event_shape, n_scales - 1)
    kw = dict(hidden=hidden, kernel=kernel, activation=activation, scale=scale, scale_bound=scale_bound)

    def couplings(shp, mask, n):
        out = []
        for k in range(n):
            if actnorm:
                out.append(ActNorm2d(shp))
            out.append(ImageAffineCoupling(shp, mask=mask, parity=k % 2, **kw))
        return out

    first, stages = shape, []
    for s in range(n_scales):
        if s == n_scales - 1:
            stages.append(Sequential(couplings(shape, "checkerboard", 4)))
            break
        sq = Squeeze(shape, order=squeeze_order)
        layers = couplings(shape, "checkerboard", 3) + [sq] + couplings(sq.out_event_shape, "channel", 3)
        if split_order is not None and split_order != squeeze_order:
            layers += [Inverse(sq), Squeeze(shape, order=split_order)]
        stages.append(Sequential(layers))
        C, H, W = sq.out_event_shape
        shape = (C // 2, H, W)
    return _with_input(owner, MultiScale(stages, factor_out=factor_out), first, input_shape)


def glow(event_shape, K, L, hidden=512, lu=True, kernel=3, activation="relu", scale="logsigmoid",
         layout="interleaved", shift_first=True, factor_out="second", squeeze_order="channel_major",
         input_shape=None):
    """Glow (Kingma & Dhariwal 2018, arXiv:1807.03039, fig. 2) as a :class:`MultiScale` of ``L`` levels:
    each level is :class:`Squeeze` -> ``K`` steps of flow, then (every level but the last) half of the
    channels are factored out ("split").  A step of flow is
    :class:`~npflows.bijectors.conv.ActNorm2d` -> invertible 1x1 convolution
    (:class:`~npflows.bijectors.conv.LUInvertible1x1Conv` with ``lu=True``, else
    :class:`~npflows.bijectors.conv.Invertible1x1Conv`) -> affine coupling on channels
    (:class:`~npflows.bijectors.image_coupling.ImageAffineCoupling` with ``mask="channel"``: the first half
    conditions, Glow's :class:`~npflows.nn.conv.ConvNet`).  For ``(1, 8, 8)`` with ``L=2``:
    ``(1, 8, 8) -> (4, 4, 4)``, K steps, 2 channels out; ``(2, 4, 4) -> (8, 2, 2)``, K steps; latents
    ``[(2, 4, 4), (8, 2, 2)]`` (32 + 32 = 64).

    Parameters
    ----------
    event_shape : (C, H, W)
        H and W divisible by ``2 ** L``.
    K, L : int >= 1
        Steps per level and levels.
    hidden, kernel, activation : the coupling network's width (Glow: 512), first/last kernel size (3) and
        activation.
    lu : bool
        The LU-parameterised 1x1 convolution (Glow's ``flow_permutation=2`` with its LU option; logdet
        :math:`HW\\sum\\log|s|`) or the dense weight (logdet :math:`HW\\log|\\det W|`).  Its permutation P and the
        signs of U's diagonal are the identity and +1 here (Glow draws them from the LU of its random initial
        rotation; the LU layer's ``init`` draws a random rotation within the fixed P and signs).
    scale, layout, shift_first : the coupling's log-scale map and how its network's output is read; the
        defaults are openai's Glow coupling (``scale = sigmoid(h + 2)``, shift and scale interleaved,
        ``(x + t) * scale``), see :class:`~npflows.bijectors.image_coupling.ImageAffineCoupling`.
    factor_out : {"second", "first"}
        Glow's ``split2d`` goes on with the first half and factors out the second (default).
    squeeze_order : see :class:`Squeeze` (Glow's ``squeeze2d`` is ``"channel_major"``).
    input_shape : int or tuple, optional
        As :func:`realnvp_multiscale`: ``input_shape=64`` prepends ``Reshape(64, event_shape)``.

    Glow's learned prior for the factored-out half (``split2d_prior``) and its additive-coupling and
    reverse/shuffle permutation options are not built here; each scale's latents go to the one base.

    Returns
    -------
    MultiScale, or Sequential([Reshape, MultiScale]) with ``input_shape``.
    """
    owner = "glow"
    for name, v in (("K", K), ("L", L)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{owner}: {name} must be an integer >= 1, got {v!r}")
    shape = _image(owner, event_shape, L)
    conv = LUInvertible1x1Conv if lu else Invertible1x1Conv
    first, stages = shape, []
    for level in range(L):
        sq = Squeeze(shape, order=squeeze_order)
        s = sq.out_event_shape
        steps = []
        for _ in range(K):
            steps += [ActNorm2d(s), conv(s),
                      ImageAffineCoupling(s, mask="channel", parity=0, hidden=hidden, kernel=kernel,
                                          activation=activation, scale=scale, layout=layout, shift_first=shift_first)]
        stages.append(Sequential([sq] + steps))
        shape = (s[0] // 2,) + s[1:]
    return _with_input(owner, MultiScale(stages, factor_out=factor_out), first, input_shape)
