"""MADE: a masked MLP whose outputs are autoregressive in its inputs (Germain et al. 2015, arXiv:1502.03509).

Each input coordinate ``d`` gets a *degree* ``m(d)`` in ``1..D`` (its position in the autoregressive order);
each hidden unit gets a degree too, and a weight is kept only where it cannot carry information from an
input to an output of equal or lower degree.  The network is then an ordinary :class:`~npflows.nn.MLP`
whose weights are multiplied by fixed binary masks, so it reuses the MLP's forward (fast NumPy path and
traceable ``xp`` path) and backward, with the masks applied to the weight gradients.  A sequential inverse
(an autoregressive layer solving for its own input) uses :meth:`MADE.solve_by_degree`, which computes each
unit once, degree by degree, instead of ``D`` full passes.

Output layout: ``k`` outputs per input coordinate, grouped by parameter.  ``out[:, j*D:(j+1)*D]`` is
parameter ``j`` for all ``D`` coordinates in their original (not autoregressive) index order, so
``out[:, j*D + i]`` is parameter ``j`` of coordinate ``i`` and depends only on the inputs ``x_l`` with
``m(l) < m(i)``.

A conditional MADE (``context_dim=C``) also reads a context ``(N, C)``: the context columns are inputs of
degree 0, so no mask cuts them from any first-layer hidden unit, and every output may depend on the context
(also those of the first coordinate, through hidden units of degree 0), as zuko's ``MaskedMLP`` does with its
all-ones context adjacency.
"""
import numpy as np

from .mlp import ACTIVATIONS, MLP, activate_, check_context_dim, hidden_bias_init

