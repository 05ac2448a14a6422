"""Effective residual degrees of freedom of separated fits: observations fitted at zero drop out.

When a fit drives some observations' means to zero (status ``separated``), whether along
the tested effect (a condition with only zeros) or along nuisance effects (``~ batch + RIN
+ age + condition`` on 4 vs 4 samples can place zeros in both conditions exactly), those
observations' likelihood terms sit at their supremum: they inform neither the remaining
effects nor the dispersion. The feature's effective residual degrees of freedom are then
``(observations not fitted at zero) - rank(X C restricted to them)``, the count edgeR's
``glmQLFit`` uses for its quasi-likelihood residual df at fitted zeros (Lun, Chen & Smyth
2016, *Methods Mol Biol* 1418: 391-416; Lund et al. 2012, *SAGMB* 11(5): 8).

With 0 effective residual df the non-zero observations are interpolated exactly: the
gene's own data cannot check the dispersion, and a Wald or likelihood-ratio statistic is
referred to an asymptotic distribution whose only evidence is which observations are zero.
:func:`no_residual_df` finds these features; the tests then judge them by the exact
conditional test of their zeros (:mod:`batchglm.de.zero_side`), as features separated in
the tested direction (``docs/validation.md``, "Covariate-separated genes").
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.design import column_rank
from batchglm.fitted import linear_predictors
from batchglm.obs_weights import counted_offsets, is_weighted
from batchglm.result import FitResult
from batchglm.solvers.objective import unique_rows
from batchglm.solvers.status import Status

Array = NDArray[np.float64]

#: Observations whose fitted log-mean (offsets included) lies below the family's
#: ``separated_eta`` plus this margin count as fitted at zero (as in
#: :mod:`batchglm.de.separation`).
_ETA_MARGIN = 3.0

#: Elements of one (observations x features) block of fitted log-means.
_CHUNK_ELEMENTS = 1 << 20

#: Log-mean standing in for a mean of 0 at zero counts (their log-likelihood is then 0 to
#: double precision).
_ETA_ZERO = -700.0


def effective_residual_df(res: FitResult, features: NDArray[np.intp]) -> NDArray[np.int64]:
    """Residual degrees of freedom left after observations fitted at zero drop out.

    Parameters
    ----------
    res : FitResult
        A fit with a log-link count family (NB, Poisson).
    features : ndarray of int
        Positions of the features to evaluate.

    Returns
    -------
    ndarray of int
        ``(len(features),)``: ``n_K - rank(X C)[K]`` with ``K`` the observations of positive
        weight whose fitted mean (size factors and offsets included) is not numerically zero
        (log-mean at least the family's ``separated_eta + 3``, a mean above about 2e-8).
        For a fit without fitted zeros this is ``n_obs - rank(X C)``. Families without a
        separation threshold get ``n_counted - rank(X C)``.

    Notes
    -----
    Work and memory are ``(n_obs x chunk)`` log-means; ranks are computed once per distinct
    pattern of kept observations (a few per design), not per feature.
    """
    features = np.asarray(features, dtype=np.intp)
    out = np.zeros(features.size, dtype=np.int64)
    if features.size == 0:
        return out
    xc = res.loc.reduced
    n_obs = xc.shape[0]
    fam = res.family
    k = res.loc.n_free
    threshold = -np.inf if fam.separated_eta is None else fam.separated_eta + _ETA_MARGIN
    rows, inverse = unique_rows(xc)
    step = max(1, _CHUNK_ELEMENTS // max(n_obs, 1))
    ranks: dict[bytes, int] = {}
    for start in range(0, features.size, step):
        part = features[start : start + step]
        offsets = counted_offsets(res, part)  # (n, 1) or (n, f); -inf at weight 0
        eta = rows[inverse] @ res.theta_free[part, :k].T + offsets
        kept = np.broadcast_to(eta >= threshold, (n_obs, part.size))
        patterns, which = np.unique(kept.T, axis=0, return_inverse=True)
        which = np.asarray(which).ravel()
        df = np.empty(patterns.shape[0], dtype=np.int64)
        for p, pattern in enumerate(patterns):
            key = np.packbits(pattern).tobytes()
            if key not in ranks:
                ranks[key] = column_rank(xc[pattern]) if pattern.any() else 0
            df[p] = int(pattern.sum()) - ranks[key]
        out[start : start + part.size] = df[which]
    return out


def no_residual_df(res: FitResult) -> NDArray[np.bool_]:
    """Separated features whose non-zero-fitted observations leave no residual df.

    Parameters
    ----------
    res : FitResult
        The fit of a test.

    Returns
    -------
    ndarray of bool
        ``(n_features,)``: True where the status is ``separated`` and
        :func:`effective_residual_df` is 0: every observation is either fitted at zero or
        interpolated exactly, so the statistic's only evidence is the pattern of zeros.
    """
    out = np.zeros(len(res.feature_names), dtype=bool)
    if res.family.separated_eta is None:
        return out
    sep = np.flatnonzero(res.status_codes == Status.SEPARATED)
    if sep.size:
        out[sep] = effective_residual_df(res, sep) <= 0
    return out


def supremum_loglik(res: FitResult, values: Any = None) -> Array:
    """Log-likelihood per feature, at its supremum where no residual df is left.

    Parameters
    ----------
    res : FitResult
        An NB or Poisson fit.
    values : array_like or scipy.sparse, optional
        Its counts ``(n_obs, n_features)`` in the fit's order; by default the data the fit
        holds (``res.data``).

    Returns
    -------
    ndarray
        ``(n_features,)``: ``res.loglik_values``, except for features of
        :func:`no_residual_df` (separated, every observation either fitted at zero or
        interpolated), where it is the larger of the stored value and the saturated
        log-likelihood ``sum_i log f(y_i | mu_i = y_i)`` at the fit's scale (each count's
        own maximum; ``log f(0 | 0) = 0``). That is the supremum such a fit approaches: the
        design restricted to the non-zero-fitted observations has full row rank, so any
        means there are reachable while the zero-fitted ones run to 0. A sparse feature
        whose several run-off directions creep stops at ``max_iter`` well below it (a null
        gene with one read in 8 samples, ``~ batch + RIN + age + condition``: 0.3-2.5
        below, and below the reduced fit's log-likelihood). Unchanged without data, for
        weighted fits, mixed models and other families.
    """
    out = np.array(res.loglik_values, dtype=np.float64, copy=True)
    if values is None:
        values = None if res.data is None else res.data.values
    counts = any(res.family == f for f in ("nb", "poisson"))
    if values is None or is_weighted(res) or not counts or res.random is not None:
        return out
    hit = np.flatnonzero(no_residual_df(res))
    if hit.size == 0:
        return out
    y = values[:, hit]
    y = y.toarray() if hasattr(y, "toarray") else np.asarray(y, dtype=np.float64)
    _, eta_scale = linear_predictors(res, hit)
    with np.errstate(divide="ignore"):
        eta_sat = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), _ETA_ZERO)
    sat = res.family.loglik(y, eta_sat, eta_scale).sum(axis=0)
    out[hit] = np.maximum(out[hit], sat)
    return out
