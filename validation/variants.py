"""Hard-region variants of the registry's cases, by transform type.

Every registry entry gives a ``base`` case (its own bijector, parameters and inputs, float64) and a
``float32`` case (the same values rounded to float32).  A type listed here adds variants that move the
parameters or inputs of the base case into a region where implementations typically differ: large and
small scales, logit near 0 and 1, sigmoid tails, near-singular matrices, saturated bounded scales.

``VARIANTS[type name] = [Variant(...), ...]``; ``make(bijector, params, x, rng)`` returns
``(params, x)`` or ``(params, x, y)`` where ``y`` is the inverse's input (default: the forward output).
A family joins by adding its type here; a type without variants gets base and float32 cases only, and
``python -m validation report`` lists it.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Variant:
    name: str
    purpose: str
    make: object
    applies: object = None          # applies(bijector) -> bool; None: always
    one_sided: str = None           # the pullback is a one-sided derivative there: the convention, stated


def variants_for(b):
    """The hard-region variants that apply to bijector ``b``."""
    return [v for v in VARIANTS.get(type(b).__name__, []) if v.applies is None or v.applies(b)]


def _grid(values, shape):
    """``values`` repeated in order to fill ``shape``."""
    v = np.asarray(values, dtype=np.float64)
    return np.resize(v, shape)


# --------------------------------------------------------------------------- elementwise


def _scales(lo, hi):
    def make(b, p, x, rng):
        D = x.shape[1]
        s = rng.uniform(lo, hi, D)
        q = {"log_scale": s}
        if "shift" in p:
            q["shift"] = rng.standard_normal(D) * np.exp(s)      # outputs of the scale's size
        return q, x
    return make


AFFINE = [
    Variant("large_scales", "log_scale in [20, 40]: scales up to 2e17, shifts of the same size",
            _scales(20.0, 40.0)),
    Variant("small_scales", "log_scale in [-40, -20]: scales down to 4e-18, shifts of the same size",
            _scales(-40.0, -20.0)),
]


# Each variant keeps the magnitudes within one quantity comparable (a few decades), so that the
# checker's floor (relative to the quantity's largest magnitude) does not hide the small ones.

def _values(vals):
    def make(b, p, x, rng):
        return p, _grid(vals, x.shape)
    return make


_open = lambda b: b.alpha == 0.0
NEAR_0 = [1e-12, 3e-12, 1e-13, 7e-13, 2e-12, 5e-13]
LOGIT_0 = [
    Variant("near_0", "inputs 1e-13 ... 3e-12: logit ~ -28, derivative ~ 1e12", _values(NEAR_0), _open),
    Variant("near_1", "inputs 1 - 2^-53 ... 1 - 3e-12: logit ~ +28 ... +37",
            _values([1.0 - 2.0 ** -53] + [1.0 - v for v in NEAR_0[:5]]), _open),
    Variant("tiny", "inputs 1e-300 ... 1e-299: logit ~ -690",
            _values([1e-300, 3e-300, 1e-299, 2e-300, 5e-300, 7e-300]), _open),
]
LOGIT_ALPHA = [
    Variant("ends", "inputs 0 and 1 (allowed when alpha > 0), within 1e-12, 1e-300 and 2^-53 of them",
            _values([0.0, 1.0, 1e-12, 1.0 - 1e-12, 1e-300, 1.0 - 2.0 ** -53]), lambda b: b.alpha > 0.0),
]


def _logit_variants():
    """Logit's variants depend on alpha (the open or closed domain): resolved per bijector."""
    return LOGIT_0 + LOGIT_ALPHA


# --------------------------------------------------------------------------- linear


def _near_singular_dense(b, p, x, rng):
    """W = U diag(1 ... 1e-10) V^T with U, V the Q factors of Gaussian matrices, computed at 50 digits and
    rounded (LAPACK's QR and a BLAS product would give different last bits under different BLAS kernels)."""
    import mpmath as mp
    D = x.shape[1]
    with mp.workdps(50):
        U = mp.qr(mp.matrix(rng.standard_normal((D, D)).tolist()))[0]
        V = mp.qr(mp.matrix(rng.standard_normal((D, D)).tolist()))[0]
        sv = [mp.mpf(10) ** (-mp.mpf(10) * k / (D - 1)) for k in range(D)]   # condition number 1e10
        W = [[float(mp.fsum(U[i, k] * sv[k] * V[j, k] for k in range(D))) for j in range(D)] for i in range(D)]
    return {"W": np.array(W), "b": p["b"]}, x


def _near_singular_lu(b, p, x, rng):
    D = x.shape[1]
    q = dict(p)
    q["log_scale"] = np.linspace(0.0, -12.0, D)        # diagonal of U down to 6e-6
    return q, x


def _extreme_lu(b, p, x, rng):
    D = x.shape[1]
    q = dict(p)
    q["log_scale"] = np.resize([8.0, -8.0, 4.0, -4.0], D)
    return q, x


# --------------------------------------------------------------------------- coupling


def _last_layer(p):
    last = max(int(k[len("net.W"):]) for k in p if k.startswith("net.W"))
    return f"net.W{last}", f"net.b{last}"


def _conditioner_output(b, p, x):
    """The conditioner's output at the case's inputs and the number of raw-scale columns (first)."""
    if hasattr(b, "_i1"):                                   # coupling: MLP of the conditioning half
        return b.net.forward(p, x[:, b._i1])[0], b.d2
    return b.net.forward(p, x)[0], b.dim                    # autoregressive: MADE of the whole input