ORDERS = ("natural", "reversed", "random")
HIDDEN_DEGREES = ("equal", "random")
UNITS_PER_BLOCK = 16   # solve_by_degree: hidden units per block of degrees (measured best at D = 64; see there)


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
    context_dim : int, optional
        C: a conditional MADE, whose first layer also reads a context ``(N, C)`` (``W0`` has ``D + C`` rows,
        the last C for the context; see Notes, "Context").  ``forward`` then needs it and ``backward`` returns
        its cotangent as a third value.

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
    connectivity : bool ndarray, shape (D + C, k*D)
        ``connectivity[l, c]``: some path of unmasked weights leads from input ``l`` to output ``c`` (rows
        ``D ..`` are the context's).

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

    **Context** (a conditional MADE).  The context columns :math:`c_1, \\dots, c_C` are appended to the input
    with degree :math:`m^0 = 0`: the first hidden layer keeps the weight from :math:`c_j` to unit :math:`u` iff
    :math:`m^1(u) \\ge 0`, always, so the context reaches every first-layer unit unmasked (nflows' MADE adds a
    dense ``context_layer`` to the first hidden layer; zuko's MAF appends the context to the input with an
    all-ones adjacency; both leave the context columns unmasked), and the hidden degrees start at
    :math:`\\min m^0 = 0` (cyclic on :math:`\\{0, \\dots, D-1\\}`).  A unit of degree 0 sees the context and no
    coordinate, and feeds every output (all of degree :math:`\\ge 1`), so the parameters of the first
    coordinate depend on the context too (in nflows' MADE, whose hidden degrees start at 1, they are output
    biases only).  No path leads from a coordinate to an output of equal or lower degree, so the outputs
    stay autoregressive in x for every fixed context and the Jacobian argument of the layers is unchanged.
    Forward and backward are the MLP's with input :math:`a_0 = [x, c]` and masked weights: :math:`\\bar c`
    is the last C columns of :math:`\\bar a_0 = \\bar h_0\\tilde W_0^T` (the context rows of the mask are all
    ones, so :math:`\\bar c = \\bar h_0 W_0[D:]^T`).  In :meth:`solve_by_degree` the context is known
    before the first step, so its term :math:`c\\,W_0[D:]` joins the first layer's bias (one row per sample).

    **Initialisation** counts only the connections a unit really has:
    :math:`W_l[:, u] \\sim \\mathcal N(0, g/n_u)` with :math:`n_u` the number of kept inputs of unit ``u``
    (g = 2 for the ReLU family, 1 for tanh, 1 on the output layer, as in :class:`~npflows.nn.MLP`), then
    masked; hidden biases :math:`\\sim U(\\pm 1/\\sqrt{n_u})` (:func:`~npflows.nn.mlp.hidden_bias_init`), output
    biases zero.
    """

    def __init__(self, dim, k=2, hidden=(64, 64), activation="relu", order="natural", rng=None,
                 hidden_degrees="equal", zero_last=False, prefix="", context_dim=None):
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
        self.context_dim = check_context_dim("MADE", context_dim)
        self.dim, self.k, self.hidden = dim, k, hidden
        self.order = _input_order(dim, order, rng)
        self.degrees = np.empty(dim, np.intp)
        self.degrees[self.order] = np.arange(1, dim + 1)
        self.output_degrees = np.tile(self.degrees, k)

        self.hidden_degree_list, prev = [], self.input_degrees
        for width in hidden:
            lo = min(int(prev.min()), dim - 1)          # Germain et al.: from min of the layer below to D-1
            if hidden_degrees == "random":
                deg = rng.integers(lo, dim, size=width)  # uniform on {lo, ..., D-1}
            else:
                deg = lo + np.arange(width) % (dim - lo)
            self.hidden_degree_list.append(deg.astype(np.intp))
            prev = deg
        degs = [self.input_degrees] + self.hidden_degree_list
        self.masks = [degs[l][:, None] <= degs[l + 1][None, :] for l in range(len(hidden))]
        self.masks.append(degs[-1][:, None] < self.output_degrees[None, :])
        self.connectivity = self.check_autoregressive()

        self.mlp = MLP(dim, k * dim, hidden, activation, zero_last=zero_last, prefix=prefix,
                       context_dim=self.context_dim)
        self.activation, self.zero_last, self.prefix = activation, bool(zero_last), self.mlp.prefix
        self.sizes, self.n_layers = self.mlp.sizes, self.mlp.n_layers
        self._W, self._b = self.mlp._W, self.mlp._b

    @property
    def input_degrees(self):
        """The degrees of the first layer's inputs: the coordinates' (``degrees``), then 0 for each context
        column of a conditional MADE."""
        if self.context_dim is None:
            return self.degrees
        return np.concatenate([self.degrees, np.zeros(self.context_dim, np.intp)])

    def _plan_by_degree(self):
        """The index structure of :meth:`solve_by_degree`, from the current degrees (no parameters): each
        layer's units sorted by the step that computes them, and the input prefixes they read; None when a
        mask keeps a weight that the degrees would drop (masks set by hand), as only then the prefixes miss
        a term.  Computed per call (microseconds), so degrees and masks assigned after construction (as
        :func:`npflows.describe.build` does) are honoured."""
        D = self.dim
        steps = np.arange(D + 1)
        units, bounds, rules = [], [], []
        prev = self.degrees
        for deg in self.hidden_degree_list:
            u = np.argsort(deg, kind="stable")
            units.append(u)
            bounds.append(np.searchsorted(deg[u], steps))              # units of degree < t
            rules.append(prev[:, None] <= deg[None, :])
            prev = deg
        rules.append(prev[:, None] < self.output_degrees[None, :])
        masks = [self.masks[0][:D]] + list(self.masks[1:])      # the coordinates' rows (the context's are known)
        if len(rules) != len(masks) or any(m.shape != r.shape or np.any(m & ~r) for m, r in zip(masks, rules)):
            return None
        # units[l]: layer l's output units (hidden units, or output columns) in the order they are computed;
        # bounds[l][t]: how many of them are computed before step t (units of step t: bounds[t]:bounds[t+1]).
        units.append((self.order[:, None] + D * np.arange(self.k)[None, :]).ravel())
        bounds.append(self.k * steps)                                  # coordinate order[t]'s k columns
        # inputs[l]: layer l's input units in the same order (the coordinates by degree for l = 0);
        # need[l][t]: the input prefix that the units of step t read (their whole support under the degrees);
        # known[l][s]: the part of it known before step s.
        inputs = [self.order] + units[:-1]
        need = [steps[:D]] + [b[1:] for b in bounds[:-1]]              # x of degree <= t; units of degree <= t
        known = [steps[:D]] + [b[:D] for b in bounds[:-1]]             # ... of degree < t
        per_step = max(int(np.diff(b).max()) for b in bounds)
        return units, bounds, inputs, need, known, per_step

    def check_autoregressive(self):
        """The boolean product of the masks, ``(D, k*D)``, after checking that it connects no input to an
        output of equal or lower degree; raises ``AssertionError`` otherwise (an explicit raise, not an
        ``assert`` statement, so it also holds under ``python -O``)."""
        c = self.masks[0]
        for m in self.masks[1:]:
            c = (c.astype(np.int64) @ m.astype(np.int64)) > 0
        deg = self.input_degrees
        leaks = c & ~(deg[:, None] < self.output_degrees[None, :])
        if leaks.any():
            l, o = np.argwhere(leaks)[0]
            raise AssertionError(f"MADE: output {o} (degree {self.output_degrees[o]}) is connected to input {l} "
                                 f"(degree {deg[l]}): the masks are not autoregressive")
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

    def apply(self, mp, x, xp=np, context=None):
        """``(out, mlp cache)`` from weights already masked by :meth:`masked_params` (a sequential
        inverse masks once and calls this ``D`` times)."""
        return self.mlp.forward(mp, x, xp, context)

    def forward(self, params, x, xp=np, context=None):
        """``(out, cache)``: ``x`` is ``(N, D)``, ``out`` is ``(N, k*D)`` in the layout of the module
        docstring; ``context`` ``(N, C)`` for a conditional MADE.  Inputs are not validated here: the layer
        that owns the network validates its input."""
        mp = self.masked_params(params, xp)
        out, c = self.apply(mp, x, xp, context)
        return out, (mp, c)

    def solve_by_degree(self, params, step, n, dtype, block=None, context=None):
        """Evaluate the network one degree at a time while its own input is being produced: the sequential
        inverse of an autoregressive layer, each unit computed once (NumPy only; see Notes).

        Parameters
        ----------
        params : dict
            The network's parameters; the weights are multiplied by the masks, as in :meth:`forward`.
        step : callable
            ``step(t, out, x_t)`` for ``t = 0, ..., D-1``: ``out`` ``(k, n)`` holds the outputs of coordinate
            ``order[t]`` (``out[j]`` is parameter ``j``; a scratch row the callee may overwrite), computed from
            the coordinates before it; the callee writes the value of that coordinate into ``x_t`` ``(n,)``.
        n : int
            Batch size.
        dtype : numpy dtype
            Of the work arrays and the result.
        block : int, optional
            Degrees per block (see Notes); by default about ``UNITS_PER_BLOCK`` hidden units per block,
            and at least 4 degrees.
        context : ndarray, optional
            ``(n, C)``, for a conditional MADE: known from the start, its term joins the first layer's bias.

        Returns
        -------
        x : ndarray, shape (n, D)
            The coordinates that ``step`` produced, in their original index order.

        Notes
        -----
        **Each unit once.**  A hidden unit of degree :math:`d` depends only on the inputs of degree
        :math:`\\le d` (the masks keep a weight only where the degree does not decrease), and the outputs of
        the coordinate of degree :math:`t+1` only on hidden units of degree :math:`\\le t`.  So at step
        :math:`t = 0, \\dots, D-1`, once the coordinates of degree :math:`\\le t` are known, the hidden units of
        degree :math:`t` (layer by layer) and then the outputs of coordinate ``order[t]`` have their final
        values, and ``step`` turns those into coordinate ``order[t]`` (degree :math:`t+1`).  Every unit is
        computed once, from values that never change afterwards, instead of the whole network once per
        coordinate (:math:`D` passes).  In total that is at most one forward pass of arithmetic (about half:
        the products skip the weights that the masks zero), in :math:`D` steps of small products.

        **The same sums.**  Sort every layer's units by the step that computes them and its inputs likewise
        (the coordinates by degree).  Then the kept weights of the units of step :math:`t` are exactly a
        prefix of their input rows: the inputs of degree :math:`\\le t` (hidden layers, and the first layer's
        coordinates) or :math:`\\le t` hidden units for the outputs of degree :math:`t+1`, whose mask is
        strict.  The masks keep no weight outside these prefixes (checked at every call, since degrees and
        masks may be assigned after construction; masks that keep more take :math:`D` full passes instead,
        handing ``step`` the same values).  So the product of the masked weights with that prefix is the
        masked product :math:`a\\tilde W` of :meth:`forward` with zeros left out; only the order of summation
        differs, so each value agrees with the dense forward pass to rounding (the usual dot-product bound, a
        few units in the last place of :math:`\\sum|w||a|`), not bitwise.

        **Blocks.**  The inputs of the units of steps :math:`s \\le t < s + B` split into those known before
        step :math:`s` and those produced inside the block.  The first part is one product per layer at the
        start of the block (a GEMM of the block's units against every earlier input), the second a small
        product at each step.  :math:`B = 1` and :math:`B = D` are the two ends: many large products, or a
        product that grows to the full prefix at each step.  The default, about ``UNITS_PER_BLOCK = 16``
        hidden units per block and at least 4 degrees, was the fastest or within 5% of it in one layer's
        inverse at batch 1024, float32 and float64 (one BLAS thread): at D = 64 1.1x (hidden 64) to 1.3x
        (hidden 128) faster than no blocks (``block=D``) and 1.3-1.4x faster than ``block=1``; at D = 8
        (hidden 64) the block size matters little (1 to 8 within 15%).

        All work arrays are feature-major (``(units, n)``), so the units of a step are contiguous rows and
        every product writes into them in place (``matmul(out=)``); no cache is kept: nothing here is
        differentiated.
        """
        D, L, k = self.dim, self.n_layers, self.k
        dtype = np.dtype(dtype)
        plan = self._plan_by_degree()
        if plan is None:
            return self._solve_by_passes(params, step, n, dtype, context)
        units, bounds, inputs, need, known, per_step = plan
        if block is None:
            block = max(4, UNITS_PER_BLOCK * D // max(self.hidden))
        block = max(1, int(block))
        # W[l]: the masked weights (units of layer l, inputs of layer l), both in step order; b[l] a column.
        W = [(params[self._W[l]] * self.masks[l]).T.take(units[l], axis=0).take(inputs[l], axis=1)
             for l in range(L)]
        b = [params[self._b[l]].take(units[l])[:, None] for l in range(L)]
        if self.context_dim is not None:        # the context's term, one column per sample: (units, n)
            Wc = (params[self._W[0]][D:] * self.masks[0][D:]).take(units[0], axis=1)
            b[0] = b[0] + Wc.T @ np.ascontiguousarray(context.T)
        xs = np.empty((D, n), dtype)                                 # coordinates by degree, feature-major
        acts = [np.empty((w, n), dtype) for w in self.sizes[1:]]     # every unit, in step order
        part = [np.empty((w, n), dtype) for w in self.sizes[1:]]     # the sums over inputs known before a block
        ins = [xs] + acts[:-1]
        relu = self.activation == "relu"
        zeros = np.zeros((per_step, n), dtype) if relu else None
        for s in range(0, D, block):
            e = min(s + block, D)
            for l in range(L):                 # the known part of every unit of the block: one product per layer
                lo, hi, r = bounds[l][s], bounds[l][e], known[l][s]
                if hi > lo:
                    p = part[l][lo:hi]
                    if r:
                        np.matmul(W[l][lo:hi, :r], ins[l][:r], out=p)
                        p += b[l][lo:hi]
                    else:
                        p[...] = b[l][lo:hi]
            for t in range(s, e):              # the rest, one step at a time
                for l in range(L):
                    lo, hi = bounds[l][t], bounds[l][t + 1]
                    if hi == lo:
                        continue
                    h = acts[l][lo:hi]
                    r0, r1 = known[l][s], need[l][t]
                    if r1 > r0:
                        np.matmul(W[l][lo:hi, r0:r1], ins[l][r0:r1], out=h)
                        h += part[l][lo:hi]
                    else:
                        h[...] = part[l][lo:hi]
                    if l < L - 1:
                        if relu:
                            np.maximum(h, zeros[:hi - lo], out=h)     # an array operand: several times faster than 0.0
                        else:
                            activate_(self.activation, h)
                step(t, acts[-1][k * t:k * (t + 1)], xs[t])
        x = np.empty((n, D), dtype)
        x[:, self.order] = xs.T
        return x

    def _solve_by_passes(self, params, step, n, dtype, context=None):
        """:meth:`solve_by_degree` by ``D`` full passes (masks that the degrees do not describe): pass ``t``
        evaluates the whole network on the coordinates solved so far (zeros elsewhere) and hands ``step`` the
        outputs of coordinate ``order[t]``, final because its inputs of lower degree all are."""
        D, k = self.dim, self.k
        mp = self.masked_params(params)
        x = np.zeros((n, D), dtype)
        x_t = np.empty(n, dtype)
        cols = np.arange(k) * D
        for t, i in enumerate(self.order):
            out = self.apply(mp, x, np, context)[0]
            step(t, np.ascontiguousarray(out[:, cols + i].T), x_t)
            x[:, i] = x_t
        return x

    def backward(self, params, dout, cache, need_dx=True):
        """``(dx, grads)`` for the cotangent ``dout`` of the output; ``dx`` is None if not ``need_dx``.  A
        conditional MADE returns ``(dx, grads, dcontext)``."""
        mp, c = cache
        out = self.mlp.backward(mp, dout, c, need_dx=need_dx)
        grads = out[1]
        for W, m in zip(self._W, self.masks):
            grads[W] = grads[W] * m
        return out

    def __repr__(self):
        ctx = "" if self.context_dim is None else f", context_dim={self.context_dim}"
        return (f"MADE(dim={self.dim}, k={self.k}, hidden={self.hidden}, activation={self.activation!r}, "
                f"order={self.order.tolist()}{ctx})")
