"""Numba kernel of :mod:`batchglm.dispersion.expected_deviance` (imported on first use only).

:func:`kappa_column` sums the expected NB unit deviance of one table column as the NumPy
path (:func:`batchglm.dispersion.expected_deviance._exact_column`, the reference it is
tested against) does, over the same truncation ``y = 0 .. k_j``, but with the
probabilities from the recurrence ``P(y) = P(y - 1) (y - 1 + r) / y * mu / (mu + r)``
starting at ``P(0) = (r / (r + mu))^r`` (never below ``exp(-64)`` on the table's range of
``mu``), so a term costs two logarithms instead of three ``gammaln``, an ``exp`` and the
arrays of the vectorised sum.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

Array = NDArray[np.float64]


@njit(cache=True, nogil=True)
def kappa_column(mu: Array, r: float, last: NDArray[np.int64], out: Array) -> None:
    """``out[j] = sum_{y=0}^{last[j]} P(y; mu_j, r) d(y; mu_j, r)`` for every ``mu_j``.

    Parameters
    ----------
    mu : ndarray
        ``(n,)`` positive NB means.
    r : float
        NB size.
    last : ndarray of int
        ``(n,)`` largest count summed per mean.
    out : ndarray
        ``(n,)`` written with the sums.
    """
    for j in range(mu.size):
        m = mu[j]
        q = m / (m + r)
        log_m = math.log(m)
        pmf = math.exp(-r * math.log1p(m / r))
        # y = 0: d(0) = 2 r log1p(mu / r) (the y log y term is 0).
        d = 2.0 * r * math.log1p(m / r)
        total = pmf * max(d, 0.0)
        for y in range(1, last[j] + 1):
            fy = float(y)
            pmf *= (fy - 1.0 + r) / fy * q
            d = 2.0 * (fy * (math.log(fy) - log_m) - (fy + r) * math.log1p((fy - m) / (m + r)))
            total += pmf * max(d, 0.0)
        out[j] = total
