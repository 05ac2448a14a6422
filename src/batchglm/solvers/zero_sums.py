"""Zero counts of categorical designs with per-cell size factors, summed without a pass.

With a categorical location design, a scale design that is constant within the design's
groups (e.g. intercept-only) and a per-observation offset ``log s_j`` (size factors), the
NB mean of cell ``j`` in group ``g`` is ``mu_j = s_j m_g`` and every elementary term of a
zero count depends on the cell only through ``q_j = s_j t`` with ``t = m_g / r``:
``-r log1p(q_j)`` and its derivatives. Summed over the cells of a group these are five
smooth functions of the one scalar ``u = log t`` (``x = s_j t`` below)::

    A(u) = sum_j log1p(x)              B(u) = sum_j x / (1 + x)   (= dA/du)
    C(u) = sum_j x / (1 + x)^2 (= dB/du)  D(u) = B - A   E(u) = sum_j x^2 / (1 + x)^2

They are built once per fit from the size factors alone (no feature enters) and evaluated
per ``(group, feature)`` at a cost independent of the number of cells:

* ``t max(s) <= 1/4``: power series in ``t`` with the group's moments ``sum_j s_j^k``;
* ``t min(s) >= 4``: power series in ``1/t`` with ``sum_j s_j^-k`` (plus ``n_g u + sum log s``
  for ``A`` and ``D``);
* in between: piecewise Chebyshev expansions in ``u`` (pieces at most 1.5 wide, degree 24),
  interpolating direct sums at the Chebyshev nodes. The summands are analytic in a strip
  of half-width ``pi`` around the real ``u`` axis, so the expansions converge to rounding.

All cells are summed as if their count were zero; the non-zero entries then add their
difference to the zero term directly (``y (log q - log1p q)`` for the log-likelihood), so a
feature costs ``O(n_groups + nnz)`` per evaluation instead of ``O(n_obs)``. The total
agrees with the direct sums to about 1e-13 relative to the summed magnitude
(``tests/test_zero_sums.py``). Blocks with few zero counts (bulk data) keep the
per-observation sums, which are cheaper there (:data:`MIN_ZEROS_PER_GROUP`).

Sources: summing repeated terms once per distinct argument is what glmGamPoi does for its
overdispersion fit (Ahlmann-Eltze & Huber 2021, counts grouped by value); the expansions
over the size factors are batchglm's, with Chebyshev interpolation and Clenshaw evaluation
as in Trefethen, *Approximation Theory and Approximation Practice* (2019), ch. 3 and 8.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from batchglm.families import Derivatives
from batchglm.families.nb import NegativeBinomial
from batchglm.nonzeros import NonZeros
from batchglm.solvers.linalg import GroupSums, PairProducts
from batchglm.solvers.rows import Rows, unique_rows

if TYPE_CHECKING:
    from batchglm.solvers.objective import Problem

Array = NDArray[np.float64]

#: Series regions: ``t max(s) <= _RHO`` (left) and ``t min(s) >= 1 / _RHO`` (right).
_RHO = 0.25
#: Terms of both series; ``(K + 1) _RHO^K`` is below 1e-16.
_K = 32
#: Widest Chebyshev piece in ``u = log t`` and the expansions' degree.
_PIECE = 1.5
_DEGREE = 24
#: Cells summed at once while the expansions are built (bounds the temporary memory).
_CHUNK = 1 << 15
#: The path applies when each design group holds at least this many observations on average.
MIN_CELLS_PER_GROUP = 16
#: ... and a block when its zero counts number at least this many per (design group, feature)
#: on average. Below it the expansions (about 125 terms per group and feature) cost more than
#: the per-observation terms they replace: at 85 bulk samples in 4 groups the direct sums
#: fitted 1.1-1.7x faster at every zero share from 0 to 0.94 (about 20 zeros per group at
#: most); the two paths broke even at about 32-40 zeros per group with 170-680 cells
#: (one core, ``docs/benchmarks.md``, bulk round 6).
MIN_ZEROS_PER_GROUP = 32

_K_RANGE = np.arange(1, _K + 1, dtype=np.float64)
_SIGN = np.where(_K_RANGE % 2 == 1, 1.0, -1.0)
# Left series: f = sum_k c_k (-1)^(k+1) x^k, for A, B, C, D, E.
_LEFT = (
    np.stack([1.0 / _K_RANGE, np.ones(_K), _K_RANGE, 1.0 - 1.0 / _K_RANGE, 1.0 - _K_RANGE]) * _SIGN
)
# Right series (w = 1/x): f = alpha + beta log x + sum_k d_k (-1)^(k+1) w^k.
_ALPHA = np.array([0.0, 1.0, 0.0, 1.0, 1.0])
_BETA = np.array([1.0, 0.0, 0.0, -1.0, 0.0])
_RIGHT = (
    np.stack([1.0 / _K_RANGE, -np.ones(_K), _K_RANGE, -1.0 - 1.0 / _K_RANGE, -1.0 - _K_RANGE])
    * _SIGN
)


def _direct(x: Array) -> Array:
    """Evaluate the five summands at ``x`` (any shape) -> ``(5,) + x.shape``."""
    inv = 1.0 / (1.0 + x)
    b = x * inv
    c = b * inv
    a = np.log1p(x)
    return np.stack([a, b, c, b - a, b * b])


class SizeFactorSums:
    """``A .. E`` of one group of size factors as functions of ``u = log t``.

    Parameters
    ----------
    log_s : ndarray
        ``(n_g,)`` natural-log size factors (offsets) of the group's cells, ``n_g >= 1``.

    Notes
    -----
    Construction costs about ``(pieces * 25 + 64) n_g`` elementary operations, once per fit.
    """

    def __init__(self, log_s: Array, n_pieces: int | None = None) -> None:
        log_s = np.asarray(log_s, dtype=np.float64)
        self.n = float(log_s.size)
        self.l_min, self.l_max = float(log_s.min()), float(log_s.max())
        self.l_mean = float(log_s.mean())
        # Moments scaled by the largest / smallest size factor: every term in [0, 1].
        ks = _K_RANGE[:, None]
        self.left = np.zeros(_K)
        self.right = np.zeros(_K)
        for part in _chunks(log_s):
            self.left += np.exp(ks * (part[None, :] - self.l_max)).sum(axis=1)
            self.right += np.exp(ks * (self.l_min - part[None, :])).sum(axis=1)
        self.u_lo = np.log(_RHO) - self.l_max
        self.u_hi = -np.log(_RHO) - self.l_min
        if n_pieces is None:
            n_pieces = pieces_needed(log_s)
        self.edges = np.linspace(self.u_lo, self.u_hi, n_pieces + 1)
        self.half = 0.5 * (self.edges[1] - self.edges[0])
        # Chebyshev points of the first kind on every piece, all pieces at once.
        j = np.arange(_DEGREE + 1)
        nodes = np.cos(np.pi * (j + 0.5) / (_DEGREE + 1))
        mids = 0.5 * (self.edges[:-1] + self.edges[1:])
        u_nodes = (mids[:, None] + self.half * nodes[None, :]).ravel()
        values = np.zeros((5, u_nodes.size))
        for part in _chunks(log_s):
            values += _direct(np.exp(part[:, None] + u_nodes[None, :])).sum(axis=1)
        # Coefficients by the discrete cosine transform at those points.
        basis = np.cos(np.pi * np.outer(j, j + 0.5) / (_DEGREE + 1)) * (2.0 / (_DEGREE + 1))
        basis[0] *= 0.5
        vals = values.reshape(5, n_pieces, _DEGREE + 1)
        self.coef = np.einsum("kj,fpj->fpk", basis, vals)  # (5, pieces, degree + 1)

    def __call__(self, u: Array) -> Array:
        """Evaluate ``A, B, C, D, E`` at ``u = log t``.

        Parameters
        ----------
        u : ndarray
            ``(m,)`` natural logs of ``t = m_g / r``.

        Returns
        -------
        ndarray
            ``(5, m)``: the five sums over the group's cells.
        """
        u = np.asarray(u, dtype=np.float64)
        out = np.empty((5, u.size))
        left = u <= self.u_lo
        right = u >= self.u_hi
        mid = ~(left | right)
        if left.any():
            z = np.exp(u[left] + self.l_max)
            out[:, left] = _horner(self.left * _LEFT, z)
        if right.any():
            ur = u[right]
            v = np.exp(-(ur + self.l_min))
            series = _horner(self.right * _RIGHT, v)
            log_part = self.n * (ur + self.l_mean)
            out[:, right] = self.n * _ALPHA[:, None] + _BETA[:, None] * log_part[None, :] + series
        if mid.any():
            um = u[mid]
            piece = np.clip(np.searchsorted(self.edges, um) - 1, 0, self.edges.size - 2)
            x = (um - 0.5 * (self.edges[piece] + self.edges[piece + 1])) / self.half
            out[:, mid] = _clenshaw(self.coef[:, piece, :], x)
        return out


def pieces_needed(log_s: Array) -> int:
    """Chebyshev pieces of width at most 1.5 that cover the middle region of ``log_s``.

    Parameters
    ----------
    log_s : ndarray
        ``(n_g,)`` natural-log size factors.

    Returns
    -------
    int
        At least 1.
    """
    width = float(np.ptp(log_s)) - 2.0 * np.log(_RHO)
    return max(1, int(np.ceil(width / _PIECE)))


class StackedSums:
    """The expansions of several groups, evaluated for all groups in one call.

    Parameters
    ----------
    sums : list of SizeFactorSums
        One per group, all with the same number of pieces.
    """

    def __init__(self, sums: list[SizeFactorSums]) -> None:
        self.n = np.array([g.n for g in sums])
        self.l_min = np.array([g.l_min for g in sums])
        self.l_max = np.array([g.l_max for g in sums])
        self.l_mean = np.array([g.l_mean for g in sums])
        self.u_lo = np.array([g.u_lo for g in sums])
        self.u_hi = np.array([g.u_hi for g in sums])
        self.lo_edge = np.array([g.edges[0] for g in sums])
        self.half = np.array([g.half for g in sums])
        self.n_pieces = sums[0].edges.size - 1
        # (G, 5, K) series coefficients, (G, P, 5, degree + 1) Chebyshev coefficients.
        self.left = np.stack([g.left * _LEFT for g in sums])
        self.right = np.stack([g.right * _RIGHT for g in sums])
        self.coef = np.stack([np.moveaxis(g.coef, 1, 0) for g in sums])

    def __call__(self, u: Array) -> Array:
        """Evaluate ``A .. E`` of every group at its own ``u``.

        Parameters
        ----------
        u : ndarray
            ``(G, F)`` natural logs of ``t``, one row per group.

        Returns
        -------
        ndarray
            ``(5, G, F)`` sums over each group's cells.
        """
        n_groups, n_feat = u.shape
        grp = np.repeat(np.arange(n_groups), n_feat)
        uf = u.ravel()
        out = np.empty((5, uf.size))
        left = uf <= self.u_lo[grp]
        right = uf >= self.u_hi[grp]
        mid = ~(left | right)
        if left.any():
            g = grp[left]
            z = np.exp(uf[left] + self.l_max[g])
            out[:, left] = _horner(self.left[g], z)
        if right.any():
            g = grp[right]
            ur = uf[right]
            v = np.exp(-(ur + self.l_min[g]))
            log_part = self.n[g] * (ur + self.l_mean[g])
            out[:, right] = (
                self.n[g] * _ALPHA[:, None] + _BETA[:, None] * log_part + _horner(self.right[g], v)
            )
        if mid.any():
            g = grp[mid]
            pos = (uf[mid] - self.lo_edge[g]) / (2.0 * self.half[g])
            piece = np.clip(np.floor(pos).astype(np.intp), 0, self.n_pieces - 1)
            x = 2.0 * (pos - piece) - 1.0
            out[:, mid] = _clenshaw(np.moveaxis(self.coef[g, piece], 0, 1), x)
        return out.reshape(5, n_groups, n_feat)


def _chunks(log_s: Array) -> list[Array]:
    return [log_s[i : i + _CHUNK] for i in range(0, log_s.size, _CHUNK)]


def _horner(coef: Array, z: Array) -> Array:
    """``sum_k coef[..., k-1] z^k`` for ``k = 1..K``.

    ``coef`` is ``(5, K)`` (one set for every ``z``) or ``(m, 5, K)`` (one per ``z``);
    returns ``(5, m)``.
    """
    per_point = coef.ndim == 3
    acc = np.zeros((5, z.size))
    for k in range(coef.shape[-1] - 1, -1, -1):
        acc += coef[..., k].T if per_point else coef[:, k, None]
        acc *= z
    return acc


def _clenshaw(coef: Array, x: Array) -> Array:
    """Chebyshev series ``(5, m, degree + 1)`` at ``x`` in [-1, 1] ``(m,)`` -> ``(5, m)``."""
    b1 = np.zeros((5, x.size))
    b2 = np.zeros_like(b1)
    two_x = 2.0 * x
    for k in range(coef.shape[2] - 1, 0, -1):
        b1, b2 = coef[:, :, k] + two_x * b1 - b2, b1
    return coef[:, :, 0] + x * b1 - b2


@dataclass(frozen=True)
class ZeroSumPlan:
    """The feature-independent part: design groups and their size-factor expansions.

    Attributes
    ----------
    rows : Rows
        One row per design group (offset 0): the rows the objective sums over.
    group_of_obs : ndarray of int
        ``(n_obs,)`` design group of every observation.
    sums : StackedSums
        Expansions of all groups.
    scale_index : ndarray of int
        ``(n_groups,)`` scale group of every design group.
    """

    rows: Rows
    group_of_obs: NDArray[np.intp]
    sums: StackedSums
    scale_index: NDArray[np.intp]


#: Plans by ``id(problem)``, dropped when the problem is (``Problem`` is not hashable).
_PLANS: dict[int, ZeroSumPlan | None] = {}
_LOCK = threading.Lock()


def plan(problem: Problem) -> ZeroSumPlan | None:
    """Return the zero-sum plan of a problem, or ``None`` where the path does not apply.

    It applies to the negative binomial without observation weights when the location and
    scale design rows take few distinct values (at least :data:`MIN_CELLS_PER_GROUP`
    observations per group on average) but the offsets vary (with equal offsets the
    objective already sums equal cells). Built once per problem and shared by its blocks.

    Parameters
    ----------
    problem : Problem
        Designs, family and offsets of a fit.

    Returns
    -------
    ZeroSumPlan or None
        The plan.
    """
    with _LOCK:
        key = id(problem)
        if key in _PLANS:
            return _PLANS[key]
        result = _build(problem)
        _PLANS[key] = result
        weakref.finalize(problem, _PLANS.pop, key, None)
        return result


def _build(problem: Problem) -> ZeroSumPlan | None:
    if not isinstance(problem.family, NegativeBinomial) or problem.cells is not None:
        return None
    if problem.rows.weight is not None or getattr(problem, "weights", None) is not None:
        return None
    offset = problem.offset
    n = offset.size
    if n == 0 or np.ptp(offset) == 0.0:
        return None
    xc, zc = problem.loc.reduced, problem.scale.reduced
    keys, index = unique_rows(np.column_stack([xc, zc]))
    n_groups = keys.shape[0]
    if n_groups * MIN_CELLS_PER_GROUP > n:
        return None
    first = np.empty(n_groups, dtype=np.intp)
    first[index[::-1]] = np.arange(n)[::-1]
    xc_g, zc_g = xc[first], zc[first]
    scale_index = problem.scale_groups.index[first]
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(n_groups + 1))
    parts = [offset[order[bounds[g] : bounds[g + 1]]] for g in range(n_groups)]
    n_pieces = max(pieces_needed(part) for part in parts)
    sums = StackedSums([SizeFactorSums(part, n_pieces) for part in parts])
    rows = Rows(
        xc=xc_g,
        offset=np.zeros(n_groups),
        weight=None,
        scale_groups=GroupSums(scale_index, problem.scale_groups.n_groups),
        pp_loc=PairProducts(xc_g, xc_g, symmetric=True),
        pp_cross=PairProducts(xc_g, zc_g),
    )
    return ZeroSumPlan(rows, index, sums, scale_index)


class ZeroSumBlock:
    """NB elementary terms of a feature block summed per design group.

    Parameters
    ----------
    plan : ZeroSumPlan
        The problem's plan.
    offset : ndarray
        ``(n_obs,)`` natural-log size factors (the problem's offsets).
    y : ndarray
        ``(n_obs, F)`` counts of the block; only its non-zero entries are kept.
    nonzeros : NonZeros, optional
        The non-zero entries of ``y`` when already listed (saves a pass over ``y``).
    """

    def __init__(
        self, plan: ZeroSumPlan, offset: Array, y: Array, nonzeros: NonZeros | None = None
    ) -> None:
        self.plan = plan
        self.n_feat = int(y.shape[1])
        if nonzeros is None:
            nonzeros = NonZeros.of(y)
        obs, feat = nonzeros.obs, nonzeros.feat
        self.values = nonzeros.values
        self.log_s = offset[obs]
        self.seg = plan.group_of_obs[obs] * self.n_feat + feat
        self.n_groups = plan.rows.xc.shape[0]

    @property
    def rows(self) -> Rows:
        """One row per design group."""
        return self.plan.rows

    def derivatives(self, eta_loc: Array, eta_scale: Array, order: int) -> Derivatives:
        """Per-group sums of the elementary NB terms, as :meth:`NegativeBinomial.derivatives`.

        Parameters
        ----------
        eta_loc : ndarray
            ``(n_groups, F)`` location predictors of the groups (without offsets).
        eta_scale : ndarray
            ``log r`` broadcastable to ``(n_groups, F)``.
        order : int
            0 for the log-likelihood only, 2 for derivatives too.

        Returns
        -------
        Derivatives
            ``(n_groups, F)`` sums over each group's observations of the terms that
            :meth:`NegativeBinomial.derivatives` returns per observation.
        """
        shape = (self.n_groups, self.n_feat)
        eta_scale = np.broadcast_to(eta_scale, shape)
        r = np.exp(eta_scale)
        log_t = eta_loc - eta_scale
        a, b, c, d, e = self.plan.sums(log_t)
        # Non-zero entries: their full term minus the zero term already counted above.
        log_q = self.log_s + log_t.ravel()[self.seg]
        y = self.values

        def total(v: Array) -> Array:
            sums = np.bincount(self.seg, v, minlength=shape[0] * shape[1])
            return sums.reshape(shape).astype(np.float64, copy=False)

        ll = total(-y * np.logaddexp(0.0, -log_q)) - r * a
        if order == 0:
            return Derivatives(ll, ll, None, ll, None, None)
        q = np.exp(log_q)
        inv = 1.0 / (1.0 + q)
        y_inv = total(y * inv)
        y_q_inv2 = total(y * q * inv * inv)
        d_loc = y_inv - r * b
        d2_loc = -y_q_inv2 - r * c
        d2_cross = y_q_inv2 - r * e
        d_scale = r * d - y_inv
        d2_scale = r * (d + e) - y_q_inv2
        return Derivatives(ll, d_loc, d_scale, d2_loc, d2_cross, d2_scale)


def for_block(problem: Problem, y: Array, nonzeros: NonZeros | None = None) -> ZeroSumBlock | None:
    """Return the zero-sum evaluator of a block, or ``None`` where the path does not apply.

    Parameters
    ----------
    problem : Problem
        Designs, family and offsets of the fit.
    y : ndarray
        ``(n_obs, F)`` counts of the block.
    nonzeros : NonZeros, optional
        Its non-zero entries when already listed.

    Returns
    -------
    ZeroSumBlock or None
        The evaluator (see :func:`plan` for when it applies), ``None`` also for a block with
        fewer than :data:`MIN_ZEROS_PER_GROUP` zero counts per design group and feature on
        average (e.g. bulk counts), where the direct per-observation sums are cheaper.
    """
    if y.shape[0] != problem.offset.size:
        return None
    p = plan(problem)
    if p is None:
        return None
    nnz = nonzeros.values.size if nonzeros is not None else int(np.count_nonzero(y))
    if y.size - nnz < MIN_ZEROS_PER_GROUP * p.rows.xc.shape[0] * y.shape[1]:
        return None
    return ZeroSumBlock(p, problem.offset, y, nonzeros)
