"""Linear bijectors: fixed permutations, a dense invertible matrix, and Glow's LU-factorised matrix.

All act per sample as :math:`y = W x + b`; batch first that is ``y = x @ W.T + b``.
"""
import numpy as np

from .._checks import unbox
from ..core.bijector import Bijector, zeros_logdet
from .elementwise import explain_log_scale


class Permutation(Bijector):
    """:math:`y_i = x_{\\pi(i)}`: a fixed reordering (no parameters, logdet 0).

    Build with ``Permutation(perm)``, ``Permutation.reverse(D)`` or ``Permutation.random(D, rng)``.

    Notes
    -----
    The Jacobian is a permutation matrix, :math:`|\\det| = 1`.  Backward scatters the cotangent back:
    :math:`\\bar x_{\\pi(i)} = \\bar y_i`, i.e. ``dx = dy[:, inverse_perm]``.
    """

    def __init__(self, perm):
        perm = np.asarray(perm)
        if perm.ndim != 1 or not np.array_equal(np.sort(perm), np.arange(perm.size)):
            raise ValueError(f"Permutation: expected a permutation of 0..D-1, got {perm.tolist()}")
        self.dim = perm.size
        self.perm = perm.astype(np.intp)
        self.inv_perm = np.argsort(self.perm)

    @classmethod
    def reverse(cls, dim):
        return cls(np.arange(dim)[::-1])

    @classmethod
    def random(cls, dim, rng):
        return cls(rng.permutation(dim))

    def _forward(self, params, x, xp):
        return x[:, self.perm], zeros_logdet(x, xp), None

    def _inverse(self, params, y, xp):
        return y[:, self.inv_perm], zeros_logdet(y, xp)

    def _backward(self, params, dy, dlogdet, cache):
        return dy[:, self.inv_perm], {}

    def __repr__(self):
        return f"Permutation({self.perm.tolist()})"


def _check_invertible(owner, W, what="W"):
    """Refuse a singular or numerically singular matrix (condition number beyond 1/(D*eps))."""
    W = unbox(W)
    limit = 1.0 / (W.shape[0] * np.finfo(W.dtype).eps)
    cond = np.linalg.cond(W) if np.isfinite(W).all() else np.inf
    if not cond < limit:
        raise ValueError(f"{owner}: the matrix {what} is singular to working precision "
                         f"(condition number {cond:.3g}, limit {limit:.3g}); it has no inverse")


def lu_factors(params, lo, xp=np, sign=None):
    """``(L, M)`` of Glow's LU-factorised weight :math:`W = P L M` with
    :math:`M = U + \\mathrm{diag}(\\sigma\\odot e^{s})`, from the parameters ``lower``, ``upper`` and
    ``log_scale`` s: L is ``lower`` on its strict lower triangle (``lo``, a boolean mask) plus the identity, U is
    ``upper`` on the strict upper triangle, and ``sign`` :math:`\\sigma` (fixed structure, entries +-1; None for
    all +1) the signs of M's diagonal.  Entries outside the triangles are ignored.  Shared by :class:`LULinear`
    and the LU-factorised 1x1 convolution (:class:`~npflows.bijectors.conv.LUInvertible1x1Conv`); traceable
    with ``xp``."""
    s = params["log_scale"]
    L = params["lower"] * lo + np.eye(lo.shape[0], dtype=s.dtype)
    d = xp.exp(s) if sign is None else sign.astype(s.dtype) * xp.exp(s)
    M = params["upper"] * lo.T + xp.diag(d)
    return L, M


