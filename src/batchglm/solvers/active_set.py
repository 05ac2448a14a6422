"""Bounds on the scale predictors as an active set, for the Newton engine.

A scale group whose predictor reaches a bound joins the active set; the Newton system is
then projected onto the directions that keep every active predictor fixed
(:func:`project_active`), steps are shortened to stay inside the bounds
(:func:`scale_step_limit`), and at a stationary point a bound whose Lagrange multiplier
pulls the optimum inside is released (:func:`release`; the Karush-Kuhn-Tucker condition,
Nocedal and Wright, *Numerical Optimization*, ch. 16). Gradients, Hessians and design rows
are taken in units of the design columns (``SolverProblem.units``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from batchglm.solvers.protocol import SolverProblem

Array = NDArray[np.float64]

#: A scale predictor this close to its bound counts as on it.
BOUND_TOL = 1e-8
#: Lagrange multipliers of active bounds smaller than this (in objective units per unit of
#: the predictor) do not release the bound; it guards against cycling on rounding noise.
_RELEASE_TOL = 1e-7
#: An active predictor this close to the upper bound is taken to be on that one.
_UPPER_TOL = 1e-6


def project_active(
    grad: Array, hess: Array, active: NDArray[np.bool_], prob: SolverProblem
) -> tuple[Array, Array]:
    """Restrict the scale part of the Newton system to directions that keep active groups.

    With ``P`` the projector onto the null space of the active groups' design rows, the
    scale gradient becomes ``P g`` and the scale block ``P H P - (I - P)``: the solution then
    has no component that moves an active predictor. ``grad`` and ``hess`` are taken in
    units of the design columns (``Problem.units``), so the rows are too.

    Parameters
    ----------
    grad : ndarray
        ``(F, k)`` gradients (location block first).
    hess : ndarray
        ``(F, k, k)`` Hessians.
    active : ndarray of bool
        ``(n_groups, F)`` scale groups on a bound.
    prob : SolverProblem
        The parameter layout.

    Returns
    -------
    tuple of ndarray
        The projected gradients and Hessians (copies where any group is active).
    """
    rows = np.flatnonzero(active.any(axis=0))
    if rows.size == 0:
        return grad, hess
    kl = prob.k_loc
    units = prob.units[kl:]
    gram = prob.pp_scale(active[:, rows].astype(np.float64)) / np.multiply.outer(units, units)
    vals, vecs = np.linalg.eigh(gram)
    null = vals <= 1e-10 * np.maximum(vals.max(axis=1, keepdims=True), 1.0)
    proj = np.einsum("fik,fk,fjk->fij", vecs, null.astype(np.float64), vecs)
    rest = np.eye(proj.shape[1]) - proj
    grad = grad.copy()
    hess = hess.copy()
    grad[rows, kl:] = np.einsum("fij,fj->fi", proj, grad[rows, kl:])
    hess[rows, kl:, kl:] = proj @ hess[rows, kl:, kl:] @ proj - rest
    hess[rows, :kl, kl:] = hess[rows, :kl, kl:] @ proj
    hess[rows, kl:, :kl] = proj @ hess[rows, kl:, :kl]
    return grad, hess


def scale_step_limit(
    eta_scale_groups: Callable[[Array], Array],
    b: Array,
    db: Array,
    active: NDArray[np.bool_],
    lo: Array,
    hi: Array,
) -> Array:
    """Largest step in ``(0, inf]`` that keeps every free scale predictor within bounds.

    Parameters
    ----------
    eta_scale_groups : callable
        Maps scale coefficients ``(F, k_scale)`` to predictors ``(n_groups, F)``.
    b : ndarray
        ``(F, k_scale)`` scale coefficients.
    db : ndarray
        ``(F, k_scale)`` step directions.
    active : ndarray of bool
        ``(n_groups, F)`` groups on a bound (not limiting: their predictors do not move).
    lo, hi : ndarray
        ``(F,)`` bounds per feature.

    Returns
    -------
    ndarray
        ``(F,)`` step lengths (``inf`` where nothing limits).
    """
    if b.shape[1] == 0 or not (np.isfinite(lo).any() or np.isfinite(hi).any()):
        return np.full(b.shape[0], np.inf)
    eta = eta_scale_groups(b)
    deta = eta_scale_groups(db)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(deta > 0, (hi - eta) / deta, np.where(deta < 0, (lo - eta) / deta, np.inf))
    room[active] = np.inf
    return np.maximum(room.min(axis=0), 0.0)


def release(
    grad: Array,
    active: NDArray[np.bool_],
    prob: SolverProblem,
    b: Array,
    hi: Array,
    floor: Array | None = None,
) -> NDArray[np.bool_]:
    """Active bounds whose Lagrange multiplier has the wrong sign (KKT violated).

    At a stationary point of the projected problem the scale gradient is
    ``sum_g lambda_g z_g`` over the active groups' design rows ``z_g``. A bound holds the
    maximum back only if the gradient pushes outward: ``lambda_g > 0`` at the upper bound,
    ``< 0`` at the lower one. Multipliers are taken in units of the design columns.

    Parameters
    ----------
    grad : ndarray
        ``(F, k)`` unprojected gradients.
    active : ndarray of bool
        ``(n_groups, F)`` groups on a bound.
    prob : SolverProblem
        The parameter layout.
    b : ndarray
        ``(F, k_scale)`` scale coefficients.
    hi : ndarray
        ``(F,)`` upper bounds.
    floor : ndarray, optional
        ``(F,)`` least multiplier that releases a bound, per feature (by default
        ``1e-7``); away from a stationary point the multipliers are only as exact as the
        gradient of the free parameters is small.

    Returns
    -------
    ndarray of bool
        ``(n_groups, F)``: the active bounds to release.
    """
    out = np.zeros_like(active)
    feat = np.flatnonzero(active.any(axis=0))
    if feat.size == 0:
        return out
    kl = prob.k_loc
    units = prob.units[kl:]
    rows = prob.scale_rows / units
    zt = rows.T[None, :, :] * active[:, feat].T[:, None, :]
    lam = np.einsum("fgk,fk->fg", np.linalg.pinv(zt), grad[feat, kl:] / units)
    upper = prob.eta_scale_groups(b[feat]).T >= hi[feat, None] - _UPPER_TOL
    tol = _RELEASE_TOL if floor is None else np.maximum(floor[feat], _RELEASE_TOL)[:, None]
    wrong = np.where(upper, lam < -tol, lam > tol) & active[:, feat].T
    out[:, feat] = wrong.T
    return out


def project_gradient(prob: SolverProblem, grad: Array, active: NDArray[np.bool_]) -> Array:
    """Project gradients off the directions that move predictors on active bounds.

    Parameters
    ----------
    prob : SolverProblem
        The parameter layout.
    grad : ndarray
        ``(F, k)`` gradients, e.g. :attr:`Solution.grad`.
    active : ndarray of bool
        ``(n_groups, F)`` scale groups on a bound, e.g. :attr:`Solution.active`.

    Returns
    -------
    ndarray
        ``(F, k)``: the gradient's component along which every active predictor stays put
        (zero at a constrained maximum), in the units of ``grad``.
    """
    units = prob.units
    k = grad.shape[1]
    g_u, _ = project_active(grad / units, np.zeros((grad.shape[0], k, k)), active, prob)
    out: Array = g_u * units
    return out
