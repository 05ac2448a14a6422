"""Robust moderation prior: outlier features out, winsorised moments for the rest.

The prior of :mod:`batchglm.mixed.moderation` is estimated by limma's method of moments on
``log s_f^2`` (:func:`batchglm.mixed.f_prior.fit_f_prior`): its prior degrees of freedom
``d0`` come from the residual variance of ``log s_f^2`` about the trend, a non-robust
moment. One feature with a wild ``s_f^2`` (one cell with a count of ``1e6`` puts one donor's
log level about 10 natural-log units above the others) adds its squared residual to that
variance and lowers ``d0`` for every feature: measured on a user's 12-donor data set with 60
genes, one such gene took ``d0`` from 52.6 to 9.9 and made the other genes' p-values about
12 times larger.

As limma's ``eBayes(robust=TRUE)`` (Phipson, Lee, Majewski, Alexander and Smyth 2016,
*Ann. Appl. Stat.* 10:946), the outliers are found against a robust first estimate of the
prior and are then left out of the method of moments, in the way
:mod:`batchglm.mixed.prior_features` leaves out separated features. Our rule (our own
code; Phipson et al. winsorise the tails and give outliers a smaller ``d0`` of their own):

1. **Trend.** ``e_f = log s_f^2`` on the spline basis of ``fit_f_prior`` in the trend
   covariate, fitted by least squares to ``e`` winsorised at its ``WINSOR_TAIL`` and
   ``1 - WINSOR_TAIL`` quantiles, then refitted to the trend plus the residuals winsorised
   at theirs (``TREND_PASSES`` fits in all).
2. **Winsorised moments** (:func:`winsorised_f_prior`, limma's ``fitFDistRobustly``): the
   variance and mean of the winsorised residuals are matched to those of ``log F(d, d0)``
   winsorised at its own quantiles, which gives ``d0`` and ``s0^2``.
3. **Outliers.** A feature whose ``s_f^2 / s0^2`` lies in either tail of ``F(d, d0)``
   beyond a Bonferroni level, ``min(P(F > r), P(F < r)) < OUTLIER_LEVEL / (2 n)`` over the
   ``n`` features of the estimate, is an outlier.

The prior is then estimated again by winsorised moments from the remaining features, so
that a moderately wild feature that the rule keeps moves ``d0`` little.

Outliers get the prior at their mean expression like every feature left out of the
estimate. Those with a large variance (upper tail) are tested against their own variance
with ``d`` degrees of freedom, the ``moderate=False`` reference: a prior fitted to the other
features says nothing about how variable they are, so it must not lend them its df.
Winsorising at 5 % per tail is robust to a few outliers, not to more than 5 % of the
features in one tail; with fewer than ``MIN_ROBUST`` features the rule is not applied.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Family-wise level of the two-sided Bonferroni test that flags an outlier.
OUTLIER_LEVEL = 0.05
#: Tail probability at which the residuals about the trend are winsorised before refitting.
WINSOR_TAIL = 0.05
#: Least-squares fits of the trend in all (the first on the raw, the rest on winsorised data).
TREND_PASSES = 3
#: Fewest features of the estimate for which outliers are looked for.
MIN_ROBUST = 20
#: Points of Simpson's rule for the winsorised moments of ``log F``.
QUAD_POINTS = 2001
#: Prior df treated as infinite (``log F(d, d0)`` then equals ``log(chi2_d / d)``).
DF_INF = 1e6


def _log_f_quantiles(q: Array, df: float, df_prior: float) -> Array:
    """Quantiles of ``log F(df, df_prior)`` (``log(chi2_df / df)`` for ``df_prior >= DF_INF``)."""
    from scipy import stats  # here only: importing scipy.stats costs about 1 s

    if df_prior >= DF_INF:
        return np.asarray(np.log(stats.chi2.ppf(q, df) / df), dtype=np.float64)
    return np.asarray(np.log(stats.f.ppf(q, df, df_prior)), dtype=np.float64)


def _winsorised_trend(e: Array, basis: Array, tail: float) -> tuple[Array, Array]:
    """Least-squares trend of ``e`` on ``basis`` fitted to winsorised data: (trend, residual).

    The first fit uses ``e`` winsorised at its own ``tail`` quantiles (a wild value must not
    bend the first trend), the next ones ``trend + residual`` winsorised at the residuals'
    quantiles.
    """
    target = np.clip(e, *np.quantile(e, [tail, 1.0 - tail]))
    for _ in range(TREND_PASSES):
        coef, *_ = np.linalg.lstsq(basis, target, rcond=None)
        trend = basis @ coef
        resid = e - trend
        target = trend + np.clip(resid, *np.quantile(resid, [tail, 1.0 - tail]))
    return trend, resid


def variance_outliers(
    s2: Array, df: float, basis: Array, level: float = OUTLIER_LEVEL
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Features whose variance is an outlier of a robustly estimated scaled F prior.

    Parameters
    ----------
    s2 : ndarray
        ``(n,)`` positive finite variances (natural-log scale of the mean, squared).
    df : float
        Their degrees of freedom ``d``.
    basis : ndarray
        ``(n, k)`` design of the trend of ``log s2`` (the spline basis of
        :func:`batchglm.mixed.f_prior.fit_f_prior`, or a column of ones).
    level : float
        Family-wise level of the two-sided Bonferroni test.

    Returns
    -------
    high : ndarray of bool
        ``(n,)`` outliers in the upper tail (too variable for the prior).
    low : ndarray of bool
        ``(n,)`` outliers in the lower tail.

    Raises
    ------
    ValueError
        When ``s2`` and ``basis`` have different numbers of rows.

    Notes
    -----
    See the module docstring for the four steps; our own rule after limma's
    ``eBayes(robust=TRUE)`` (Phipson et al. 2016, *Ann. Appl. Stat.* 10:946).
    """
    from scipy import stats  # here only: see _log_f_quantiles

    s2 = np.asarray(s2, dtype=np.float64)
    n = s2.size
    if basis.shape[0] != n:
        raise ValueError(
            f"`basis` has {basis.shape[0]} rows but `s2` has {n} values; they must match."
        )
    none = np.zeros(n, dtype=bool)
    if n < MIN_ROBUST:
        return none, none.copy()
    s0, d0 = winsorised_f_prior(s2, df, basis)
    d0_eff = min(d0, DF_INF)
    ratio = s2 / s0
    if d0_eff >= DF_INF:
        upper = stats.chi2.sf(ratio * df, df)
        lower = stats.chi2.cdf(ratio * df, df)
    else:
        upper = stats.f.sf(ratio, df, d0_eff)
        lower = stats.f.cdf(ratio, df, d0_eff)
    cut = level / (2 * n)
    return np.asarray(upper < cut, dtype=bool), np.asarray(lower < cut, dtype=bool)


