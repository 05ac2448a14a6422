"""Tests of separated features: their likelihood-ratio statistic and p-value floor.

:func:`lrt_statistic` refits the features that :func:`batchglm.de.separation.separated_in_direction`
finds under ``L theta = 0`` (the Wald statistic collapses there, the likelihood ratio does
not). :func:`lrt_floor`, :func:`ql_floor` and the Wald path's floor bound their p-values
below by the exact conditional test of the zero side (:mod:`batchglm.de.zero_side`), at
null means projected from the full fit
(:func:`batchglm.de.floor_null.floor_null_means`) and the test's own NB
dispersion (:func:`null_dispersion`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.de.floor_null import floor_null_means, zeros_explained_by_null
from batchglm.de.separation import boundary_tested
from batchglm.de.zero_fitted_df import supremum_loglik
from batchglm.de.zero_side import zero_side_floor
from batchglm.fitted import fitted_mean, linear_predictors
from batchglm.inputs import data_of_fit
from batchglm.obs_weights import is_weighted
from batchglm.result import FitResult
from batchglm.solvers.status import CONVERGED_CODES, Status
from batchglm.warning_site import user_stacklevel

Array = NDArray[np.float64]

#: ``2 (ll_full - ll_reduced)`` down to ``-(_LL_ATOL + _LL_RTOL |ll|)`` counts as 0.
_LL_ATOL = 5e-3
_LL_RTOL = 1e-9

#: Largest NB dispersion the floor uses (the NB family's bound on ``1 / r``).
_ALPHA_MAX = 1e8

#: Elements of one (observations x features) block of the LRT floor.
_FLOOR_CHUNK_ELEMENTS = 1 << 22

#: Families the zero-side floor covers: NB, and Poisson as its ``alpha -> 0`` limit (the
#: exact binomial test of the split of the total).
FLOOR_FAMILIES = ("nb", "poisson")


def lrt_statistic(
    data: Any,
    res: FitResult,
    l_free: Array,
    features: NDArray[np.intp],
    *,
    layer: str | None = None,
    ql_dispersion: Array | None = None,
) -> tuple[Array, NDArray[np.bool_], Array]:
    """Likelihood-ratio statistic of ``L theta = 0`` for some features of a fit.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The data of the fit, ``(n_obs, n_features)``.
    res : FitResult
        The (full) fit; its design, scale model, constraints, size factors, family, solver
        settings and any fixed scale are reused.
    l_free : ndarray
        Tested rows over the free location parameters, ``L C``, shape ``(r, k)``, of rank
        ``r`` (a basis).
    features : ndarray of int
        Positions of the features to test.
    layer : str, optional
        AnnData layer of ``data``.
    ql_dispersion : ndarray, optional
        ``(len(features),)`` moderated QL dispersions: the floor is then computed at the
        QL-inflated dispersion (:func:`null_dispersion`).

    Returns
    -------
    stat : ndarray
        ``2 (ll_full - ll_reduced)`` per feature in ``features`` (chi-squared with ``r``
        degrees of freedom under the null); ``NaN`` where the reduced fit reached no
        optimum or lies clearly above the full fit.
    ok : ndarray of bool
        Where ``stat`` is usable.
    floor : ndarray
        Smallest p-value the separation allows
        (:func:`batchglm.de.zero_side.zero_side_floor` at :func:`floor_null_means` and the
        full fit's NB dispersions, :func:`null_dispersion`, or the Poisson limit for
        Poisson fits, over the observations of weight 1; 0, no floor, for weights other
        than 0 and 1 and families other than NB and Poisson, which it does not cover).

    Raises
    ------
    ValueError
        If ``data`` does not have the fit's shape, or names other features.

    Notes
    -----
    The reduced model is the full one restricted by ``L theta = 0``: location constraints
    ``C_reduced = C N`` with ``N`` an orthonormal basis of the null space of ``L C``. It is
    fitted with :func:`batchglm.fit` on the selected features only.
    """
    from batchglm.fit import fit

    d = data_of_fit(data, res, layer=layer)
    _, s, vt = np.linalg.svd(l_free, full_matrices=True)
    rank = int((s > 1e-10 * max(s.max(initial=0.0), 1e-300)).sum())
    c_reduced = res.loc.constraints @ vt[rank:].T
    values = d.values[:, features]
    if d.kind == "dask":
        values = np.asarray(values)
    has_scale = res.has_scale
    fixed = None
    if has_scale and res.settings.fixed_scale:
        fixed = res.coef_scale.to_numpy()[features]
    # The refit uses the fit's own weights and offset (their columns of these features).
    weights, offset = (res.settings.get(k) for k in ("weights", "offset"))
    reduced = fit(
        values,
        res.loc.matrix,
        res.scale.matrix if has_scale else None,
        constraints_loc=c_reduced,
        constraints_scale=res.scale.constraints if has_scale else None,
        size_factors=res.size_factors if res.family.link == "log" else None,
        family=res.family,
        fixed_scale=fixed,
        max_iter=res.settings.max_iter,
        tol=res.settings.tol,
        n_jobs=1,
        weights=_columns(weights, features),
        offset=_columns(offset, features),
    )
    ll_full = supremum_loglik(res, d.values)[features]
    stat = 2.0 * (ll_full - supremum_loglik(reduced, values))
    ok = np.isin(reduced.status_codes, [int(c) for c in CONVERGED_CODES])
    ok &= stat >= -(_LL_ATOL + _LL_RTOL * np.abs(ll_full))
    mu_reduced = fitted_mean(reduced, np.arange(features.size))
    floor = _floor_of(
        values, res, features, l_free, _columns(weights, features), ql_dispersion, mu_reduced
    )
    return np.where(ok, np.maximum(stat, 0.0), np.nan), ok, floor


def floor_applies(family: object) -> bool:
    """Whether the zero-side floor covers a family: NB, and Poisson as its ``alpha -> 0`` limit.

    Parameters
    ----------
    family : Family or str
        The fit's family (families compare equal to their names).

    Returns
    -------
    bool
        True for ``"nb"`` and ``"poisson"``.
    """
    return any(family == name for name in FLOOR_FAMILIES)


def _floor_of(
    values: Any,
    res: FitResult,
    features: NDArray[np.intp],
    l_free: Array,
    weights: Array | None,
    ql_dispersion: Array | None,
    mu_reduced: Array | None = None,
) -> Array:
    """Zero-side floor of some features from their counts and the full fit.

    ``values`` are the counts ``(n_obs, len(features))``; the null means are
    :func:`floor_null_means` of ``res`` under ``l_free theta = 0``. NB fits use
    :func:`null_dispersion`, Poisson fits the Poisson limit; 0 (no floor) for other
    families and weights other than 0 and 1.
    """
    floor = np.zeros(features.size)  # no floor
    kept = _counted(weights, values.shape)
    if not floor_applies(res.family) or kept is None:
        return floor
    dense = values.toarray() if hasattr(values, "toarray") else np.asarray(values)
    total = np.where(kept, dense, 0.0).sum(axis=0)
    # Observations of weight 0 are not counted: no mean, no read, never the zero side.
    mu_full = fitted_mean(res, features)
    mu_full = np.where(kept, mu_full, np.where(kept, mu_full, -np.inf).max(axis=0))
    mu_null = floor_null_means(res, features, l_free, kept, fallback=mu_reduced)
    mu_null = np.where(kept, mu_null, 0.0)
    alpha = None
    if res.family == "nb":
        alpha = null_dispersion(res, features, mu_null, ql_dispersion)
    floor = zero_side_floor(total, mu_full, mu_null, alpha)
    if mu_reduced is not None:
        floor[zeros_explained_by_null(mu_full, mu_reduced, kept)] = 0.0
    return floor


def _counted(weights: Array | None, shape: tuple[int, int]) -> NDArray[np.bool_] | None:
    """Observations that count for the zero-side floor, or ``None`` where it does not apply.

    Without weights every observation counts; with weights of 0 and 1 only (an offset
    changes the means, which the floor takes from the fits) those of weight 1; other
    weights change the likelihood in a way the conditional test does not cover.
    """
    if weights is None:
        return np.ones(shape, dtype=bool)
    w = weights if weights.ndim == 2 else weights[:, None]
    if not np.all((w == 0) | (w == 1)):
        return None
    return np.broadcast_to(w == 1, shape)


def null_dispersion(
    fit: FitResult,
    positions: NDArray[np.intp],
    mu_reduced: Array,
    ql_dispersion: Array | None = None,
) -> Array:
    """NB dispersion of the null model for the zero-side floor, per observation and feature.

    Parameters
    ----------
    fit : FitResult
        The full NB fit of the test (its dispersion is the one the test uses: the
        per-feature MLE, or the MAP or trended value it was refitted at).
    positions : ndarray of int
        Its features to use.
    mu_reduced : ndarray
        ``(n_obs, len(positions))`` null means of the floor at those features
        (:func:`floor_null_means`).
    ql_dispersion : ndarray, optional
        ``(len(positions),)`` moderated quasi-likelihood dispersions ``phi`` of a QL test.

    Returns
    -------
    ndarray
        ``(n_obs, len(positions))`` ``alpha`` of ``fit`` (``var = mu + alpha mu^2``).
        With ``ql_dispersion``, the NB dispersion with the QL model's variance
        ``phi (mu + alpha mu^2)`` at each null mean, ``phi alpha + (phi - 1) / mu``, for
        ``phi >= 1``: the variance the F test assumes, which makes reads clump more.
        ``phi < 1`` is taken as 1 (the floor is never made weaker than at the NB
        dispersion itself).

    Notes
    -----
    The dispersion is the full fit's, not the reduced fit's: for ``"mle"`` the reduced fit
    re-estimates it under the null, where an on/off gene (50, 80, 60 vs 0, 0, 0) gets a
    huge dispersion that explains its zeros by clumping and would let the floor remove
    its significance. The full fit's estimate is the one the test's own statistic uses.
    """
    _, eta_scale = linear_predictors(fit, positions)
    alpha = np.exp(-np.clip(eta_scale, *fit.family.scale_bounds))
    if ql_dispersion is None:
        return alpha
    phi = np.maximum(np.nan_to_num(np.asarray(ql_dispersion, dtype=np.float64), nan=1.0), 1.0)
    # Null means of about 1e-300 on the zero side overflow to inf: capped at _ALPHA_MAX.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        extra = np.where(mu_reduced > 0, (phi - 1.0) / mu_reduced, 0.0)
    return np.minimum(phi * alpha + extra, _ALPHA_MAX)


def ql_floor(
    data: Any,
    full: FitResult,
    reduced: FitResult,
    l_free: Array,
    ql_dispersion: Array | None,
    *,
    layer: str | None = None,
) -> Array:
    """Zero-side floor of a quasi-likelihood F test's p-values, per feature.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit, ``(n_obs, n_features)``.
    full, reduced : FitResult
        The full and reduced NB fits of the QL test (all features, the same order). The
        floor's null means are :func:`floor_null_means` of ``full``; ``reduced`` is not
        used by it (kept for the callers' signature).
    l_free : ndarray
        Tested rows over the free location parameters, ``L C``, shape ``(r, k)``.
    ql_dispersion : ndarray or None
        ``(n_features,)`` moderated QL dispersions ``phi`` (``None``: the NB dispersion
        alone).
    layer : str, optional
        AnnData layer of ``data``.

    Returns
    -------
    ndarray
        ``(n_features,)`` :func:`batchglm.de.zero_side.zero_side_floor` at
        :func:`floor_null_means` and the QL-inflated NB dispersion (:func:`null_dispersion`) for
        features separated in the tested direction (:func:`separated_in_direction`), 0
        (no floor) elsewhere and for weighted fits.

    Raises
    ------
    ValueError
        If ``data`` does not have the fit's shape, or names other features.
    """
    floor = np.zeros(len(full.feature_names))
    if not full.family.has_count_terms or is_weighted(full):
        return floor
    hit = np.flatnonzero(full.status_codes == Status.SEPARATED)
    if hit.size == 0:
        return floor
    values = data_of_fit(data, full, layer=layer).values[:, hit]
    total = np.asarray(values.sum(axis=0), dtype=np.float64).ravel()
    mu_null = floor_null_means(full, hit, l_free, fallback=fitted_mean(reduced, hit))
    phi = None if ql_dispersion is None else np.asarray(ql_dispersion)[hit]
    alpha = null_dispersion(full, hit, mu_null, phi)
    mu_full, mu_red = fitted_mean(full, hit), fitted_mean(reduced, hit)
    floor[hit] = zero_side_floor(total, mu_full, mu_null, alpha)
    floor[hit[zeros_explained_by_null(mu_full, mu_red)]] = 0.0
    return floor


def _columns(value: object, features: NDArray[np.intp]) -> Array | None:
    """Take a fit's weights or offset for some features (vectors as they are)."""
    if not isinstance(value, np.ndarray):
        return None
    return value if value.ndim == 1 else value[:, features]


def tested_location_rows(full: FitResult, reduced: FitResult) -> Array:
    """Rows ``L`` over the full fit's free location parameters that a reduced design drops.

    Parameters
    ----------
    full, reduced : FitResult
        Two fits, the reduced location model nested in the full one (``X_r C_r`` in the
        column space of ``X_f C_f``).

    Returns
    -------
    ndarray
        ``(r, k)`` an orthonormal basis of the directions of the full model's ``k`` free
        location parameters that the reduced model fixes: the reduced model is the full one
        under ``L theta = 0``. ``r = 0`` when the location models span the same space.

    Notes
    -----
    With ``B`` the least-squares solution of ``X_f C_f B = X_r C_r`` (exact for nested
    models), the reduced model is ``theta`` in the span of ``B``'s columns; ``L`` spans the
    orthogonal complement (from the SVD of ``B``).
    """
    xf, xr = full.loc.reduced, reduced.loc.reduced
    b = np.linalg.lstsq(xf, xr, rcond=None)[0]
    u, s, _ = np.linalg.svd(b, full_matrices=True)
    rank = int((s > 1e-10 * max(s.max(initial=0.0), 1e-300)).sum())
    return np.ascontiguousarray(u[:, rank:].T)


def lrt_floor(
    data: Any,
    full: FitResult,
    reduced: FitResult,
    *,
    layer: str | None = None,
    ql_dispersion: Array | None = None,
) -> Array:
    """Zero-side floor of a likelihood-ratio (or QL F) test of two nested fits, per feature.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame, AnnData, Data or None
        The counts of the fits, ``(n_obs, n_features)``; ``None`` warns (see below).
    full, reduced : FitResult
        The full and reduced fits of the test (all features, the same order; the reduced
        location model nested in the full one).
    layer : str, optional
        AnnData layer of ``data``.
    ql_dispersion : ndarray, optional
        ``(n_features,)`` moderated QL dispersions ``phi`` of a QL F test: the floor is then
        at the QL-inflated NB dispersion (:func:`null_dispersion`).

    Returns
    -------
    ndarray
        ``(n_features,)`` :func:`batchglm.de.zero_side.zero_side_floor` at
        :func:`floor_null_means` (the full fit projected onto the reduced model) for
        features separated in the tested direction
        (:func:`separated_in_direction` with the rows of :func:`tested_location_rows`):
        at the full fit's NB dispersion for NB fits, the Poisson limit (the exact binomial
        test of the split) for Poisson fits. 0 (no floor) elsewhere, for other families,
        fits with random effects (tested at the donor level), weights other than 0 and 1,
        tests of the scale model alone, and without ``data``.

    Raises
    ------
    ValueError
        If ``data`` does not have the fit's shape, or names other features.

    Warns
    -----
    UserWarning
        Without ``data`` while some feature is separated in the tested direction: its
        p-value then keeps the asymptotic reference, which a handful of reads beat.
    """
    floor = np.zeros(len(full.feature_names))
    if not floor_applies(full.family) or full.random is not None:
        return floor
    l_free = tested_location_rows(full, reduced)
    if l_free.shape[0] == 0:
        return floor
    hit = np.flatnonzero(full.status_codes == Status.SEPARATED)
    if hit.size == 0:
        return floor
    if data is None:
        hit = np.flatnonzero(boundary_tested(full, l_free))
    if hit.size == 0:
        return floor
    if data is None:
        shown = ", ".join(str(n) for n in full.feature_names[hit[:5]])
        warnings.warn(
            f"{hit.size} feature(s) ({shown}{' ...' if hit.size > 5 else ''}) are separated "
            "in the tested direction (a group with only zeros), but the fit has no data, so "
            "their p-values get no zero-side floor and a handful of reads can look "
            "significant; pass the counts as `data=` to bg.de.lrt.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        return floor
    d = data_of_fit(data, full, layer=layer)
    # Chunks of features keep the dense (observations x chunk) means and counts bounded.
    step = max(1, _FLOOR_CHUNK_ELEMENTS // max(len(full.obs_names), 1))
    for start in range(0, hit.size, step):
        part = hit[start : start + step]
        values = np.asarray(d.values[:, part]) if d.kind == "dask" else d.values[:, part]
        phi = None if ql_dispersion is None else np.asarray(ql_dispersion)[part]
        weights = _columns(full.settings.get("weights"), part)
        mu_reduced = fitted_mean(reduced, part)
        floor[part] = _floor_of(values, full, part, l_free, weights, phi, mu_reduced)
    return floor
