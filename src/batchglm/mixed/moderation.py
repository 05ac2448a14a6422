"""Empirical-Bayes moderation of the group-level variance of mixed-model tests.

With few groups (4 vs 4 donors) every feature estimates the variance that its group-level
contrasts (a condition that donors are nested in) are tested against from ``d = G - p_b``
degrees of freedom alone (:mod:`batchglm.mixed.small_sample`). As limma's moderated t
(Smyth 2004, *Stat. Appl. Genet. Mol. Biol.* 3:3), edgeR's quasi-likelihood F test (Lund et
al. 2012, *Stat. Appl. Genet. Mol. Biol.* 11:5) and dream (Hoffman and Roussos 2021,
*Bioinformatics* 37:192) do for their variances, this module borrows strength across
features:

* **Per-feature variance.** ``s_f^2`` is the group-level ("total") variance of feature
  ``f``: the between-group variance plus the average sampling variance of a group's level,
  on the natural-log scale of the mean. For features with an interior fit it is read off
  the maximum-likelihood covariance ``V`` of the location coefficients,
  ``s_f^2 = tr(Xbar^T Xbar V) / p_b * G / d`` (``Xbar`` the ``(G, p)`` group means of the
  location design, whose group-level columns are the ``(G, p_b)`` group-level design ``X_b``;
  cell-level covariates enter at their group means, so that ``s_f^2`` does not depend on
  their origin or scale; without them this is ``tr(X_b^T X_b V_b)``);
  in the balanced one-way linear mixed model this is the residual mean square of the group
  means, distributed as ``tau_f^2 chi2_d / d``. For features whose between-group variance
  is estimated at 0 it is the residual mean square of the unweighted regression of the
  groups' log levels on ``X_b`` (:func:`batchglm.mixed.small_sample.donor_level_sf`), which
  is not truncated at the sampling variance.
* **Prior.** ``1 / tau_f^2 ~ chi2_{d0} / (d0 s0^2(A_f))`` with ``A_f`` the feature's mean
  log expression: the average over groups of each group's mean fixed-effect linear
  predictor (natural log, without size factors; :func:`trend_covariate`). It is the same
  for every parametrisation of the fixed design (a covariate shifted, centred or rescaled),
  so the prior and the p-values are too.
  ``s0^2`` and ``d0`` are estimated, from the features of :func:`prior_features` (not
  separated ones nor those on both variance bounds), by limma's method of moments on ``log s_f^2``
  (``fitFDist``): the trend of ``log s_f^2 - digamma(d/2) + log(d/2)`` on ``A_f`` is a natural
  cubic spline with 4 degrees of freedom fitted by least squares (a constant with fewer
  than 40 features), and the residual variance in excess of ``trigamma(d/2)`` is
  ``trigamma(d0/2)``; no excess gives ``d0 = inf``. Since the robust prior
  (:mod:`batchglm.mixed.robust_prior`) clear outliers are left out and the moments are
  winsorised (limma's ``robust=TRUE``); :func:`batchglm.mixed.f_prior.fit_f_prior`
  remains the plain estimator.
* **Nonparametric prior (the default).** The distribution of ``rho_f = tau_f^2 /
  s0^2(A_f)`` is estimated without a shape (NPMLE, :mod:`batchglm.mixed.variance_npmle`)
  and each feature is tested against the mixture over its posterior ``rho_f | s_f^2``
  (Ignatiadis and Sen 2025, *Ann. Statist.* 53:1). It needs at least ``MIN_NPMLE`` usable
  features; with fewer, or with ``moderate="limma"``, the scaled F prior below is used.
* **Posterior and test (limma's prior).** ``s~_f^2 = (d0 s0^2 + d s_f^2) / (d0 + d)``; the
  Wald variance of every group-level combination is rescaled by ``s~_f^2 / s_f^2`` (for
  interior features) and the statistic referred to ``F(rank, d + d0)`` (two-sided ``t(d +
  d0)`` for one coefficient). Features at 0 are tested at the level of the groups. With
  unequal groups (sizes differing by more than a factor of 2) by weighted least squares,
  each group weighted by ``1 / (tau_f^2 + v_g)`` with its own sampling variance ``v_g`` and
  ``tau_f^2 = max(s~_f^2 - mean_g v_g, 0)``, at the posterior ``s~_f^2``
  (:mod:`batchglm.mixed.weighted_group_test`); with near-balanced groups (or without a
  prior) by the unweighted
  regression with ``max(s~_f^2, s0^2)`` as residual variance (``s0^2``, the prior of the
  group-level variance, already holds the groups' average sampling variance).

With further random-effect factors that contain the groups (donors nested in batches),
``d`` is the containment df ``G - rank([X_b, Z])`` of
:attr:`batchglm.mixed.small_sample.SmallSample.df_groups`, and ``s_f^2`` is the residual
mean square of the unweighted regression of the groups' log levels on ``[X_b, Z]``
(:func:`stratum_s2`), distributed as ``tau_f^2 chi2_d / d`` whatever the containing
factors' variances; the covariance-implied variance (``Xbar`` replaced by ``(I - P_Z)
Xbar``, ``p_b`` by its rank, ``G`` by ``G - rank(Z)``) only scales the statistic, which is
referred to the posterior as ``F s_wald^2 / s~_f^2``. The prior, its df and the NPMLE
posterior use that ``s_f^2`` and ``d``.

Only tests of group-level location coefficients are moderated; ``res.se_loc`` stays the
maximum-likelihood standard error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from batchglm.families.tails import chi2_sf, f_sf
from batchglm.mixed.f_prior import MIN_FEATURES, trend_basis
from batchglm.mixed.prior_features import prior_features
from batchglm.mixed.robust_prior import prior_outliers, winsorised_f_prior
from batchglm.mixed.variance_npmle import mixture_sf, npmle_posterior
from batchglm.mixed.weighted_group_test import weighted_group_statistic

if TYPE_CHECKING:
    from batchglm.mixed.small_sample import SmallSample
    from batchglm.result import FitResult

Array = NDArray[np.float64]

logger = logging.getLogger("batchglm")

#: Fewest usable features for the nonparametric (NPMLE) prior; below, limma's scaled F.
MIN_NPMLE = 100
#: Moderation methods: ``"npmle"`` (default) and ``"limma"`` (scaled F prior).
METHODS = ("npmle", "limma")


@dataclass(frozen=True)
class VariancePrior:
    """Group-level variances of a mixed fit, their prior and posterior.

    Attributes
    ----------
    s2 : ndarray
        ``(F,)`` each feature's group-level variance ``s_f^2`` (natural-log scale, squared;
        NaN where not estimable).
    df : float
        Its degrees of freedom ``d = G - p_b``.
    s2_prior : ndarray
        ``(F,)`` prior scale ``s0^2`` at each feature's mean log expression.
    df_prior : float
        Prior degrees of freedom ``d0`` (``inf`` when the variances vary no more than
        sampling explains; 0 without moderation).
    s2_post : ndarray
        ``(F,)`` posterior variance ``(d0 s0^2 + d s_f^2) / (d0 + d)``.
    log_mean : ndarray
        ``(F,)`` the trend covariate ``A_f`` (natural log).
    used : ndarray of bool or None
        ``(F,)`` the features the prior was estimated from (:func:`prior_features`, less
        the outliers of :func:`batchglm.mixed.robust_prior.prior_outliers`).
    outlier : ndarray of bool or None
        ``(F,)`` features whose variance is an upper-tail outlier of the prior: their
        posterior is their own ``s_f^2`` and they are tested with ``d`` df, unmoderated.
    s2_wald : ndarray or None
        ``(F,)`` the group-level variance implied by the fit's covariance, which the Wald
        and LR statistics are scaled by; ``None`` when it is ``s2`` (one factor). With
        containing factors ``s2`` is the within-stratum residual mean square instead
        (:func:`stratum_s2`) and the test is ``F s2_wald / s~_f^2``.
    """

    s2: Array
    df: float
    s2_prior: Array
    df_prior: float
    s2_post: Array
    log_mean: Array
    used: NDArray[np.bool_] | None = None
    outlier: NDArray[np.bool_] | None = None
    s2_wald: Array | None = None


def _group_level(ss: SmallSample) -> tuple[Array, int, NDArray[np.bool_]]:
    """Group-level design ``(G, p_b)``, ``d`` and the group-level columns."""
    assert ss.group_design is not None
    cols = ss.between
    return ss.group_design[:, cols], ss.df_groups, cols


def _donor_level(ss: SmallSample, coef: Array) -> tuple[NDArray[np.bool_], Array, Array]:
    """Unweighted regression of group log levels for features at 0: (rows, beta, rss / d)."""
    xb, d, cols = _group_level(ss)
    n_feat = coef.shape[0]
    if ss.donor_resid is None:
        return np.zeros(n_feat, dtype=bool), np.zeros((xb.shape[1], 0)), np.zeros(0)
    rows = np.all(np.isfinite(ss.donor_resid), axis=0)
    z = xb @ coef[rows][:, cols].T + ss.donor_resid[:, rows]
    design, _ = ss.group_regression(np.zeros((0, coef.shape[1])))
    beta = np.linalg.pinv(design) @ z
    return rows, beta, ((z - design @ beta) ** 2).sum(axis=0) / d


def stratum_s2(ss: SmallSample, coef: Array) -> Array | None:
    """Within-stratum group-level variance of every feature of a nested fit.

    Parameters
    ----------
    ss : SmallSample
        The fit's group-level bookkeeping, with containing factors (``nested``) and the
        group log levels of all features (``stratum_resid``).
    coef : ndarray
        ``(F, p)`` fixed location coefficients (natural log).

    Returns
    -------
    ndarray or None
        ``(F,)`` ``s_f^2 = RSS_f / d``: the residual sum of squares of the unweighted
        regression of the groups' log levels ``z_g = xbar_g^T beta_f + log((sum_g y + 1/2)
        / (sum_g mu + 1/2))`` on ``[X_b, Z]`` (group-level design and the containing
        factors' indicators), divided by the containment df ``d = G - rank([X_b, Z])``
        (natural-log scale, squared; NaN for features not fitted). ``None`` without
        containing factors or group log levels.

    Notes
    -----
    With donors nested in batches the condition is compared within batches, and ``RSS_f /
    d`` of the within-batch contrasts is distributed as ``sigma_f^2 chi2_d / d`` (equal
    sampling variances) whatever the batch variance. The variance read off a mixed fit's
    covariance is not: where the batch variance is estimated at 0 the fit pools the batch
    stratum (about ``G - p_b`` df, smaller by selection), and where it is positive the
    estimate is selected for a small within-batch spread; over the null genes of
    ``benchmarks/mixed_power_seeds.py nested`` the log ratio to the true variance had
    variance 0.31-0.54 against ``trigamma(d / 2) = 0.93``, which the prior read as no
    spread between genes (``d0 = inf``). The error-stratum estimate is the classical
    analysis of nested designs (the "summary statistics" approach; SAS PROC MIXED's
    containment df). Our own formulation; docs/mixed_model.md, "Nested designs: the
    within-stratum variance".
    """
    if ss.nested is None or ss.stratum_resid is None or ss.group_design is None:
        return None
    cols = ss.between
    design, _ = ss.group_regression(np.zeros((0, coef.shape[1])))
    z = ss.group_design[:, cols] @ coef[:, cols].T + ss.stratum_resid
    beta = np.linalg.pinv(design) @ np.nan_to_num(z)
    rss = ((z - design @ beta) ** 2).sum(axis=0)
    return np.asarray(rss / ss.df_groups, dtype=np.float64)


def trend_covariate(ss: SmallSample, coef: Array) -> Array:
    """Mean log expression ``A_f`` of each feature, the covariate of the prior's trend.

    Parameters
    ----------
    ss : SmallSample
        The fit's group-level bookkeeping (``group_design`` set: the ``(G, p)`` group means of
        the full location design).
    coef : ndarray
        ``(F, p)`` fixed location coefficients (natural log).

    Returns
    -------
    ndarray
        ``(F,)`` ``A_f = mean_g xbar_g^T beta_f``: the average over groups of each group's
        mean fixed-effect linear predictor (natural log, size factors left out), i.e. the
        feature's log expression at the groups' average covariates.

    Notes
    -----
    ``xbar_g^T beta_f`` is the group mean of the fitted linear predictor ``X beta_f``, which
    is the same for every parametrisation of the design with the same column space: a
    cell-level covariate that is shifted (centred), rescaled or recoded gives the same
    ``A_f`` and therefore the same prior and p-values. Reading the group-level columns alone
    (the intercept and a condition) instead would put ``A_f`` at covariate value 0, an
    extrapolation that moves with the covariate's origin. As limma's ``Amean`` and edgeR's
    ``AveLogCPM`` (Smyth 2004; Lund et al. 2012), the trend is in an average of the fitted
    expression; our own formulation for mixed fits.
    """
    assert ss.group_design is not None
    return np.asarray((ss.group_design @ coef.T).mean(axis=0), dtype=np.float64)


def variance_prior(res: FitResult) -> VariancePrior:
    """Empirical-Bayes prior and posterior of the group-level variances of a mixed fit.

    Parameters
    ----------
    res : FitResult
        A fit with ``random_effects`` whose location design has group-level columns.

    Returns
    -------
    VariancePrior
        ``s_f^2``, its prior (trended on mean log expression) and posterior, see the module
        docstring. With fewer than 3 usable features, ``df_prior`` is 0 and the posterior
        is ``s_f^2``.

    Raises
    ------
    ValueError
        When ``res`` is not a mixed fit or its location design has no column that is
        constant within the groups.
    """
    ss = res.small_sample
    if ss is None or ss.group_design is None or not ss.between.any():
        raise ValueError(
            "moderation needs a fit with `random_effects` whose location design has a "
            "column constant within the groups (e.g. a condition that donors are nested "
            "in); the given fit has none."
        )
    xb, d, cols = _group_level(ss)
    coef = res.coef_loc.to_numpy()
    p = coef.shape[1]
    # The group means of the whole fixed design (cell-level covariates at their group means):
    # ``xbar_g^T beta`` and its variance do not depend on how a covariate is centred or scaled,
    # whereas the group-level columns alone would evaluate the groups at covariate value 0.
    assert ss.group_design is not None
    cov = res.covariance()[:, :p, :p]
    # With containing factors (donors nested in batches) only the within-level part of the
    # group-level columns is estimated from the donor stratum: (I - P_Z) Xbar.
    stratum = ss.stratum_design()
    gram = stratum.T @ stratum
    # Maximum-likelihood covariances are scaled to REML (n_stratum / d); REML fits are not.
    to_reml = 1.0 if ss.reml else ss.n_stratum / d
    rank_s = ss.rank_between if ss.nested is None else ss.rank_joint - ss.rank_nested
    with np.errstate(invalid="ignore"):
        s2 = np.einsum("ij,fji->f", gram, cov) / max(rank_s, 1) * to_reml
    rows, _, rss = _donor_level(ss, coef)
    s2[rows] = rss
    s2_wald = None
    within = stratum_s2(ss, coef)
    if within is not None:
        # Containing factors: the prior and posterior rest on the within-stratum variance
        # (chi2_d / d), the statistic keeps the fit's covariance (stratum_s2, Notes).
        s2_wald, s2 = s2, np.where(np.isfinite(within), within, s2)
    log_mean = trend_covariate(ss, coef)
    ok = prior_features(res, s2, rows) & np.isfinite(log_mean)
    # Robust prior (mixed/robust_prior.py): clear outliers out, then winsorised moments.
    outlier, high = prior_outliers(s2, float(d), ok, trend_basis(log_mean[ok], int(ok.sum())))
    ok &= ~outlier
    s0 = np.full(s2.shape, np.nan)
    if ok.sum() < MIN_FEATURES:
        return VariancePrior(s2, float(d), s0, 0.0, s2.copy(), log_mean, ok, s2_wald=s2_wald)
    s0[ok], d0 = winsorised_f_prior(s2[ok], float(d), trend_basis(log_mean[ok], int(ok.sum())))
    if ok.sum() < s2.size:
        # Features left out of the estimate get the prior of the nearest mean expression.
        order = np.argsort(log_mean[ok])
        fill = np.isfinite(log_mean) & ~ok
        s0[fill] = np.interp(log_mean[fill], log_mean[ok][order], s0[ok][order])
    post = s0 if np.isinf(d0) else (d0 * s0 + d * s2) / (d0 + d)
    post = np.where(high, s2, post)
    return VariancePrior(s2, float(d), s0, d0, post, log_mean, ok, high, s2_wald)


def moderated_sf(
    res: FitResult, lmat: Array, rank: int, statistic: str = "wald", method: str | None = None
) -> Callable[[Array], Array]:
    """Survival function of moderated Wald or LR statistics of group-level combinations.

    Parameters
    ----------
    res : FitResult
        A mixed fit (``res.small_sample`` set).
    lmat : ndarray
        ``(n_tests, p)`` tested combinations, all of group-level location coefficients.
    rank : int
        Degrees of freedom of the test.
    statistic : {"wald", "lrt"}
        What the returned function is applied to.
    method : {"npmle", "limma"}, optional
        The prior of the group-level variances (default ``res.small_sample.moderation``):
        nonparametric (:mod:`batchglm.mixed.variance_npmle`, with at least ``MIN_NPMLE`` usable
        features; else ``"limma"``) or limma's scaled inverse chi-squared prior
        (:func:`batchglm.mixed.f_prior.fit_f_prior`).

    Returns
    -------
    callable
        Maps Wald statistics ``W`` (maximum-likelihood covariance) to p-values. With
        ``F = c W / rank`` (``c = d / G`` the ML-to-REML factor of
        :func:`batchglm.mixed.small_sample.reference_sf`; or, for likelihood-ratio
        statistics ``LR``, the Bartlett-type ``F = (exp(LR / G) - 1) d / rank`` of
        :func:`batchglm.mixed.small_sample.lrt_reference_sf`):

        * ``"npmle"``: ``sum_k pi_fk P(chi2_rank > rank F r_f / rho_k)``, ``r_f = s_f^2 /
          s0^2(A_f)``, ``pi_fk`` the posterior of the support points ``rho_k`` given ``r_f``
          (:func:`batchglm.mixed.variance_npmle.mixture_sf`);
        * ``"limma"``: ``F s_f^2 / s~_f^2`` referred to ``F(rank, d + d0)``.

        With containing factors the ``s_f^2`` that multiplies ``F`` is the fit's
        covariance-implied ``VariancePrior.s2_wald``, while ``r_f``, ``pi_fk`` and
        ``s~_f^2`` rest on the within-stratum ``s_f^2`` (:func:`stratum_s2`).

        Features at 0 use the group-level regression (weighted by each group's sampling
        variance at ``s~_f^2`` with unequal groups; unweighted with residual variance
        ``max(s~_f^2, s0^2)`` otherwise) and ``F(rank, d + d0)`` either way.

    Raises
    ------
    ValueError
        When ``method`` is not one of ``METHODS``.
    """
    ss = res.small_sample
    assert ss is not None
    method = ss.moderation if method is None else method
    if method not in METHODS:
        raise ValueError(
            f"the moderation method must be one of {METHODS}, but {method!r} was given."
        )
    prior = variance_prior(res)
    xb, d, cols = _group_level(ss)
    d_total = prior.df + prior.df_prior
    logger.info(
        "moderated group-level variances: prior df %.3g, test df %.3g", prior.df_prior, d_total
    )

    def ref(f: Array) -> Array:
        if np.isinf(d_total):
            return chi2_sf(f * rank, rank)
        return f_sf(f, rank, d_total)

    rows, beta, _ = _donor_level(ss, res.coef_loc.to_numpy())
    at_zero = None
    if rows.any():
        design, lb = ss.group_regression(lmat)
        pinv = np.linalg.pinv(design)
        est = lb @ beta
        m = lb @ pinv @ pinv.T @ lb.T
        r0 = max(int(np.linalg.matrix_rank(m)), 1)
        quad = np.einsum("if,ij,jf->f", est, np.linalg.pinv(m), est)
        assert ss.donor_var is not None and ss.donor_resid is not None
        unmoderated = ss.prior_var + ss.donor_var[:, rows].mean(axis=0)
        has_prior = np.isfinite(prior.s2_prior[rows])
        # Near-balanced groups, or no prior: the unweighted regression, its own estimate
        # (small by selection) never below the prior scale s0^2, which includes the groups'
        # sampling variance; without a prior the unmoderated test's floor (same p-value).
        floor = np.where(has_prior, prior.s2_prior[rows], unmoderated)
        at_zero = ref(quad / (r0 * np.maximum(prior.s2_post[rows], floor)))
        if ss.unequal and has_prior.any():
            # Unequal groups: generalised least squares with each group's own sampling
            # variance, at the posterior group-level variance s~^2 (issue 15, fifth round:
            # calibrated without a floor, and the unweighted test lost the information of
            # the large groups; docs/mixed_model.md).
            z = xb @ res.coef_loc.to_numpy()[rows][:, cols].T + ss.donor_resid[:, rows]
            quad_w, r_w = weighted_group_statistic(
                design, lb, z, ss.donor_var[:, rows], prior.s2_post[rows]
            )
            at_zero = np.where(has_prior, ref(quad_w / r_w), at_zero)
    factor = 1.0 if ss.reml else d / ss.n_stratum
    # The statistic's own variance: the fit's (one factor) or, with containing factors, the
    # covariance-implied one, which the within-stratum posterior replaces.
    s2_stat = prior.s2 if prior.s2_wald is None else prior.s2_wald
    npmle = None
    if method == "npmle" and prior.used is not None and prior.used.sum() >= MIN_NPMLE:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = prior.s2 / prior.s2_prior
        mixture, weights = npmle_posterior(ratio, prior.used, float(d))
        npmle = (ratio, weights, mixture.grid)

    def sf(stat: Array) -> Array:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if statistic == "lrt":
                if ss.n_ml is None:
                    f_stat = np.expm1(stat / ss.n_stratum) * d / rank
                else:
                    f_stat = ss.lrt_numerator(stat) / rank
            else:
                f_stat = factor * stat / rank
            if npmle is None:
                pval = ref(f_stat * s2_stat / prior.s2_post)
            else:
                ratio, weights, grid = npmle
                pval = mixture_sf(f_stat * rank * s2_stat / prior.s2_prior, weights, grid, rank)
            if prior.outlier is not None and prior.outlier.any():  # unmoderated (robust_prior)
                out = prior.outlier
                pval[out] = f_sf(f_stat[out] * s2_stat[out] / prior.s2[out], rank, d)
        if at_zero is not None:
            pval[rows] = at_zero
        return pval

    return sf


def with_moderation(res: FitResult, moderate: bool | str | None) -> FitResult:
    """Return the fit with its group-level tests moderated or not.

    Parameters
    ----------
    res : FitResult
        Any fit.
    moderate : bool, str or None
        ``None`` keeps the default (moderated with the nonparametric prior for mixed
        fits); ``True`` moderates with the default prior, ``"npmle"`` or ``"limma"`` with
        that prior (see :func:`moderated_sf`), ``False`` not at all.

    Returns
    -------
    FitResult
        ``res`` itself, or a copy whose ``small_sample`` has ``moderate`` (and
        ``moderation``) set accordingly.

    Raises
    ------
    ValueError
        When moderation is asked of a fit without random effects, or ``moderate`` is a
        string other than ``"npmle"`` and ``"limma"``.
    """
    if isinstance(moderate, str) and moderate not in METHODS:
        raise ValueError(
            f"`moderate` must be True, False or one of {METHODS}, but {moderate!r} was given."
        )
    ss = res.small_sample
    if moderate is None:
        return res
    if ss is None:
        if moderate is not False:
            raise ValueError(
                f"`moderate={moderate!r}` needs a fit with `random_effects` (it moderates "
                "the group-level variance of mixed models); the given fit has none."
            )
        return res
    on = moderate is not False
    method = moderate if isinstance(moderate, str) else ss.moderation
    if ss.moderate == on and ss.moderation == method:
        return res
    return replace(res, small_sample=replace(ss, moderate=on, moderation=method))
