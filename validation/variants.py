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

import mpmath as mp
import numpy as np

from .format import Dynamic


@dataclass(frozen=True)
class Variant:
    name: str
    purpose: str
    make: object
    applies: object = None          # applies(bijector) -> bool; None: always
    one_sided: str = None           # the pullback is a one-sided derivative there: the convention, stated


_CONTEXT = Dynamic()     # the context (N, C) of the conditional case whose variant is being made


def variant_context(c):
    """``with variant_context(c):`` the variants made inside belong to a conditional case with context ``c``
    (None: unconditional).  A variant keeps the case's context (the generator passes it on unchanged) and
    reads it where it evaluates the conditioner (:func:`_conditioner_output`, :func:`_exact_knots`), so a
    ``make(b, p, x, rng)`` needs no argument for it."""
    return _CONTEXT.bound(c)


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
    return {**p, "W": np.array(W)}, x          # Linear: W, b; Invertible1x1Conv (x.shape[1] = C): W


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
    c = _CONTEXT.get()                                        # a conditional case's context (or None)
    if hasattr(b, "_i1"):                                   # coupling: MLP of the conditioning half
        return b.net.forward(p, x[:, b._i1], context=c)[0], b.d2
    return b.net.forward(p, x, context=c)[0], b.dim         # autoregressive: MADE of the whole input


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

def _image_scaled_outputs(target, which):
    """An image coupling's version of :func:`_scaled_outputs`: rescale the ConvNet's last layer (``net.W2``,
    ``net.b2``, output channels) so that the raw scales (``which = "raw"``, the channels the layout reads r
    from) or every output (``"all"``) reach ``target`` in magnitude on the transformed entries of the case's
    inputs; the factor is rounded to 4 significant digits (the network's float output depends on the BLAS
    kernel in its last bits, the case's parameters must not)."""
    def make(b, p, x, rng):
        h, _ = b.net.forward(p, b._conditioner_input(x))
        K = h.shape[1] // 2
        if which == "all":
            cols = np.arange(h.shape[1])
        else:
            cols = {"scale_shift": np.arange(K), "shift_scale": np.arange(K, 2 * K),
                    "interleaved": np.arange(1, 2 * K, 2)}[b.layout]
        v = h[:, cols]
        if b.mask == "checkerboard":
            v = v * b._masks(x)[1]
        f = float(f"{target / np.max(np.abs(v)):.4g}")
        q = dict(p)
        W, bb = p["net.W2"].copy(), p["net.b2"].copy()
        W[cols] *= f
        bb[cols] *= f
        q["net.W2"], q["net.b2"] = W, bb
        return q, x
    return make


def _masked_small_diagonal(b, p, x, rng):
    q = dict(p)
    q["log_diag"] = np.full(b.channels, -2.0 if b.kernel_size > 1 else -6.0)
    return q, x


def _masked_tiny_scale(b, p, x, rng):
    f = float(mp.exp(-20))
    return {"weight": p["weight"] * f, "log_diag": p["log_diag"] - 20.0, "bias": p["bias"] * f}, x


MASKED_CONV = [
    Variant("small_diagonal", "log_diag = -2 (kernel 3 or 5; -6 for a 1x1 kernel) against free taps up to 0.7: "
            "the raster-order substitution divides by the diagonal at every pixel and amplifies errors along the "
            "image, condition number 1e4-1e7", _masked_small_diagonal),
    Variant("tiny_scale", "the whole layer scaled by e^-20 (weight and bias times e^-20, log_diag - 20): a centre "
            "diagonal of ~2e-9, outputs ~1e-9, logdet ~ -20 H W C; well conditioned (an implementation must not "
            "add an epsilon to the diagonal or clamp it)", _masked_tiny_scale),
]


# --------------------------------------------------------------------------- spline


def _transformed(b):
    """Indices of the columns of ``x`` that go through a spline (the coupling's mask 0; all otherwise)."""
    return np.flatnonzero(~b.mask) if hasattr(b, "mask") else np.arange(b.dim)


