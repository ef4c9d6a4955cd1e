"""Bijectors, one module per family, each following the contract of ``npflows.core.bijector``."""
from .coupling import AdditiveCoupling, AffineCoupling, alternating_mask, half_mask, nice, realnvp
from .elementwise import ActNorm, ElementwiseAffine, LeakyReLU, Logit, Sigmoid
from .linear import Linear, LULinear, Permutation

__all__ = ["ElementwiseAffine", "ActNorm", "LeakyReLU", "Sigmoid", "Logit", "Permutation", "Linear",
           "LULinear", "AdditiveCoupling", "AffineCoupling", "half_mask", "alternating_mask", "realnvp", "nice"]

from .autoregressive import MaskedAffineAutoregressive, maf  # noqa: E402
__all__ += ["MaskedAffineAutoregressive", "maf"]

from .planar_radial import InverseNotConverged, Planar, Radial  # noqa: E402
__all__ += ["Planar", "Radial", "InverseNotConverged"]

from .spline import (MaskedSplineAutoregressive, RationalQuadraticSpline, RQSpline, SplineCoupling,  # noqa: E402
                     autoregressive_nsf, nsf, rational_quadratic_spline, rational_quadratic_spline_knots)
__all__ += ["RationalQuadraticSpline", "SplineCoupling", "MaskedSplineAutoregressive", "nsf", "autoregressive_nsf",
            "rational_quadratic_spline", "RQSpline", "rational_quadratic_spline_knots"]

from .continuous import CNF, ODESolveError  # noqa: E402
__all__ += ["CNF", "ODESolveError"]

from .reshape import Reshape  # noqa: E402
__all__ += ["Reshape"]

from .multiscale import MultiScale  # noqa: E402
from .reshape import Squeeze  # noqa: E402
__all__ += ["Squeeze", "MultiScale"]

from .conv import ActNorm2d, Invertible1x1Conv, LUInvertible1x1Conv  # noqa: E402
__all__ += ["ActNorm2d", "Invertible1x1Conv", "LUInvertible1x1Conv"]

from .image_coupling import ImageAdditiveCoupling, ImageAffineCoupling, checkerboard_mask  # noqa: E402
__all__ += ["ImageAffineCoupling", "ImageAdditiveCoupling", "checkerboard_mask"]

from .conv import MaskedConv2d  # noqa: E402
__all__ += ["MaskedConv2d"]

from .multiscale import glow, realnvp_multiscale  # noqa: E402
__all__ += ["realnvp_multiscale", "glow"]

from ..core.reversible import RecomputeSequential  # noqa: E402
__all__ += ["RecomputeSequential"]

from .residual import ResidualBlock, residual_flow  # noqa: E402
__all__ += ["ResidualBlock", "residual_flow"]

from .planar_radial import ConditionalPlanar  # noqa: E402
__all__ += ["ConditionalPlanar"]

from .gaussianization import RBIG, MarginalGaussianization, fit_marginal, fit_rbig  # noqa: E402
__all__ += ["MarginalGaussianization", "RBIG", "fit_rbig", "fit_marginal"]
