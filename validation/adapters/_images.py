"""Shared plumbing of the PyTorch adapters for the image cases (nflows, normflows): the cases' conditioner
ConvNet as a torch function, where each layout puts the raw scale and the shift, event shapes read off a
transform description, and the glue for ``Reshape`` (a relabelling, done with ``torch.reshape``).

Every function here is exact: a convolution is PyTorch's ``conv2d`` of the case's own weights, and a change
of layout is a channel permutation (and, where a peer computes ``x - shift`` or ``exp(-scale)``, a negation
of the net's last layer, which commutes with rounding).
"""
import numpy as np

from ._torch import NotMappable, activation

SQUEEZE_PEER_ORDER = "channel_major"    # nflows' SqueezeTransform, normflows' Squeeze: o = 4c + 2di + dj


def convnet(P, T, prefix="net."):
    """The case's conditioner ConvNet (README "Conditioner ConvNet") as a torch function of its weights:
    conv kxk -> act -> conv 1x1 -> act -> conv kxk, PyTorch's layout, zero "same" padding."""
    import torch.nn.functional as F
    act = activation(T["activation"])
    W = [P[f"{prefix}W{l}"] for l in range(3)]
    b = [P[f"{prefix}b{l}"] for l in range(3)]

    def net(h):
        for l in range(3):
            h = F.conv2d(h, W[l], b[l], padding=W[l].shape[-1] // 2)
            if l < 2:
                h = act(h)
        return h
    return net


def raw_scale_and_shift(T, K):
    """``(r, t)``: the channel indices of the raw scale and of the shift in the case's net output (2K
    channels), by ``layout``."""
    lay = T.get("layout", "scale_shift")
    k = np.arange(K)
    if lay == "scale_shift":
        return k, K + k
    if lay == "shift_scale":
        return K + k, k
    if lay == "interleaved":
        return 2 * k + 1, 2 * k
    raise NotMappable(f"unknown layout {lay!r}")


def n_transformed(T):
    """K: the channels the coupling transforms (every channel for the checkerboard)."""
    C = T["event_shape"][0]
    if T["mask"] == "checkerboard":
        return C
    return C - (C + 1) // 2 if T["parity"] == 0 else (C + 1) // 2


def checkerboard(T, dt):
    """The case's checkerboard ``b[c, i, j] = (i + j + parity) % 2`` (1 conditions) on the whole event."""
    import torch
    C, H, W = T["event_shape"]
    b = (np.arange(H)[:, None] + np.arange(W)[None, :] + T["parity"]) % 2
    return torch.as_tensor(np.broadcast_to(b, (C, H, W)).copy(), dtype=dt)


def in_shape(T):
    """The input event shape of a described transform."""
    t = T["type"]
    if t in ("Sequential",):
        return in_shape(T["layers"][0])
    if t == "MultiScale":
        return in_shape(T["stages"][0])
    if t == "Reshape":
        return tuple(T["in_shape"])
    if "event_shape" in T:
        return tuple(T["event_shape"])
    if "dim" in T:
        return (T["dim"],)
    if "mask" in T:
        return (len(T["mask"]),)
    if "perm" in T:
        return (len(T["perm"]),)
    raise NotMappable(f"cannot tell the event shape of {t}")


def out_shape(T):
    """The output event shape of a described transform."""
    t = T["type"]
    if t == "Sequential":
        return out_shape(T["layers"][-1])
    if t == "Reshape":
        return tuple(T["out_shape"])
    if t == "Squeeze":
        C, H, W = T["event_shape"]
        return (4 * C, H // 2, W // 2)
    if t == "MultiScale":
        return (sum(int(np.prod(s)) for s in latent_shapes(T)),)
    return in_shape(T)


def latent_shapes(T):
    """A ``MultiScale``'s pieces of the flat output: each stage's factored-out channels, then the last stage's
    whole output (README "MultiScale")."""
    shapes = []
    for i, st in enumerate(T["stages"]):
        s = out_shape(st)
        if i < len(T["stages"]) - 1:
            C = s[0]
            shapes.append(((C + 1) // 2 if T["factor_out"] == "first" else C - C // 2,) + tuple(s[1:]))
        else:
            shapes.append(tuple(s))
    return shapes


def reshape(T, P, dt):
    """``Reshape``: the row-major regrouping, ``torch.reshape`` (no arithmetic; no peer code involved)."""
    i, o = tuple(T["in_shape"]), tuple(T["out_shape"])

    def f(shape):
        def g(v):
            import torch
            return v.reshape(v.shape[0], *shape), torch.zeros(v.shape[0], dtype=v.dtype)
        return g
    return f(o), f(i)


def only_relabelling(T):
    """True if ``T`` holds nothing but ``Reshape`` (in ``Sequential``): no peer code would be checked."""
    if T["type"] == "Sequential":
        return all(only_relabelling(L) for L in T["layers"])
    return T["type"] == "Reshape"


def refuse_relabelling_only(T, lib):
    if only_relabelling(T):
        raise NotMappable(f"only Reshape (a relabelling the adapter does with torch.reshape): nothing of {lib}'s "
                          f"would be checked")
