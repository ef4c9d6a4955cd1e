"""npflows itself: builds the bijector from the case's description (``validation.describe.build``)."""
from ..describe import build
from . import arrays

NAME = "npflows"
TAKES_CONTEXT = True          # passes a conditional case's context and returns pullback.dcontext


def supports(case):
    try:
        build(case["transform"])
    except Exception as e:           # a type this npflows does not have
        return f"cannot build {case['transform']['type']}: {e}"
    return None


def run(case):
    b = build(case["transform"])
    c = arrays(case)
    y, ld, cache = b.forward(c.params, c.x, c.context)        # context None: an unconditional case
    xi, ldi = b.inverse(c.params, c.y, c.context)
    out = {"forward.output": y, "forward.logdet": ld, "inverse.output": xi, "inverse.logdet": ldi}
    if c.dy is not None:
        dx, grads, *dc = b.backward(c.params, c.dy, c.dlogdet, cache)    # + dcontext when given a context
        out["pullback.dx"] = dx
        if c.context is not None:
            out["pullback.dcontext"] = dc[0]
        out.update({f"pullback.dparams[{k}]": v for k, v in grads.items()})
    return out
