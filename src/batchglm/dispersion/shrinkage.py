"""DESeq2-style empirical-Bayes shrinkage of dispersions with a log-normal prior.

Around the trend, ``log alpha_gene - log alpha_trend`` spreads for two reasons: true
biological variation of the dispersions (the prior variance) and the sampling variance of
each gene-wise estimate. With ``m`` observations and ``p`` location parameters the latter is
about ``trigamma((m - p) / 2)`` (the variance of the log of a scaled chi-squared with
``m - p`` degrees of freedom), so the prior variance is the robust (MAD) variance of the
residuals minus that, floored at 0.25 as in DESeq2.

With ``m - p <= 3`` the distribution of ``log`` of a chi-squared with so few degrees of
freedom is too skewed for that subtraction, and DESeq2 instead picks the prior variance
whose implied residual distribution (``log(chi2_(m-p) / (m-p)) + N(0, v)``) is closest to
the observed residuals in Kullback-Leibler divergence over a histogram
(:func:`kl_prior_variance`).
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray
from scipy import special

from batchglm.families.tails import chi2_cdf

Array = NDArray[np.float64]

#: DESeq2's floor on the prior variance of log dispersions.
MIN_PRIOR_VAR = 0.25
#: Gene-wise estimates this many prior standard deviations above the trend are kept
#: unshrunk (DESeq2's dispersion outliers).
OUTLIER_SD = 2.0
#: Residual df up to which the prior variance is matched by KL divergence (DESeq2).
MAX_DF_KL = 3
#: DESeq2's histogram of residuals: bins of width 0.5 on (-10, 10]; variances searched on
#: [0, 8]; its 1e4 simulated draws per candidate bound the smallest density it can see.
_KL_BREAKS = np.arange(-20, 21) / 2.0
_KL_GRID = np.linspace(0.0, 8.0, 200)
_KL_DRAWS = 10_000


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
        ``max(residual variance - trigamma(df / 2), 0.25)`` (natural-log scale).
    residual_var : float
        The residual variance (also used to flag dispersion outliers).

    Raises
    ------
    ValueError
        If ``df_residual < 1``.

    Notes
    -----
    With ``m - p <= 3`` the prior variance is :func:`kl_prior_variance` (floored at 0.25),
    as DESeq2's ``estimateDispersionsPriorVar``.
    """
    if df_residual < 1:
        raise ValueError(
            "shrinking dispersions needs residual degrees of freedom, but the location "
            f"design leaves {df_residual} (observations minus coefficients); use fewer "
            "coefficients or more observations."
        )
    resid_var = residual_variance(log_alpha, log_trend)
    if df_residual <= MAX_DF_KL:
        matched = kl_prior_variance(log_alpha - log_trend, df_residual)
        return max(matched, MIN_PRIOR_VAR), resid_var
    expected = float(special.polygamma(1, df_residual / 2.0))
    return max(resid_var - expected, MIN_PRIOR_VAR), resid_var


def _log_chi2_cells(df: int) -> tuple[Array, Array]:
    """Cells of ``log(chi2_df / df)``: midpoints and probabilities (fine quadrature)."""
    edges = np.linspace(-30.0, 4.0, 681)
    probs = np.diff(chi2_cdf(df * np.exp(edges), df))
    keep = probs > 1e-14
    return 0.5 * (edges[1:] + edges[:-1])[keep], probs[keep]


def _bin_probabilities(var: float, mids: Array, probs: Array) -> Array:
    """Histogram bin probabilities of ``log(chi2 / df) + N(0, var)``, truncated to the bins."""
    if var <= 0:
        upper = np.searchsorted(_KL_BREAKS, mids, side="left")
        inside = (upper >= 1) & (upper < _KL_BREAKS.size)
        out = np.bincount(upper[inside] - 1, probs[inside], minlength=_KL_BREAKS.size - 1)
    else:
        cdf = special.ndtr((_KL_BREAKS[None, :] - mids[:, None]) / np.sqrt(var))
        out = probs @ np.diff(cdf, axis=1)
    total = out.sum()
    return np.asarray(out / total if total > 0 else out)


