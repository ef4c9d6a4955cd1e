"""Elementwise maps beyond the harness: the sigmoid's accuracy in both tails.

The reference is mpmath at 50 digits.  Tolerance: 4 ulps relative (8.9e-16): ``sigmoid`` is one ``exp``, one
addition and one division, each correctly rounded or within an ulp (exp), so its relative error is at most
about 3 ulps; the old ``(tanh(x/2) + 1)/2`` had relative error 1e-5 at x = -28 and 1 below x = -37.4.
"""
import mpmath as mp
import numpy as np
import pytest

import npflows as nf
from npflows.bijectors.elementwise import sigmoid, sigmoid_prime

ULPS4 = 4 * np.finfo(np.float64).eps
XS = np.array([-708.0, -700.0, -690.8, -100.0, -40.0, -36.0, -28.0, -1.0, -1e-300, 0.0, 1e-8, 1.0, 28.0, 36.0, 40.0])


def _ref(f, xs):
    with mp.workdps(50):
        return [f(mp.mpf(float(x))) for x in xs]


def _rel(got, ref):
    return max(float(abs(mp.mpf(float(g)) - r) / abs(r)) for g, r in zip(got, ref))


def test_sigmoid_is_accurate_in_both_tails():
    assert _rel(sigmoid(XS), _ref(lambda x: 1 / (1 + mp.exp(-x)), XS)) <= ULPS4


def test_sigmoid_prime_is_accurate_in_both_tails():
    ref = _ref(lambda x: mp.exp(-x) / (1 + mp.exp(-x)) ** 2, XS)
    assert _rel(sigmoid_prime(XS), ref) <= ULPS4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_keeps_dtype_and_warns_nowhere(dtype):
    x = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 1e4], dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):     # underflow to 0 is the answer
        s, ds = sigmoid(x), sigmoid_prime(x)
    assert s.dtype == dtype and ds.dtype == dtype
    assert np.array_equal(s, [0.0, 0.0, s[2], 0.5, 1.0, 1.0]) and s[2] > 0


def test_logit_inverse_near_0_and_sigmoid_round_trip_deep_in_the_tail():
    y = np.array([[-690.7755278982137, -28.0, -700.0]])
    x, _ = nf.Logit(3).inverse({}, y)
    ref = _ref(lambda v: 1 / (1 + mp.exp(-v)), y[0])
    assert _rel(x[0], ref) <= ULPS4                       # 1e-300, 6.9e-13, 9.9e-305: every digit
    b = nf.Sigmoid(3)
    s, _, _ = b.forward({}, y)
    x2, _ = b.inverse({}, s)
    np.testing.assert_allclose(x2, y, rtol=ULPS4, atol=0)   # log(s): a few ulps of s add ~1e-15 to ~|y| ulps
