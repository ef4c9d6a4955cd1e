"""flowjax 19 (Ward et al., JAX + equinox): the cases whose parameterisation maps onto its bijections.

float64 throughout (``jax_enable_x64``; float32 cases in float32); flowjax bijections act on one sample, so
every map is ``jax.vmap``-ed over the batch, and the pullbacks are ``jax.vjp`` of the case's scalar
``sum(dy * y) + sum(dlogdet * logdet)`` with respect to the input and the case's parameters: flowjax's own
parameters are computed from the case's inside the differentiated function, so the chain rule through
any change of parameterisation is part of the check.  Where a flowjax bijection holds a constrained
parameter (``Affine``'s softplus scale, ``TriangularAffine``'s softplus diagonal), the adapter replaces it
with ``equinox.tree_at`` by the case's value.  Mappings, each exact to rounding:

* ``ElementwiseAffine``, ``ActNorm``: ``Affine`` with ``loc = shift`` and ``scale = exp(log_scale)``.
* ``Permutation``: ``Permute(perm)`` (``y = x[perm]``, the cases' convention).
* ``Sigmoid``: ``Sigmoid``; ``Logit``: ``Invert(Sigmoid())``, after ``Affine(alpha, 1 - 2 alpha)`` if
  ``alpha > 0``.
* ``LULinear``: ``Chain([TriangularAffine(upper M), TriangularAffine(unit lower L), Permute(perm),
  Loc(bias)])`` with ``M = U + diag(exp(log_scale))``.
* ``AffineCoupling`` (every scale map), ``AdditiveCoupling``: flowjax's ``Coupling`` (its first
  ``untransformed_dim`` coordinates condition; other masks between two ``Permute``) with the case's MLP as
  the conditioner and ``Affine`` (scale ``exp`` of the case's log-scale) or ``Loc`` as the transformer, whose
  ravelled parameters are the per-coordinate pairs ``[loc, log-scale]``.
* ``MaskedAffineAutoregressive`` (both updates, every scale): flowjax's ``MaskedAutoregressive`` with the
  case's MADE as its network, between ``Permute(order)`` and its inverse (flowjax's inverse solves the
  coordinates in index order, one per pass, from the input); the gated update as ``Affine`` with
  ``scale = sigmoid(r + c)`` and ``loc = (1 - sigmoid(r + c)) m``.
* ``RationalQuadraticSpline``: ``RationalQuadraticSpline(knots=K - 1, interval=B)`` per coordinate (``Vmap``),
  its knots and derivatives replaced by the case's (``x_pos``, ``y_pos``: the knots with the minimum bin
  sizes; ``derivatives``: 1 at both ends, ``m_d + softplus`` inside).  flowjax puts a point on a knot in the
  bin to its left (``searchsorted``), and ``jnp.clip`` halves the derivative at ``+-B``: the one-sided
  pullbacks there differ.
* ``SplineCoupling``, ``MaskedSplineAutoregressive``: ``Coupling`` / ``MaskedAutoregressive`` (as the affine
  ones) with a ``RationalQuadraticSpline`` transformer whose ``x_pos``, ``y_pos`` and ``derivatives`` are
  ``paramax.Parameterize``-d functions of the cases' unnormalised widths, heights and derivatives, so its
  ravelled parameters are the cases' per-coordinate ``[widths | heights | derivatives]``.
* ``Planar``: ``Planar(dim=D)`` (tanh).  flowjax constrains ``u`` with ``m(c) = log(1 + softplus(c)) - 1``,
  not the paper's ``softplus(c) - 1``: the same family of maps, so flowjax's raw ``u`` is the case's with
  its component along ``w`` changed, ``c_f = softplus^-1(expm1(softplus(c)))`` for ``c = w.u`` (then
  ``m(c_f) = softplus(c) - 1``).  No inverse with tanh: declared unavailable.  With
  ``activation="leaky_relu"``: ``Planar(dim=D, negative_slope=slope)``, whose closed-form inverse is checked.
* ``Sequential`` of mappable layers: ``Chain``.

flowjax has no LeakyReLU, dense linear, radial or continuous flow (not mapped).
"""
import numpy as np

from . import Unavailable, arrays, conditioner

NAME = "flowjax"


