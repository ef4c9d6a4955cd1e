"""Conditioner networks with hand-written backward passes."""
from .mlp import ACTIVATIONS, MLP, activate

__all__ = ["MLP", "ACTIVATIONS", "activate"]

from .made import MADE  # noqa: E402
__all__ += ["MADE"]

from .odefield import ODEField  # noqa: E402
__all__ += ["ODEField"]

from .conv import ConvNet, conv2d, conv2d_backward  # noqa: E402
__all__ += ["ConvNet", "conv2d", "conv2d_backward"]

from .lipschitz import LipschitzMLP  # noqa: E402
__all__ += ["LipschitzMLP"]