def lu_factor_grads(A_bar, L, M, log_scale, lo, sign=None):
    """The cotangents of ``lower``, ``upper`` and ``log_scale`` given :math:`\\bar A = P^T\\bar W`, the cotangent
    of :math:`A = LM` (plain NumPy; the logdet path's term of ``log_scale`` is the caller's):

    * :math:`\\bar L = \\mathrm{tril}_{-1}(\\bar A M^T)` (from :math:`A = LM`: :math:`\\bar L = \\bar A M^T`, kept on
      the strict lower triangle, the only entries of ``lower`` that L uses);
    * :math:`\\bar M = L^T\\bar A`, :math:`\\bar U = \\mathrm{triu}_{+1}(\\bar M)`;
    * :math:`\\bar s = \\mathrm{diag}(\\bar M)\\odot\\sigma\\odot e^{s}` (M's diagonal is
      :math:`\\sigma\\odot e^{s}`, whose derivative in s is itself).
    """
    M_bar = L.T @ A_bar
    d = np.exp(log_scale) if sign is None else sign.astype(log_scale.dtype) * np.exp(log_scale)
    return {"lower": (A_bar @ M.T) * lo, "upper": M_bar * lo.T, "log_scale": np.diagonal(M_bar) * d}


class Linear(Bijector):
    """Dense invertible linear map :math:`y = W x + b` with ``W`` ``(D, D)`` and ``b`` ``(D,)``.

    Notes
    -----
    :math:`J = W` for every sample, so :math:`\\log|\\det J| = \\log|\\det W|`, computed with ``slogdet``
    (O(D^3) once per batch).  Backward, with :math:`\\bar\\ell_n` the logdet cotangents:

    * :math:`\\bar x = \\bar y W` (batch first);
    * :math:`\\bar W = \\bar y^T x + (\\sum_n\\bar\\ell_n) W^{-T}`, using Jacobi's formula
      :math:`\\partial\\log|\\det W|/\\partial W = W^{-T}`;
    * :math:`\\bar b = \\sum_n\\bar y_n`.

    A matrix whose condition number exceeds :math:`1/(D\\epsilon)` raises ``ValueError``.
    """

    def __init__(self, dim):
        self.dim = int(dim)

    def param_shapes(self):
        return {"W": (self.dim, self.dim), "b": (self.dim,)}

    def init(self, rng, x=None, dtype=np.float64):
        """A random rotation (Q of a Gaussian matrix's QR): well conditioned, logdet 0."""
        dtype = x.dtype if x is not None else dtype
        q, r = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))
        q = q * np.sign(np.diag(r))
        return {"W": q.astype(dtype), "b": np.zeros(self.dim, dtype)}

    def _check_param_values(self, params):
        _check_invertible(self.name, params["W"])

    def _forward(self, params, x, xp):
        W = params["W"]
        logabsdet = xp.linalg.slogdet(W)[1]
        return x @ W.T + params["b"], logabsdet + xp.zeros(x.shape[0], dtype=x.dtype), x

    def _inverse(self, params, y, xp):
        W = params["W"]
        x = xp.linalg.solve(W, (y - params["b"]).T).T
        return x, -xp.linalg.slogdet(W)[1] + xp.zeros(y.shape[0], dtype=y.dtype)

    def _backward(self, params, dy, dlogdet, cache):
        W = params["W"]
        dW = dy.T @ cache + dlogdet.sum() * np.linalg.inv(W).T
        return dy @ W, {"W": dW, "b": dy.sum(axis=0)}


