"""Descriptions of models as JSON: what ``npflows.save`` stores as a model's structure and ``npflows.load``
rebuilds, and the ``transform`` object of a golden case in ``validation/``.

A description is ``{"type": <npflows class name>, <constructor argument>: <value>, ...}``; composites nest
(``Sequential`` has ``layers``, ``Inverse`` has ``base``).  Any bijector whose constructor arguments are
stored under the same attribute names is described without code here (the generic rule); the
couplings, whose MLP widths live on their conditioner, have explicit rules.  The validation generator
checks every description by rebuilding the transform from it and comparing outputs bit for bit, and the
tests save and load every registry entry, so an incomplete description cannot slip through.

A conditional layer's ``context_dim`` is part of its description (``"context_dim": C``); an unconditional
layer's (None) is left out, so descriptions written before conditional flows existed are unchanged.

Flows and bases are described too (:func:`describe_model`, :func:`build_model`):
``{"type": "NormalizingFlow", "bijector": {...}, "base": {"type": "StandardNormal", "dim": 2}, ...}`` (an
image base: ``"shape": [C, H, W]``).
"""
import inspect

import numpy as np

import npflows as nf    # attribute lookups happen at call time, after the package has finished importing


def family_of(b):
    """The family name of a bijector: its module under ``npflows.bijectors`` (``composite`` for
    Sequential/Inverse/RecomputeSequential)."""
    mod = type(b).__module__.rsplit(".", 1)[-1]
    return "composite" if mod in ("compose", "bijector", "reversible") else mod


def _jsonify(owner, v, limits=True):
    if isinstance(v, nf.Bijector):
        return describe(v, limits)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "biu":
            return v.astype(int).tolist()
        if v.dtype.kind == "f":
            return v.astype(float).tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonify(owner, e, limits) for e in v]
    raise TypeError(f"{owner}: cannot describe a value of type {type(v).__name__} in JSON")


def _coupling(b):
    d = {"type": type(b).__name__, "mask": b.mask.astype(int).tolist(), "hidden": list(b.net.sizes[1:-1]),
         "activation": b.net.activation}
    if isinstance(b, nf.AffineCoupling):
        d.update(scale=b.scale, scale_bound=b.scale_bound)
    return _with_context(d, b)


def _with_context(d, b):
    """``d`` with ``context_dim`` when ``b`` is conditional (left out when None: see the module docstring)."""
    if getattr(b, "context_dim", None) is not None:
        d["context_dim"] = int(b.context_dim)
    return d


def _made(net):
    """A MADE conditioner: sizes, order, degrees and its masks (so "random" hidden degrees are explicit)."""
    return {"hidden": list(net.hidden), "activation": net.activation, "order": net.order.tolist(),
            "degrees": net.degrees.tolist(), "hidden_degrees": [d.tolist() for d in net.hidden_degree_list],
            "masks": [m.astype(int).tolist() for m in net.masks]}


def _masked_affine(b):
    return _with_context({"type": "MaskedAffineAutoregressive", "dim": b.dim, **_made(b.net), "update": b.update,
                          "scale": b.scale, "scale_bound": b.scale_bound, "gate_bias": b.gate_bias}, b)


def _spline_config(sp):
    """The spline keys; a bounded spline (``tails=None``) has ``tails: null`` and ``interval`` instead of
    ``bound`` (linear-tail descriptions are unchanged)."""
    dom = {"bound": sp.bound} if sp.tails == "linear" else {"tails": None, "interval": list(sp.interval)}
    return {"n_bins": sp.n_bins, **dom, "min_bin_width": sp.min_bin_width,
            "min_bin_height": sp.min_bin_height, "min_derivative": sp.min_derivative}


def _planar(b):
    d = {"type": "Planar", "dim": b.dim, "rtol": b.rtol, "maxiter": b.maxiter}
    if b.activation != "tanh":                  # tanh (the default) is described as before the option existed
        d.update(activation=b.activation, slope=b.slope)
    return d


RULES = {
    "Planar": _planar,
    "Radial": lambda b: ({"type": "Radial", "dim": b.dim} if b.alpha == "softplus"      # as before the option
                         else {"type": "Radial", "dim": b.dim, "alpha": b.alpha}),
    "MaskedAffineAutoregressive": _masked_affine,
    "MaskedSplineAutoregressive": lambda b: _with_context({"type": "MaskedSplineAutoregressive", "dim": b.dim,
                                                           **_made(b.net), **_spline_config(b.spline)}, b),
    "RationalQuadraticSpline": lambda b: {"type": "RationalQuadraticSpline", "dim": b.dim,
                                          **_spline_config(b.spline)},
    "SplineCoupling": lambda b: _with_context({"type": "SplineCoupling", "mask": b.mask.astype(int).tolist(),
                                               "hidden": list(b.net.sizes[1:-1]), "activation": b.net.activation,
                                               **_spline_config(b.spline)}, b),
    "Sequential": lambda b, limits: {"type": "Sequential", "layers": [describe(l, limits) for l in b.layers]},
    "Inverse": lambda b, limits: {"type": "Inverse", "base": describe(b.base, limits)},
    "AdditiveCoupling": _coupling,
    "AffineCoupling": _coupling,
}