class NotMappable(Exception):
    """No counterpart in flowjax (reported as skip)."""


def _jax():
    import os
    # these cases are tiny: XLA's optimisation passes cost seconds per case and save nothing (the
    # flags change no floating-point semantics; they apply only if nothing has started jax yet)
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax


def _softplus(v):
    import jax.numpy as jnp
    return jnp.logaddexp(v, 0.0)



def _act(name):
    import jax
    import jax.numpy as jnp
    return {"relu": jax.nn.relu, "tanh": jnp.tanh, "elu": jax.nn.elu,
            "leaky_relu": lambda h: jax.nn.leaky_relu(h, 0.01)}[name]


def _mlp(P, n_layers, act, masks=None, prefix="net."):
    """The cases' conditioner MLP on one sample (W of shape (in, out)); with ``masks``, MADE."""
    return conditioner(P, n_layers, _act(act), masks, prefix)


def _log_scale(T, r):
    import jax
    import jax.numpy as jnp
    sc = T["scale"]
    if sc == "exp":
        return r
    if sc == "tanh":
        return T["scale_bound"] * jnp.tanh(r)
    if sc == "sigmoid":
        return jnp.log(jax.nn.sigmoid(r + 2.0) + 1e-3)
    if sc == "softplus":
        return jnp.log(_softplus(r) + 1e-3)
    if sc == "softclip":
        return r / (1 + jnp.abs(r) / T["scale_bound"])
    if sc == "logsigmoid":
        return jax.nn.log_sigmoid(r + 2.0)
    if sc == "neg_logsigmoid":
        return -jax.nn.log_sigmoid(r + 2.0)
    raise NotMappable(f"scale={sc!r} not mapped")


def _affine_template(dt):
    """flowjax's scalar ``Affine`` whose ravelled parameters are ``[loc, log-scale]`` (zeros at the template,
    since flowjax's constructor adds the template's values)."""
    import equinox as eqx
    import jax.numpy as jnp
    import paramax
    from flowjax.bijections import Affine
    z = jnp.zeros((), dt)
    return eqx.tree_at(lambda a: (a.loc, a.scale), Affine(), (z, paramax.Parameterize(jnp.exp, z)))


def _loc_template(dt):
    import jax.numpy as jnp
    from flowjax.bijections import Loc
    return _replace(Loc(0.0), lambda b: b.loc, jnp.zeros((), dt))


def _interleave(a, b):
    """``[a_0, b_0, a_1, b_1, ...]`` (flowjax's per-coordinate parameter layout)."""
    import jax.numpy as jnp
    return jnp.stack([a, b], axis=-1).reshape(-1)


def _replace(module, where, value):
    import equinox as eqx
    return eqx.tree_at(where, module, value)


def _elementwise_affine(T, P, dt):
    import jax.numpy as jnp
    from flowjax.bijections import Affine
    D = T["dim"]
    shift = P["shift"] if "shift" in P else jnp.zeros(D, dt)
    return _replace(Affine(jnp.zeros(D, dt), jnp.ones(D, dt)), lambda a: (a.loc, a.scale),
                    (shift, jnp.exp(P["log_scale"])))


def _perm(T, P, dt):
    from flowjax.bijections import Permute
    return Permute(np.asarray(T["perm"]))


def _sigmoid(T, P, dt):
    from flowjax.bijections import Sigmoid
    return Sigmoid((T["dim"],))


def _logit(T, P, dt):
    import jax.numpy as jnp
    from flowjax.bijections import Affine, Chain, Invert, Sigmoid
    D, a = T["dim"], T["alpha"]
    logit = Invert(Sigmoid((D,)))
    if a == 0.0:
        return logit
    sq = _replace(Affine(jnp.zeros(D, dt), jnp.ones(D, dt)), lambda b: (b.loc, b.scale),
                  (jnp.full(D, a, dt), jnp.full(D, 1 - 2 * a, dt)))
    return Chain([sq, logit])


