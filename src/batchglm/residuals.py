"""Residuals of a fit: Pearson, deviance and (randomized) quantile residuals.

See :func:`residuals` for the definitions (Pearson, deviance, randomized quantile).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse, special

from batchglm.fitted import FeatureSelection, feature_positions, linear_predictors
from batchglm.inputs import data_of_fit
from batchglm.result import FitResult

Array = NDArray[np.float64]

KINDS = ("pearson", "deviance", "quantile")


def data_block(
    res: FitResult, data: Any, positions: NDArray[np.intp], layer: str | None = None
) -> Array:
    """Dense ``(n_obs, len(positions))`` block of the fit's data, checked against the fit.

    Parameters
    ----------
    res : FitResult
        The fit.
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The data of the fit, ``(n_obs, n_features)``.
    positions : ndarray of int
        Feature positions to read.
    layer : str, optional
        AnnData layer.

    Returns
    -------
    ndarray
        The block as float64; only these columns are densified.

    Raises
    ------
    ValueError
        When the shape differs from the fit's, or when ``data`` carries observation or
        feature names (DataFrame, AnnData) that differ from the fit's.
    """
    d = data_of_fit(data, res, layer=layer)
    block = d.values[:, positions]
    if sparse.issparse(block):
        block = block.toarray()
    return np.ascontiguousarray(np.asarray(block), dtype=np.float64)


def residuals(
    res: FitResult,
    data: Any,
    kind: str = "pearson",
    *,
    seed: int | None = 0,
    features: FeatureSelection = None,
    layer: str | None = None,
) -> pd.DataFrame:
    """Residuals of a fit, per observation and feature.

    Parameters
    ----------
    res : FitResult
        The fit.
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The data of the fit, ``(n_obs, n_features)``.
    kind : {"pearson", "deviance", "quantile"}
        See the module description for the definitions.
    seed : int or None
        Seed of ``numpy.random.default_rng`` for randomized quantile residuals of count
        families (draws are made for the selected block in row-major order, so another
        ``features`` selection gives other draws).
    features : str, slice, sequence of str or int, or None
        Features to compute; ``None`` for all. Only this block is densified.
    layer : str, optional
        AnnData layer of ``data``.

    Returns
    -------
    pandas.DataFrame
        ``(n_obs, n_selected)`` residuals, indexed by ``obs_names``, columns features.

    Raises
    ------
    ValueError
        For an unknown ``kind`` or ``data`` that is not the data of the fit.

    Notes
    -----
    Definitions, per observation ``i`` and feature ``j``, with ``mu`` the fitted mean (size
    factors included) and the fitted scale (NB size ``r``, normal ``sd``, beta ``phi``):

    * Pearson: ``(y - mu) / sqrt(Var(y))`` with the family's full variance (NB
      ``mu + mu^2 / r``, Poisson ``mu``, normal ``sd^2``, beta ``mu (1 - mu) / (1 + phi)``).
      For NB and Poisson this is statsmodels' ``resid_pearson`` at the same parameters; for
      normal and beta it is the standardised residual (statsmodels' Gaussian
      ``resid_pearson`` is ``y - mu``; divide it by ``sd`` to compare).
    * Deviance: ``sign(y - mu) sqrt(d)`` with ``d`` the unit deviance at the fitted scale, twice
      the log-likelihood lost against the saturated mean (statsmodels' ``resid_deviance`` for
      NB and Poisson; ``(y - mu) / sd`` for normal; Ferrari and Cribari-Neto's for beta).
    * Quantile: ``Phi^{-1}(F(y))`` (Dunn and Smyth 1996, J. Comput. Graph. Stat. 5:236). For
      counts ``F(y)`` is drawn uniformly between ``P(Y < y)`` and ``P(Y <= y)`` ("randomized"
      quantile residuals): exactly standard normal at the true parameters, approximately so at
      fitted ones. Upper tails
      are transformed from the survival function, keeping precision far out.

    All residuals are unitless. The fit's ``offset`` is part of ``mu``; observation
    ``weights`` are not applied: a residual is that of one observation (as statsmodels'
    residuals under ``freq_weights``), whatever its weight.
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}, but {kind!r} was given.")
    fam = res.family
    pos = feature_positions(res, features)
    y = data_block(res, data, pos, layer)
    eta_loc, eta_scale = linear_predictors(res, pos)
    mu = fam.fitted_mean(eta_loc)
    if kind == "pearson":
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (y - mu) / np.sqrt(fam.variance(mu, eta_scale))
    elif kind == "deviance":
        out = np.sign(y - mu) * np.sqrt(fam.unit_deviance(y, mu, eta_scale))
    else:
        below, at, above = fam.cdf_parts(y, mu, eta_scale)
        v = np.random.default_rng(seed).uniform(size=y.shape)
        lower = below + v * at
        upper = above + (1.0 - v) * at
        out = np.where(lower < 0.5, special.ndtri(lower), -special.ndtri(upper))
    return pd.DataFrame(out, index=res.obs_names, columns=res.feature_names[pos])
