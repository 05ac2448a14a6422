"""Design matrices: parsing, coefficient names, identifiability after constraints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from batchglm.constraints import constraint_matrix
from batchglm.formula import evaluate_formula
from batchglm.named_constraints import (
    equation_design,
    equations_matrix,
    is_named,
    nested_design,
    suggestion,
)

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
    formula : str or None
        The formula the design came from, if any.
    constraint_spec : dict, list of str or None
        Constraints as the user named them (nested factors or equations), if so given.
    obs : pandas.DataFrame or None
        The observation annotations a formula was evaluated on.
    """

    matrix: Array
    names: list[str]
    constraints: Array
    reduced: Array = field(init=False, repr=False)
    formula: str | None = None
    constraint_spec: dict[str, str] | list[str] | None = None
    obs: pd.DataFrame | None = field(default=None, repr=False, compare=False)

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
    design: ArrayLike | pd.DataFrame | str | None,
    constraints: ArrayLike | Mapping[str, str] | Sequence[str] | None,
    n_obs: int,
    which: str,
    check: bool = True,
    obs: pd.DataFrame | None = None,
) -> Design:
    """Validate a design and its constraints and check identifiability.

    Parameters
    ----------
    design : array_like, pandas.DataFrame, str or None
        ``(n_obs, p)`` matrix; a formula such as ``"~ 1 + condition"`` evaluated on ``obs``
        (see :mod:`batchglm.formula`); ``None`` gives an intercept-only design.
    constraints : array_like, dict, str, list of str or None
        A matrix (see :func:`batchglm.constraints.constraint_matrix`), nested factors
        ``{"replicate": "condition"}`` (formula designs only), or equations over coefficient
        names; with a formula, equations naming every level (``replicate[r1]``) code that
        factor by every level (see :mod:`batchglm.named_constraints`).
    n_obs : int
        Number of observations in the data.
    which : str
        ``"loc"`` or ``"scale"``, for messages.
    check : bool
        Check identifiability (needed for fitting, not for simulating).
    obs : pandas.DataFrame, optional
        Observation annotations for formulas, one row per observation.

    Returns
    -------
    Design
        The validated design.
    """
    arg = f"design_{which}"
    formula: str | None = None
    c_named: Array | None = None
    table: pd.DataFrame | None = None
    if isinstance(design, str):
        formula = design
        table = _obs_table(obs, n_obs)
        if isinstance(constraints, Mapping):
            design, c_named = nested_design(formula, table, constraints, which)
        else:
            design = evaluate_formula(formula, table, arg)
            if is_named(constraints) and isinstance(constraints, str | list | tuple):
                # Equations may name every level of a factor (sum-to-zero over replicates).
                design = equation_design(formula, table, design, constraints, which)
    elif isinstance(constraints, Mapping):
        raise ValueError(
            f"`constraints_{which}` names nested factors ({dict(constraints)!r}), which needs "
            f"a formula `design_{which}` such as '~ 1 + condition + replicate' and `obs`."
        )
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
    spec: dict[str, str] | list[str] | None = None
    if c_named is not None and isinstance(constraints, Mapping):
        c, spec = c_named, {str(k): str(v) for k, v in constraints.items()}
    elif is_named(constraints) and isinstance(constraints, str | list | tuple):
        spec = [constraints] if isinstance(constraints, str) else [str(e) for e in constraints]
        c = equations_matrix(spec, names, f"constraints_{which}")
    else:
        # Dicts were handled above (formulas) or rejected (matrix designs).
        matrix_form = cast("ArrayLike | None", constraints)
        c = constraint_matrix(matrix_form, matrix.shape[1], f"constraints_{which}")
    out = Design(
        matrix, names, c, formula=formula, constraint_spec=spec,
        obs=table if formula is not None else None,
    )
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
    message = (
        f"`design_{which}` stays rank-deficient after `constraints_{which}`: rank {rank} "
        f"for {k} free parameters ({k - rank} too many). These columns are confounded: "
        f"{involved}. Drop columns or add constraints (e.g. sum-to-zero rows over "
        "replicates nested in a condition)."
    )
    if design.formula is not None and design.obs is not None:
        message += " " + suggestion(design.formula, design.obs, involved, which)
    raise ValueError(message)


def _obs_table(obs: pd.DataFrame | None, n_obs: int) -> pd.DataFrame:
    # A formula such as "~ 1" needs no annotations; others fail naming their variables.
    if obs is None:
        return pd.DataFrame(index=pd.RangeIndex(n_obs))
    if not isinstance(obs, pd.DataFrame):
        raise ValueError(
            f"`obs` must be a pandas DataFrame of observation annotations, but a "
            f"{type(obs).__name__} was given."
        )
    if len(obs) != n_obs:
        raise ValueError(
            f"`obs` has {len(obs)} rows but `data` has {n_obs} observations; they must match."
        )
    return obs
