"""A composition that keeps no activations: each layer's input is recomputed in the backward pass by inverting
its output (the reversible-network trick of Gomez, Ren, Urtasun & Grosse 2017, "The Reversible Residual
Network: Backpropagation Without Storing Activations", arXiv:1707.04585).

``RecomputeSequential(layers)`` is the same map as :class:`~npflows.core.compose.Sequential` with the same
parameter keys, so a trained ``Sequential``'s parameters work in it unchanged; only the memory of a training
step and its time differ.  To train with it::

    flow = NormalizingFlow(RecomputeSequential(realnvp(2, n_layers=32).layers), StandardNormal(2))
"""
import numpy as np

from .bijector import ERRORS, in_layer
from .compose import Sequential


class RecomputeSequential(Sequential):
    """``f = f_{K-1} o ... o f_0`` whose ``forward`` keeps only its output; ``backward`` recovers each layer's
    input by that layer's inverse and re-runs the layer's forward to rebuild its cache.

    Parameters
    ----------
    layers : sequence of Bijector
        As for :class:`~npflows.core.compose.Sequential`: layer 0 is applied first, its parameters under
        ``"0."``.

    Notes
    -----
    **The map, its log-determinant and its inverse** are those of ``Sequential``: with :math:`h_0 = x`,
    :math:`h_{i+1} = f_i(h_i)`, :math:`y = h_K` and
    :math:`\\log|\\det\\partial y/\\partial x| = \\sum_i \\log|\\det\\partial h_{i+1}/\\partial h_i|`
    (chain rule: the Jacobian is the product of the layers' Jacobians, and the determinant of a product is
    the product of the determinants).  ``forward`` and ``inverse`` run the very same code as
    ``Sequential``'s, so their numbers are identical to the bit.

    **What is stored.**  ``Sequential.forward`` returns every layer's cache (for a coupling: its input, the
    conditioner's hidden activations, the log-scales and scales), so the memory of a training step grows
    linearly in the depth K: 1.1 kB per layer per sample for a 2-D RealNVP with 64-unit conditioners, 2.6 kB
    at D = 64 (``scripts/exp_memory_depth.py`` measures it).  ``RecomputeSequential.forward`` discards
    each layer's cache as soon as the next layer has its input; its cache is the output :math:`y` alone.

    **Backward** for the cotangents :math:`(\\bar y, \\bar\\ell)`, walking the layers from the top, starting
    from :math:`h_K = y`, :math:`\\bar h_K = \\bar y`; for :math:`i = K-1, \\dots, 0`:

    1. :math:`h_i = f_i^{-1}(h_{i+1})`: the layer's input, recovered by its inverse (which exists because
       the layer is a bijection; this is the step that replaces the stored activation);
    2. :math:`(h_{i+1}', \\mathrm{cache}_i) = f_i(h_i)`: the layer's forward again, for its cache only;
    3. :math:`(\\bar h_i, \\bar\\theta_i) = \\mathrm{backward}_i(\\bar h_{i+1}, \\bar\\ell, \\mathrm{cache}_i)`:
       the layer's own hand-derived VJP, exactly as in ``Sequential``'s backward (every layer receives the
       same logdet cotangent :math:`\\bar\\ell`, because the logdet is the sum of the layers' logdets, and
       the input cotangent of layer i+1 is the output cotangent of layer i, by the chain rule).

    Only one layer's cache is alive at a time, so the activation memory no longer grows with K (the
    parameter gradients, which do not depend on the batch, still do).

    **Cost.**  One extra inverse and one extra forward per layer: a coupling's inverse costs what its
    forward costs (one conditioner pass), so a training step (forward plus backward, about three forward
    passes' worth) becomes about five: measured 1.7x the time of ``Sequential``'s (median over RealNVPs of
    depth 2-32 and width 2-64; 1.2-2.6x on a loaded machine), for a peak memory 8-11 times smaller at depth 32
    (``scripts/exp_memory_depth.py``).  It does not pay for layers whose inverse is expensive: a masked
    autoregressive layer inverts in D sequential passes, a planar, radial or residual layer by an iterative
    solve, a CNF by an ODE solve (whose adjoint already recomputes instead of storing).

    **Accuracy.**  The recovered :math:`h_i` differ from the forward's by the round-trip error of the
    layers above them, and the gradients by as much, amplified by the layers' conditioning.  For briefly trained
    RealNVPs (300 Adam steps; depth 8 and 32, width 2-64) the round trip is exact to 2e-15 and the gradients agree with
    ``Sequential``'s to 2e-15 (relative).  But a flow that contracts some direction by many orders of magnitude
    loses it in floating point, and its inverse cannot bring it back: RealNVPs of depth 32 with random
    parameters 0.3 away from the identity have round-trip errors up to 1e60, and their recomputed gradients are
    meaningless.  So check ``inverse(forward(x))`` on one's own model before relying on this container; for a
    numerical inverse, its solver's tolerance bounds the gradient's accuracy too.  An inverse that overflows,
    or that recovers an input outside a layer's domain, raises the layer's own error in ``backward``,
    prefixed with its position.
    """

    def __init__(self, layers):
        super().__init__(layers)

    # The context of conditional flows: ``context`` is None for an unconditional chain.  It is kept in this
    # container's own cache (the layers need it again to invert and re-run), and passed on to a layer only
    # when given, so the code serves a contract with and without contexts alike.
    def _forward(self, params, x, xp, context=None, keep_cache=True):
        # Sequential's own forward with every layer's cache dropped as soon as the next layer has its input
        kw = {} if context is None else {"context": context}
        y, logdet, _ = Sequential._forward(self, params, x, xp, keep_cache=False, **kw)
        return y, logdet, ((y, context) if keep_cache else None)

    def _forward_value(self, params, x, xp, context=None):
        return self._forward(params, x, xp, context, keep_cache=False)

    def _backward(self, params, dy, dlogdet, cache):
        (y, context), grads, dcontext = cache, {}, None
        kw = {} if context is None else {"context": context}
        with_context = getattr(self, "takes_context", False)     # backward returns the context's cotangent
        for i in range(len(self.layers) - 1, -1, -1):
            b, p = self.layers[i], self._sub(params, i)
            try:
                x, _ = b._call_inverse(p, y, np, checked_input=True, **kw)                    # 1. h_i = f_i^-1(h_{i+1})
                _, _, c = b._call_forward(p, x, np, checked_input=self._trusted[i][0], **kw)   # 2. its cache again
            except ERRORS as e:
                raise in_layer(e, self._where(i, "backward (recomputing the layer's input by its inverse)")) from None
            try:                                                                               # 3. its VJP
                if with_context:
                    dy, g, dc = b._call_backward(p, dy, dlogdet, c, with_context=True)
                    dcontext = dc if dcontext is None else (dcontext if dc is None else dcontext + dc)
                else:
                    dy, g = b._call_backward(p, dy, dlogdet, c)
            except ERRORS as e:
                raise in_layer(e, self._where(i, "backward")) from None
            for fk, k in self._keys[i]:
                grads[fk] = g[k]
            y = x
        return (dy, grads, dcontext) if with_context else (dy, grads)

    def __repr__(self):
        inner = ",\n  ".join(repr(b) for b in self.layers)
        return f"RecomputeSequential(\n  {inner}\n)"