def prior_outliers(
    s2: Array, df: float, used: NDArray[np.bool_], basis: Array
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Outlier features among those the moderation prior is estimated from.

    Parameters
    ----------
    s2 : ndarray
        ``(F,)`` group-level variances ``s_f^2`` (natural-log scale, squared).
    df : float
        Their degrees of freedom ``d``.
    used : ndarray of bool
        ``(F,)`` the features of the estimate (:func:`batchglm.mixed.prior_features`).
    basis : ndarray
        ``(n_used, k)`` the trend design of the used features
        (:func:`batchglm.mixed.f_prior.trend_basis`: a natural cubic spline with 4 df in
        the mean log expression, a constant below 40 features).

    Returns
    -------
    outlier : ndarray of bool
        ``(F,)`` features in either tail (:func:`variance_outliers`), to be left out of the
        estimate.
    high : ndarray of bool
        ``(F,)`` those in the upper tail, to be tested against their own variance.

    Raises
    ------
    ValueError
        When ``s2`` and ``used`` differ in length or ``basis`` does not have one row per
        used feature.
    """
    s2 = np.asarray(s2, dtype=np.float64)
    if s2.shape != np.shape(used):
        raise ValueError(
            f"`s2` and `used` must have one value per feature, but have shapes {s2.shape} "
            f"and {np.shape(used)}."
        )
    outlier = np.zeros(s2.size, dtype=bool)
    high = outlier.copy()
    idx = np.flatnonzero(used)
    if idx.size < MIN_ROBUST:
        return outlier, high
    up, down = variance_outliers(s2[idx], df, basis)
    high[idx] = up
    outlier[idx] = up | down
    return outlier, high


def _winsorised_log_f_moments(df: float, df_prior: float, tail: float) -> tuple[float, float]:
    """Mean and variance of ``log F(df, df_prior)`` winsorised at its ``tail`` quantiles.

    Simpson's rule on ``QUAD_POINTS`` points between the quantiles for the interior, plus
    ``tail`` times each quantile (and its square) for the clipped tails.
    """
    from scipy import integrate, stats  # here only: see _log_f_quantiles

    lo, hi = _log_f_quantiles(np.array([tail, 1.0 - tail]), df, df_prior)
    z = np.linspace(lo, hi, QUAD_POINTS)
    x = np.exp(z)
    if df_prior >= DF_INF:
        dens = stats.chi2.pdf(x * df, df) * x * df
    else:
        dens = stats.f.pdf(x, df, df_prior) * x
    m1 = float(integrate.simpson(z * dens, x=z)) + tail * (lo + hi)
    m2 = float(integrate.simpson(z**2 * dens, x=z)) + tail * (lo**2 + hi**2)
    return m1, m2 - m1**2


def winsorised_f_prior(
    s2: Array, df: float, basis: Array, tail: float = WINSOR_TAIL
) -> tuple[Array, float]:
    """Prior scale and df of variances by winsorised moments of their logarithms.

    Parameters
    ----------
    s2 : ndarray
        ``(n,)`` positive finite variances, each ``tau_f^2 chi2_d / d``.
    df : float
        Their degrees of freedom ``d``.
    basis : ndarray
        ``(n, k)`` design of the trend of ``log s0^2``
        (:func:`batchglm.mixed.f_prior.trend_basis`).
    tail : float
        Share of each tail that is winsorised.

    Returns
    -------
    s2_prior : ndarray
        ``(n,)`` prior scale ``s0^2`` at each feature.
    df_prior : float
        Prior degrees of freedom ``d0`` (``inf`` when the winsorised spread of ``log s2``
        does not exceed that of ``log(chi2_d / d)``).

    Raises
    ------
    ValueError
        When ``s2`` and ``basis`` have different numbers of rows.

    Notes
    -----
    Phipson et al. (2016, *Ann. Appl. Stat.* 10:946), as limma's ``fitFDistRobustly``: the
    trend of ``log s2`` is fitted to winsorised residuals (see :func:`variance_outliers`),
    the residuals are winsorised at their ``tail`` and ``1 - tail`` quantiles, and their
    variance is matched to the variance of ``log F(d, d0)`` winsorised at its own
    quantiles (numerical integration of the ``F`` density, root in ``log d0``); the mean
    matched in the same way gives ``s0^2``. A gene with a wild variance moves neither. Our
    own implementation.
    """
    from scipy import optimize  # here only: see _log_f_quantiles

    s2 = np.asarray(s2, dtype=np.float64)
    if basis.shape[0] != s2.size:
        raise ValueError(
            f"`basis` has {basis.shape[0]} rows but `s2` has {s2.size} values; they must match."
        )
    trend, resid = _winsorised_trend(np.log(s2), basis, tail)
    wins = np.clip(resid, *np.quantile(resid, [tail, 1.0 - tail]))
    wvar = float(wins.var(ddof=1))

    def excess(log_d0: float) -> float:
        return _winsorised_log_f_moments(df, float(np.exp(log_d0)), tail)[1] - wvar

    top = np.log(DF_INF)
    if excess(top) >= 0:
        d0 = float(np.inf)
    elif excess(np.log(0.1)) <= 0:
        d0 = 0.1
    else:
        d0 = float(np.exp(optimize.brentq(excess, np.log(0.1), top, xtol=1e-5)))
    mean_z = _winsorised_log_f_moments(df, min(d0, DF_INF), tail)[0]
    return np.exp(trend + float(wins.mean()) - mean_z), d0
