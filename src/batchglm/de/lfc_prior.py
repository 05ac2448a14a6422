"""Prior scales of shrunken fold changes and s-values (for :func:`batchglm.de.lfc_shrink`).

* apeglm's Cauchy prior scale (Zhu, Ibrahim & Love 2018): the variance ``A`` of a
  zero-centred normal distribution of the true effects, estimated from maximum-likelihood
  effects and their variances with the Efron & Morris (1975) estimator; ``S =
  min(sqrt(A), 1)``.
* DESeq2's normal prior (Love, Huber & Anders 2014): upper-quantile matching of the
  maximum-likelihood log2 fold changes.
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


def normal_prior_sd(lfc_log2: Array, upper_quantile: float = 0.05) -> float:
    """DESeq2's normal prior standard deviation by upper-quantile matching (log2 units).

    Parameters
    ----------
    lfc_log2 : ndarray
        Maximum-likelihood log2 fold changes; those with ``|lfc| >= 10`` are left out.
    upper_quantile : float
        The matched upper quantile of ``|lfc|``.

    Returns
    -------
    float
        ``quantile(|lfc|, 1 - upper_quantile) / z_{1 - upper_quantile / 2}``, at least
        ``1e-3``.

    Raises
    ------
    ValueError
        If no fold change is finite and below 10 in absolute value.
    """
    x = np.abs(lfc_log2[np.abs(lfc_log2) < 10])
    if x.size == 0:
        raise ValueError(
            "no feature has a finite fold change below 10 to estimate the prior "
            "from; pass `prior_scale=`."
        )
    sd = float(np.quantile(x, 1 - upper_quantile) / norm_ppf(1 - upper_quantile / 2))
    return max(sd, 1e-3)


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
