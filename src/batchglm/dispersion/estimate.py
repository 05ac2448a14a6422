"""Gene-wise, trended and shrunken NB dispersions for a fit, in one pass over the data.

The steps follow DESeq2 (``estimateDispersions``): Cox-Reid gene-wise estimates at the
fitted means, a mean-dispersion trend through them, a log-normal prior around the trend
whose variance is the residual spread minus the expected sampling variance, and maximum a
posteriori estimates (gene-wise estimates far above the trend are kept). The quasi-
likelihood route (edgeR, glmGamPoi) uses the trend as NB dispersion and moderates the
per-feature QL dispersion instead, see
:func:`batchglm.dispersion.ql_dispersions.quasi_likelihood`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm import blocks
from batchglm.dispersion import apl_kernel
from batchglm.dispersion.censored import censored_at_poisson
from batchglm.dispersion.cox_reid import (
    MIN_ALPHA,
    LogNormalPrior,
    cox_reid_log_r,
    cox_reid_search,
    log_r_grid,
    max_alpha,
)
from batchglm.dispersion.genewise import GenewiseScale, genewise_dispersions
from batchglm.dispersion.nb_fit import check_nb_fit, fitted_means, residual_df
from batchglm.dispersion.ql_dispersions import QuasiLikelihood, quasi_likelihood
from batchglm.dispersion.refit import fixed_log_r, refit_location
from batchglm.dispersion.shrinkage import dispersion_outliers, prior_variance
from batchglm.dispersion.trend import Trend, fit_trend
from batchglm.inputs import data_of_fit
from batchglm.result import FitResult
from batchglm.solvers.status import Status

# Gene-wise scale coefficients, the location refit and QL dispersions live in their own
# modules; their names stay importable from here.
__all__ = [
    "Dispersions",
    "GenewiseScale",
    "QuasiLikelihood",
    "check_nb_fit",
    "estimate_dispersions",
    "fixed_log_r",
    "genewise_dispersions",
    "quasi_likelihood",
    "refit_location",
]

Array = NDArray[np.float64]

#: Gene-wise estimates below this are left out of the trend fit (DESeq2: ``100 * minDisp``).
_FIT_FLOOR = 100 * MIN_ALPHA


@dataclass(frozen=True)
class Dispersions:
    """NB dispersions (``alpha = 1 / r``) per feature.

    Attributes
    ----------
    feature_names : pandas.Index
        Feature names.
    base_mean : ndarray
        Mean of the counts divided by the size factors.
    genewise : ndarray
        Cox-Reid adjusted maximum-likelihood dispersions.
    trend : ndarray
        The mean-dispersion trend at each feature's ``base_mean``.
    map : ndarray
        Maximum a posteriori dispersions (gene-wise for dispersion outliers).
    outlier : ndarray of bool
        Features whose gene-wise estimate lies more than 2 prior SDs above the trend.
    prior_var : float
        Prior variance of ``log alpha`` around the trend.
    trend_fit : Trend
        The fitted trend.
    df_residual : int
        Observations minus location parameters.
    usable : ndarray of bool
        Features with an estimate (not all zero); others hold ``NaN``.
    has_map : bool
        Whether ``map`` was estimated (``estimate_dispersions(..., shrink=False)`` leaves
        it ``NaN``).
    """

    feature_names: pd.Index
    base_mean: Array
    genewise: Array
    trend: Array
    map: Array
    outlier: NDArray[np.bool_]
    prior_var: float
    trend_fit: Trend
    df_residual: int
    usable: NDArray[np.bool_]
    has_map: bool = True

    def to_frame(self) -> pd.DataFrame:
        """One row per feature.

        Returns
        -------
        pandas.DataFrame
            Columns ``base_mean, genewise, trend, map, outlier``.
        """
        return pd.DataFrame(
            {
                "base_mean": self.base_mean,
                "genewise": self.genewise,
                "trend": self.trend,
                "map": self.map,
                "outlier": self.outlier,
            },
            index=self.feature_names,
        )


def _blocks(n_obs: int, n_feat: int) -> list[slice]:
    """Feature blocks of the two passes: the common size, cut so every thread gets work.

    With few observations the common block (4 MiB of counts) holds thousands of features,
    so 10,000 features make two unequal blocks and one thread idles for a third of the
    pass. Two blocks per thread (of at least 64 features) balance the threads; more would
    repeat the per-block work that is shared by a block's features (the count terms of
    the grid are evaluated once per distinct count of the block).
    """
    # Never so small that the compiled APL kernels stop applying (few observations).
    smallest = -(-apl_kernel.MIN_ENTRIES // max(n_obs, 1))
    return blocks.balanced_blocks(n_obs, n_feat, smallest=max(blocks.MIN_BALANCED, smallest))


def estimate_dispersions(
    data: Any,
    res: FitResult,
    *,
    layer: str | None = None,
    trend: str = "parametric",
    progress: bool | None = None,
    shrink: bool = True,
) -> Dispersions:
    """Gene-wise, trended and MAP dispersions for an NB fit.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts the fit was made on, ``(n_obs, n_features)``. Named observations and
        features are matched to the fit's names (and reordered); unnamed data pair by
        position (see :func:`batchglm.inputs.data_of_fit`).
    res : FitResult
        An NB fit with an intercept-only scale model (from :func:`batchglm.fit`); its
        fitted means are used. For a general scale model, gene-wise estimates (without
        trend or shrinkage) come from :func:`batchglm.dispersion.genewise_dispersions`.
    layer : str, optional
        AnnData layer with the counts.
    trend : {"parametric", "local", "mean"}
        The mean-dispersion trend; ``"parametric"`` (``a0 + a1 / mean``) falls back to
        ``"local"`` when its fit fails.
    progress : bool, optional
        Show a ``tqdm.auto`` bar over features for each of the two passes
        (gene-wise, MAP); by default only for large passes (over
        ``5e7`` observation-feature pairs) on a terminal, as :func:`batchglm.fit`.
    shrink : bool
        Estimate the MAP dispersions (the second pass). Without, ``map`` holds ``NaN``
        and ``has_map`` is false: the quasi-likelihood route (edgeR, glmGamPoi) uses the
        trend only.

    Returns
    -------
    Dispersions
        Estimates per feature.
    """
    d = data_of_fit(data, res, layer=layer)
    check_nb_fit(res, d, "shrinking dispersions")
    n_obs, n_feat = d.shape
    x = res.loc.reduced
    df_residual = residual_df(x, n_obs)
    upper = max_alpha(n_obs)
    show = blocks.show_progress(progress, n_obs, n_feat)
    usable = res.status_codes != Status.ALL_ZERO
    base_mean = np.zeros(n_feat)
    log_r_gene = np.full(n_feat, np.nan)
    # The APL on the search grid, kept from the gene-wise pass: the MAP pass adds the prior
    # to it instead of evaluating the grid again (the prior does not change the APL).
    grid_apl = np.full((log_r_grid(n_obs, upper).size, n_feat), np.nan)

    def _pass1(sl: slice) -> None:
        y = d.block(sl)
        base_mean[sl] = (y / res.size_factors[:, None]).mean(axis=0)
        use = np.flatnonzero(usable[sl])
        if use.size:
            mu = fitted_means(res, sl)
            at = sl.start + use
            log_r_gene[at], grid_apl[:, at] = cox_reid_search(
                np.ascontiguousarray(y[:, use]),
                np.ascontiguousarray(mu[:, use]),
                x,
                alpha_max=upper,
            )

    blocks.map_blocks(
        _pass1,
        _blocks(n_obs, n_feat),
        progress=show,
        desc="gene-wise dispersions",
    )
    usable &= base_mean > 0
    genewise = np.where(usable, np.exp(-log_r_gene), np.nan)
    for_fit = usable & (genewise >= _FIT_FLOOR)
    trend_fit = fit_trend(base_mean[for_fit], genewise[for_fit], trend)
    trend_alpha = np.full(n_feat, np.nan)
    trend_alpha[usable] = np.clip(trend_fit(base_mean[usable]), MIN_ALPHA, upper)
    # Censored gene-wise estimates are left out of the prior variance and outlier residuals.
    for_prior = for_fit & ~censored_at_poisson(grid_apl)
    for_prior = for_prior if for_prior.any() else for_fit
    prior_var, resid_var = prior_variance(
        np.log(genewise[for_prior]), np.log(trend_alpha[for_prior]), df_residual
    )
    log_r_map = np.full(n_feat, np.nan)
    blocks_map = _blocks(n_obs, n_feat) if shrink else []

    def _pass2(sl: slice) -> None:
        use = np.flatnonzero(usable[sl])
        if not use.size:
            return
        y = d.block(sl)
        mu = fitted_means(res, sl)
        at = sl.start + use
        prior = LogNormalPrior(np.log(trend_alpha[at]), prior_var)
        log_r_map[at] = cox_reid_log_r(
            np.ascontiguousarray(y[:, use]),
            np.ascontiguousarray(mu[:, use]),
            x,
            prior=prior,
            alpha_max=upper,
            grid_apl=grid_apl[:, at],
        )

    blocks.map_blocks(
        _pass2,
        blocks_map,
        progress=show and shrink,
        desc="MAP dispersions",
    )
    map_alpha = np.where(usable, np.exp(-log_r_map), np.nan)
    with np.errstate(invalid="ignore"):
        outlier = usable & dispersion_outliers(np.log(genewise), np.log(trend_alpha), resid_var)
    map_alpha = np.where(outlier, genewise, map_alpha) if shrink else np.full(n_feat, np.nan)
    return Dispersions(
        feature_names=res.feature_names,
        base_mean=base_mean,
        genewise=genewise,
        trend=trend_alpha,
        map=map_alpha,
        outlier=outlier,
        prior_var=prior_var,
        trend_fit=trend_fit,
        df_residual=df_residual,
        usable=usable,
        has_map=shrink,
    )
