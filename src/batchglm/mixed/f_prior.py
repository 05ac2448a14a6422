"""The scaled F prior of group-level variances across features (limma's ``fitFDist``).

Features' variances ``s_f^2`` on ``d`` degrees of freedom are modelled as ``s0^2(A_f)
F(d, d0)`` with a trend ``s0^2`` in the feature's mean expression ``A_f`` (a natural cubic
spline, :func:`trend_basis`) and prior degrees of freedom ``d0`` from the excess variance of
``log s_f^2`` (Smyth 2004, *Stat. Appl. Genet. Mol. Biol.* 3:3; :func:`fit_f_prior`, the
plain method of moments, and :func:`trigamma_inverse` for it). The moderation of mixed-model
tests (:mod:`batchglm.mixed.moderation`) uses the trend basis with the robust estimate of
:mod:`batchglm.mixed.robust_prior`; the plain estimator is its reference.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import special

Array = NDArray[np.float64]

#: Fewer features than this: a constant prior scale instead of a trend on expression.
MIN_TREND = 40
#: Fewer usable features than this: no moderation (the prior cannot be estimated).
MIN_FEATURES = 3


def trigamma_inverse(x: Array) -> Array:
    """Solve ``trigamma(y) = x`` for ``y > 0``.

    Parameters
    ----------
    x : ndarray
        Positive values.

    Returns
    -------
    ndarray
        ``y`` with ``polygamma(1, y) = x`` to relative accuracy ``1e-10``.

    Notes
    -----
    Newton's method on ``1 / trigamma(y)``, which is nearly linear in ``y``
    (``trigamma(y) ~ 1/y + 1/(2 y^2)``), from ``y = 0.5 + 1/x``, as in limma's
    ``trigammaInverse`` (Smyth 2004); our own implementation.
    """
    x = np.asarray(x, dtype=np.float64)
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = special.polygamma(1, y)
        step = tri * (1.0 - tri / x) / special.polygamma(2, y)
        y = y + step
        if np.all(-step < 1e-10 * y):
            break
    return y


def natural_spline_basis(x: Array, knots: Array) -> Array:
    """Natural cubic spline basis (linear beyond the boundary knots).

    Parameters
    ----------
    x : ndarray
        ``(n,)`` points.
    knots : ndarray
        ``(K,)`` increasing knots, the first and last the boundary knots.

    Returns
    -------
    ndarray
        ``(n, K)``: ``1, x`` and ``K - 2`` truncated-power terms (Hastie, Tibshirani and
        Friedman, *The Elements of Statistical Learning*, eq. 5.4-5.5).
    """

    def dk(k: int) -> Array:
        cube = np.maximum(x - knots[k], 0.0) ** 3 - np.maximum(x - knots[-1], 0.0) ** 3
        return cube / (knots[-1] - knots[k])

    last = dk(len(knots) - 2)
    cols = [np.ones_like(x), x] + [dk(k) - last for k in range(len(knots) - 2)]
    return np.column_stack(cols)


def trend_basis(covariate: Array | None, n: int) -> Array:
    """Design of the prior's trend: see :func:`fit_f_prior`.

    Parameters
    ----------
    covariate : ndarray or None
        ``(n,)`` the trend covariate (mean log expression, natural log).
    n : int
        Number of features.

    Returns
    -------
    ndarray
        ``(n, k)``: the natural cubic spline basis with knots at the 0, 1/3, 2/3, 1 quantiles
        of the covariate (rescaled to [0, 1]); a column of ones without a covariate or with
        fewer than ``MIN_TREND`` features.
    """
    if covariate is None or n < MIN_TREND:
        return np.ones((n, 1))
    c = np.asarray(covariate, dtype=np.float64)
    scaled = (c - c.min()) / max(c.max() - c.min(), 1e-12)
    knots = np.unique(np.quantile(scaled, [0.0, 1 / 3, 2 / 3, 1.0]))
    return natural_spline_basis(scaled, knots) if knots.size >= 2 else np.ones((n, 1))


def fit_f_prior(s2: Array, df: float, covariate: Array | None = None) -> tuple[Array, float]:
    """Prior scale and degrees of freedom of variances by the method of moments.

    Parameters
    ----------
    s2 : ndarray
        ``(F,)`` positive variance estimates, each ``tau_f^2 chi2_d / d``.
    df : float
        Their degrees of freedom ``d``.
    covariate : ndarray, optional
        ``(F,)`` a covariate for the prior scale (mean log expression): ``log s0^2`` is a
        natural cubic spline in it with 4 degrees of freedom (knots at its 0, 1/3, 2/3, 1
        quantiles); constant without it or with fewer than 40 values.

    Returns
    -------
    s2_prior : ndarray
        ``(F,)`` prior scale ``s0^2`` at each feature.
    df_prior : float
        Prior degrees of freedom ``d0`` (``inf`` when the spread of ``log s2`` does not
        exceed its sampling variance ``trigamma(d/2)``).

    Raises
    ------
    ValueError
        When ``s2`` has a non-positive or non-finite value or fewer than 3 values, or
        ``df`` is not positive.

    Notes
    -----
    Under ``1/tau^2 ~ chi2_{d0} / (d0 s0^2)``, ``s2 / s0^2 ~ F(d, d0)`` and
    ``E log s2 = log s0^2 + digamma(d/2) - log(d/2) - digamma(d0/2) + log(d0/2)``,
    ``Var log s2 = trigamma(d/2) + trigamma(d0/2)``. Matching these (limma's ``fitFDist``,
    Smyth 2004, section 6.2) gives the estimates; the trend is fitted to
    ``e = log s2 - digamma(d/2) + log(d/2)`` and the residual variance uses ``F - k``
    degrees of freedom (``k`` basis functions).
    """
    s2 = np.asarray(s2, dtype=np.float64)
    if s2.size < MIN_FEATURES or not np.all(np.isfinite(s2) & (s2 > 0)):
        raise ValueError(
            f"`s2` must hold at least {MIN_FEATURES} positive finite variances, but "
            f"{s2.size} values with {int((~(np.isfinite(s2) & (s2 > 0))).sum())} bad "
            "ones were given."
        )
    if not df > 0:
        raise ValueError(f"`df` must be positive, but {df} was given.")
    e = np.log(s2) - special.digamma(df / 2) + np.log(df / 2)
    basis = trend_basis(covariate, s2.size)
    coef, *_ = np.linalg.lstsq(basis, e, rcond=None)
    trend = basis @ coef
    k = np.linalg.matrix_rank(basis)
    evar = float(((e - trend) ** 2).sum() / max(s2.size - k, 1)) - special.polygamma(1, df / 2)
    if evar > 0:
        d0 = float(2.0 * trigamma_inverse(np.array([evar]))[0])
        s0 = np.exp(trend + special.digamma(d0 / 2) - np.log(d0 / 2))
    else:
        d0 = np.inf
        s0 = np.exp(trend)
    return s0, d0
