"""npflows: a NumPy reference implementation of normalizing flows with hand-derived log-determinants
and gradients.  The bijector contract is documented in ``npflows.core.bijector``."""
from . import bijectors, data, dequantize, distributions, nn, optim, perf
from ._checks import cast_params
from .bijectors import *  # noqa: F401,F403
from .core import Bijector, Inverse, NormalizingFlow, PushForward, Sequential
from .distributions import DiagNormal, StandardLogistic, StandardNormal, UniformBox
from .io import load, save
from .optim import adam, adam_init
from .train import fit

__version__ = "0.1.0"
