"""Every check of the shared harness on every registered bijector (see harness.py for tolerances)."""
import numpy as np
import pytest

import harness
from registry import REGISTRY

NAMES = sorted(REGISTRY)


def make(name, seed=0):
    return REGISTRY[name](np.random.default_rng(seed))


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name):
    harness.check_round_trip(make(name))


@pytest.mark.parametrize("name", NAMES)
def test_numpy_path_matches_traced_path(name):
    harness.check_numpy_path_matches_traced(make(name))


@pytest.mark.parametrize("name", NAMES)
def test_logdet_matches_bruteforce_jacobian(name):
    harness.check_logdet_bruteforce(make(name))


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_autograd(name):
    harness.check_backward_autograd(make(name), np.random.default_rng(1))


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_central_differences(name):
    harness.check_backward_central(make(name), np.random.default_rng(2))


@pytest.mark.parametrize("name", NAMES)
def test_float32(name):
    harness.check_float32(make(name), np.random.default_rng(3))


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises(name):
    harness.check_bad_input(make(name))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_seed(name):
    a, b = make(name, seed=7), make(name, seed=7)
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    ca, cb = harness.context_of(a), harness.context_of(b)
    assert (ca is None) == (cb is None)
    if ca is not None:
        np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(a.bijector.forward(a.params, a.x, ca)[0], b.bijector.forward(b.params, b.x, cb)[0])