NOT_THE_MAP = {"max_nfe"}
"""Constructor arguments that bound a computation's cost, not the map it computes (the CNF's solver budget):
saved with a model, but left out of a golden case's description (``limits=False``), so that another
implementation is not asked for them."""


def describe(b, limits=True):
    """The JSON description of bijector ``b``; ``limits=False`` leaves out :data:`NOT_THE_MAP`."""
    name = type(b).__name__
    if name in ("Sequential", "Inverse"):
        return RULES[name](b, limits)
    if name in RULES:
        return RULES[name](b)
    d = {"type": name}
    for p in list(inspect.signature(type(b).__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or (not limits and p.name in NOT_THE_MAP):
            continue
        if p.name == "context_dim" and getattr(b, "context_dim", None) is None:
            continue                              # unconditional: described as before contexts existed
        if hasattr(b, p.name):
            d[p.name] = _jsonify(name, getattr(b, p.name), limits)
        elif p.default is p.empty:
            raise TypeError(f"cannot describe {name}: constructor argument {p.name!r} is not stored as an "
                            f"attribute; add a rule to npflows/describe.py RULES")
    return d


def build(desc):
    """The npflows bijector a description stands for (the npflows adapter's constructor)."""
    desc = dict(desc)
    name = desc.pop("type")
    if name == "Sequential":
        return nf.Sequential([build(l) for l in desc["layers"]])
    if name == "Inverse":
        return nf.Inverse(build(desc["base"]))
    cls = getattr(nf, name, None) or getattr(nf.bijectors, name)
    if name in ("MaskedAffineAutoregressive", "MaskedSplineAutoregressive"):
        masks = [np.asarray(m, dtype=bool) for m in desc.pop("masks")]
        hd = [np.asarray(d, dtype=np.intp) for d in desc.pop("hidden_degrees")]
        desc.pop("degrees")
        b = cls(desc.pop("dim"), hidden=tuple(desc.pop("hidden")), order=np.asarray(desc.pop("order")), **desc)
        b.net.hidden_degree_list, b.net.masks = hd, masks      # explicit: "random" hidden degrees included
        b.net.connectivity = b.net.check_autoregressive()
        return b
    if "interval" in desc:
        desc["interval"] = tuple(desc["interval"])
    if name in ("AdditiveCoupling", "AffineCoupling", "SplineCoupling"):
        desc["mask"] = np.asarray(desc["mask"])
        desc["hidden"] = tuple(desc["hidden"])
        return cls(**desc)
    kw = {k: (_build_value(v)) for k, v in desc.items()}
    return cls(**kw)


def _build_value(v):
    if isinstance(v, dict) and "type" in v:
        return build(v)
    if isinstance(v, list):
        if all(isinstance(e, dict) and "type" in e for e in v):
            return [build(e) for e in v]
        return np.asarray(v)
    return v


BASES = ("StandardNormal", "DiagNormal", "UniformBox", "StandardLogistic")
FLOWS = ("NormalizingFlow", "PushForward")


def describe_model(model):
    """The JSON description of a bijector, a base distribution, or a flow (its bijector, base and options)."""
    name = type(model).__name__
    if name in FLOWS:
        d = {"type": name, "bijector": describe(model.bijector), "base": describe_model(model.base)}
        if name == "NormalizingFlow":
            d["chunk_rows"] = model.chunk_rows
        return d
    if name in BASES:       # a vector event as "dim" (as before event shapes), an image's as "shape"
        es = model.event_shape
        d = {"type": name, "dim": model.dim} if len(es) == 1 else {"type": name, "shape": list(es)}
        if name == "UniformBox":
            d.update(low=model.low, high=model.high)
        return d
    if isinstance(model, nf.Bijector):
        return describe(model)
    raise TypeError(f"describe_model: cannot describe a {name}; expected a bijector, a base distribution from "
                    f"npflows.distributions, a NormalizingFlow or a PushForward")


def build_model(desc):
    """The model a :func:`describe_model` description stands for."""
    if not isinstance(desc, dict) or "type" not in desc:
        raise ValueError(f"build_model: expected a description with a 'type', got {desc!r}")
    name = desc["type"]
    if name in FLOWS:
        extra = {"chunk_rows": desc["chunk_rows"]} if name == "NormalizingFlow" and "chunk_rows" in desc else {}
        return getattr(nf, name)(build(desc["bijector"]), build_model(desc["base"]), **extra)
    if name in BASES:
        kw = {k: v for k, v in desc.items() if k not in ("type", "dim", "shape")}
        shape = desc["shape"] if "shape" in desc else desc.get("dim")
        return getattr(nf, name)(tuple(shape) if isinstance(shape, list) else shape, **kw)
    return build(desc)
