"""The non-zero entries of a feature block, taken once and shared by every pass that needs them.

Single-cell counts are about 90 % zeros. The all-zero check, the count table
(:mod:`batchglm.solvers.count_table`), the zero sums (:mod:`batchglm.solvers.zero_sums`) and
the starting values of grouped designs (:mod:`batchglm.init`) only need the non-zero
entries: listing them once per block (from the CSC block directly when the data are sparse)
replaces a full ``np.nonzero`` pass over the densified block for each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

Array = NDArray[np.float64]


@dataclass(frozen=True)
class NonZeros:
    """Coordinates and values of the non-zero entries of an ``(n_obs, F)`` block.

    Attributes
    ----------
    obs : ndarray of int
        ``(nnz,)`` observation (row) of each entry.
    feat : ndarray of int
        ``(nnz,)`` feature (column within the block) of each entry.
    values : ndarray
        ``(nnz,)`` float64 values, none equal to 0.
    n_obs, n_feat : int
        Shape of the block.
    """

    obs: NDArray[np.intp]
    feat: NDArray[np.intp]
    values: Array
    n_obs: int
    n_feat: int

    @classmethod
    def of(cls, block: Any) -> NonZeros:
        """List the non-zero entries of a dense or sparse block.

        Parameters
        ----------
        block : ndarray or scipy.sparse matrix/array
            ``(n_obs, F)`` values. A sparse block is read column by column (CSC order) and
            its explicitly stored zeros are dropped and duplicate entries summed; a dense
            one in row-major order
            (:func:`numpy.nonzero`).

        Returns
        -------
        NonZeros
            The entries.
        """
        n_obs, n_feat = block.shape
        if sparse.issparse(block):
            csc = sparse.csc_array(block)
            if not csc.has_canonical_format:  # duplicates add up, as in `toarray`
                csc = csc.copy()
                csc.sum_duplicates()
            lengths = np.diff(csc.indptr)
            feat = np.repeat(np.arange(n_feat, dtype=np.intp), lengths)
            obs = csc.indices.astype(np.intp, copy=False)
            values = np.asarray(csc.data, dtype=np.float64)
            keep = values != 0
            if not keep.all():
                obs, feat, values = obs[keep], feat[keep], values[keep]
            return cls(obs, feat, values, n_obs, n_feat)
        obs, feat = np.nonzero(block)
        return cls(obs, feat, np.asarray(block[obs, feat], dtype=np.float64), n_obs, n_feat)

    def any_per_feature(self) -> NDArray[np.bool_]:
        """Return ``(F,)``: whether each feature has a non-zero entry."""
        return np.bincount(self.feat, minlength=self.n_feat) > 0

    def subset(self, keep: NDArray[np.bool_]) -> NonZeros:
        """Return the entries of the features where ``keep`` is true, renumbered.

        Parameters
        ----------
        keep : ndarray of bool
            ``(F,)`` mask over the block's features.

        Returns
        -------
        NonZeros
            Entries of the kept features (columns numbered within the kept ones).
        """
        mask = keep[self.feat]
        position = np.cumsum(keep) - 1
        return NonZeros(
            self.obs[mask],
            position[self.feat[mask]].astype(np.intp),
            self.values[mask],
            self.n_obs,
            int(keep.sum()),
        )

    def group_sums(
        self, group: NDArray[np.intp], n_groups: int, values: Array | None = None
    ) -> Array:
        """Sum per-entry values by ``(group of the observation, feature)``.

        Parameters
        ----------
        group : ndarray of int
            ``(n_obs,)`` group of every observation, values in ``[0, n_groups)``.
        n_groups : int
            Number of groups.
        values : ndarray, optional
            ``(nnz,)`` values to sum; the entries' own values when omitted.

        Returns
        -------
        ndarray
            ``(n_groups, F)`` sums (zero entries contribute nothing).
        """
        seg = group[self.obs] * self.n_feat + self.feat
        v = self.values if values is None else values
        sums = np.bincount(seg, v, minlength=n_groups * self.n_feat)
        return sums.reshape(n_groups, self.n_feat).astype(np.float64, copy=False)
