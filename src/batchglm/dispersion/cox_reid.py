"""Cox-Reid adjusted profile likelihood of the NB size, batched over features.

For fitted means ``mu`` (size factors included) the adjusted profile log-likelihood of
``t = log r`` is

``APL(t) = l(t; y, mu) - 1/2 log det(X^T W(t) X)``,  ``W = diag(mu / (1 + mu / r))``,

where ``X`` is the location design after constraints. The second term removes most of the
downward bias of the plain maximum-likelihood dispersion with few residual degrees of
freedom (Cox and Reid, 1987; used by edgeR, DESeq2 and glmGamPoi). An optional normal prior
on ``log alpha = -t`` turns the maximiser into DESeq2's maximum a posteriori estimate.

Every feature is a 1-D problem. All features are solved together: the objective is first
evaluated on a grid of ``t`` (so the global maximum is found even where the APL has
several local ones), then the derivative is bisected inside the two grid cells around the
best grid point.

The columns of ``X`` are scaled to unit maximum first. That changes ``log det(X^T W X)`` by
a constant (``2 sum log units``), which moves no maximiser, and keeps ``X^T W X`` well
conditioned when covariates are on raw scales (library sizes of 1e8 next to indicators).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.families.special_diff import digamma_diff, lgamma_diff
from batchglm.solvers.count_table import CountTable
from batchglm.solvers.linalg import column_units
from batchglm.solvers.objective import unique_rows

Array = NDArray[np.float64]

#: DESeq2's smallest dispersion; ``log r`` never exceeds ``log(1 / MIN_ALPHA)`` (this is
#: also the NB family's upper bound on ``r``).
MIN_ALPHA = 1e-8
#: Grid step on ``log r``; the bisection then refines inside two cells.
_GRID_STEP = 0.25
_BISECTIONS = 40
#: Working weights below this are floored so ``X^T W X`` stays invertible for features whose
#: fitted means run to zero (separated groups).
_W_FLOOR = 1e-10
#: Observations are summed into cells of equal means when there are at most this share.
_CELL_SHARE = 0.5


def max_alpha(n_obs: int) -> float:
    """Largest dispersion considered, ``max(10, n_obs)`` as in DESeq2.

    Parameters
    ----------
    n_obs : int
        Number of observations.

    Returns
    -------
    float
        The upper bound on ``alpha = 1 / r``.
    """
    return float(max(10.0, n_obs))


@dataclass(frozen=True)
class LogNormalPrior:
    """Normal prior on ``log alpha`` per feature.

    Attributes
    ----------
    mean : ndarray
        Prior mean of ``log alpha`` per feature (the log of the trend).
    var : float
        Prior variance of ``log alpha``.
    """

    mean: Array
    var: float


def _count_sums(table: CountTable, func: Callable[[Array, Array], Array], t: Array) -> Array:
    """Return ``sum_i func(y_i, r)`` per feature, once per distinct non-zero count.

    ``func(0, r)`` is 0 for the gamma-function differences, so zeros are skipped.
    """
    feature = table.seg % table.n_feat
    terms = func(table.values, np.exp(t)[feature])
    return np.bincount(feature, table.counts * terms, minlength=table.n_feat).astype(np.float64)


@dataclass(frozen=True)
class _Rows:
    """What the APL sums over: observations, or cells of observations with equal means.

    Observations with the same design row and size factor have the same fitted mean for
    every feature, and the APL's terms other than the count terms are affine in ``y`` at a
    given mean: a cell enters with its summed counts and its size ``n``. The count terms
    still see every count (through the count table).
    """

    y: Array
    mu: Array
    x: Array
    n: Array | None

    def columns(self, idx: NDArray[np.intp]) -> _Rows:
        return _Rows(
            np.ascontiguousarray(self.y[:, idx]),
            np.ascontiguousarray(self.mu[:, idx]),
            self.x,
            self.n,
        )


def _rows(y: Array, mu: Array, x: Array) -> _Rows:
    """Cells of equal (design row, mean) where they are few, else the observations."""
    n_obs = y.shape[0]
    if n_obs == 0 or y.shape[1] == 0:
        return _Rows(y, mu, x, None)
    # Equal design rows give equal means for every feature iff the size factors are equal,
    # which the first feature's mean tells.
    _, cell = unique_rows(np.column_stack([x, mu[:, :1]]))
    n_cells = int(cell.max()) + 1
    if n_cells > _CELL_SHARE * n_obs:
        return _Rows(y, mu, x, None)
    first = np.empty(n_cells, dtype=np.intp)
    first[cell[::-1]] = np.arange(n_obs)[::-1]
    sums = np.zeros((n_cells, y.shape[1]))
    np.add.at(sums, cell, y)
    size = np.bincount(cell, minlength=n_cells).astype(np.float64)[:, None]
    return _Rows(sums, np.ascontiguousarray(mu[first]), x[first], size)


def _parts(rows: _Rows, t: Array, order: int, table: CountTable) -> tuple[Array, Array | None]:
    """APL value (and derivative in ``t``) for each feature at ``t`` (shape ``(F,)``)."""
    y, mu, x, n = rows.y, rows.mu, rows.x, rows.n
    r = np.broadcast_to(np.exp(t)[None, :], y.shape)
    rn = r if n is None else r * n
    q = mu / r
    log1p_q = np.log1p(q)
    # y log(mu / (mu + r)) = y (log q - log1p q); the q form stays exact when r >> mu.
    with np.errstate(divide="ignore"):
        log_q = np.log(q)
    ll_terms = np.where(y > 0, y * (log_q - log1p_q), 0.0) - rn * log1p_q
    # gammaln(y + r) - gammaln(r): once per distinct count and feature (the count table).
    ll = ll_terms.sum(axis=0) + _count_sums(table, lgamma_diff, t)
    w = np.maximum(mu / (1.0 + q), _W_FLOOR)
    info = np.einsum("ni,nf,nj->fij", x, w if n is None else w * n, x, optimize=True)
    _, logdet = np.linalg.slogdet(info)
    value = ll - 0.5 * logdet
    if order == 0:
        return value, None
    inv1 = 1.0 / (1.0 + q)
    # d l / d t = r * (digamma(y + r) - digamma(r) - log1p(q) + q / (1 + q) - y / (r + mu))
    dl = rn * (q * inv1 - log1p_q) - y * inv1
    dl_sum = dl.sum(axis=0) + np.exp(t) * _count_sums(table, digamma_diff, t)
    dw = mu * q * inv1 * inv1
    dinfo = np.einsum("ni,nf,nj->fij", x, dw if n is None else dw * n, x, optimize=True)
    trace = np.einsum("fii->f", np.linalg.solve(info, dinfo))
    return value, dl_sum - 0.5 * trace


def _objective(
    rows: _Rows,
    t: Array,
    prior: LogNormalPrior | None,
    order: int,
    table: CountTable,
) -> tuple[Array, Array | None]:
    value, grad = _parts(rows, t, order, table)
    if prior is not None:
        # log alpha = -t, so the prior's log density in t is -(t + m)^2 / (2 v).
        value = value - (t + prior.mean) ** 2 / (2.0 * prior.var)
        if grad is not None:
            grad = grad - (t + prior.mean) / prior.var
    return value, grad


def cox_reid_log_r(
    y: Array,
    mu: Array,
    x: Array,
    prior: LogNormalPrior | None = None,
    alpha_max: float | None = None,
) -> Array:
    """Maximise the Cox-Reid adjusted profile likelihood (plus a prior) over ``log r``.

    Parameters
    ----------
    y : ndarray
        Counts ``(n_obs, F)``.
    mu : ndarray
        Fitted means ``(n_obs, F)``, size factors included; held fixed.
    x : ndarray
        Location design after constraints, ``(n_obs, k)``.
    prior : LogNormalPrior, optional
        Normal prior on ``log alpha``; without it the estimate is the APL maximiser.
    alpha_max : float, optional
        Largest dispersion allowed; by default :func:`max_alpha`.

    Returns
    -------
    ndarray
        ``log r`` per feature, within ``[-log(alpha_max), -log(1e-8)]``. A maximum beyond
        either end (e.g. under-dispersion) stops on that end.
    """
    n_obs, n_feat = y.shape
    x = np.asarray(x, dtype=np.float64)
    x = x / column_units(x)
    upper = alpha_max if alpha_max is not None else max_alpha(n_obs)
    lo_t, hi_t = -np.log(upper), -np.log(MIN_ALPHA)
    grid = np.linspace(lo_t, hi_t, int(np.ceil((hi_t - lo_t) / _GRID_STEP)) + 1)
    table = CountTable(y, np.zeros(n_obs, dtype=np.intp), 1)
    rows = _rows(y, mu, x)
    values = np.empty((grid.size, n_feat))
    for g, t in enumerate(grid):
        values[g] = _objective(rows, np.full(n_feat, t), prior, 0, table)[0]
    best = np.nanargmax(np.where(np.isfinite(values), values, -np.inf), axis=0)
    lo = grid[np.maximum(best - 1, 0)]
    hi = grid[np.minimum(best + 1, grid.size - 1)]
    g_lo = _objective(rows, lo, prior, 1, table)[1]
    g_hi = _objective(rows, hi, prior, 1, table)[1]
    assert g_lo is not None and g_hi is not None
    # A bracket holds a sign change of the derivative (rising, then falling). Where the
    # best grid point is an end and the objective still rises outward, the end is the
    # answer.
    bracketed = (g_lo > 0) & (g_hi < 0)
    t_out = grid[best].copy()
    if bracketed.any():
        idx = np.flatnonzero(bracketed)
        a, b = lo[idx], hi[idx]
        sub_rows = rows.columns(idx)
        sub = None if prior is None else LogNormalPrior(prior.mean[idx], prior.var)
        sub_table = table.subset(bracketed)
        for _ in range(_BISECTIONS):
            mid = 0.5 * (a + b)
            grad = _objective(sub_rows, mid, sub, 1, sub_table)[1]
            assert grad is not None
            rising = grad > 0
            a = np.where(rising, mid, a)
            b = np.where(rising, b, mid)
        t_out[idx] = 0.5 * (a + b)
    return t_out
