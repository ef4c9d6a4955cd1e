"""MADE: a masked MLP whose outputs are autoregressive in its inputs (Germain et al. 2015, arXiv:1502.03509).

Each input coordinate ``d`` gets a *degree* ``m(d)`` in ``1..D`` (its position in the autoregressive order);
each hidden unit gets a degree too, and a weight is kept only where it cannot carry information from an
input to an output of equal or lower degree.  The network is then an ordinary :class:`~npflows.nn.MLP`
whose weights are multiplied by fixed binary masks, so it reuses the MLP's forward (fast NumPy path and
traceable ``xp`` path) and backward, with the masks applied to the weight gradients.

Output layout: ``k`` outputs per input coordinate, grouped by parameter.  ``out[:, j*D:(j+1)*D]`` is
parameter ``j`` for all ``D`` coordinates in their original (not autoregressive) index order, so
``out[:, j*D + i]`` is parameter ``j`` of coordinate ``i`` and depends only on the inputs ``x_l`` with
``m(l) < m(i)``.
"""
import numpy as np

from .mlp import ACTIVATIONS, MLP, hidden_bias_init

ORDERS = ("natural", "reversed", "random")
HIDDEN_DEGREES = ("equal", "random")


def _input_order(dim, order, rng):
    """The coordinates in autoregressive order (``order[0]`` comes first) from a name or an array."""
    if isinstance(order, str):
        if order == "natural":
            return np.arange(dim)
        if order == "reversed":
            return np.arange(dim)[::-1].copy()
        if order == "random":
            if not isinstance(rng, np.random.Generator):
                raise ValueError(f"MADE: order='random' needs rng, a numpy.random.Generator, got {rng!r}")
            return rng.permutation(dim)
        raise ValueError(f"MADE: unknown order {order!r}; choose one of {ORDERS} or pass a permutation array")
    arr = np.asarray(order)
    if arr.ndim != 1 or arr.size != dim or not np.issubdtype(arr.dtype, np.integer) \
            or not np.array_equal(np.sort(arr), np.arange(dim)):
        raise ValueError(f"MADE: an explicit order must be a permutation of 0..{dim - 1}, got {order!r}")
    return arr.astype(np.intp)


