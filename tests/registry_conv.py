"""Harness entries for Glow's image layers and the masked convolution (npflows/bijectors/conv.py): ActNorm2d,
the 1x1 convolution with a dense and with an LU-factorised weight, the masked autoregressive convolution with
several kernels and tap sets, and a Glow-like step composed of them.

Events are small ((2, 3, 3), (3, 2, 2), (1, 4, 4)), batches 3-5, so the brute-force Jacobians stay cheap.
Parameters are perturbed away from their initial values (scale 0.3-0.5; ActNorm2d by 0.1 around its
data-dependent init), so that the weights are not orthogonal, the log-scales not zero, and every gradient is
non-trivial.  Every image entry also refuses a batch with the wrong number of channels.
"""
import numpy as np

import npflows as nf
from npflows.bijectors.image_coupling import ImageAffineCoupling
from registry import Case, perturbed


def _bad(x):
    """A batch with one channel too few and one with the height and width swapped (where they differ)."""
    bad = [("forward", x[:, 1:] if x.shape[1] > 1 else np.concatenate([x, x], 1)),
           ("inverse", x[:, 1:] if x.shape[1] > 1 else np.concatenate([x, x], 1))]
    if x.shape[2] != x.shape[3]:
        bad.append(("forward", np.swapaxes(x, 2, 3)))
    return bad


# _QR: the 1x1 convolutions start from LAPACK's QR (and LU) of a random matrix.  From 3 channels up their last
# bits differ between OpenBLAS kernels (seen under OPENBLAS_CORETYPE=SkylakeX), and a golden case's inputs must
# not, so those entries round the init to a 2^-30 grid first (registry.machine_free).  The 1- and 2-channel
# entries were not seen to differ under any kernel and keep their committed inputs.
def _case(b, rng, n=4, scale=0.5, quantize=False):
    x = rng.standard_normal((n,) + b.event_shape)
    return Case(b, perturbed(b, rng, scale, quantize=quantize), x, _bad(x))


def _actnorm2d(shape, n=4):
    def make(rng):
        b = nf.ActNorm2d(shape)
        data = 3.0 + 2.0 * rng.standard_normal((50,) + shape) * rng.uniform(0.5, 2.0, (shape[0], 1, 1))
        x = data[:n]
        return Case(b, perturbed(b, rng, 0.1, x=data), x, _bad(x))
    return make


def _glow_step(shape, lu, **coupling):
    """A Glow step, ActNorm2d -> 1x1 convolution -> affine coupling on channels, initialised on data (the
    ActNorm2d's data-dependent init through Sequential.init), then perturbed."""
    def make(rng):
        C = shape[0]
        conv = (nf.LUInvertible1x1Conv(shape, perm=rng.permutation(C), sign=[(-1) ** c for c in range(C)]) if lu
                else nf.Invertible1x1Conv(shape))
        b = nf.Sequential([nf.ActNorm2d(shape), conv, ImageAffineCoupling(shape, mask="channel", **coupling)])
        data = 1.0 + 2.0 * rng.standard_normal((20,) + shape)
        x = data[:3]
        return Case(b, perturbed(b, rng, 0.25, x=data, quantize=True), x, _bad(x))   # LAPACK in the 1x1 init
    return make


def _lu(shape, sign=None):
    def make(rng):
        C = shape[0]
        return _case(nf.LUInvertible1x1Conv(shape, perm=rng.permutation(C), sign=sign), rng, scale=0.4,
                     quantize=C > 2)                  # LAPACK's QR and LU in the init (3x3 and up: see _QR)
    return make


ENTRIES = {
    "actnorm2d_233": _actnorm2d((2, 3, 3)),
    "actnorm2d_144": _actnorm2d((1, 4, 4), n=3),
    "conv1x1_233": lambda rng: _case(nf.Invertible1x1Conv((2, 3, 3)), rng),
    "conv1x1_322": lambda rng: _case(nf.Invertible1x1Conv((3, 2, 2)), rng, n=5, quantize=True),   # see _QR
    "conv1x1_144": lambda rng: _case(nf.Invertible1x1Conv((1, 4, 4)), rng, n=3),
    "conv1x1_lu_322": _lu((3, 2, 2), sign=[1, -1, -1]),
    "conv1x1_lu_233": _lu((2, 3, 3)),
    "masked_conv_k3_233": lambda rng: _case(nf.MaskedConv2d((2, 3, 3), kernel_size=3), rng, scale=0.3),
    "masked_conv_k5_144": lambda rng: _case(nf.MaskedConv2d((1, 4, 4), kernel_size=5), rng, n=3, scale=0.3),
    "masked_conv_quadrant_322": lambda rng: _case(nf.MaskedConv2d((3, 2, 2), kernel_size=3, taps="quadrant"), rng,
                                                  scale=0.3),
    "masked_conv_k1_322": lambda rng: _case(nf.MaskedConv2d((3, 2, 2), kernel_size=1), rng, n=3),
    "glow_like_conv_step": lambda rng: _case(nf.Sequential([
        nf.ActNorm2d((2, 3, 3)), nf.LUInvertible1x1Conv((2, 3, 3), perm=[1, 0], sign=[-1, 1]),
        nf.MaskedConv2d((2, 3, 3), kernel_size=3, taps="quadrant")]), rng, n=3, scale=0.3),
    # openai's Glow step: LU 1x1 conv (signs +-1), coupling with sigmoid(h + 2) scale, interleaved, shift first
    "glow_step_lu_422": _glow_step((4, 2, 2), lu=True, hidden=4, scale="logsigmoid", layout="interleaved",
                                   shift_first=True),
    # the dense-weight step with RealNVP's exp scale, on an odd channel count and a non-square image
    "glow_step_plain_323": _glow_step((3, 2, 3), lu=False, hidden=4),
}
