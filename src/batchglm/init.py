"""Closed-form starting values: group means for the location, moments for the scale."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.families.nb import NegativeBinomial
from batchglm.nonzeros import NonZeros
from batchglm.solvers.linalg import GroupSums, lstsq_columns
from batchglm.solvers.objective import Problem

Array = NDArray[np.float64]

#: Location designs with at most this many distinct rows start from group means.
_MAX_LOC_GROUPS = 256


def _weighted_lstsq(rows: Array, weights: Array, targets: Array) -> Array:
    """Solve ``min sum_g w_g (rows_g . x - t_g)^2`` for every column of ``targets``.

    Columns of ``rows`` are equilibrated first, so covariates on any scale keep their
    coefficient (see :func:`~batchglm.solvers.linalg.lstsq_columns`).
    """
    sw = np.sqrt(weights)[:, None]
    return np.asarray(lstsq_columns(rows * sw, targets * sw).T)


def initial_loc(
    problem: Problem,
    y: Array,
    weights: Array | None = None,
    offset: Array | None = None,
    nonzeros: NonZeros | None = None,
) -> Array:
    """Compute starting location coefficients ``(F, k_loc)``.

    With few distinct design rows, each group's mean of ``y / size_factor`` mapped to the
    link scale by :meth:`~batchglm.families.Family.start_loc_groups` (the exact MLE for
    saturated designs without size factors, for log and identity links), fitted by
    weighted least squares; otherwise least squares on the family's per-observation working
    response (:meth:`~batchglm.families.Family.start_loc_obs`, for the log link
    ``log((y + 0.5) / size_factor)``). Observation weights weight the group means and the
    least squares (for weights per feature, the least squares uses their feature sums).

    Parameters
    ----------
    problem : Problem
        Designs, family, offsets and shared observation weights.
    y : ndarray
        Observations ``(n_obs, F)``.
    weights : ndarray, optional
        Observation weights of this block ``(n_obs, F)``; they replace
        ``problem.weights``.
    offset : ndarray, optional
        Location offsets of this block ``(n_obs, F)``, added to ``problem.offset``.
    nonzeros : NonZeros, optional
        The non-zero entries of ``y``; without weights and block offsets the group means
        are summed from them (no pass over ``y``).

    Returns
    -------
    ndarray
        Free location coefficients.
    """
    fam = problem.family
    groups = problem.loc_groups
    w = weights
    if w is None and problem.weights is not None:
        w = problem.weights[:, None]
    grouped = groups.n_groups <= _MAX_LOC_GROUPS and not groups.identity
    plan = problem.covariate_plan if not grouped else None
    if plan is not None and w is None and offset is None and nonzeros is not None:
        # Groups plus continuous covariates: the group means of the discrete columns, the
        # covariates' coefficients at 0.
        sf = problem.size_factor_moments.size_factors
        norm_nz = nonzeros.values / sf[nonzeros.obs]
        sizes = plan.sizes
        means = nonzeros.group_sums(plan.group, plan.n_groups, norm_nz) / sizes[:, None]
        target = _group_start(problem, means, sizes[:, None])
        a = np.zeros((y.shape[1], problem.k_loc))
        a[:, plan.discrete] = _weighted_lstsq(plan.rows, sizes, target)
        return a
    if grouped and w is None and offset is None and nonzeros is not None:
        moments = problem.size_factor_moments
        sizes = moments.loc_sizes
        norm_nz = nonzeros.values / moments.size_factors[nonzeros.obs]
        means = nonzeros.group_sums(groups.index, groups.n_groups, norm_nz) / sizes[:, None]
        target = _group_start(problem, means, sizes[:, None])
        return _weighted_lstsq(problem.loc_rows, sizes, target)
    inv_sf = np.exp(-problem.offset)[:, None]
    if offset is not None:
        inv_sf = inv_sf * np.exp(-offset)
    norm = y * inv_sf
    if grouped:
        sizes = np.bincount(groups.index, minlength=groups.n_groups).astype(np.float64)
        means = groups(norm) / sizes[:, None]
        if w is None:
            target = _group_start(problem, means, sizes[:, None])
            return _weighted_lstsq(problem.loc_rows, sizes, target)
        # Weighted group means; a group whose weights are all 0 keeps its plain mean (it
        # does not enter the likelihood, any finite start will do).
        wsum = groups(np.ascontiguousarray(np.broadcast_to(w, norm.shape)))
        pos = wsum > 0
        means = np.where(pos, groups(w * norm) / np.where(pos, wsum, 1.0), means)
        target = _group_start(problem, means, np.where(pos, wsum, sizes[:, None]))
        return _weighted_lstsq(problem.loc_rows, wsum.mean(axis=1) + 1e-12, target)
    target = fam.start_loc_obs(norm, inv_sf)
    row_w = np.ones(y.shape[0]) if w is None else w.mean(axis=1)
    return _weighted_lstsq(problem.loc.reduced, row_w, target)


def _group_start(problem: Problem, means: Array, sizes: Array) -> Array:
    """Start the groups as the family does, log-link means in units of the typical size factor.

    ``start_loc_groups`` floors empty groups at ``1 / (8 n_group)`` of a normalised count;
    measured in units of the geometric mean of the size factors (``exp(mean(offset))``)
    that floor is ``1 / (8 n_group)`` of a read at any overall scale of the size factors,
    so that scaling them all by ``c`` only shifts the start by ``-log c``, as it shifts
    the optimum.
    """
    fam = problem.family
    if fam.link != "log":
        return fam.start_loc_groups(means, sizes)
    log_scale = float(np.mean(problem.offset))
    return fam.start_loc_groups(means * np.exp(log_scale), sizes) - log_scale


def initial_scale(
    problem: Problem,
    y: Array,
    a: Array,
    offset: Array | None = None,
    weights: Array | None = None,
    nonzeros: NonZeros | None = None,
) -> Array:
    """Compute starting scale coefficients ``(F, k_scale)`` by the method of moments.

    The family's moment estimator (:meth:`~batchglm.families.Family.start_scale`; for NB
    ``r = sum(mu^2) / sum((y - mu)^2 - mu)``) is applied within each scale group (pooled
    over all observations when the scale design is continuous), then fitted to the scale
    design by least squares on the scale predictor.

    Parameters
    ----------
    problem : Problem
        Designs, family and offsets.
    y : ndarray
        Observations ``(n_obs, F)``.
    a : ndarray
        Starting location coefficients.
    offset : ndarray, optional
        Location offsets of this block ``(n_obs, F)``, added to ``problem.offset``.
    weights : ndarray, optional
        Observation weights of this block ``(n_obs, F)``; they replace
        ``problem.weights``. The moments are then weighted sums (an observation of weight 0
        does not count), group sizes summed weights.
    nonzeros : NonZeros, optional
        The non-zero entries of ``y``. For the negative binomial with a grouped location
        design, without weights and block offsets, the moments are then summed from them
        and from per-group moments of the size factors
        (:meth:`~batchglm.families.nb.NegativeBinomial.start_scale_sparse`), without a
        pass over ``y``.

    Returns
    -------
    ndarray
        Free scale coefficients.
    """
    if not problem.family.has_scale:
        return np.zeros((a.shape[0], 0))
    groups = problem.scale_groups
    pooled = groups.identity
    if pooled:
        groups = GroupSums(np.zeros(y.shape[0], dtype=np.intp), 1)
    loc_groups = problem.loc_groups
    plain = (
        isinstance(problem.family, NegativeBinomial)
        and nonzeros is not None
        and offset is None
        and weights is None
        and problem.weights is None
        and not pooled
    )
    grouped = loc_groups.n_groups <= _MAX_LOC_GROUPS and not loc_groups.identity
    plan = problem.covariate_plan if plain and not grouped else None
    if plan is not None:
        # Means of the covariate start (its coefficients at 0: one mean per group).
        assert nonzeros is not None and isinstance(problem.family, NegativeBinomial)
        eta = problem.family.start_scale_sparse(
            nonzeros,
            problem.size_factor_moments.size_factors,
            plan.group,
            np.exp(plan.rows @ a[:, plan.discrete].T),
            groups.index,
            plan.sum_sf,
            plan.sum_sf2,
        )
        sizes = np.bincount(plan.scale_of_group, plan.sizes, minlength=plan.n_scale).astype(
            np.float64
        )
    elif plain and grouped:
        assert nonzeros is not None and isinstance(problem.family, NegativeBinomial)
        moments = problem.size_factor_moments
        sizes = moments.scale_sizes
        eta = problem.family.start_scale_sparse(
            nonzeros,
            moments.size_factors,
            loc_groups.index,
            np.exp(problem.loc_rows @ a.T),
            groups.index,
            moments.sum_sf,
            moments.sum_sf2,
        )
    else:
        eta, sizes = _dense_start_scale(problem, y, a, groups, offset, weights)
    if pooled:
        # Continuous scale design: put the pooled value on the intercept direction.
        ones = np.ones((y.shape[0], 1))
        coef = lstsq_columns(problem.scale.reduced, ones)
        return np.asarray(eta.T @ coef.T)
    return _weighted_lstsq(problem.scale_rows, sizes, eta)


def _dense_start_scale(
    problem: Problem,
    y: Array,
    a: Array,
    groups: GroupSums,
    offset: Array | None,
    weights: Array | None,
) -> tuple[Array, Array]:
    """Apply the family's moment estimator to the dense block; also the groups' weights.

    See :func:`initial_scale`; returns ``(n_groups, F)`` scale predictors and ``(n_groups,)``
    weights.
    """
    eta_loc = problem.eta_loc(a)
    if offset is not None:
        eta_loc = eta_loc + offset
    w = weights
    if w is None and problem.weights is not None:
        w = problem.weights[:, None]
    if w is None:
        sizes = np.bincount(groups.index, minlength=groups.n_groups).astype(np.float64)
        eta = problem.family.start_scale(y, eta_loc, groups, sizes[:, None])
        return eta, sizes
    # Weighted moments: a group of weight 0 gets sums of 0 over a size of 1.
    wsum = groups(np.ascontiguousarray(np.broadcast_to(w, y.shape)))
    sizes = wsum.mean(axis=1) + 1e-12  # least-squares weights, none exactly 0
    eta = problem.family.start_scale(
        y, eta_loc, lambda v: groups(w * v), np.where(wsum > 0, wsum, 1.0)
    )
    return eta, sizes
