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

For NB blocks of at least :data:`batchglm.families.nb_kernel.MIN_ENTRIES` entries the six
arrays of :func:`higher_derivatives` come from one compiled pass (numba, as the fused NB
kernel of :mod:`batchglm.families.nb_kernel`, same switch ``BATCHGLM_NUMBA``): the same
formulas in the same order, instead of about 25 NumPy passes over the block. It was 3.5
times the cost of one NB derivative pass in the profile of ``benchmarks/mixed_speed.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.families import nb_kernel

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

    def cross_terms(self, d2_cross: Array | None) -> tuple[Array, Array, Array, Array, Array]:
        """Return ``(c2, c3, e3, c4, e4)``, zeros ``(1, 1)`` where absent (no scale).

        Parameters
        ----------
        d2_cross : ndarray or None
            ``d^2 ll / d eta d zeta`` of the family's derivatives.

        Returns
        -------
        tuple of ndarray
            The mixed derivatives in ``eta`` and ``zeta`` of orders two to four.
        """
        zero = np.zeros((1, 1))
        terms = (d2_cross, self.c3, self.e3, self.c4, self.e4)
        c2, c3, e3, c4, e4 = (zero if t is None else t for t in terms)
        return c2, c3, e3, c4, e4


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
    if nb_kernel.applies(y, eta_loc, eta_scale):
        out = tuple(np.empty(y.shape) for _ in range(6))
        _kernel()(y, eta_loc, eta_scale, *out)
        d3, c3, d4, c4, e3, e4 = out
        return Higher(d3=d3, c3=c3, d4=d4, c4=c4, e3=e3, e4=e4)
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


def _higher(
    y: Array,
    eta_loc: Array,
    eta_scale: Array,
    d3: Array,
    c3: Array,
    d4: Array,
    c4: Array,
    e3: Array,
    e4: Array,
) -> None:  # pragma: no cover - compiled; covered through higher_derivatives
    n, n_feat = y.shape
    per_obs = eta_scale.shape[0] != 1
    r_row = np.exp(eta_scale[0])
    for i in range(n):
        si = i if per_obs else 0
        for f in range(n_feat):
            es = eta_scale[si, f]
            r = np.exp(es) if per_obs else r_row[f]
            q = np.exp(eta_loc[i, f] - es)
            inv = 1.0 / (1.0 + q)
            p = q * inv
            f1 = p * inv
            f2 = f1 * (1.0 - q) * inv
            f3 = f1 * ((1.0 - q) * (1.0 - q) - 2.0 * q) * inv * inv
            w = y[i, f] + r
            rf1 = r * f1
            rf2 = r * f2
            wf2 = w * f2
            wf3 = w * f3
            d3[i, f] = -wf2
            c3[i, f] = wf2 - rf1
            d4[i, f] = -wf3
            c4[i, f] = wf3 - rf2
            e3[i, f] = 2.0 * rf1 - r * p - wf2
            e4[i, f] = 2.0 * rf2 - rf1 - wf3


_compiled: list[Callable[..., Any]] = []
_LOCK = threading.Lock()


def _kernel() -> Callable[..., Any]:
    """Return the compiled :func:`_higher` (numba's on-disk cache serves later processes)."""
    with _LOCK:
        if not _compiled:
            from numba import njit

            _compiled.append(njit(cache=True, nogil=True)(_higher))
        return _compiled[0]
