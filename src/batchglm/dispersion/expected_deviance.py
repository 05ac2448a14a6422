"""Expected residual deviance of NB fits, the divisor of bias-corrected QL dispersions.

For NB counts with mean ``mu`` and size ``r`` the unit deviance
``d(y) = 2 [y log(y / mu) - (y + r) log((y + r) / (mu + r))]`` has expectation
``kappa(mu, r)``, which is 1 only in the large-count Gaussian limit: about 0.3 at
``mu = 0.05``, 0.7 at ``mu = 0.2`` (Poisson), and for large ``mu`` it tends to
``2 r (log r - digamma(r))`` (the gamma limit; 1.27 for ``r = 0.5``). The residual deviance of
a fit then has expectation about ``sum_i (1 - h_i) kappa_i`` (``h_i`` the leverages of the
IRLS weights), not ``n - p``; dividing the deviance by it instead gives QL dispersions
near 1 for features that follow the NB model, at any count level. This follows the idea
of edgeR 4's adjusted deviance (Chen, Chen, Lun, Baldoni & Smyth 2025); the computation
here (an exact table of ``kappa`` over ``log mu`` and ``log r`` with the gamma limit beyond
it) is our own. With numba, tables of at least a million terms are summed by a compiled
kernel (:mod:`batchglm.dispersion.expected_deviance_compiled`, about 20x faster, and more
accurate at large ``r``); the NumPy sums stay the reference, the path of small tables and
the fallback (``BATCHGLM_NUMBA=0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

from batchglm import blocks
from batchglm.families import nb_kernel

Array = NDArray[np.float64]

#: Table range of ``mu``; below, the unit deviance's expectation is ~0 (fitted zeros), above
#: it approaches the gamma limit as ``1 / mu``.
_MU_MIN, _MU_MAX, _N_MU = 1e-4, 64.0, 97
_N_R = 33
#: Probability mass left out of each table sum.
_TAIL = 1e-12
#: Most terms of a column summed at once (memory: a few arrays of this many floats).
_CHUNK = 2**21
#: Tables with fewer terms in all use the NumPy sums (about 200 ns a term): the first call
#: of any compiled kernel in a process costs about 0.35 s of CPU, the NumPy cost of about
#: 1.7e6 terms (a trend near ``alpha = 1`` gives 1e6-6e6, one near 0.01 about 1e5).
_COMPILED_TERMS = 1_000_000


def _unit_deviance(y: Array, mu: Array, r: float) -> Array:
    term1 = special.xlogy(y, y) - special.xlogy(y, mu)
    term2 = (y + r) * np.log1p((y - mu) / (mu + r))
    return np.asarray(np.maximum(2.0 * (term1 - term2), 0.0))


def _nbinom_pmf(y: Array, r: float, p: Array) -> Array:
    """NB probabilities of ``y`` at size ``r`` and success probability ``p``.

    ``Gamma(y + r) / (Gamma(r) y!) p^r (1 - p)^y`` on the log scale (as
    ``scipy.stats.nbinom.pmf``, without importing ``scipy.stats``, about 2 s).
    """
    log_coef = special.gammaln(y + r) - special.gammaln(y + 1.0) - special.gammaln(r)
    return np.asarray(np.exp(log_coef + r * np.log(p) + special.xlog1py(y, -p)))


def _nbinom_ppf(q: float, r: float, p: Array) -> Array:
    """Smallest ``k`` with ``P(Y <= k) >= q`` for ``Y ~ NB(r, p)`` (``scipy.stats.nbinom.ppf``).

    The continuous inverse of the CDF (``nbdtrik``) rounded up, one lower if that already
    reaches ``q``.
    """
    k = np.ceil(special.nbdtrik(q, r, p))
    below = np.maximum(k - 1.0, 0.0)
    return np.asarray(np.where(special.betainc(r, below + 1.0, p) >= q, below, k))


def _last_count(mu: Array, r: float) -> NDArray[np.int64]:
    """Largest count of each truncated sum: two past the ``1 - 1e-12`` quantile."""
    return np.asarray(_nbinom_ppf(1.0 - _TAIL, r, r / (r + mu)).astype(np.int64) + 2)


def _column(mu: Array, r: float, compiled: bool, last: NDArray[np.int64] | None = None) -> Array:
    """``kappa(mu_j, r)`` for every ``mu_j`` at one size, compiled or with NumPy.

    ``last``: the truncation counts ``_last_count(mu, r)`` when already computed.
    """
    if not compiled:
        return _exact_column(mu, r, last)
    from batchglm.dispersion.expected_deviance_compiled import kappa_column

    out = np.empty(mu.size)
    kappa_column(mu, float(r), _last_count(mu, r) if last is None else last, out)
    return out


def _exact_column(mu: Array, r: float, last: NDArray[np.int64] | None = None) -> Array:
    """``kappa(mu_j, r)`` for every ``mu_j`` at one size, as exact truncated sums.

    Each sum runs over ``y = 0 .. k_j`` with ``k_j`` two past the ``1 - 1e-12`` quantile.
    The terms of consecutive cells are laid end to end, at most :data:`_CHUNK` terms at a
    time (a single cell may exceed it), and summed per ``mu_j`` in one call into scipy per
    chunk rather than one per cell.
    """
    p = r / (r + mu)
    length = (_last_count(mu, r) if last is None else last) + 1
    out = np.empty(mu.size)
    first = 0
    while first < mu.size:
        stop = first + 1
        total = int(length[first])
        while stop < mu.size and total + length[stop] <= _CHUNK:
            total += int(length[stop])
            stop += 1
        cell = np.repeat(np.arange(stop - first), length[first:stop])
        start = np.cumsum(length[first:stop]) - length[first:stop]
        y = (np.arange(cell.size) - start[cell]).astype(np.float64)
        m = mu[first:stop][cell]
        terms = _nbinom_pmf(y, r, p[first:stop][cell]) * _unit_deviance(y, m, r)
        out[first:stop] = np.bincount(cell, terms, minlength=stop - first)
        first = stop
    return out


def gamma_limit(r: Array) -> Array:
    """Limit of the expected NB unit deviance for ``mu -> inf`` at fixed size ``r``.

    Parameters
    ----------
    r : ndarray
        NB size (``1 / alpha``), any shape.

    Returns
    -------
    ndarray
        ``2 r (log r - digamma(r))``, which tends to 1 as ``r -> inf``.
    """
    return np.asarray(2.0 * r * (np.log(r) - special.digamma(r)))


@dataclass(frozen=True)
class KappaTable:
    """Exact ``kappa(mu, r)`` on a grid in ``(log mu, log r)``, built once per fit.

    Attributes
    ----------
    log_mu : ndarray
        Equally spaced grid of ``log mu`` over ``[log 1e-4, log 64]``.
    log_r : ndarray
        Equally spaced grid of ``log r`` over the range of the sizes it was built for.
    values : ndarray
        ``kappa`` at the grid points, ``(len(log_mu), len(log_r))``.
    """

    log_mu: Array
    log_r: Array
    values: Array

    @classmethod
    def build(cls, r: Array) -> KappaTable:
        """Tabulate ``kappa`` for sizes in the range of ``r``.

        Parameters
        ----------
        r : ndarray
            NB sizes ``(F,)`` the table must cover; finite and positive.

        Returns
        -------
        KappaTable
            The table.
        """
        log_r = np.log(r)
        lo, hi = float(log_r.min()), float(log_r.max())
        grid_r = np.linspace(lo, hi if hi > lo else lo + 1e-6, _N_R)
        grid_mu = np.linspace(np.log(_MU_MIN), np.log(_MU_MAX), _N_MU)
        mu = np.exp(grid_mu)
        sizes = np.exp(grid_r)
        # The truncation of every column's sums, computed once (it decides the path too).
        lasts = [_last_count(mu, float(size)) for size in sizes]
        terms = sum(int((last + 1).sum()) for last in lasts)
        compiled = nb_kernel.ENABLED and terms >= _COMPILED_TERMS
        # One column per size, in parallel threads (scipy's special functions and numpy's
        # sums release the GIL): the table is a fixed cost of every QL fit.
        columns = blocks.map_blocks(
            lambda sl: _column(mu, float(sizes[sl.start]), compiled, lasts[sl.start]),
            [slice(j, j + 1) for j in range(grid_r.size)],
        )
        values = np.column_stack(columns)
        return cls(grid_mu, grid_r, values)

    def __call__(self, mu: Array, r: Array) -> Array:
        """Compute ``kappa(mu, r)``, the expected NB unit deviance, at each fitted mean.

        Parameters
        ----------
        mu : ndarray
            Fitted means ``(n_obs, F)`` on the count scale.
        r : ndarray
            NB size per feature ``(F,)``, inside the table's range.

        Returns
        -------
        ndarray
            ``E[d(Y; mu, r)]`` for ``Y ~ NB(mu, r)``, ``(n_obs, F)``: the table interpolated
            linearly in ``(log mu, log r)``; 0 below ``mu = 1e-4``; above ``mu = 64`` the
            gamma limit plus the table's last difference from it shrunk as ``64 / mu``.
        """
        # Along log r once per feature, then along log mu per observation.
        pos_r = np.interp(np.log(r), self.log_r, np.arange(self.log_r.size, dtype=np.float64))
        j = np.minimum(pos_r.astype(np.int64), self.log_r.size - 2)
        t = pos_r - j
        rows = self.values[:, j] * (1.0 - t) + self.values[:, j + 1] * t  # (n_mu, F)
        step = self.log_mu[1] - self.log_mu[0]
        pos = (np.log(np.clip(mu, _MU_MIN, _MU_MAX)) - self.log_mu[0]) / step
        i = np.minimum(pos.astype(np.int64), self.log_mu.size - 2)
        u = pos - i
        kappa = (
            np.take_along_axis(rows, i, axis=0) * (1.0 - u)
            + np.take_along_axis(rows, i + 1, axis=0) * u
        )
        big = mu > _MU_MAX
        if big.any():
            limit = np.broadcast_to(gamma_limit(r)[None, :], mu.shape)
            kappa = np.where(
                big, limit + (kappa - limit) * _MU_MAX / np.maximum(mu, _MU_MAX), kappa
            )
        return np.asarray(np.where(mu < _MU_MIN, 0.0, kappa))


def expected_unit_deviance(mu: Array, r: Array) -> Array:
    """Compute ``kappa(mu, r)``, the expected NB unit deviance, at each fitted mean.

    Parameters
    ----------
    mu : ndarray
        Fitted means ``(n_obs, F)`` on the count scale.
    r : ndarray
        NB size per feature ``(F,)``, finite and positive.

    Returns
    -------
    ndarray
        ``(n_obs, F)``, from a :class:`KappaTable` built for ``r`` (see its ``__call__``).
    """
    return KappaTable.build(r)(mu, r)


def expected_deviance(mu: Array, r: Array, x: Array, table: KappaTable | None = None) -> Array:
    """Approximate the expected residual deviance of NB fits per feature.

    ``sum_i (1 - h_i) kappa(mu_i, r)`` with ``h_i`` the leverages at the IRLS weights
    ``mu / (1 + mu / r)``: within a few per cent of simulated two-group fits from a mean
    of about 1 up; at smaller means it overstates the expectation at the true means
    (``docs/calibration.md``).

    Parameters
    ----------
    mu : ndarray
        Fitted means ``(n_obs, F)`` on the count scale.
    r : ndarray
        NB size per feature ``(F,)``.
    x : ndarray
        Location design after constraints ``(n_obs, k)``.
    table : KappaTable, optional
        A table covering ``r`` (built for ``r`` when not given); build one per fit and
        reuse it across blocks of features.

    Returns
    -------
    ndarray
        Per feature ``(F,)``; about ``n_obs - rank(x)`` for large counts and small
        dispersions, less at small means, more for strongly over-dispersed counts.
    """
    # Leverages do not depend on the units of the columns; unit-norm columns keep the
    # pseudo-inverse's relative cut-off from mistaking a 1e8-scale covariate for noise.
    norms = np.linalg.norm(x, axis=0)
    x = x / np.where(norms > 0.0, norms, 1.0)
    w = mu / (1.0 + mu / r[None, :])
    info = np.einsum("ik,if,il->fkl", x, w, x)
    inv = np.linalg.pinv(info, hermitian=True)
    lev = np.einsum("ik,fkl,il->if", x, inv, x) * w
    kappa = (table if table is not None else KappaTable.build(r))(mu, r)
    return np.asarray(np.sum(np.clip(1.0 - lev, 0.0, 1.0) * kappa, axis=0))
