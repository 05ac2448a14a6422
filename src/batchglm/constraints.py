"""Parameter constraints as a reparametrisation ``theta = C @ theta_free``.

Two encodings are accepted, told apart by shape alone (``p`` = number of design columns):

* **Seed rows**, shape ``(m, p)`` with ``m < p``: one row per zero-sum set, ``-1`` marks the
  parameter that depends on the set and ``+1`` the other members. Row ``k`` states
  ``sum(|row_k| * theta) == 0``. Rows may build on each other (a dependent parameter may be
  a member of another row's set), as in the original batchglm tutorial.
* **A ready matrix** ``C``, shape ``(p, k)`` with ``k <= p`` and full column rank.

A ``(p, p)`` matrix is therefore always read as ``C``; ``p`` seed rows would leave no free
parameter.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


def constraint_matrix(constraints: ArrayLike | None, p: int, which: str) -> Array:
    """Turn user constraints into the ``(p, p_free)`` reparametrisation matrix.

    Parameters
    ----------
    constraints : array_like or None
        Seed rows ``(m, p)`` with ``m < p``, a ready ``C`` of shape ``(p, k)``, or ``None``
        for no constraints.
    p : int
        Number of columns of the design the constraints belong to.
    which : str
        Argument name for messages, e.g. ``"constraints_loc"``.

    Returns
    -------
    ndarray
        ``C`` with ``theta = C @ theta_free``.

    Raises
    ------
    ValueError
        When the matrix is not 2-D, not finite, or its shape fits neither seed
        constraint rows nor a constraint matrix of the design.
    """
    if constraints is None:
        return np.eye(p)
    m = np.asarray(constraints, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"`{which}` must be a 2-D matrix, but it has {m.ndim} dimension(s).")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"`{which}` must be finite, but it has NaN or infinite entries.")
    if m.shape[0] == p:
        return _check_ready(m, which)
    if m.shape[1] == p and m.shape[0] < p:
        return _from_seed_rows(m, which)
    raise ValueError(
        f"`{which}` has shape {m.shape} but its design has {p} columns; it must be either "
        f"seed constraint rows of shape (m, {p}) with m < {p}, or a matrix C of shape "
        f"({p}, k) with k <= {p}."
    )


def _check_ready(c: Array, which: str) -> Array:
    p, k = c.shape
    if k > p:
        raise ValueError(
            f"`{which}` read as C of shape ({p}, {k}) has more free parameters than the "
            f"design has columns; it must have at most {p} columns."
        )
    rank = np.linalg.matrix_rank(c)
    if rank < k:
        raise ValueError(
            f"`{which}` read as C of shape ({p}, {k}) must have full column rank {k}, "
            f"but its rank is {rank}."
        )
    return c.copy()


def _from_seed_rows(rows: Array, which: str) -> Array:
    m, p = rows.shape
    if not np.all(np.isin(rows, (-1.0, 0.0, 1.0))):
        raise ValueError(
            f"`{which}` read as seed constraint rows (shape {rows.shape}) may only hold "
            "-1, 0 and +1."
        )
    n_dep = (rows == -1).sum(axis=1)
    if np.any(n_dep != 1):
        k = int(np.argmax(n_dep != 1))
        raise ValueError(
            f"each row of `{which}` must mark exactly one dependent parameter with -1, but "
            f"row {k} has {int(n_dep[k])}."
        )
    dep = np.argmax(rows == -1, axis=1)
    if len(np.unique(dep)) != m:
        raise ValueError(
            f"each row of `{which}` must have a different dependent (-1) parameter, but "
            f"rows share dependent columns {sorted(int(d) for d in dep)}."
        )
    a = np.abs(rows)
    free = np.setdiff1d(np.arange(p), dep)
    a_dep = a[:, dep]
    if np.linalg.matrix_rank(a_dep) < m:
        raise ValueError(
            f"the rows of `{which}` are not independent: the dependent parameters "
            f"{sorted(int(d) for d in dep)} cannot be solved for from them."
        )
    c = np.zeros((p, len(free)))
    c[free, np.arange(len(free))] = 1.0
    c[dep, :] = -np.linalg.solve(a_dep, a[:, free])
    return c
