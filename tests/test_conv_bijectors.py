"""Glow's image layers and the masked convolution beyond the harness (npflows/bijectors/conv.py).

* The issue's worked example: the 1x1 convolution's logdet is H*W*log|det W|.  The brute-force Jacobian of
  the flattened image (autograd) is checked to be exactly kron(W, I_HW) (channel-major order), and the layer's
  logdet against slogdet of that Jacobian and against H*W times a 60-digit mpmath log|det W| of the stored
  float64 W: two references that share no code with the layer.  W is perturbed so that log|det W| is far
  from 0, so a logdet that forgot the factor H*W fails.
* A nearly singular weight (condition number kappa = 1e8): round trip and logdet within tolerances derived
  from kappa (see the test).
* ActNorm2d: the data-dependent init gives zero mean and unit variance per channel over batch and pixels;
  the map equals ElementwiseAffine on the flattened image with each channel's log-scale repeated H*W times.
* The 1x1 convolutions equal a Linear/LULinear applied to every pixel; their inits are orthogonal.
* The masked convolution: its Jacobian is lower triangular in raster order (pixels (i, j) row by row,
  channels innermost), with exp(log_diag[c]) on the diagonal, checked on the brute-force Jacobian; its
  inverse by substitution; its taps.
"""
import autograd
import autograd.numpy as anp
import mpmath as mp
import numpy as np
import pytest

import npflows as nf
from npflows.bijectors.conv import random_rotation

EPS = np.finfo(np.float64).eps


def jacobian(b, p, x):
    """``(N, D, D)``: the brute-force Jacobian of each sample's flattened event (autograd on the traceable
    path), after checking that samples do not interact."""
    n, d = x.shape[0], x[0].size
    f = lambda flat: anp.reshape(b.forward(p, anp.reshape(flat, x.shape), xp=anp)[0], (-1,))
    J = autograd.jacobian(f)(x.reshape(-1)).reshape(n, d, n, d)
    for i in range(n):
        assert np.all(np.delete(J[i], i, axis=1) == 0)
    return np.stack([J[i, :, i, :] for i in range(n)])


def mp_logabsdet(W, dps=60):
    """log|det W| of the float64 matrix W (exact entries) to ``dps`` digits."""
    with mp.workdps(dps):
        return mp.log(abs(mp.det(mp.matrix(W.tolist()))))


# ----------------------------------------------------------------------------- the worked example
@pytest.mark.parametrize("shape", [(2, 3, 3), (3, 2, 2), (3, 4, 5)])
def test_1x1_conv_logdet_is_hw_times_logabsdet_w(shape):
    rng = np.random.default_rng(0)
    C, H, Wd = shape
    b = nf.Invertible1x1Conv(shape)
    W = random_rotation(rng, C) + 0.6 * rng.standard_normal((C, C))
    x = rng.standard_normal((3,) + shape)
    y, ld, _ = b.forward({"W": W}, x)
    ref = float(mp_logabsdet(W))
    assert abs(ref) > 0.1                           # the factor H*W is visible: H*W*ref != ref
    J = jacobian(b, {"W": W}, x)
    np.testing.assert_array_equal(J[0], np.kron(W, np.eye(H * Wd)))     # channel-major: W (x) I_HW
    for i in range(3):
        assert J[i].shape == (C * H * Wd,) * 2
        np.testing.assert_allclose(ld[i], np.linalg.slogdet(J[i])[1], rtol=1e-12, atol=1e-12)
        # the same number as H*W*log|det W| from 60-digit arithmetic, to a few ulps of the result
        assert abs(ld[i] - H * Wd * ref) <= 8 * EPS * max(1.0, abs(H * Wd * ref))
    _, ld_inv = b.inverse({"W": W}, y)
    np.testing.assert_array_equal(ld_inv, -ld)


def test_lu_1x1_conv_logdet_is_hw_times_sum_of_log_scales():
    rng = np.random.default_rng(1)
    shape = (3, 2, 3)
    b = nf.LUInvertible1x1Conv(shape, perm=[2, 0, 1], sign=[1, -1, 1])
    p = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    W = b.weight(p)
    x = rng.standard_normal((2,) + shape)
    _, ld, _ = b.forward(p, x)
    J = jacobian(b, p, x)
    np.testing.assert_allclose(J[0], np.kron(W, np.eye(6)), rtol=0, atol=1e-15)
    assert np.array_equal(ld, np.full(2, 6 * p["log_scale"].sum()))
    assert abs(ld[0] - 6 * float(mp_logabsdet(W))) <= 1e-13 * max(1.0, abs(ld[0]))
    np.testing.assert_allclose(ld[0], np.linalg.slogdet(J[0])[1], rtol=1e-12)
    # the signs are the diagonal's: det W = det P * prod(sign * exp(s)); det P = +1 for a 3-cycle
    assert np.sign(np.linalg.det(W)) == -1


