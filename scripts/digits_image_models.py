"""Image flows for ``scripts/train_digits.py``: a multi-scale RealNVP and a Glow on the 8x8 digits (issue 13).

RESULTS_PENDING
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows as nf  # noqa: E402
from npflows.bijectors.multiscale import glow, realnvp_multiscale  # noqa: E402

EVENT = (1, 8, 8)
"""The digits as images: one channel, 8x8; the data come as ``(N, 64)`` logit-space vectors."""


def _order(name):
    """``split_order`` from a ``--set`` string: ``"same"`` (or ``"none"``) means the squeeze order itself."""
    return None if name in ("same", "none", "") else name


def build_realnvp(rng, z_init, n_scales=2, hidden=64, kernel=3, activation="relu", scale="tanh", scale_bound=2.0,
                  actnorm=True, factor_out="second", squeeze_order="channel_major", split_order="same"):
    """``(flow, params)``: :func:`npflows.bijectors.multiscale.realnvp_multiscale` on ``(1, 8, 8)`` behind a
    ``Reshape(64, (1, 8, 8))``, a ``StandardNormal(64)`` base over every scale's latents, and its
    data-dependent initialisation on ``z_init`` (the ActNorm2d layers, when ``actnorm``)."""
    dim = z_init.shape[1]
    b = realnvp_multiscale(EVENT, n_scales=n_scales, hidden=hidden, kernel=kernel, activation=activation, scale=scale,
                           scale_bound=scale_bound, actnorm=actnorm, factor_out=factor_out,
                           squeeze_order=squeeze_order, split_order=_order(split_order), input_shape=dim)
    flow = nf.NormalizingFlow(b, nf.StandardNormal(dim))
    return flow, flow.init(rng, z_init)


def build_glow(rng, z_init, K=8, L=2, hidden=64, lu=True, kernel=3, activation="relu", scale="logsigmoid",
               layout="interleaved", shift_first=True, factor_out="second", squeeze_order="channel_major"):
    """``(flow, params)``: :func:`npflows.bijectors.multiscale.glow` on ``(1, 8, 8)`` behind a
    ``Reshape(64, (1, 8, 8))``, a ``StandardNormal(64)`` base over every level's latents, and its
    data-dependent initialisation on ``z_init`` (every ActNorm2d on what reaches it)."""
    dim = z_init.shape[1]
    b = glow(EVENT, K=K, L=L, hidden=hidden, lu=lu, kernel=kernel, activation=activation, scale=scale,
             layout=layout, shift_first=shift_first, factor_out=factor_out, squeeze_order=squeeze_order,
             input_shape=dim)
    flow = nf.NormalizingFlow(b, nf.StandardNormal(dim))
    return flow, flow.init(rng, z_init)


IMAGE_MODELS = {
    "realnvp": dict(build=build_realnvp,
                    arch=dict(n_scales=2, hidden=64, kernel=3, activation="relu", scale="tanh", scale_bound=2.0,
                              actnorm=True, factor_out="second", squeeze_order="channel_major", split_order="same"),
                    train=dict(epochs=300, batch=128, lr=1e-3, patience=40),
                    quick=dict(hidden=4, epochs=2, batch=256, val_draws=1),
                    target=2.20, about="multi-scale RealNVP"),
    "glow": dict(build=build_glow,
                 arch=dict(K=8, L=2, hidden=64, lu=True, kernel=3, activation="relu", scale="logsigmoid",
                           layout="interleaved", shift_first=True, factor_out="second", squeeze_order="channel_major"),
                 train=dict(epochs=300, batch=128, lr=1e-3, patience=40),
                 quick=dict(K=1, hidden=4, epochs=2, batch=256, val_draws=1),
                 target=2.20, about="Glow"),
}
"""Model name -> the fields of ``train_digits.Model`` (build, arch, train, quick, target, about)."""
