"""Quasi-likelihood dispersions with an empirical-Bayes (scaled F) prior.

As in edgeR's ``glmQLFit`` and glmGamPoi's ``overdispersion_shrinkage``: the NB dispersion of
every feature is fixed at the mean-dispersion trend, and what the trend misses is carried by
a per-feature quasi-likelihood (QL) dispersion ``s2``, the deviance over its expectation
(``d`` for large counts, see :mod:`batchglm.dispersion.expected_deviance`). Under the
model ``s2 ~ s0^2 chi2(d) / d``, and across features ``1 / s0^2``-scaled variances follow a
scaled inverse chi-squared prior with ``d0`` degrees of freedom, so ``s2`` is marginally
``s0^2 F(d, d0)``. The prior is fitted by moments of ``log s2`` (limma's ``fitFDist`` as
used by ``squeezeVar``), optionally with ``s0^2`` trending with abundance; the posterior
``(d0 s0^2 + d s2) / (d0 + d)`` has ``d0 + d`` degrees of freedom (moderated df).

Observations whose count is zero and whose fitted mean is practically zero (a group of
zeros drives its coefficient towards minus infinity) add nothing to the deviance and carry
no information about the QL dispersion, so they are not counted in ``d``: as edgeR's
``glmQLFit`` (its ``zerofit`` and ``.residDF``), ``d`` is the number of the other
observations minus the rank of the design restricted to them (:func:`zero_fit_residual_df`).
A feature left with ``d = 0`` has no QL information of its own; it is left out of the prior
fit and gets the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

from batchglm.design import column_rank

Array = NDArray[np.float64]


def nb_deviance(y: Array, mu: Array, r: Array) -> Array:
    """Residual deviance of NB fits per feature.

    Parameters
    ----------
    y : ndarray
        Counts ``(n_obs, F)``.
    mu : ndarray
        Fitted means ``(n_obs, F)``.
    r : ndarray
        NB size per feature ``(F,)`` (``alpha = 1 / r``).

    Returns
    -------
    ndarray
        ``2 sum_i [y log(y / mu) - (y + r) log((y + r) / (mu + r))]`` per feature.
    """
    rr = np.broadcast_to(r[None, :], y.shape)
    mu = np.maximum(mu, 1e-300)
    term1 = special.xlogy(y, y) - special.xlogy(y, mu)
    # (y + r) log1p((y - mu) / (mu + r)) stays accurate in the Poisson limit (r huge).
    term2 = (y + rr) * np.log1p((y - mu) / (mu + rr))
    unit = 2.0 * (term1 - term2)
    return np.asarray(np.maximum(unit, 0.0).sum(axis=0))


def trigamma_inverse(x: float) -> float:
    """Solve ``trigamma(y) = x`` for ``y > 0`` by Newton's method.

    Parameters
    ----------
    x : float
        Positive target value.

    Returns
    -------
    float
        The solution.
    """
    if x > 1e7:
        return 1.0 / np.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    # trigamma(y) ~ 1/y + 1/(2 y^2) for large y; this start makes Newton monotone.
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        step = tri * (1.0 - tri / x) / float(special.polygamma(2, y))
        y += step
        if -step / y < 1e-10:
            break
    return y


@dataclass(frozen=True)
class SqueezedVariances:
    """Posterior quasi-likelihood dispersions.

    Attributes
    ----------
    var_post : ndarray
        Posterior (moderated) QL dispersion per feature (the prior where ``d = 0``).
    var_prior : ndarray
        Prior ``s0^2`` per feature (constant without a covariate).
    df_prior : float
        Prior degrees of freedom ``d0`` (``inf`` when the ``s2`` spread no more than
        sampling explains).
    df_total : ndarray
        ``d0 + d`` per feature, capped at the summed residual df of all features fitted.
    """

    var_post: Array
    var_prior: Array
    df_prior: float
    df_total: Array


#: A count below this whose fitted mean is below it too is a fitted zero (edgeR's 1e-4,
#: on the count scale).
ZERO_FIT_TOL = 1e-4


def zero_fit_residual_df(
    y: Array, mu: Array, x: Array, *, tol: float = ZERO_FIT_TOL
) -> NDArray[np.int64]:
    """Residual degrees of freedom per feature, not counting fitted zeros.

    An observation is a fitted zero when its count and its fitted mean are both below
    ``tol``; its deviance is 0 whatever the dispersion, so it says nothing about it. The
    residual df of a feature is the number of other observations minus the rank of the
    design restricted to them (edgeR's ``.residDF``, Lun & Smyth 2017, used by
    ``glmQLFit``). Features are grouped by their pattern of fitted zeros, one rank per
    distinct pattern.

    Parameters
    ----------
    y : ndarray
        Counts ``(n_obs, F)``.
    mu : ndarray
        Fitted means ``(n_obs, F)``, on the count scale (size factors included).
    x : ndarray
        Location design after constraints ``(n_obs, k)``.
    tol : float
        Threshold of a fitted zero on the count scale.

    Returns
    -------
    ndarray of int
        Residual df per feature ``(F,)``: ``n_obs - rank(x)`` without fitted zeros, 0 when
        every observation is a fitted zero or the remaining ones fit exactly.
    """
    n_obs, n_feat = y.shape
    zero = (y < tol) & (mu < tol)
    n_zero = zero.sum(axis=0)
    df = np.full(n_feat, n_obs - column_rank(x), dtype=np.int64)
    df[n_zero == n_obs] = 0
    some = np.flatnonzero((n_zero > 0) & (n_zero < n_obs))
    if some.size:
        patterns, inverse = np.unique(zero[:, some].T, axis=0, return_inverse=True)
        kept = ~patterns
        df_pattern = np.array([int(k.sum()) - column_rank(x[k]) for k in kept], dtype=np.int64)
        df[some] = df_pattern[np.ravel(inverse)]
    return np.maximum(df, 0)


def _basis(covariate: Array, ok: NDArray[np.bool_]) -> Array:
    """Polynomial basis in a standardised covariate; degree grows with the feature count.

    limma uses a natural spline with 1 to 4 degrees of freedom (more for more features);
    a polynomial of the same dimension is used here. It is standardised on the features
    fitted (``ok``) and evaluated for all of them with the covariate clipped to the fitted
    range, so that features left out of the fit get the prior at the nearest end rather
    than a polynomial extrapolation.
    """
    n_ok = int(ok.sum())
    fitted = covariate[ok]
    df = 1 + (n_ok >= 3) + (n_ok >= 6) + (n_ok >= 30)
    df = min(df, len(np.unique(fitted)))
    centre, spread = fitted.mean(), fitted.std() or 1.0
    z = (np.clip(covariate, fitted.min(), fitted.max()) - centre) / spread
    return np.column_stack([z**j for j in range(df)])


def squeeze_var(s2: Array, df: float | Array, covariate: Array | None = None) -> SqueezedVariances:
    """Empirical-Bayes moderation of variances (limma's ``squeezeVar``, Smyth 2004).

    Parameters
    ----------
    s2 : ndarray
        QL dispersion per feature ``(F,)``; ``NaN`` marks features left out (they get
        ``NaN``).
    df : float or ndarray
        Residual degrees of freedom of each ``s2`` (scalar or ``(F,)``). Features with
        ``df = 0`` carry no information: they are left out of the prior fit and their
        posterior is the prior, with ``d0`` degrees of freedom.
    covariate : ndarray, optional
        Per-feature covariate of the prior ``(F,)`` (e.g. log mean); the prior's
        ``log s0^2`` then follows a polynomial trend in it.

    Returns
    -------
    SqueezedVariances
        Prior and posterior.

    Raises
    ------
    ValueError
        If fewer than 2 features have a finite ``s2`` and positive ``df``, or ``df`` is
        negative.
    """
    dfs = np.broadcast_to(np.asarray(df, dtype=np.float64), s2.shape)
    if np.any(dfs < 0):
        raise ValueError(
            f"residual degrees of freedom must be >= 0, but the smallest given is "
            f"{float(np.min(dfs))}."
        )
    usable = np.isfinite(s2) & np.isfinite(dfs)
    if covariate is not None:
        usable &= np.isfinite(covariate)
    ok = usable & (dfs > 0)
    n_ok = int(ok.sum())
    if n_ok < 2:
        raise ValueError(
            "moderating quasi-likelihood dispersions needs at least 2 testable features "
            f"with positive residual degrees of freedom, but there are {n_ok} (residual df "
            f"given: {np.unique(dfs[np.isfinite(dfs)])[:5].tolist()})."
        )
    d = dfs[ok]
    x = np.maximum(s2[ok], 0.0)
    m = float(np.median(x))
    # Zero deviances would give log(0); limma floors them likewise.
    x = np.maximum(x, 1e-5 * (m if m > 0 else 1.0))
    e = np.log(x) - special.digamma(d / 2.0) + np.log(d / 2.0)
    if covariate is None:
        basis = np.ones((s2.shape[0], 1))
    else:
        basis = _basis(np.where(usable, covariate, 0.0), ok)
    coef, *_ = np.linalg.lstsq(basis[ok], e, rcond=None)
    emean_all = basis @ coef
    emean = emean_all[ok]
    resid_df = max(n_ok - basis.shape[1], 1)
    evar = float(np.sum((e - emean) ** 2) / resid_df) - float(
        np.mean(special.polygamma(1, d / 2.0))
    )
    if evar > 0:
        d0 = 2.0 * trigamma_inverse(evar)
        s0 = np.exp(emean_all + special.digamma(d0 / 2.0) - np.log(d0 / 2.0))
    else:
        d0 = np.inf
        s0 = np.exp(emean_all)
    var_prior = np.where(usable, s0, np.nan)
    s2c = np.where(usable, np.maximum(s2, 0.0), np.nan)
    dfc = np.where(usable, dfs, np.nan)
    if np.isfinite(d0):
        var_post = (d0 * var_prior + dfc * s2c) / (d0 + dfc)
    else:
        var_post = var_prior.copy()
    df_total = np.where(usable, np.minimum(d0 + dfc, float(d.sum())), np.nan)
    return SqueezedVariances(var_post, var_prior, float(d0), df_total)
