"""Independent reference: per-feature NB maximum likelihood with scipy.optimize.

Written without any batchglm code: the likelihood comes from scipy.stats.nbinom and the
constraints are applied by their own null-space basis.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats


def nb_loglik(y: np.ndarray, mu: np.ndarray, r: np.ndarray) -> float:
    return float(stats.nbinom.logpmf(y, r, r / (r + mu)).sum())


def fit_feature(
    y: np.ndarray,
    x: np.ndarray,
    z: np.ndarray,
    offset: np.ndarray,
    start: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Maximise the NB likelihood of one feature over ``[a, b]`` with BFGS."""
    kx = x.shape[1]

    def negll(theta: np.ndarray) -> float:
        eta = np.clip(offset + x @ theta[:kx], -50, 50)
        es = np.clip(z @ theta[kx:], -30, 30)
        return -nb_loglik(y, np.exp(eta), np.exp(es))

    best = optimize.minimize(negll, start, method="BFGS", options={"gtol": 1e-6})
    return best.x, -best.fun


def null_basis(rows: np.ndarray, p: int) -> np.ndarray:
    """Orthonormal basis of {theta : |rows| @ theta == 0} (seed constraint semantics)."""
    if rows is None:
        return np.eye(p)
    a = np.abs(rows)
    _, s, vt = np.linalg.svd(a)
    rank = int((s > 1e-10).sum())
    return vt[rank:].T


def numerical_hessian(f, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central-difference Hessian of a scalar function (independent of batchglm)."""
    k = x.size
    hess = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            e_i, e_j = np.eye(k)[i] * h, np.eye(k)[j] * h
            v = (f(x + e_i + e_j) - f(x + e_i - e_j) - f(x - e_i + e_j) + f(x - e_i - e_j)) / (
                4 * h * h
            )
            hess[i, j] = hess[j, i] = v
    return hess
