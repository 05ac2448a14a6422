"""Sums over cells for location designs of a few groups plus a few continuous covariates.

A single-cell design such as ``~ cell_type + condition + covariate`` has rows
``x_j = [G[g_j], c_j]``: the discrete columns take one of a few distinct rows ``G[g]`` (the
cell's group ``g_j``, here 16 for 8 cell types x 2 conditions) and ``c_j`` holds the ``p``
continuous columns. The observed information ``X^T diag(w) X`` then needs, per group, only
the sums of ``w``, ``w c`` and ``w c c^T`` over its cells: ``1 + p + p (p + 1) / 2``
products instead of the ``k (k + 1) / 2`` of the full pair matrix (3 instead of 55 for 10
coefficients), and the gradient only the sums of ``d`` and ``d c``. The linear predictor is
``offset_j + (G a_G)[g_j] + c_j . a_c``, a gather from a table of group predictors.

With the compiled kernel (numba; :data:`batchglm.families.nb_kernel.ENABLED`) one pass per
evaluation computes the predictor, the NB terms (the expressions of
:mod:`batchglm.families.nb_kernel`) and adds them into the per-group sums: no
``(n_obs, F)`` array is written. The NumPy path computes the same sums with
:meth:`~batchglm.families.nb.NegativeBinomial.derivatives_numpy` and a sparse group
indicator; both agree with the direct sums over the full pair matrix
(:class:`~batchglm.solvers.linalg.PairProducts`) to rounding (``tests/test_covariate_sums.py``).

The per-cell NB terms themselves cannot be grouped (the predictor differs from cell to
cell), so the cost per evaluation stays ``O(n_obs)``; what goes is the pair matrix (its
memory, 520 MB for 10 coefficients at a million cells, and its reading at every
evaluation) and the intermediate arrays.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse

from batchglm.families import nb_kernel
from batchglm.families.nb import NegativeBinomial
from batchglm.solvers.rows import unique_rows

if TYPE_CHECKING:
    from batchglm.solvers.objective import Problem

Array = NDArray[np.float64]

#: Columns with at most this many distinct values count as discrete.
MAX_DISCRETE_VALUES = 64
#: At most this many continuous columns (the products grow as ``p^2``).
MAX_COVARIATES = 4
#: At least this many cells per group on average, and at most this many groups.
MIN_CELLS_PER_GROUP = 16
MAX_GROUPS = 4096


@dataclass(frozen=True)
class CovariatePlan:
    """The feature-independent part: each cell's group and continuous columns.

    Attributes
    ----------
    discrete, continuous : ndarray of int
        Positions of the discrete and continuous columns in the constrained location design.
    group : ndarray of int
        ``(n_obs,)`` group of every cell (distinct discrete part and scale group).
    order : ndarray of int
        ``(n_obs,)`` cells sorted by group (stable): the kernel reads each group's cells as
        one contiguous run and sums them in registers.
    starts : ndarray of int
        ``(n_groups + 1,)`` where each group's run begins in ``order``.
    rows : ndarray
        ``(n_groups, n_discrete)`` discrete part of each group's design row.
    scale_of_group : ndarray of int
        ``(n_groups,)`` scale group of each group.
    n_scale : int
        Number of scale groups.
    covariates : ndarray
        ``(n_obs, p)`` continuous columns in ``order``, C-contiguous.
    offset : ndarray
        ``(n_obs,)`` location offsets (natural log of the size factors) in ``order``.
    sum_sf, sum_sf2 : ndarray
        ``(n_scale, n_groups)`` sums of ``exp(offset)`` and its square per group (for the
        moment start, :mod:`batchglm.init`), zero outside each group's scale group.
    sizes : ndarray
        ``(n_groups,)`` cells per group.
    cov_min, cov_max : ndarray
        ``(n_groups, p)`` smallest and largest value of each continuous column per group.
    """

    discrete: NDArray[np.intp]
    continuous: NDArray[np.intp]
    group: NDArray[np.intp]
    order: NDArray[np.intp]
    starts: NDArray[np.intp]
    rows: Array
    scale_of_group: NDArray[np.intp]
    n_scale: int
    covariates: Array
    offset: Array
    sum_sf: Array
    sum_sf2: Array
    sizes: Array
    cov_min: Array
    cov_max: Array

    @property
    def n_groups(self) -> int:
        """Number of groups."""
        return int(self.rows.shape[0])

    @property
    def n_covariates(self) -> int:
        """Number of continuous columns ``p``."""
        return int(self.covariates.shape[1])

    def sort(self, y: Array) -> Array:
        """Put the cells of a block in group order.

        Parameters
        ----------
        y : ndarray
            ``(n_obs, F)`` values in the data's order.

        Returns
        -------
        ndarray
            ``(n_obs, F)`` C-contiguous float64 copy in ``order``.
        """
        return np.ascontiguousarray(y[self.order], dtype=np.float64)

    def min_eta_loc(self, a: Array) -> Array | None:
        """Smallest location predictor without offsets, ``min_j x_j . a``, from group bounds.

        With one continuous column ``c`` of coefficient ``b`` the smallest ``c b`` of a group
        is ``b min(c)`` or ``b max(c)``, so the minimum over the cells is one over the
        groups: ``min_g (G[g] a_G + min(b cmin_g, b cmax_g))``, the same number as the
        minimum over the distinct design rows without a pass over the cells. With more
        columns the minimum of a sum is not the sum of the minima.

        Parameters
        ----------
        a : ndarray
            ``(F, k_loc)`` free location coefficients.

        Returns
        -------
        ndarray or None
            ``(F,)`` minima; ``None`` with more than one continuous column.
        """
        if self.n_covariates != 1:
            return None
        b = a[:, self.continuous[0]]
        base = self.rows @ a[:, self.discrete].T
        low = np.minimum(self.cov_min[:, :1] * b, self.cov_max[:, :1] * b)
        out: Array = (base + low).min(axis=0)
        return out


def build(problem: Problem) -> CovariatePlan | None:
    """Return the plan of a problem, or ``None`` where the path does not apply.

    It applies to the negative binomial without observation weights and without cells of
    equal predictors (:class:`~batchglm.solvers.objective.Problem` ``cells``), with a
    grouped scale design, when the location design has between 1 and
    :data:`MAX_COVARIATES` continuous columns (more than :data:`MAX_DISCRETE_VALUES`
    distinct values) and its other columns, with the scale group, form at most
    :data:`MAX_GROUPS` groups of at least :data:`MIN_CELLS_PER_GROUP` cells on average.

    Parameters
    ----------
    problem : Problem
        Designs, family and offsets of a fit.

    Returns
    -------
    CovariatePlan or None
        The plan.
    """
    if not isinstance(problem.family, NegativeBinomial) or problem.weights is not None:
        return None
    if problem.cells is not None or problem.scale_groups.identity:
        return None
    xc = problem.loc.reduced
    n = xc.shape[0]
    if n == 0:
        return None
    n_distinct = np.array([pd.unique(xc[:, j]).size for j in range(xc.shape[1])])
    continuous = np.flatnonzero(n_distinct > MAX_DISCRETE_VALUES)
    if not 1 <= continuous.size <= MAX_COVARIATES:
        return None
    discrete = np.flatnonzero(n_distinct <= MAX_DISCRETE_VALUES)
    scale_index = problem.scale_groups.index
    keys, group = unique_rows(np.column_stack([xc[:, discrete], scale_index]))
    n_groups = keys.shape[0]
    if n_groups > MAX_GROUPS or n_groups * MIN_CELLS_PER_GROUP > n:
        return None
    scale_of_group = keys[:, -1].astype(np.intp)
    n_scale = problem.scale_groups.n_groups
    sf = np.exp(problem.offset)
    pair = scale_index * n_groups + group
    size = n_scale * n_groups
    order = np.argsort(group, kind="stable")
    covariates = np.ascontiguousarray(xc[order][:, continuous])
    starts = np.searchsorted(group[order], np.arange(n_groups + 1)).astype(np.intp)
    return CovariatePlan(
        discrete=discrete,
        continuous=continuous,
        group=group,
        order=order,
        starts=starts,
        rows=np.ascontiguousarray(keys[:, :-1]),
        scale_of_group=scale_of_group,
        n_scale=n_scale,
        covariates=covariates,
        offset=np.ascontiguousarray(problem.offset[order], dtype=np.float64),
        sum_sf=np.bincount(pair, sf, minlength=size).astype(np.float64).reshape(n_scale, -1),
        sum_sf2=np.bincount(pair, sf * sf, minlength=size).astype(np.float64).reshape(n_scale, -1),
        sizes=np.bincount(group, minlength=n_groups).astype(np.float64),
        # every group has a cell (groups are distinct rows that occur)
        cov_min=np.minimum.reduceat(covariates, starts[:-1], axis=0),
        cov_max=np.maximum.reduceat(covariates, starts[:-1], axis=0),
    )


def n_sums(p: int) -> int:
    """Count the per-group sums for ``p`` continuous columns.

    Parameters
    ----------
    p : int
        Continuous columns.

    Returns
    -------
    int
        ``6 + 3 p + p (p + 1) / 2``: the six NB terms (log-likelihood, location score and
        weight, cross weight, scale score and weight), the location score, location weight
        and cross weight times each covariate, and the location weight times each product
        of two covariates.
    """
    return 6 + 3 * p + p * (p + 1) // 2


def _sums_kernel(
    y: Array,
    offset: Array,
    starts: NDArray[np.intp],
    cov: Array,
    base: Array,
    coef: Array,
    eta_scale: Array,
    order: int,
    acc: Array,
) -> None:  # pragma: no cover - compiled; covered through `group_sums`
    n_feat = y.shape[1]
    p = cov.shape[1]
    n_sums = acc.shape[2]
    extra = np.zeros(n_sums)
    for g in range(starts.size - 1):
        for f in range(n_feat):
            es = eta_scale[g, f]
            r = np.exp(es)
            shift = base[g, f] - es
            for m in range(n_sums):
                extra[m] = 0.0
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            s4 = 0.0
            s5 = 0.0
            first = starts[g]
            if p == 1 and order > 0:
                # One covariate (the common case): its four sums in registers rather than
                # in `extra`; the same operations in the same order as the general loop
                # below, so the same numbers to the last bit.
                b = coef[0, f]
                t0 = 0.0
                t1 = 0.0
                t2 = 0.0
                t3 = 0.0
                for i in range(starts[g], starts[g + 1]):
                    x = cov[i, 0]
                    log_q = offset[i] + shift + x * b
                    yi = y[i, f]
                    q = np.exp(log_q)
                    log1p_q = np.log1p(q)
                    s0 += (log_q - log1p_q) * yi - r * log1p_q
                    inv = 1.0 / (q + 1.0)
                    q_inv = q * inv
                    resid = yi - q * r
                    dl = resid * inv
                    q_inv2 = q_inv * inv
                    d2x = resid * q_inv2
                    d2l = -((yi + r) * q_inv2)
                    ds = (q_inv - log1p_q) * r - yi * inv
                    s1 += dl
                    s2 += d2l
                    s3 += d2x
                    s4 += ds
                    s5 += q_inv * r + ds + dl * inv
                    t0 += x * dl
                    t1 += x * d2l
                    t2 += x * d2x
                    t3 += x * d2l * x
                extra[6] = t0
                extra[7] = t1
                extra[8] = t2
                extra[9] = t3
                first = starts[g + 1]  # done: the general loop below runs no cell
            for i in range(first, starts[g + 1]):
                log_q = offset[i] + shift
                for c in range(p):
                    log_q += cov[i, c] * coef[c, f]
                yi = y[i, f]
                q = np.exp(log_q)
                log1p_q = np.log1p(q)
                s0 += (log_q - log1p_q) * yi - r * log1p_q
                if order == 0:
                    continue
                inv = 1.0 / (q + 1.0)
                q_inv = q * inv
                resid = yi - q * r
                dl = resid * inv
                q_inv2 = q_inv * inv
                d2x = resid * q_inv2
                d2l = -((yi + r) * q_inv2)
                ds = (q_inv - log1p_q) * r - yi * inv
                s1 += dl
                s2 += d2l
                s3 += d2x
                s4 += ds
                s5 += q_inv * r + ds + dl * inv
                m = 6
                for c in range(p):
                    x = cov[i, c]
                    extra[m] += x * dl
                    extra[m + 1] += x * d2l
                    extra[m + 2] += x * d2x
                    m += 3
                for c in range(p):
                    x = cov[i, c] * d2l
                    for c2 in range(c, p):
                        extra[m] += x * cov[i, c2]
                        m += 1
            a = acc[g, f]
            a[0] = s0
            a[1] = s1
            a[2] = s2
            a[3] = s3
            a[4] = s4
            a[5] = s5
            for m in range(6, n_sums):
                a[m] = extra[m]


_compiled: list[Callable[..., Any]] = []
_LOCK = threading.Lock()


def _kernel() -> Callable[..., Any]:
    """Return the compiled kernel (numba's on-disk cache makes later processes load it)."""
    with _LOCK:
        if not _compiled:
            from numba import njit

            _compiled.append(njit(cache=True, nogil=True)(_sums_kernel))
        return _compiled[0]


def group_sums(
    plan: CovariatePlan,
    y: Array,
    a: Array,
    eta_scale: Array,
    order: int,
    compiled: bool | None = None,
) -> Array:
    """Per-group sums of the NB terms and their products with the covariates.

    Parameters
    ----------
    plan : CovariatePlan
        The problem's plan.
    y : ndarray
        ``(n_obs, F)`` counts in group order (:meth:`CovariatePlan.sort`).
    a : ndarray
        ``(F, k_loc)`` free location coefficients.
    eta_scale : ndarray
        ``(n_groups, F)`` natural log of the size ``r`` of each group.
    order : int
        0 for the log-likelihood only, 2 for derivatives too.
    compiled : bool, optional
        Use the compiled kernel (default: where :func:`batchglm.families.nb_kernel.applies`
        would, i.e. numba available and at least ``nb_kernel.MIN_ENTRIES`` entries).

    Returns
    -------
    ndarray
        ``(n_groups, F, n_sums(p))`` sums in the order of :func:`n_sums` (only the first
        is filled for order 0).
    """
    n_feat = y.shape[1]
    p = plan.n_covariates
    base = np.ascontiguousarray((plan.rows @ a[:, plan.discrete].T), dtype=np.float64)
    coef = np.ascontiguousarray(a[:, plan.continuous].T, dtype=np.float64)
    eta_s = np.ascontiguousarray(eta_scale, dtype=np.float64)
    if compiled is None:
        compiled = nb_kernel.ENABLED and y.size >= nb_kernel.MIN_ENTRIES
    acc = np.zeros((plan.n_groups, n_feat, n_sums(p)))
    if compiled:
        yc = np.ascontiguousarray(y, dtype=np.float64)
        _kernel()(yc, plan.offset, plan.starts, plan.covariates, base, coef, eta_s, order, acc)
        return acc
    group = np.repeat(np.arange(plan.n_groups), np.diff(plan.starts))
    eta_loc = plan.offset[:, None] + base[group] + plan.covariates @ coef
    der = NegativeBinomial().derivatives_numpy(y, eta_loc, eta_s[group], order)
    indicator = sparse.csr_array(
        (np.ones(group.size), (group, np.arange(group.size))),
        shape=(plan.n_groups, group.size),
    )

    def put(m: int, values: Array) -> None:
        acc[:, :, m] = indicator @ values

    put(0, der.ll)
    if order == 0:
        return acc
    assert der.d_scale is not None and der.d2_cross is not None and der.d2_scale is not None
    put(1, der.d_loc)
    put(2, der.d2_loc)
    put(3, der.d2_cross)
    put(4, der.d_scale)
    put(5, der.d2_scale)
    cov = plan.covariates
    m = 6
    for c in range(p):
        x = cov[:, c : c + 1]
        put(m, x * der.d_loc)
        put(m + 1, x * der.d2_loc)
        put(m + 2, x * der.d2_cross)
        m += 3
    for c in range(p):
        for c2 in range(c, p):
            put(m, cov[:, c : c + 1] * cov[:, c2 : c2 + 1] * der.d2_loc)
            m += 1
    return acc


@dataclass(frozen=True)
class Assembled:
    """Log-likelihood terms and derivatives of a block assembled from the group sums.

    Attributes
    ----------
    ll : ndarray
        ``(F,)`` sum of the elementary NB terms.
    grad_loc : ndarray or None
        ``(F, k_loc)`` location score.
    hess_loc : ndarray or None
        ``(F, k_loc, k_loc)`` location block of the observed Hessian.
    cross : ndarray or None
        ``(F, k_loc, k_scale)`` location-scale block.
    d_scale, d2_scale : ndarray or None
        ``(n_scale, F)`` scale score and weight summed per scale group.
    """

    ll: Array
    grad_loc: Array | None
    hess_loc: Array | None
    cross: Array | None
    d_scale: Array | None
    d2_scale: Array | None


def assemble(plan: CovariatePlan, acc: Array, scale_rows: Array, order: int) -> Assembled:
    """Turn the group sums of :func:`group_sums` into the score and observed Hessian.

    Parameters
    ----------
    plan : CovariatePlan
        The problem's plan.
    acc : ndarray
        ``(n_groups, F, n_sums(p))`` group sums.
    scale_rows : ndarray
        ``(n_scale, k_scale)`` distinct scale-design rows.
    order : int
        0 for the log-likelihood only, 2 for derivatives too.

    Returns
    -------
    Assembled
        The block's terms.
    """
    ll = acc[:, :, 0].sum(axis=0)
    if order == 0:
        return Assembled(ll, None, None, None, None, None)
    p = plan.n_covariates
    n_feat = acc.shape[1]
    dis, con = plan.discrete, plan.continuous
    kl = dis.size + con.size
    rows = plan.rows
    z = scale_rows[plan.scale_of_group]
    grad = np.empty((n_feat, kl))
    hess = np.empty((n_feat, kl, kl))
    cross = np.empty((n_feat, kl, scale_rows.shape[1]))
    grad[:, dis] = np.einsum("gd,gf->fd", rows, acc[:, :, 1])
    hess[np.ix_(np.arange(n_feat), dis, dis)] = np.einsum("gd,ge,gf->fde", rows, rows, acc[:, :, 2])
    cross[:, dis, :] = np.einsum("gd,gs,gf->fds", rows, z, acc[:, :, 3])
    m = 6
    for c in range(p):
        col = con[c]
        grad[:, col] = acc[:, :, m].sum(axis=0)
        dc = np.einsum("gd,gf->fd", rows, acc[:, :, m + 1])
        hess[:, dis, col] = dc
        hess[:, col, dis] = dc
        cross[:, col, :] = np.einsum("gs,gf->fs", z, acc[:, :, m + 2])
        m += 3
    for c in range(p):
        for c2 in range(c, p):
            v = acc[:, :, m].sum(axis=0)
            hess[:, con[c], con[c2]] = v
            hess[:, con[c2], con[c]] = v
            m += 1
    to_scale = sparse.csr_array(
        (np.ones(plan.n_groups), (plan.scale_of_group, np.arange(plan.n_groups))),
        shape=(plan.n_scale, plan.n_groups),
    )
    d_s = np.asarray(to_scale @ acc[:, :, 4])
    d2_s = np.asarray(to_scale @ acc[:, :, 5])
    return Assembled(ll, grad, hess, cross, d_s, d2_s)
