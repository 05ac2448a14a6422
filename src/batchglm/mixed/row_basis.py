"""Design rows of each group in the coordinates of the columns that vary within groups.

A column that is constant within every group (the intercept, a condition, any donor-level
covariate) is a multiple of the constant coordinate there, so a design row ``a_j`` of group
``g`` is ``A_g t_j`` exactly, with ``t_j = (1, x_j[varying])``, and per-group moments
``sum w a a^T = A_g (sum w t t^T) A_g^T``: :mod:`batchglm.mixed.group_pass` sums the
products of the (fewer) coordinates ``t_j`` and maps them back with :func:`embed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


@dataclass(frozen=True)
class RowBasis:
    """Design rows of each group in the coordinates of the within-group varying columns.

    Attributes
    ----------
    coords : ndarray
        ``(n_obs, r)`` coordinates ``t_j = (1, a_j[varying])``.
    embed : ndarray
        ``(n_groups, p, r)`` maps ``A_g`` with ``a_j = A_g t_j`` for ``j`` in group ``g``.
    """

    coords: Array
    embed: Array

    @classmethod
    def build(cls, rows: Array, index: NDArray[np.intp], n_groups: int) -> RowBasis:
        """Split the columns of ``[1, rows]`` into within-group constant and varying ones.

        Parameters
        ----------
        rows : ndarray
            ``(n_obs, k)`` design rows (the constant column ``1`` is prepended here).
        index : ndarray of int
            ``(n_obs,)`` group of each observation.
        n_groups : int
            Number of groups.

        Returns
        -------
        RowBasis
            Exact: a column counts as constant only if its values are equal within every
            group, so ``A_g t_j`` reproduces ``(1, rows_j)`` bit for bit.
        """
        n = rows.shape[0]
        full = np.column_stack([np.ones(n), rows])
        p = full.shape[1]
        # Each group's first row; a column is constant if every row equals it there.
        ref = np.zeros((n_groups, p))
        present, first = np.unique(index, return_index=True)
        ref[present] = full[first]
        varying = np.flatnonzero((full != ref[index]).any(axis=0))
        coords = np.column_stack([np.ones(n), full[:, varying]])
        embed = np.zeros((n_groups, p, 1 + varying.size))
        # The constant coordinate carries the group's value of every constant column.
        const = np.setdiff1d(np.arange(p), varying)
        embed[:, const, 0] = ref[:, const]
        embed[:, varying, 1 + np.arange(varying.size)] = 1.0
        return cls(np.ascontiguousarray(coords), embed)

    @property
    def rank(self) -> int:
        """Coordinates per row."""
        return int(self.coords.shape[1])


def upper_triangle(r: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Row and column indices of the upper triangle of an ``r x r`` matrix (C-contiguous).

    Parameters
    ----------
    r : int
        Size of the matrix.

    Returns
    -------
    rows, cols : ndarray of int
        ``np.triu_indices(r)``.
    """
    rows, cols = np.triu_indices(r)
    return np.ascontiguousarray(rows), np.ascontiguousarray(cols)


def symmetric(tri: Array, idx: tuple[NDArray[np.intp], NDArray[np.intp]], r: int) -> Array:
    """Symmetric matrices from their upper triangles.

    Parameters
    ----------
    tri : ndarray
        ``(..., m)`` upper-triangle entries in the order of ``idx``.
    idx : tuple of ndarray of int
        From :func:`upper_triangle`.
    r : int
        Size of the matrices.

    Returns
    -------
    ndarray
        ``(..., r, r)``.
    """
    out = np.empty(tri.shape[:-1] + (r, r))
    out[..., idx[0], idx[1]] = tri
    out[..., idx[1], idx[0]] = tri
    return out


def embed(m: Array, left: Array, right: Array) -> Array:
    """Per-group moments back in full design coordinates, ``A_g M_g B_g^T``.

    Parameters
    ----------
    m : ndarray
        ``(G, F, r, s)`` moments in the coordinates of two :class:`RowBasis`.
    left, right : ndarray
        ``(G, p, r)`` and ``(G, q, s)``: the bases' :attr:`RowBasis.embed`.

    Returns
    -------
    ndarray
        ``(G, F, p, q)``.
    """
    out: Array = left[:, None] @ m @ np.swapaxes(right, 1, 2)[:, None]
    return out
