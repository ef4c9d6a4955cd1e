"""Adam on the flat ``name -> array`` parameter dict, as a pure update.

    state = adam_init(params)
    params, state = adam(params, grads, state, lr=1e-3, clip_norm=None)

Neither the input ``params`` nor ``grads`` is modified; the returned state holds fresh moment arrays.
"""
import numpy as np


def adam_init(params):
    """Zero first and second moments for every parameter, and step 0."""
    return {"step": 0, "m": {k: np.zeros_like(v) for k, v in params.items()},
            "v": {k: np.zeros_like(v) for k, v in params.items()}}


def global_norm(grads):
    """:math:`\\sqrt{\\sum_k \\lVert g_k\\rVert^2}` over every array of the dict."""
    return float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))


def adam(params, grads, state, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, clip_norm=None):
    """One Adam step (Kingma & Ba 2014, arXiv:1412.6980) for *minimising* the objective whose gradient
    is ``grads``.

    Parameters
    ----------
    clip_norm : float, optional
        If the global gradient norm exceeds it, the gradients are rescaled to that norm first.

    Notes
    -----
    :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) g`, :math:`v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2`,
    :math:`\\theta \\leftarrow \\theta - \\eta\\,\\hat m/(\\sqrt{\\hat v} + \\epsilon)` with the bias
    corrections :math:`\\hat m = m/(1-\\beta_1^t)`, :math:`\\hat v = v/(1-\\beta_2^t)`.

    Returns
    -------
    params, state : the updated copies.
    """
    if set(grads) != set(params):
        missing, extra = set(params) - set(grads), set(grads) - set(params)
        raise ValueError(f"adam: gradient keys differ from parameter keys (missing {sorted(missing)}, "
                         f"extra {sorted(extra)})")
    scale = 1.0
    if clip_norm is not None:
        norm = global_norm(grads)
        if not np.isfinite(norm):
            raise FloatingPointError("adam: the gradient is not finite (NaN or inf); refusing the update")
        if norm > clip_norm:
            scale = clip_norm / norm
    t = state["step"] + 1
    lr_t = float(lr * np.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t))
    eps_t = float(eps * np.sqrt(1.0 - b2 ** t))  # eps on sqrt(v_hat) rescaled onto sqrt(v): the same step
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g = grads[k] * scale if scale != 1.0 else grads[k]
        m = b1 * state["m"][k] + (1.0 - b1) * g
        v = b2 * state["v"][k] + (1.0 - b2) * (g * g)
        new_p[k] = p - lr_t * m / (np.sqrt(v) + eps_t)
        new_m[k], new_v[k] = m, v
    return new_p, {"step": t, "m": new_m, "v": new_v}
