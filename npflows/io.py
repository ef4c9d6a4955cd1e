"""Saving and loading whole models: the structure as JSON, the parameters as arrays, in one ``.npz``.  No pickle.

::

    nf.save("model.npz", flow, params, config={"seed": 0})   # config: any JSON-serialisable extras
    flow, params, config = nf.load("model.npz")               # a working flow and its parameters

The file holds every parameter array under its own key, and three reserved keys, each a unicode array:

* ``__format__``: :data:`FORMAT_VERSION`;
* ``__model__``: the model's description (:func:`npflows.describe.describe_model`: bijector, base, options);
* ``__config__``: the caller's ``config``.

``np.load(..., allow_pickle=False)`` reads it back.  :func:`load` refuses a file of another format version, and
parameters whose keys, shapes or dtypes do not match the rebuilt model, with a ``ValueError`` that says which.
"""
import json

import numpy as np

from .describe import build_model, describe_model

FORMAT_VERSION = 1
FORMAT_KEY, MODEL_KEY, CONFIG_KEY = "__format__", "__model__", "__config__"
RESERVED = (FORMAT_KEY, MODEL_KEY, CONFIG_KEY)


def save(path, model, params, config=None):
    """Write ``model`` (a flow, a bijector or a base distribution), its ``params`` (``dict[str, ndarray]``) and
    ``config`` (JSON-serialisable extras, e.g. the training recipe) to ``path`` (.npz).

    The parameters are validated against the model first (keys, shapes, one dtype, finite), so a file that
    :func:`load` would refuse is never written."""
    if not isinstance(params, dict):
        raise ValueError(f"save: params must be a dict of arrays, got {type(params).__name__}")
    clash = [k for k in params if k in RESERVED]
    if clash:
        raise ValueError(f"save: {clash} are reserved keys")
    _check_match("save", model, params)
    arrays = dict(params)
    arrays[FORMAT_KEY] = np.array(str(FORMAT_VERSION))
    arrays[MODEL_KEY] = np.array(json.dumps(describe_model(model)))
    arrays[CONFIG_KEY] = np.array(json.dumps(config))        # None comes back as None
    np.savez(path, **arrays)


def load(path):
    """``(model, params, config)`` from a file written by :func:`save`; never unpickles."""
    with np.load(path, allow_pickle=False) as f:
        files = set(f.files)
        if FORMAT_KEY not in files or MODEL_KEY not in files:
            raise ValueError(f"load: {path} holds no model description (written by npflows.save before format "
                             f"version {FORMAT_VERSION}, or not by npflows); its arrays can still be read with "
                             f"numpy.load(path, allow_pickle=False)")
        version = str(f[FORMAT_KEY])
        if version != str(FORMAT_VERSION):
            raise ValueError(f"load: {path} has format version {version}; this npflows reads version "
                             f"{FORMAT_VERSION}")
        desc = json.loads(str(f[MODEL_KEY]))
        config = json.loads(str(f[CONFIG_KEY])) if CONFIG_KEY in files else None
        params = {k: f[k] for k in f.files if k not in RESERVED}
    try:
        model = build_model(desc)
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise ValueError(f"load: {path}: cannot rebuild the model from its description: {e}") from None
    _check_match("load", model, params)
    return model, params, config


def _check_match(owner, model, params):
    """Keys, shapes, a single float dtype and finiteness of ``params`` against ``model`` (``ValueError``)."""
    dtypes = {np.asarray(v).dtype for v in params.values()}
    if len(dtypes) > 1:
        raise ValueError(f"{owner}: the parameters mix dtypes {sorted(map(str, dtypes))}; cast them together "
                         f"with npflows.cast_params")
    dtype = dtypes.pop() if dtypes else None
    try:
        if hasattr(model, "checked_split"):
            model.checked_split(params, dtype)
        else:
            model.check_params(params, dtype)
    except ValueError as e:
        raise ValueError(f"{owner}: the parameters do not match the model: {e}") from None
