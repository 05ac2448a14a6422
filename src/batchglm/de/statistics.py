"""The statistics the tests share: Wald rows and the likelihood ratio of nested fits.

:func:`wald_rows` is the Wald test of rows of a linear combination of one model part's
coefficients (``bg.de.wald`` and the QL F test's effect sizes); :func:`likelihood_ratio`
compares two nested fits (``bg.de.lrt`` and the numerator of ``bg.de.ql_f``). The
user-facing tests in :mod:`batchglm.de.wald`, :mod:`batchglm.de.lrt` and
:mod:`batchglm.de.ql` parse their inputs and call these.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.de.degrees_of_freedom import check_residual_df
from batchglm.de.mixed_separation import donor_level_fallback
from batchglm.de.pseudoreplication import warn_lrt
from batchglm.de.result import DEResult, base_mean
from batchglm.de.scale_test import cox_reid_statistic, has_scale, nested_df
from batchglm.de.separation import scale_free_at_zeros
from batchglm.de.zero_fitted_df import supremum_loglik
from batchglm.design import Design
from batchglm.mixed.small_sample import lrt_reference_sf, reference_sf
from batchglm.nested_designs import outside_columns
from batchglm.result import FitResult
from batchglm.solvers.status import Status

__all__ = [
    "LL_ATOL",
    "LL_RTOL",
    "RANK_RTOL",
    "SAME_SPACE",
    "likelihood_ratio",
    "no_information_at_zeros",
    "quadratic_form",
    "wald_rows",
]

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]

#: Singular values of ``L C`` below this fraction of the largest count as zero (rank of the
#: tested combination).
RANK_RTOL = 1e-10

#: ``2 (ll_full - ll_reduced)`` down to ``-(LL_ATOL + LL_RTOL |ll|)`` counts as 0: fits
#: that stop on the scale bound (under-dispersion) sit a little below the flat optimum, and
#: a statistic of 5e-3 has p = 0.94 anyway. Below that the full fit missed its optimum and
#: the feature is not tested.
LL_ATOL = 5e-3
LL_RTOL = 1e-9

SAME_SPACE = (
    "the reduced model spans the same column spaces as the full model (0 degrees of "
    "freedom), so there is nothing to test; drop columns from the reduced model."
)


def wald_rows(
    res: FitResult, design: Design, start: int, lmat: Array, labels: list[str], model: str
) -> DEResult:
    """Wald test of the rows ``L`` of a linear combination of one model part's coefficients.

    The rows are reduced to a basis of the row space of ``L C`` (``C`` the constraint
    matrix; singular values below :data:`RANK_RTOL` of the largest are dropped), whose
    estimates carry the same information as ``L theta`` and have a non-singular covariance
    where the free covariance is. The statistic ``e^T V^-1 e`` is referred to a chi-squared
    distribution with ``rank`` degrees of freedom, or the small-sample reference of a mixed
    fit (Wald 1943; as DESeq2's ``nbinomWaldTest`` for one row, statsmodels'
    ``wald_test`` for several).

    Parameters
    ----------
    res : FitResult
        The fit, ``n_features`` features.
    design : Design
        The tested model part (``res.loc`` or ``res.scale``).
    start : int
        Position of that part's first free coefficient in ``res.theta_free``.
    lmat : ndarray
        ``(n_rows, n_coef)`` rows of the combination, in the part's full coefficients.
    labels : list of str
        One label per row (the result's ``estimates`` columns).
    model : str
        ``"loc"`` or ``"scale"``.

    Returns
    -------
    DEResult
        ``test="wald"``, ``df`` the rank; ``coef_mle``/``coef_se`` (natural log scale) for a
        single row, NaN otherwise.

    Raises
    ------
    ValueError
        When the rows are identically zero under the constraints.
    """
    c = design.constraints
    sl = slice(start, start + design.n_free)
    l_free = lmat @ c
    u, s, _ = np.linalg.svd(l_free, full_matrices=False)
    keep = s > RANK_RTOL * max(s.max(initial=0.0), 1e-300)
    rank = int(keep.sum())
    if rank == 0 or s.max(initial=0.0) < 1e-12:
        raise ValueError(
            f"the tested combination(s) {labels} are identically zero under the "
            f"constraints of the {model} model, so there is nothing to test; test a "
            "combination that the constraints leave free."
        )
    # A basis of the row space of L C: its estimates carry the same information as L theta
    # and have a non-singular covariance when the free covariance is.
    basis = u[:, keep].T @ l_free
    theta = res.theta_free[:, sl]
    cov = res.cov_free[:, sl, sl]
    est = theta @ basis.T
    v = np.einsum("ij,fjk,lk->fil", basis, cov, basis, optimize=True)
    stat = quadratic_form(est, v)

    converged = res.converged.to_numpy()
    with np.errstate(invalid="ignore"):
        pval = reference_sf(res, model, lmat, rank)(stat)
    pval = np.where(converged & np.isfinite(stat), pval, np.nan)

    full_est = (theta @ c.T) @ lmat.T
    if lmat.shape[0] == 1:
        coef_mle = full_est[:, 0]
        var = np.einsum("j,fjk,k->f", l_free[0], cov, l_free[0])
        with np.errstate(invalid="ignore"):
            coef_se = np.sqrt(np.where(var >= 0, var, np.nan))
    else:
        coef_mle = np.full(len(res.feature_names), np.nan)
        coef_se = coef_mle.copy()
    return DEResult(
        test="wald",
        model=model,
        tested=", ".join(labels),
        df=rank,
        feature_names=res.feature_names,
        pval=pval,
        stat=stat,
        coef_mle=coef_mle,
        coef_se=coef_se,
        effect_model=model if lmat.shape[0] == 1 else None,
        mean=base_mean(res),
        loglik=res.loglik.to_numpy(),
        converged=converged,
        estimates=pd.DataFrame(full_est, index=res.feature_names, columns=labels),
        fit=res,
    )


def quadratic_form(est: Array, v: Array) -> Array:
    """``e^T V^-1 e`` per feature; NaN where ``V`` is not finite or not invertible.

    Parameters
    ----------
    est : ndarray
        ``(n_features, r)`` estimates.
    v : ndarray
        ``(n_features, r, r)`` their covariances.

    Returns
    -------
    ndarray
        ``(n_features,)`` statistics; NaN where ``V`` is singular or the form is negative.
    """
    n_feat, r = est.shape
    out = np.full(n_feat, np.nan)
    ok = np.all(np.isfinite(v), axis=(1, 2)) & np.all(np.isfinite(est), axis=1)
    if r == 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = est[:, 0] ** 2 / v[:, 0, 0]
        good = ok & (v[:, 0, 0] > 0)
        out[good] = vals[good]
        return out
    idx = np.flatnonzero(ok)
    try:
        sol = np.linalg.solve(v[idx], est[idx][:, :, None])[:, :, 0]
        out[idx] = np.einsum("fi,fi->f", est[idx], sol)
    except np.linalg.LinAlgError:
        # One singular block fails the batch; redo feature by feature to isolate it.
        for f in idx:
            try:
                out[f] = float(est[f] @ np.linalg.solve(v[f], est[f]))
            except np.linalg.LinAlgError:
                out[f] = np.nan
    out[out < 0] = np.nan
    return out


def likelihood_ratio(
    full: FitResult,
    reduced: FitResult,
    coef: str | None,
    cox_reid: tuple[Any, Any] | None = None,
) -> DEResult:
    """Likelihood ratio test of two nested fits (Wilks 1938; DESeq2's ``nbinomLRT``).

    ``2 (ll_full - ll_reduced)`` is referred to a chi-squared distribution with the
    difference in free parameters (location plus scale) as degrees of freedom, or the
    small-sample reference of a mixed fit. Statistics down to ``-(LL_ATOL + LL_RTOL |ll|)``
    count as 0; below that the full fit missed its optimum and the feature gets NaN.

    Parameters
    ----------
    full, reduced : FitResult
        Fits of the same data, ``reduced`` nested in ``full``.
    coef : str, optional
        Full-model coefficient reported as the effect (``coef_mle``, ``coef_se``, natural
        log scale); by default the one column the reduced model lacks, if there is one.
    cox_reid : tuple, optional
        ``(data, layer)``: use the Cox-Reid adjusted profile likelihood ratio of a scale
        test instead (:func:`batchglm.de.scale_test.cox_reid_statistic`).

    Returns
    -------
    DEResult
        ``test="lrt"``; ``model`` says which parts differ.

    Raises
    ------
    ValueError
        When the fits have no residual degrees of freedom, the reduced model spans the same
        space as the full one, or ``coef`` is not a full-model coefficient.

    Warns
    -----
    UserWarning
        For separated features whose all-zero group has its own scale parameter (NaN).
    """
    check_residual_df(full, "bg.de.lrt")
    df_loc, df_scale = nested_df(full, reduced)
    df = df_loc + df_scale
    if df <= 0:
        raise ValueError(SAME_SPACE)
    warn_lrt(full, reduced)
    # Separated fits with no residual df left are at their supremum in closed form (a
    # sparse one can stop at max_iter below it, even below the reduced fit).
    ll_full = supremum_loglik(full)
    ll_red = supremum_loglik(reduced)
    stat = 2.0 * (ll_full - ll_red)
    converged = full.converged.to_numpy() & reduced.converged.to_numpy()
    slack = LL_ATOL + LL_RTOL * np.abs(ll_full)
    missed = converged & (stat < -slack)
    if missed.any():
        logger.warning(
            "%d feature(s) have a full-model log-likelihood below the reduced model's; "
            "their full fit missed its optimum and they get NaN p-values (try a larger "
            "`max_iter`).",
            int(missed.sum()),
        )
    stat = np.where(stat < 0, 0.0, stat)
    stat = np.where(missed, np.nan, stat)
    tested_note = ""
    if cox_reid is not None:
        cr_stat, _, cr_ok = cox_reid_statistic(full, reduced, *cox_reid)
        converged &= cr_ok
        stat = np.where(missed, np.nan, np.maximum(cr_stat, 0.0))
        tested_note = " (Cox-Reid adjusted profile likelihood ratio)"
    sf = lrt_reference_sf(full, reduced, df_loc, df_scale)
    pval = np.where(converged & ~missed, sf(np.nan_to_num(stat)), np.nan)
    if df_loc > 0:
        pval = no_information_at_zeros(full, pval)

    model = "loc" if df_scale == 0 else "scale" if df_loc == 0 else "loc+scale"
    effect = _lrt_effect(full, reduced, coef, df_loc, df_scale)
    n_feat = len(full.feature_names)
    if effect is None:
        coef_mle = np.full(n_feat, np.nan)
        coef_se = coef_mle.copy()
        effect_model = None
        estimates = pd.DataFrame(index=full.feature_names)
    else:
        effect_model, name = effect
        coefs = full.coef_loc if effect_model == "loc" else full.coef_scale
        ses = full.se_loc if effect_model == "loc" else full.se_scale
        coef_mle = coefs[name].to_numpy()
        coef_se = ses[name].to_numpy()
        estimates = coefs[[name]]
    tested = f"full {_describe_models(full)} vs reduced {_describe_models(reduced)}{tested_note}"
    de = DEResult(
        test="lrt",
        model=model,
        tested=tested,
        df=df,
        feature_names=full.feature_names,
        pval=pval,
        stat=stat,
        coef_mle=coef_mle,
        coef_se=coef_se,
        effect_model=effect_model,
        mean=base_mean(full),
        loglik=ll_full,
        converged=converged,
        estimates=estimates,
        fit=full,
        reduced=reduced,
        loglik_reduced=ll_red,
    )
    # Mixed fits: separated features are tested at the donor level (de/mixed_separation.py).
    return donor_level_fallback(de, None, None)


def _describe_models(res: FitResult) -> str:
    text = f"loc {list(res.loc.names)}"
    if has_scale(res):
        text += f", scale {list(res.scale.names)}"
    return text


def _lrt_effect(
    full: FitResult, reduced: FitResult, coef: str | None, df_loc: int, df_scale: int
) -> tuple[str, str] | None:
    if coef is not None:
        # A name in both models means the one under test; location when both are.
        order = ("scale", "loc") if df_loc == 0 else ("loc", "scale")
        for which in order:
            if which == "loc" and coef in full.loc.names:
                return "loc", coef
            if which == "scale" and has_scale(full) and coef in full.scale.names:
                return "scale", coef
        raise ValueError(
            f"`coef` {coef!r} is not a coefficient of the full model; its location "
            f"coefficients are {full.loc.names}"
            + (f" and its scale coefficients {full.scale.names}." if has_scale(full) else ".")
        )
    # The default effect is the one full-design column the reduced design lacks, found by
    # values so that it does not depend on column names.
    for which, df_part in (("loc", df_loc), ("scale", df_scale)):
        if df_part != 1 or df_loc + df_scale != 1:
            continue
        fd = full.loc if which == "loc" else full.scale
        rd = reduced.loc if which == "loc" else reduced.scale
        if fd.n_free != len(fd.names):
            return None
        extra = outside_columns(rd.reduced, fd.matrix)
        if len(extra) == 1:
            return which, fd.names[extra[0]]
    return None


def no_information_at_zeros(full: FitResult, pval: Array) -> Array:
    """Set NaN for separated features whose all-zero group has its own scale parameter.

    See :func:`batchglm.de.separation.scale_free_at_zeros`: the zeros are then explained by
    that dispersion alone and a location test has no information (its p-value would be ~1).

    Parameters
    ----------
    full : FitResult
        The full fit.
    pval : ndarray
        ``(n_features,)`` p-values.

    Returns
    -------
    ndarray
        A copy with NaN for those features.

    Warns
    -----
    UserWarning
        Naming up to five such features.
    """
    sep = np.flatnonzero(full.status_codes == Status.SEPARATED)
    free = sep[scale_free_at_zeros(full, sep)]
    if free.size == 0:
        return pval
    shown = ", ".join(str(n) for n in full.feature_names[free[:5]])
    warnings.warn(
        f"{free.size} separated feature(s) ({shown}{' ...' if free.size > 5 else ''}) have a "
        "scale (dispersion) parameter that only their all-zero observations inform, so the "
        "data hold no information on the tested location effect; they get NaN p-values. "
        "Test them with a scale model that does not separate the all-zero group (e.g. "
        "design_scale='~ 1').",
        UserWarning,
        stacklevel=4,
    )
    out = pval.copy()
    out[free] = np.nan
    return out