# ----------------------------------------------------------------------------- near singular
def test_1x1_conv_nearly_singular_weight_round_trip_and_logdet():
    """kappa(W) = 1e8 (singular values 1, 1e-4, 1e-8), float64.

    Round trip: y = fl(Wx) carries an error |e| <= C eps |W||x| per pixel, which W^{-1} amplifies by up to
    kappa; ``solve`` is backward stable and adds the same order (c C eps kappa).  So the per-pixel relative
    error ||x^ - x|| / ||x|| is O(C eps kappa) ~ 7e-8; measured 0.1-0.7 eps kappa over seeds; the tolerance
    is C eps kappa.
    Logdet: slogdet's LU is the exact LU of W + dW with ||dW|| <~ C eps ||W||, which moves log|det W| by
    tr(W^{-1} dW) <= C eps kappa; times H*W.  Measured ~0.02 H*W eps kappa against mpmath's exact value of
    the stored W; tolerance H*W*C*eps*kappa (3.5e-7 here, against a logdet of -442).
    """
    C, H, Wd = 3, 4, 4
    for seed in range(4):
        rng = np.random.default_rng(seed)
        W = random_rotation(rng, C) @ np.diag([1.0, 1e-4, 1e-8]) @ random_rotation(rng, C).T
        kappa = np.linalg.cond(W)
        assert 0.9e8 < kappa < 1.1e8
        b = nf.Invertible1x1Conv((C, H, Wd))
        x = rng.standard_normal((5, C, H, Wd))
        y, ld, _ = b.forward({"W": W}, x)
        x2, ld2 = b.inverse({"W": W}, y)
        err = np.linalg.norm(x2 - x, axis=1) / np.linalg.norm(x, axis=1)
        assert err.max() <= C * EPS * kappa, (seed, err.max() / (EPS * kappa))
        ref = H * Wd * mp_logabsdet(W)
        assert float(abs(mp.mpf(float(ld[0])) - ref)) <= H * Wd * C * EPS * kappa
        assert np.array_equal(ld2, -ld)


def test_lu_1x1_conv_nearly_singular_round_trip():
    """exp(s) spanning 1 .. 1e-8 with perturbed triangles: kappa(W) ~ 1e8-1e9.  The logdet H*W*sum(s) is exact
    (one sum); the round trip goes through two triangular solves, each backward stable (Higham 2002, 8.1),
    so the same bound as the dense weight holds with the computed kappa(W): C eps kappa per pixel."""
    rng = np.random.default_rng(5)
    C, H, Wd = 3, 4, 4
    b = nf.LUInvertible1x1Conv((C, H, Wd), perm=[1, 2, 0])
    p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    p["log_scale"] = np.log([1.0, 1e-4, 1e-8])
    kappa = np.linalg.cond(b.weight(p))
    assert kappa > 1e7
    x = rng.standard_normal((5, C, H, Wd))
    y, ld, _ = b.forward(p, x)
    x2, ld2 = b.inverse(p, y)
    err = np.linalg.norm(x2 - x, axis=1) / np.linalg.norm(x, axis=1)
    assert err.max() <= C * EPS * kappa
    assert np.array_equal(ld, np.full(5, H * Wd * p["log_scale"].sum())) and np.array_equal(ld2, -ld)


def test_1x1_conv_refuses_a_weight_singular_to_working_precision():
    b = nf.Invertible1x1Conv((2, 2, 2))
    with pytest.raises(ValueError, match="Invertible1x1Conv: the matrix W is singular"):
        b.forward({"W": np.array([[1.0, 2.0], [2.0, 4.0]])}, np.ones((1, 2, 2, 2)))


# ----------------------------------------------------------------------------- 1x1 conv = Linear per pixel
def _per_pixel(x):
    return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


