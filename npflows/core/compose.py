"""Composition of bijectors: ``Sequential`` (chain rule) and ``Inverse`` (swap directions)."""
import numpy as np

from .bijector import ERRORS, Bijector, add_cotangents, in_layer


def prefixed(prefix, d):
    """``{prefix + k: v}``: how a container names its children's parameters."""
    return {prefix + k: v for k, v in d.items()}


class Sequential(Bijector):
    """``f = f_{K-1} o ... o f_1 o f_0``: layer 0 is applied first.

    Parameters of layer ``i`` appear under the key prefix ``"i."`` (``"3.net.W1"``).

    Notes
    -----
    With :math:`h_0 = x`, :math:`h_{i+1} = f_i(h_i)` the chain rule gives

    .. math:: \\log|\\det \\partial y/\\partial x| = \\sum_i \\log|\\det \\partial h_{i+1}/\\partial h_i|,

    so every layer receives the *same* logdet cotangent ``dlogdet``, and the input cotangent flows back
    layer by layer: ``dh_i = backward_i(dh_{i+1}, dlogdet)``.  The inverse applies the layers' inverses
    in reverse order and sums their logdets.

    **Context.**  Every layer receives the same context ``c`` (those that are not conditional ignore it):
    :math:`h_{i+1} = f_i(h_i; c)`.  ``c`` enters the output through every layer, so by the chain rule its
    cotangent is the sum of what each layer's backward returns for it,
    :math:`\\bar c = \\sum_i \\bar c_i` with :math:`\\bar c_i = (\\partial(h_{i+1}, \\ell_i)/\\partial c)^T
    (\\bar h_{i+1}, \\bar\\ell)`, the same cotangents that give :math:`\\bar h_i`.  The chain is conditional
    (``context_dim``) when any layer is, and its conditional layers must agree on the context's width.
    """

    takes_context = True

    def __init__(self, bijectors):
        self.layers = list(bijectors)
        if not self.layers:
            raise ValueError("Sequential: needs at least one bijector")
        dims = {b.dim for b in self.layers if b.dim is not None}
        if len(dims) > 1:
            raise ValueError(f"Sequential: layers disagree on the event size: {sorted(dims)}")
        self.dim = dims.pop() if dims else None
        widths = {b.context_dim for b in self.layers if b.context_dim is not None}
        if len(widths) > 1:
            raise ValueError(f"Sequential: conditional layers disagree on the context's width: {sorted(widths)}")
        self.context_dim = widths.pop() if widths else None
        self._event_shape, self._out_event_shape = self._chain_shapes(self.layers)
        # (full key, child key) pairs per layer, fixed by the structure: computed once, not per call.
        self._keys = [[(f"{i}.{k}", k) for k in b.param_shapes()] for i, b in enumerate(self.layers)]
        # (forward, inverse): may the layer's input check be skipped? Only where it is the generic one, which
        # the Sequential's own input check (first layer) or the previous layer's result check already did
        self._trusted = [(b._trusts_container("forward"), b._trusts_container("inverse")) for b in self.layers]

    @staticmethod
    def _chain_shapes(layers):
        """``(event_shape, out_event_shape)`` of the chain: each layer's input event shape must be the one its
        predecessor puts out (a layer without a shape passes its input's on).  ``ValueError`` naming the pair
        that disagrees."""
        first = cur = None
        for i, b in enumerate(layers):
            if b.event_shape is not None:
                if cur is not None and b.event_shape != cur:
                    raise ValueError(f"Sequential: layer {i} ({b.name}) takes events of shape {b.event_shape}, but "
                                     f"the layers before it put out {cur}")
                if first is None and cur is None:
                    first = b.event_shape
            cur = b.out_event_shape if b.out_event_shape is not None else cur
        return first, cur

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def param_shapes(self):
        out = {}
        for i, b in enumerate(self.layers):
            out.update(prefixed(f"{i}.", b.param_shapes()))
        return out

    def _sub(self, params, i):
        return {k: params[fk] for fk, k in self._keys[i]}

    def init(self, rng, x=None, dtype=np.float64, context=None):
        """Initialise layer by layer; with data ``x``, each layer sees the output of the ones before it
        (so an ActNorm deep in the stack is initialised on the activations it will actually get), computed
        with ``context`` (the rows of ``x``'s contexts) where a conditional layer needs one."""
        params = {}
        for i, b in enumerate(self.layers):
            p = b.init(rng, x, dtype=dtype)
            params.update(prefixed(f"{i}.", p))
            if x is not None and i + 1 < len(self.layers):
                x = b.forward(p, x, context)[0]
        return params

    def _where(self, i, direction):
        return f"{self.name} layer {i} ({self.layers[i].name}) {direction}"

    def _check_param_values(self, params):
        for i, b in enumerate(self.layers):
            if type(b)._check_param_values is Bijector._check_param_values:
                continue                     # no constraints beyond keys, shapes, dtype and finiteness
            try:
                b._check_param_values(self._sub(params, i))
            except ValueError as e:
                raise in_layer(e, self._where(i, "parameters")) from None

    def _forward(self, params, x, xp, context=None, keep_cache=True):
        caches, logdet = [], None
        for i, b in enumerate(self.layers):
            try:
                x, ld, c = b._call_forward(self._sub(params, i), x, xp, checked_input=self._trusted[i][0],
                                           keep_cache=keep_cache, context=context)
            except ERRORS as e:
                raise in_layer(e, self._where(i, "forward")) from None
            logdet = ld if logdet is None else logdet + ld
            caches.append(c)
        return x, logdet, caches

    def _forward_value(self, params, x, xp, context=None):
        return self._forward(params, x, xp, context, keep_cache=False)

    def _inverse(self, params, y, xp, context=None):
        logdet = None
        for i in range(len(self.layers) - 1, -1, -1):
            try:
                y, ld = self.layers[i]._call_inverse(self._sub(params, i), y, xp, checked_input=self._trusted[i][1],
                                                     context=context)
            except ERRORS as e:
                raise in_layer(e, self._where(i, "inverse")) from None
            logdet = ld if logdet is None else logdet + ld
        return y, logdet

    def _backward(self, params, dy, dlogdet, cache):
        grads, dcontext = {}, None
        for i in range(len(self.layers) - 1, -1, -1):
            try:
                dy, g, dc = self.layers[i]._call_backward(self._sub(params, i), dy, dlogdet, cache[i],
                                                          with_context=True)
            except ERRORS as e:
                raise in_layer(e, self._where(i, "backward")) from None
            for fk, k in self._keys[i]:
                grads[fk] = g[k]
            dcontext = add_cotangents(dcontext, dc)
        return dy, grads, dcontext

    def _check_results(self, direction, params, x, outputs, context=None):
        """Every layer checked its own results (so the error names it); only the sums over the layers are new
        here, the logdet's and the context cotangent's, and a sum can overflow although each term is finite.
        (The gradients of every layer are checked once, by ``backward``, under their full keys.)"""
        summed = "context cotangent" if direction == "backward" else "log-determinant"
        super()._check_results(direction, params, x, [o for o in outputs if o[0] == summed])

    def __repr__(self):
        inner = ",\n  ".join(repr(b) for b in self.layers)
        return f"Sequential(\n  {inner}\n)"


