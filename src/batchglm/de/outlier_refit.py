"""Refit of the features whose outlier counts were replaced, as DESeq2's refit.

After :func:`batchglm.de.pipeline.test` replaces outlier counts (design cells of at least
``min_replicates_for_replace`` observations), DESeq2's ``refitWithoutOutliers`` refits
only the genes with replaced counts and keeps every other gene's results:

* the location model is refitted on the replaced counts of those genes;
* their gene-wise (Cox-Reid) dispersions are estimated again at the new fitted means;
* the dispersion trend is *not* refitted: the first pass's trend function is evaluated at
  the genes' new ``baseMean``, and the log-normal prior keeps the first pass's variance
  (``dispPriorVar``), as does the dispersion-outlier rule (its residual variance,
  ``varLogDispEsts``);
* MAP dispersions and the test follow for those genes only; their results are spliced
  into the first pass's.

:func:`refit_dispersions` gives the dispersions of the refitted features from the first
pass's :class:`~batchglm.dispersion.estimate.Dispersions`; :func:`splice_results` puts a
test of some features into a test of all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm import blocks
from batchglm.data import Data
from batchglm.de.result import DEResult
from batchglm.dispersion.cox_reid import (
    MIN_ALPHA,
    LogNormalPrior,
    cox_reid_log_r,
    cox_reid_search,
    max_alpha,
)
from batchglm.dispersion.estimate import Dispersions, estimate_dispersions
from batchglm.dispersion.nb_fit import fitted_means, residual_df
from batchglm.dispersion.shrinkage import dispersion_outliers, prior_variance
from batchglm.inputs import data_of_fit
from batchglm.result import FitResult
from batchglm.solvers.status import Status

Array = NDArray[np.float64]

#: Gene-wise estimates below this were left out of the first pass's trend fit
#: (:func:`batchglm.dispersion.estimate_dispersions`; DESeq2's ``100 * minDisp``).
FIT_FLOOR = 100 * MIN_ALPHA

#: Per-feature fields of :class:`FitResult` (first axis: features).
_FIT_ARRAYS = ("theta_free", "cov_free", "loglik_values", "n_iter_values", "status_codes")


def refit_dispersions(d: Data, res: FitResult, first: Dispersions) -> Dispersions:
    """Gene-wise and MAP dispersions of refitted features at the first pass's prior.

    As DESeq2's ``refitWithoutOutliers``: ``estimateDispersionsGeneEst`` on the refitted
    genes, ``dispFit`` from the first pass's dispersion function at their new
    ``baseMean``, and ``estimateDispersionsMAP`` with the first pass's ``dispPriorVar``
    and ``varLogDispEsts`` (Love, Huber & Anders 2014).

    Parameters
    ----------
    d : Data
        The (replaced) counts of the refitted features, ``(n_obs, n_refit)``, in the order
        of ``res``.
    res : FitResult
        NB fit of those features (intercept-only scale model), whose fitted means the
        Cox-Reid estimates use.
    first : Dispersions
        The first pass's estimates for all features (trend function, prior variance and
        the gene-wise estimates and trend that gave the residual variance).

    Returns
    -------
    Dispersions
        Estimates for the refitted features; ``trend_fit``, ``prior_var`` and
        ``df_residual`` are the first pass's.
    """
    n_obs, n_feat = d.shape
    x = res.loc.reduced
    upper = max_alpha(n_obs)
    usable = res.status_codes != Status.ALL_ZERO
    base_mean = np.zeros(n_feat)
    log_r_gene = np.full(n_feat, np.nan)
    log_r_map = np.full(n_feat, np.nan)
    trend = np.full(n_feat, np.nan)
    for_fit = first.usable & (first.genewise >= FIT_FLOOR)
    _, resid_var = prior_variance(
        np.log(first.genewise[for_fit]), np.log(first.trend[for_fit]), first.df_residual
    )

    def _block(sl: slice) -> None:
        y = d.block(sl)
        base_mean[sl] = (y / res.size_factors[:, None]).mean(axis=0)
        use = np.flatnonzero(usable[sl] & (base_mean[sl] > 0))
        if not use.size:
            return
        at = sl.start + use
        y_use = np.ascontiguousarray(y[:, use])
        mu = np.ascontiguousarray(fitted_means(res, sl)[:, use])
        log_r_gene[at], grid_apl = cox_reid_search(y_use, mu, x, alpha_max=upper)
        trend[at] = np.clip(first.trend_fit(base_mean[at]), MIN_ALPHA, upper)
        prior = LogNormalPrior(np.log(trend[at]), first.prior_var)
        log_r_map[at] = cox_reid_log_r(
            y_use, mu, x, prior=prior, alpha_max=upper, grid_apl=grid_apl
        )

    for sl in blocks.feature_blocks(n_feat, blocks.block_size(n_obs)):
        _block(sl)
    usable &= base_mean > 0
    genewise = np.where(usable, np.exp(-log_r_gene), np.nan)
    map_alpha = np.where(usable, np.exp(-log_r_map), np.nan)
    with np.errstate(invalid="ignore"):
        outlier = usable & dispersion_outliers(np.log(genewise), np.log(trend), resid_var)
    return Dispersions(
        feature_names=res.feature_names,
        base_mean=base_mean,
        genewise=genewise,
        trend=trend,
        map=np.where(outlier, genewise, map_alpha),
        outlier=outlier,
        prior_var=first.prior_var,
        trend_fit=first.trend_fit,
        df_residual=residual_df(x, n_obs),
        usable=usable,
        has_map=True,
    )


def splice_fits(first: FitResult, sub: FitResult, feats: NDArray[np.intp], data: Any) -> FitResult:
    """Put the fits of some features into a fit of all.

    Parameters
    ----------
    first : FitResult
        Fit of all ``n_features`` features.
    sub : FitResult
        Fit of the features ``feats`` (same design, constraints and size factors).
    feats : ndarray of int
        ``(n_sub,)`` positions of ``sub``'s features in ``first``.
    data : Data or None
        The data of the spliced fit (the replaced counts of all features).

    Returns
    -------
    FitResult
        ``first`` with ``sub``'s coefficients, covariances, log-likelihoods, iterations
        and status at ``feats``.
    """
    changes: dict[str, Any] = {}
    for name in _FIT_ARRAYS:
        values = np.array(getattr(first, name), copy=True)
        values[feats] = getattr(sub, name)
        changes[name] = values
    return replace(first, data=data, **changes)


def splice_results(first: DEResult, sub: DEResult, feats: NDArray[np.intp], data: Any) -> DEResult:
    """Put a test of some features into the same test of all features.

    Parameters
    ----------
    first : DEResult
        The test of all ``n_features`` features.
    sub : DEResult
        The same test (same kind, tested combination and dispersion option) of the
        features ``feats`` only.
    feats : ndarray of int
        ``(n_sub,)`` positions of ``sub``'s features in ``first``.
    data : Data or None
        The data of the spliced fits (the replaced counts of all features).

    Returns
    -------
    DEResult
        ``first`` with every per-feature value of ``sub`` at ``feats``; the fits
        (``fit``, ``reduced``) are spliced likewise.

    Raises
    ------
    ValueError
        When the two tests differ in kind, tested effect or degrees of freedom.
    """
    if (first.test, first.tested, first.df) != (sub.test, sub.tested, sub.df):
        raise ValueError(
            "the refit must be the same test as the first pass, but they are "
            f"{(first.test, first.tested, first.df)!r} and {(sub.test, sub.tested, sub.df)!r}."
        )
    changes: dict[str, Any] = {}
    for f in fields(DEResult):
        a, b = getattr(first, f.name), getattr(sub, f.name)
        if isinstance(a, FitResult) and isinstance(b, FitResult):
            changes[f.name] = splice_fits(a, b, feats, data)
        elif isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
            frame = a.copy()
            frame.iloc[feats] = b.to_numpy()
            changes[f.name] = frame
        elif isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim == 1:
            # result_type: a longer string (stat_kind) in ``b`` must not be cut.
            values = a.astype(np.result_type(a.dtype, b.dtype), copy=True)
            values[feats] = b
            changes[f.name] = values
    return replace(first, **changes)


def refit_replaced(
    values: Any,
    res: FitResult,
    de_res: DEResult,
    feats: NDArray[np.intp],
    *,
    design: Any,
    design_scale: Any,
    constraints_loc: Any,
    run: dict[str, Any],
    initial_fit: Callable[..., FitResult],
    run_test: Callable[..., DEResult],
    named: Callable[[Any, pd.Index, pd.Index], Any],
) -> tuple[FitResult, DEResult]:
    """Refit and retest only the features with replaced counts; splice them in.

    DESeq2's ``refitWithoutOutliers``: the refitted features get new gene-wise and MAP
    dispersions at the first pass's trend function and prior variance
    (:func:`refit_dispersions`); every other feature keeps its first-pass results exactly.

    Parameters
    ----------
    values : ndarray or sparse matrix
        ``(n_obs, n_features)`` counts after the outlier replacement.
    res : FitResult
        The first pass's fit of all features.
    de_res : DEResult
        The first pass's test of all features.
    feats : ndarray of int
        ``(n_sub,)`` positions of the features with replaced counts.
    design, design_scale, constraints_loc
        The first pass's location design (formula or matrix), scale design and location
        constraints.
    run : dict
        The keyword arguments of the first pass's test (``model``, ``dispersion``,
        ``fit_args`` and the tested effect).
    initial_fit, run_test, named : callable
        The pipeline's first fit, its test and its naming of counts
        (:mod:`batchglm.de.pipeline`), so that the refit runs them as the first pass did.

    Returns
    -------
    fit : FitResult
        ``res`` with the refitted features' fits spliced in.
    test : DEResult
        ``de_res`` with the refitted features' tests spliced in.
    """
    sub_values = values[:, feats]
    sub_input = named(sub_values, res.obs_names, res.feature_names[feats])
    fit_args = dict(run["fit_args"])
    for name in ("weights", "offset"):
        arr = fit_args.get(name)
        if isinstance(arr, np.ndarray) and arr.ndim == 2:
            fit_args[name] = arr[:, feats]
    # The refitted features start as in the first pass (DESeq2's rough dispersion).
    res_sub = initial_fit(
        sub_input,
        design,
        res.obs,
        None,
        res.size_factors,
        constraints_loc,
        fit_args,
        design_scale,
        run["model"],
        run["dispersion"],
    )
    if run["dispersion"] == "map":
        key = ("dispersions", "parametric")
        first = res.derived.get(key)
        if not (isinstance(first, Dispersions) and first.has_map):
            first = estimate_dispersions(res.data, res, progress=fit_args["progress"])
        res_sub.derived[key] = refit_dispersions(data_of_fit(sub_input, res_sub), res_sub, first)
    de_sub = run_test(
        res_sub.data,
        res_sub,
        **{**run, "layer": None, "obs": res.obs, "fit_args": fit_args},
    )
    all_data = data_of_fit(named(values, res.obs_names, res.feature_names), res)
    return splice_fits(res, res_sub, feats, all_data), splice_results(
        de_res, de_sub, feats, all_data
    )