def _scaled_outputs(target, columns):
    """Rescale the conditioner's last layer so that the chosen output columns reach ``target`` in
    magnitude on the case's inputs (the MLP output is linear in the last layer)."""
    def make(b, p, x, rng):
        kW, kb = _last_layer(p)
        out, n_raw = _conditioner_output(b, p, x)
        cols = slice(0, n_raw) if columns == "raw" else slice(None)
        # rounded to 4 significant digits: the conditioner's output comes from BLAS products whose last
        # bits depend on the machine's kernel, and the case's parameters must not
        f = float(f"{target / np.max(np.abs(out[:, cols])):.4g}")
        q = dict(p)
        W, bb = p[kW].copy(), p[kb].copy()
        W[:, cols] *= f
        bb[cols] *= f
        q[kW], q[kb] = W, bb
        return q, x
    return make


COUPLING_AFFINE = [
    Variant("large_raw_scale", "conditioner's raw scale output up to |r| = 15: exp scales e^-15 ... e^15, "
            "tanh saturated (1 - tanh^2 ~ 4e-13), sigmoid at its floor 1e-3 and ceiling 1.001",
            _scaled_outputs(15.0, "raw")),
]
COUPLING_ADDITIVE = [
    Variant("large_shift", "conditioner output up to |t| = 1e6: the inverse subtracts nearly equal numbers",
            _scaled_outputs(1e6, "all")),
]

# --------------------------------------------------------------------------- spline


def _on_knots(b, p, x, rng):
    """Every transformed entry exactly on a knot of its own spline (interior knots and +-B in turn)."""
    x = x.copy()
    if hasattr(b, "_i1"):                                    # SplineCoupling: knots depend on x1
        rw, rh, rd, _ = b._raw(p, x[:, b._i1], np)
        kx = b.spline.knots(rw, rh, rd)[0]                    # (N, d2, K+1)
        idx2 = np.flatnonzero(~b.mask)
    else:                                                    # RationalQuadraticSpline: one spline per coordinate
        kx = np.broadcast_to(b.spline.knots(p["raw_widths"], p["raw_heights"], p["raw_derivatives"])[0],
                             (x.shape[0], b.dim, b.spline.n_bins + 1))
        idx2 = np.arange(b.dim)
    K1 = kx.shape[-1]
    for n in range(x.shape[0]):
        for j, i in enumerate(idx2):
            x[n, i] = kx[n, j, (n + 2 * j) % K1]
    return p, x


def _spline_inputs(vals):
    def make(b, p, x, rng):
        B = b.spline.bound
        x = x.copy()
        idx2 = np.flatnonzero(~b.mask) if hasattr(b, "mask") else np.arange(b.dim)
        x[:, idx2] = _grid(np.asarray(vals) * B, (x.shape[0], idx2.size))
        return p, x
    return make


ONE_SIDED = ("the derivative of the logdet jumps at a knot (the spline's second derivative does), so the "
             "pullback there is one-sided: this case takes the bin to the right of a knot, and at x = B the "
             "last bin, as nflows; an implementation with the other convention differs in the pullback only")
SPLINE = [
    Variant("on_knots", "every transformed input exactly on a knot of its spline (interior knots, -B and B)",
            _on_knots, one_sided=ONE_SIDED),
    Variant("tails", "inputs just outside (1 + 1e-12) B, at 1.5 B and far outside (1e3 B): identity tails",
            _spline_inputs([1.0 + 1e-12, -(1.0 + 1e-12), 1e3, -1e3, 1.5, -1.5])),
    Variant("at_bound", "inputs exactly at -B and B, where the spline meets the identity tails",
            _spline_inputs([1.0, -1.0]), one_sided=ONE_SIDED),
]

VARIANTS = {
    "ElementwiseAffine": AFFINE,
    "ActNorm": AFFINE,
    "LeakyReLU": [Variant("near_zero", "inputs 0, -0, +-1e-300, +-3e-301 at the kink",
                          _values([0.0, -0.0, 1e-300, -1e-300, 3e-301, -3e-301]))],
    "Sigmoid": [Variant("upper_tail", "inputs 30 ... 36: sigmoid within 1e-13 ... 2e-16 of 1",
                        _values([30.0, 32.0, 34.0, 36.0, 31.0, 35.0])),
                Variant("lower_tail", "inputs -36 ... -28: sigmoid 2e-16 ... 7e-13",
                        _values([-28.0, -30.0, -32.0, -34.0, -36.0, -29.0])),
                Variant("deep_lower_tail", "inputs -700 ... -692: sigmoid 1e-304 ... 3e-301 (where "
                        "(tanh(x/2) + 1)/2 is exactly 0), inverse from there",
                        _values([-700.0, -692.0, -696.0, -698.0, -694.0, -699.0]))],
    "Logit": _logit_variants(),
    "Linear": [Variant("near_singular", "W = U diag(1 ... 1e-10) V^T: condition number 1e10",
                       _near_singular_dense)],
    "LULinear": [Variant("near_singular", "log_scale from 0 down to -12 (with the registry's triangles: "
                         "condition number ~1e10)", _near_singular_lu),
                 Variant("large_small_scales", "log_scale +-8 and +-4 (condition number ~4e8)", _extreme_lu)],
    "AffineCoupling": COUPLING_AFFINE,
    "AdditiveCoupling": COUPLING_ADDITIVE,
    "MaskedAffineAutoregressive": [
        Variant("large_raw_scale", "MADE's raw scale (or gate) output up to |r| = 15: exp scales e^-15 ... e^15, "
                "saturated tanh, sigmoid floor, saturated gate", _scaled_outputs(15.0, "raw"))],
    "RationalQuadraticSpline": SPLINE,
    "SplineCoupling": SPLINE,
    "MaskedSplineAutoregressive": SPLINE[1:],
}
