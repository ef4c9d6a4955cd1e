"""Harness entries for the invertible residual block (npflows/bijectors/residual.py).

* Every activation (lipswish, elu, tanh), both spectral norms (exact SVD, power iteration), the three logdets
  (exact, the truncated series, the Russian roulette), D = 2-4, hidden widths 4-6, 4 points.
* Parameters: the init plus noise of scale 0.5, then every raw weight V rescaled by a power of two until it lies
  clearly on one side of the kink of the normalisation ``W = V min(1, c/sigma(V))`` at sigma(V) = c: every
  entry has sigma(V) > c + 0.1 (the normalised branch, through the bound sigma >= ||V||_F / sqrt(min(m, n)))
  except ``residual_exact_tanh_unscaled``'s second layer, which is put below c/2 (the identity branch, through
  sigma <= ||V||_F).  Only elementwise arithmetic (no LAPACK or BLAS), so the inputs are the same bits on every
  machine, as the golden cases need.
* The estimator entries fix their probe vectors (``probes=``; Gaussian ones rounded to multiples of 2^-20, so
  that they are the same numbers in float32) and the roulette's length (``roulette_n=``), so their estimate is
  a deterministic function of the inputs that another implementation reproduces.  Their
  logdet is an estimate, not log det(I + J_g), so each states its own reference for the harness's brute-force
  check (``Case.logdet_reference``): the same estimator computed from the dense autograd Jacobian J of the whole
  forward map, ``mean_p sum_k (-1)^(k+1) w_k v_p^T (J - I)^k v_p / k``, with the weights
  ``w_k = 1 / P(N >= k)`` written here from the formula (1 up to k = n_exact + 1, (1 - p)^-(k - n_exact - 1)
  beyond), not taken from npflows.
* Round trip: every entry's inverse runs at ``inv_tol = 1e-12``: the fixed-point iteration stops when the Banach
  bound c/(1-c) |x_{k+1} - x_k| on each sample's error is below 1e-12 max(1, |x|), so the harness's 1e-10 holds
  with a factor 100 to spare (the logdet at the solved x moves by |grad logdet| 1e-12).
"""
import numpy as np

from npflows.bijectors.residual import ResidualBlock
from registry import Case, perturbed

C = 0.9


def _place(V, above=True):
    """``V`` times a power of two until sigma(V) > C + 0.1 (``above``; via the lower bound ||V||_F/sqrt(r)) or
    sigma(V) < C/2 (via the upper bound ||V||_F): elementwise arithmetic only."""
    fro = np.sqrt(np.sum(V * V))
    r = min(V.shape)
    while above and fro / np.sqrt(r) <= C + 0.1:
        V, fro = 2.0 * V, 2.0 * fro
    while not above and fro >= C / 2:
        V, fro = 0.5 * V, 0.5 * fro
    return V


def _weights(b, n):
    k = np.arange(n + 1)
    if b.logdet != "roulette":
        return np.ones(n + 1)
    return np.where(k <= b.n_exact + 1, 1.0, (1.0 - b.roulette_p) ** -(k - b.n_exact - 1.0))


def estimator_reference(b):
    """``logdet_reference(params, x, J)``: the estimator's value from the per-sample dense Jacobians ``J``
    ``(N, D, D)`` of the forward map and the block's fixed probes."""
    V = b.fixed_probes
    n = b.n_terms if b.logdet == "series" else b.fixed_roulette_n
    w = _weights(b, n)

    def ref(params, x, J):
        out = np.zeros(J.shape[0])
        for i, Ji in enumerate(J):
            G = Ji - np.eye(Ji.shape[0])
            for v in V:
                u = v.copy()
                for k in range(1, n + 1):
                    u = G @ u
                    out[i] += (-1.0) ** (k + 1) * w[k] * (v @ u) / k / V.shape[0]
        return out
    return ref


def _block(dim, hidden, n=4, below=(), estimator=False, probe_kind="gaussian", **kw):
    def make(rng):
        kw2 = dict(kw)
        if estimator:
            P = kw2.pop("n_probes", 2)
            probes = np.ldexp(np.round(np.ldexp(rng.standard_normal((P, dim)), 20)), -20) \
                if probe_kind == "gaussian" else rng.choice(np.array([-1.0, 1.0]), size=(P, dim))
            kw2["probes"] = probes
        b = ResidualBlock(dim, hidden=hidden, lipschitz=C, inv_tol=1e-12, **kw2)
        p = perturbed(b, rng, 0.5)
        for l in range(b.net.n_layers):
            key = b.net.V[l]
            p[key] = _place(p[key], above=l not in below)
        x = rng.standard_normal((n, dim))
        return Case(b, p, x, logdet_reference=estimator_reference(b) if estimator else None)
    return make


ENTRIES = {
    "residual_exact_lipswish": _block(3, (6,), activation="lipswish"),
    "residual_exact_elu_power": _block(2, (5, 4), activation="elu", spectral="power", n_power_iter=10),
    "residual_exact_tanh_unscaled": _block(4, (5, 4), activation="tanh", below=(1,)),
    "residual_series_lipswish": _block(3, (6,), estimator=True, activation="lipswish", logdet="series", n_terms=5,
                                       n_probes=2),
    "residual_roulette_elu_power": _block(2, (4,), estimator=True, probe_kind="rademacher", activation="elu",
                                          spectral="power", n_power_iter=8, logdet="roulette", n_exact=2,
                                          roulette_n=6, n_probes=2),
}
