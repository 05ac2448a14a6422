"""A conditional Poisson floor for the p-values of separated features.

A feature separated in the tested direction has only zeros on one side (the observations
whose fitted mean the full fit drives to 0). Its likelihood-ratio statistic is referred to
a chi-squared distribution, an approximation that fails for a handful of reads: on
Marioni et al.'s kidney/liver table, genes with 3 reads, all in one liver sample, got
p = 0.05 (DESeq2's Wald test: 0.34), and 124 genes with a zero group and 3-9 reads were
called at padj < 0.1 that DESeq2 does not call.

Conditionally on the feature's total count ``T``, under the reduced (null) model with
Poisson counts each read falls on the zero side with probability
``q = sum_zero mu0_j / sum_j mu0_j`` (``mu0`` the reduced fit's means, size factors and
nuisance effects included), so "no read on the zero side" has probability
``(1 - q)^T``: the exact conditional test of the observed separation (for two groups and
equal nuisance, the binomial test of all reads in one group). Over-dispersed counts clump,
which makes that event *more* likely under the null, so the Poisson value is a lower bound
of what any NB null allows. The tested p-value is therefore never below
``min(1, 2 (1 - q)^T)`` (two-sided): a gene whose few reads sit on one side cannot be more
significant than the Poisson sampling of those reads allows. For 30 reads against zeros the
floor is about 2e-9 and the likelihood ratio decides, as before. With other free groups or
covariates the floor conditions on the feature's total only (not on the nuisance
parameters' sufficient statistics), which makes it smaller than the exact conditional
test: weaker, never stricter.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Observations whose full-fit mean is below this fraction of the feature's largest fitted
#: mean are on the zero side (separated fits drive them to about 1e-8 and below).
ZERO_SIDE_RTOL = 1e-6


def zero_side_floor(total: Array, mu_full: Array, mu_reduced: Array) -> Array:
    """Two-sided conditional Poisson p-value of "no read on the zero side", per feature.

    Parameters
    ----------
    total : ndarray
        ``(F,)`` total count of each feature over the fit's observations.
    mu_full : ndarray
        ``(n_obs, F)`` fitted means of the full (separated) fit, size factors included.
    mu_reduced : ndarray
        ``(n_obs, F)`` fitted means of the reduced fit (``L theta = 0``), likewise.

    Returns
    -------
    ndarray
        ``(F,)`` ``min(1, 2 (1 - q)^T)`` with ``q`` the reduced model's share of the zero
        side; 0 (no floor) where no observation is on the zero side.

    Notes
    -----
    Source: the conditional (on the total) test of a Poisson model, as the exact binomial
    comparison of two Poisson rates (e.g. Przyborowski and Wilenski 1940, *Biometrika* 31:
    313-323); used here only as a floor under the likelihood-ratio p-value.
    """
    zero = mu_full < ZERO_SIDE_RTOL * mu_full.max(axis=0, keepdims=True)
    mass = mu_reduced.sum(axis=0)
    share = np.where(zero, mu_reduced, 0.0).sum(axis=0) / np.where(mass > 0, mass, 1.0)
    share = np.clip(share, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        one_sided = np.exp(np.asarray(total, dtype=np.float64) * np.log1p(-share))
    return np.where(zero.any(axis=0), np.minimum(1.0, 2.0 * one_sided), 0.0)
