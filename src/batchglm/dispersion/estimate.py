"""Gene-wise, trended and shrunken NB dispersions for a fit, in one pass over the data.

The steps follow DESeq2 (``estimateDispersions``): Cox-Reid gene-wise estimates at the
fitted means, a mean-dispersion trend through them, a log-normal prior around the trend
whose variance is the residual spread minus the expected sampling variance, and maximum a
posteriori estimates (gene-wise estimates far above the trend are kept). The quasi-
likelihood route (edgeR, glmGamPoi) uses the trend as NB dispersion and moderates the
per-feature QL dispersion instead, see :func:`quasi_likelihood`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm import blocks
from batchglm.align import data_of_fit
from batchglm.data import Data
from batchglm.design import Design, column_rank
from batchglm.dispersion.cox_reid import MIN_ALPHA, LogNormalPrior, cox_reid_log_r, max_alpha
from batchglm.dispersion.cox_reid_design import cox_reid_scale
from batchglm.dispersion.expected_deviance import KappaTable, expected_deviance
from batchglm.dispersion.quasi_likelihood import (
    SqueezedVariances,
    nb_deviance,
    squeeze_var,
    zero_fit_residual_df,
)
from batchglm.dispersion.shrinkage import dispersion_outliers, prior_variance
from batchglm.dispersion.trend import Trend, fit_trend
from batchglm.result import FitResult
from batchglm.solvers.status import Status

Array = NDArray[np.float64]

#: Features per block: the grid search holds a few ``(n_obs, block)`` arrays at a time.
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


def check_nb_fit(res: FitResult, data: Data, what: str, intercept_only: bool = True) -> None:
    """Raise unless ``res`` is an NB fit of ``data`` (with an intercept-only scale model).

    Parameters
    ----------
    res : FitResult
        The fit.
    data : Data
        The data it is said to come from.
    what : str
        The option that needs it, for messages.
    intercept_only : bool
        Also require an intercept-only scale model (one dispersion per feature).

    Raises
    ------
    ValueError
        For a non-NB fit, a scale model that is not intercept-only (where required), or
        ``data`` whose shape differs from the fit's.
    """
    if res.family != "nb":
        raise ValueError(
            f"{what} needs a negative binomial fit, but the fit's family is {res.family!r}."
        )
    scale = res.scale.reduced
    if intercept_only and (scale.shape[1] != 1 or not np.allclose(scale, scale[0, 0])):
        raise ValueError(
            f"{what} shares one dispersion per feature across observations, so it needs "
            "an intercept-only scale model, but the fit's scale model has coefficients "
            f"{res.scale.names}; Cox-Reid estimates for a general scale model come from "
            "bg.dispersion.genewise_dispersions(data, res)."
        )
    if data.shape != (len(res.obs_names), len(res.feature_names)):
        raise ValueError(
            f"`data` must be the data of the fit, shape ({len(res.obs_names)}, "
            f"{len(res.feature_names)}), but its shape is {data.shape}."
        )


def _df_residual(x: Array, n_obs: int) -> int:
    df_residual = n_obs - column_rank(x)
    if df_residual < 1:
        raise ValueError(
            "estimating dispersions needs residual degrees of freedom, but the location "
            f"design leaves {df_residual} (observations minus coefficients); use fewer "
            "coefficients or more observations."
        )
    return df_residual


def _means(res: FitResult, sl: slice) -> Array:
    from batchglm.fitted import fitted_mean  # the one place coefficients become means

    return fitted_mean(res, np.arange(len(res.feature_names))[sl])


def estimate_dispersions(
    data: Any, res: FitResult, *, layer: str | None = None, trend: str = "parametric"
) -> Dispersions:
    """Gene-wise, trended and MAP dispersions for an NB fit.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts the fit was made on, ``(n_obs, n_features)``. Named observations and
        features are matched to the fit's names (and reordered); unnamed data pair by
        position (see :func:`batchglm.align.data_of_fit`).
    res : FitResult
        An NB fit with an intercept-only scale model (from :func:`batchglm.fit`); its
        fitted means are used. For a general scale model, gene-wise estimates (without
        trend or shrinkage) come from :func:`genewise_dispersions`.
    layer : str, optional
        AnnData layer with the counts.
    trend : {"parametric", "local", "mean"}
        The mean-dispersion trend; ``"parametric"`` (``a0 + a1 / mean``) falls back to
        ``"local"`` when its fit fails.

    Returns
    -------
    Dispersions
        Estimates per feature.
    """
    d = data_of_fit(data, res, layer=layer)
    check_nb_fit(res, d, "shrinking dispersions")
    n_obs, n_feat = d.shape
    x = res.loc.reduced
    df_residual = _df_residual(x, n_obs)
    upper = max_alpha(n_obs)
    usable = res.status_codes != Status.ALL_ZERO
    base_mean = np.zeros(n_feat)
    log_r_gene = np.full(n_feat, np.nan)

    def _pass1(sl: slice) -> None:
        y = d.block(sl)
        base_mean[sl] = (y / res.size_factors[:, None]).mean(axis=0)
        use = np.flatnonzero(usable[sl])
        if use.size:
            mu = _means(res, sl)
            log_r_gene[sl.start + use] = cox_reid_log_r(
                np.ascontiguousarray(y[:, use]),
                np.ascontiguousarray(mu[:, use]),
                x,
                alpha_max=upper,
            )

    blocks.map_blocks(_pass1, blocks.feature_blocks(n_feat, blocks.block_size(n_obs)))
    usable &= base_mean > 0
    genewise = np.where(usable, np.exp(-log_r_gene), np.nan)
    for_fit = usable & (genewise >= _FIT_FLOOR)
    trend_fit = fit_trend(base_mean[for_fit], genewise[for_fit], trend)
    trend_alpha = np.full(n_feat, np.nan)
    trend_alpha[usable] = np.clip(trend_fit(base_mean[usable]), MIN_ALPHA, upper)
    prior_var, resid_var = prior_variance(
        np.log(genewise[for_fit]), np.log(trend_alpha[for_fit]), df_residual
    )
    log_r_map = np.full(n_feat, np.nan)

    def _pass2(sl: slice) -> None:
        use = np.flatnonzero(usable[sl])
        if not use.size:
            return
        y = d.block(sl)
        mu = _means(res, sl)
        prior = LogNormalPrior(np.log(trend_alpha[sl.start + use]), prior_var)
        log_r_map[sl.start + use] = cox_reid_log_r(
            np.ascontiguousarray(y[:, use]),
            np.ascontiguousarray(mu[:, use]),
            x,
            prior=prior,
            alpha_max=upper,
        )

    blocks.map_blocks(_pass2, blocks.feature_blocks(n_feat, blocks.block_size(n_obs)))
    map_alpha = np.where(usable, np.exp(-log_r_map), np.nan)
    with np.errstate(invalid="ignore"):
        outlier = usable & dispersion_outliers(np.log(genewise), np.log(trend_alpha), resid_var)
    map_alpha = np.where(outlier, genewise, map_alpha)
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
    )


@dataclass(frozen=True)
class GenewiseScale:
    """Cox-Reid adjusted scale coefficients of an NB fit with any scale model.

    Attributes
    ----------
    feature_names : pandas.Index
        Feature names.
    scale : Design
        The fit's scale design (``log r = Z C b``).
    coef_free : ndarray
        Free scale coefficients ``b`` per feature, ``(F, k_scale)``; ``NaN`` for features
        without an estimate.
    apl : ndarray
        The adjusted profile log-likelihood at the estimate.
    status : ndarray of int8
        :class:`~batchglm.solvers.status.Status` code per feature (``SCALE_AT_BOUND``
        where some predictor stopped on ``[-log(alpha_max), log(1e8)]``, e.g.
        under-dispersion); ``ALL_ZERO`` for features without an estimate.
    n_iter : ndarray of int
        Newton iterations used.
    df_residual : int
        Observations minus location parameters.
    usable : ndarray of bool
        Features with an estimate (not all zero).
    """

    feature_names: pd.Index
    scale: Design
    coef_free: Array
    apl: Array
    status: NDArray[np.int8]
    n_iter: NDArray[np.int32]
    df_residual: int
    usable: NDArray[np.bool_]

    @property
    def coef(self) -> pd.DataFrame:
        """Full scale coefficients ``C b`` per feature, named like the fit's.

        They satisfy the scale constraints, so they can be passed to
        :func:`batchglm.fit` as ``fixed_scale``.
        """
        full = self.coef_free @ self.scale.constraints.T
        return pd.DataFrame(full, index=self.feature_names, columns=self.scale.names)

    def log_r(self) -> Array:
        """``log r`` for every observation and feature, ``(n_obs, F)``.

        Returns
        -------
        ndarray
            Scale predictors ``Z C b``.
        """
        return np.asarray(self.scale.reduced @ self.coef_free.T)

    def alpha(self) -> Array:
        """Dispersion ``alpha = 1 / r`` for every observation and feature, ``(n_obs, F)``.

        Returns
        -------
        ndarray
            ``exp(-log r)``.
        """
        return np.exp(-self.log_r())


def genewise_dispersions(
    data: Any, res: FitResult, *, layer: str | None = None, alpha_max: float | None = None
) -> GenewiseScale:
    """Cox-Reid adjusted maximum-likelihood scale coefficients for an NB fit.

    Works with any scale model of the fit (several columns, constraints): at the fit's
    means, each feature's free scale coefficients maximise
    ``sum_i l(y_i; mu_i, r_i) - 1/2 log det(X^T W X)`` (see
    :mod:`batchglm.dispersion.cox_reid_design`). With an intercept-only scale model this is
    the ``genewise`` estimate of :func:`estimate_dispersions`.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts the fit was made on, ``(n_obs, n_features)``. Named observations and
        features are matched to the fit's names (and reordered); unnamed data pair by
        position (see :func:`batchglm.align.data_of_fit`).
    res : FitResult
        An NB fit (from :func:`batchglm.fit`); its fitted means are held fixed.
    layer : str, optional
        AnnData layer with the counts.
    alpha_max : float, optional
        Largest dispersion, by default ``max(10, n_obs)``.

    Returns
    -------
    GenewiseScale
        Coefficients per feature.
    """
    d = data_of_fit(data, res, layer=layer)
    check_nb_fit(res, d, "Cox-Reid dispersion estimation", intercept_only=False)
    n_obs, n_feat = d.shape
    x = res.loc.reduced
    z = res.scale.reduced
    df_residual = _df_residual(x, n_obs)
    usable = res.status_codes != Status.ALL_ZERO
    coef = np.full((n_feat, z.shape[1]), np.nan)
    apl = np.full(n_feat, np.nan)
    status = np.full(n_feat, Status.ALL_ZERO, dtype=np.int8)
    n_iter = np.zeros(n_feat, dtype=np.int32)
    # The one feature-block rule of every pass (batchglm.blocks).
    for sl in blocks.feature_blocks(n_feat, blocks.block_size(n_obs)):
        y = d.block(sl)
        usable[sl] &= y.any(axis=0)
        use = np.flatnonzero(usable[sl])
        if not use.size:
            continue
        mu = _means(res, sl)
        sol = cox_reid_scale(
            np.ascontiguousarray(y[:, use]),
            np.ascontiguousarray(mu[:, use]),
            x,
            z,
            alpha_max=alpha_max,
        )
        at = sl.start + use
        coef[at], apl[at], status[at], n_iter[at] = sol.b, sol.apl, sol.status, sol.n_iter
    return GenewiseScale(
        feature_names=res.feature_names,
        scale=res.scale,
        coef_free=coef,
        apl=apl,
        status=status,
        n_iter=n_iter,
        df_residual=df_residual,
        usable=usable,
    )


def fixed_log_r(alpha: Array) -> Array:
    """``log r = -log alpha`` for :func:`batchglm.fit`'s ``fixed_scale``; 0 where undefined.

    Parameters
    ----------
    alpha : ndarray
        Dispersions, ``NaN`` for features without an estimate (all zero).

    Returns
    -------
    ndarray
        Finite ``log r`` per feature.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        log_r = -np.log(alpha)
    return np.where(np.isfinite(log_r), log_r, 0.0)


