"""Quasi-likelihood dispersions with an empirical-Bayes (scaled F) prior.

As in edgeR's ``glmQLFit`` and glmGamPoi's ``overdispersion_shrinkage``: the NB dispersion of
every feature is fixed at the mean-dispersion trend, and what the trend misses is carried by
a per-feature quasi-likelihood (QL) dispersion ``s2 = deviance / df_residual``. Under the
model ``s2 ~ s0^2 chi2(d) / d``, and across features ``1 / s0^2``-scaled variances follow a
scaled inverse chi-squared prior with ``d0`` degrees of freedom, so ``s2`` is marginally
``s0^2 F(d, d0)``. The prior is fitted by moments of ``log s2`` (limma's ``fitFDist`` as
used by ``squeezeVar``), optionally with ``s0^2`` trending with abundance; the posterior
``(d0 s0^2 + d s2) / (d0 + d)`` has ``d0 + d`` degrees of freedom (moderated df).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

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
        Posterior (moderated) QL dispersion per feature.
    var_prior : ndarray
        Prior ``s0^2`` per feature (constant without a covariate).
    df_prior : float
        Prior degrees of freedom ``d0`` (``inf`` when the ``s2`` spread no more than
        sampling explains).
    df_total : ndarray
        ``d0 + d`` per feature, capped at the total residual df of all features.
    """

    var_post: Array
    var_prior: Array
    df_prior: float
    df_total: Array


def _basis(covariate: Array, n_ok: int) -> Array:
    """Polynomial basis in a standardised covariate; degree grows with the feature count.

    limma uses a natural spline with 1 to 4 degrees of freedom (more for more features);
    a polynomial of the same dimension is used here, evaluated only at the data.
    """
    df = 1 + (n_ok >= 3) + (n_ok >= 6) + (n_ok >= 30)
    df = min(df, len(np.unique(covariate)))
    z = (covariate - covariate.mean()) / (covariate.std() or 1.0)
    return np.column_stack([z**j for j in range(df)])


def squeeze_var(
    s2: Array, df: float, covariate: Array | None = None
) -> SqueezedVariances:
    """Empirical-Bayes moderation of variances (limma's ``squeezeVar``).

    Parameters
    ----------
    s2 : ndarray
        QL dispersion per feature; ``NaN`` marks features left out (they get ``NaN``).
    df : float
        Residual degrees of freedom of each ``s2``.
    covariate : ndarray, optional
        Per-feature covariate of the prior (e.g. log mean); the prior's ``log s0^2``
        then follows a polynomial trend in it.

    Returns
    -------
    SqueezedVariances
        Prior and posterior.
    """
    ok = np.isfinite(s2)
    if covariate is not None:
        ok &= np.isfinite(covariate)
    n_ok = int(ok.sum())
    if n_ok < 2 or df <= 0:
        raise ValueError(
            "moderating quasi-likelihood dispersions needs at least 2 testable features "
            f"and positive residual degrees of freedom, but there are {n_ok} features and "
            f"{df} residual df."
        )
    x = np.maximum(s2[ok], 0.0)
    m = float(np.median(x))
    # Zero deviances (all-zero groups) would give log(0); limma floors them likewise.
    x = np.maximum(x, 1e-5 * (m if m > 0 else 1.0))
    e = np.log(x) - special.digamma(df / 2.0) + np.log(df / 2.0)
    if covariate is None:
        design = np.ones((n_ok, 1))
    else:
        design = _basis(covariate[ok], n_ok)
    coef, *_ = np.linalg.lstsq(design, e, rcond=None)
    emean = design @ coef
    resid_df = max(n_ok - design.shape[1], 1)
    evar = float(np.sum((e - emean) ** 2) / resid_df) - float(special.polygamma(1, df / 2.0))
    if evar > 0:
        d0 = 2.0 * trigamma_inverse(evar)
        s0 = np.exp(emean + special.digamma(d0 / 2.0) - np.log(d0 / 2.0))
    else:
        d0 = np.inf
        s0 = np.exp(emean)
    var_prior = np.full(s2.shape, np.nan)
    var_prior[ok] = s0
    s2c = np.where(ok, np.maximum(s2, 0.0), np.nan)
    if np.isfinite(d0):
        var_post = (d0 * var_prior + df * s2c) / (d0 + df)
    else:
        var_post = var_prior.copy()
    df_total = np.where(ok, min(d0 + df, n_ok * df), np.nan)
    return SqueezedVariances(var_post, var_prior, float(d0), df_total)
