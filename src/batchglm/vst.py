"""Normalised counts and DESeq2's variance-stabilising transformation (VST).

For NB counts with the parametric mean-dispersion trend ``alpha(mu) = a0 + a1 / mu`` the
variance is ``mu + alpha(mu) mu^2 = (1 + a1) mu + a0 mu^2``. The transformation with unit
derivative ``1 / sqrt(variance)`` (up to a constant factor) has the closed form
(Anders and Huber 2010, Genome Biol. 11:R106; DESeq2's ``varianceStabilizingTransformation``
for ``fitType = "parametric"``)::

    vst(q) = log2((1 + a1 + 2 a0 q + 2 sqrt(a0 q (1 + a1 + a0 q))) / (4 a0))

with ``q`` the normalised count ``y / size_factor``. Its constants are chosen so that
``vst(q) - log2(q) -> 0`` for large ``q``: values are on the log2 scale of normalised
counts, and ``vst(0) = log2((1 + a1) / (4 a0))`` stays finite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import sparse

from batchglm.data import as_size_factors
from batchglm.inputs import as_data

if TYPE_CHECKING:
    from batchglm.dispersion.trend import Trend
    from batchglm.result import FitResult

Array = NDArray[np.float64]


def vst_parametric(q: ArrayLike, a0: float, a1: float) -> Array:
    """DESeq2's closed-form VST for the trend ``alpha(mu) = a0 + a1 / mu`` (log2 scale).

    Parameters
    ----------
    q : array_like
        Normalised counts (``counts / size_factors``), non-negative.
    a0, a1 : float
        Asymptotic dispersion and extra-Poisson coefficient of the trend, both positive.

    Returns
    -------
    ndarray
        Transformed values, same shape as ``q``, on the log2 scale.

    Raises
    ------
    ValueError
        When ``a0`` or ``a1`` is not positive.
    """
    if not (a0 > 0 and a1 > 0):
        raise ValueError(
            f"the VST needs a trend with positive coefficients a0 and a1, but a0={a0!r} and "
            f"a1={a1!r} were given."
        )
    q = np.asarray(q, dtype=np.float64)
    b = 1.0 + a1
    return np.asarray(
        np.log2((b + 2.0 * a0 * q + 2.0 * np.sqrt(a0 * q * (b + a0 * q))) / (4.0 * a0)),
        dtype=np.float64,
    )


def normalized_counts(
    data: Any, size_factors: ArrayLike | str = "median_ratio", *, layer: str | None = None
) -> pd.DataFrame | sparse.csr_array:
    """Divide counts by their observation's size factor.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        Counts ``(n_obs, n_features)``.
    size_factors : array_like or str
        ``(n_obs,)`` positive factors, or a method of :func:`batchglm.size_factors`.
    layer : str, optional
        AnnData layer with the counts.

    Returns
    -------
    pandas.DataFrame or scipy.sparse.csr_array
        Dense input gives a labelled ``(n_obs, n_features)`` DataFrame; sparse input stays
        sparse (same non-zero pattern).

    Raises
    ------
    ValueError
        For size factors of the wrong shape or not positive.
    """
    d = as_data(data, layer=layer)
    sf = _size_factors(d, size_factors)
    if d.kind == "sparse":
        return sparse.csr_array(sparse.diags_array(1.0 / sf) @ d.values)
    values = np.asarray(d.values, dtype=np.float64) / sf[:, None]
    return pd.DataFrame(values, index=d.obs_names, columns=d.feature_names)


def _size_factors(d: Any, size_factors: ArrayLike | str) -> Array:
    if isinstance(size_factors, str):
        from batchglm.size_factors import size_factors as named

        return named(d, size_factors)
    return as_size_factors(size_factors, d.shape[0])


def _parametric(trend: Trend) -> tuple[float, float]:
    if trend.kind != "parametric":
        raise ValueError(
            f"the closed-form VST needs the parametric dispersion trend a0 + a1 / mean, but "
            f"the trend is {trend.kind!r} (its fit failed or was not asked for); use "
            "log2(normalized_counts + 1) instead."
        )
    a0, a1 = trend.coef
    return float(a0), float(a1)


def _transform(d: Any, sf: Array, trend: Trend) -> pd.DataFrame:
    a0, a1 = _parametric(trend)
    out = np.empty(d.shape)
    step = max(1, (4 * 2**20) // (8 * d.shape[0]))
    for start in range(0, d.shape[1], step):
        sl = slice(start, min(start + step, d.shape[1]))
        out[:, sl] = vst_parametric(d.block(sl) / sf[:, None], a0, a1)
    return pd.DataFrame(out, index=d.obs_names, columns=d.feature_names)


def vst(
    data: Any,
    size_factors: ArrayLike | str = "median_ratio",
    *,
    layer: str | None = None,
    trend: Trend | None = None,
) -> pd.DataFrame:
    """Variance-stabilised counts, blind to any design (DESeq2's ``vst(blind=TRUE)``).

    Size factors are computed (or taken), an intercept-only NB model is fitted, and its
    Cox-Reid dispersions give the parametric trend ``a0 + a1 / mean`` (see
    :func:`batchglm.dispersion.estimate_dispersions`); the closed form of the module
    description then transforms the normalised counts.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        Counts ``(n_obs, n_features)``.
    size_factors : array_like or str
        ``(n_obs,)`` factors or a method of :func:`batchglm.size_factors`.
    layer : str, optional
        AnnData layer with the counts.
    trend : batchglm.dispersion.Trend, optional
        A parametric trend to use instead of fitting one.

    Returns
    -------
    pandas.DataFrame
        ``(n_obs, n_features)`` dense values on the log2 scale (VST values are not sparse:
        a zero count maps to ``log2((1 + a1) / (4 a0))``).

    Raises
    ------
    ValueError
        When the parametric trend cannot be fitted (or a non-parametric one is given).
    """
    d = as_data(data, layer=layer)
    sf = _size_factors(d, size_factors)
    if trend is None:
        from batchglm.dispersion.estimate import estimate_dispersions
        from batchglm.fit import fit

        res = fit(d.values, np.ones((d.shape[0], 1)), size_factors=sf, progress=False)
        trend = estimate_dispersions(d.values, res).trend_fit
    return _transform(d, sf, trend)


def vst_fit(res: FitResult, data: Any, *, layer: str | None = None) -> pd.DataFrame:
    """Variance-stabilised counts using a fit's design and size factors (``blind=FALSE``).

    Parameters
    ----------
    res : FitResult
        An NB fit of ``data`` with an intercept-only scale model.
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit.
    layer : str, optional
        AnnData layer with the counts.

    Returns
    -------
    pandas.DataFrame
        ``(n_obs, n_features)`` values on the log2 scale.

    Raises
    ------
    ValueError
        For a fit that is not NB with one dispersion per feature, or when the parametric
        trend cannot be fitted.
    """
    from batchglm.dispersion.estimate import estimate_dispersions

    d = as_data(data, layer=layer)
    trend = estimate_dispersions(d.values, res).trend_fit
    return _transform(d, res.size_factors, trend)
