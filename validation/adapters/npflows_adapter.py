"""npflows itself: builds the bijector from the case's description (``validation.describe.build``)."""
from ..describe import build
from . import arrays

NAME = "npflows"


def supports(case):
    try:
        build(case["transform"])
    except Exception as e:           # a type this npflows does not have
        return f"cannot build {case['transform']['type']}: {e}"
    return None


def run(case):
    b = build(case["transform"])
    c = arrays(case)
    y, ld, cache = b.forward(c.params, c.x)
    xi, ldi = b.inverse(c.params, c.y)
    out = {"forward.output": y, "forward.logdet": ld, "inverse.output": xi, "inverse.logdet": ldi}
    if c.dy is not None:
        dx, grads = b.backward(c.params, c.dy, c.dlogdet, cache)
        out["pullback.dx"] = dx
        out.update({f"pullback.dparams[{k}]": v for k, v in grads.items()})
    return out