def _exact_knots(b, p, x):
    """The 50-digit x-knots of the spline of every transformed entry, ``[n][j] -> [K+1 mpf]``, from the stored
    doubles only: the reference's knot construction (``reference._knots``) on the stored parameters and, for
    a coupling, on the reference MLP (mpmath, elementwise) at the stored conditioning half of ``x``.  No
    float matmul: the same knots on every machine and BLAS kernel."""
    from . import reference as R
    from .describe import describe
    T, K = describe(b), b.spline.n_bins
    idx2 = _transformed(b)
    with mp.workdps(R.DPS):
        P = {k: R.mpf_array(v) for k, v in p.items()}
        if hasattr(b, "mask"):                               # SplineCoupling: the knots depend on x1
            i1, _ = R._split(T, x)
            c = _CONTEXT.get()
            with R.context(None if c is None else R.mpf_array(c)):
                out = R._net(T, P, R.mpf_array(x[:, i1])).reshape(x.shape[0], idx2.size, R._n_raw(T))
            rw = lambda n, j: list(out[n, j, :K])
        else:                                                # RationalQuadraticSpline: one spline per coordinate
            rw = lambda n, j: list(P["raw_widths"][j])
        return [[R._knots(T, rw(n, j), T["min_bin_width"]) for j in range(idx2.size)] for n in range(x.shape[0])]


def _double_at_or_above(v):
    """The smallest double >= the real number ``v`` (an mpf)."""
    d = float(v)
    if mp.mpf(d) < v:
        d = float(np.nextafter(d, np.inf))
    while mp.mpf(float(np.nextafter(d, -np.inf))) >= v:
        d = float(np.nextafter(d, -np.inf))
    return d


KNOT_OFFSET_ULPS = 16


def _on_knots(b, p, x, rng):
    """Every transformed entry at a knot of its own spline, interior knots and both ends in turn.  An interior
    knot is irrational in general, so no double lies on it, and an implementation's float knot is within a
    few units in the last place of the domain's bound ``B`` of the exact one (npflows': 2 at most over these
    cases): an input that close lies on either side of it by the accident of rounding, and the one-sided
    pullbacks differ there.  So each interior-knot input is the smallest double at or above the exact
    (50-digit) knot plus ``KNOT_OFFSET_ULPS`` ulps of ``B``: within 1e-14 of the knot, in the bin to its right
    for every implementation that rounds its knots to 16 ulps.  The ends are exact (-B and B, or the bounded
    spline's interval ends), where the convention matters and the case states it."""
    x = x.copy()
    idx2 = _transformed(b)
    knots = _exact_knots(b, p, x)
    K1 = b.spline.n_bins + 1
    ulp_B = mp.mpf(float(np.spacing(max(abs(b.spline.left), abs(b.spline.right)))))
    for n in range(x.shape[0]):
        for j, i in enumerate(idx2):
            k = (n + 2 * j) % K1
            with mp.workdps(50):
                v = knots[n][j][k] + (KNOT_OFFSET_ULPS * ulp_B if 0 < k < K1 - 1 else 0)
                x[n, i] = _double_at_or_above(v)
    return p, x


def _spline_inputs(vals):
    def make(b, p, x, rng):
        B = b.spline.bound
        x = x.copy()
        idx2 = _transformed(b)
        x[:, idx2] = _grid(np.asarray(vals) * B, (x.shape[0], idx2.size))
        return p, x
    return make


def _at_ends(b, p, x, rng):
    """Transformed inputs exactly at the ends of the spline's domain: B and -B (linear tails), or the
    bounded spline's interval ends."""
    x = x.copy()
    idx2 = _transformed(b)
    x[:, idx2] = _grid([b.spline.right, b.spline.left], (x.shape[0], idx2.size))
    return p, x


# The steep bin: unnormalised width +2, height -8 (the others 0), so its slope is about 1e-3 (1.6e-3 at
# K = 4, 2e-3 at K = 8, min_bin_height 1e-3), its start derivative m_d + softplus(-7) ~ 2e-3 and its end
# derivative m_d + softplus(234) = 234 + m_d; inputs at xi = 1 - 2e-6 ... 0.99 of that bin.
STEEP_XI = ["0.999998", "0.9999995", "0.99999", "0.9999", "0.999", "0.99"]


def _set_raw(b, p, rw, rh, rd):
    """Parameters that give every transformed coordinate ``j`` the unnormalised spline parameters
    ``rw[j], rh[j], rd[j]`` for every input: the conditioner's last layer has zero weights and these as its
    bias (its output is then exactly the bias, whatever the BLAS kernel)."""
    if not hasattr(b, "net"):
        return {"raw_widths": rw, "raw_heights": rh, "raw_derivatives": rd}
    kW, kb = _last_layer(p)
    q = dict(p)
    q[kW] = np.zeros_like(p[kW])
    raw = np.concatenate([rw, rh, rd], axis=1)                  # (d, n_raw): a coupling's per-coordinate layout
    q[kb] = (raw.T if not hasattr(b, "mask") else raw).reshape(-1)   # MADE: column j D + i
    return q


