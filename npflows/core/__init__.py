"""The bijector contract, its composition, and the two flows built on it."""
from .bijector import Bijector, ContextCache, sum_event, zeros_logdet
from .compose import Inverse, Sequential, prefixed
from .flows import NormalizingFlow, PushForward

__all__ = ["Bijector", "ContextCache", "Sequential", "Inverse", "NormalizingFlow", "PushForward", "prefixed",
           "sum_event", "zeros_logdet"]