class MADE:
    """Masked autoencoder for distribution estimation: ``D`` inputs, ``k * D`` autoregressive outputs.

    Parameters
    ----------
    dim : int
        ``D``, the number of input coordinates.
    k : int
        Outputs per coordinate (2 for an affine autoregressive layer: log-scale and shift).
    hidden : sequence of int
        Hidden widths, e.g. ``(64, 64)``.  At least one hidden layer.
    activation : {"relu", "leaky_relu", "tanh", "elu"}
    order : {"natural", "reversed", "random"} or array of int
        The autoregressive order: the coordinates listed first to last.  ``"natural"`` is ``0, 1, ..., D-1``,
        ``"reversed"`` is ``D-1, ..., 0``, ``"random"`` a permutation drawn from ``rng``; an explicit
        permutation array ``order`` means coordinate ``order[t]`` is the ``t``-th (``t = 0`` depends on
        nothing).  The degree of coordinate ``order[t]`` is ``t + 1`` (attribute ``degrees``).
    rng : numpy.random.Generator, optional
        Required for ``order="random"`` and ``hidden_degrees="random"``; used only here, at construction.
    hidden_degrees : {"equal", "random"}
        ``"random"``: Germain et al.'s rule, each unit's degree uniform on
        :math:`\\{\\min_{k'} m^{l-1}(k'), \\dots, D-1\\}`.  ``"equal"`` (default): the same range,
        assigned cyclically (``lo, lo+1, ..., D-1, lo, ...``), so every degree is equally represented and
        the network is fully connected in the autoregressive sense as soon as each width is ``>= D - 1``.
    zero_last : bool
        Zero the output layer at initialisation (the output is then the zero bias for every input).
    prefix : str
        Prepended to every parameter key (``"net."`` gives ``net.W0``), as in :class:`~npflows.nn.MLP`.

    Attributes
    ----------
    order, degrees : ndarray of int, shape (D,)
        The order (coordinates first to last) and the degree ``m(i)`` of each coordinate ``i``
        (``degrees[order[t]] == t + 1``).
    hidden_degree_list : list of ndarray
        The degree of every hidden unit, per hidden layer.
    output_degrees : ndarray, shape (k*D,)
        ``np.tile(degrees, k)``: the degree of output column ``j*D + i`` is that of coordinate ``i``.
    masks : list of bool ndarray
        One per layer, the shape of its weight ``(in, out)``.
    connectivity : bool ndarray, shape (D, k*D)
        ``connectivity[l, c]``: some path of unmasked weights leads from input ``l`` to output ``c``.

    Notes
    -----
    **Masks** (Germain et al. 2015, "Deep MADE").  With input degrees :math:`m^0(d)` and hidden degrees
    :math:`m^l(u)`, the hidden layer ``l`` keeps the weight from unit :math:`u'` to unit :math:`u` iff
    :math:`m^l(u) \\ge m^{l-1}(u')`, and the output layer keeps the weight from hidden unit :math:`u` to
    output column :math:`c` iff :math:`m_{out}(c) > m^L(u)` (strict).  Along any path of kept weights the
    degree never decreases until the last step, where it strictly increases, so output ``c`` can only see
    inputs of degree :math:`< m_{out}(c)`.  In particular the outputs of the first coordinate
    (degree 1) are constants (biases only), and hidden degrees never exceed ``D - 1`` (a unit of degree
    ``D`` could reach no output).  For ``D = 1`` the hidden degrees are 0: those units see no input.

    **The guarantee** is checked at construction, not assumed: the boolean product of the masks,
    :math:`C = M^0 M^1 \\cdots M^L` (``connectivity``), is ``True`` at :math:`(l, c)` exactly when some
    path leads from input ``l`` to output ``c``; the constructor raises ``AssertionError`` unless every
    such pair has :math:`m^0(l) < m_{out}(c)`.  The tests check the same property on the brute-force
    Jacobian of the network, which sees the arithmetic rather than the masks.

    **Forward** is the MLP with masked weights :math:`\\tilde W_l = W_l \\odot M_l`:
    :math:`a_0 = x`, :math:`h_l = a_l\\tilde W_l + b_l`, :math:`a_{l+1} = \\phi(h_l)`, output :math:`h_L`.
    The stored ``W_l`` are dense; the entries under a zero of the mask are ignored by the map (they are
    initialised to zero and their gradient is exactly zero, so Adam leaves them at zero).

    **Backward.**  The MLP's backward with :math:`\\tilde W_l` gives :math:`\\bar x`, :math:`\\bar b_l` and
    :math:`\\bar{\\tilde W}_l = a_l^T\\bar h_l`; since :math:`\\tilde W_l = W_l\\odot M_l` elementwise,
    :math:`\\bar W_l = \\bar{\\tilde W}_l \\odot M_l`.  The input cotangent flows through the masked weights:
    :math:`\\bar a_l = \\bar h_l\\tilde W_l^T`.

    **Initialisation** counts only the connections a unit really has:
    :math:`W_l[:, u] \\sim \\mathcal N(0, g/n_u)` with :math:`n_u` the number of kept inputs of unit ``u``
    (g = 2 for the ReLU family, 1 for tanh, 1 on the output layer, as in :class:`~npflows.nn.MLP`), then
    masked; hidden biases :math:`\\sim U(\\pm 1/\\sqrt{n_u})` (:func:`~npflows.nn.mlp.hidden_bias_init`), output
    biases zero.
    """

    def __init__(self, dim, k=2, hidden=(64, 64), activation="relu", order="natural", rng=None,
                 hidden_degrees="equal", zero_last=False, prefix=""):
        dim, k = int(dim), int(k)
        hidden = tuple(int(h) for h in hidden)
        if dim < 1 or k < 1:
            raise ValueError(f"MADE: dim and k must be >= 1, got dim={dim}, k={k}")
        if not hidden or min(hidden) < 1:
            raise ValueError(f"MADE: needs at least one hidden layer, each of >= 1 unit, got {hidden}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MADE: unknown activation {activation!r}; choose one of {ACTIVATIONS}")
        if hidden_degrees not in HIDDEN_DEGREES:
            raise ValueError(f"MADE: unknown hidden_degrees {hidden_degrees!r}; choose one of {HIDDEN_DEGREES}")
        if hidden_degrees == "random" and not isinstance(rng, np.random.Generator):
            raise ValueError(f"MADE: hidden_degrees='random' needs rng, a numpy.random.Generator, got {rng!r}")
        self.dim, self.k, self.hidden = dim, k, hidden
        self.order = _input_order(dim, order, rng)
        self.degrees = np.empty(dim, np.intp)
        self.degrees[self.order] = np.arange(1, dim + 1)
        self.output_degrees = np.tile(self.degrees, k)

        self.hidden_degree_list, prev = [], self.degrees
        for width in hidden:
            lo = min(int(prev.min()), dim - 1)          # Germain et al.: from min of the layer below to D-1
            if hidden_degrees == "random":
                deg = rng.integers(lo, dim, size=width)  # uniform on {lo, ..., D-1}
            else:
                deg = lo + np.arange(width) % (dim - lo)
            self.hidden_degree_list.append(deg.astype(np.intp))
            prev = deg
        degs = [self.degrees] + self.hidden_degree_list
        self.masks = [degs[l][:, None] <= degs[l + 1][None, :] for l in range(len(hidden))]
        self.masks.append(degs[-1][:, None] < self.output_degrees[None, :])
        self.connectivity = self.check_autoregressive()

        self.mlp = MLP(dim, k * dim, hidden, activation, zero_last=zero_last, prefix=prefix)
        self.activation, self.zero_last, self.prefix = activation, bool(zero_last), self.mlp.prefix
        self.sizes, self.n_layers = self.mlp.sizes, self.mlp.n_layers
        self._W, self._b = self.mlp._W, self.mlp._b

    def check_autoregressive(self):
        """The boolean product of the masks, ``(D, k*D)``, after checking that it connects no input to an
        output of equal or lower degree; raises ``AssertionError`` otherwise (an explicit raise, not an
        ``assert`` statement, so it also holds under ``python -O``)."""
        c = self.masks[0]
        for m in self.masks[1:]:
            c = (c.astype(np.int64) @ m.astype(np.int64)) > 0
        leaks = c & ~(self.degrees[:, None] < self.output_degrees[None, :])
        if leaks.any():
            l, o = np.argwhere(leaks)[0]
            raise AssertionError(f"MADE: output {o} (degree {self.output_degrees[o]}) is connected to input {l} "
                                 f"(degree {self.degrees[l]}): the masks are not autoregressive")
        return c

    def param_shapes(self):
        return self.mlp.param_shapes()

    def init(self, rng, dtype=np.float64):
        gain = 1.0 if self.activation == "tanh" else 2.0
        p = {}
        for l, m in enumerate(self.masks):
            last = l == self.n_layers - 1
            if last and self.zero_last:
                W = np.zeros(m.shape)
            else:
                fan_in = np.maximum(m.sum(axis=0), 1)
                W = rng.standard_normal(m.shape) * np.sqrt((1.0 if last else gain) / fan_in) * m
            p[self._W[l]] = W.astype(dtype)
            p[self._b[l]] = (np.zeros(m.shape[1]) if last
                             else hidden_bias_init(rng, np.maximum(m.sum(axis=0), 1))).astype(dtype)
        return p

    def masked_params(self, params, xp=np):
        """The parameter dict with every weight multiplied by its mask (biases as they are).

        A bool mask keeps the weight's dtype (float32 stays float32)."""
        mp = {b: params[b] for b in self._b}
        for W, m in zip(self._W, self.masks):
            mp[W] = params[W] * m
        return mp

    def apply(self, mp, x, xp=np):
        """``(out, mlp cache)`` from weights already masked by :meth:`masked_params` (a sequential
        inverse masks once and calls this ``D`` times)."""
        return self.mlp.forward(mp, x, xp)

    def forward(self, params, x, xp=np):
        """``(out, cache)``: ``x`` is ``(N, D)``, ``out`` is ``(N, k*D)`` in the layout of the module
        docstring.  Inputs are not validated here: the layer that owns the network validates its input."""
        mp = self.masked_params(params, xp)
        out, c = self.apply(mp, x, xp)
        return out, (mp, c)

    def backward(self, params, dout, cache, need_dx=True):
        """``(dx, grads)`` for the cotangent ``dout`` of the output; ``dx`` is None if not ``need_dx``."""
        mp, c = cache
        dx, grads = self.mlp.backward(mp, dout, c, need_dx=need_dx)
        for W, m in zip(self._W, self.masks):
            grads[W] = grads[W] * m
        return dx, grads

    def __repr__(self):
        return (f"MADE(dim={self.dim}, k={self.k}, hidden={self.hidden}, activation={self.activation!r}, "
                f"order={self.order.tolist()})")
