"""Independent NB references shared by the tests, written with scipy only (no batchglm).

* :func:`nb_counts`: NB draws at given means and sizes;
* :func:`nb_logpmf_eta`: the NB log-probability in the log mean and log size;
* :func:`no_read_probability`: the exact conditional probability that one side of a split
  gets no read given the total, by convolving per-sample NB probabilities; the reference of
  the zero-side floor (``test_zero_side_*``).
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats


def no_read_probability(total: int, mu: np.ndarray, alpha: np.ndarray, zero: np.ndarray) -> float:
    """P(no read on the ``zero`` side | ``total`` reads) by convolving NB probabilities.

    ``mu`` and ``alpha`` are per-sample NB means and dispersions (``var = mu + alpha mu^2``);
    ``zero`` marks the samples of the zero side.
    """
    k = np.arange(total + 1)

    def side(idx: np.ndarray) -> np.ndarray:
        out = np.zeros(total + 1)
        out[0] = 1.0
        for j in idx:
            r = 1.0 / alpha[j]
            out = np.convolve(out, stats.nbinom.pmf(k, r, r / (r + mu[j])))[: total + 1]
        return out

    off, on = side(np.flatnonzero(zero)), side(np.flatnonzero(~zero))
    return float(off[0] * on[total] / np.convolve(off, on)[total])


def nb_logpmf_eta(y: np.ndarray, eta: np.ndarray, log_r: float | np.ndarray) -> np.ndarray:
    """NB log-probabilities of ``y`` at log mean ``eta`` and log size ``log_r``, elementwise.

    Written in logs (``logaddexp``) so that large ``eta`` or ``log_r`` do not overflow.
    """
    r = np.exp(log_r)
    return np.asarray(
        special.gammaln(y + r)
        - special.gammaln(r)
        - special.gammaln(y + 1)
        + r * (log_r - np.logaddexp(log_r, eta))
        + y * (eta - np.logaddexp(log_r, eta))
    )


def nb_counts(rng: np.random.Generator, mu: np.ndarray, r: float | np.ndarray) -> np.ndarray:
    """NB counts with means ``mu`` and size ``r`` (``var = mu + mu^2 / r``), as float64."""
    return np.asarray(rng.negative_binomial(r, r / (r + mu)), dtype=float)
