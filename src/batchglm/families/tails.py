"""Tail probabilities of the tests' reference distributions, from ``scipy.special``.

The tests need survival functions and a few quantiles of the chi-squared, F, Student t and
normal distributions. ``scipy.stats`` gives them too, but importing it costs about 2 s
(its distribution classes are built at import), more than a small test; the
``scipy.special`` routines underneath are already loaded with the families. These wrappers
keep ``scipy.stats``'s conventions: arguments in ``(x, df)`` order, probability 1 below
the support, ``NaN`` for non-positive or ``NaN`` degrees of freedom. Accuracy in the far
tail (down to about 1e-300) is that of ``scipy.stats``, which calls the same routines
(checked in ``tests/test_tails.py``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

Array = NDArray[np.float64]


def _positive(*dfs: ArrayLike) -> NDArray[np.bool_]:
    ok: NDArray[np.bool_] = np.ones((), dtype=bool)
    for df in dfs:
        ok = ok & (np.asarray(df, dtype=np.float64) > 0)
    return ok


def chi2_sf(x: ArrayLike, df: ArrayLike) -> Array:
    """Return ``P(X > x)`` for ``X ~ chi2(df)``, as ``scipy.stats.chi2.sf(x, df)``.

    Parameters
    ----------
    x : array_like
        Statistic values (broadcast with ``df``).
    df : array_like
        Degrees of freedom, positive.

    Returns
    -------
    ndarray
        Upper tail probabilities; 1 for ``x <= 0``, ``NaN`` for ``NaN`` ``x`` or
        ``df <= 0``.
    """
    xa = np.asarray(x, dtype=np.float64)
    out = special.chdtrc(df, np.maximum(xa, 0.0))
    return np.asarray(np.where(_positive(df), out, np.nan), dtype=np.float64)


def chi2_cdf(x: ArrayLike, df: ArrayLike) -> Array:
    """Return ``P(X <= x)`` for ``X ~ chi2(df)``, as ``scipy.stats.chi2.cdf(x, df)``.

    Parameters
    ----------
    x : array_like
        Values (broadcast with ``df``).
    df : array_like
        Degrees of freedom, positive.

    Returns
    -------
    ndarray
        Lower tail probabilities; 0 for ``x <= 0``, ``NaN`` for ``df <= 0``.
    """
    xa = np.asarray(x, dtype=np.float64)
    out = special.chdtr(df, np.maximum(xa, 0.0))
    return np.asarray(np.where(_positive(df), out, np.nan), dtype=np.float64)


def f_sf(x: ArrayLike, dfn: ArrayLike, dfd: ArrayLike) -> Array:
    """Return ``P(X > x)`` for ``X ~ F(dfn, dfd)``, as ``scipy.stats.f.sf(x, dfn, dfd)``.

    Parameters
    ----------
    x : array_like
        Statistic values (broadcast with the degrees of freedom).
    dfn, dfd : array_like
        Numerator and denominator degrees of freedom, positive.

    Returns
    -------
    ndarray
        Upper tail probabilities; 1 for ``x <= 0``, ``NaN`` for non-positive degrees of
        freedom.
    """
    xa = np.asarray(x, dtype=np.float64)
    out = special.fdtrc(dfn, dfd, np.maximum(xa, 0.0))
    return np.asarray(np.where(_positive(dfn, dfd), out, np.nan), dtype=np.float64)


def f_ppf(q: float, dfn: float, dfd: float) -> float:
    """Return the ``q`` quantile of ``F(dfn, dfd)``, as ``scipy.stats.f.ppf(q, dfn, dfd)``.

    Parameters
    ----------
    q : float
        Probability in ``(0, 1)``.
    dfn, dfd : float
        Numerator and denominator degrees of freedom, positive.

    Returns
    -------
    float
        The quantile; ``NaN`` for non-positive degrees of freedom.
    """
    if not (dfn > 0 and dfd > 0):
        return float("nan")
    return float(special.fdtri(dfn, dfd, q))


def t_sf(x: ArrayLike, df: ArrayLike) -> Array:
    """Return ``P(T > x)`` for Student's ``T ~ t(df)``, as ``scipy.stats.t.sf(x, df)``.

    Parameters
    ----------
    x : array_like
        Statistic values (broadcast with ``df``).
    df : array_like
        Degrees of freedom, positive (``inf`` is the normal).

    Returns
    -------
    ndarray
        Upper tail probabilities; ``NaN`` for ``df <= 0``.
    """
    xa = np.asarray(x, dtype=np.float64)
    out = special.stdtr(df, -xa)
    return np.asarray(np.where(_positive(df), out, np.nan), dtype=np.float64)


def norm_cdf(x: ArrayLike) -> Array:
    """Return the standard normal ``P(Z <= x)``, as ``scipy.stats.norm.cdf(x)``.

    Parameters
    ----------
    x : array_like
        Values.

    Returns
    -------
    ndarray
        Lower tail probabilities.
    """
    return np.asarray(special.ndtr(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def norm_sf(x: ArrayLike) -> Array:
    """Return the standard normal ``P(Z > x)``, as ``scipy.stats.norm.sf(x)``.

    Parameters
    ----------
    x : array_like
        Values.

    Returns
    -------
    ndarray
        Upper tail probabilities (accurate far in the upper tail: ``ndtr(-x)``).
    """
    return np.asarray(special.ndtr(-np.asarray(x, dtype=np.float64)), dtype=np.float64)


def norm_ppf(q: ArrayLike) -> Array:
    """Return the standard normal quantile, as ``scipy.stats.norm.ppf(q)``.

    Parameters
    ----------
    q : array_like
        Probabilities in ``[0, 1]``.

    Returns
    -------
    ndarray
        Quantiles (``-inf``/``inf`` at 0/1).
    """
    return np.asarray(special.ndtri(np.asarray(q, dtype=np.float64)), dtype=np.float64)
