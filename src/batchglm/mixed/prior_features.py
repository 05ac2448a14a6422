"""Which features' group-level variances the moderation prior is estimated from.

The prior of :mod:`batchglm.mixed.moderation` (its trend in mean expression, limma's prior
df, and the grid of the nonparametric prior, :mod:`batchglm.mixed.variance_npmle`) is
estimated across features from each feature's group-level variance ``s_f^2``. Two kinds of
features have an ``s_f^2`` that estimates no variance, and are left out of the estimate
(they still get the prior at their mean expression, and their tests are taken over at the
level of the donors by :mod:`batchglm.de.mixed_separation`):

* **Fixed effect running off** (separated features: counts in one condition only): some
  group's mean fixed-effect linear predictor ``xbar_g^T beta_f`` (natural log, size factors
  left out) lies below the family's ``separated_eta + 3``, the margin of
  :mod:`batchglm.de.separation`. The coefficient runs to about -30 with a standard error
  near ``1e5``, so ``s_f^2`` is about ``1e10`` times the trend of the other features.
* **Both variance components on their bounds** (NB scale at its Poisson end, status
  ``scale_at_bound``, and the donor variance at 0): genes with a handful of reads, whose
  donors' log levels are all the pseudocount, so that ``s_f^2`` measures the pseudocount,
  not the donors (0.006-4 times the trend of the other features, median 0.035).

Measured on a user's layout (300 genes, 8 on/off and 8 nearly all-zero genes, 8 seeds at
4 vs 4 and 6 vs 6 donors; ``docs/mixed_model.md``, "Power against pseudobulk"): these
few features made the residual variance of ``log s_f^2`` about the trend 6-10 instead of
0.5-0.6, which put limma's prior df at 0.7-2.6 (11-30 without them), pulled the trend
below the bulk of the features (median ``s_f^2 / s0^2`` about 4 instead of 1) and spread
the nonparametric prior's 50 grid points over 39 natural-log units (a factor 2.2 between
neighbours). Our own rule, the analogue of edgeR's exclusion of zero-count and separated
features from its dispersion and QL prior estimates.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.result import FitResult
from batchglm.solvers.status import Status

#: Natural-log margin above the family's ``separated_eta`` (as in :mod:`batchglm.de.separation`).
ETA_MARGIN = 3.0


def prior_features(
    res: FitResult, s2: NDArray[np.float64], at_zero: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """Features whose group-level variance enters the estimate of the moderation prior.

    Parameters
    ----------
    res : FitResult
        A mixed fit (``res.small_sample`` with ``group_design`` set).
    s2 : ndarray
        ``(F,)`` group-level variances ``s_f^2`` (natural-log scale, squared).
    at_zero : ndarray of bool
        ``(F,)`` features whose donor variance is at 0 (their ``s_f^2`` is the residual mean
        square of the donors' log levels).

    Returns
    -------
    ndarray of bool
        ``(F,)`` converged features with a finite positive ``s_f^2`` and a finite trend
        covariate, neither running off nor on both variance bounds (see the module notes).

    Raises
    ------
    ValueError
        When ``res`` is not a mixed fit with a group-level design.
    """
    ss = res.small_sample
    if ss is None or ss.group_design is None:
        raise ValueError(
            "the features of the moderation prior need a fit with `random_effects` and a "
            "group-level design; the given fit has none."
        )
    eta = ss.group_design @ res.coef_loc.to_numpy().T  # (G, F) group means, natural log
    ok = res.converged.to_numpy() & np.isfinite(s2) & (s2 > 0) & np.all(np.isfinite(eta), axis=0)
    eta_sep = res.family.separated_eta
    if eta_sep is not None:
        with np.errstate(invalid="ignore"):
            ok &= ~(eta.min(axis=0) < eta_sep + ETA_MARGIN)
    ok &= ~(at_zero & (res.status_codes == Status.SCALE_AT_BOUND))
    return np.asarray(ok, dtype=bool)
