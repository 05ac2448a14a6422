"""Design matrices: parsing, coefficient names, identifiability after constraints."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from batchglm.constraints import constraint_matrix

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Design:
    """A design matrix with its coefficient names and constraint matrix.

    Attributes
    ----------
    matrix : ndarray
        Shape ``(n_obs, p)``.
    names : list of str
        One name per column.
    constraints : ndarray
        ``C`` of shape ``(p, p_free)``; ``theta = C @ theta_free``.
    """

    matrix: Array
    names: list[str]
    constraints: Array
    reduced: Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reduced", self.matrix @ self.constraints)

    @property
    def n_free(self) -> int:
        """Number of free parameters."""
        return int(self.constraints.shape[1])

    def frame(self, index: pd.Index | None = None) -> pd.DataFrame:
        """Return the design as a DataFrame with coefficient-name columns.

        Parameters
        ----------
        index : pandas.Index, optional
            Observation names.

        Returns
        -------
        pandas.DataFrame
            The design.
        """
        return pd.DataFrame(self.matrix, columns=self.names, index=index)


def build_design(
    design: ArrayLike | pd.DataFrame | None,
    constraints: ArrayLike | None,
    n_obs: int,
    which: str,
    check: bool = True,
) -> Design:
    """Validate a design and its constraints and check identifiability.

    Parameters
    ----------
    design : array_like, pandas.DataFrame or None
        ``(n_obs, p)`` matrix; ``None`` gives an intercept-only design.
    constraints : array_like or None
        See :func:`batchglm.constraints.constraint_matrix`.
    n_obs : int
        Number of observations in the data.
    which : str
        ``"loc"`` or ``"scale"``, for messages.
    check : bool
        Check identifiability (needed for fitting, not for simulating).

    Returns
    -------
    Design
        The validated design.
    """
    arg = f"design_{which}"
    if design is None:
        matrix, names = np.ones((n_obs, 1)), ["Intercept"]
    elif isinstance(design, pd.DataFrame):
        names = [str(c) for c in design.columns]
        try:
            matrix = design.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"`{arg}` must hold numbers only, but it has columns of dtypes "
                f"{sorted({str(t) for t in design.dtypes})}; encode categories as indicator "
                "columns."
            ) from None
    else:
        try:
            matrix = np.asarray(design, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"`{arg}` must be a numeric 2-D matrix.") from None
        if matrix.ndim != 2:
            raise ValueError(
                f"`{arg}` must be a 2-D matrix (n_obs, n_coef), but it has "
                f"{matrix.ndim} dimension(s)."
            )
        names = [f"p{j}" for j in range(matrix.shape[1])]
    if matrix.shape[0] != n_obs:
        raise ValueError(
            f"`{arg}` has {matrix.shape[0]} rows but `data` has {n_obs} observations; "
            "they must match."
        )
    if matrix.shape[1] == 0:
        raise ValueError(f"`{arg}` must have at least one column.")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"`{arg}` must be finite, but it has NaN or infinite entries.")
    if len(set(names)) != len(names):
        raise ValueError(f"`{arg}` has duplicate column names; names must be unique.")
    c = constraint_matrix(constraints, matrix.shape[1], f"constraints_{which}")
    out = Design(matrix, names, c)
    if check:
        check_identifiable(out, which)
    return out


def check_identifiable(design: Design, which: str) -> None:
    """Raise ``ValueError`` naming the columns that stay confounded after constraints.

    Parameters
    ----------
    design : Design
        The design to check.
    which : str
        ``"loc"`` or ``"scale"``, for messages.
    """
    rows = np.unique(design.reduced, axis=0)
    _, s, vt = np.linalg.svd(rows, full_matrices=True)
    tol = max(rows.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 1.0)
    rank = int((s > tol).sum())
    k = design.n_free
    if rank == k:
        return
    null = design.constraints @ vt[rank:].T
    involved = [design.names[j] for j in np.flatnonzero(np.abs(null).max(axis=1) > 1e-8)]
    raise ValueError(
        f"`design_{which}` stays rank-deficient after `constraints_{which}`: rank {rank} "
        f"for {k} free parameters ({k - rank} too many). These columns are confounded: "
        f"{involved}. Drop columns or add constraints (e.g. sum-to-zero rows over "
        "replicates nested in a condition)."
    )
