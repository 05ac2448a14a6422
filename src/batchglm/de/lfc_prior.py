"""Prior scales of shrunken fold changes and s-values (for :func:`batchglm.de.lfc_shrink`).

* apeglm's Cauchy prior scale (Zhu, Ibrahim & Love 2018): the variance ``A`` of a
  zero-centred normal distribution of the true effects, estimated from maximum-likelihood
  effects and their variances with the Efron & Morris (1975) estimator; ``S =
  min(sqrt(A), 1)``.
* DESeq2's normal prior (Love, Huber & Anders 2014): matching the upper quantile of the
  maximum-likelihood log2 fold changes, weighted by each feature's expected precision
  (Hmisc's ``wtd.quantile``, as DESeq2's default ``betaPriorMethod="weighted"``).
* s-values (Stephens 2017, as apeglm's ``svalue``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.families.tails import norm_ppf

Array = NDArray[np.float64]


def apeglm_prior_scale(mle: Array, se: Array) -> float:
    """Cauchy prior scale of apeglm from maximum-likelihood effects and standard errors.

    Parameters
    ----------
    mle, se : ndarray
        Effects and standard errors, natural-log units, one per feature (finite).

    Returns
    -------
    float
        ``min(sqrt(A), 1)`` with ``A`` the Efron & Morris (1975) estimate of the variance
        of the true effects (apeglm's ``priorVar``), searched on ``[1e-6, 400]``;
        natural-log units.

    Raises
    ------
    ValueError
        If no feature has a finite effect and standard error.
    """
    from scipy import optimize  # here only: importing it slows `import batchglm.de`

    if mle.size == 0:
        raise ValueError(
            "no feature has a finite effect and standard error to estimate the "
            "prior scale from; pass `prior_scale=`."
        )
    s2, d = mle**2, se**2

    def excess(a: float) -> float:
        w = 1.0 / (2.0 * (a + d) ** 2)
        return float(np.sum((s2 - d) * w) / np.sum(w) - a)

    lo, hi = 1e-6, 400.0
    if excess(lo) < 0:
        a = lo
    elif excess(hi) > 0:
        a = hi
    else:
        a = float(optimize.brentq(excess, lo, hi, xtol=1e-14, rtol=1e-12))
    return min(float(np.sqrt(a)), 1.0)


def weighted_upper_quantile(x: Array, weights: Array, prob: float) -> float:
    """Weighted quantile as Hmisc's ``wtd.quantile(type="quantile", normwt=TRUE)``.

    The weights are rescaled to sum to the number of values, tied values pool their
    weights, and the quantile interpolates between the order statistics at cumulative
    weights ``floor(1 + (n - 1) prob)`` and the next one (with ``n`` the total weight), each
    the smallest value whose cumulative weight reaches it; with equal weights this is
    R's default (type 7) quantile. DESeq2 computes its normal prior with Hmisc's function
    (Love, Huber & Anders 2014; DESeq2's ``matchWeightedUpperQuantileForVariance``).

    Parameters
    ----------
    x : ndarray
        Values ``(m,)``, finite.
    weights : ndarray
        Non-negative weights ``(m,)``; values with weight 0 or ``NaN`` are left out.
    prob : float
        Probability in ``[0, 1]``.

    Returns
    -------
    float
        The weighted quantile.

    Raises
    ------
    ValueError
        If ``x`` and ``weights`` differ in length or no value has a positive weight.
    """
    if x.shape != weights.shape:
        raise ValueError(
            f"`x` has {x.size} values but `weights` has {weights.size}; they must match."
        )
    keep = np.isfinite(weights) & (weights > 0) & np.isfinite(x)
    if not np.any(keep):
        raise ValueError("no value has a positive finite weight; at least one must.")
    x, w = x[keep], weights[keep]
    w = w * (x.size / np.sum(w))
    ux, inv = np.unique(x, return_inverse=True)
    wts = np.bincount(inv, weights=w)
    n = float(np.sum(wts))
    order = 1.0 + (n - 1.0) * prob
    low = max(np.floor(order), 1.0)
    high = min(low + 1.0, n)
    frac = order % 1.0
    cum = np.cumsum(wts)
    idx = np.minimum(np.searchsorted(cum, [low, high], side="left"), ux.size - 1)
    return float((1.0 - frac) * ux[idx[0]] + frac * ux[idx[1]])


def normal_prior_sd(
    lfc_log2: Array, weights: Array | None = None, upper_quantile: float = 0.05
) -> float:
    """DESeq2's normal prior standard deviation by upper-quantile matching (log2 units).

    DESeq2's ``estimateBetaPriorVar`` with its default ``betaPriorMethod="weighted"``
    (Love, Huber & Anders 2014): the ``1 - upper_quantile`` quantile of ``|lfc|``, weighted
    by each feature's expected precision ``1 / (1 / baseMean + dispFit)``
    (:func:`weighted_upper_quantile`), matched to that of a zero-centred normal.

    Parameters
    ----------
    lfc_log2 : ndarray
        Maximum-likelihood log2 fold changes ``(F,)``; those with ``|lfc| >= 10`` are left
        out.
    weights : ndarray, optional
        Weight per feature ``(F,)`` (DESeq2: ``1 / (1 / baseMean + dispFit)``); ``None``
        gives the unweighted quantile (DESeq2's ``betaPriorMethod="quantile"``).
    upper_quantile : float
        The matched upper quantile of ``|lfc|``.

    Returns
    -------
    float
        ``quantile_w(|lfc|, 1 - upper_quantile) / z_{1 - upper_quantile / 2}``, at least
        ``1e-3``.

    Raises
    ------
    ValueError
        If no fold change is finite and below 10 in absolute value (with a positive
        weight).
    """
    use = np.abs(lfc_log2) < 10
    if weights is not None:
        use &= np.isfinite(weights) & (weights > 0)
    x = np.abs(lfc_log2[use])
    if x.size == 0:
        raise ValueError(
            "no feature has a finite fold change below 10 to estimate the prior "
            "from; pass `prior_scale=`."
        )
    w = np.ones_like(x) if weights is None else weights[use]
    q = weighted_upper_quantile(x, w, 1 - upper_quantile)
    return max(float(q / norm_ppf(1 - upper_quantile / 2)), 1e-3)


def svalues(lfsr: Array) -> Array:
    """S-values as apeglm computes them: the running mean of the sorted local false sign rates.

    Parameters
    ----------
    lfsr : ndarray
        Local false sign rate per feature (``NaN`` ignored).

    Returns
    -------
    ndarray
        For each feature, the mean lfsr of all features with a lfsr at most its own
        (Stephens 2017, as apeglm's ``svalue``); ``NaN`` where lfsr is ``NaN``.
    """
    out = np.full(lfsr.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(lfsr))
    order = ok[np.argsort(lfsr[ok], kind="stable")]
    out[order] = np.cumsum(lfsr[order]) / np.arange(1, order.size + 1)
    return out
