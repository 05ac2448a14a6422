"""Residual degrees of freedom: whether a fit leaves any to estimate its scale from.

Every test entry point (``bg.de.wald``, ``bg.de.lrt``, ``bg.de.ql_f``, whatever the
``dispersion=`` option) calls :func:`check_residual_df` on the fit whose scale it relies on.
"""

from __future__ import annotations

import warnings

from batchglm.design import column_rank
from batchglm.obs_weights import counted_observations, is_weighted
from batchglm.result import FitResult
from batchglm.warning_site import user_stacklevel


def check_residual_df(res: FitResult, test: str) -> int:
    """Residual degrees of freedom of a fit; an error when its scale needs some and has none.

    Parameters
    ----------
    res : FitResult
        The fit whose standard errors or likelihood the test uses.
    test : str
        The calling function (``"bg.de.wald"``, ...), named in the message.

    Returns
    -------
    int
        ``n_obs - rank(X C)``: observations minus the rank of the location design after
        constraints. May be 0 or negative where no scale is estimated. In a weighted fit
        observations of weight 0 do not count, and each other observation counts once
        (:func:`batchglm.obs_weights.counted_observations`).

    Raises
    ------
    ValueError
        When the fit estimated a per-feature scale (NB dispersion, normal standard
        deviation, beta precision) and ``n_obs - rank(X C) < max(1, rank(Z D))`` with
        ``Z D`` the scale design after constraints. Then the scale estimate has no
        information left after the location fit (NB: it runs to its bound and the test
        becomes a Poisson test of over-dispersed counts), so the p-values would be far too
        small.

    Notes
    -----
    DESeq2 (``DESeqDataSet``: "the design matrix has the same number of samples and
    coefficients to fit") and glmGamPoi refuse such designs; edgeR sets the dispersion to
    ``NA``. Families without a scale (``"poisson"``) and fits with ``fixed_scale=`` (e.g.
    a dispersion known from elsewhere) need no residual degrees of freedom and pass.
    The condition is necessary, not sufficient: a scale design with a level whose
    observations are all used up by the location model still has no information on that
    level's scale.
    """
    n_obs, counted = counted_observations(res)
    rank_loc = column_rank(counted)
    df = n_obs - rank_loc
    has_scale = res.has_scale
    if not has_scale or res.settings.fixed_scale:
        return df
    rank_scale = column_rank(res.scale.reduced)
    need = max(1, rank_scale)
    if df < need:
        raise ValueError(
            f"`{test}` needs residual degrees of freedom to estimate the {res.family} scale "
            f"(dispersion) per feature, but the location design has rank {rank_loc} with "
            f"{n_obs} observations ({df} residual df, {need} needed for the scale model); "
            "add replicates or drop location coefficients (DESeq2 and glmGamPoi refuse such "
            "designs too), or test with a known scale via bg.fit(..., fixed_scale=...) or "
            "family='poisson'."
        )
    return df


class SmallSampleWarning(UserWarning):
    """A test whose reference distribution is unreliable at this sample size."""


#: Below this many residual degrees of freedom, tests with per-feature maximum-likelihood
#: scales reject noticeably more often than their level (NB, two groups: about 0.12 at 0.05
#: with 8 residual df, 0.086 with 18, 0.058 with 48; docs/validation.md).
SMALL_SAMPLE_DF = 20


def warn_small_sample(res: FitResult, test: str) -> None:
    """Warn when a test with per-feature ML scales has few residual degrees of freedom.

    Parameters
    ----------
    res : FitResult
        The fit whose per-feature scale estimates the test uses.
    test : str
        The calling function, named in the message.

    Warns
    -----
    SmallSampleWarning
        For fits with an estimated per-feature scale (not Poisson, not ``fixed_scale``)
        and ``0 < n_obs - rank(X C) < SMALL_SAMPLE_DF``: the maximum-likelihood scale is
        biased low with few residual degrees of freedom, so the test is anti-conservative;
        the message points to ``dispersion="map"`` (DESeq2) and ``"ql"`` / ``bg.de.ql_f``
        (edgeR, glmGamPoi), which share information across features (for fits with
        weights or an offset, which those do not support yet, to more observations).
    """
    has_scale = res.has_scale
    if not has_scale or res.settings.fixed_scale:
        return
    n_obs, counted = counted_observations(res)
    df = n_obs - column_rank(counted)
    if 0 < df < SMALL_SAMPLE_DF:
        if res.family != "nb":
            shrink = "more observations"
        elif is_weighted(res):
            # dispersion='map' and 'ql' refuse weighted and offset fits: advise only what
            # works for this fit.
            shrink = (
                "more observations (dispersion='map' and 'ql' do not support fits with "
                "`weights` or `offset` yet)"
            )
        else:
            shrink = "dispersion='map' (DESeq2) or 'ql' (edgeR/glmGamPoi; or bg.de.ql_f)"
        warnings.warn(
            f"{test} with dispersion='mle' uses each feature's own maximum-likelihood "
            f"{res.family} scale, which with {df} residual df makes the test "
            f"anti-conservative (too many small p-values); use {shrink}. See "
            "docs/validation.md for the measured rates.",
            SmallSampleWarning,
            stacklevel=user_stacklevel(),
        )
