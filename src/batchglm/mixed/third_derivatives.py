"""Third derivatives of per-observation log-likelihoods in the linear predictors.

The gradient of the Laplace objective differentiates the curvature of the conditional
log-likelihood at the random-effect mode, so it needs ``d3 = d^3 ll / d eta^3`` and, for
families with a scale, ``c3 = d^3 ll / d eta^2 d eta_scale``. Closed forms, written in
``q = mu / r`` like :mod:`batchglm.families.nb` so they stay accurate in the Poisson limit:

* NB: ``d2 = -(y + r) q / (1 + q)^2``, ``d3 = d2 (1 - q) / (1 + q)``,
  ``c3 = -q (2 r q + y (q - 1)) / (1 + q)^3``.
* Poisson: ``d2 = d3 = -mu``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


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
