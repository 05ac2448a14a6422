"""The mode of the random intercepts, batched over features and groups.

With one random-intercept factor the conditional log-likelihood separates by group: for
feature ``f`` and group ``g`` the mode solves the one-dimensional concave problem

    max_v  sum_{j in g} ll(y_jf; eta_jf + sigma_f v)  -  v^2 / 2,

where ``v = u / sigma`` is the standardised random intercept. Its negative curvature
``1 - sigma^2 sum_j d2_j`` is at least 1 (NB and Poisson log-likelihoods are concave in the
log mean), so a damped Newton iteration converges quadratically from any start. All
``features x groups`` problems are solved at once; the cost per iteration is one pass of
the family's derivatives over the data block (:func:`solve_modes`), or, where the
compiled passes of :mod:`batchglm.mixed.group_pass` apply, one multiplication and division
per observation (:func:`solve_modes_fused`, the default for NB and Poisson).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.families import Derivatives, Family
from batchglm.mixed.group_pass import GroupPass, ModeMoments, Point
from batchglm.solvers.linalg import GroupSums

Array = NDArray[np.float64]

#: Largest change of a predictor in one inner Newton step (log scale).
_MAX_ETA_STEP = 1.0
#: A Newton step on ``v`` below this ends the inner iteration; one more step has already
#: been taken, so the mode is exact to rounding (quadratic convergence).
_TOL = 1e-10
_MAX_ITER = 100
_MAX_HALVINGS = 40
#: :func:`solve_modes_fused`: once every Newton step is below ``_ACCEPT (1 + |v|)`` the
#: next point is the mode to rounding (quadratic convergence: its step is about
#: ``sigma / 2 x step^2``, 1e-12), so the pass there computes everything the gradient and
#: Hessian need; its own step still has to pass ``_TOL``, or the iteration goes on.
_ACCEPT = 1e-6


@dataclass
class Mode:
    """The mode of the random intercepts and the conditional terms there.

    Attributes
    ----------
    v : ndarray
        Standardised modes ``u / sigma``, ``(n_groups, F)``.
    eta : ndarray
        Location predictor at the mode, ``(n_obs, F)``.
    der : Derivatives
        The family's terms at ``eta`` (order 2).
    s1, s2 : ndarray
        Group sums of ``d ll / d eta`` and ``d^2 ll / d eta^2``, ``(n_groups, F)``.
    n_iter : int
        Newton iterations used.
    converged : ndarray of bool
        ``(F,)``: every group of the feature reached its mode.
    """

    v: Array
    eta: Array
    der: Derivatives
    s1: Array
    s2: Array
    n_iter: int
    converged: NDArray[np.bool_]


def solve_modes(
    family: Family,
    y: Array,
    eta_fixed: Array,
    eta_scale: Array,
    sigma: Array,
    groups: GroupSums,
    v0: Array | None = None,
) -> Mode:
    """Find the random-intercept modes of every ``(group, feature)`` pair.

    Parameters
    ----------
    family : Family
        ``nb`` or ``poisson`` (log link, concave in the predictor).
    y : ndarray
        Counts ``(n_obs, F)``.
    eta_fixed : ndarray
        Fixed part of the location predictor (offset included), ``(n_obs, F)``.
    eta_scale : ndarray
        Scale predictor broadcastable to ``(n_obs, F)``.
    sigma : ndarray
        Standard deviation of the random intercept per feature (natural-log scale),
        ``(F,)``; may be negative or zero (only ``sigma^2`` matters).
    groups : GroupSums
        Group of each observation.
    v0 : ndarray, optional
        Starting modes ``(n_groups, F)``; zeros by default.

    Returns
    -------
    Mode
        Modes and the conditional terms at them.
    """
    n_groups = groups.n_groups
    n_feat = y.shape[1]
    v = np.zeros((n_groups, n_feat)) if v0 is None else v0.copy()
    sig = sigma[None, :]
    step_cap = _MAX_ETA_STEP / np.maximum(np.abs(sig), 1e-300)
    eta = eta_fixed + groups.expand(sig * v)
    der = family.derivatives(y, eta, eta_scale, 2)
    it = 0
    while True:
        s1 = groups(der.d_loc)
        s2 = groups(der.d2_loc)
        step = (sig * s1 - v) / (1.0 - sig * sig * s2)
        converged = np.asarray((np.abs(step) <= _TOL * (1.0 + np.abs(v))).all(axis=0), dtype=bool)
        if converged.all() or it >= _MAX_ITER:
            break
        step = np.clip(step, -step_cap, step_cap)
        # The full step nearly always increases the concave group objective; it is checked
        # on the terms of the next evaluation, and only failing pairs are backtracked.
        base = _group_objective(der.ll, v, groups)
        trial = v + step
        eta = eta_fixed + groups.expand(sig * trial)
        der = family.derivatives(y, eta, eta_scale, 2)
        bad = _group_objective(der.ll, trial, groups) < base - 1e-13 * (1.0 + np.abs(base))
        if bad.any():

            def objective(t: Array) -> Array:
                e = eta_fixed + groups.expand(sig * t)
                return _group_objective(family.derivatives(y, e, eta_scale, 0).ll, t, groups)

            trial = _backtrack(objective, v, step / 2, base, bad, trial)
            eta = eta_fixed + groups.expand(sig * trial)
            der = family.derivatives(y, eta, eta_scale, 2)
        v = trial
        it += 1
    return Mode(v, eta, der, s1, s2, it, converged)


@dataclass
class FusedMode:
    """The modes found by :func:`solve_modes_fused` and the per-group sums there.

    Attributes
    ----------
    v : ndarray
        Standardised modes ``u / sigma``, ``(n_groups, F)``.
    ll, s1, s2 : ndarray
        ``(n_groups, F)`` group sums of ``ll`` (count terms excluded), ``d ll / d eta``
        and ``d^2 ll / d eta^2`` at ``v``.
    moments : ModeMoments or None
        Everything the gradient and Hessian need at ``v`` (when asked for).
    n_iter : int
        Newton iterations used.
    converged : ndarray of bool
        ``(F,)``: every group of the feature reached its mode.
    passes : int
        Passes over the data block (the last one with ``moments``).
    """

    v: Array
    ll: Array
    s1: Array
    s2: Array
    moments: ModeMoments | None
    n_iter: int
    converged: NDArray[np.bool_]
    passes: int


def solve_modes_fused(
    group_pass: GroupPass,
    eta_fixed: Array,
    eta_scale: Array,
    sigma: Array,
    v0: Array | None = None,
    with_moments: bool = False,
) -> FusedMode:
    """:func:`solve_modes` with the compiled per-group passes of :mod:`batchglm.mixed.group_pass`.

    The same Newton iteration and stopping rule (every step below ``1e-10 (1 + |v|)`` at
    the returned modes, steps capped at one unit of the predictor), with three changes
    that make an inner step cheap:

    * the means at intercept 0 are computed once per evaluation
      (:meth:`GroupPass.point`); a pass multiplies them by ``exp(sigma v_g)`` and sums
      ``S1`` and ``S2`` by group, without exponentials or logarithms per observation and
      without writing ``n_obs x F`` arrays;
    * a step is checked by the derivative instead of the objective: it is kept when
      ``|sigma S1 - v|`` (the derivative of the concave group objective, whose slope is at
      most -1) does not grow, or when it is below ``1e-6 (1 + |v|)``; otherwise it is halved.
      Near the mode ``|v - v*| <= |sigma S1 - v|``, and halving a Newton step always lowers
      it eventually, so the iteration converges to the same unique mode; the objective
      (a logarithm per observation) is evaluated once, at the mode;
    * once every step is below ``1e-6 (1 + |v|)`` the next point is the mode to rounding
      (quadratic convergence), so the pass there is the final one (with the moments of
      the gradient and Hessian, or the log-likelihood); its own step must still pass the
      stopping rule, or the iteration goes on.

    Parameters
    ----------
    group_pass : GroupPass
        Counts, groups and designs of the block.
    eta_fixed : ndarray
        Fixed part of the location predictor (offset included), ``(n_obs, F)``.
    eta_scale : ndarray
        Scale predictor, ``(1, F)`` or ``(n_obs, F)``.
    sigma : ndarray
        ``(F,)`` standard deviation of the random intercept (natural-log scale).
    v0 : ndarray, optional
        Starting modes ``(n_groups, F)``; zeros by default.
    with_moments : bool
        Return the :class:`ModeMoments` at the modes (else only the log-likelihood).

    Returns
    -------
    FusedMode
        Modes and the sums at them.
    """
    n_feat = eta_fixed.shape[1]
    point = group_pass.point(eta_fixed, eta_scale)
    v = np.zeros((group_pass.n_groups, n_feat)) if v0 is None else v0.copy()
    sig = sigma[None, :]
    step_cap = _MAX_ETA_STEP / np.maximum(np.abs(sig), 1e-300)
    s1, s2 = group_pass.sums(point, sig * v)
    passes = 1
    moments: ModeMoments | None = None  # the pass with the moments, at v
    it = 0
    while True:
        res = sig * s1 - v
        step = res / (1.0 - sig * sig * s2)
        converged = np.asarray((np.abs(step) <= _TOL * (1.0 + np.abs(v))).all(axis=0), dtype=bool)
        if converged.all() or it >= _MAX_ITER:
            break
        step = np.clip(step, -step_cap, step_cap)
        small = np.abs(step) <= _ACCEPT * (1.0 + np.abs(v))
        trial = v + step
        passes += 1
        if with_moments and bool(small.all()):
            moments = group_pass.moments(point, sig * trial)
            t_s1, t_s2 = moments.s1, moments.s2
        else:
            moments = None
            t_s1, t_s2 = group_pass.sums(point, sig * trial)
        # Non-finite steps (overflow far from the optimum) are left alone, as in solve_modes.
        bad = ~small & np.isfinite(step) & ~(np.abs(sig * t_s1 - trial) <= np.abs(res))
        if bad.any():
            trial, t_s1, t_s2, n_halve = _halve_steps(
                group_pass, point, sig, v, step, res, bad, trial, t_s1, t_s2
            )
            passes += n_halve
            moments = None
        v, s1, s2 = trial, t_s1, t_s2
        it += 1
    if with_moments:
        if moments is None:
            moments = group_pass.moments(point, sig * v)
            passes += 1
        return FusedMode(v, moments.ll, s1, s2, moments, it, converged, passes)
    ll = group_pass.loglik(point, sig * v)
    return FusedMode(v, ll, s1, s2, None, it, converged, passes + 1)


def _halve_steps(
    group_pass: GroupPass,
    point: Point,
    sig: Array,
    v: Array,
    step: Array,
    res: Array,
    need: NDArray[np.bool_],
    trial: Array,
    t_s1: Array,
    t_s2: Array,
) -> tuple[Array, Array, Array, int]:
    """Halve the steps of the pairs in ``need`` until their derivative does not grow.

    Returns the new points, their sums and the number of passes. Pairs that never
    improve (at their mode to rounding) stay at ``v``.
    """
    need = need.copy()
    trial, t_s1, t_s2 = trial.copy(), t_s1.copy(), t_s2.copy()
    passes = 0
    for _ in range(_MAX_HALVINGS):
        step = step / 2
        cand = np.where(need, v + step, trial)
        c1, c2 = group_pass.sums(point, sig * cand)
        passes += 1
        ok = need & (np.abs(sig * c1 - cand) <= np.abs(res))
        trial[ok], t_s1[ok], t_s2[ok] = cand[ok], c1[ok], c2[ok]
        need &= ~ok
        if not need.any():
            return trial, t_s1, t_s2, passes
    trial[need] = v[need]
    c1, c2 = group_pass.sums(point, sig * trial)
    return trial, c1, c2, passes + 1


def _group_objective(ll: Array, v: Array, groups: GroupSums) -> Array:
    return groups(ll) - 0.5 * v * v


def _backtrack(
    objective: Callable[[Array], Array],
    v: Array,
    step: Array,
    base: Array,
    need: NDArray[np.bool_],
    new: Array,
) -> Array:
    """Halve the steps of the pairs in ``need`` until their objective does not decrease.

    ``objective(v)`` is the ``(n_groups, F)`` group objective ``sum ll - v^2 / 2`` at ``v``.
    """
    need = need.copy()
    new = new.copy()
    slack = 1e-13 * (1.0 + np.abs(base))
    for _ in range(_MAX_HALVINGS):
        trial = np.where(need, v + step, new)
        obj = objective(trial)
        ok = need & (obj >= base - slack)
        new[ok] = trial[ok]
        need &= ~ok
        if not need.any():
            break
        step = step / 2
    # Pairs that never improved (at their mode to rounding) stay where they were.
    new[need] = v[need]
    return new
