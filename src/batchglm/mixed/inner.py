"""The mode of the random intercepts, batched over features and groups.

With one random-intercept factor the conditional log-likelihood separates by group: for
feature ``f`` and group ``g`` the mode solves the one-dimensional concave problem

    max_v  sum_{j in g} ll(y_jf; eta_jf + sigma_f v)  -  v^2 / 2,

where ``v = u / sigma`` is the standardised random intercept. Its negative curvature
``1 - sigma^2 sum_j d2_j`` is at least 1 (NB and Poisson log-likelihoods are concave in the
log mean), so a damped Newton iteration converges quadratically from any start. All
``features x groups`` problems are solved at once; the cost per iteration is one pass of
the family's derivatives over the data block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.families import Derivatives, Family
from batchglm.solvers.linalg import GroupSums

Array = NDArray[np.float64]

#: Largest change of a predictor in one inner Newton step (log scale).
_MAX_ETA_STEP = 1.0
#: A Newton step on ``v`` below this ends the inner iteration; one more step has already
#: been taken, so the mode is exact to rounding (quadratic convergence).
_TOL = 1e-10
_MAX_ITER = 100
_MAX_HALVINGS = 40


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
            trial = _backtrack(
                family, y, eta_fixed, eta_scale, sig, groups, v, step / 2, base, bad, trial
            )
            eta = eta_fixed + groups.expand(sig * trial)
            der = family.derivatives(y, eta, eta_scale, 2)
        v = trial
        it += 1
    return Mode(v, eta, der, s1, s2, it, converged)


def _group_objective(ll: Array, v: Array, groups: GroupSums) -> Array:
    return groups(ll) - 0.5 * v * v


def _backtrack(
    family: Family,
    y: Array,
    eta_fixed: Array,
    eta_scale: Array,
    sig: Array,
    groups: GroupSums,
    v: Array,
    step: Array,
    base: Array,
    need: NDArray[np.bool_],
    new: Array,
) -> Array:
    """Halve the steps of the pairs in ``need`` until their objective does not decrease."""
    need = need.copy()
    new = new.copy()
    slack = 1e-13 * (1.0 + np.abs(base))
    for _ in range(_MAX_HALVINGS):
        trial = np.where(need, v + step, new)
        eta = eta_fixed + groups.expand(sig * trial)
        obj = _group_objective(family.derivatives(y, eta, eta_scale, 0).ll, trial, groups)
        ok = need & (obj >= base - slack)
        new[ok] = trial[ok]
        need &= ~ok
        if not need.any():
            break
        step = step / 2
    # Pairs that never improved (at their mode to rounding) stay where they were.
    new[need] = v[need]
    return new
