"""Saving and loading parameters: ``np.savez`` of the flat dict plus a JSON configuration.  No pickle.

The configuration (any JSON-serialisable dict, e.g. the arguments of the model builder) is stored inside
the same ``.npz`` as a unicode array under the reserved key ``__config__``, so one file holds both and
``np.load(..., allow_pickle=False)`` reads it back.
"""
import json

import numpy as np

CONFIG_KEY = "__config__"


def save(path, params, config=None):
    """Write ``params`` (``dict[str, ndarray]``) and ``config`` (JSON-serialisable) to ``path`` (.npz)."""
    if CONFIG_KEY in params:
        raise ValueError(f"save: {CONFIG_KEY!r} is a reserved key")
    bad = [k for k, v in params.items() if not isinstance(v, np.ndarray) or v.dtype == object]
    if bad:
        raise ValueError(f"save: parameters must be numeric ndarrays; not so for {bad}")
    arrays = dict(params)
    arrays[CONFIG_KEY] = np.array(json.dumps(config if config is not None else {}))
    np.savez(path, **arrays)


def load(path):
    """``(params, config)`` from a file written by :func:`save`; never unpickles."""
    with np.load(path, allow_pickle=False) as f:
        params = {k: f[k] for k in f.files if k != CONFIG_KEY}
        config = json.loads(str(f[CONFIG_KEY])) if CONFIG_KEY in f.files else {}
    return params, config
