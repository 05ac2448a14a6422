"""DESeq2-style empirical-Bayes shrinkage of dispersions with a log-normal prior.

Around the trend, ``log alpha_gene - log alpha_trend`` spreads for two reasons: true
biological variation of the dispersions (the prior variance) and the sampling variance of
each gene-wise estimate. With ``m`` observations and ``p`` location parameters the latter is
about ``trigamma((m - p) / 2)`` (the variance of the log of a scaled chi-squared with
``m - p`` degrees of freedom), so the prior variance is the robust (MAD) variance of the
residuals minus that, floored at 0.25 as in DESeq2.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import special

Array = NDArray[np.float64]

#: DESeq2's floor on the prior variance of log dispersions.
MIN_PRIOR_VAR = 0.25
#: Gene-wise estimates this many prior standard deviations above the trend are kept
#: unshrunk (DESeq2's dispersion outliers).
OUTLIER_SD = 2.0


def residual_variance(log_alpha: Array, log_trend: Array) -> float:
    """Robust variance of ``log alpha - log trend`` (squared MAD, normal consistency).

    Parameters
    ----------
    log_alpha, log_trend : ndarray
        Gene-wise log dispersions and the trend's, for the features used in the fit.

    Returns
    -------
    float
        ``(1.4826 * median(|d - median(d)|))^2``.
    """
    d = log_alpha - log_trend
    mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    return mad**2


def prior_variance(log_alpha: Array, log_trend: Array, df_residual: int) -> tuple[float, float]:
    """Prior variance of log dispersions around the trend.

    Parameters
    ----------
    log_alpha, log_trend : ndarray
        Gene-wise log dispersions and the trend's, for features with a usable estimate.
    df_residual : int
        ``m - p``: observations minus location parameters.

    Returns
    -------
    prior_var : float
        ``max(residual variance - trigamma(df / 2), 0.25)``.
    residual_var : float
        The residual variance (also used to flag dispersion outliers).

    Raises
    ------
    ValueError
        When there are no residual degrees of freedom.

    Notes
    -----
    DESeq2 replaces ``trigamma((m - p) / 2)`` by a simulation when ``m - p <= 3``; here the
    formula is used throughout (the floor of 0.25 then usually decides).
    """
    if df_residual < 1:
        raise ValueError(
            "shrinking dispersions needs residual degrees of freedom, but the location "
            f"design leaves {df_residual} (observations minus coefficients); use fewer "
            "coefficients or more observations."
        )
    resid_var = residual_variance(log_alpha, log_trend)
    expected = float(special.polygamma(1, df_residual / 2.0))
    return max(resid_var - expected, MIN_PRIOR_VAR), resid_var


def dispersion_outliers(
    log_alpha_gene: Array, log_trend: Array, residual_var: float
) -> NDArray[np.bool_]:
    """Features whose gene-wise dispersion lies far above the trend.

    Parameters
    ----------
    log_alpha_gene, log_trend : ndarray
        Gene-wise and trend log dispersions per feature.
    residual_var : float
        Residual variance from :func:`prior_variance`.

    Returns
    -------
    ndarray of bool
        ``log alpha_gene > log trend + 2 sqrt(residual_var)``: for these DESeq2 keeps the
        gene-wise estimate, since shrinking a real high-variance gene towards the trend
        would make its tests anti-conservative.
    """
    return np.asarray(log_alpha_gene > log_trend + OUTLIER_SD * np.sqrt(residual_var))