def _lu(T, P, dt):
    import jax.numpy as jnp
    from flowjax.bijections import Chain, Loc, Permute, TriangularAffine
    D = T["dim"]
    I = jnp.eye(D, dtype=dt)
    M = jnp.triu(P["upper"], 1) + jnp.diag(jnp.exp(P["log_scale"]))
    L = jnp.tril(P["lower"], -1) + I
    z = jnp.zeros(D, dt)
    upper = _replace(TriangularAffine(z, I, lower=False), lambda b: (b.loc, b.triangular), (z, M))
    lower = _replace(TriangularAffine(z, I, lower=True), lambda b: (b.loc, b.triangular), (z, L))
    return Chain([upper, lower, Permute(np.asarray(T["perm"])), _replace(Loc(z), lambda b: b.loc, P["bias"])])


def _with_mask_first(mask, inner):
    """``inner`` (conditioning on its first ``d1`` coordinates) for an arbitrary mask: between two Permutes."""
    from flowjax.bijections import Chain, Permute
    p = np.concatenate([np.flatnonzero(mask == 1), np.flatnonzero(mask == 0)])
    if np.array_equal(p, np.arange(mask.size)):
        return inner
    return Chain([Permute(p), inner, Permute(np.argsort(p))])


def _coupling(T, P, dt):
    import jax
    from flowjax.bijections import Coupling
    mask = np.asarray(T["mask"])
    D, d1 = mask.size, int(mask.sum())
    d2 = D - d1
    net = _mlp(P, len(T["hidden"]) + 1, T["activation"])
    if T["type"] == "AdditiveCoupling":
        template, cond = _loc_template(dt), net
    else:
        template = _affine_template(dt)

        def cond(h):
            out = net(h)
            return _interleave(out[d2:], _log_scale(T, out[:d2]))
    c = Coupling(jax.random.PRNGKey(0), transformer=template, untransformed_dim=d1, dim=D, nn_width=1, nn_depth=0)
    c = _replace(c, lambda b: b.conditioner, cond)
    return _with_mask_first(mask, c)


def _maa(T, P, dt):
    import jax
    import jax.numpy as jnp
    D = T["dim"]
    o = np.asarray(T["order"])
    inv = np.argsort(o)
    masks = [jnp.asarray(np.asarray(m), dtype=dt) for m in T["masks"]]
    net = _mlp(P, len(T["hidden"]) + 1, T["activation"], masks=masks)

    def made(xp):                              # on x' = x[order]: coordinate k of x' has degree k + 1
        out = net(xp[inv])
        r, b = out[:D][o], out[D:][o]
        if T["update"] == "affine":
            return _interleave(b, _log_scale(T, r))
        u = r + T["gate_bias"]
        logg = jax.nn.log_sigmoid(u)
        return _interleave(jnp.exp(logg - u) * b, logg)           # loc = (1 - g) m, log-scale log g
    return _autoregressive(_affine_template(dt), made, o)


def _autoregressive(transformer, made, order):
    """flowjax's ``MaskedAutoregressive`` with ``transformer`` and its MLP replaced by the case's ``made``
    (a function of the coordinates in ``order``), wrapped as ``Permute(order)``, it, ``Permute(argsort(order))``
    unless the order is the identity (flowjax solves its inverse in index order)."""
    import jax
    from flowjax.bijections import Chain, MaskedAutoregressive, Permute
    D = len(order)
    m = MaskedAutoregressive(jax.random.PRNGKey(0), transformer=transformer, dim=D, nn_width=max(D, 2), nn_depth=1)
    m = _replace(m, lambda b: b.masked_autoregressive_mlp, made)
    if np.array_equal(order, np.arange(D)):
        return m
    return Chain([Permute(order), m, Permute(np.argsort(order))])


def _knots(T, u, m):
    import jax
    import jax.numpy as jnp
    K, B = T["n_bins"], T["bound"]
    w = m + (1 - K * m) * jax.nn.softmax(u, axis=-1)
    c = -B + 2 * B * jnp.cumsum(w, axis=-1)[..., :-1]
    ends = jnp.ones(u.shape[:-1] + (1,), u.dtype)
    return jnp.concatenate([-B * ends, c, B * ends], axis=-1)


