"""Transform descriptions: the JSON ``transform`` object of a case, and building npflows from it.

A description is ``{"type": <npflows class name>, <constructor argument>: <value>, ...}``; composites nest
(``Sequential`` has ``layers``, ``Inverse`` has ``base``).  Any bijector whose constructor arguments are
stored under the same attribute names is described without code here (the generic rule); the
couplings, whose MLP widths live on their conditioner, have explicit rules.  The generator checks every
description by rebuilding the transform from it and comparing outputs bit for bit, so an incomplete
description cannot slip into a case file.
"""
import inspect

import numpy as np

import npflows as nf


def family_of(b):
    """The family name of a bijector: its module under ``npflows.bijectors`` (``composite`` for
    Sequential/Inverse)."""
    mod = type(b).__module__.rsplit(".", 1)[-1]
    return "composite" if mod in ("compose", "bijector") else mod


def _jsonify(owner, v):
    if isinstance(v, nf.Bijector):
        return describe(v)
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
        return [_jsonify(owner, e) for e in v]
    raise TypeError(f"{owner}: cannot describe a value of type {type(v).__name__} in JSON")


def _coupling(b):
    d = {"type": type(b).__name__, "mask": b.mask.astype(int).tolist(), "hidden": list(b.net.sizes[1:-1]),
         "activation": b.net.activation}
    if isinstance(b, nf.AffineCoupling):
        d.update(scale=b.scale, scale_bound=b.scale_bound)
    return d


def _made(net):
    """A MADE conditioner: sizes, order, degrees and its masks (so "random" hidden degrees are explicit)."""
    return {"hidden": list(net.hidden), "activation": net.activation, "order": net.order.tolist(),
            "degrees": net.degrees.tolist(), "hidden_degrees": [d.tolist() for d in net.hidden_degree_list],
            "masks": [m.astype(int).tolist() for m in net.masks]}


def _masked_affine(b):
    return {"type": "MaskedAffineAutoregressive", "dim": b.dim, **_made(b.net), "update": b.update,
            "scale": b.scale, "scale_bound": b.scale_bound, "gate_bias": b.gate_bias}


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
    "MaskedSplineAutoregressive": lambda b: {"type": "MaskedSplineAutoregressive", "dim": b.dim, **_made(b.net),
                                             **_spline_config(b.spline)},
    "RationalQuadraticSpline": lambda b: {"type": "RationalQuadraticSpline", "dim": b.dim,
                                          **_spline_config(b.spline)},
    "SplineCoupling": lambda b: {"type": "SplineCoupling", "mask": b.mask.astype(int).tolist(),
                                 "hidden": list(b.net.sizes[1:-1]), "activation": b.net.activation,
                                 **_spline_config(b.spline)},
    "Sequential": lambda b: {"type": "Sequential", "layers": [describe(l) for l in b.layers]},
    "Inverse": lambda b: {"type": "Inverse", "base": describe(b.base)},
    "AdditiveCoupling": _coupling,
    "AffineCoupling": _coupling,
}


NOT_THE_MAP = {"max_nfe"}
"""Constructor arguments that bound a computation's cost, not the map it computes (the CNF's solver budget):
left out of descriptions, so they are neither stored in a case nor required of another implementation."""


def describe(b):
    """The JSON description of bijector ``b``."""
    name = type(b).__name__
    if name in RULES:
        return RULES[name](b)
    d = {"type": name}
    for p in list(inspect.signature(type(b).__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in NOT_THE_MAP:
            continue
        if hasattr(b, p.name):
            d[p.name] = _jsonify(name, getattr(b, p.name))
        elif p.default is p.empty:
            raise TypeError(f"cannot describe {name}: constructor argument {p.name!r} is not stored as an "
                            f"attribute; add a rule to validation/describe.py RULES")
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
