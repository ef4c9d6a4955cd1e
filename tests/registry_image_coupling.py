"""Harness entries for the coupling layers on images (npflows/bijectors/image_coupling.py): the affine and the
additive coupling, with checkerboard and channel masks, both parities, 3x3, 1x1 and 5x5 kernels, several scale
maps, the three layouts of the network's output and Glow's shift-first form.

Images are small ((2, 4, 4), (4, 2, 2), and non-square (3, 2, 4), (2, 3, 5) so that an H/W mix-up cannot pass)
and the ConvNets narrow (hidden 4-6), so the brute-force Jacobians (D = 16-32) stay quick.  Parameters are
perturbed (scale 0.3-0.5) away from the zero last layer, so r and t vary across pixels and every gradient is
non-trivial; inputs are standard normal.
"""
import numpy as np

from npflows.bijectors.image_coupling import ImageAdditiveCoupling, ImageAffineCoupling
from registry import Case, perturbed


def _entry(cls, shape, n=4, noise=0.25, **kw):
    def make(rng):
        b = cls(shape, **kw)
        x = rng.standard_normal((n,) + tuple(shape))
        C, H, W = shape
        bad = [("forward", rng.standard_normal((2, C, W, H))) if H != W else ("forward", np.zeros((2, C + 1, H, W))),
               ("inverse", np.zeros((2, C, H, W + 1)))]
        return Case(b, perturbed(b, rng, noise), x, bad)
    return make


ENTRIES = {
    # RealNVP's first-scale layer: checkerboard, exp scale
    "image_affine_checkerboard_exp": _entry(ImageAffineCoupling, (2, 4, 4), mask="checkerboard", parity=0,
                                            hidden=4, kernel=3),
    # the other colour, a 1x1 network (per-pixel conditioner), bounded tanh scale, leaky ReLU
    "image_affine_checkerboard_odd_tanh_1x1": _entry(ImageAffineCoupling, (2, 4, 4), mask="checkerboard", parity=1,
                                                     hidden=5, kernel=1, activation="leaky_relu", scale="tanh",
                                                     scale_bound=1.5),
    # non-square checkerboard, softplus scale, interleaved layout, tanh activation
    "image_affine_checkerboard_softplus_interleaved": _entry(ImageAffineCoupling, (2, 3, 5), mask="checkerboard",
                                                             hidden=4, activation="tanh", scale="softplus",
                                                             layout="interleaved"),
    # openai's Glow coupling: channel mask, first half conditions, sigmoid(h + 2) scale, interleaved, shift first
    "image_affine_channel_glow": _entry(ImageAffineCoupling, (4, 2, 2), n=5, mask="channel", parity=0, hidden=6,
                                        scale="logsigmoid", layout="interleaved", shift_first=True),
    # nflows' layout and scale on an odd channel count; the second half conditions
    "image_affine_channel_second_nflows": _entry(ImageAffineCoupling, (3, 2, 4), mask="channel", parity=1, hidden=5,
                                                 activation="elu", scale="sigmoid", layout="shift_scale"),
    # a 5x5 kernel wider than the image, exp scale, shift first with the default layout
    "image_affine_channel_exp_5x5": _entry(ImageAffineCoupling, (2, 3, 5), mask="channel", hidden=4, kernel=5,
                                           shift_first=True, noise=0.2),
    # normflows' "sigmoid" scale (divides by sigma(r + 2))
    "image_affine_channel_neg_logsigmoid": _entry(ImageAffineCoupling, (4, 2, 2), mask="channel", parity=1, hidden=4,
                                                  scale="neg_logsigmoid", layout="interleaved"),
    "image_additive_checkerboard": _entry(ImageAdditiveCoupling, (2, 4, 4), mask="checkerboard", hidden=4),
    "image_additive_channel_second_1x1": _entry(ImageAdditiveCoupling, (3, 2, 4), mask="channel", parity=1, hidden=5,
                                                kernel=1, activation="tanh"),
}