def _spline_template(T, dt):
    """flowjax's scalar ``RationalQuadraticSpline`` whose knots and derivatives are computed from the cases'
    unnormalised parameters: its ravelled parameters are ``[widths K | heights K | derivatives K-1]`` (zeros
    at the template), the cases' per-coordinate layout."""
    import jax.numpy as jnp
    import paramax
    from flowjax.bijections import RationalQuadraticSpline
    K = T["n_bins"]
    s = RationalQuadraticSpline(knots=K - 1, interval=float(T["bound"]))
    return _replace(s, lambda b: (b.x_pos, b.y_pos, b.derivatives), (
        paramax.Parameterize(lambda u: _knots(T, u, T["min_bin_width"]), jnp.zeros(K, dt)),
        paramax.Parameterize(lambda u: _knots(T, u, T["min_bin_height"]), jnp.zeros(K, dt)),
        paramax.Parameterize(lambda v: _knot_derivatives(T, v), jnp.zeros(K - 1, dt))))


def _knot_derivatives(T, v):
    """``[1, m_d + softplus(v), 1]`` along the last axis (flowjax may apply it to stacked parameters)."""
    import jax.numpy as jnp
    one = jnp.ones(v.shape[:-1] + (1,), v.dtype)
    return jnp.concatenate([one, T["min_derivative"] + _softplus(v), one], axis=-1)


def _spline_coupling(T, P, dt):
    import jax
    from flowjax.bijections import Coupling
    mask = np.asarray(T["mask"])
    D, d1 = mask.size, int(mask.sum())
    net = _mlp(P, len(T["hidden"]) + 1, T["activation"])
    c = Coupling(jax.random.PRNGKey(0), transformer=_spline_template(T, dt), untransformed_dim=d1, dim=D,
                 nn_width=1, nn_depth=0)
    return _with_mask_first(mask, _replace(c, lambda b: b.conditioner, net))   # (d2, 3K-1) row-major: as the cases


def _msa(T, P, dt):
    import jax
    D, K = T["dim"], T["n_bins"]
    o = np.asarray(T["order"])
    inv = np.argsort(o)
    masks = [jax.numpy.asarray(np.asarray(m), dtype=dt) for m in T["masks"]]
    net = _mlp(P, len(T["hidden"]) + 1, T["activation"], masks=masks)

    def made(xp):                              # the cases' (3K-1, D) columns as flowjax's (D, 3K-1) rows
        return net(xp[inv]).reshape(3 * K - 1, D)[:, o].T.reshape(-1)
    return _autoregressive(_spline_template(T, dt), made, o)


def _spline(T, P, dt):
    import jax.numpy as jnp
    from flowjax.bijections import RationalQuadraticSpline, Vmap
    import equinox as eqx
    D, K = T["dim"], T["n_bins"]
    xk = _knots(T, P["raw_widths"], T["min_bin_width"])
    yk = _knots(T, P["raw_heights"], T["min_bin_height"])
    one = jnp.ones((D, 1), dt)
    d = jnp.concatenate([one, T["min_derivative"] + _softplus(P["raw_derivatives"]), one], axis=-1)
    s = RationalQuadraticSpline(knots=K - 1, interval=float(T["bound"]))
    s = eqx.filter_vmap(lambda _: s)(jnp.arange(D))
    s = _replace(s, lambda b: (b.x_pos, b.y_pos, b.derivatives), (xk, yk, d))
    return Vmap(s, in_axes=eqx.if_array(0))


def _planar(T, P, dt):
    import jax
    import jax.numpy as jnp
    from flowjax.bijections import Planar
    w, u = P["w"], P["u"]
    c = w @ u
    cf = _softplus_inverse(jnp.expm1(_softplus(c)))      # log(1 + softplus(cf)) = softplus(c)
    uf = u + (cf - c) * w / (w @ w)
    leaky = T.get("activation", "tanh") == "leaky_relu"
    p = Planar(jax.random.PRNGKey(0), dim=T["dim"], negative_slope=T["slope"] if leaky else None)
    return _replace(p, lambda b: b.params, jnp.concatenate([w, uf, P["b"]]).astype(dt))


def _softplus_inverse(v):
    import jax.numpy as jnp
    return v + jnp.log(-jnp.expm1(-v))


NO_INVERSE = {"Planar": "flowjax's Planar with tanh has no inverse (NotImplementedError; only negative_slope has one)"}


def _sequential(T, P, dt):
    from flowjax.bijections import Chain
    return Chain([build(L, {k[len(f"{i}."):]: v for k, v in P.items() if k.startswith(f"{i}.")}, dt)
                  for i, L in enumerate(T["layers"])])


