"""Per-feature log-likelihood, gradient and observed Hessian over the free parameters.

The parameter vector of a feature is ``[a_free, b_free]``: location coefficients first,
then scale coefficients, both in the constrained (free) parametrisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.design import Design
from batchglm.families import Derivatives, Family
from batchglm.families.scratch import Scratch
from batchglm.nonzeros import NonZeros
from batchglm.solvers import covariate_sums, zero_sums
from batchglm.solvers.count_table import CountTable
from batchglm.solvers.linalg import GroupSums, PairProducts, column_units
from batchglm.solvers.rows import Rows, unique_rows

Array = NDArray[np.float64]

#: Scale designs with more distinct rows than this share of observations are treated
#: observation by observation (continuous covariates).
_GROUPED_SHARE = 0.5
#: Designs whose observations fall into at most this share of distinct cells (equal design
#: rows and offset) are summed cell by cell.
_CELL_SHARE = 0.25


def _cells(
    xc: Array,
    zc: Array,
    offset: Array,
    scale_index: NDArray[np.intp],
    n_scale: int,
    has_scale: bool,
    obs_weight: Array | None = None,
) -> Rows | None:
    """Group observations that share every predictor (design rows and offset).

    For a family whose per-observation terms are affine in ``y`` (NB without its count
    terms), the sum over a cell equals the cell size times the terms at the cell's mean
    ``y``. Categorical designs without varying size factors then cost a handful of rows
    per feature instead of one per observation; the count terms still see every count.
    With observation weights a cell's weight is the sum of its observations' weights and
    its ``y`` their weighted mean, which keeps the sum exact.
    """
    n = offset.size
    rows, index = unique_rows(np.column_stack([xc, zc, offset]))
    if rows.shape[0] > _CELL_SHARE * n:
        return None
    first = np.empty(rows.shape[0], dtype=np.intp)
    first[index[::-1]] = np.arange(n)[::-1]
    xc_c, zc_c = xc[first], zc[first]
    weight = np.bincount(index, obs_weight, minlength=rows.shape[0]).astype(np.float64)[:, None]
    return Rows(
        xc=xc_c,
        offset=offset[first],
        weight=weight,
        scale_groups=GroupSums(scale_index[first], n_scale),
        pp_loc=PairProducts(xc_c, xc_c, symmetric=True),
        pp_cross=PairProducts(xc_c, zc_c) if has_scale else None,
        cell_of_obs=GroupSums(index, rows.shape[0]),
    )


@dataclass(frozen=True)
class SizeFactorMoments:
    """Size factors of a problem and their sums per design group.

    Attributes
    ----------
    size_factors : ndarray
        ``(n_obs,)`` ``exp(offset)``: size factors times any shared offset's exponential.
    loc_sizes, scale_sizes : ndarray
        ``(n_loc_groups,)`` and ``(n_scale_groups,)`` observations per distinct location /
        scale design row.
    sum_sf, sum_sf2 : ndarray
        ``(n_scale_groups, n_loc_groups)`` sums of ``s`` and ``s^2`` over the observations
        of each (scale row, location row) pair.
    """

    size_factors: Array
    loc_sizes: Array
    scale_sizes: Array
    sum_sf: Array
    sum_sf2: Array


@dataclass
class Problem:
    """Everything about a fit that does not depend on the data values.

    Parameters
    ----------
    family : Family
        Noise model.
    loc, scale : Design
        Location and scale designs with constraints.
    offset : ndarray
        Location offset per observation ``(n_obs,)``: ``log(size_factors)`` plus a
        per-observation ``offset`` given to :func:`batchglm.fit`.
    weights : ndarray, optional
        Observation weights shared by all features ``(n_obs,)``, non-negative; each
        observation's log-likelihood term is multiplied by its weight (an integer weight
        ``k`` equals ``k`` copies of the observation). Weights that differ between features
        are given per block to :class:`Objective` instead.

    Attributes
    ----------
    units : ndarray
        ``(k_loc + k_scale,)`` natural unit of each free parameter, the largest absolute
        value of its column in the constrained design
        (:func:`~batchglm.solvers.linalg.column_units`). The solver measures steps in
        parameters times these units, i.e. in changes of the linear predictors, so it does
        not depend on the units of the covariates.
    """

    family: Family
    loc: Design
    scale: Design
    offset: Array
    weights: Array | None = None
    scale_rows: Array = field(init=False)
    scale_groups: GroupSums = field(init=False)
    loc_rows: Array = field(init=False)
    loc_groups: GroupSums = field(init=False)
    rows: Rows = field(init=False)
    cells: Rows | None = field(init=False)
    units: Array = field(init=False)

    def __post_init__(self) -> None:
        n = self.offset.size
        xc = self.loc.reduced
        zc = self.scale.reduced
        rows, index = unique_rows(zc)
        if rows.shape[0] > _GROUPED_SHARE * n:
            rows, index = zc, np.arange(n, dtype=np.intp)
        self.scale_rows = rows
        self.scale_groups = GroupSums(index, rows.shape[0])
        lrows, lindex = unique_rows(xc)
        self.loc_rows = lrows
        self.loc_groups = GroupSums(lindex, lrows.shape[0])
        self.k_loc = xc.shape[1]
        self.k_scale = zc.shape[1] if self.family.has_scale else 0
        has_scale = self.family.has_scale
        self.rows = Rows(
            xc=xc,
            offset=self.offset,
            weight=None if self.weights is None else self.weights[:, None],
            scale_groups=self.scale_groups,
            pp_loc=PairProducts(xc, xc, symmetric=True),
            pp_cross=PairProducts(xc, zc) if has_scale else None,
        )
        self.cells = None
        # Cells need equal offsets: with per-cell size factors (more distinct offsets than
        # cells allowed) the grouping over all design columns is skipped.
        few_offsets = pd.unique(self.offset).size <= _CELL_SHARE * n
        if self.family.affine_in_y and not self.scale_groups.identity and few_offsets:
            self.cells = _cells(xc, zc, self.offset, index, rows.shape[0], has_scale, self.weights)
        if has_scale:
            self.pp_scale = PairProducts(rows, rows, symmetric=True)
        parts = [column_units(xc)] + ([column_units(rows)] if has_scale else [])
        self.units = np.concatenate(parts)

    @property
    def n_params(self) -> int:
        """Number of free parameters per feature."""
        return self.k_loc + self.k_scale

    @cached_property
    def size_factor_moments(self) -> SizeFactorMoments:
        """Size factors and their sums per design group, computed once per fit.

        Starting values computed from the non-zero counts alone (:mod:`batchglm.init`) need
        these ``O(n_obs)`` sums; at a million cells a feature block is a single feature, so
        computing them per block would cost a pass over the observations per feature.
        """
        sf = np.exp(self.offset)
        n_loc, n_scale = self.loc_groups.n_groups, self.scale_groups.n_groups
        pair = self.scale_groups.index * n_loc + self.loc_groups.index
        size = n_scale * n_loc
        return SizeFactorMoments(
            size_factors=sf,
            loc_sizes=np.bincount(self.loc_groups.index, minlength=n_loc).astype(np.float64),
            scale_sizes=np.bincount(self.scale_groups.index, minlength=n_scale).astype(np.float64),
            sum_sf=np.bincount(pair, sf, minlength=size).astype(np.float64).reshape(n_scale, n_loc),
            sum_sf2=np.bincount(pair, sf * sf, minlength=size)
            .astype(np.float64)
            .reshape(n_scale, n_loc),
        )

    @cached_property
    def covariate_plan(self) -> covariate_sums.CovariatePlan | None:
        """Groups plus continuous covariates (:mod:`batchglm.solvers.covariate_sums`), once.

        ``None`` where that path does not apply.
        """
        return covariate_sums.build(self)

    def eta_loc(self, a: Array, out: Array | None = None) -> Array:
        """Location predictor ``(n, F)`` for free coefficients ``a`` of shape ``(F, k_loc)``.

        Parameters
        ----------
        a : ndarray
            Free location coefficients.
        out : ndarray, optional
            Where to write the result.

        Returns
        -------
        ndarray
            ``offset + X C a``.
        """
        return self.rows.eta_loc(a, out)

    def eta_scale_groups(self, b: Array) -> Array:
        """Scale predictor per scale group, ``(n_groups, F)``.

        Parameters
        ----------
        b : ndarray
            Free scale coefficients ``(F, k_scale)``.

        Returns
        -------
        ndarray
            ``Z C b`` at each distinct scale-design row.
        """
        return self.scale_rows @ b.T


class Objective:
    """The log-likelihood of a block of features as a function of their parameters.

    Parameters
    ----------
    problem : Problem
        Designs and family.
    y : ndarray
        Observations ``(n_obs, F)``, C-contiguous.
    table : CountTable, optional
        Pre-built count table for ``y``.
    constant : ndarray, optional
        Pre-computed parameter-free part of the log-likelihood ``(F,)``.
    weights : ndarray, optional
        Observation weights of this block ``(n_obs, F)`` (per observation and feature);
        they replace ``problem.weights``. Each observation's terms are multiplied by its
        weight.
    offset : ndarray, optional
        Location offsets of this block ``(n_obs, F)``, added to ``problem.offset``. The
        likelihood is then summed observation by observation (cells of equal predictors
        would differ between features).
    nonzeros : NonZeros, optional
        The non-zero entries of ``y`` when the caller has listed them already (from a
        sparse block); the count table and the zero sums then make no pass over ``y``.
    fixed_scale : bool
        The scale parameters are held at given values (``bg.fit(..., fixed_scale=...)``,
        the location refit at shrunken dispersions); only the log-likelihood and its
        location derivatives are needed. The count terms are then evaluated for the
        log-likelihood alone (``lgamma``, no ``digamma``/``trigamma``) and the scale blocks
        of the gradient and Hessian are returned as zeros, which is what the solver's
        fixed-scale Newton system (``_drop_scale`` in :mod:`batchglm.solvers.newton`) puts
        there anyway. Log-likelihood and location derivatives are the same numbers as with
        ``fixed_scale=False``.

    Notes
    -----
    Weights enter every term of the log-likelihood (per-observation terms, the count terms
    of :class:`~batchglm.solvers.count_table.CountTable` and the constants), hence the
    gradient and the observed information alike: the weighted log-likelihood
    ``sum_i w_i log f(y_i)`` of statsmodels' ``freq_weights`` and edgeR's ``weights``.
    """

    def __init__(
        self,
        problem: Problem,
        y: Array,
        table: CountTable | None = None,
        constant: Array | None = None,
        *,
        weights: Array | None = None,
        offset: Array | None = None,
        nonzeros: NonZeros | None = None,
        fixed_scale: bool = False,
    ) -> None:
        self.problem = problem
        self.fixed_scale = fixed_scale
        groups = problem.scale_groups
        obs_weight = weights
        if obs_weight is None and problem.weights is not None:
            obs_weight = problem.weights[:, None]
        self.offset = offset
        cells = problem.cells if offset is None else None
        self.rows = cells if cells is not None else problem.rows
        if table is None and problem.family.has_count_terms:
            table = CountTable(
                y, groups.index, groups.n_groups, weights=obs_weight, nonzeros=nonzeros
            )
        self.table = table
        self._constant = constant
        self.y = y
        self.weight = obs_weight
        if cells is not None:
            assert cells.cell_of_obs is not None and cells.weight is not None
            # Count terms and constants need the single counts (taken above); everything
            # else only the (weighted) cell means.
            self._constant = self.constant()
            if obs_weight is None:
                self.weight = cells.weight
                y = cells.cell_of_obs(y) / cells.weight
            else:
                # Summed weights per cell (for shared weights already in `cells.weight`)
                # and weighted means; a cell of weight 0 contributes nothing.
                self.weight = cells.weight if weights is None else cells.cell_of_obs(weights)
                total = cells.cell_of_obs(obs_weight * y)
                y = np.divide(total, self.weight, out=np.zeros_like(total), where=self.weight > 0)
        self.y = np.ascontiguousarray(y)
        self.scratch = Scratch()
        # Categorical designs with per-cell size factors: zero counts summed per design group
        # without a pass over them (batchglm.solvers.zero_sums; not with observation weights
        # or per-feature offsets).
        plain = self.rows is problem.rows and self.weight is None and offset is None
        self.zero_sums = zero_sums.for_block(problem, self.y, nonzeros) if plain else None
        if self.zero_sums is not None:
            self.rows = self.zero_sums.rows
        # Groups plus continuous covariates (batchglm.solvers.covariate_sums): the same
        # sums without the per-observation pair matrix.
        self.covariates = None
        if plain and self.zero_sums is None:
            self.covariates = problem.covariate_plan
        self.y_sorted = None if self.covariates is None else self.covariates.sort(self.y)

    @property
    def n_features(self) -> int:
        """Number of features in the block."""
        return int(self.y.shape[1])

    def subset(self, keep: NDArray[np.bool_]) -> Objective:
        """Restrict to the features where ``keep`` is true.

        Parameters
        ----------
        keep : ndarray of bool
            Mask over features.

        Returns
        -------
        Objective
            Objective over the kept features.
        """
        out = object.__new__(Objective)
        out.problem, out.rows = self.problem, self.rows
        out.fixed_scale = self.fixed_scale
        out.table = self.table.subset(keep) if self.table is not None else None
        out._constant = self._constant[keep] if self._constant is not None else None
        out.y = np.ascontiguousarray(self.y[:, keep])
        out.weight = self.weight
        if self.weight is not None and self.weight.shape[1] > 1:
            out.weight = np.ascontiguousarray(self.weight[:, keep])
        out.offset = None if self.offset is None else np.ascontiguousarray(self.offset[:, keep])
        out.zero_sums = None
        if self.zero_sums is not None:
            out.zero_sums = zero_sums.ZeroSumBlock(self.zero_sums.plan, self.problem.offset, out.y)
        out.covariates = self.covariates
        out.y_sorted = None
        if self.y_sorted is not None:
            out.y_sorted = np.ascontiguousarray(self.y_sorted[:, keep])
        out.scratch = Scratch()
        return out

    def constant(self) -> Array:
        """Parameter-free part of the log-likelihood per feature, ``(F,)``."""
        if self._constant is None:
            fam = self.problem.family
            if self.table is not None:
                self._constant = self.table.feature_sums(fam.constant(self.table.values))
            elif self.weight is not None:
                self._constant = (fam.constant(self.y) * self.weight).sum(axis=0)
            else:
                self._constant = fam.constant(self.y).sum(axis=0)
        return self._constant

    def evaluate(self, theta: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        """Log-likelihood, gradient and observed Hessian for every feature.

        Parameters
        ----------
        theta : ndarray
            Free parameters ``(F, k_loc + k_scale)``.
        order : int
            0 for the log-likelihood only, 2 for gradient and Hessian too.

        Returns
        -------
        ll : ndarray
            ``(F,)`` full log-likelihood including constants.
        grad : ndarray or None
            ``(F, k)`` gradient.
        hess : ndarray or None
            ``(F, k, k)`` observed Hessian of the log-likelihood.
        """
        ev = self.evaluate_terms(theta, order)
        return ev.ll, ev.grad, ev.hess

    def evaluate_terms(self, theta: Array, order: int) -> Evaluation:
        """Like :meth:`evaluate`, plus the magnitude of the summed terms.

        Parameters
        ----------
        theta : ndarray
            Free parameters ``(F, k_loc + k_scale)``.
        order : int
            0 for the log-likelihood only, 2 for gradient and Hessian too.

        Returns
        -------
        Evaluation
            Log-likelihood, derivatives and magnitude per feature.
        """
        if self.covariates is not None:
            return self._evaluate_covariates(self.covariates, theta, order)
        p = self.problem
        fam = p.family
        rows = self.rows
        a, b = theta[:, : p.k_loc], theta[:, p.k_loc :]
        n_rows, n_feat = rows.xc.shape[0], theta.shape[0]
        eta_loc = rows.eta_loc(a, out=self.scratch("eta_loc", (n_rows, n_feat)))
        if self.offset is not None:
            eta_loc += self.offset
        if fam.has_scale:
            eta_s_groups = p.eta_scale_groups(b)
            eta_scale = rows.scale_groups.expand(eta_s_groups)
        else:
            eta_s_groups = np.zeros((1, theta.shape[0]))
            eta_scale = eta_s_groups
        if self.zero_sums is not None:
            der = self.zero_sums.derivatives(eta_loc, eta_scale, order)
        else:
            der = fam.derivatives(self.y, eta_loc, eta_scale, order, self.scratch)
        if self.weight is not None:
            der = _weighted(der, self.weight)
        counts = self._count_sums(eta_s_groups, order)
        elementary = der.ll.sum(axis=0)
        constant = self.constant()
        ll = elementary + constant
        magnitude = np.abs(elementary) + np.abs(constant)
        if counts is not None:
            count_ll = counts[0].sum(axis=0)
            ll = ll + count_ll
            magnitude += np.abs(count_ll)
        if order == 0:
            return Evaluation(ll, None, None, magnitude)
        k = p.n_params
        grad = np.empty((theta.shape[0], k))
        hess = np.empty((theta.shape[0], k, k))
        kl = p.k_loc
        grad[:, :kl] = (rows.xc.T @ der.d_loc).T
        hess[:, :kl, :kl] = rows.pp_loc(der.d2_loc)
        if fam.has_scale and self.fixed_scale:
            _zero_scale_blocks(grad, hess, kl)
        elif fam.has_scale:
            assert der.d_scale is not None and der.d2_scale is not None
            assert der.d2_cross is not None and rows.pp_cross is not None
            d_s = rows.scale_groups(der.d_scale)
            d2_s = rows.scale_groups(der.d2_scale)
            if counts is not None:
                assert counts[1] is not None and counts[2] is not None
                d_s = d_s + counts[1]
                d2_s = d2_s + counts[2]
            grad[:, kl:] = (p.scale_rows.T @ d_s).T
            cross = rows.pp_cross(der.d2_cross)
            hess[:, :kl, kl:] = cross
            hess[:, kl:, :kl] = np.swapaxes(cross, 1, 2)
            hess[:, kl:, kl:] = p.pp_scale(d2_s)
        return Evaluation(ll, grad, hess, magnitude)

    def _count_sums(
        self, eta_s_groups: Array, order: int
    ) -> tuple[Array, Array | None, Array | None] | None:
        """Count-table sums per ``(scale group, feature)``; values only at a fixed scale."""
        if self.table is None:
            return None
        count_order = 0 if self.fixed_scale else order
        return self.table.group_sums(self.problem.family, eta_s_groups, count_order)

    def _evaluate_covariates(
        self, plan: covariate_sums.CovariatePlan, theta: Array, order: int
    ) -> Evaluation:
        """:meth:`evaluate_terms` from per-group sums (:mod:`batchglm.solvers.covariate_sums`)."""
        p = self.problem
        kl = p.k_loc
        eta_s_groups = p.eta_scale_groups(theta[:, kl:])
        assert self.y_sorted is not None
        acc = covariate_sums.group_sums(
            plan, self.y_sorted, theta[:, :kl], eta_s_groups[plan.scale_of_group], order
        )
        parts = covariate_sums.assemble(plan, acc, p.scale_rows, order)
        counts = self._count_sums(eta_s_groups, order)
        constant = self.constant()
        ll = parts.ll + constant
        magnitude = np.abs(parts.ll) + np.abs(constant)
        if counts is not None:
            count_ll = counts[0].sum(axis=0)
            ll = ll + count_ll
            magnitude += np.abs(count_ll)
        if order == 0:
            return Evaluation(ll, None, None, magnitude)
        assert parts.grad_loc is not None and parts.hess_loc is not None
        if self.fixed_scale:
            k = p.n_params
            grad = np.empty((theta.shape[0], k))
            hess = np.empty((theta.shape[0], k, k))
            grad[:, :kl] = parts.grad_loc
            hess[:, :kl, :kl] = parts.hess_loc
            _zero_scale_blocks(grad, hess, kl)
            return Evaluation(ll, grad, hess, magnitude)
        assert parts.cross is not None and parts.d_scale is not None
        assert parts.d2_scale is not None
        d_s, d2_s = parts.d_scale, parts.d2_scale
        if counts is not None:
            assert counts[1] is not None and counts[2] is not None
            d_s = d_s + counts[1]
            d2_s = d2_s + counts[2]
        k = p.n_params
        grad = np.empty((theta.shape[0], k))
        hess = np.empty((theta.shape[0], k, k))
        grad[:, :kl] = parts.grad_loc
        hess[:, :kl, :kl] = parts.hess_loc
        grad[:, kl:] = (p.scale_rows.T @ d_s).T
        hess[:, :kl, kl:] = parts.cross
        hess[:, kl:, :kl] = np.swapaxes(parts.cross, 1, 2)
        hess[:, kl:, kl:] = p.pp_scale(d2_s)
        return Evaluation(ll, grad, hess, magnitude)


@dataclass(frozen=True)
class Evaluation:
    """The log-likelihood of a block at one parameter point.

    Attributes
    ----------
    ll : ndarray
        ``(F,)`` full log-likelihood including constants.
    grad : ndarray or None
        ``(F, k)`` gradient.
    hess : ndarray or None
        ``(F, k, k)`` observed Hessian.
    magnitude : ndarray
        ``(F,)`` sum of the absolute values of the partial sums that make up ``ll``
        (per-observation terms, constants, count terms). Each partial sum adds terms of one
        sign, so this is the size of the numbers whose rounding ``ll`` inherits: its
        rounding noise is a few machine epsilons times ``magnitude``. For counts near 1e9
        it is about 1e11 while ``ll`` itself may be a few hundred.
    """

    ll: Array
    grad: Array | None
    hess: Array | None
    magnitude: Array


def _zero_scale_blocks(grad: Array, hess: Array, kl: int) -> None:
    """Set the scale parts of ``grad`` ``(F, k)`` and ``hess`` ``(F, k, k)`` to zero in place."""
    grad[:, kl:] = 0.0
    hess[:, kl:, :] = 0.0
    hess[:, :kl, kl:] = 0.0


def _weighted(der: Derivatives, weight: Array) -> Derivatives:
    """Weighted terms: observations times their weights, or cells times their total weight.

    ``weight`` is ``(m, 1)`` or ``(m, F)``.
    """

    def times(v: Array | None) -> Array | None:
        return None if v is None else v * weight

    ll = times(der.ll)
    d_loc = times(der.d_loc)
    d2_loc = times(der.d2_loc)
    assert ll is not None and d_loc is not None and d2_loc is not None
    return Derivatives(
        ll, d_loc, times(der.d_scale), d2_loc, times(der.d2_cross), times(der.d2_scale)
    )
