"""One feature block of the GLM fit: all-zero features, starts, the Newton solve, status.

Used by :func:`batchglm.fit` (in-memory and on-disk blocks), the dask path
(:mod:`batchglm.dask_fit`) and the mixed model's fixed-effect start, so it sits below all
three in the import layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.init import initial_loc, initial_scale
from batchglm.nonzeros import NonZeros
from batchglm.obs_weights import identifiable_features
from batchglm.solvers import closed_form
from batchglm.solvers.linalg import inverse_negative
from batchglm.solvers.newton import SolverOptions, solve
from batchglm.solvers.objective import Objective, Problem
from batchglm.solvers.status import Status

Array = NDArray[np.float64]

#: Fitted mean given to all-zero features.
_ALL_ZERO_MEAN = 1e-8


def fit_block(
    problem: Problem,
    y: Array,
    options: SolverOptions,
    fixed_b: Array | None = None,
    weights: Array | None = None,
    offset: Array | None = None,
    nonzeros: NonZeros | None = None,
    start_loc: Array | None = None,
    kept: dict[Any, Any] | None = None,
) -> tuple[Array, Array, Array, NDArray[np.int32], NDArray[np.int8]]:
    """Fit one feature block; ``weights`` and ``offset`` are its ``(n_obs, F)`` columns.

    ``start_loc`` ``(F, k_loc)``: free location starting values (rows with a non-finite
    entry keep the default start), e.g. a refit's from the fit it refines.

    ``nonzeros`` lists the non-zero entries of ``y`` (from a sparse block; listed here for
    dense count blocks): the all-zero check, count table, zero sums and grouped starting
    values use them instead of passes over ``y``.

    ``kept``: the block's tables from earlier fits of the same counts, filled by this one
    (:mod:`batchglm.solvers.block_cache`; unweighted fits only): non-zero entries, the
    count table and the constant of the log-likelihood.
    """
    if fixed_b is None and weights is None and closed_form.applies(problem):
        return closed_form.fit_normal(problem, y, offset)
    n_feat = y.shape[1]
    k = problem.n_params
    theta = np.zeros((n_feat, k))
    cov = np.full((n_feat, k, k), np.nan)
    loglik = np.zeros(n_feat)
    n_iter = np.zeros(n_feat, dtype=np.int32)
    status = np.full(n_feat, Status.ALL_ZERO, dtype=np.int8)
    sep_eta = problem.family.separated_eta
    # Per-feature weights can leave a feature's design rank-deficient on its observations
    # of positive weight: such features are not fitted.
    skip = np.zeros(n_feat, dtype=bool)
    if weights is not None:
        zc = problem.scale.reduced[:, : problem.k_scale]
        skip = ~identifiable_features(problem.loc.reduced, zc, weights)
        theta[skip], loglik[skip] = np.nan, np.nan
        status[skip] = Status.UNIDENTIFIABLE
    w = weights
    if w is None and problem.weights is not None:
        w = problem.weights[:, None]
    # Observations of weight 0 do not count: a feature whose weighted counts are all zero
    # is all-zero.
    seen = y if w is None else np.where(w > 0, y, 0.0)
    # All-zero features lack an optimum only where means can run to zero (log link); for
    # other families zeros are ordinary values.
    zero = np.zeros(n_feat, dtype=bool)
    if w is not None or not problem.family.has_count_terms:
        nonzeros = None  # (weights: entries of weight 0 do not count; see `seen`)
    elif nonzeros is None:
        nonzeros = None if kept is None else kept.get("nonzeros")
        if nonzeros is None:
            nonzeros = NonZeros.of(y)
            if kept is not None:
                kept["nonzeros"] = nonzeros
    if sep_eta is not None:
        seen_any = seen.any(axis=0) if nonzeros is None else nonzeros.any_per_feature()
        zero = ~np.asarray(seen_any, dtype=bool) & ~skip

    def cols(v: Array | None, mask: NDArray[np.bool_]) -> Array | None:
        return None if v is None else np.ascontiguousarray(v[:, mask])

    if zero.any():
        theta[zero] = _all_zero_theta(problem)
        if fixed_b is not None:
            theta[zero, problem.k_loc :] = fixed_b[zero]
        obj0 = Objective(
            problem,
            np.ascontiguousarray(y[:, zero]),
            weights=cols(weights, zero),
            offset=cols(offset, zero),
        )
        loglik[zero] = obj0.evaluate(theta[zero], 0)[0]
    fit = ~zero & ~skip
    if not fit.any():
        return theta, cov, loglik, n_iter, status
    subset = not fit.all()
    yf = np.ascontiguousarray(y[:, fit]) if subset else y
    wf = cols(weights, fit) if subset else weights
    of = cols(offset, fit) if subset else offset
    nzf = nonzeros.subset(fit) if nonzeros is not None and subset else nonzeros
    # The count table and constant depend on the counts and the scale groups only: a fit
    # of the same block (kept) reuses them, and the table's last count-term sums with them.
    table_key = None
    table, constant = None, None
    if kept is not None and w is None and problem.family.has_count_terms:
        groups = problem.scale_groups
        table_key = ("table", problem.family.name, groups.index.tobytes(), fit.tobytes())
        table, constant = kept.get(table_key, (None, None))
    objective = Objective(
        problem,
        yf,
        table,
        constant,
        weights=wf,
        offset=of,
        nonzeros=nzf,
        fixed_scale=fixed_b is not None,
    )
    if table_key is not None and table is None and objective.table is not None:
        assert kept is not None
        kept[table_key] = (objective.table, objective.constant())
    a0 = _start_loc(start_loc, fit, subset) if start_loc is not None else None
    if a0 is None or not np.isfinite(a0).all():
        default = initial_loc(problem, yf, wf, of, nzf)
        a0 = default if a0 is None else np.where(np.isfinite(a0), a0, default)
    b0 = initial_scale(problem, yf, a0, of, wf, nzf) if fixed_b is None else fixed_b[fit]
    sol = solve(objective, np.concatenate([a0, b0], axis=1), options, fix_scale=fixed_b is not None)
    sol_status = sol.status
    if problem.k_scale:
        # A start on the bound (normal: zero residuals) can converge without the solver
        # ever limiting a step; the status should still say where the scale stopped.
        eta_s = problem.eta_scale_groups(sol.theta[:, problem.k_loc :])
        lo, hi = problem.family.scale_bounds
        on_bound = np.any((eta_s <= lo + 1e-8) | (eta_s >= hi - 1e-8), axis=0)
        sol_status[on_bound & (sol_status == Status.CONVERGED)] = Status.SCALE_AT_BOUND
    if sep_eta is not None:
        eta_min = _min_eta(
            problem,
            sol.theta[:, : problem.k_loc],
            cols(w, fit) if w is not None and w.shape[1] > 1 else w,
            of,
        )
        optimum = (sol_status == Status.CONVERGED) | (sol_status == Status.SCALE_AT_BOUND)
        sol_status[optimum & (eta_min < sep_eta)] = Status.SEPARATED
        # Sparse features with several run-off directions creep towards the boundary (the
        # decrement falls slowly): at max_iter with means already about 0, they are
        # separated, not unconverged (docs/validation.md, "Covariate-separated genes").
        sol_status[(sol_status == Status.MAX_ITER) & (eta_min < sep_eta)] = Status.SEPARATED
    if fixed_b is None:
        cov_fit = inverse_negative(sol.hess)
    else:
        kl = problem.k_loc
        cov_fit = np.zeros_like(sol.hess)
        cov_fit[:, :kl, :kl] = inverse_negative(sol.hess[:, :kl, :kl])
    theta[fit], cov[fit], loglik[fit] = sol.theta, cov_fit, sol.loglik
    n_iter[fit], status[fit] = sol.n_iter, sol_status
    return theta, cov, loglik, n_iter, status


def _start_loc(start: Array, fit: NDArray[np.bool_], subset: bool) -> Array:
    """Copy the given location start of the fitted features."""
    return np.array(start[fit] if subset else start, dtype=np.float64)


def _min_eta(problem: Problem, a: Array, w: Array | None, offset: Array | None) -> Array:
    """Lower bound ``(F,)`` on the location predictor of the observations that count.

    The smallest ``X C a`` over distinct design rows plus the smallest offset, both over
    observations of positive weight (``w`` is ``(n_obs, 1)`` or ``(n_obs, F)``; ``offset``
    a block's ``(n_obs, F)`` offsets added to the problem's).
    """
    if w is None and offset is None:
        # Groups plus one covariate: the minimum over the groups' bounds, not over every
        # distinct row (at a million cells every row is distinct: one pass per block).
        plan = problem.covariate_plan
        low = None if plan is None else plan.min_eta_loc(a)
        if low is not None:
            return low + problem.offset.min()
        return (problem.loc_rows @ a.T).min(axis=0) + problem.offset.min()
    eta_rows = problem.loc_rows @ a.T
    total = problem.offset[:, None] + (0.0 if offset is None else offset)
    if w is None:
        return eta_rows.min(axis=0) + total.min(axis=0)
    used = w > 0
    off_min = np.where(used, total, np.inf).min(axis=0)
    rows_used = problem.loc_groups(np.ascontiguousarray(used, dtype=np.float64)) > 0
    return np.where(rows_used, eta_rows, np.inf).min(axis=0) + off_min


def _all_zero_theta(problem: Problem) -> Array:
    xc = problem.loc.reduced
    target = np.full((xc.shape[0], 1), np.log(_ALL_ZERO_MEAN))
    a, *_ = np.linalg.lstsq(xc, target, rcond=None)
    return np.concatenate([a.ravel(), np.zeros(problem.k_scale)])
