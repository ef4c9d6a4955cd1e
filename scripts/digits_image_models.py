"""Image flows for ``scripts/train_digits.py``: a multi-scale RealNVP and a Glow on the 8x8 digits (issue 13).

RESULTS_PENDING
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows as nf  # noqa: E402
from npflows.bijectors.image_coupling import ImageAffineCoupling  # noqa: E402
from npflows.bijectors.multiscale import MultiScale, glow, realnvp_multiscale  # noqa: E402

EVENT = (1, 8, 8)
"""The digits as images: one channel, 8x8; the data come as ``(N, 64)`` logit-space vectors."""


def _order(name):
    """``split_order`` from a ``--set`` string: ``"same"`` (or ``"none"``) means the squeeze order itself."""
    return None if name in ("same", "none", "") else name


def with_prior(b, hidden, kernel, activation, scale, scale_bound=2.0):
    """``b`` (``Sequential([Reshape, MultiScale])``) with a conditional prior for every factored-out half: a
    channel :class:`~npflows.bijectors.image_coupling.ImageAffineCoupling` appended to every stage but the
    last, whose transformed half is exactly the half that the split factors out and whose conditioning half
    is the half that goes on.  The factored-out latents :math:`o` then reach the base as
    :math:`(o - \\mu(h))\\,e^{-\\sigma(h)}`-like affine maps of the kept half :math:`h`: Glow's
    ``split2d_prior`` (a Gaussian for :math:`o` whose mean and log-scale a network computes from :math:`h`;
    Kingma & Dhariwal 2018, arXiv:1807.03039, openai/glow ``model.py``) written as a coupling, with the
    same exact logdet, instead of a learned base.  Its network is a ConvNet like the couplings' (openai's is
    one zero-initialised 3x3 convolution)."""
    reshape, ms = b.layers
    stages = list(ms.stages)
    for i, st in enumerate(stages[:-1]):
        C = st.out_event_shape[0]
        if C % 2:
            raise ValueError(f"with_prior: stage {i} puts out {C} channels; the prior coupling needs an even number")
        parity = 0 if ms.factor_out == "second" else 1     # the kept half conditions, the factored half moves
        cp = ImageAffineCoupling(st.out_event_shape, mask="channel", parity=parity, hidden=hidden, kernel=kernel,
                                 activation=activation, scale=scale, scale_bound=scale_bound)
        stages[i] = nf.Sequential(list(st.layers) + [cp])
    return nf.Sequential([reshape, MultiScale(stages, factor_out=ms.factor_out)])


def build_realnvp(rng, z_init, n_scales=3, hidden=128, kernel=3, activation="relu", scale="exp", scale_bound=2.0,
                  actnorm=True, factor_out="second", squeeze_order="channel_major", split_order="same",
                  prior=True):
    """``(flow, params)``: :func:`npflows.bijectors.multiscale.realnvp_multiscale` on ``(1, 8, 8)`` behind a
    ``Reshape(64, (1, 8, 8))``, a ``StandardNormal(64)`` base over every scale's latents, and its
    data-dependent initialisation on ``z_init`` (the ActNorm2d layers, when ``actnorm``); ``prior``: see
    :func:`with_prior`."""
    dim = z_init.shape[1]
    b = realnvp_multiscale(EVENT, n_scales=n_scales, hidden=hidden, kernel=kernel, activation=activation, scale=scale,
                           scale_bound=scale_bound, actnorm=actnorm, factor_out=factor_out,
                           squeeze_order=squeeze_order, split_order=_order(split_order), input_shape=dim)
    if prior and n_scales > 1:
        b = with_prior(b, hidden, kernel, activation, scale, scale_bound)
    flow = nf.NormalizingFlow(b, nf.StandardNormal(dim))
    return flow, flow.init(rng, z_init)


def build_glow(rng, z_init, K=16, L=2, hidden=64, lu=False, kernel=3, activation="relu", scale="logsigmoid",
               layout="interleaved", shift_first=True, factor_out="second", squeeze_order="channel_major",
               prior=True):
    """``(flow, params)``: :func:`npflows.bijectors.multiscale.glow` on ``(1, 8, 8)`` behind a
    ``Reshape(64, (1, 8, 8))``, a ``StandardNormal(64)`` base over every level's latents, and its
    data-dependent initialisation on ``z_init`` (every ActNorm2d on what reaches it); ``prior``: see
    :func:`with_prior` (its coupling uses ``scale="exp"``, Glow's prior's ``exp(logs)``)."""
    dim = z_init.shape[1]
    b = glow(EVENT, K=K, L=L, hidden=hidden, lu=lu, kernel=kernel, activation=activation, scale=scale,
             layout=layout, shift_first=shift_first, factor_out=factor_out, squeeze_order=squeeze_order,
             input_shape=dim)
    if prior and L > 1:
        b = with_prior(b, hidden, kernel, activation, "exp")
    flow = nf.NormalizingFlow(b, nf.StandardNormal(dim))
    return flow, flow.init(rng, z_init)


IMAGE_MODELS = {
    "realnvp": dict(build=build_realnvp,
                    arch=dict(n_scales=3, hidden=128, kernel=3, activation="relu", scale="exp", scale_bound=2.0,
                              actnorm=True, factor_out="second", squeeze_order="channel_major", split_order="same",
                              prior=True),
                    train=dict(epochs=40, batch=64, lr=1e-3, patience=20),
                    quick=dict(hidden=4, epochs=2, batch=256, val_draws=1),
                    target=2.20, about="multi-scale RealNVP"),
    "glow": dict(build=build_glow,
                 arch=dict(K=16, L=2, hidden=64, lu=False, kernel=3, activation="relu", scale="logsigmoid",
                           layout="interleaved", shift_first=True, factor_out="second", squeeze_order="channel_major",
                           prior=True),
                 train=dict(epochs=60, batch=128, lr=1e-3, patience=20),
                 quick=dict(K=1, hidden=4, epochs=2, batch=256, val_draws=1),
                 target=2.20, about="Glow"),
}
"""Model name -> the fields of ``train_digits.Model`` (build, arch, train, quick, target, about)."""
