"""Quasi-likelihood F test of coefficients or contrasts (edgeR's ``glmQLFTest``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from batchglm.de.degrees_of_freedom import check_residual_df
from batchglm.de.result import DEResult
from batchglm.de.separated_tests import ql_floor
from batchglm.de.shrunken import attach, check_dispersion, shrunken_fit
from batchglm.de.statistics import RANK_RTOL, likelihood_ratio, wald_rows
from batchglm.de.threshold import check_threshold, check_treat_null, treat_ql
from batchglm.de.wald import Coef, ContrastLike, test_rows
from batchglm.dispersion.estimate import refit_location
from batchglm.result import FitResult
from batchglm.solvers.block_cache import reusing_block_tables


@reusing_block_tables  # the reduced refit reuses the full refit's count tables
def ql_f(
    res: FitResult,
    coef: Coef | Sequence[Coef] | None = None,
    *,
    contrast: ContrastLike | None = None,
    data: Any = None,
    layer: str | None = None,
    trend: str = "parametric",
    lfc_threshold: float = 0.0,
    treat_null: str | None = None,
    progress: bool | None = None,
) -> DEResult:
    """Quasi-likelihood F test that location coefficients or contrasts are zero.

    The NB dispersion of each feature is held at the mean-dispersion trend; the model is
    refitted with and without the tested combinations (the reduced model imposes
    ``L a = 0`` as a constraint), and the likelihood-ratio statistic divided by
    ``df`` times the moderated quasi-likelihood dispersion is compared with an F
    distribution with ``df`` and the moderated residual degrees of freedom, as edgeR's
    ``glmQLFit`` + ``glmQLFTest`` and glmGamPoi's ``test_de``.

    Each feature's residual df leave out its fitted zeros (zero counts whose fitted mean is
    below 1e-4, e.g. a group of only zeros), as edgeR does: such observations have no
    deviance and say nothing about the QL dispersion. A feature left with 0 residual df is
    tested at the prior QL dispersion with the prior's df. Null calibration by stratum,
    including features with an all-zero group, is in ``docs/calibration.md``.

    Features separated in the tested direction (a group with only zeros) get a p-value
    never below the conditional NB test of "no read on the zero side" given their total
    (:func:`batchglm.de.separated_tests.ql_floor`), at the trended NB dispersion inflated to
    the QL variance ``phi (mu + alpha mu^2)``: the F reference alone rejected 9-35 % of
    such null features with mean < 2 and 5 or 10 samples per group (edgeR's
    ``glmQLFTest``: 20-65 %); with the floor 0.5-8 % (``docs/validation.md``, "Separated
    genes"). edgeR and glmGamPoi have no such floor.

    Parameters
    ----------
    res : FitResult
        An NB fit with an intercept-only scale model, from :func:`batchglm.fit`.
    coef : str, int or sequence of them, optional
        Location coefficient(s) to test, as in :func:`batchglm.de.wald`.
    contrast : array_like, pandas.Series, pandas.DataFrame, dict or tuple, optional
        Instead of ``coef``: contrasts over the location coefficients, as in
        :func:`batchglm.de.wald`.
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData, optional
        The counts the fit was made on; by default ``res.data`` (kept by the fit).
    layer : str, optional
        AnnData layer of ``data`` with the counts.
    trend : {"parametric", "local", "mean"}
        The mean-dispersion trend.
    lfc_threshold : float
        With ``T > 0`` (log2 units), test ``|log2FoldChange| > T`` instead of ``!= 0`` by
        edgeR's TREAT (``glmTreat``, McCarthy & Smyth 2009); one coefficient or contrast
        only. See :func:`batchglm.de.threshold.treat_ql`.
    treat_null : {"interval", "worst.case"}, optional
        The null of the TREAT test, as edgeR's ``glmTreat(null=)``: the true effect anywhere
        in ``[-T, T]`` (``"interval"``, edgeR's default) or on the boundary nearer the
        estimate (``"worst.case"``, larger p-values).
    progress : bool, optional
        Progress bars of the dispersion passes and refits (default: on for long passes on a
        terminal, as :func:`batchglm.fit`).

    Returns
    -------
    DEResult
        ``test="ql_f"``: ``stat`` is the F statistic, ``df`` its numerator and
        ``df_residual`` its denominator degrees of freedom per feature (prior df plus the
        feature's own residual df without fitted zeros); ``coef_mle`` and
        ``coef_se`` (scaled by the QL dispersion) describe a single tested combination.

    Raises
    ------
    ValueError
        When the tested combinations cover every free location parameter, ``treat_null`` is
        unknown, the fit is not
        an NB fit with an intercept-only scale model, it has random effects (use
        :func:`batchglm.de.wald` or :func:`batchglm.de.lrt` on the mixed fit, or
        :func:`batchglm.pseudobulk` first), or it has no residual degrees of freedom.
    NotImplementedError
        For a fit with observation weights or an offset.
    """
    if data is None:
        data, layer = res.data, None
    _require_ql_fit(res)
    check_dispersion("ql", data)
    check_threshold(lfc_threshold, "greaterAbs")
    treat_null = check_treat_null(treat_null, lfc_threshold, "ql")
    check_residual_df(res, "bg.de.ql_f")
    lmat, labels = test_rows(res, coef, contrast, res.loc, "loc")
    c = res.loc.constraints
    l_free = lmat @ c
    _, s, vt = np.linalg.svd(l_free, full_matrices=True)
    rank = int((s > RANK_RTOL * max(s.max(initial=0.0), 1e-300)).sum())
    if rank == c.shape[1]:
        raise ValueError(
            f"the tested combination(s) {labels} cover every free location parameter, so "
            "the reduced model would have none; test fewer coefficients."
        )
    shrunk = shrunken_fit(data, res, "ql", layer=layer, trend=trend, progress=progress)
    wald_de = wald_rows(shrunk.fit, shrunk.fit.loc, 0, lmat, labels, "loc")
    # The reduced model starts from the full refit at the same (trended) dispersions, not
    # from `res` at the gene-wise ones: its projection onto the reduced constraints is the
    # nearer start (fewer Newton steps, same optimum; tests/test_ql_reduced_start.py).
    reduced = refit_location(
        data,
        shrunk.fit,
        shrunk.alpha,
        layer=layer,
        constraints_loc=c @ vt[rank:].T,
        progress=progress,
    )
    lr = likelihood_ratio(shrunk.fit, reduced, None)
    de = replace(
        wald_de,
        test="ql_f",
        stat=lr.stat,
        pval=lr.pval,
        df=lr.df,
        converged=lr.converged,
        reduced=reduced,
        loglik_reduced=lr.loglik_reduced,
    )
    de = attach(de, shrunk, "ql")
    # Separated features: never below the conditional NB test of their zero side, at the
    # QL-inflated dispersion (batchglm.de.zero_side, docs/validation.md).
    floor = ql_floor(data, shrunk.fit, reduced, l_free, de.ql_dispersion, layer=layer)
    de = replace(de, pval=np.maximum(de.pval, floor))
    if lfc_threshold > 0:
        # TREAT's null |lfc| <= T contains lfc = 0: its p is not below that floor either.
        de = treat_ql(de, data, shrunk, lmat, lfc_threshold, layer, treat_null=treat_null)
        de = replace(de, pval=np.maximum(de.pval, floor))
    return de


def _require_ql_fit(res: FitResult) -> None:
    """Refuse fits that ``ql_f`` cannot test, naming ``ql_f`` and what works instead."""
    from batchglm.obs_weights import is_weighted

    if res.random is not None:
        raise ValueError(
            "bg.de.ql_f needs a fit without random effects (its quasi-likelihood refits are "
            "cell-level GLMs that would drop the donor variance), but this fit has "
            f"random_effects={list(res.random.factors)!r}; test it with "
            "bg.de.wald(res, ...) or bg.de.lrt(...) on the mixed fit, or pseudobulk the "
            "counts with bg.pseudobulk and use bg.de.ql_f on that fit."
        )
    if res.family != "nb":
        raise ValueError(
            "bg.de.ql_f needs a negative binomial fit (the quasi-likelihood dispersion is "
            f"defined on the NB deviance here), but the fit's family is {res.family!r}; for "
            "a Poisson fit use bg.de.wald or bg.de.lrt, or refit with family='nb'."
        )
    if is_weighted(res):
        raise NotImplementedError(
            "bg.de.ql_f does not support fits with `weights` or `offset` yet (its "
            "dispersion estimates would ignore them); test this fit with bg.de.wald or "
            "bg.de.lrt, which use the fit's own scale."
        )