def _steep_end_derivative(b, p, x, rng):
    from . import reference as R
    from .describe import describe
    sp, K = b.spline, b.spline.n_bins
    idx2 = _transformed(b)
    d, bounded = idx2.size, sp.tails is None
    rw, rh, rd = np.zeros((d, K)), np.zeros((d, K)), np.zeros((d, sp.n_derivatives))
    bins = [j % (K if bounded else K - 1) for j in range(d)]   # linear tails: the end derivative 1 is pinned
    for j, k in enumerate(bins):
        rw[j, k], rh[j, k] = 2.0, -8.0
        off = 0 if bounded else -1                                # rd index of knot k: k (bounded) or k - 1
        rd[j, k + 1 + off] = 234.0
        if k + off >= 0:
            rd[j, k + off] = -7.0
    q = _set_raw(b, p, rw, rh, rd)
    T = describe(b)
    x = x.copy()
    y = x.copy()                                                  # a coupling's y1 = x1
    with mp.workdps(R.DPS):
        for j, (i, k) in enumerate(zip(idx2, bins)):
            kx = R._knots(T, [mp.mpf(v) for v in rw[j]], T["min_bin_width"])
            for n in range(x.shape[0]):
                xi = mp.mpf(STEEP_XI[(n + j) % len(STEEP_XI)])
                x[n, i] = float(kx[k] + xi * (kx[k + 1] - kx[k]))
                y[n, i] = float(R.rq_scalar(T, mp.mpf(x[n, i]), [mp.mpf(v) for v in rw[j]],
                                            [mp.mpf(v) for v in rh[j]], [mp.mpf(v) for v in rd[j]])[0])
    return q, x, y


ONE_SIDED = ("the derivative of the logdet jumps at a knot (the spline's second derivative does), so the "
             "pullback there is one-sided: this case takes the bin to the right of a knot, and at x = B the "
             "last bin, as nflows; an implementation with the other convention differs in the pullback only")
ON_KNOTS_ONE_SIDED = (
    "each interior-knot input lies 16 ulps of B to the right of the exact knot (the bin to the right for any "
    "implementation whose float knots are that accurate); at the domain's ends, where the inputs are exact, "
    "the derivative of the logdet jumps (the spline's second derivative does), so the pullback there is "
    "one-sided: this case takes the first bin at the lower end and the last bin at the upper end, as nflows; "
    "an implementation with the other convention, or whose float knots are off by more than 16 ulps, differs "
    "in the pullback only")
_linear = lambda b: b.spline.tails == "linear"
SPLINE = [
    Variant("on_knots", "every transformed input at a knot of its spline: 16 ulps of B to the right of the exact "
            "(50-digit) interior knots, and exactly on the domain's ends", _on_knots,
            one_sided=ON_KNOTS_ONE_SIDED),
    Variant("tails", "inputs just outside (1 + 1e-12) B, at 1.5 B and far outside (1e3 B): identity tails",
            _spline_inputs([1.0 + 1e-12, -(1.0 + 1e-12), 1e3, -1e3, 1.5, -1.5]), _linear),
    Variant("at_bound", "inputs exactly at -B and B, where the spline meets the identity tails", _at_ends,
            _linear, one_sided=ONE_SIDED),
    Variant("at_bound", "inputs exactly at the ends of the bounded spline's interval", _at_ends,
            lambda b: not _linear(b), one_sided=ONE_SIDED),
    Variant("steep_end_derivative", "a bin of slope ~1e-3 whose end derivative is 234 per transformed "
            "coordinate (conditioner output constant), inputs at xi = 1 - 2e-6 ... 0.99 of that bin and the "
            "inverse at their images: the inverse's quadratic has b < 0, where 2c/(-b - sqrt(b^2 - 4ac)) cancels",
            _steep_end_derivative),
]

# --------------------------------------------------------------------------- rearrangements (reshape, squeeze)

def _positions(b, p, x, rng):
    """``x[n]`` = 1000 (n + 1) + the row-major index of the entry in the input event: every output entry names
    the input entry it came from (integers, exact in float32 too)."""
    N, D = x.shape[0], x[0].size
    return p, (1000.0 * (np.arange(N)[:, None] + 1) + np.arange(D)[None, :]).reshape(x.shape)


REARRANGE = [
    Variant("positions", "x[n] = 1000 (n + 1) + the row-major index of each entry in the input event: the output "
            "shows where every entry goes (the ordering convention, readable in the file)", _positions),
]

def _far_inputs(scale):
    """The base case's inputs times ``scale`` (elementwise, so the same bits everywhere)."""
    def make(b, p, x, rng):
        return p, x * scale
    return make