def _no_inverse(T):
    if T["type"] == "Planar" and T.get("activation", "tanh") == "leaky_relu":
        return None
    if T["type"] in NO_INVERSE:
        return NO_INVERSE[T["type"]]
    for L in T.get("layers", []):
        r = _no_inverse(L)
        if r:
            return f"a layer: {r}"
    return None


def _not(reason):
    def f(T, P, dt):
        raise NotMappable(reason)
    return f


BUILD = {
    "ElementwiseAffine": _elementwise_affine, "ActNorm": _elementwise_affine, "Permutation": _perm,
    "Sigmoid": _sigmoid, "Logit": _logit, "LULinear": _lu, "AffineCoupling": _coupling,
    "AdditiveCoupling": _coupling, "MaskedAffineAutoregressive": _maa, "RationalQuadraticSpline": _spline,
    "Planar": _planar, "Sequential": _sequential,
    "LeakyReLU": _not("flowjax has no LeakyReLU bijection"), "Linear": _not("flowjax has no dense linear bijection"),
    "Radial": _not("flowjax has no radial flow"), "CNF": _not("flowjax has no continuous flow"),
    "SplineCoupling": _spline_coupling, "MaskedSplineAutoregressive": _msa,
}


SPLINE_TYPES = ("RationalQuadraticSpline", "SplineCoupling", "MaskedSplineAutoregressive")


def build(T, P, dt):
    if T["type"] not in BUILD:
        raise NotMappable(f"no flowjax mapping for {T['type']}")
    return BUILD[T["type"]](T, P, dt)


def supports(case):
    try:
        _jax()
        import flowjax  # noqa: F401
    except ImportError:
        return "flowjax is not installed (pip install -e '.[jax]')"
    return _unmappable(case["transform"])


def _unmappable(T):
    """The reason a description has no flowjax counterpart, or None (decided on the description alone:
    building flowjax's modules eagerly costs seconds of op-by-op dispatch)."""
    if T["type"] == "Sequential":
        return next((r for r in map(_unmappable, T["layers"]) if r), None)
    if T["type"] not in BUILD:
        return f"no flowjax mapping for {T['type']}"
    if T["type"] in SPLINE_TYPES and T.get("tails", "linear") != "linear":
        return ("flowjax's RationalQuadraticSpline has identity tails outside [-B, B] and end derivatives 1; "
                "this case is the bounded spline (tails null, free end derivatives) on an interval")
    if BUILD[T["type"]].__name__ == "f":                         # a _not(reason)
        try:
            BUILD[T["type"]](T, {}, None)
        except NotMappable as e:
            return str(e)
    return None


def run(case):
    jax = _jax()
    import jax.numpy as jnp
    c = arrays(case)
    T, dt = case["transform"], c.dtype
    P = {k: jnp.asarray(v) for k, v in c.params.items()}

    def fwd(x, P):
        return jax.vmap(build(T, P, dt).transform_and_log_det)(x)

    @jax.jit
    def with_pullback(x, P, dy, dl):              # one compilation for the map and its VJP
        (y, ld), vjp = jax.vjp(fwd, x, P)
        dx, dP = vjp((dy.astype(y.dtype), dl.astype(ld.dtype)))
        return y, ld, dx, dP

    x = jnp.asarray(c.x)
    if c.dy is not None:
        y, ld, dx, dP = with_pullback(x, P, jnp.asarray(c.dy), jnp.asarray(c.dlogdet))
        out = {"forward.output": y, "forward.logdet": ld, "pullback.dx": dx}
        for k, v in dP.items():
            out[f"pullback.dparams[{k}]"] = v
    else:
        y, ld = jax.jit(fwd)(x, P)
        out = {"forward.output": y, "forward.logdet": ld}
    res = {k: np.asarray(v) for k, v in out.items()}
    reason = _no_inverse(T)
    if reason:
        res["inverse"] = Unavailable(reason)
    else:
        inv = jax.jit(lambda y, P: jax.vmap(build(T, P, dt).inverse_and_log_det)(y))
        xi, ldi = inv(jnp.asarray(c.y), P)
        res["inverse.output"], res["inverse.logdet"] = np.asarray(xi), np.asarray(ldi)
    return res