def test_1x1_convs_equal_linear_layers_applied_at_every_pixel():
    rng = np.random.default_rng(2)
    shape = (3, 2, 4)
    x = rng.standard_normal((4,) + shape)
    W = rng.standard_normal((3, 3))
    y, ld, _ = nf.Invertible1x1Conv(shape).forward({"W": W}, x)
    y_lin, ld_lin, _ = nf.Linear(3).forward({"W": W, "b": np.zeros(3)}, _per_pixel(x))
    np.testing.assert_allclose(_per_pixel(y), y_lin, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(ld, ld_lin.reshape(4, 8).sum(axis=1), rtol=1e-14)
    b = nf.LUInvertible1x1Conv(shape, perm=[1, 0, 2])
    lu = nf.LULinear(3, perm=[1, 0, 2])
    p = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    y, ld, _ = b.forward(p, x)
    y_lin, ld_lin, _ = lu.forward({**p, "bias": np.zeros(3)}, _per_pixel(x))
    np.testing.assert_allclose(_per_pixel(y), y_lin, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(ld, ld_lin.reshape(4, 8).sum(axis=1), rtol=1e-14)


@pytest.mark.parametrize("sign", [None, [1, -1, 1, -1], [-1, -1, -1, -1]])
def test_inits_are_orthogonal_with_the_requested_signs(sign):
    rng = np.random.default_rng(3)
    shape = (4, 2, 2)
    W = nf.Invertible1x1Conv(shape).init(rng)["W"]
    np.testing.assert_allclose(W @ W.T, np.eye(4), atol=1e-14)
    b = nf.LUInvertible1x1Conv(shape, perm=rng.permutation(4), sign=sign)
    p = b.init(rng)
    Wlu = b.weight(p)
    np.testing.assert_allclose(Wlu @ Wlu.T, np.eye(4), atol=1e-14)
    assert abs(p["log_scale"].sum()) < 1e-13                    # logdet 0: volume preserving at init
    M = b._factors(p, np)[1]
    assert np.array_equal(np.sign(np.diag(M)), b.sign)
    assert not np.allclose(Wlu, b.P)                           # a rotation, not the bare permutation
    assert b.init(np.random.default_rng(9)).keys() == b.param_shapes().keys()


# ----------------------------------------------------------------------------- ActNorm2d
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_actnorm2d_data_dependent_init_normalises_each_channel(dtype):
    """Over batch and pixels, per channel: mean 0 and variance std^2/(std + eps)^2 = 1 - 2 eps/std + ...
    (eps = 1e-6); tolerances: float64 1e-12 (a few roundings of O(10) values), float32 1e-5 (its eps is
    1.2e-7 and a mean over 800 values loses up to ~1 digit)."""
    rng = np.random.default_rng(4)
    shape = (3, 4, 5)
    scales, means = np.array([0.1, 2.0, 30.0]), np.array([-5.0, 0.0, 7.0])
    data = (means[:, None, None] + scales[:, None, None] * rng.standard_normal((40,) + shape)).astype(dtype)
    b = nf.ActNorm2d(shape)
    p = b.init(rng, data)
    assert all(v.dtype == dtype for v in p.values())
    y, _, _ = b.forward(p, data)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    m, v = y.astype(np.float64).mean(axis=(0, 2, 3)), y.astype(np.float64).var(axis=(0, 2, 3))
    assert np.all(np.abs(m) <= tol), m
    assert np.all(np.abs(v - 1.0) <= tol + 2 * b.eps / data.astype(np.float64).std(axis=(0, 2, 3))), v
    with pytest.raises(ValueError, match="ActNorm2d: data-dependent init needs at least 2 values"):
        nf.ActNorm2d((2, 1, 1)).init(rng, np.ones((1, 2, 1, 1)))


def test_actnorm2d_equals_elementwise_affine_on_the_flattened_image():
    rng = np.random.default_rng(5)
    shape = (2, 3, 4)
    b = nf.ActNorm2d(shape)
    p = {"log_scale": rng.standard_normal(2), "shift": rng.standard_normal(2)}
    x = rng.standard_normal((3,) + shape)
    y, ld, cache = b.forward(p, x)
    flat = nf.ElementwiseAffine(24)
    q = {"log_scale": np.repeat(p["log_scale"], 12), "shift": np.repeat(p["shift"], 12)}
    y2, ld2, c2 = flat.forward(q, x.reshape(3, 24))
    np.testing.assert_allclose(y.reshape(3, 24), y2, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(ld, ld2, rtol=1e-14)
    dy, dl = rng.standard_normal(y.shape), rng.standard_normal(3)
    dx, g = b.backward(p, dy, dl, cache)
    dx2, g2 = flat.backward(q, dy.reshape(3, 24), dl, c2)
    np.testing.assert_allclose(dx.reshape(3, 24), dx2, rtol=1e-14)
    # each channel's parameter gathers the gradients of its H*W copies
    np.testing.assert_allclose(g["log_scale"], g2["log_scale"].reshape(2, 12).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(g["shift"], g2["shift"].reshape(2, 12).sum(axis=1), rtol=1e-12)


def test_sequential_data_dependent_init_reaches_an_actnorm2d_deep_in_a_glow_like_stack():
    rng = np.random.default_rng(6)
    shape = (2, 3, 3)
    stack = nf.Sequential([nf.ActNorm2d(shape), nf.Invertible1x1Conv(shape), nf.ActNorm2d(shape)])
    data = 4.0 + 3.0 * rng.standard_normal((30,) + shape)
    p = stack.init(rng, data)
    y, _, _ = stack.forward(p, data)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- the masked convolution
def raster_permutation(shape):
    """Channel-major flat indices listed in raster order (pixel (i, j) row by row, channels innermost)."""
    C, H, W = shape
    return np.arange(C * H * W).reshape(C, H, W).transpose(1, 2, 0).ravel()


def expected_jacobian(shape, k, taps, weight, log_diag):
    """The Jacobian in raster order, built from the stated mask alone (not from the layer's code):
    d y[o, i, j] / d x[c, i', j'] = K[o, c, u, v] at the offset (u, v) = (i' - i + p, j' - j + p), where K is
    ``weight`` at the taps before the centre (all of them in raster order, or only u <= p and v <= p), ``weight``
    below the centre's channel diagonal, exp(log_diag) on it, and zero elsewhere."""
    C, H, W = shape
    p = k // 2
    J = np.zeros((H, W, C, H, W, C))
    for i, j, i2, j2 in np.ndindex(H, W, H, W):
        u, v = i2 - i + p, j2 - j + p
        if not (0 <= u < k and 0 <= v < k):
            continue
        before = u < p or (u == p and v < p)
        if taps == "quadrant":
            before = before and u <= p and v <= p
        for o, c in np.ndindex(C, C):
            if before or ((u, v) == (p, p) and c < o):
                J[i, j, o, i2, j2, c] = weight[o, c, u, v]
            elif (u, v) == (p, p) and c == o:
                J[i, j, o, i2, j2, c] = np.exp(log_diag[o])
    return J.reshape(C * H * W, C * H * W)


MASKED = [((2, 3, 3), 3, "raster"), ((1, 4, 4), 5, "raster"), ((3, 2, 2), 3, "quadrant"),
          ((2, 4, 3), 5, "quadrant"), ((3, 2, 2), 1, "raster")]


@pytest.mark.parametrize("shape,k,taps", MASKED)
def test_masked_conv_jacobian_is_lower_triangular_in_raster_order(shape, k, taps):
    rng = np.random.default_rng(7)
    b = nf.MaskedConv2d(shape, kernel_size=k, taps=taps)
    p = {key: v + 0.5 * rng.standard_normal(v.shape) for key, v in b.init(rng).items()}
    x = rng.standard_normal((2,) + shape)
    perm = raster_permutation(shape)
    J = jacobian(b, p, x)[1][np.ix_(perm, perm)]
    assert np.all(np.triu(J, 1) == 0)                                  # triangular in the stated order
    np.testing.assert_array_equal(np.diag(J), np.tile(np.exp(p["log_diag"]), shape[1] * shape[2]))
    # every entry, including which ones are free, as the mask states it
    np.testing.assert_allclose(J, expected_jacobian(shape, k, taps, p["weight"], p["log_diag"]), rtol=1e-15, atol=0)
    if k > 1 or shape[0] > 1:
        assert np.count_nonzero(np.tril(J, -1)) > 0                    # not merely diagonal
    _, ld, _ = b.forward(p, x)
    np.testing.assert_allclose(ld, np.linalg.slogdet(J)[1], rtol=1e-13)


def test_the_triangularity_check_fails_on_an_unmasked_convolution():
    """The check above can fail: the same convolution with the full kernel (no mask) is not triangular in
    raster order, nor in the channel-major order."""
    from npflows.nn.conv import conv2d
    rng = np.random.default_rng(8)
    shape = (2, 3, 3)
    K = rng.standard_normal((2, 2, 3, 3))
    x = rng.standard_normal((1,) + shape)
    J = autograd.jacobian(lambda v: anp.reshape(conv2d(anp.reshape(v, x.shape), K, xp=anp), (-1,)))(x.ravel())
    perm = raster_permutation(shape)
    assert np.any(np.triu(J[np.ix_(perm, perm)], 1) != 0) and np.any(np.triu(J, 1) != 0)


@pytest.mark.parametrize("shape,k,taps", MASKED + [((4, 6, 7), 3, "raster")])
def test_masked_conv_inverse_numpy_path_equals_the_traceable_substitution(shape, k, taps):
    """The NumPy path groups the sums differently (the rows above in one GEMM per row) from the traceable
    per-tap substitution; both are the same substitution, so they agree to rounding (1e-13 relative) and
    invert the forward (1e-12: the recursion grows the values by up to ~10 here)."""
    rng = np.random.default_rng(9)
    b = nf.MaskedConv2d(shape, kernel_size=k, taps=taps)
    p = {key: v + 0.3 * rng.standard_normal(v.shape) for key, v in b.init(rng).items()}
    x = rng.standard_normal((3,) + shape)
    y, ld, _ = b.forward(p, x)
    x1, ld1 = b.inverse(p, y)
    x2, ld2 = b.inverse(p, y, xp=anp)
    scale = max(1.0, float(np.abs(x1).max()))
    assert np.abs(x1 - x2).max() <= 1e-13 * scale and np.abs(x1 - x).max() <= 1e-12 * scale
    assert x1.flags.c_contiguous and x1.dtype == np.float64
    np.testing.assert_array_equal(ld1, -ld)
    np.testing.assert_array_equal(ld2, -ld)
    x32, _ = b.inverse(nf.cast_params(p, np.float32), y.astype(np.float32))
    assert x32.dtype == np.float32 and np.abs(x32 - x).max() <= 1e-5 * scale


def test_quadrant_taps_of_a_3x3_kernel_are_the_2x2_causal_neighbourhood():
    from npflows.bijectors.conv import causal_taps
    np.testing.assert_array_equal(causal_taps(3, "quadrant"), [[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_taps(3, "raster"), [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_taps(1), [[0]])
    b = nf.MaskedConv2d((2, 2, 2), kernel_size=3, taps="quadrant")
    np.testing.assert_array_equal(b.mask[1, 0].astype(int), [[1, 1, 0], [1, 1, 0], [0, 0, 0]])   # centre: c < o
    np.testing.assert_array_equal(b.mask[0, 1].astype(int), [[1, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_masked_conv_inverse_that_overflows_names_the_recursion():
    """C = 1, y_ij = x_ij + a x_i,j-1 with a = 1e10: the inverse x_ij = sum_m (-a)^m y_i,j-m grows like a^W and
    overflows float64 within a 40-pixel row; the error names the layer and the recursion (the map's own growth,
    not the algorithm's)."""
    b = nf.MaskedConv2d((1, 1, 40), kernel_size=3)
    p = b.init(np.random.default_rng(0))
    w = np.zeros_like(p["weight"])
    w[0, 0, 1, 0] = 1e10
    p["weight"] = w
    with pytest.raises(FloatingPointError, match="MaskedConv2d inverse.*raster-order substitution amplifies"):
        b.inverse(p, np.ones((2, 1, 1, 40)))
    y = b.forward(p, np.ones((2, 1, 1, 40)))[0]             # the forward is a bounded map: finite
    assert np.isfinite(y).all()


def test_masked_conv_refuses_bad_structure_and_explains_a_diverged_diagonal():
    with pytest.raises(ValueError, match="MaskedConv2d: kernel_size must be an odd int"):
        nf.MaskedConv2d((1, 3, 3), kernel_size=2)
    with pytest.raises(ValueError, match="MaskedConv2d: taps must be one of"):
        nf.MaskedConv2d((1, 3, 3), taps="diagonal")
    with pytest.raises(ValueError, match=r"MaskedConv2d: expected an image event shape \(C, H, W\)"):
        nf.MaskedConv2d(9)
    b = nf.MaskedConv2d((2, 2, 2))
    p = b.init(np.random.default_rng(0))
    p["log_diag"] = np.array([0.0, 800.0])
    with pytest.raises(FloatingPointError, match="MaskedConv2d forward.*log-scale reaches 800"):
        b.forward(p, np.ones((1, 2, 2, 2)))


def test_bench_masked_conv_quick_runs():
    """The inverse-cost benchmark (quoted in MaskedConv2d's Notes) runs and checks its round trips."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "scripts/bench_masked_conv.py", "--quick"], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("(") and "quick" not in line]
    assert [r[:4] for r in rows] == [["(1,", "8,", "8)", "1"], ["(1,", "8,", "8)", "64"],
                                     ["(4,", "4,", "4)", "1"], ["(4,", "4,", "4)", "64"]]
    assert all(float(r[-1]) < 1e-12 for r in rows)
