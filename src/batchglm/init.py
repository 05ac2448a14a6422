"""Closed-form starting values: group means for the location, moments for the scale."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.solvers.linalg import GroupSums
from batchglm.solvers.objective import Problem

Array = NDArray[np.float64]

#: Location designs with at most this many distinct rows start from group means.
_MAX_LOC_GROUPS = 256


def _weighted_lstsq(rows: Array, weights: Array, targets: Array) -> Array:
    """Solve ``min sum_g w_g (rows_g . x - t_g)^2`` for every column of ``targets``."""
    sw = np.sqrt(weights)[:, None]
    sol, *_ = np.linalg.lstsq(rows * sw, targets * sw, rcond=None)
    return np.asarray(sol.T)


def initial_loc(problem: Problem, y: Array) -> Array:
    """Compute starting location coefficients ``(F, k_loc)``.

    With few distinct design rows, the log of each group's mean of ``y / size_factor``
    (exact MLE for saturated designs without size factors), fitted by weighted least
    squares; otherwise least squares on ``log((y + 0.5) / size_factor)``.

    Parameters
    ----------
    problem : Problem
        Designs, family and offsets.
    y : ndarray
        Observations ``(n_obs, F)``.

    Returns
    -------
    ndarray
        Free location coefficients.
    """
    groups = problem.loc_groups
    norm = y * np.exp(-problem.offset)[:, None]
    if groups.n_groups <= _MAX_LOC_GROUPS and not groups.identity:
        sizes = np.bincount(groups.index, minlength=groups.n_groups).astype(np.float64)
        means = groups(norm) / sizes[:, None]
        floor = 1.0 / (8.0 * sizes[:, None])
        target = np.log(np.maximum(means, floor))
        return _weighted_lstsq(problem.loc_rows, sizes, target)
    target = np.log(norm + 0.5 * np.exp(-problem.offset)[:, None])
    return _weighted_lstsq(problem.loc.reduced, np.ones(y.shape[0]), target)


def initial_scale(problem: Problem, y: Array, a: Array) -> Array:
    """Compute starting scale coefficients ``(F, k_scale)`` by the method of moments.

    For NB, ``r = sum(mu^2) / sum((y - mu)^2 - mu)`` within each scale group (pooled over
    all observations when the scale design is continuous), clipped to a moderate range,
    then fitted to the scale design by least squares on ``log r``.

    Parameters
    ----------
    problem : Problem
        Designs, family and offsets.
    y : ndarray
        Observations ``(n_obs, F)``.
    a : ndarray
        Starting location coefficients.

    Returns
    -------
    ndarray
        Free scale coefficients.
    """
    if not problem.family.has_scale:
        return np.zeros((y.shape[0], 0))
    mu = np.exp(problem.eta_loc(a))
    groups = problem.scale_groups
    pooled = groups.identity
    if pooled:
        groups = GroupSums(np.zeros(y.shape[0], dtype=np.intp), 1)
    num = groups(mu * mu)
    den = groups((y - mu) ** 2 - mu)
    lo, hi = problem.family.scale_bounds
    upper = min(np.log(1e6), hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_r = np.log(num / den)
    log_r = np.where((den > 0) & np.isfinite(log_r), log_r, upper)
    log_r = np.clip(log_r, max(np.log(1e-3), lo), upper)
    if pooled:
        # Continuous scale design: put the pooled value on the intercept direction.
        ones = np.ones((y.shape[0], 1))
        coef, *_ = np.linalg.lstsq(problem.scale.reduced, ones, rcond=None)
        return np.asarray(log_r.T @ coef.T)
    sizes = np.bincount(groups.index, minlength=groups.n_groups).astype(np.float64)
    return _weighted_lstsq(problem.scale_rows, sizes, log_r)
