"""The 2-D targets of Rezende & Mohamed (2015): values, hand-derived gradients, and log Z by quadrature."""
import math

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from scipy import integrate

from npflows.targets import POTENTIALS, Potential, log_normalizer

TAU4 = 2 * np.pi / 4


def reference_U(name, z, envelope):
    """Table 1 of the paper written straight from the formulas, in autograd.numpy (an independent
    transcription: it shares no code with npflows.targets)."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = anp.sin(TAU4 * z1)
    w2 = 3 * anp.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + anp.exp(-(z1 - 1) / 0.3))
    if name == "U1":
        r = anp.sqrt(z1 ** 2 + z2 ** 2)
        U = 0.5 * ((r - 2) / 0.4) ** 2 - anp.log(anp.exp(-0.5 * ((z1 - 2) / 0.6) ** 2)
                                                 + anp.exp(-0.5 * ((z1 + 2) / 0.6) ** 2))
    elif name == "U2":
        U = 0.5 * ((z2 - w1) / 0.4) ** 2
    elif name == "U3":
        U = -anp.log(anp.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + anp.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
    else:
        U = -anp.log(anp.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + anp.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2))
    return U + (z1 / 4) ** 8 if envelope else U


@pytest.mark.parametrize("name", POTENTIALS)
def test_values_and_gradients_match_the_formulas(name):
    """Values to 1e-12 and gradients to 1e-10 (relative to max(1, |.|)) against autograd on the
    independent transcription, on [-5, 5]^2 where the exponentials of the reference do not underflow."""
    t = Potential(name)
    assert t.envelope == (name != "U1")
    x = np.random.default_rng(0).uniform(-5, 5, (400, 2))
    lp, g = t(x)
    ref = -reference_U(name, x, t.envelope)
    gref = autograd.elementwise_grad(lambda z: -reference_U(name, z, t.envelope))(x)
    np.testing.assert_allclose(lp, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g, gref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", POTENTIALS)
def test_far_from_the_modes_stays_finite(name):
    """The two-component log-sum-exp is stabilised: no overflow or NaN where both terms underflow."""
    x = np.array([[30.0, -40.0], [-12.0, 50.0], [0.0, 0.0], [1e3, 1e3]])
    lp, g = Potential(name)(x)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(g))


def test_float32_in_float32_out_and_bad_input():
    x = np.random.default_rng(1).uniform(-3, 3, (10, 2))
    for name in POTENTIALS:
        lp, g = Potential(name)(x.astype(np.float32))
        assert lp.dtype == np.float32 and g.dtype == np.float32
        lp64, g64 = Potential(name)(x)
        np.testing.assert_allclose(lp, lp64, rtol=1e-4, atol=1e-4)    # float32 eps 1.2e-7, a few dozen ops
    with pytest.raises(ValueError, match=r"Potential\(U2\)"):
        Potential("U2")(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match=r"Potential\(U1\)"):
        Potential("U1")(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="unknown potential"):
        Potential("U5")


def test_envelope_leaves_the_middle_of_the_window_untouched():
    """exp(-(z1/4)^8) is > 0.996 for |z1| <= 2, 0.90 at 3 and exp(-1) at 4, as the docs state."""
    z = np.array([[2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    ratio = np.exp(Potential("U2", envelope=True)(z)[0] - Potential("U2", envelope=False)(z)[0])
    assert ratio[0] > 0.996 and ratio[1] == pytest.approx(0.9, abs=0.005) and ratio[2] == pytest.approx(math.e ** -1)


@pytest.mark.parametrize("name, width", [("U2", 0.4), ("U3", 0.7), ("U4", 0.75)])
def test_log_normalizer_against_the_closed_form(name, width):
    """For U2..U4 the z2 integral is Gaussian (total width sqrt(2 pi) * (sum of the component scales))
    and the z1 integral is that of exp(-(z1/4)^8), i.e. 8 Gamma(9/8):
    log Z = log(width sqrt(2 pi)) + log 8 + lgamma(9/8).  The quadrature matches to 1e-12."""
    exact = math.log(width * math.sqrt(2 * math.pi)) + math.log(8.0) + math.lgamma(9 / 8)
    assert log_normalizer(Potential(name)) == pytest.approx(exact, abs=1e-12)


def test_log_normalizer_of_U1_against_adaptive_quadrature():
    """U1 in polar coordinates by scipy's adaptive dblquad (r up to 10, 1e-12 requested): agree to 1e-10."""
    def f(r, th):
        c = r * np.cos(th)
        return r * np.exp(-0.5 * ((r - 2) / 0.4) ** 2) * (np.exp(-0.5 * ((c - 2) / 0.6) ** 2)
                                                          + np.exp(-0.5 * ((c + 2) / 0.6) ** 2))
    val, err = integrate.dblquad(f, 0, 2 * np.pi, 0, 10, epsabs=1e-12, epsrel=1e-12)
    assert err < 1e-10
    assert log_normalizer(Potential("U1")) == pytest.approx(math.log(val), abs=1e-10)


@pytest.mark.parametrize("name", POTENTIALS)
def test_log_normalizer_grid_is_wide_and_fine_enough(name):
    """The default box [-8, 8]^2 with spacing 0.02: widening it to [-10, 10]^2 (same spacing, so the
    same points plus the new border) changes log Z by less than 1e-10, and so does doubling the spacing to
    0.04 (the trapezoid rule on a smooth, vanishing integrand converges geometrically in 1/h, so the
    default spacing is converged if a twice coarser one already agrees).  A box that is too narrow,
    [-3, 3]^2, does lose mass (> 1e-5 for each potential): the test can fail."""
    t = Potential(name)
    base = log_normalizer(t)
    assert abs(log_normalizer(t, half_width=10.0, n=1001) - base) < 1e-10
    assert abs(log_normalizer(t, n=401) - base) < 1e-10
    assert abs(log_normalizer(t, half_width=3.0, n=301) - base) > 1e-5
