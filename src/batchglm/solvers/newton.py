"""Damped Newton ascent on the joint location and scale parameters.

Direction: the observed-information Newton step (saddle-free where the Hessian is not
negative definite), solved for coefficients in units of their design columns so that the
units of covariates do not matter. Step control: the step is first shortened so the scale
predictor stays within the family's bounds, then halved until the Armijo condition holds.
Every feature carries its own status; converged features leave the working set, so they
stop costing time.

Objectives. The engine maximises any :class:`~batchglm.solvers.protocol.SolverObjective`:
the joint location/scale likelihood of a fit (:mod:`batchglm.solvers.objective`), the
Laplace marginal likelihood of a mixed model (:mod:`batchglm.mixed.laplace`) and the
Cox-Reid adjusted profile likelihood of NB scale coefficients
(:mod:`batchglm.dispersion.adjusted_profile`). Box bounds on the scale predictors come from
the family or from the caller (per feature, e.g. a bracket around a grid maximum). Scale
groups that reach a bound join an active set; with ``SolverOptions.max_releases`` a bound
whose Lagrange multiplier pulls inward at a stationary point is released again (the
Karush-Kuhn-Tucker condition). The joint fit needs this too: far from the optimum a
saddle-free step can be cut short at a bound (the location gain passes the Armijo test),
and the bound must not hold a feature whose likelihood rises inside it. As a safety net, a
feature that ends on a bound whose multiplier still pulls inside (releases used up) is
reported ``STALLED``, never ``SCALE_AT_BOUND``.

Stopping rule. A feature is converged when the Newton decrement ``g^T (-H)^-1 g`` (twice
the remaining gain, the same in any parametrisation) is below ``tol``; it then takes that
last Newton step too. The log-likelihood's rounding noise is ``4 eps M``, with ``M`` the
magnitude of its partial sums (:class:`~batchglm.solvers.objective.Evaluation`): counts of
1e9 give ``M`` of 1e11 and a noise of 1e-4, far above ``tol``. The Armijo test allows that
noise, and below a decrement of ``max(1e-6, 4 x noise)`` the likelihood can no longer judge
a step: the decrement at the trial point does (a step is taken if it lowers it; when it
does not, the feature is at its optimum to the precision of its likelihood).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.solvers.active_set import (
    BOUND_TOL,
    project_active,
    project_gradient,
    release,
    scale_step_limit,
)
from batchglm.solvers.linalg import newton_direction
from batchglm.solvers.protocol import SolverObjective, SolverProblem
from batchglm.solvers.status import Status

__all__ = ["Solution", "SolverOptions", "project_gradient", "rounding_noise", "solve"]

Array = NDArray[np.float64]

_RUNNING = -1
_ARMIJO = 1e-4
#: Rounding noise of a log-likelihood, in units of machine epsilon times the magnitude of
#: its summed terms (:attr:`~batchglm.solvers.objective.Evaluation.magnitude`). The
#: partial sums themselves are rounded to about one unit; a few more cover the rounding of
#: the terms (random, so they grow like the square root of their number). A generous
#: factor would end separation walks early: their gains shrink geometrically.
_NOISE_ULPS = 4.0
#: Below ``max(_NOISE_DECREMENT, 4 * noise)`` a Newton decrement whose step the line
#: search cannot verify still counts as convergence (the floor keeps the tolerance of
#: small-count features as it always was).
_NOISE_DECREMENT = 1e-6
#: Shrink the working arrays once this share of features has finished.
_COMPACT_SHARE = 0.3
#: A bound's multiplier marks a feature held back at the end only if it exceeds the
#: remaining gradient of the free parameters this many times (see the end of `solve`).
_RELEASE_MARGIN = 10.0
#: Largest multiplier of a scale step (see the walk acceleration in `solve`).
_MAX_EXPAND = 64.0


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
    max_releases : int
        Most times per feature that active bounds are released: at a stationary point of
        the problem restricted to the free parameters, a bound whose Lagrange multiplier
        pulls the optimum inside is dropped from the active set and the iterations go on.
        The cap guards against cycling on and off a bound (an indefinite Hessian can lead
        straight back onto it). 0 keeps every bound that was reached (the feature is then
        ``STALLED`` if the bound holds it back from an interior ascent).
    step_tol : float
        Convergence also needs every component of the Newton step, in units of the design
        columns (i.e. of the linear predictors), to be below this. Where the objective is
        flat (a dispersion near the Poisson limit) a decrement below ``tol`` still allows
        a step of ``sqrt(tol / curvature)``; estimators that report the maximiser itself
        set this. The rule is waived once the decrement stops falling fourfold per
        iteration (no quadratic convergence: a kink or rounding). The default (infinite)
        leaves the decrement test alone.
    noise_floor : float
        Least decrement below which the likelihood is taken to be unable to judge a step
        (the decrement then decides, see the module docstring); the bound is
        ``max(noise_floor, 4 x rounding noise)``. A feature whose line search fails counts
        as converged below ``max(1e-6, 4 x rounding noise)`` whatever this is. The joint
        fit keeps its historical 1e-6; objectives whose maximiser can lie across a long
        flat stretch (the adjusted profile likelihood near the Poisson limit) set less.
    """

    max_iter: int = 100
    tol: float = 1e-10
    max_halvings: int = 30
    max_releases: int = 3
    step_tol: float = np.inf
    noise_floor: float = _NOISE_DECREMENT


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
    grad : ndarray
        ``(F, k)`` gradient at ``theta`` (not projected off active bounds; see
        :func:`project_gradient`).
    active : ndarray of bool
        ``(n_groups, F)``: scale groups whose predictor ended on a bound.
    """

    theta: Array
    loglik: Array
    hess: Array
    n_iter: NDArray[np.int32]
    status: NDArray[np.int8]
    grad: Array
    active: NDArray[np.bool_]


def solve(
    objective: SolverObjective,
    theta0: Array,
    options: SolverOptions,
    on_iteration: Callable[[int, int], None] | None = None,
    fix_scale: bool = False,
    bounds: tuple[float | Array, float | Array] | None = None,
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
    bounds : tuple, optional
        ``(lo, hi)`` bounds on every scale predictor, each a float or one value per
        feature ``(F,)``; by default the family's ``scale_bounds``. ``theta0`` must keep
        the predictors within them.

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
    grad_out = np.full((n_feat, k), np.nan)
    n_iter = np.zeros(n_feat, dtype=np.int32)
    status = np.full(n_feat, _RUNNING, dtype=np.int8)
    lo_all, hi_all = (
        np.broadcast_to(np.asarray(v, dtype=np.float64), (n_feat,))
        for v in (prob.family.scale_bounds if bounds is None else bounds)
    )
    releases = np.zeros(n_feat, dtype=np.int32)
    last_decrement = np.full(n_feat, np.inf)
    # Scale groups whose predictor reached a bound stay there (an active set): the Newton
    # system is projected onto the parameters that keep those predictors fixed.
    active = np.zeros((prob.scale_rows.shape[0] if prob.k_scale else 0, n_feat), dtype=bool)

    # Step multiplier on the scale part, see below.
    expand = np.ones(n_feat)
    work = objective
    idx = np.arange(n_feat)
    ll, grad, hess, noise = _evaluate(work, theta[idx])
    for it in range(options.max_iter + 1):
        # ll, grad, hess hold the values at theta[idx] for every row of the working set.
        loglik[idx] = ll
        hess_out[idx] = hess
        grad_out[idx] = grad
        lo, hi = lo_all[idx], hi_all[idx]
        live = status[idx] == _RUNNING
        if it == options.max_iter:
            break
        direction, decrement, grad_p = _newton_system(grad, hess, active[:, idx], prob, fix_scale)
        noise_decrement = np.maximum(_NOISE_DECREMENT, 4.0 * noise)
        quiet_decrement = np.maximum(options.noise_floor, 4.0 * noise)
        bad = ~(np.isfinite(decrement) & np.isfinite(ll))
        done = live & ~bad & (decrement < options.tol)
        if np.isfinite(options.step_tol):
            # Newton converges quadratically where the objective is smooth: the decrement
            # falls by orders of magnitude per iteration until the step is tiny. Where it no
            # longer falls (a kink, rounding) the step rule is waived.
            small = np.abs(direction * prob.units).max(axis=1, initial=0.0) <= options.step_tol
            done &= small | (decrement > 0.25 * last_decrement[idx])
            last_decrement[idx] = decrement
        can_release = done & (releases[idx] < options.max_releases)
        if can_release.any() and not fix_scale:
            # A stationary point of the problem on the free parameters: release bounds
            # that hold it back from an interior ascent and carry on from here.
            pos = np.flatnonzero(can_release)
            sub = idx[pos]
            free = release(grad[pos], active[:, sub], prob, theta[sub, kl:], hi[pos])
            again = pos[free.any(axis=0)]
            if again.size:
                active[:, sub] &= ~free
                releases[idx[again]] += 1
                done[again] = False
                d_a, dec_a, gp_a = _newton_system(
                    grad[again], hess[again], active[:, idx[again]], prob, fix_scale
                )
                direction[again], decrement[again], grad_p[again] = d_a, dec_a, gp_a
        at_bound: NDArray[np.bool_] = np.asarray(active[:, idx].any(axis=0))
        status[idx[done]] = np.where(at_bound[done], Status.SCALE_AT_BOUND, Status.CONVERGED)
        status[idx[live & bad]] = Status.NONFINITE
        live &= ~(done | bad)
        # The decrement test fires one quadratic step early, which leaves an error of about
        # sqrt(tol * variance) in the coefficients (1e-6 in p-values). Converged features
        # still take that last Newton step where it stays inside the bounds and does not
        # lose; it rides along in the trial evaluation, and the error becomes negligible.
        polish = done & np.isfinite(decrement)
        if not (live | polish).any():
            break
        direction[~(live | polish)] = 0.0
        newton_scale = direction[:, kl:].copy()
        slope = _expand_scale(direction, grad_p, decrement, np.where(live, expand[idx], 1.0), kl)
        limit = scale_step_limit(
            prob.eta_scale_groups, theta[idx, kl:], direction[:, kl:], active[:, idx], lo, hi
        )
        polish &= limit >= 1.0
        step = np.where(live, np.minimum(1.0, limit), np.where(polish, 1.0, 0.0))
        # The full step nearly always passes, so the trial point is evaluated with derivatives:
        # accepted rows then need no second evaluation in the next iteration.
        trial = theta[idx] + step[:, None] * direction
        t_ll, t_grad, t_hess, t_noise = _evaluate(work, trial)
        # Both likelihoods carry rounding noise; the Armijo test allows for it (a NaN trial's
        # noise is NaN: the start's stands in, else no halving could ever pass the test).
        slack = noise + np.where(np.isfinite(t_noise), t_noise, noise)
        ok = live & (t_ll >= ll + _ARMIJO * step * slope - slack)
        # Where the promised gain is below the likelihood's rounding noise (``quiet``), and
        # for the polishing step, the likelihood cannot tell whether the step helped; the
        # decrement can (derivatives do not cancel the way the summed terms do). Such a
        # step is taken when the decrement at the trial point is smaller.
        quiet = live & (decrement < quiet_decrement) & (expand[idx] <= 1.0)
        polished = polish & np.isfinite(t_ll) & (t_ll >= ll - slack)
        check = (quiet | (polish & ~polished)) & np.isfinite(t_ll)
        better = np.zeros_like(check)
        if check.any():
            t_dec = _newton_system(
                t_grad[check], t_hess[check], active[:, idx[check]], prob, fix_scale
            )[1]
            better[check] = t_dec < decrement[check]
        polished |= polish & better
        taken = ok | polished | (quiet & better)
        theta[idx[taken]] = trial[taken]
        # Rows that stay put keep the values at their point.
        keep = (step > 0) & ~taken
        if keep.any():
            t_ll[keep], t_grad[keep], t_hess[keep] = ll[keep], grad[keep], hess[keep]
            t_noise[keep] = noise[keep]
        # A quiet step that brought the decrement no lower leaves the feature at its optimum
        # to the precision of the summed likelihood (large counts: sums of 1e11 cancel to
        # 1e2, the noise is 1e-4), whether the step was kept or not.
        settled = quiet & ~better
        status[idx[settled]] = np.where(at_bound[settled], Status.SCALE_AT_BOUND, Status.CONVERGED)
        # A failed full step whose promised gain is below ``max(1e-6, 4 x noise)`` ends the
        # feature where it is (for the joint fit these are all quiet already; objectives
        # with a lower ``noise_floor`` would otherwise creep towards a bound by halvings).
        faint = live & ~ok & ~quiet & (decrement < noise_decrement) & (expand[idx] <= 1.0)
        status[idx[faint]] = np.where(at_bound[faint], Status.SCALE_AT_BOUND, Status.CONVERGED)
        retry = live & ~ok & ~quiet & ~faint
        if retry.any():
            stuck = _halve(work, theta, idx, direction, step, ll, slope, retry, options, slack)
            status[idx[stuck]] = np.where(
                decrement[stuck] < noise_decrement[stuck],
                np.where(at_bound[stuck], Status.SCALE_AT_BOUND, Status.CONVERGED),
                Status.STALLED,
            )
        n_iter[idx[live]] += 1
        hit = (ok | (quiet & better)) & (limit < 1.0)
        if hit.any():
            eta = prob.eta_scale_groups(theta[idx[hit], kl:])
            active[:, idx[hit]] |= (eta >= hi[hit] - BOUND_TOL) | (eta <= lo[hit] + BOUND_TOL)
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
        # Every row's values are those at its point, except rows that backtracking moved.
        ll, grad, hess, noise = t_ll, t_grad, t_hess, t_noise
        if retry.any():
            moved = retry & ~stuck
            ll, grad, hess, noise = _refresh(
                work, theta[idx[moved]], moved, (ll, grad, hess, noise)
            )
        running = status[idx] == _RUNNING
        if not running.any():
            loglik[idx], hess_out[idx], grad_out[idx] = ll, hess, grad
            break
        if running.mean() < 1.0 - _COMPACT_SHARE:
            loglik[idx], hess_out[idx], grad_out[idx] = ll, hess, grad
            work = work.subset(running)
            idx = idx[running]
            ll, grad, hess, noise = ll[running], grad[running], hess[running], noise[running]
    status[status == _RUNNING] = Status.MAX_ITER
    if k > kl:
        # A start on a bound can converge without a step ever being limited there; the
        # status still says where the scale stopped.
        eta = prob.eta_scale_groups(theta[:, kl:])
        active |= (eta >= hi_all - BOUND_TOL) | (eta <= lo_all + BOUND_TOL)
        on_bound = active.any(axis=0) & (status == Status.CONVERGED)
        status[on_bound] = Status.SCALE_AT_BOUND
        # A bound is an optimum only where the likelihood falls moving inside (KKT); one
        # whose multiplier pulls inside held the feature back: not an optimum. Features
        # that stopped on rounding noise are not exactly stationary on their free
        # parameters; a multiplier counts only well above that remaining gradient.
        held = np.flatnonzero(status == Status.SCALE_AT_BOUND)
        if held.size and not fix_scale:
            g_held = grad_out[held]
            residual = project_gradient(prob, g_held, active[:, held]) / prob.units
            floor = _RELEASE_MARGIN * np.abs(residual).max(axis=1)
            inward = release(g_held, active[:, held], prob, theta[held, kl:], hi_all[held], floor)
            status[held[inward.any(axis=0)]] = Status.STALLED
    return Solution(theta, loglik, hess_out, n_iter, status, grad_out, active)


def _newton_system(
    grad: Array, hess: Array, active: NDArray[np.bool_], prob: SolverProblem, fix_scale: bool
) -> tuple[Array, Array, Array]:
    """Newton direction, decrement and projected gradient (all in the coefficients' units).

    The system is solved for coefficients in units of their design columns
    (``u = Problem.units * theta``), so active-set projections and the trust radius of the
    modified step do not depend on the units of the covariates; the decrement is the same
    in any units.
    """
    units = prob.units
    grad_u = grad / units
    hess_u = hess / np.multiply.outer(units, units)
    if fix_scale:
        grad_u, hess_u = _drop_scale(grad_u, hess_u, prob.k_loc)
    else:
        grad_u, hess_u = project_active(grad_u, hess_u, active, prob)
    direction_u, _ = newton_direction(grad_u, hess_u)
    decrement = np.einsum("fk,fk->f", grad_u, direction_u)
    return direction_u / units, decrement, grad_u * units


def _evaluate(work: SolverObjective, theta: Array) -> tuple[Array, Array, Array, Array]:
    """Log-likelihood, gradient, Hessian and the log-likelihood's rounding noise."""
    with np.errstate(all="ignore"):
        ev = work.evaluate_terms(theta, 2)
    assert ev.grad is not None and ev.hess is not None
    return ev.ll, ev.grad, ev.hess, rounding_noise(ev.magnitude)


def rounding_noise(magnitude: Array) -> Array:
    """Estimate the rounding noise of a sum whose partial sums have this magnitude.

    Parameters
    ----------
    magnitude : ndarray
        Sum of the absolute partial sums, e.g.
        :attr:`~batchglm.solvers.objective.Evaluation.magnitude`.

    Returns
    -------
    ndarray
        ``4 * eps * magnitude`` (``eps`` the float64 machine epsilon): changes of the
        log-likelihood below this cannot be told from rounding.
    """
    out: Array = _NOISE_ULPS * np.finfo(np.float64).eps * magnitude
    return out


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
    slack: Array,
) -> NDArray[np.bool_]:
    """Backtrack on the rows in ``retry``; update ``theta`` in place, return rows that failed.

    Only those rows are evaluated (on the objective restricted to them). ``slack`` is the
    rounding noise allowed in the Armijo test.
    """
    rows = np.flatnonzero(retry)
    sub = work if rows.size == retry.size else work.subset(retry)
    at = idx[rows]
    start, d = theta[at], direction[rows]
    base, slope, allowed = ll[rows], decrement[rows], slack[rows]
    need = np.ones(rows.size, dtype=bool)
    t = step[rows] / 2
    for _ in range(options.max_halvings):
        trial = start + t[:, None] * d
        with np.errstate(all="ignore"):
            t_ll = sub.evaluate(trial, 0)[0]
        ok = need & (t_ll >= base + _ARMIJO * t * slope - allowed)
        theta[at[ok]] = trial[ok]
        need &= ~ok
        if not need.any():
            break
        t = np.where(need, t / 2, 0.0)
    failed = np.zeros_like(retry)
    failed[rows] = need
    return failed


def _refresh(
    work: SolverObjective, theta: Array, rows: NDArray[np.bool_], values: tuple[Array, ...]
) -> tuple[Array, ...]:
    """Re-evaluate ``rows`` of the working set (moved by backtracking) into ``values``.

    ``values`` are ``(ll, grad, hess, noise)`` for every row of the working set; ``theta``
    holds the rows' parameters. Only the rows in ``rows`` are evaluated.
    """
    if not rows.any():
        return values
    sub = work if rows.all() else work.subset(rows)
    fresh = _evaluate(sub, theta)
    for old, new in zip(values, fresh, strict=True):
        old[rows] = new
    return values


def _expand_scale(direction: Array, grad: Array, decrement: Array, expand: Array, kl: int) -> Array:
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
