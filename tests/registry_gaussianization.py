"""Harness entries for the Gaussianization family (RBIG, Laparra et al. 2011): the marginal Gaussianization layer
(a Gaussian kernel mixture CDF per coordinate, then the inverse normal CDF) with a few kernels, and a small RBIG
fitted by ``fit_rbig`` (two pairs of marginal layer and rotation).

Parameters are perturbed away from their initial or fitted values (centres, per-kernel log-bandwidths and weight
logits alike), so the kernels differ in width and weight and every gradient is non-trivial; the points mix the
bulk, both tails (several bandwidths beyond the extreme centres, where the layer's stable tail formulas take
over) and the region between centres.  The map is smooth everywhere (no knots), so central differences need no
special placement of the points.

The fitted RBIG's initialisation goes through LAPACK (the rotations' QR, the PCA's eigh) and BLAS (the data
through each rotation before the next fit), whose last bits depend on the BLAS kernel: its parameters are
rounded to a 2^-30 grid (``registry.machine_free``) before the perturbation, so the golden case's inputs are the
same bits under every kernel.
"""
import numpy as np

import npflows as nf
from npflows.bijectors.gaussianization import MarginalGaussianization, fit_rbig
from registry import Case, machine_free, perturbed


def _marginal(dim, K, n=5, scale=0.5, tails=True):
    def make(rng):
        b = MarginalGaussianization(dim, n_components=K)
        p = perturbed(b, rng, scale)
        x = 1.5 * rng.standard_normal((n, dim))
        if tails:                 # a few entries well beyond the extreme centres, on both sides
            mu, h = p["centers"], np.exp(p["log_bandwidth"])
            far = np.array([-1.0, 1.0])[rng.integers(0, 2, (n, dim))]
            z = rng.uniform(4.0, 12.0, (n, dim))
            edge = np.where(far < 0, mu.min(axis=1), mu.max(axis=1))
            width = np.where(far < 0, h[np.arange(dim), mu.argmin(axis=1)], h[np.arange(dim), mu.argmax(axis=1)])
            pick = rng.uniform(size=(n, dim)) < 0.3
            x = np.where(pick, edge + far * z * width, x)
        return Case(b, p, x)
    return make


def _rbig(rng):
    data = nf.data.load("two_moons", 256, rng, noise=0.1)
    b, p, _ = fit_rbig(data, rng, max_layers=2, tol=0.0, patience=2, rotation="random", n_components=4)
    p = machine_free(p)
    p = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in p.items()}
    x = np.concatenate([data[:4], [[2.8, -1.2]]])          # four data points and one outside the moons
    return Case(b, p, x)


def _rbig_pca(rng):
    data = nf.data.load("two_moons", 256, rng, noise=0.1)
    b, p, _ = fit_rbig(data, rng, max_layers=2, tol=0.0, patience=2, rotation="pca", n_components=3)
    p = machine_free(p)
    p = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in p.items()}
    return Case(b, p, data[4:8])


ENTRIES = {
    "gaussianization_marginal_k3_2d": _marginal(2, 3),
    "gaussianization_marginal_k5_3d": _marginal(3, 5, scale=0.7),
    "gaussianization_marginal_k1_2d": _marginal(2, 1, tails=False),
    "rbig_fitted_random_2layers": _rbig,
    "rbig_fitted_pca_2layers": _rbig_pca,
}
