"""Wald tests at the boundary: which features are separated in the tested direction.

A feature with only zeros in a group has no finite maximum-likelihood estimate: the fit
drives that group's fitted mean towards 0 and stops where the likelihood is flat (status
``separated``). The Wald statistic of a combination that involves this direction collapses
towards 0 (Hauck & Donner 1977, JASA 72: 851-853): the estimate grows linearly while its
standard error grows exponentially, so a clear difference (0 vs 30 counts) gets p close to
1. The likelihood-ratio statistic stays valid there. :func:`separated_in_direction` finds
the features whose tested combinations involve a separated direction;
:mod:`batchglm.de.separated_tests` computes their likelihood-ratio statistic and the
zero-side floor of their p-values.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.de.zero_fitted_df import no_residual_df
from batchglm.design import column_rank
from batchglm.obs_weights import counted_offsets, is_weighted
from batchglm.result import FitResult
from batchglm.solvers.objective import unique_rows
from batchglm.solvers.status import Status

Array = NDArray[np.float64]

#: Observations whose fitted log-mean (offset included) lies below the family's
#: ``separated_eta + _ETA_MARGIN`` count as fitted at zero (mean below about 2e-8).
_ETA_MARGIN = 3.0

#: A tested row outside the row space of the non-zero observations' design by more than
#: this fraction of its norm involves a separated direction.
_ROW_RTOL = 1e-6

#: Elements of one (distinct design rows x features) block of fitted log-means.
_CHUNK_ELEMENTS = 1 << 20


def separated_in_direction(res: FitResult, l_free: Array) -> NDArray[np.bool_]:
    """Features whose tested combinations are not estimable without separated observations.

    Parameters
    ----------
    res : FitResult
        The fit of the test.
    l_free : ndarray
        Tested rows over the free location parameters, ``L C``, shape ``(r, k)``.

    Returns
    -------
    ndarray of bool
        ``(n_features,)``: True where the status is ``separated`` and some row of ``L C``
        does not lie in the row space of ``X C`` restricted to the observations whose
        fitted mean is not (numerically) zero. Such a combination moves with the
        coefficient that runs to infinity; one that lies in that row space (for example a
        comparison of two groups that both have counts, when a third group is all zero)
        keeps a valid Wald test.

    Notes
    -----
    Features are grouped by their pattern of zero-fitted distinct design rows; the loop
    runs over distinct patterns (a few per design) and feature chunks, not over features.
    Memory is (distinct design rows x chunk), never (observations x features).
    """
    n_feat = len(res.feature_names)
    out = np.zeros(n_feat, dtype=bool)
    fam = res.family
    sep = np.flatnonzero(res.status_codes == Status.SEPARATED)
    if fam.separated_eta is None or sep.size == 0:
        return out
    # The kept row space only depends on which distinct design rows keep some observation
    # with a non-zero fitted mean: row u keeps one iff x_u a + max log(sf) over its
    # observations lies above the threshold. Working on distinct rows (and chunks of
    # features) keeps memory at (distinct rows x chunk), whatever the number of cells.
    rows, inverse_obs = unique_rows(res.loc.reduced)
    # Offsets (size factors, a fit's `offset`) per observation, or per observation and
    # feature where the fit has an offset matrix or weights (weight 0: -inf, no mean).
    shared = not is_weighted(res)
    threshold = fam.separated_eta + _ETA_MARGIN
    k = res.loc.n_free
    step = max(1, _CHUNK_ELEMENTS // (rows.shape[0] if shared else len(res.obs_names)))
    verdict: dict[bytes, bool] = {}
    for start in range(0, sep.size, step):
        part = sep[start : start + step]
        offsets = counted_offsets(res, part)
        max_offset = np.full((rows.shape[0], offsets.shape[1]), -np.inf)
        np.maximum.at(max_offset, inverse_obs, offsets)
        eta = rows @ res.theta_free[part, :k].T + max_offset
        out[part] = outside_kept_rows(l_free, rows, eta < threshold, verdict)
    return out


def boundary_tested(res: FitResult, l_free: Array) -> NDArray[np.bool_]:
    """Features whose test is judged at the boundary: likelihood ratio and zero-side floor.

    Parameters
    ----------
    res : FitResult
        The fit of the test.
    l_free : ndarray
        Tested rows over the free location parameters, ``L C``, shape ``(r, k)``.

    Returns
    -------
    ndarray of bool
        ``(n_features,)``: :func:`separated_in_direction`, or separated with no residual
        degree of freedom left on the observations not fitted at zero
        (:func:`batchglm.de.zero_fitted_df.no_residual_df`; e.g. nuisance effects that fit
        zeros in both conditions exactly). For the latter the Wald statistic rests on an
        exact interpolation of the non-zero observations and the likelihood ratio on the
        pattern of zeros alone; the exact conditional test of the zeros bounds them
        (``docs/validation.md``, "Covariate-separated genes").
    """
    return separated_in_direction(res, l_free) | no_residual_df(res)


def outside_kept_rows(
    l_free: Array, rows: Array, zero: NDArray[np.bool_], cache: dict[bytes, bool] | None = None
) -> NDArray[np.bool_]:
    """Per feature, whether a tested row leaves the row space of its non-zero design rows.

    Parameters
    ----------
    l_free : ndarray
        Tested rows over the free location parameters, ``L C``, shape ``(r, k)``.
    rows : ndarray
        Distinct rows of the design after constraints, ``(u, k)``.
    zero : ndarray of bool
        ``(u, F)``: True where a feature's fitted mean (or its count) is zero at every
        observation of that design row.
    cache : dict, optional
        Verdicts by zero pattern, shared between calls on the same ``l_free`` and ``rows``.

    Returns
    -------
    ndarray of bool
        ``(F,)``: True where some row of ``l_free`` is not in the row space of
        ``rows[~zero[:, f]]`` (the tested combination moves with a direction that only
        zero observations inform). Features are grouped by their zero pattern, so the
        work is per distinct pattern, not per feature.
    """
    verdict = {} if cache is None else cache
    norms = np.linalg.norm(l_free, axis=1)
    out = np.zeros(zero.shape[1], dtype=bool)
    patterns, inverse = np.unique(zero.T, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    for p, pattern in enumerate(patterns):
        key = np.packbits(pattern).tobytes()
        if key not in verdict:
            verdict[key] = _outside_row_space(l_free, rows[~pattern], norms)
        out[inverse == p] = verdict[key]
    return out


def scale_free_at_zeros(res: FitResult, features: NDArray[np.intp]) -> NDArray[np.bool_]:
    """Features whose scale model has parameters that only zero-fitted observations inform.

    Parameters
    ----------
    res : FitResult
        The fit of the test.
    features : ndarray of int
        Positions of (separated) features to check.

    Returns
    -------
    ndarray of bool
        One value per entry of ``features``: True where the scale design restricted to the
        observations with a non-zero fitted mean has lower rank than the whole scale design.
        Then the all-zero group has a scale parameter of its own (e.g. ``design_scale="~
        condition"`` with one condition all zero): any mean difference can be absorbed by
        that group's dispersion running to its bound, so the data hold no information on
        the tested location effect and a likelihood ratio near 0 would be reported as
        ``p ~ 1``.
    """
    out = np.zeros(features.size, dtype=bool)
    if res.theta_free.shape[1] == res.loc.n_free or features.size == 0:
        return out
    fam = res.family
    if fam.separated_eta is None:
        return out
    k = res.loc.n_free
    if is_weighted(res):
        # Offsets or weights per observation (and feature): observation by observation.
        xc, zc = res.loc.reduced, res.scale.reduced
        eta_obs = xc @ res.theta_free[features, :k].T + counted_offsets(res, features)
        kept_obs = eta_obs >= fam.separated_eta + _ETA_MARGIN
        return _rank_drops(zc, kept_obs)
    # Distinct (location row, scale row, offset) cells: memory cells x features.
    cells, index = unique_rows(
        np.column_stack([res.loc.reduced, res.scale.reduced, np.log(res.size_factors)])
    )
    x_cells, z_cells = cells[:, :k], cells[:, k : k + res.scale.n_free]
    eta = x_cells @ res.theta_free[features, :k].T + cells[:, -1:]
    kept = eta >= fam.separated_eta + _ETA_MARGIN
    return _rank_drops(z_cells, kept)


def _rank_drops(z: Array, kept: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Per column ``f`` of ``kept`` ``(n, F)``, whether ``z[kept[:, f]]`` has lower rank than ``z``.

    One rank per distinct pattern of kept rows (a few per design), not per feature.
    """
    full_rank = column_rank(z)
    patterns, inverse = np.unique(kept.T, axis=0, return_inverse=True)
    drops = np.array([column_rank(z[pattern]) < full_rank for pattern in patterns], dtype=bool)
    return drops[np.asarray(inverse).ravel()]


def _outside_row_space(l_free: Array, kept: Array, norms: Array) -> bool:
    """Whether some row of ``l_free`` leaves the row space of ``kept``."""
    if kept.shape[0] == 0:
        return True
    _, s, vt = np.linalg.svd(kept, full_matrices=False)
    basis = vt[s > 1e-10 * max(s.max(initial=0.0), 1e-300)]
    resid = l_free - (l_free @ basis.T) @ basis
    return bool(np.any(np.linalg.norm(resid, axis=1) > _ROW_RTOL * norms))
