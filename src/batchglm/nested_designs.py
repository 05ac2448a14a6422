"""Whether one design's column space lies inside another's (nested models)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.design import column_rank

Array = NDArray[np.float64]

#: Relative residual above which a reduced column counts as outside the full column space.
_NESTED_RTOL = 1e-8


def outside_columns(full: Array, reduced: Array) -> list[int]:
    """Columns of ``reduced`` that do not lie in the column space of ``full``.

    Parameters
    ----------
    full : ndarray
        Effective design of the full model, ``X_full @ C_full``, shape ``(n, k_full)``.
    reduced : ndarray
        Effective design of the reduced model, ``X_reduced @ C_reduced``, shape
        ``(n, k_reduced)``.

    Returns
    -------
    list of int
        Positions of the offending columns of ``reduced``; empty when the reduced model is
        nested in the full one.

    Raises
    ------
    ValueError
        When the two designs have different numbers of rows.

    Notes
    -----
    Nesting is a property of column spaces, not of column names: a reduced model may use
    another coding of the same factor. The full column space gets an orthonormal basis from
    the SVD of its equilibrated columns (unit norm, so the decision ignores units); a
    reduced column is inside when its residual after projection is small relative to its
    norm.
    """
    if full.shape[0] != reduced.shape[0]:
        raise ValueError(
            f"the full design has {full.shape[0]} rows but the reduced design has "
            f"{reduced.shape[0]}; they must describe the same observations."
        )
    # Equilibrated columns: the column space is the same, the rank decision unit-free.
    norms_full = np.linalg.norm(full, axis=0)
    full = full / np.where(norms_full > 0, norms_full, 1.0)
    u, s, _ = np.linalg.svd(full, full_matrices=False)
    tol = max(full.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 1.0)
    q = u[:, s > tol]
    resid = reduced - q @ (q.T @ reduced)
    norms = np.linalg.norm(reduced, axis=0)
    rel = np.linalg.norm(resid, axis=0) / np.where(norms > 0, norms, 1.0)
    return [int(j) for j in np.flatnonzero(rel > _NESTED_RTOL)]


def check_nested(full: Array, reduced: Array, which: str, names: list[str] | None = None) -> int:
    """Raise ``ValueError`` unless ``reduced`` is nested in ``full``; return the lost rank.

    Parameters
    ----------
    full, reduced : ndarray
        Effective designs (after constraints) of the full and the reduced model.
    which : str
        ``"loc"`` or ``"scale"``, for messages.
    names : list of str, optional
        Coefficient names of the reduced model's free parameters, for messages. Without
        constraints they are the design's column names.

    Returns
    -------
    int
        ``rank(full) - rank(reduced)``: the degrees of freedom this model contributes to a
        likelihood-ratio test.

    Raises
    ------
    ValueError
        When the reduced model is not nested in the full one.
    """
    bad = outside_columns(full, reduced)
    if bad:
        label = (
            [names[j] for j in bad]
            if names is not None and len(names) == reduced.shape[1]
            else [f"column {j}" for j in bad]
        )
        raise ValueError(
            f"the reduced `{which}` model is not nested in the full one: its columns "
            f"{label} (after constraints) are not linear combinations of the full model's "
            "columns. A likelihood-ratio test needs the reduced column space inside the "
            "full one."
        )
    return column_rank(full) - column_rank(reduced)
