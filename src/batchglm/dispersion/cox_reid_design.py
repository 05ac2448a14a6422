"""Cox-Reid dispersions for a general NB scale design, batched over features.

With fitted means held fixed, each feature's free scale coefficients ``b``
(``log r_i = z_i . b``) maximise the adjusted profile likelihood of
:mod:`batchglm.dispersion.adjusted_profile` (Cox and Reid, 1987; the adjustment of edgeR
and DESeq2). :func:`batchglm.solvers.newton.solve` maximises it with the exact Hessian,
step halving and an active set that keeps every scale predictor ``z_i . b`` inside
``[-log(alpha_max), log(1e8)]``, the range of
:func:`batchglm.dispersion.cox_reid.cox_reid_log_r`; a bound whose Lagrange multiplier
pulls inward is released again. The solver measures steps in coefficients times their
design columns' units, so the estimates do not depend on the units of the covariates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.dispersion.adjusted_profile import NOISE_FLOOR, STEP_TOL, AdjustedProfile
from batchglm.dispersion.cox_reid import cox_reid_log_r, max_alpha
from batchglm.families.nb import NegativeBinomial
from batchglm.solvers.active_set import project_gradient
from batchglm.solvers.linalg import column_units, lstsq_columns
from batchglm.solvers.newton import SolverOptions, solve
from batchglm.solvers.objective import unique_rows

Array = NDArray[np.float64]

#: A start this far outside the bounds is an error (rounding of the caller's values aside).
_BOUND_TOL = 1e-8
#: Most releases of active bounds per feature (guards against cycling on and off a bound).
_MAX_RELEASES = 3

#: The adjusted profile likelihood under its former private name.
_APL = AdjustedProfile


@dataclass(frozen=True)
class ScaleSolution:
    """Maximisers of the Cox-Reid adjusted profile likelihood, one per feature.

    Attributes
    ----------
    b : ndarray
        Free scale coefficients ``(F, k_scale)`` (``log r = Z b``).
    apl : ndarray
        The adjusted profile log-likelihood at ``b``, ``(F,)``.
    grad : ndarray
        Its gradient at ``b`` projected off active bounds, ``(F, k_scale)``.
    n_iter : ndarray of int
        Newton iterations used.
    status : ndarray of int8
        :class:`~batchglm.solvers.status.Status` codes: ``CONVERGED``, ``SCALE_AT_BOUND``
        (some scale predictor stopped on a bound), ``MAX_ITER``, ``STALLED`` or
        ``NONFINITE``.
    """

    b: Array
    apl: Array
    grad: Array
    n_iter: NDArray[np.int32]
    status: NDArray[np.int8]


def scale_bounds(n_obs: int, alpha_max: float | None = None) -> tuple[float, float]:
    """Bounds on the scale predictor ``log r``.

    The NB family's bounds, with the lower one raised to ``-log(alpha_max)`` as in the
    intercept-only estimate (DESeq2's largest dispersion).

    Parameters
    ----------
    n_obs : int
        Number of observations.
    alpha_max : float, optional
        Largest dispersion; by default :func:`~batchglm.dispersion.cox_reid.max_alpha`.

    Returns
    -------
    tuple of float
        ``(lo, hi)`` for ``log r``.
    """
    lo, hi = NegativeBinomial.scale_bounds
    upper = alpha_max if alpha_max is not None else max_alpha(n_obs)
    return max(lo, -float(np.log(upper))), hi


def start_values(y: Array, mu: Array, x: Array, z: Array, alpha_max: float | None = None) -> Array:
    """Start the scale coefficients at the common (intercept-only) Cox-Reid estimate.

    The intercept-only maximiser is found globally by a grid search, so Newton starts in
    the basin of the pooled optimum. Where the scale design cannot express a constant the
    least-squares fit of it is pulled towards ``b = 0`` (``r = 1``, always feasible) until
    every predictor lies inside the bounds.

    Parameters
    ----------
    y, mu : ndarray
        Counts and fitted means ``(n_obs, F)``.
    x : ndarray
        Location design after constraints ``(n_obs, k_loc)``.
    z : ndarray
        Scale design after constraints ``(n_obs, k_scale)``.
    alpha_max : float, optional
        Largest dispersion.

    Returns
    -------
    ndarray
        ``(F, k_scale)`` feasible starting coefficients.
    """
    t0 = cox_reid_log_r(y, mu, x, alpha_max=alpha_max)
    rows, _ = unique_rows(z)
    coef = lstsq_columns(rows, np.ones((rows.shape[0], 1)))
    b0 = t0[:, None] * coef.T
    lo, hi = scale_bounds(y.shape[0], alpha_max)
    eta = rows @ b0.T
    # Shrink each start toward 0 just enough to be feasible (0 is interior: lo < 0 < hi).
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(eta > hi, hi / eta, np.where(eta < lo, lo / eta, 1.0)).min(axis=0)
    return np.asarray(b0 * shrink[:, None])


def cox_reid_scale(
    y: Array,
    mu: Array,
    x: Array,
    z: Array,
    *,
    start: Array | None = None,
    alpha_max: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
    max_halvings: int = 30,
) -> ScaleSolution:
    """Maximise the Cox-Reid adjusted profile likelihood over free scale coefficients.

    Parameters
    ----------
    y : ndarray
        Counts ``(n_obs, F)``.
    mu : ndarray
        Fitted means ``(n_obs, F)``, size factors included; held fixed.
    x : ndarray
        Location design after constraints, ``(n_obs, k_loc)``.
    z : ndarray
        Scale design after constraints, ``(n_obs, k_scale)``; ``log r = z @ b``.
    start : ndarray, optional
        Starting coefficients ``(F, k_scale)``, inside the bounds; by default
        :func:`start_values`.
    alpha_max : float, optional
        Largest dispersion allowed; by default ``max(10, n_obs)``.
    max_iter : int
        Maximum Newton iterations.
    tol : float
        Convergence threshold on the Newton decrement.
    max_halvings : int
        Maximum step halvings per iteration.

    Returns
    -------
    ScaleSolution
        Coefficients, APL values, projected gradients, iterations and status codes.
        Every predictor ``z_i . b`` lies in ``[-log(alpha_max), log(1e8)]``; a maximum
        beyond (e.g. under-dispersion) stops on the bound with status ``SCALE_AT_BOUND``.

    Raises
    ------
    ValueError
        If the shapes of ``y``, ``mu``, ``x`` and ``z`` do not match, ``start`` puts a
        predictor outside the bounds, or the scale design is rank deficient.
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    x = np.ascontiguousarray(x, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    n_obs, n_feat = y.shape
    if mu.shape != y.shape or x.shape[0] != n_obs or z.shape[0] != n_obs:
        raise ValueError(
            f"`y` {y.shape} and `mu` {mu.shape} must have the same shape, and `x` "
            f"{x.shape} and `z` {z.shape} one row per observation."
        )
    lo, hi = scale_bounds(n_obs, alpha_max)
    if start is None:
        b = start_values(y, mu, x, z, alpha_max)
    else:
        b = np.array(start, dtype=np.float64).reshape(n_feat, z.shape[1])
        eta0 = unique_rows(z)[0] @ b.T
        if np.any((eta0 < lo - _BOUND_TOL) | (eta0 > hi + _BOUND_TOL)):
            raise ValueError(
                f"`start` must keep every scale predictor within [{lo:.4g}, {hi:.4g}] "
                "(log r), but it does not."
            )
    rows, _ = unique_rows(z)
    rank = int(np.linalg.matrix_rank(rows / column_units(rows)))
    if rank < z.shape[1]:
        raise ValueError(
            f"the scale design has {z.shape[1]} free coefficients but rank "
            f"{rank}; its coefficients are not identifiable."
        )
    apl = AdjustedProfile(y, mu, x, z)
    options = SolverOptions(
        max_iter=max_iter,
        tol=tol,
        max_halvings=max_halvings,
        max_releases=_MAX_RELEASES,
        step_tol=STEP_TOL,
        noise_floor=NOISE_FLOOR,
    )
    sol = solve(apl, b, options, bounds=(lo, hi))
    grad = project_gradient(apl.problem, sol.grad, sol.active)
    return ScaleSolution(sol.theta, sol.loglik, grad, sol.n_iter, sol.status)
