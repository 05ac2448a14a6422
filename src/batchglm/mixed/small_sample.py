"""Small-sample reference of Wald tests of fixed effects in a random-intercept model.

Two corrections, both exact for a balanced linear mixed model with one random intercept
and both needed with few groups (4 vs 4 donors):

* Degrees of freedom, by the "between-within" rule (SAS PROC MIXED ``DDFM=BETWITHIN``;
  Pinheiro and Bates 2000, *Mixed-Effects Models in S and S-PLUS*, section 2.4.2, as nlme
  computes it): a coefficient whose design column is constant within every group (a
  condition that donors are nested in, the intercept) is estimated from group-to-group
  contrasts and gets ``d = n_groups - p_b`` degrees of freedom, ``p_b`` the rank of the
  group-level design; a coefficient that varies within groups (a cell-level covariate) gets
  the within-group residual degrees of freedom ``n_obs - n_groups - (rank(X) - p_b)``.
* The variance of group-level coefficients. Maximum likelihood (as the Laplace fit and
  glmmTMB's default) estimates the between-group variance with divisor ``n_groups``, REML
  (Patterson and Thompson 1971, *Biometrika* 58:545) with ``n_groups - p_b``; in the
  balanced one-way model the Wald variance of a group-level coefficient is proportional to
  that estimate, so the statistic of a test involving only group-level coefficients is
  multiplied by ``(n_groups - p_b) / n_groups`` before it is referred to ``F(rank, d)``
  (``t(d)`` for one coefficient). With 3 vs 3 donors the uncorrected test rejected 10 % of
  null genes at 0.05.

With further random-effect factors that contain the groups (donors nested in batches, each
batch with both conditions, ``random_effects=["donor", "batch"]``) a group-level
coefficient is compared between groups *within* those factors' levels, and SAS's
containment rule (PROC MIXED ``DDFM=CONTAIN``) gives ``d = G - rank([X_b, Z])`` (``Z`` the
group-level indicators of the containing factors; 4 vs 4 donors in 4 batches: 8 - 5 = 3
instead of 6), and the maximum-likelihood divisor of the group variance becomes
``G - rank(Z)`` (the factor ``d / (G - rank(Z))``). Factors crossed with the groups (each
donor's cells over several plates) are estimated within groups and change nothing; see
:func:`batchglm.mixed.containment.containing_factors`. With one factor every number is as before.

``res.se_loc`` stays the inverse observed information of the marginal likelihood (what
glmmTMB reports); only the test's reference changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from batchglm.families.tails import chi2_sf, f_sf
from batchglm.mixed.containment import containment
from batchglm.mixed.moderation import moderated_sf
from batchglm.solvers.linalg import GroupSums

if TYPE_CHECKING:
    from batchglm.result import FitResult

Array = NDArray[np.float64]

logger = logging.getLogger("batchglm")

#: Group sizes differing by more than this factor make variances at 0 a calibration risk.
_UNEQUAL = 2.0


@dataclass(frozen=True)
class SmallSample:
    """Per location coefficient: denominator df and whether it is group-level.

    Attributes
    ----------
    df : ndarray
        ``(p,)`` denominator degrees of freedom.
    between : ndarray of bool
        ``(p,)`` whether the design column is constant within groups.
    n_groups : int
        Number of groups.
    rank_between : int
        Rank of the group-level design.
    group_design : ndarray or None
        ``(n_groups, p)`` group means of the design (exact for group-level columns).
    unequal : bool
        Whether group sizes differ by more than a factor of 2.
    donor_resid, donor_var : ndarray or None
        ``(n_groups, F)`` log observed/fitted ratio per group and its sampling variance
        for features whose variance is at 0 (NaN elsewhere); see :func:`donor_level_sf`.
    prior_var : float
        Typical group variance of the fit's features (natural-log scale), see
        :func:`donor_level_sf`.
    moderate : bool
        Whether Wald tests of group-level coefficients use the empirical-Bayes moderated
        variance of :mod:`batchglm.mixed.moderation` (``bg.de.wald(..., moderate=)``).
    reml : bool
        Whether the variances are REML estimates (:mod:`batchglm.mixed.reml`): then the
        maximum-likelihood-to-REML factor of group-level Wald statistics is 1.
    moderation : str
        The prior of the moderated variances, ``"npmle"`` (nonparametric, the default) or
        ``"limma"`` (scaled inverse chi-squared), see
        :func:`batchglm.mixed.moderation.moderated_sf`.
    nested : ndarray or None
        ``(G, q)`` group-level indicators of the factors that contain the groups
        (:func:`batchglm.mixed.containment.containing_factors`); ``None`` with one factor.
    rank_nested, rank_joint : int
        ``rank(Z)`` and ``rank([X_b, Z])`` (0 without ``nested``).
    n_ml : ndarray or None
        ``(F,)`` groups in the likelihood's group stratum per feature, the divisor ``n`` of
        the likelihood-ratio form ``LR = n log(RSS_0 / RSS_1)``: ``G - rank(Z)``, or ``G``
        for features whose containing factors' variances are all at 0 (their fit has one
        stratum of ``G`` groups); ``None`` without ``nested``.
    stratum_resid : ndarray or None
        ``(n_groups, F)`` log observed/fitted ratio of every group for every fitted feature
        (:func:`batchglm.mixed.fit.group_residuals`, NaN for features not fitted), kept
        with further random-effect factors: with containing factors the moderation reads
        each feature's group-level variance from the within-stratum residuals of these
        group log levels (:func:`batchglm.mixed.moderation.variance_prior`).
    """

    df: Array
    between: NDArray[np.bool_]
    n_groups: int
    rank_between: int
    group_design: Array | None = None
    unequal: bool = False
    donor_resid: Array | None = None
    donor_var: Array | None = None
    prior_var: float = 0.0
    moderate: bool = True
    reml: bool = False
    moderation: str = "npmle"
    nested: Array | None = None
    rank_nested: int = 0
    rank_joint: int = 0
    n_ml: Array | None = None
    stratum_resid: Array | None = None

    @property
    def df_groups(self) -> int:
        """Denominator df of group-level coefficients, ``d`` (at least 1).

        ``G - p_b`` with one factor; with containing factors (``nested``) the containment
        rule ``G - rank([X_b, Z])``.
        """
        rank = self.rank_joint if self.nested is not None else self.rank_between
        return max(self.n_groups - rank, 1)

    @property
    def n_stratum(self) -> int:
        """Groups less the containing factors' rank: the ML divisor of the group variance.

        ``G`` with one factor, ``G - rank(Z)`` with containing factors ``Z``.
        """
        return self.n_groups - self.rank_nested

    def stratum_design(self) -> Array:
        """Group means of the design with the containing factors projected out.

        Returns
        -------
        ndarray
            ``(G, p)`` ``(I - P_Z) Xbar`` (``P_Z`` the projection on the columns of
            ``nested``; ``Xbar`` itself without containing factors): the part of each
            group-level column that group-to-group contrasts within the containing levels
            estimate.
        """
        assert self.group_design is not None
        if self.nested is None:
            return self.group_design
        # An orthonormal basis of span(Z) (SVD: Z may be rank-deficient, e.g. batches
        # nested in sites).
        u, _, _ = np.linalg.svd(self.nested, full_matrices=False)
        q = u[:, : self.rank_nested]
        return np.asarray(self.group_design - q @ (q.T @ self.group_design), dtype=np.float64)

    def lrt_numerator(self, stat: Array) -> Array:
        """Bartlett-type ``rank * F`` of likelihood ratios with containing factors.

        Parameters
        ----------
        stat : ndarray
            ``(F,)`` likelihood-ratio statistics ``LR``.

        Returns
        -------
        ndarray
            ``(F,)`` ``d (n / (G - rank(Z))) (exp(LR / n) - 1)`` with ``n = n_ml``: ``LR =
            n log(RSS_0 / RSS_1)`` in a group stratum of ``n`` groups, and the factor
            ``n / (G - rank(Z))`` puts features whose containing variances are at 0 (one
            stratum of ``G`` groups) on the scale of their Wald statistic ``c W`` of
            :func:`reference_sf`.
        """
        assert self.n_ml is not None
        return np.asarray(
            self.df_groups * (self.n_ml / self.n_stratum) * np.expm1(stat / self.n_ml)
        )

    def group_regression(self, lmat: Array) -> tuple[Array, Array]:
        """Design and tested combinations of the regression of group log levels.

        Parameters
        ----------
        lmat : ndarray
            ``(n_tests, p)`` combinations of the location coefficients.

        Returns
        -------
        design : ndarray
            ``(G, p_b + q)``: the group-level design ``X_b``, followed by the containing
            factors' indicators ``Z`` when there are any.
        lb : ndarray
            ``(n_tests, p_b + q)`` the combinations on that design (0 on ``Z``).
        """
        assert self.group_design is not None
        xb = self.group_design[:, self.between]
        lb = lmat[:, self.between]
        if self.nested is None:
            return xb, lb
        pad = np.zeros((lb.shape[0], self.nested.shape[1]))
        return np.hstack([xb, self.nested]), np.hstack([lb, pad])


def between_within(
    x: Array,
    groups: GroupSums,
    donor_resid: Array | None = None,
    donor_var: Array | None = None,
    variances: Array | None = None,
    reml: bool = False,
    others: list[GroupSums] | None = None,
    other_at_zero: NDArray[np.bool_] | None = None,
    stratum_resid: Array | None = None,
) -> SmallSample:
    """Classify the design columns and give their denominator degrees of freedom.

    Parameters
    ----------
    x : ndarray
        Full location design ``(n_obs, p)``.
    groups : GroupSums
        Random-intercept group of each observation.
    donor_resid, donor_var : ndarray, optional
        ``(n_groups, F)`` group residuals of features whose variance is at 0 (see
        :func:`batchglm.mixed.fit.group_residuals`), kept for :func:`donor_level_sf`.
    variances : ndarray, optional
        ``(F,)`` fitted group variances (NaN for features not fitted); their mean, scaled
        from maximum likelihood to REML by ``n_groups / (n_groups - p_b)``, is the
        ``prior_var`` of :func:`donor_level_sf`.
    reml : bool
        Whether ``variances`` are REML estimates already (no scaling, and no
        maximum-likelihood-to-REML factor in :func:`reference_sf`).
    others : list of GroupSums, optional
        Further random-effect factors. Those that contain the groups (donors nested in
        batches, each batch with both conditions;
        :func:`batchglm.mixed.containment.containing_factors`) set the
        containment rule ``d = G - rank([X_b, Z])`` for group-level coefficients and the
        maximum-likelihood divisor ``G - rank(Z)``; factors crossed with the groups change
        nothing.
    other_at_zero : ndarray of bool, optional
        ``(F, len(others))`` whether each further factor's fitted variance is at 0;
        features whose containing factors' variances are all at 0 get ``n_ml = G``.
    stratum_resid : ndarray, optional
        ``(n_groups, F)`` group log levels of all fitted features (fits with further
        factors), see :attr:`SmallSample.stratum_resid`.

    Returns
    -------
    SmallSample
        Degrees of freedom (at least 1) and group-level flags.
    """
    n_obs = x.shape[0]
    n_groups = groups.n_groups
    sizes = np.bincount(groups.index, minlength=n_groups).astype(np.float64)[:, None]
    means = groups(x) / sizes
    between = np.all(np.isclose(groups.expand(means), x, rtol=1e-10, atol=1e-12), axis=0)
    rank_b = int(np.linalg.matrix_rank(x[:, between])) if between.any() else 0
    rank_x = int(np.linalg.matrix_rank(x))
    nested, rank_z, rank_joint, n_ml = containment(
        groups, others or [], means[:, between], other_at_zero
    )
    df_between = max(n_groups - (rank_joint if nested is not None else rank_b), 1)
    df_within = max(n_obs - n_groups - (rank_x - rank_b), 1)
    df = np.where(between, float(df_between), float(df_within))
    unequal = bool(sizes.max() > _UNEQUAL * sizes.min())
    prior = 0.0
    if variances is not None and np.isfinite(variances).any():
        prior = float(np.nanmean(variances)) * (1.0 if reml else (n_groups - rank_z) / df_between)
    return SmallSample(
        df,
        np.asarray(between, dtype=bool),
        n_groups,
        rank_b,
        means,
        unequal,
        donor_resid,
        donor_var,
        prior,
        reml=reml,
        nested=nested,
        rank_nested=rank_z,
        rank_joint=rank_joint,
        n_ml=n_ml,
        stratum_resid=stratum_resid if nested is not None else None,
    )


def reference_sf(res: FitResult, model: str, lmat: Array, rank: int) -> Callable[[Array], Array]:
    """Survival function of a Wald statistic's reference distribution.

    Parameters
    ----------
    res : FitResult
        The fit; ``res.small_sample`` (set by mixed fits) switches to the small-sample
        reference.
    model : str
        ``"loc"`` or ``"scale"``.
    lmat : ndarray
        ``(n_tests, p)`` tested combinations of the model's coefficients.
    rank : int
        Degrees of freedom of the test.

    Returns
    -------
    callable
        Maps statistics ``W`` to p-values: ``chi2(rank)`` without ``small_sample``, else
        ``F(rank, d)`` for ``c W / rank`` with ``d`` the smallest denominator df among the
        coefficients involved and ``c = (n_groups - p_b) / n_groups`` when they are all
        group-level (else 1; also 1 for REML fits, whose variance needs no such factor);
        with containing factors ``c = d / (n_groups - rank(Z))``
        (:attr:`SmallSample.df_groups`, :attr:`SmallSample.n_stratum`).
    """
    ss = res.small_sample
    if ss is None or model != "loc":
        return lambda stat: chi2_sf(stat, rank)
    used = np.any(lmat != 0, axis=0)
    if not used.any():
        used = np.ones_like(used)
    d = float(ss.df[used].min())
    group_level = bool(ss.between[used].all())
    if group_level and ss.moderate:  # hook: batchglm.mixed.moderation
        return moderated_sf(res, lmat, rank)
    factor = ss.df_groups / ss.n_stratum if group_level else 1.0
    if ss.reml:
        factor = 1.0
    boundary = donor_level_sf(ss, res.coef_loc.to_numpy(), lmat) if group_level else None

    def sf(stat: Array) -> Array:
        pval = f_sf(factor * stat / rank, rank, d)
        if boundary is not None:
            pval = np.where(boundary[0], boundary[1], pval)
        return pval

    return sf


def donor_level_sf(
    ss: SmallSample, coef: Array, lmat: Array
) -> tuple[NDArray[np.bool_], Array] | None:
    """Boundary-aware p-values of group-level tests for features whose variance is 0.

    When a feature's random-intercept variance is estimated at 0, the Wald and LR tests of
    its group-level coefficients rest on cell-level information; with unequal group sizes
    the largest groups then dominate the estimate while their own group-to-group variation
    is ignored, and the tests reject far too often (about 10 % at 0.05 with 600/20/20/20
    cells per donor). Such a fit carries no information that the variance is small rather
    than undetected, so these features are tested at the level of the groups instead:
    each group's log level ``z_g = x_g a + log((sum_g y + 1/2) / (sum_g mu + 1/2))``
    (group-level design ``x_g``, fitted means ``mu`` of the fit) is regressed on the
    group-level design by least squares with equal weights, and ``L a`` is tested with
    the F statistic on ``max(s^2, sigma_0^2 + mean_g v_g)`` with ``G - p_b`` denominator
    degrees of freedom, ``s^2`` the residual mean square, ``v_g`` the delta-method
    variance of ``z_g`` without a group effect and ``sigma_0^2`` the typical group variance
    of all features of the fit (``prior_var``: the mean fitted variance, scaled to REML).
    The floor is needed: a variance at 0 means the observed group spread happened to be
    small, and the group-level contrast does not share that luck (with 4 vs 4 donors,
    the residual spread alone rejected 25 % of such null features at 0.05); borrowing the
    variance across features is the empirical-Bayes idea of limma's moderated variances
    (Smyth 2004, *Stat. Appl. Genet. Mol. Biol.* 3:3), here as a floor. The test itself is
    the unweighted analysis of log group means (the "summary statistics" approach to
    nested designs).

    Parameters
    ----------
    ss : SmallSample
        With ``donor_resid`` / ``donor_var`` from the fit.
    coef : ndarray
        ``(F, p)`` full location coefficients.
    lmat : ndarray
        ``(n_tests, p)`` tested combinations, all of group-level coefficients.

    Returns
    -------
    tuple or None
        ``(at_zero, pvalue)``, ``(F,)`` each (``pvalue`` NaN where ``at_zero`` is false), or
        ``None`` when no feature is concerned or group sizes differ by at most a factor of
        2 (near-balanced groups, where the fit's own test is calibrated).
    """
    if ss.donor_resid is None or ss.donor_var is None or ss.group_design is None:
        return None
    rows = np.all(np.isfinite(ss.donor_resid), axis=0)
    if not ss.unequal or not rows.any():
        return None
    cols = ss.between
    xb, lb = ss.group_regression(lmat)
    z = ss.group_design[:, cols] @ coef[rows][:, cols].T + ss.donor_resid[:, rows]
    pinv = np.linalg.pinv(xb)
    beta = pinv @ z
    d = ss.df_groups
    rss = ((z - xb @ beta) ** 2).sum(axis=0)
    s2 = np.maximum(rss / d, ss.prior_var + ss.donor_var[:, rows].mean(axis=0))
    est = lb @ beta  # (n_tests, F_b)
    m = lb @ pinv @ pinv.T @ lb.T
    rank = max(int(np.linalg.matrix_rank(m)), 1)
    quad = np.einsum("if,ij,jf->f", est, np.linalg.pinv(m), est)
    pval = np.full(coef.shape[0], np.nan)
    pval[rows] = f_sf(quad / (rank * s2), rank, d)
    return rows, pval


def lrt_reference_sf(
    full: FitResult, reduced: FitResult, df_loc: int, df_scale: int
) -> Callable[[Array], Array]:
    """Survival function of a likelihood-ratio statistic's reference distribution.

    Parameters
    ----------
    full, reduced : FitResult
        The nested fits; ``full.small_sample`` (mixed fits) enables the small-sample form.
    df_loc, df_scale : int
        Location and scale parameters the reduced model lacks.

    Returns
    -------
    callable
        Maps ``LR = 2 (ll_full - ll_reduced)`` to p-values. Plain ``chi2(df)`` unless the
        test drops only group-level location columns of a mixed fit; then, with ``G``
        groups and ``p_b`` the rank of the full group-level design,
        ``F = (exp(LR / G) - 1) (G - p_b) / df`` is referred to ``F(df, G - p_b)``: in a
        balanced one-way model where group means carry the information, ``LR`` under
        maximum likelihood is ``G log(RSS_0 / RSS_1)`` and this ``F`` is the exact F test
        (a Bartlett-type correction of the chi-squared reference, which rejected 9-11 % of
        null genes at 0.05 with 4 vs 4 donors). With containing factors ``Z`` (donors
        nested in batches) ``G`` becomes ``G - rank(Z)`` and ``G - p_b`` the containment
        df ``G - rank([X_b, Z])``.

    Raises
    ------
    ValueError
        For REML fits: their restricted likelihoods are not comparable between different
        fixed-effect designs.
    """
    df = df_loc + df_scale
    ss = full.small_sample
    check_not_reml(full, reduced)
    if ss is None or df_scale != 0 or df_loc == 0:
        return lambda stat: chi2_sf(stat, df)
    from batchglm.nested_designs import outside_columns

    dropped = outside_columns(reduced.loc.reduced, full.loc.matrix)
    if not dropped or not ss.between[dropped].all():
        return lambda stat: chi2_sf(stat, df)
    g = ss.n_stratum
    d = ss.df_groups
    lmat = np.zeros((len(dropped), full.loc.matrix.shape[1]))
    lmat[np.arange(len(dropped)), dropped] = 1.0
    if ss.moderate:  # hook: batchglm.mixed.moderation
        return moderated_sf(full, lmat, df, statistic="lrt")
    boundary = donor_level_sf(ss, full.coef_loc.to_numpy(), lmat)

    def sf(stat: Array) -> Array:
        pval = f_sf(
            ss.lrt_numerator(stat) if ss.n_ml is not None else np.expm1(stat / g) * d / df, df, d
        )
        if boundary is not None:
            pval = np.where(boundary[0], boundary[1], pval)
        return pval

    return sf


def check_not_reml(*fits: FitResult) -> None:
    """Refuse likelihood-ratio tests between REML fits.

    Parameters
    ----------
    *fits : FitResult
        The fits of the test.

    Raises
    ------
    ValueError
        When any fit was made with ``reml=True``: restricted likelihoods integrate out the
        fixed effects, so they differ between fixed designs by terms that are not evidence
        (as in lme4 and glmmTMB, which compare ML fits).
    """
    if any(f.small_sample is not None and f.small_sample.reml for f in fits):
        raise ValueError(
            "likelihood-ratio tests need maximum-likelihood fits, but a fit with "
            "`reml=True` was given (restricted likelihoods of different fixed designs are "
            "not comparable); refit with `reml=False` or use `bg.de.wald`."
        )


def warn_variance_at_zero(res: FitResult, model: str, lmat: Array) -> None:
    """Log which features a group-level test refers to the boundary-aware reference.

    Parameters
    ----------
    res : FitResult
        The fit of the test.
    model : str
        ``"loc"`` or ``"scale"``.
    lmat : ndarray
        ``(n_tests, p)`` tested combinations of the location coefficients.

    Notes
    -----
    Features with status ``random_var_at_bound`` (variance estimated at 0, a singular fit
    as in lme4/glmmTMB) are tested at the level of the groups when group sizes differ by
    more than a factor of 2 (:func:`donor_level_sf`); this logs how many, at INFO level on
    the ``batchglm`` logger. (Earlier versions warned that their cell-level test was
    anti-conservative; the group-level reference removes that.)
    """
    ss = res.small_sample
    if ss is None or model != "loc" or not ss.unequal or ss.donor_resid is None:
        return
    used = np.any(lmat != 0, axis=0)
    if not (used.any() and ss.between[used].all()):
        return
    at_zero = np.flatnonzero(np.all(np.isfinite(ss.donor_resid), axis=0))
    if at_zero.size:
        logger.info(
            "%d feature(s) with random-intercept variance at 0 are tested at the level of "
            "the groups (unequal group sizes; see docs/mixed_model.md)",
            at_zero.size,
        )
