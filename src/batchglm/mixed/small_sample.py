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

``res.se_loc`` stays the inverse observed information of the marginal likelihood (what
glmmTMB reports); only the test's reference changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from batchglm.solvers.linalg import GroupSums
from batchglm.solvers.status import Status

if TYPE_CHECKING:
    from batchglm.result import FitResult

Array = NDArray[np.float64]


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
    """

    df: Array
    between: NDArray[np.bool_]
    n_groups: int
    rank_between: int


def between_within(x: Array, groups: GroupSums) -> SmallSample:
    """Classify the design columns and give their denominator degrees of freedom.

    Parameters
    ----------
    x : ndarray
        Full location design ``(n_obs, p)``.
    groups : GroupSums
        Random-intercept group of each observation.

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
    df_between = max(n_groups - rank_b, 1)
    df_within = max(n_obs - n_groups - (rank_x - rank_b), 1)
    df = np.where(between, float(df_between), float(df_within))
    return SmallSample(df, np.asarray(between, dtype=bool), n_groups, rank_b)


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
        group-level (else 1).
    """
    ss = res.small_sample
    if ss is None or model != "loc":
        return lambda stat: np.asarray(stats.chi2.sf(stat, rank))
    used = np.any(lmat != 0, axis=0)
    if not used.any():
        used = np.ones_like(used)
    d = float(ss.df[used].min())
    factor = (ss.n_groups - ss.rank_between) / ss.n_groups if ss.between[used].all() else 1.0
    return lambda stat: np.asarray(stats.f.sf(factor * stat / rank, rank, d))


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
        null genes at 0.05 with 4 vs 4 donors).
    """
    df = df_loc + df_scale
    ss = full.small_sample
    if ss is None or df_scale != 0 or df_loc == 0:
        return lambda stat: np.asarray(stats.chi2.sf(stat, df))
    from batchglm.de.nested import outside_columns

    dropped = outside_columns(reduced.loc.reduced, full.loc.matrix)
    if not dropped or not ss.between[dropped].all():
        return lambda stat: np.asarray(stats.chi2.sf(stat, df))
    g = ss.n_groups
    d = max(g - ss.rank_between, 1)
    return lambda stat: np.asarray(stats.f.sf(np.expm1(stat / g) * d / df, df, d))


#: Group sizes differing by more than this factor make variances at 0 a calibration risk.
_UNEQUAL = 2.0


def warn_variance_at_zero(res: FitResult, model: str, lmat: Array) -> None:
    """Warn when a group-level test rests on features whose random variance is 0.

    Parameters
    ----------
    res : FitResult
        The fit of the test.
    model : str
        ``"loc"`` or ``"scale"``.
    lmat : ndarray
        ``(n_tests, p)`` tested combinations of the location coefficients.

    Warns
    -----
    UserWarning
        When the tested coefficients are group-level (constant within the groups), group
        sizes differ by more than a factor of 2 and some features have status
        ``random_var_at_bound``: their maximum-likelihood variance
        collapsed to 0 (a singular fit, as in lme4/glmmTMB), so their standard errors are
        the cell-level ones. With unequal group sizes this is anti-conservative (measured:
        about 10 % rejections at 0.05 with 600/20/20/20 cells per donor).
    """
    ss = res.small_sample
    if ss is None or model != "loc":
        return
    used = np.any(lmat != 0, axis=0)
    if not (used.any() and ss.between[used].all()):
        return
    at_zero = np.flatnonzero(res.status_codes == Status.RANDOM_VAR_AT_BOUND)
    if at_zero.size == 0:
        return
    factors = res.settings.get("random_effects")
    obs = res.obs
    if isinstance(factors, list) and factors and obs is not None and factors[0] in obs:
        sizes = obs[factors[0]].value_counts()
        if sizes.max() <= _UNEQUAL * sizes.min():
            return  # near-balanced groups: the cell-level SE is then close to calibrated
    names = ", ".join(str(n) for n in res.feature_names[at_zero[:5]])
    more = f" and {at_zero.size - 5} more" if at_zero.size > 5 else ""
    warnings.warn(
        f"{at_zero.size} feature(s) ({names}{more}) have their random-intercept variance "
        "estimated at 0 (status 'random_var_at_bound'), so the test of this group-level "
        "effect uses their cell-level standard errors, which is anti-conservative when "
        "groups differ in size; check those features or compare with "
        "bg.pseudobulk(...) and bg.de.ql_f.",
        UserWarning,
        stacklevel=3,
    )
