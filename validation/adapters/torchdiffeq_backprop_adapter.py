"""torchdiffeq with the pullbacks by backpropagation through the ``dopri5`` steps of ``odeint``
(discretise-then-differentiate) instead of the adjoint method; everything else as
:mod:`validation.adapters.torchdiffeq_adapter`."""
from .torchdiffeq_adapter import run as _run, supports  # noqa: F401

NAME = "torchdiffeq (backprop)"
TAKES_CONTEXT = True


def run(case):
    return _run(case, pullback="backprop")