def refit_location(
    data: Any,
    res: FitResult,
    alpha: Array,
    *,
    layer: str | None = None,
    constraints_loc: Array | None = None,
) -> FitResult:
    """Refit the location model of ``res`` with the NB dispersions held at ``alpha``.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit, matched to it by name where named.
    res : FitResult
        The original fit (design, constraints and size factors are reused).
    alpha : ndarray
        Dispersion per feature (``NaN`` for features without one).
    layer : str, optional
        AnnData layer with the counts.
    constraints_loc : ndarray, optional
        A constraint matrix ``C`` (``p`` rows) replacing the fit's, e.g. for a reduced
        model.

    Returns
    -------
    FitResult
        The location fit at the given dispersions; location standard errors come from the
        location block of the information alone.
    """
    from batchglm.fit import fit

    c = res.loc.constraints if constraints_loc is None else constraints_loc
    return fit(
        data_of_fit(data, res, layer=layer),
        res.design_loc,
        constraints_loc=c,
        size_factors=res.size_factors,
        fixed_scale=fixed_log_r(alpha),
        max_iter=int(res.settings.get("max_iter", 100)),  # type: ignore[call-overload]
        tol=float(res.settings.get("tol", 1e-10)),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class QuasiLikelihood:
    """Quasi-likelihood dispersions of fits at the trended NB dispersion.

    Attributes
    ----------
    s2 : ndarray
        Per-feature QL dispersion ``deviance / expected_deviance`` (0 where
        ``df_residual`` is 0, ``NaN`` for features not tested).
    squeezed : SqueezedVariances
        Prior and posterior (moderated) QL dispersions and degrees of freedom.
    df_residual : ndarray of int
        Residual degrees of freedom per feature, not counting fitted zeros (see
        :func:`batchglm.dispersion.quasi_likelihood.zero_fit_residual_df`); at most the
        location model's ``n_obs - rank``.
    expected_deviance : ndarray or None
        The divisor of ``s2`` per feature: the deviance expected under the NB model at the
        fitted means (see :mod:`batchglm.dispersion.expected_deviance`), or ``None`` when
        ``s2`` was divided by ``df_residual``.
    """

    s2: Array
    squeezed: SqueezedVariances
    df_residual: NDArray[np.int64]
    expected_deviance: Array | None = None

    @property
    def var_post(self) -> Array:
        """Moderated QL dispersion per feature."""
        return self.squeezed.var_post

    @property
    def df_total(self) -> Array:
        """Denominator degrees of freedom of the QL F test per feature."""
        return self.squeezed.df_total


def quasi_likelihood(
    data: Any,
    res_trend: FitResult,
    disp: Dispersions,
    *,
    layer: str | None = None,
    abundance_trend: bool = True,
    deviance_bias: bool = True,
) -> QuasiLikelihood:
    """QL dispersions from the deviances of a fit at the trended NB dispersions.

    As edgeR's ``glmQLFit`` (Lund et al. 2012; Lun & Smyth 2017), moderated by
    :func:`~batchglm.dispersion.squeeze_var` with ``d`` degrees of freedom per feature
    and a prior trending in ``log base_mean``; ``d`` is the residual df without fitted
    zeros (observations with a zero count and a fitted mean below 1e-4). The raw QL
    dispersion is ``deviance / E[deviance]``, the deviance over its expectation under the
    NB model at the fitted means (:mod:`batchglm.dispersion.expected_deviance`): at small
    means that expectation is well below ``d`` and ``deviance / d`` would make the QL
    dispersions, and with them the tests, anti-conservative (``docs/calibration.md``).
    Features with ``d = 0`` (e.g. all counts in one group of single observations) are
    tested at the prior.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts, matched to ``res_trend`` by name where named.
    res_trend : FitResult
        Location fit with the scale fixed at ``disp.trend`` (see :func:`refit_location`).
    disp : Dispersions
        The dispersion estimates (for the trend and ``base_mean``).
    layer : str, optional
        AnnData layer with the counts.
    abundance_trend : bool
        Let the prior QL dispersion trend with ``log base_mean`` (edgeR's default).
    deviance_bias : bool
        Divide the deviance by its expectation (default) rather than by ``d`` (edgeR 3's
        ``glmQLFit``).

    Returns
    -------
    QuasiLikelihood
        Raw and moderated QL dispersions.
    """
    d = data_of_fit(data, res_trend, layer=layer)
    n_feat = d.shape[1]
    r = 1.0 / disp.trend
    x = res_trend.loc.reduced
    s2 = np.full(n_feat, np.nan)
    df = np.zeros(n_feat, dtype=np.int64)
    divisor = np.full(n_feat, np.nan)
    testable = disp.usable & res_trend.converged.to_numpy()
    table = KappaTable.build(r[testable]) if deviance_bias and testable.any() else None

    def _pass3(sl: slice) -> None:
        use = np.flatnonzero(testable[sl])
        if not use.size:
            return
        y = d.block(sl)[:, use]
        mu = _means(res_trend, sl)[:, use]
        at = sl.start + use
        df[at] = zero_fit_residual_df(y, mu, x)
        dev = nb_deviance(y, mu, r[at])
        divisor[at] = expected_deviance(mu, r[at], x, table) if deviance_bias else df[at]
        with np.errstate(divide="ignore", invalid="ignore"):
            s2[at] = np.where((df[at] > 0) & (divisor[at] > 0), dev / divisor[at], 0.0)

    blocks.map_blocks(_pass3, blocks.feature_blocks(n_feat, blocks.block_size(d.shape[0])))
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = np.log(disp.base_mean) if abundance_trend else None
    squeezed = squeeze_var(s2, df.astype(np.float64), cov)
    return QuasiLikelihood(s2, squeezed, df, divisor if deviance_bias else None)
