"""Third and fourth derivatives of per-observation log-likelihoods in the linear predictors.

The gradient of the Laplace objective differentiates the curvature of the conditional
log-likelihood at the random-effect mode, so it needs the third derivatives; its analytic
Hessian (:mod:`batchglm.mixed.outer_hessian`) differentiates once more and needs the
fourth. With ``eta`` the location predictor (``log mu``) and ``zeta`` the scale predictor
(``log r``), NB terms are written in ``p = q / (1 + q)``, ``q = mu / r``, which keeps them
accurate in the Poisson limit. With ``f1 = p (1 - p)``, ``f2 = f1 (1 - 2 p)``,
``f3 = f1 (1 - 6 p + 6 p^2)`` (the ``eta``-derivatives of ``p``, each ``d/d zeta = -d/d eta``
on functions of ``p``) and ``w = y + r``:

* ``d3 = d^3 ll / d eta^3 = -w f2``, ``d4 = -w f3``;
* ``c3 = d^3 ll / d eta^2 d zeta = -r f1 + w f2``; ``c4 = d^4 ll / d eta^3 d zeta =
  -r f2 + w f3``;
* ``e3 = d^3 ll / d eta d zeta^2 = -r p + 2 r f1 - w f2``; ``e4 = d^4 ll / d eta^2 d zeta^2
  = -r f1 + 2 r f2 - w f3``.

Poisson: every ``eta``-derivative of order two or more is ``-mu``; no scale. (Derived here
from ``ll = y log mu + r log r - (y + r) log(mu + r) + count terms``; the count terms do
not depend on ``eta``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


@dataclass
class Higher:
    """Derivatives of order three and four of ``ll`` per observation and feature.

    Attributes
    ----------
    d3, d4 : ndarray
        ``d^3 ll / d eta^3`` and ``d^4 ll / d eta^4``.
    c3, c4 : ndarray or None
        ``d^3 ll / d eta^2 d zeta`` and ``d^4 ll / d eta^3 d zeta`` (``None`` for Poisson).
    e3, e4 : ndarray or None
        ``d^3 ll / d eta d zeta^2`` and ``d^4 ll / d eta^2 d zeta^2`` (``None`` for Poisson).
    """

    d3: Array
    c3: Array | None
    d4: Array
    c4: Array | None
    e3: Array | None
    e4: Array | None


def third_derivatives(
    family: str, y: Array, eta_loc: Array, eta_scale: Array
) -> tuple[Array, Array | None]:
    """Return ``(d3, c3)`` per observation and feature.

    Parameters
    ----------
    family : {"nb", "poisson"}
        Family name.
    y : ndarray
        Counts ``(n_obs, F)``.
    eta_loc : ndarray
        ``log(mu)``, ``(n_obs, F)``.
    eta_scale : ndarray
        ``log(r)``, broadcastable to ``y`` (ignored for Poisson).

    Returns
    -------
    d3 : ndarray
        ``d^3 ll / d eta_loc^3``.
    c3 : ndarray or None
        ``d^3 ll / d eta_loc^2 d eta_scale``; ``None`` for Poisson.

    Raises
    ------
    ValueError
        For a family other than ``"nb"`` or ``"poisson"``.
    """
    if family == "poisson":
        return -np.exp(eta_loc), None
    if family != "nb":
        raise ValueError(f"third derivatives exist for 'nb' and 'poisson', not {family!r}.")
    r = np.exp(eta_scale)
    q = np.exp(eta_loc - eta_scale)
    inv = 1.0 / (1.0 + q)
    qi3 = q * inv * inv * inv
    d3 = -(y + r) * qi3 * (1.0 - q)
    c3 = -qi3 * (2.0 * r * q + y * (q - 1.0))
    return d3, c3


def higher_derivatives(family: str, y: Array, eta_loc: Array, eta_scale: Array) -> Higher:
    """Third and fourth derivatives per observation and feature (formulas: module docstring).

    Parameters
    ----------
    family : {"nb", "poisson"}
        Family name.
    y : ndarray
        Counts ``(n_obs, F)``.
    eta_loc : ndarray
        ``log(mu)``, ``(n_obs, F)``.
    eta_scale : ndarray
        ``log(r)``, broadcastable to ``y`` (ignored for Poisson).

    Returns
    -------
    Higher
        ``d3, c3, d4, c4, e3, e4``.

    Raises
    ------
    ValueError
        For a family other than ``"nb"`` or ``"poisson"``.
    """
    if family == "poisson":
        mu = -np.exp(eta_loc)
        return Higher(mu, None, mu, None, None, None)
    if family != "nb":
        raise ValueError(f"fourth derivatives exist for 'nb' and 'poisson', not {family!r}.")
    r = np.exp(eta_scale)
    q = np.exp(eta_loc - eta_scale)
    inv = 1.0 / (1.0 + q)
    p = q * inv
    f1 = p * inv
    f2 = f1 * (1.0 - q) * inv
    f3 = f1 * ((1.0 - q) * (1.0 - q) - 2.0 * q) * inv * inv
    w = y + r
    rf1 = r * f1
    rf2 = r * f2
    wf2 = w * f2
    wf3 = w * f3
    return Higher(
        d3=-wf2,
        c3=wf2 - rf1,
        d4=-wf3,
        c4=wf3 - rf2,
        e3=2.0 * rf1 - r * p - wf2,
        e4=2.0 * rf2 - rf1 - wf3,
    )