@functools.cache
def _candidate_bins(df: int) -> Array:
    """Bin probabilities of every candidate variance of ``_KL_GRID``, ``(200, bins)``.

    They depend on ``df`` alone (not on the data): computed once per process (about 5e6
    normal CDFs, 2 s on one core) and kept; callers must not write to the array.
    """
    mids, probs = _log_chi2_cells(df)
    # All candidates at once: (grid, cells, breaks) normal CDFs.
    sd = np.sqrt(np.maximum(_KL_GRID[1:], 1e-300))[:, None, None]
    cdf = special.ndtr((_KL_BREAKS[None, None, :] - mids[None, :, None]) / sd)
    bins = np.einsum("c,gcb->gb", probs, np.diff(cdf, axis=2))
    out = np.vstack([_bin_probabilities(0.0, mids, probs), bins / bins.sum(axis=1)[:, None]])
    out.setflags(write=False)
    return out


def kl_prior_variance(residuals: Array, df_residual: int) -> float:
    """Prior variance matching the residuals' histogram in KL divergence (DESeq2, small df).

    DESeq2's ``estimateDispersionsPriorVar`` for ``m - p <= 3``: the residuals
    ``log alpha_gene - log alpha_trend`` in ``(-10, 10)`` are binned in steps of 0.5, and
    the variance ``v`` in ``[0, 8]`` is chosen that minimises
    ``sum_b d_obs(b) [log(d_obs(b) + s) - log(d_v(b) + s)]``, ``d_v`` the binned density of
    ``log(chi2_(m-p) / (m-p)) + N(0, v)``. DESeq2 draws ``1e4`` values per candidate and
    smooths the divergences with ``loess``; here the bin probabilities are computed by
    quadrature, the divergence is minimised on DESeq2's grid of 200 values and refined by
    Brent's method, and ``s`` (DESeq2: the smallest positive density of either histogram)
    is the smallest positive observed density or the density of one of ``1e4`` draws,
    whichever is smaller.

    Parameters
    ----------
    residuals : ndarray
        ``log alpha_gene - log alpha_trend`` of the features used for the trend (natural
        log).
    df_residual : int
        ``m - p`` (1 to 3).

    Returns
    -------
    float
        The minimising variance (not floored).

    Raises
    ------
    ValueError
        If no residual lies in ``(-10, 10)``.
    """
    from scipy import optimize  # here only (rare: 1-3 residual df): it costs ~0.6 s to load

    r = residuals[np.isfinite(residuals) & (residuals > -10.0) & (residuals < 10.0)]
    if r.size == 0:
        raise ValueError(
            "matching the prior variance needs residual log dispersions in (-10, 10), but "
            "none was given."
        )
    width = float(_KL_BREAKS[1] - _KL_BREAKS[0])
    # R's hist(): right-closed bins (a, b], the first one closed.
    idx = np.clip(np.searchsorted(_KL_BREAKS, r, side="left") - 1, 0, _KL_BREAKS.size - 2)
    d_obs = np.bincount(idx, minlength=_KL_BREAKS.size - 1) / (r.size * width)
    small = min(float(d_obs[d_obs > 0].min()), 1.0 / (_KL_DRAWS * width))
    mids, probs = _log_chi2_cells(df_residual)
    log_obs = np.log(d_obs + small)
    bins = _candidate_bins(df_residual)

    def kl(var: float) -> float:
        d_v = _bin_probabilities(var, mids, probs) / width
        return float(np.sum(d_obs * (log_obs - np.log(d_v + small))))

    values = np.sum(d_obs * (log_obs - np.log(bins / width + small)), axis=1)
    i = int(np.argmin(values))
    lo, hi = _KL_GRID[max(i - 1, 0)], _KL_GRID[min(i + 1, _KL_GRID.size - 1)]
    if hi <= lo:
        return float(_KL_GRID[i])
    best = optimize.minimize_scalar(kl, bounds=(lo, hi), method="bounded")
    return float(best.x) if best.fun <= values[i] else float(_KL_GRID[i])


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