class Inverse(Bijector):
    """``Inverse(b)``: forward is ``b.inverse`` and inverse is ``b.forward``; same parameters.

    The swapped forward has a hand-written backward only if ``b`` offers ``inverse_backward``;
    otherwise ``Inverse`` serves evaluation (for example the density of an IAF at a new point) and
    ``backward`` raises ``NotImplementedError``.  A context is handed to ``b`` in both directions; a
    conditional ``b``'s ``inverse_backward`` receives the cache ``(x, y, context)`` and returns the context's
    cotangent as a third value (``(x, y)`` and a pair without a context, as before).
    """

    takes_context = True

    def __init__(self, bijector):
        self.base = bijector
        self.dim = bijector.dim
        self.context_dim = bijector.context_dim
        self._event_shape, self._out_event_shape = bijector.out_event_shape, bijector.event_shape

    @property
    def name(self):
        return f"Inverse({self.base.name})"

    def param_shapes(self):
        return self.base.param_shapes()

    def init(self, rng, x=None, dtype=np.float64):
        if x is not None:
            if not self.base.param_shapes():       # nothing to initialise (an un-squeeze): the data only set the dtype
                return self.base.init(rng, dtype=x.dtype)
            raise ValueError(f"{self.name}: data-dependent init through an inverse is not supported")
        return self.base.init(rng, dtype=dtype)

    def _check_param_values(self, params):
        self.base._check_param_values(params)

    def _check_forward_input(self, x):
        try:
            self.base._check_inverse_input(x)
        except ValueError as e:          # the message names the wrapper too ("Inverse(Squeeze) forward: ...")
            raise in_layer(e, f"{self.name} forward") from None

    def _check_inverse_input(self, y):
        try:
            self.base._check_forward_input(y)
        except ValueError as e:
            raise in_layer(e, f"{self.name} inverse") from None

    def _forward(self, params, x, xp, context=None):
        y, logdet = self.base._call_inverse(params, x, xp, checked_input=True, context=context)
        return y, logdet, ((x, y, context) if context is not None and self.base.context_dim is not None else (x, y))

    def _inverse(self, params, y, xp, context=None):
        x, logdet, _ = self.base._call_forward(params, y, xp, checked_input=True, keep_cache=False, context=context)
        return x, logdet

    def _check_results(self, direction, params, x, outputs, context=None):
        if direction == "backward":       # the base checked its forward and inverse itself
            super()._check_results(direction, params, x, outputs)

    def _backward(self, params, dy, dlogdet, cache):
        if not hasattr(self.base, "inverse_backward"):
            raise NotImplementedError(f"{self.name}: {self.base.name} has no hand-written backward of its "
                                      f"inverse; use it for evaluation only")
        out = self.base.inverse_backward(params, dy, dlogdet, cache)
        return out if len(out) == 3 else (out[0], out[1], None)

    def __repr__(self):
        return f"Inverse({self.base!r})"
