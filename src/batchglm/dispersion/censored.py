"""Gene-wise dispersion estimates censored at the Poisson limit.

With few residual degrees of freedom many genes' adjusted profile likelihood (APL) keeps
rising, or stays flat to a ten-thousandth of a unit, all the way to ``alpha -> 0``: their
data give no evidence of overdispersion, and the maximiser's position (``1e-3``, ``1e-6``
or the bound ``1e-8``) says where the search stopped, not what the dispersion is. Such an
estimate is *censored* at zero. On the log scale it lands anywhere from 6 to 20 units
below the trend, and in the residuals ``log alpha_gene - log alpha_trend`` that the prior
variance and the dispersion-outlier rule are measured on, it is not a draw of
``log(chi2_df / df) + N(0, prior variance)``. DESeq2 leaves estimates below
``100 * minDisp`` out of those residuals (its line search runs censored genes down to
``minDisp``); here the same genes are told by their APL, not by where the search stopped.

Without this, two of five simulated 4 vs 4 tables with covariates (3 residual df) had
their prior variance matched at the grid's ceiling (8 and 7.6 instead of about 0.9), the
MAP dispersions fell to the censored gene-wise values and the likelihood-ratio test made
7-11 ``padj < 0.1`` calls on null-only tables (``docs/validation.md``, "Dispersion prior
at 3 residual df").
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: An estimate is censored at the Poisson limit where the APL's maximum over the search grid
#: is at most this much (natural-log likelihood units) above its value at the grid's last
#: point (``alpha = MIN_ALPHA``): a likelihood-ratio statistic of at most ``2e-4`` against
#: ``alpha = 0``. 1e-3 matched the simulated spread of log dispersions even better but moved
#: Sultan et al.'s calls away from DESeq2's (Jaccard 0.964 -> 0.946); see docs/validation.md.
CENSOR_APL_TOL = 1e-4


def censored_at_poisson(grid_apl: Array, tol: float = CENSOR_APL_TOL) -> NDArray[np.bool_]:
    """Tell which gene-wise dispersion estimates are censored at the Poisson limit.

    Parameters
    ----------
    grid_apl : ndarray
        ``(G, F)`` the APL (without prior) on
        :func:`batchglm.dispersion.cox_reid.log_r_grid`, whose last row is
        ``alpha = MIN_ALPHA``; columns of features that were not searched hold ``NaN``.
    tol : float
        Largest rise of the APL above its value at ``MIN_ALPHA`` that counts as none
        (natural-log likelihood units).

    Returns
    -------
    ndarray of bool
        ``(F,)``: ``max_t APL(t) - APL(t_last) <= tol``; ``False`` where the APL at
        ``MIN_ALPHA`` is not finite.

    Raises
    ------
    ValueError
        If ``tol`` is negative or ``grid_apl`` is not two-dimensional.

    Notes
    -----
    The rule follows DESeq2's ``estimateDispersionsPriorVar`` and ``estimateDispersionsMAP``
    (Love et al. 2014), which leave gene-wise estimates below ``100 * minDisp`` out of the
    residuals of the prior variance and of the outlier rule, stated on the likelihood
    instead of on the estimate's value.
    """
    if tol < 0:
        raise ValueError(f"`tol` must be at least 0, but {tol!r} was given.")
    if grid_apl.ndim != 2:
        raise ValueError(
            f"`grid_apl` must be 2-dimensional (grid points, features), but has "
            f"{grid_apl.ndim} dimension(s)."
        )
    last = grid_apl[-1]
    with np.errstate(invalid="ignore"):
        best = np.where(np.isfinite(grid_apl), grid_apl, -np.inf).max(axis=0, initial=-np.inf)
        return np.asarray(np.isfinite(last) & (best - last <= tol))
