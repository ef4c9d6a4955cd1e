"""A multilayer perceptron with a hand-written backward: the conditioner of coupling layers.

Layer ``l`` computes ``h_{l+1} = act(h_l @ W_l + b_l)`` (batch first, ``W_l`` of shape ``(in, out)``); the last
layer has no activation.  Parameters: ``W0, b0, W1, b1, ...``.
"""
import numpy as np

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "elu")
LEAKY_SLOPE = 0.01


def activate(name, h, xp=np):
    """The activation ``name`` applied to the pre-activation ``h``."""
    if name == "relu":
        return xp.maximum(h, 0.0)
    if name == "leaky_relu":
        return xp.where(h > 0, h, LEAKY_SLOPE * h)
    if name == "tanh":
        return xp.tanh(h)
    if name == "elu":
        return xp.where(h > 0, h, xp.expm1(xp.minimum(h, 0.0)))
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


def activation_grad_(name, g, a):
    """Multiply the cotangent ``g`` in place by ``act'(h)``, written through the output ``a = act(h)``.

    All four are monotone with ``a > 0`` exactly when ``h > 0``, so the output suffices:
    relu' = [a>0]; leaky' = 1 or slope; tanh' = 1 - a^2; elu' = 1 for h>0 else exp(h) = a + 1.
    """
    if name == "relu":
        g *= a > 0
    elif name == "leaky_relu":
        g *= np.where(a > 0, 1.0, LEAKY_SLOPE).astype(g.dtype, copy=False)
    elif name == "tanh":
        g *= 1.0 - a * a
    else:  # elu
        g *= np.where(a > 0, 1.0, a + 1.0)
    return g


class MLP:
    """``out = W_L^T act(... act(W_0^T x + b_0) ...) + b_L``, batch first.

    Parameters
    ----------
    n_in, n_out : int
        Input and output features.
    hidden : sequence of int
        Widths of the hidden layers, e.g. ``(64, 64)``.
    activation : {"relu", "leaky_relu", "tanh", "elu"}
    zero_last : bool
        Initialise the last layer to zero, so the output is 0 for every input (a coupling layer whose
        conditioner is such an MLP starts as the identity map).
    prefix : str
        Prepended to every parameter key (``"net."`` gives ``net.W0``), so a layer that owns the MLP
        passes its own flat dict straight through, with no per-call copying of sub-dicts.

    Notes
    -----
    Forward, with :math:`a_0 = x`: :math:`h_{l} = a_l W_l + b_l`, :math:`a_{l+1} = \\phi(h_l)`, output
    :math:`h_L`.  Backward from :math:`\\bar h_L = \\bar{out}`, for :math:`l = L, \\dots, 0`:

    * :math:`\\bar W_l = a_l^T \\bar h_l`, :math:`\\bar b_l = \\sum_n \\bar h_l` (sum over the batch);
    * :math:`\\bar a_l = \\bar h_l W_l^T`;
    * :math:`\\bar h_{l-1} = \\bar a_l \\odot \\phi'(h_{l-1})`, with :math:`\\phi'` read off :math:`a_l`.

    The cache is the list of layer inputs :math:`a_0, \\dots, a_L`.
    Initialisation: :math:`W_l \\sim \\mathcal N(0, g/\\mathrm{fan\\_in})` with g = 2 for the ReLU family
    (He et al. 2015, arXiv:1502.01852) and g = 1 for tanh; biases zero.
    """

    def __init__(self, n_in, n_out, hidden=(64, 64), activation="relu", zero_last=False, prefix=""):
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; choose one of {ACTIVATIONS}")
        self.sizes = (int(n_in),) + tuple(int(h) for h in hidden) + (int(n_out),)
        if min(self.sizes) < 1:
            raise ValueError(f"MLP: every layer needs at least one unit, got sizes {self.sizes}")
        self.activation, self.zero_last = activation, bool(zero_last)
        self.n_layers = len(self.sizes) - 1
        self.prefix = str(prefix)
        self._W = [f"{prefix}W{l}" for l in range(self.n_layers)]
        self._b = [f"{prefix}b{l}" for l in range(self.n_layers)]

    def param_shapes(self):
        shapes = {}
        for l in range(self.n_layers):
            shapes[self._W[l]] = (self.sizes[l], self.sizes[l + 1])
            shapes[self._b[l]] = (self.sizes[l + 1],)
        return shapes

    def init(self, rng, dtype=np.float64):
        gain = 1.0 if self.activation == "tanh" else 2.0
        p = {}
        for l in range(self.n_layers):
            fan_in, fan_out = self.sizes[l], self.sizes[l + 1]
            last = l == self.n_layers - 1
            if last and self.zero_last:
                W = np.zeros((fan_in, fan_out))
            else:
                W = rng.standard_normal((fan_in, fan_out)) * np.sqrt((1.0 if last else gain) / fan_in)
            p[self._W[l]] = W.astype(dtype)
            p[self._b[l]] = np.zeros(fan_out, dtype)
        return p

    def forward(self, params, x, xp=np):
        """``(out, cache)``: ``x`` is ``(N, n_in)``, ``out`` is ``(N, n_out)``.  Inputs are not validated
        here: the layer that owns the MLP validates its own input."""
        acts = [x]
        h = x
        for l in range(self.n_layers):
            h = h @ params[self._W[l]] + params[self._b[l]]
            if l < self.n_layers - 1:
                h = activate(self.activation, h, xp)
                acts.append(h)
        return h, acts

    def backward(self, params, dout, cache, need_dx=True):
        """``(dx, grads)`` for the cotangent ``dout`` of the output; ``dx`` is None if not ``need_dx``."""
        grads = {}
        g = dout
        for l in range(self.n_layers - 1, -1, -1):
            a = cache[l]
            grads[self._W[l]] = a.T @ g
            grads[self._b[l]] = g.sum(axis=0)
            if l == 0 and not need_dx:
                return None, grads
            g = g @ params[self._W[l]].T
            if l > 0:
                g = activation_grad_(self.activation, g, a)
        return g, grads

    def __repr__(self):
        return f"MLP(sizes={self.sizes}, activation={self.activation!r}, zero_last={self.zero_last})"
