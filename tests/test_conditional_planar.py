"""ConditionalPlanar beyond the harness (tests/registry_conditional_planar.py runs the shared checks): each
sample's map is Planar's with that sample's parameters w + h Cw, u + h Cu, b + h Cb, and a context where w(h)
vanishes is refused with an error that names the sample.  Tolerance 1e-12: the same formulas, summed in
another order (a product with the context against per-sample vectors)."""
import numpy as np
import pytest

import npflows as nf

from harness import close


def test_each_sample_is_planar_with_its_own_parameters():
    rng = np.random.default_rng(0)
    D, C, n = 3, 2, 4
    b = nf.ConditionalPlanar(D, C)
    p = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in b.init(rng).items()}
    x, h = rng.standard_normal((n, D)), rng.standard_normal((n, C))
    y, ld, cache = b.forward(p, x, context=h)
    xi, ldi = b.inverse(p, y, context=h)
    planar = nf.Planar(D)
    for i in range(n):
        pi = {"w": p["w"] + h[i] @ p["Cw"], "u": p["u"] + h[i] @ p["Cu"], "b": p["b"] + h[i] @ p["Cb"]}
        yi, ldi_ref, _ = planar.forward(pi, x[i:i + 1])
        close(y[i:i + 1], yi, 1e-12, f"sample {i}: output vs Planar")
        close(ld[i:i + 1], ldi_ref, 1e-12, f"sample {i}: logdet vs Planar")
        close(xi[i:i + 1], x[i:i + 1], 1e-10, f"sample {i}: round trip")
    dy, dl = rng.standard_normal((n, D)), rng.standard_normal(n)
    dx, grads, dh = b.backward(p, dy, dl, cache)
    assert dh.shape == h.shape and set(grads) == set(p)


def test_zero_heads_give_planar_for_every_context():
    rng = np.random.default_rng(1)
    b = nf.ConditionalPlanar(2, 3)
    p = b.init(rng)
    p = {k: (np.zeros_like(v) if k.startswith("C") else v + 0.3 * rng.standard_normal(v.shape)) for k, v in p.items()}
    x, h = rng.standard_normal((5, 2)), rng.standard_normal((5, 3))
    y, ld, _ = b.forward(p, x, context=h)
    y2, ld2, _ = nf.Planar(2).forward({k: p[k] for k in ("w", "u", "b")}, x)
    close(y, y2, 1e-14, "zero heads: output")
    close(ld, ld2, 1e-14, "zero heads: logdet")


def test_a_context_where_w_vanishes_is_refused_naming_the_sample():
    b = nf.ConditionalPlanar(2, 1)
    p = {"w": np.array([1.0, -2.0]), "u": np.array([0.3, 0.1]), "b": np.array([0.0]),
         "Cw": np.array([[1.0, -2.0]]), "Cu": np.zeros((1, 2)), "Cb": np.zeros((1, 1))}
    h = np.array([[0.5], [-1.0], [2.0]])               # sample 1: w + h Cw = 0
    with pytest.raises(FloatingPointError, match="sample 1 makes w\\(h\\).*vanish"):
        b.forward(p, np.ones((3, 2)), context=h)
    with pytest.raises(ValueError, match="ConditionalPlanar.*context"):
        b.forward(p, np.ones((3, 2)))
