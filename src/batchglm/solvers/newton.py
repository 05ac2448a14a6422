"""Damped Newton ascent on the joint location and scale parameters.

Direction: the observed-information Newton step (saddle-free where the Hessian is not
negative definite). Step control: the step is first shortened so the scale predictor stays
within the family's bounds, then halved until the Armijo condition holds. Every feature
carries its own status; converged features leave the working set, so they stop costing time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.solvers.linalg import newton_direction
from batchglm.solvers.protocol import SolverObjective, SolverProblem
from batchglm.solvers.status import Status

Array = NDArray[np.float64]

_RUNNING = -1
_ARMIJO = 1e-4
#: Below this Newton decrement a step that the line search cannot verify (the likelihood
#: change is at rounding level) still counts as convergence.
_NOISE_DECREMENT = 1e-6
#: Shrink the working arrays once this share of features has finished.
_COMPACT_SHARE = 0.3
#: Largest multiplier of a scale step (see the walk acceleration in `solve`).
_MAX_EXPAND = 64.0
#: A scale predictor this close to its bound counts as on it.
_BOUND_TOL = 1e-8


@dataclass(frozen=True)
class SolverOptions:
    """Settings of the Newton solver.

    Attributes
    ----------
    max_iter : int
        Maximum Newton iterations per feature.
    tol : float
        Convergence threshold on the Newton decrement ``g^T (-H)^{-1} g``: the remaining
        possible gain in log-likelihood is about half of it.
    max_halvings : int
        Maximum step halvings per iteration.
    """

    max_iter: int = 100
    tol: float = 1e-10
    max_halvings: int = 30


@dataclass
class Solution:
    """Solver output for a block of features.

    Attributes
    ----------
    theta : ndarray
        Free parameters ``(F, k)``.
    loglik : ndarray
        ``(F,)`` log-likelihood at ``theta``.
    hess : ndarray
        ``(F, k, k)`` observed Hessian at ``theta``.
    n_iter : ndarray
        Iterations used per feature.
    status : ndarray
        :class:`~batchglm.solvers.status.Status` codes.
    """

    theta: Array
    loglik: Array
    hess: Array
    n_iter: NDArray[np.int32]
    status: NDArray[np.int8]


def solve(
    objective: SolverObjective,
    theta0: Array,
    options: SolverOptions,
    on_iteration: Callable[[int, int], None] | None = None,
    fix_scale: bool = False,
) -> Solution:
    """Maximise the log-likelihood of every feature of ``objective``.

    Parameters
    ----------
    objective : SolverObjective
        The block's log-likelihood (or any objective with that interface).
    theta0 : ndarray
        Starting values ``(F, k)``.
    options : SolverOptions
        Settings.
    on_iteration : callable, optional
        Called with ``(iteration, n_active)`` after every iteration.
    fix_scale : bool
        Keep the scale parameters at their starting values and fit the location only.

    Returns
    -------
    Solution
        Parameters, log-likelihoods, iteration counts and status per feature.
    """
    prob = objective.problem
    kl = prob.k_loc
    n_feat, k = theta0.shape
    theta = theta0.copy()
    loglik = np.full(n_feat, np.nan)
    hess_out = np.full((n_feat, k, k), np.nan)
    n_iter = np.zeros(n_feat, dtype=np.int32)
    status = np.full(n_feat, _RUNNING, dtype=np.int8)
    lo, hi = prob.family.scale_bounds
    # Scale groups whose predictor reached a bound stay there (an active set): the Newton
    # system is projected onto the parameters that keep those predictors fixed.
    active = np.zeros((prob.scale_rows.shape[0] if prob.k_scale else 0, n_feat), dtype=bool)

    # Step multiplier on the scale part, see below.
    expand = np.ones(n_feat)
    work = objective
    idx = np.arange(n_feat)
    ll, grad, hess = _evaluate(work, theta[idx])
    for it in range(options.max_iter + 1):
        # ll, grad, hess hold the values at theta[idx] for every row of the working set.
        loglik[idx] = ll
        hess_out[idx] = hess
        live = status[idx] == _RUNNING
        if it == options.max_iter:
            break
        at_bound: NDArray[np.bool_] = np.asarray(active[:, idx].any(axis=0))
        if fix_scale:
            grad, hess = _drop_scale(grad, hess, kl)
        else:
            grad, hess = _project_active(grad, hess, active[:, idx], prob)
        direction, _ = newton_direction(grad, hess)
        decrement = np.einsum("fk,fk->f", grad, direction)
        bad = ~(np.isfinite(decrement) & np.isfinite(ll))
        done = live & ~bad & (decrement < options.tol)
        status[idx[done]] = np.where(at_bound[done], Status.SCALE_AT_BOUND, Status.CONVERGED)
        status[idx[live & bad]] = Status.NONFINITE
        live &= ~(done | bad)
        if not live.any():
            break
        direction[~live] = 0.0
        newton_scale = direction[:, kl:].copy()
        slope = _expand_scale(direction, grad, decrement, expand[idx], kl)
        limit = _scale_step_limit(
            prob.eta_scale_groups, theta[idx, kl:], direction[:, kl:], active[:, idx], lo, hi
        )
        step = np.where(live, np.minimum(1.0, limit), 0.0)
        # The full step nearly always passes, so the trial point is evaluated with derivatives:
        # accepted rows then need no second evaluation in the next iteration.
        trial = theta[idx] + step[:, None] * direction
        t_ll, t_grad, t_hess = _evaluate(work, trial)
        slack = 1e-12 * np.abs(ll)
        ok = live & (t_ll >= ll + _ARMIJO * step * slope - slack)
        theta[idx[ok]] = trial[ok]
        # Near the optimum the gain is at rounding level and the decrement can stall just
        # above `tol`; a tiny decrement with a gain lost in rounding is convergence.
        flat = ok & (decrement < _NOISE_DECREMENT) & (np.abs(t_ll - ll) <= slack)
        status[idx[flat]] = np.where(at_bound[flat], Status.SCALE_AT_BOUND, Status.CONVERGED)
        # A plain Newton step promising less than the rounding noise of the summed
        # likelihood (large counts: sums of 1e8 cancel to 1e4) cannot be verified; the
        # feature is at its optimum to that precision.
        noise = live & ~ok & (decrement < _NOISE_DECREMENT) & (expand[idx] <= 1.0)
        status[idx[noise]] = np.where(at_bound[noise], Status.SCALE_AT_BOUND, Status.CONVERGED)
        retry = live & ~ok & ~noise
        if retry.any():
            stuck = _halve(work, theta, idx, direction, step, ll, slope, retry, options)
            status[idx[stuck]] = np.where(
                decrement[stuck] < _NOISE_DECREMENT,
                np.where(at_bound[stuck], Status.SCALE_AT_BOUND, Status.CONVERGED),
                Status.STALLED,
            )
        n_iter[idx[live]] += 1
        hit = ok & (limit < 1.0)
        if hit.any():
            eta = prob.eta_scale_groups(theta[idx[hit], kl:])
            active[:, idx[hit]] |= (eta >= hi - _BOUND_TOL) | (eta <= lo + _BOUND_TOL)
        if kl < k:
            # Far from its optimum a scale predictor moves about one unit per Newton step
            # (the NB likelihood flattens as r grows, towards the Poisson limit). While full
            # steps keep being accepted there, the next scale step doubles, so such walks
            # take logarithmically many iterations; near the optimum steps are plain Newton.
            walking = np.abs(prob.eta_scale_groups(newton_scale)).max(axis=0) >= 0.5
            grow = ok & walking & ~hit
            expand[idx] = np.where(grow, np.minimum(2.0 * expand[idx], _MAX_EXPAND), 1.0)
        if on_iteration is not None:
            on_iteration(it + 1, int((status == _RUNNING).sum()))
        if (retry | noise).any():
            ll, grad, hess = _evaluate(work, theta[idx])
        else:
            ll, grad, hess = t_ll, t_grad, t_hess
        running = status[idx] == _RUNNING
        if not running.any():
            loglik[idx] = ll
            hess_out[idx] = hess
            break
        if running.mean() < 1.0 - _COMPACT_SHARE:
            loglik[idx] = ll
            hess_out[idx] = hess
            work = work.subset(running)
            idx = idx[running]
            ll, grad, hess = ll[running], grad[running], hess[running]
    status[status == _RUNNING] = Status.MAX_ITER
    return Solution(theta, loglik, hess_out, n_iter, status)


def _evaluate(work: SolverObjective, theta: Array) -> tuple[Array, Array, Array]:
    with np.errstate(all="ignore"):
        ll, grad, hess = work.evaluate(theta, 2)
    assert grad is not None and hess is not None
    return ll, grad, hess


def _halve(
    work: SolverObjective,
    theta: Array,
    idx: NDArray[np.intp],
    direction: Array,
    step: Array,
    ll: Array,
    decrement: Array,
    retry: NDArray[np.bool_],
    options: SolverOptions,
) -> NDArray[np.bool_]:
    """Backtrack on the rows in ``retry``; update ``theta`` in place, return rows that failed."""
    need = retry.copy()
    step = np.where(need, step / 2, 0.0)
    slack = 1e-12 * np.abs(ll)
    for _ in range(options.max_halvings):
        trial = theta[idx] + step[:, None] * direction
        with np.errstate(all="ignore"):
            t_ll = work.evaluate(trial, 0)[0]
        ok = need & (t_ll >= ll + _ARMIJO * step * decrement - slack)
        theta[idx[ok]] = trial[ok]
        need &= ~ok
        if not need.any():
            break
        step = np.where(need, step / 2, 0.0)
    return need


def _expand_scale(
    direction: Array, grad: Array, decrement: Array, expand: Array, kl: int
) -> Array:
    """Scale the scale part of ``direction`` in place by ``expand``; return the slope.

    Rows where the stretched direction is no ascent direction keep the Newton direction.
    """
    grow = expand > 1.0
    if not grow.any():
        return decrement
    newton = direction[grow, kl:].copy()
    direction[grow, kl:] *= expand[grow, None]
    slope = np.einsum("fk,fk->f", grad, direction)
    revert = grow & ~(slope > 0)
    if revert.any():
        direction[revert, kl:] = newton[revert[grow]]
        slope[revert] = decrement[revert]
    return slope


def _drop_scale(grad: Array, hess: Array, kl: int) -> tuple[Array, Array]:
    """Newton system with the scale parameters held fixed."""
    grad = grad.copy()
    hess = hess.copy()
    grad[:, kl:] = 0.0
    hess[:, kl:, :] = 0.0
    hess[:, :, kl:] = 0.0
    k = hess.shape[1]
    hess[:, np.arange(kl, k), np.arange(kl, k)] = -1.0
    return grad, hess


def _project_active(
    grad: Array, hess: Array, active: NDArray[np.bool_], prob: SolverProblem
) -> tuple[Array, Array]:
    """Restrict the scale part of the Newton system to directions that keep active groups.

    With ``P`` the projector onto the null space of the active groups' design rows, the
    scale gradient becomes ``P g`` and the scale block ``P H P - (I - P)``: the solution then
    has no component that moves an active predictor.
    """
    rows = np.flatnonzero(active.any(axis=0))
    if rows.size == 0:
        return grad, hess
    kl = prob.k_loc
    gram = prob.pp_scale(active[:, rows].astype(np.float64))
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


def _scale_step_limit(
    eta_scale_groups: Callable[[Array], Array],
    b: Array,
    db: Array,
    active: NDArray[np.bool_],
    lo: float,
    hi: float,
) -> Array:
    """Largest step in ``(0, inf]`` that keeps every free scale predictor within bounds."""
    if b.shape[1] == 0 or not (np.isfinite(lo) or np.isfinite(hi)):
        return np.full(b.shape[0], np.inf)
    eta = eta_scale_groups(b)
    deta = eta_scale_groups(db)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(deta > 0, (hi - eta) / deta, np.where(deta < 0, (lo - eta) / deta, np.inf))
    room[active] = np.inf
    return np.maximum(room.min(axis=0), 0.0)