class LULinear(Bijector):
    """Glow's invertible linear map with an LU-factorised weight (Kingma & Dhariwal 2018,
    arXiv:1807.03039, section 3.2): :math:`W = P L (U + \\mathrm{diag}(e^{s}))`, :math:`y = Wx + b`.

    ``P`` is a fixed permutation (structure), ``L`` unit lower triangular (parameter ``lower``; only the
    strictly lower entries are used), ``U`` strictly upper triangular (``upper``; only the strictly
    upper entries are used), ``log_scale`` s, ``bias`` b.  Entries outside the triangles are ignored
    and get zero gradient.

    Notes
    -----
    :math:`\\det W = \\det P \\cdot 1 \\cdot \\prod_d e^{s_d}`, so :math:`\\log|\\det J| = \\sum_d s_d`: O(D),
    no determinant to compute.  With :math:`M = U + \\mathrm{diag}(e^s)`, :math:`A = LM`, :math:`W = PA`
    and :math:`G = \\bar y^T x` (the cotangent of W):

    * :math:`\\bar A = P^T G`;
    * :math:`\\bar L = \\mathrm{tril}_{-1}(\\bar A M^T)`;
    * :math:`\\bar M = L^T\\bar A`, :math:`\\bar U = \\mathrm{triu}_{+1}(\\bar M)`;
    * :math:`\\bar s = \\mathrm{diag}(\\bar M)\\odot e^{s} + \\sum_n\\bar\\ell_n`;
    * :math:`\\bar x = \\bar y W`, :math:`\\bar b = \\sum_n \\bar y_n`.

    The inverse solves the two triangular systems: :math:`x = M^{-1} L^{-1} P^T (y - b)`.
    """

    def __init__(self, dim, perm=None):
        self.dim = int(dim)
        self.perm = np.arange(self.dim) if perm is None else np.asarray(perm, dtype=np.intp)
        if not np.array_equal(np.sort(self.perm), np.arange(self.dim)):
            raise ValueError(f"LULinear: perm must be a permutation of 0..{self.dim - 1}")
        self.P = np.eye(self.dim)[self.perm]          # (P v)_i = v_{perm[i]}
        self._inv = np.argsort(self.perm)             # (P^T v)_j = v_{_inv[j]}
        self._lo = np.tril(np.ones((self.dim, self.dim), bool), -1)
        self._up = self._lo.T

    def param_shapes(self):
        d = self.dim
        return {"lower": (d, d), "upper": (d, d), "log_scale": (d,), "bias": (d,)}

    def init(self, rng, x=None, dtype=np.float64):
        """Small random triangles (uniform, +-1/sqrt(D)) and unit diagonal: near the identity."""
        dtype = x.dtype if x is not None else dtype
        a = 1.0 / np.sqrt(self.dim)
        return {"lower": (rng.uniform(-a, a, (self.dim, self.dim)) * self._lo).astype(dtype),
                "upper": (rng.uniform(-a, a, (self.dim, self.dim)) * self._up).astype(dtype),
                "log_scale": np.zeros(self.dim, dtype), "bias": np.zeros(self.dim, dtype)}

    def _factors(self, params, xp):
        return lu_factors(params, self._lo, xp)

    def weight(self, params, xp=np):
        """The dense matrix W = P L (U + diag(exp(s)))."""
        L, M = self._factors(params, xp)
        return self.P.astype(params["log_scale"].dtype) @ (L @ M)

    def _forward(self, params, x, xp):
        L, M = self._factors(params, xp)
        W = self.P.astype(x.dtype) @ (L @ M)
        logdet = xp.sum(params["log_scale"]) + xp.zeros(x.shape[0], dtype=x.dtype)
        return x @ W.T + params["bias"], logdet, (x, L, M, W)

    def _inverse(self, params, y, xp):
        from scipy.linalg import solve_triangular
        L, M = self._factors(params, np)
        r = (y - params["bias"])[:, self._inv].T      # P^T (y - b), one column per sample
        try:
            x = solve_triangular(M, solve_triangular(L, r, lower=True, unit_diagonal=True, check_finite=False),
                                 lower=False, check_finite=False).T   # a non-finite result is refused by the caller
        except np.linalg.LinAlgError:                  # exp(s) underflowed to 0 on the diagonal of M
            raise FloatingPointError(f"{self.name} inverse: the weight is singular in {L.dtype}: "
                                     f"{self._explain('inverse', params, y)}") from None
        return x.astype(y.dtype, copy=False), -xp.sum(params["log_scale"]) + xp.zeros(y.shape[0], dtype=y.dtype)

    def _explain(self, direction, params, x):
        return explain_log_scale(self.name, params["log_scale"], direction,
                                 "the parameter log_scale has diverged (lower the learning rate)")

    def _backward(self, params, dy, dlogdet, cache):
        x, L, M, W = cache
        g = lu_factor_grads((dy.T @ x)[self._inv], L, M, params["log_scale"], self._lo)    # from P^T G
        g["log_scale"] = g["log_scale"] + dlogdet.sum()
        g["bias"] = dy.sum(axis=0)
        return dy @ W, g

    def __repr__(self):
        return f"LULinear(dim={self.dim}, perm={self.perm.tolist()})"
