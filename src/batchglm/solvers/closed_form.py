"""The normal family with an intercept-only scale model, solved in closed form.

With one standard deviation per feature every observation has the same weight, so the
maximum-likelihood mean coefficients are the least-squares solution and the ML standard
deviation is ``sqrt(RSS / n)`` (not the unbiased ``RSS / (n - p)``). With observation
weights ``w`` shared by all features it is weighted least squares and
``sd = sqrt(sum w r^2 / sum w)``, the weighted likelihood's optimum (an integer weight is a
repeated observation). Weights that differ between features would need one factorisation
per feature; those fits go to the Newton solver. The features of a
block share one factorisation of the design. The log-likelihood and the observed
information come from the same :class:`~batchglm.solvers.objective.Objective` the Newton
solver uses, so results of both paths are interchangeable.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.families.normal import Normal
from batchglm.solvers.linalg import inverse_negative, lstsq_columns
from batchglm.solvers.objective import Objective, Problem
from batchglm.solvers.status import Status

Array = NDArray[np.float64]


def applies(problem: Problem) -> bool:
    """Whether ``problem`` is a normal model with a constant scale predictor.

    Parameters
    ----------
    problem : Problem
        Designs and family.

    Returns
    -------
    bool
        True for the normal family whose reduced scale design is one constant, non-zero
        column (an intercept-only scale model, possibly rescaled).
    """
    if not isinstance(problem.family, Normal):
        return False
    z = problem.scale.reduced
    return z.shape[1] == 1 and bool(np.all(z == z[0, 0])) and z[0, 0] != 0.0


def fit_normal(
    problem: Problem, y: Array, offset: Array | None = None
) -> tuple[Array, Array, Array, NDArray[np.int32], NDArray[np.int8]]:
    """Fit every feature of ``y`` by least squares.

    Parameters
    ----------
    problem : Problem
        A problem for which :func:`applies` is true.
    y : ndarray
        Observations ``(n_obs, F)``.
    offset : ndarray, optional
        Per-feature location offsets ``(n_obs, F)`` added to ``problem.offset``.

    Returns
    -------
    theta : ndarray
        Free parameters ``(F, k_loc + 1)``; the last is ``log(sd) / z`` for the constant
        scale design value ``z``.
    cov : ndarray
        ``(F, k, k)`` inverse observed information.
    loglik : ndarray
        ``(F,)`` log-likelihood.
    n_iter : ndarray
        Zeros: no iterations.
    status : ndarray
        ``converged``, or ``scale_at_bound`` where the residuals are (numerically) zero and
        the standard deviation stops at the family's lower bound.
    """
    n_feat = y.shape[1]
    x = problem.loc.reduced
    target = y - problem.offset[:, None]
    if offset is not None:
        target = target - offset
    w = problem.weights
    if w is None:
        sol = lstsq_columns(x, target)
    else:
        sw = np.sqrt(w)[:, None]
        sol = lstsq_columns(x * sw, target * sw)
    a: Array = np.asarray(sol.T, dtype=np.float64)
    resid: Array = target - x @ a.T
    if w is None:
        rss = np.einsum("nf,nf->f", resid, resid)
        n_eff = float(y.shape[0])
    else:
        rss = np.einsum("n,nf,nf->f", w, resid, resid)
        n_eff = float(w.sum())
    lo, hi = problem.family.scale_bounds
    with np.errstate(divide="ignore"):
        log_sd = 0.5 * np.log(rss / n_eff)
    at_bound = ~((log_sd > lo) & (log_sd < hi))
    log_sd = np.clip(log_sd, lo, hi)
    theta = np.concatenate([a, (log_sd / problem.scale.reduced[0, 0])[:, None]], axis=1)
    ll, _, hess = Objective(problem, y, offset=offset).evaluate(theta, 2)
    assert hess is not None
    status = np.where(at_bound, Status.SCALE_AT_BOUND, Status.CONVERGED).astype(np.int8)
    return theta, inverse_negative(hess), ll, np.zeros(n_feat, dtype=np.int32), status
