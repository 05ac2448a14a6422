"""Count terms evaluated once per distinct non-zero value.

Terms such as ``gammaln(y + r) - gammaln(r)`` depend on an observation only through its
count and its scale predictor, and vanish at ``y == 0``. Within a scale group (observations
sharing a scale-design row) the predictor is the same, so each distinct count needs one
evaluation, weighted by its multiplicity. glmGamPoi uses the same idea for its
overdispersion fit; here it also skips zeros, which dominate single-cell data. When every
group and feature shares one scale predictor (a grid search over a common ``log r``), the
terms depend on the count alone: they are evaluated once per distinct count of the whole
table and gathered, which gives the same numbers as the entry-wise evaluation.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.families import CountTerms, Family
from batchglm.nonzeros import NonZeros

Array = NDArray[np.float64]


class CountTable:
    """Distinct positive values per ``(scale group, feature)`` with multiplicities.

    Parameters
    ----------
    y : ndarray
        Observations ``(n_obs, F)``.
    group : ndarray of int
        Scale group of each observation.
    n_groups : int
        Number of scale groups.
    weights : ndarray, optional
        Observation weights ``(n_obs, 1)`` or ``(n_obs, F)``. An entry's multiplicity is
        then the sum of the weights of the observations with that value (an integer weight
        ``k`` counts as ``k`` observations); entries of weight 0 are left out.
    nonzeros : NonZeros, optional
        The non-zero entries of ``y`` when already listed (used without weights; saves a
        pass over ``y``).
    """

    def __init__(
        self,
        y: Array,
        group: NDArray[np.intp],
        n_groups: int,
        weights: Array | None = None,
        nonzeros: NonZeros | None = None,
    ) -> None:
        n_feat = y.shape[1]
        if weights is None and nonzeros is not None:
            rows, cols, vals = nonzeros.obs, nonzeros.feat, nonzeros.values
            wv = None
        else:
            if weights is None:
                rows, cols = np.nonzero(y)
                wv = None
            else:
                rows, cols = np.nonzero((y != 0) & (weights > 0))
                wv = weights[rows, cols if weights.shape[1] > 1 else 0]
            vals = y[rows, cols]
        seg = group[rows] * n_feat + cols
        n_seg = n_groups * n_feat
        # Deduplicate small counts with one bincount as long as the dense table stays well
        # below the number of raw entries; larger counts are kept one entry each.
        cap = int(min(vals.max(initial=0.0) + 1, vals.size // max(2 * n_seg, 1)))
        if cap > 1:
            small = vals < cap
            key = seg[small] * cap + vals[small].astype(np.int64)
            table = np.bincount(key, None if wv is None else wv[small], minlength=n_seg * cap)
            hit = np.flatnonzero(table)
            large = np.ones((~small).sum()) if wv is None else wv[~small]
            self.values = np.concatenate([(hit % cap).astype(np.float64), vals[~small]])
            self.counts = np.concatenate([table[hit].astype(np.float64), large])
            self.seg = np.concatenate([hit // cap, seg[~small]])
        else:
            counts = np.ones(vals.size) if wv is None else wv
            self.values, self.counts, self.seg = vals, counts, seg
        self.n_groups, self.n_feat = n_groups, n_feat
        self._distinct: tuple[Array, NDArray[np.intp]] | None = None
        #: The last :meth:`group_sums` call: family, order, predictors and results.
        self._memo: tuple[Family, int, Array, tuple[Array, Array | None, Array | None]] | None = (
            None
        )

    def distinct_values(self) -> tuple[Array, NDArray[np.intp]]:
        """Distinct values over all entries and each entry's index into them (cached).

        Returns
        -------
        tuple of ndarray
            ``(values, index)`` with ``self.values == values[index]``.
        """
        if self._distinct is None:
            uniq, index = np.unique(self.values, return_inverse=True)
            self._distinct = (uniq, index.reshape(-1))
        return self._distinct

    def subset(self, keep: NDArray[np.bool_]) -> CountTable:
        """Return the table restricted to the features where ``keep`` is true.

        Parameters
        ----------
        keep : ndarray of bool
            Mask over the table's features.

        Returns
        -------
        CountTable
            A table over ``keep.sum()`` features.
        """
        feat = self.seg % self.n_feat
        sel = keep[feat]
        new_index = np.cumsum(keep) - 1
        out = object.__new__(CountTable)
        out.n_groups, out.n_feat = self.n_groups, int(keep.sum())
        out.values, out.counts = self.values[sel], self.counts[sel]
        out.seg = (self.seg[sel] // self.n_feat) * out.n_feat + new_index[feat[sel]]
        out._distinct = None
        out._memo = None
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[2].shape[1] == self.n_feat:
            # The last sums, restricted: per feature they are the same sums (the kept
            # entries in the same order), so the solver's compacted working set of a fit at
            # fixed dispersions does not evaluate its count terms again.
            family, order, eta, (ll, d1, d2) = memo
            out._memo = (
                family,
                order,
                eta[:, keep],
                (ll[:, keep], _take(d1, keep), _take(d2, keep)),
            )
        return out

    def group_sums(
        self, family: Family, eta_scale: Array, order: int
    ) -> tuple[Array, Array | None, Array | None] | None:
        """Sum the family's count terms per ``(group, feature)``.

        Parameters
        ----------
        family : Family
            The noise model.
        eta_scale : ndarray
            Scale predictors per group, ``(n_groups, F)``.
        order : int
            0 for the log-likelihood only, 1 for the first derivative too, 2 for the second
            too (the family evaluates only the special functions the order needs).

        Returns
        -------
        tuple of ndarray or None
            ``(ll, d_scale, d2_scale)`` per group and feature, each ``(n_groups, F)``
            (derivatives above ``order`` are ``None``); ``None`` when the family has no
            count terms.
        """
        memo = getattr(self, "_memo", None)
        if (
            memo is not None
            and type(memo[0]) is type(family)
            and memo[1] >= order
            and memo[2].shape == eta_scale.shape
            and np.array_equal(memo[2], eta_scale)
        ):
            # The same predictors again (a fit with the scale held fixed evaluates the
            # count terms, constant in the location, at every iteration): copies of the
            # last sums.
            ll0, d10, d20 = memo[3]
            return (
                ll0.copy(),
                None if order < 1 or d10 is None else d10.copy(),
                None if order < 2 or d20 is None else d20.copy(),
            )
        flat = eta_scale.ravel()
        if flat.size and self.values.size and np.all(flat == flat[0]):
            # One predictor for every entry: evaluate once per distinct count and gather.
            uniq, index = self.distinct_values()
            terms = family.count_terms(uniq, np.full(uniq.size, flat[0]), order)
            if terms is None:
                return None
            d1, d2 = terms.d_scale, terms.d2_scale
            terms = CountTerms(
                terms.ll[index],
                None if d1 is None else d1[index],
                None if d2 is None else d2[index],
            )
        else:
            terms = family.count_terms(self.values, flat[self.seg], order)
            if terms is None:
                return None
        shape = (self.n_groups, self.n_feat)

        def total(v: Array | None) -> Array | None:
            if v is None:
                return None
            sums = np.bincount(self.seg, self.counts * v, minlength=shape[0] * shape[1])
            return sums.reshape(shape).astype(np.float64, copy=False)

        ll = total(terms.ll)
        assert ll is not None
        d1, d2 = total(terms.d_scale), total(terms.d2_scale)
        self._memo = (family, order, eta_scale.copy(), (ll.copy(), _copy(d1), _copy(d2)))
        return ll, d1, d2

    def feature_sums(self, values: Array) -> Array:
        """Sum per-entry values (already multiplied by nothing) over groups, per feature.

        Parameters
        ----------
        values : ndarray
            One value per table entry.

        Returns
        -------
        ndarray
            ``(F,)`` sums weighted by multiplicities.
        """
        sums = np.bincount(self.seg % self.n_feat, self.counts * values, minlength=self.n_feat)
        return sums.astype(np.float64, copy=False)


def _copy(v: Array | None) -> Array | None:
    return None if v is None else v.copy()


def _take(v: Array | None, keep: NDArray[np.bool_]) -> Array | None:
    return None if v is None else v[:, keep]


def table_and_constant(
    family: Family,
    y: Array,
    scale_index: NDArray[np.intp],
    n_scale_groups: int,
    table: CountTable | None = None,
    constant: Array | None = None,
) -> tuple[CountTable | None, Array]:
    """Build the count table of a block (count families) and its parameter-free part.

    Parameters
    ----------
    family : Family
        The family of the fit.
    y : ndarray
        Observations ``(n_obs, F)``.
    scale_index : ndarray of int
        ``(n_obs,)`` scale group of each observation.
    n_scale_groups : int
        Number of scale groups.
    table : CountTable, optional
        A table built already (kept as it is).
    constant : ndarray, optional
        The parameter-free part ``(F,)`` computed already (kept as it is).

    Returns
    -------
    table : CountTable or None
        ``None`` for families without count terms.
    constant : ndarray
        ``(F,)`` sum of the family's parameter-free terms, from the table's distinct
        counts where there is one.
    """
    if table is None and family.has_count_terms:
        table = CountTable(y, scale_index, n_scale_groups)
    if constant is None:
        if table is not None:
            constant = table.feature_sums(family.constant(table.values))
        else:
            constant = family.constant(y).sum(axis=0)
    return table, constant
