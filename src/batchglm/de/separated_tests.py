"""Tests of separated features: their likelihood-ratio statistic and p-value floor.

:func:`lrt_statistic` refits the features that :func:`batchglm.de.separation.separated_in_direction`
finds under ``L theta = 0`` (the Wald statistic collapses there, the likelihood ratio does
not). :func:`lrt_floor`, :func:`ql_floor` and the Wald path's floor bound their p-values
below by the exact conditional test of the zero side (:mod:`batchglm.de.zero_side`), at
null means projected from the full fit (:func:`floor_null_means`) and the test's own NB
dispersion (:func:`null_dispersion`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.de.separation import boundary_tested, separated_in_direction
from batchglm.de.zero_fitted_df import supremum_loglik
from batchglm.de.zero_side import zero_side, zero_side_floor
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


def zeros_explained_by_null(
    mu_full: Array, mu_reduced: Array, kept: NDArray[np.bool_] | None = None
) -> NDArray[np.bool_]:
    """Features whose reduced fit also puts every zero-side observation at zero.

    Parameters
    ----------
    mu_full, mu_reduced : ndarray
        ``(n_obs, F)`` means of the full and the reduced fit.
    kept : ndarray of bool, optional
        ``(n_obs, F)`` observations that count (weight 1); ``None``: all.

    Returns
    -------
    ndarray of bool
        ``(F,)``: True where each observation on the full fit's zero side
        (:func:`batchglm.de.zero_side.zero_side`) is on the reduced fit's zero side too.
        Nuisance effects then explain the zeros under the null as well: they carry no
        evidence on the tested effect, the likelihood ratio rests on the other
        observations, and no floor applies.
    """
    counted = np.ones(mu_full.shape, dtype=bool) if kept is None else np.asarray(kept, bool)
    z_full = zero_side(np.where(counted, mu_full, 0.0)) & counted
    z_red = zero_side(np.where(counted, mu_reduced, 0.0)) & counted
    return np.asarray(np.all(~z_full | z_red, axis=0))


def floor_null_means(
    res: FitResult,
    features: NDArray[np.intp],
    l_free: Array,
    kept: NDArray[np.bool_] | None = None,
    fallback: Array | None = None,
) -> Array:
    """Null means of the zero-side floor: the full fit projected onto ``L theta = 0``.

    Parameters
    ----------
    res : FitResult
        The full (separated) fit of the test, NB or Poisson.
    features : ndarray of int
        Positions of its features to use.
    l_free : ndarray
        Tested rows over the free location parameters, ``L C``, shape ``(r, k)``.
    kept : ndarray of bool, optional
        ``(n_obs, len(features))`` observations that count (weight 1); others get no
        weight in the projection. ``None``: all.
    fallback : ndarray, optional
        ``(n_obs, len(features))`` means used instead (the reduced fit's) for features whose
        null parameters the other side cannot estimate with a residual degree of freedom
        left, or whose projected means are not finite (see Notes).

    Returns
    -------
    ndarray
        ``(n_obs, len(features))`` means ``g^-1(x theta_0 + offset)`` (size factors and the
        fit's offset included), with ``theta_0`` the point of ``{theta : L theta = 0}``
        closest to the full fit's ``theta`` in the full fit's Fisher information metric:
        the weighted least-squares fit of the full fit's linear predictor by the null
        design, weights ``mu / (1 + alpha mu)`` (NB; ``mu`` for Poisson).

    Notes
    -----
    A separated fit's coefficients run to infinity along a direction that only the zero
    side informs, but its linear predictor on the other observations is finite, and so are
    its covariate (nuisance) effects, which the zero side does not pull: there the fitted
    means are about 0 and carry no weight. The projection keeps those effects and puts the
    zero side at the mean the null model gives it (for ``~ covariates + condition`` with
    one condition all zero: the other condition's level at each zero-side sample's
    covariates). The reduced maximum-likelihood fit instead bends the nuisance effects
    towards the zeros, which makes them look plausible and the floor conservative
    (``docs/validation.md``, "Separated genes"). Weights are floored at ``1e-8`` times a
    feature's largest, so that null parameters which only zero-side observations inform
    (a second all-zero group) follow the full fit there (means about 0) instead of being
    left undetermined; elsewhere that floor moves ``theta_0`` by about ``1e-7``.
    Memory: ``(features x observations x null parameters)`` per chunk of features.

    The premise fails when the other side has no residual degree of freedom for the null
    parameters (4 expressed samples and ``~ batch + RIN + age`` besides the condition: the
    nuisance effects interpolate those 4 samples exactly, and extrapolated to the zero side
    they gave null means from 1e-11 to 1e18, and NaN p-values for clear on/off genes). Such
    features take ``fallback`` (the reduced fit's means, the conservative choice). So do
    features whose other side the full model interpolates exactly (no residual df after the
    full model's parameters, :mod:`batchglm.de.zero_fitted_df`): their nuisance effects were
    bent to fit those observations and the zeros, not estimated from a residual (a null gene
    ``1 1 15 26 / 0 10 0 0`` under ``~ batch + RIN + age + condition`` got null means that
    put its floor at 1.7e-5 instead of 0.047; ``docs/validation.md``, "Covariate-separated
    genes").
    """
    k = res.loc.n_free
    _, s, vt = np.linalg.svd(l_free, full_matrices=True)
    rank = int((s > 1e-10 * max(s.max(initial=0.0), 1e-300)).sum())
    xc = res.loc.reduced  # (n, k)
    x_null = xc @ vt[rank:].T  # (n, p): the null model's free directions
    eta, eta_scale = linear_predictors(res, features)
    mu = res.family.fitted_mean(eta)
    if res.family == "nb":
        alpha = np.exp(-np.clip(eta_scale, *res.family.scale_bounds))
        w = mu / (1.0 + alpha * mu)
    else:
        w = mu.copy()
    counted = np.ones(w.shape, dtype=bool) if kept is None else np.asarray(kept, dtype=bool)
    w = np.where(counted, w, 0.0)
    w = np.where(counted, np.maximum(w, 1e-8 * w.max(axis=0, keepdims=True)), 0.0)
    target = xc @ res.theta_free[features, :k].T  # (n, F): predictor without offsets
    if x_null.shape[1] == 0:
        # The null fixes every location parameter at 0.
        return np.asarray(res.family.fitted_mean(eta - target))
    out = np.empty_like(mu)
    # Other side: counted observations the full fit does not drive to 0.
    other = counted & ~zero_side(np.where(counted, mu, 0.0))
    usable = np.ones(features.size, dtype=bool)
    step = max(1, _FLOOR_CHUNK_ELEMENTS // (x_null.shape[1] * max(xc.shape[0], 1)))
    for start in range(0, features.size, step):
        part = slice(start, start + step)
        sw = np.sqrt(w[:, part]).T  # (f, n)
        a = sw[:, :, None] * x_null[None]  # (f, n, p)
        q, r_mat = np.linalg.qr(a)
        rhs = np.einsum("fnp,fn->fp", q, sw * target[:, part].T)
        g = np.einsum("fpq,fq->fp", np.linalg.pinv(r_mat, rcond=1e-10), rhs)
        shift = x_null @ g.T - target[:, part]  # (n, f): theta_0 - theta on the predictor
        out[:, part] = res.family.fitted_mean(eta[:, part] + shift)
        if fallback is not None:
            # A residual df left on the other side after the null's parameters, and after
            # the full model's (see Notes).
            n_other = other[:, part].sum(axis=0)
            rank = np.linalg.matrix_rank(other[:, part].T[:, :, None] * x_null[None])
            rank_full = np.linalg.matrix_rank(other[:, part].T[:, :, None] * xc[None])
            usable[part] = (n_other - rank >= 1) & (n_other - rank_full >= 1)
    if fallback is not None:
        # The projection's premise (the zero side informs the tested direction only) holds
        # where the separation is in the tested direction.
        usable &= separated_in_direction(res, l_free)[features]
        usable &= np.all(np.isfinite(out), axis=0)
        out = np.where(usable[None, :], out, fallback)
    return out


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
