"""Independent filtering of low-count features before the multiple-testing correction.

DESeq2's rule (``results(..., independentFiltering=TRUE)``, ``pvalueAdjustment``; Bourgon,
Gentleman and Huber 2010, *PNAS* 107:9546): the filter statistic is ``baseMean``, the mean
of the normalised counts, which is independent of the test statistic under the null.
For 50 quantiles ``theta`` evenly spaced from the fraction of zero filter values to 0.95
(to 1 when that fraction is at least 0.95), the features with a filter value at or above
the ``theta`` quantile (R's default, type 7) are Benjamini-Hochberg adjusted on their own
and the rejections at ``alpha`` counted. A lowess curve (R's ``lowess``, ``f = 1/5``) is
fitted through the rejection counts; the chosen ``theta`` is the first whose count
exceeds the curve's maximum minus the root mean square of its residuals over the
non-zero counts. If no ``theta`` gives more than 10 rejections, nothing is filtered.
Filtered features get ``NaN`` adjusted p-values; their p-values stay. Given the same
p-values and ``baseMean`` values the threshold, ``theta`` and adjusted p-values equal
DESeq2's (``tests/test_independent_filtering_deseq2.py``, reference from
``benchmarks/independent_filtering_deseq2.R``): where :func:`batchglm.de.test` and DESeq2
filter at different thresholds on the same counts, their p-values differ, not the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from batchglm.de.multiple_testing import bh_qvalues

Array = NDArray[np.float64]

#: Number of quantiles tried (DESeq2).
N_THETA = 50
#: Lowess span over the quantile grid (DESeq2's ``f = 1/5``).
LOWESS_SPAN = 0.2


def lowess(x: ArrayLike, y: ArrayLike, f: float = 2.0 / 3.0, n_iter: int = 3) -> Array:
    """Robust locally weighted linear regression, as R's ``lowess`` (Cleveland 1979).

    Parameters
    ----------
    x : array_like
        Sorted abscissae ``(n,)``.
    y : array_like
        Values ``(n,)``.
    f : float
        Span: each local fit uses the ``max(floor(f n), 2)`` nearest points (and any
        others at the same distance), tricube weighted.
    n_iter : int
        Robustifying iterations (bisquare weights on residuals scaled by 6 times their
        median absolute value).

    Returns
    -------
    ndarray
        Smoothed values at ``x``. Unlike R there is no ``delta`` interpolation shortcut;
        for grids whose spacing exceeds 1 % of their range (as here) the results agree.
    """
    xv = np.asarray(x, dtype=np.float64)
    yv = np.asarray(y, dtype=np.float64)
    n = xv.size
    if n < 2:
        return yv.copy()
    ns = max(min(int(f * n + 1e-7), n), 2)
    dist = np.abs(xv[:, None] - xv[None, :])  # (n, n) with n the grid size (50), not n_obs
    h = np.sort(dist, axis=1)[:, ns - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = dist / h[:, None]
    tri = np.where(u <= 0.999, (1.0 - np.clip(u, 0.0, 1.0) ** 3) ** 3, 0.0)
    tri = np.where((u <= 0.001) | (h[:, None] == 0) & (dist == 0), 1.0, tri)
    robust = np.ones(n)
    x_range = xv[-1] - xv[0]
    fit = yv.copy()
    for it in range(n_iter + 1):
        w = tri * robust[None, :]
        total = w.sum(axis=1)
        good = total > 0
        w = np.where(good[:, None], w / np.where(good, total, 1.0)[:, None], 0.0)
        centre = w @ xv
        spread = (w * (xv[None, :] - centre[:, None]) ** 2).sum(axis=1)
        slope_ok = (h > 0) & (np.sqrt(spread) > 0.001 * x_range)
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(slope_ok, (xv - centre) / spread, 0.0)
        w = w * (1.0 + b[:, None] * (xv[None, :] - centre[:, None]))
        fit = np.where(good, w @ yv, yv)
        if it == n_iter:
            break
        resid = np.abs(yv - fit)
        scale = resid.mean()
        cmad = 6.0 * np.median(resid)
        if cmad < 1e-7 * scale or cmad == 0:
            break
        r = resid / cmad
        robust = np.where(r <= 0.001, 1.0, np.where(r <= 0.999, (1.0 - r**2) ** 2, 0.0))
    return np.asarray(fit)


@dataclass(frozen=True)
class FilterResult:
    """Outcome of independent filtering.

    Attributes
    ----------
    padj : ndarray
        Adjusted p-values; ``NaN`` for filtered features and those without a p-value.
    filtered : ndarray of bool
        Features below the threshold (their ``padj`` is ``NaN``).
    threshold : float
        The chosen ``baseMean`` threshold (features with ``baseMean`` below it are
        filtered); ``nan`` if no filtering was done.
    theta : float
        The chosen quantile of ``baseMean``.
    num_rejections : pandas.DataFrame
        Columns ``theta``, ``threshold``, ``numRej`` (rejections at ``alpha``) and
        ``lowess`` (the smoothed curve), one row per quantile tried.
    alpha : float
        The target false discovery rate used to count rejections.
    """

    padj: Array
    filtered: NDArray[np.bool_]
    threshold: float
    theta: float
    num_rejections: pd.DataFrame
    alpha: float


def independent_filtering(
    pvalue: ArrayLike, filter_stat: ArrayLike, alpha: float = 0.1
) -> FilterResult:
    """Choose a ``baseMean`` threshold that maximises rejections, as DESeq2 does.

    Parameters
    ----------
    pvalue : array_like
        P-values ``(n_features,)``; ``NaN`` for untested features (not counted as tests).
    filter_stat : array_like
        The filter statistic, DESeq2's ``baseMean`` (mean of normalised counts),
        ``(n_features,)``.
    alpha : float
        False discovery rate at which rejections are counted (DESeq2's default 0.1).

    Returns
    -------
    FilterResult
        Adjusted p-values with the chosen threshold (see the module description).

    Raises
    ------
    ValueError
        If the inputs differ in length or ``alpha`` is not in ``(0, 1)``.
    """
    p = np.asarray(pvalue, dtype=np.float64)
    stat = np.asarray(filter_stat, dtype=np.float64)
    if p.shape != stat.shape or p.ndim != 1:
        raise ValueError(
            f"`pvalue` and `filter_stat` must be 1-D of equal length, but their shapes are "
            f"{p.shape} and {stat.shape}."
        )
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must lie in (0, 1), but {alpha} was given.")
    finite = np.isfinite(stat)
    lower = float(np.mean(stat[finite] == 0)) if finite.any() else 0.0
    upper = 0.95 if lower < 0.95 else 1.0
    theta = np.linspace(lower, upper, N_THETA)
    cutoffs = np.quantile(stat[finite], theta) if finite.any() else np.full(N_THETA, np.nan)
    padj_all = np.full((p.size, N_THETA), np.nan)
    for k in range(N_THETA):  # one pass per quantile of a fixed 50-point grid
        use = finite & (stat >= cutoffs[k])
        if use.any():
            padj_all[use, k] = bh_qvalues(p[use])
    with np.errstate(invalid="ignore"):
        num_rej = (padj_all < alpha).sum(axis=0)
    curve = lowess(theta, num_rej.astype(np.float64), f=LOWESS_SPAN)
    if num_rej.max() <= 10:
        j = 0
    else:
        pos = num_rej > 0
        resid = num_rej[pos] - curve[pos] if pos.any() else np.zeros(1)
        thresh = curve.max() - np.sqrt(np.mean(resid**2))
        above = np.flatnonzero(num_rej > thresh)
        j = int(above[0]) if above.size else 0
    padj = padj_all[:, j]
    filtered = ~(finite & (stat >= cutoffs[j]))
    table = pd.DataFrame({"theta": theta, "threshold": cutoffs, "numRej": num_rej, "lowess": curve})
    return FilterResult(
        padj=padj,
        filtered=filtered,
        threshold=float(cutoffs[j]),
        theta=float(theta[j]),
        num_rejections=table,
        alpha=float(alpha),
    )
