"""Group-level test of features whose group variance is at 0, with unequal groups weighted.

A feature whose between-group variance is estimated at 0 is tested at the level of the
groups (:func:`batchglm.mixed.moderation.moderated_sf`): each group's log level ``z_g`` is
regressed on the group-level design. With a residual variance ``s_f^2`` that is the same
for every group this is the unweighted regression of log group means. But a group's log
level has variance ``tau_f^2 + v_g``: the between-group variance plus its own sampling
variance ``v_g``, which is small for a group of 600 cells and large for one of 20. Here
``tau_f^2 = max(s_f^2 - mean_g v_g, 0)`` (the part of the moderated group-level variance
that is not the average sampling variance), each group gets the weight ``1 / (tau_f^2 +
v_g)`` and the contrast is estimated by generalised least squares (Aitken 1935) with its
variance ``L (X^T W X)^- L^T``. With equal ``v_g`` (equal groups) the weights are all
``1 / s_f^2`` and the test is the unweighted one exactly; the variance components in the
weights are those of the random-intercept model the fit estimates (the "summary
statistics" analysis of a two-stage model; Laird and Ware 1982, *Biometrics* 38:963).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def weighted_group_statistic(
    design: Array, lmat: Array, z: Array, v: Array, s2: Array
) -> tuple[Array, int]:
    """Wald statistic of group-level combinations from weighted group log levels.

    Parameters
    ----------
    design : ndarray
        ``(G, k)`` group-level design (may be rank-deficient, e.g. an intercept with the
        indicators of containing factors).
    lmat : ndarray
        ``(n_tests, k)`` tested combinations, estimable on ``design``.
    z : ndarray
        ``(G, F)`` log level of each group per feature (natural log).
    v : ndarray
        ``(G, F)`` sampling variance of ``z`` (natural-log scale, squared).
    s2 : ndarray
        ``(F,)`` group-level variance per feature: the average total variance of a group's
        log level, ``tau_f^2 + mean_g v_g``.

    Returns
    -------
    quad : ndarray
        ``(F,)`` ``(L b)^T (L (X^T W X)^- L^T)^- (L b)``, ``b`` the weighted least-squares
        estimate with ``W = diag(1 / (tau_f^2 + v_g))``; a chi-squared(``rank``) statistic
        when the variances are known, ``rank * F`` against ``F(rank, df)`` with estimated
        ones.
    rank : int
        Rank of the tested combinations on the design (at least 1).
    """
    v = np.where(np.isfinite(v) & (v > 0), v, 0.0)
    tau2 = np.maximum(s2 - v.mean(axis=0), 0.0)
    total = tau2[None, :] + v
    # Guard against a total of 0 (no sampling variance and no group variance): equal weights.
    total = np.where(total > 0, total, np.maximum(s2[None, :], np.finfo(float).tiny))
    w = 1.0 / total  # (G, F)
    gram = np.einsum("gk,gf,gl->fkl", design, w, design)
    ginv = np.linalg.pinv(gram, hermitian=True)  # (F, k, k)
    beta = np.einsum("fkl,gl,gf->fk", ginv, design, w * z)
    est = beta @ lmat.T  # (F, n_tests)
    cov = np.einsum("ik,fkl,jl->fij", lmat, ginv, lmat)
    rank = max(int(np.linalg.matrix_rank(lmat @ np.linalg.pinv(design))), 1)
    quad = np.einsum("fi,fij,fj->f", est, np.linalg.pinv(cov, hermitian=True), est)
    return np.asarray(quad, dtype=np.float64), rank