RESIDUAL = [
    Variant("far_inputs", "the inputs times 40 (|x| up to ~100): hidden pre-activations of tens, the activations' "
            "saturated tails (LipSwish's sigmoid within e^-30 of 0 or 1, ELU's exp(-40), tanh at +-1), so J_g "
            "and its derivatives come from the few unsaturated units", _far_inputs(40.0)),
]

# --------------------------------------------------------------------------- Gaussianization


def _mg_tails(zs):
    """Inputs beyond the outermost centre of each coordinate, on both sides, at ``zs`` times the largest
    bandwidth of that coordinate: the smaller tail probability far below the float range, where the stable
    log-space formulas carry the map (elementwise NumPy from the stored parameters)."""
    def make(b, p, x, rng):
        mu, h = p["centers"], np.exp(p["log_bandwidth"])
        N, D = x.shape
        z = _grid(zs, (N, D))
        side = _grid([-1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0], (N, D))
        edge = np.where(side < 0, mu.min(axis=1), mu.max(axis=1))
        return p, edge + side * z * h.max(axis=1)
    return make


def _mg_gap(b, p, x, rng):
    """Two groups of centres far apart: the first half of the kernels (weight 0.3 in all) about -5, the rest
    about +5, bandwidths about 0.5; inputs in the gap, -2 ... 2, where F is flat (about 0.3) and the density is
    e^-18 ... e^-50: the forward's tiny logdets, and an inverse as ill-conditioned as dy/dx is small."""
    D, K = p["centers"].shape
    k = np.arange(K)
    first = k < max(1, K // 2)
    spread = rng.uniform(-0.3, 0.3, (D, K))
    mu = np.where(first, -5.0, 5.0) + spread
    s = np.log(0.5) + rng.uniform(-0.2, 0.2, (D, K))
    w = np.where(first, 0.3 / first.sum(), 0.7 / max(1, (~first).sum())) if K > 1 else np.ones(K)
    logits = np.broadcast_to(np.log(w), (D, K)) + rng.uniform(-0.1, 0.1, (D, K))
    return {"centers": mu, "log_bandwidth": s, "logits": logits}, _grid([-2.0, 0.5, 2.0, -1.0, 0.0, 1.5, -0.5],
                                                                         x.shape)


GAUSSIANIZATION = [
    Variant("tails", "inputs 10 ... 60 times the widest bandwidth beyond the outermost centres, both sides: tail "
            "probabilities 1e-23 ... 1e-783 (below the float range; log-space formulas)", _mg_tails([10.0, 25.0, 60.0, 40.0, 15.0])),
    Variant("far_tails", "inputs 1e3 ... 1e6 times the widest bandwidth beyond the outermost centres: y about as "
            "large, logdets of modest size (no cancelling squares)", _mg_tails([1e3, 1e6, 3e4, 1e5, 3e3])),
    Variant("between_distant_centres", "two groups of centres at about -5 and +5 (weights 0.3, 0.7), bandwidths about "
            "0.5, inputs -2 ... 2 between them: CDF flat near 0.3, density e^-18 ... e^-50", _mg_gap,
            lambda b: b.n_components > 1),
]


VARIANTS = {
    "Reshape": REARRANGE,
    "Squeeze": REARRANGE,
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
    "ImageAffineCoupling": [
        Variant("large_raw_scale", "conditioner's raw scale output up to |r| = 15 on the transformed entries: exp "
                "scales e^-15 ... e^15, tanh saturated, sigmoid at its floor", _image_scaled_outputs(15.0, "raw"))],
    "ImageAdditiveCoupling": [
        Variant("large_shift", "conditioner output up to |t| = 1e6: the inverse subtracts nearly equal numbers",
                _image_scaled_outputs(1e6, "all"))],
    "MaskedConv2d": MASKED_CONV,
    "ActNorm2d": AFFINE,                     # x.shape[1] is the number of channels, one log_scale and shift each
    "Invertible1x1Conv": [Variant("near_singular", "W = U diag(1 ... 1e-10) V^T: condition number 1e10 (the weight "
                                  "applied at every pixel)", _near_singular_dense, lambda b: b.channels > 1)],
    "LUInvertible1x1Conv": [Variant("near_singular", "log_scale from 0 down to -12 (with the registry's triangles: "
                                    "condition number 6e5 at C = 2, 1.5e8 at C = 3)", _near_singular_lu),
                            Variant("large_small_scales", "log_scale +-8 and +-4 (condition number ~2e7)",
                                    _extreme_lu)],
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
    "MaskedSplineAutoregressive": SPLINE[1:],          # no on_knots: its knots move with the other coordinates
    "ResidualBlock": RESIDUAL,
    "MarginalGaussianization": GAUSSIANIZATION,
}
