"""Design matrices: parsing, coefficient names, identifiability after constraints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from batchglm.constraints import constraint_matrix
from batchglm.formula import (
    data_variables,
    drop_unused_levels,
    evaluate_formula,
    parse_formula,
)
from batchglm.named_constraints import (
    equation_design,
    equations_matrix,
    is_named,
    nested_design,
    suggestion,
    term_is_factor,
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


def _check_missing(formula: str, table: pd.DataFrame, arg: str) -> None:
    """Refuse missing values in the columns a formula uses, naming them and their counts."""
    parts = []
    for column in data_variables(formula, table):
        missing = table[column].isna().to_numpy()
        if missing.any():
            shown = ", ".join(str(o) for o in table.index[missing][:3])
            more = ", ..." if missing.sum() > 3 else ""
            parts.append(f"{column!r}: {int(missing.sum())} of {missing.size} ({shown}{more})")
    if parts:
        raise ValueError(
            f"`{arg}` formula {formula!r} uses columns of `obs` with missing values "
            f"({'; '.join(parts)}); a design needs a value for every observation: drop those "
            "observations from the data and `obs`, or impute the values."
        )


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
        Observation annotations for formulas, one row per observation. Categories that no
        observation has are dropped from the columns the formula uses (with a warning); the
        design keeps the table it was evaluated on as ``Design.obs``.

    Returns
    -------
    Design
        The validated design.

    Raises
    ------
    ValueError
        For designs or constraints of the wrong shape or with non-finite entries, and (with
        ``check=True``) for designs that stay rank-deficient after the constraints
        (:func:`check_identifiable`).

    Warns
    -----
    batchglm.formula.AnnotationWarning
        For formula designs: unused categories dropped, integer-coded group labels used as
        numbers, single-level factors dropping out (see ``docs/annotations.md``).
    """
    arg = f"design_{which}"
    formula: str | None = None
    c_named: Array | None = None
    table: pd.DataFrame | None = None
    if isinstance(design, str):
        formula = design
        table = drop_unused_levels(formula, _obs_table(obs, n_obs), arg)
        if isinstance(constraints, Mapping):
            design, c_named = nested_design(formula, table, constraints, which)
        else:
            _check_missing(formula, table, arg)
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
        matrix,
        names,
        c,
        formula=formula,
        constraint_spec=spec,
        obs=table if formula is not None else None,
    )
    if check:
        check_identifiable(out, which)
    return out


def check_random_not_fixed(design_loc: object, random_effects: str | Sequence[str] | None) -> None:
    """Refuse a random-effects factor that the location formula also has as a fixed term.

    Checked before the design is built, so that ``~ condition + donor`` with
    ``random_effects="donor"`` names this conflict rather than the rank deficiency of
    donors nested in the condition (whose suggested constraint would not help).

    Parameters
    ----------
    design_loc : object
        The location design; only formulas (str) are checked here (matrix designs are
        checked by the mixed fit against the group indicators).
    random_effects : str, sequence of str or None
        The grouping factors of :func:`batchglm.fit`.

    Raises
    ------
    ValueError
        When a grouping factor is a main-effect term of the formula.
    """
    if random_effects is None or not isinstance(design_loc, str):
        return
    factors = [random_effects] if isinstance(random_effects, str) else list(random_effects)
    terms = [str(t) for t in parse_formula(design_loc, "design_loc")]
    for factor in factors:
        if any(term_is_factor(t, str(factor)) for t in terms):
            raise ValueError(
                f"`random_effects` factor {factor!r} is already coded by fixed effects in "
                f"`design_loc` {design_loc!r}, so its random intercepts are not identifiable; "
                f"drop {factor!r} from the formula and keep it in `random_effects`."
            )


def check_identifiable(design: Design, which: str) -> None:
    """Raise ``ValueError`` naming the columns that stay confounded after constraints.

    The rank of the constrained design ``X C`` ``(n_obs, k)`` is decided on its columns
    scaled to unit Euclidean norm (equilibrated), so that it does not depend on the units of
    a covariate (a column on a 1e8 or a 1e-8 scale is as identifiable as on a unit scale).
    The work is a thin QR factorisation ``X C D = Q R`` by blocks of rows (``R`` is
    ``k x k``, ``Q`` is never formed) and the singular value decomposition of ``R``:
    ``O(n_obs k^2)`` time, memory of one block of rows beyond the design. A singular value
    below ``max(n_obs, k) * eps * s_max`` counts as zero (the default of
    ``numpy.linalg.matrix_rank``; Golub & Van Loan, *Matrix Computations*, 4th ed.,
    sec. 5.4); coefficients with a non-negligible weight in a null
    vector (relative to its largest weight, both on equilibrated columns) are named.

    Parameters
    ----------
    design : Design
        The design to check.
    which : str
        ``"loc"`` or ``"scale"``, for messages.

    Raises
    ------
    ValueError
        When ``X C`` has rank below its number of columns; the message names the confounded
        columns, all-zero columns separately, and for formula designs suggests named
        constraints.
    """
    k = design.n_free
    rank, null = _rank_and_null_space(design.reduced)
    if rank == k:
        return
    # Null vectors of X C, mapped to the full coefficients, on equilibrated full columns.
    full_norms = _column_norms(design.matrix)
    full_scale = np.where(full_norms > 0.0, full_norms, 1.0)
    weights = np.abs(design.constraints @ null) * full_scale[:, None]
    weights /= np.maximum(weights.max(axis=0, keepdims=True), np.finfo(np.float64).tiny)
    involved_idx = np.flatnonzero(weights.max(axis=1) > _NULL_WEIGHT)
    involved = [design.names[j] for j in involved_idx]
    zero = [design.names[j] for j in involved_idx if full_norms[j] == 0.0]
    constrained = design.constraint_spec is not None or design.constraints.shape != (k, k)
    after = f" after `constraints_{which}`" if constrained else ""
    message = (
        f"`design_{which}` stays rank-deficient{after}: rank {rank} "
        f"for {k} free parameters ({k - rank} too many). "
    )
    if zero:
        message += (
            f"These columns are all zero (no observation has a non-zero value, e.g. a level "
            f"without observations): {zero}; drop them. "
        )
    rest = [name for name in involved if name not in zero]
    if rest:
        message += f"These columns are confounded: {rest}."
        if design.formula is not None and design.obs is not None:
            message += " " + suggestion(design.formula, design.obs, rest, which)
        else:
            message += (
                " Drop columns or add constraints (e.g. sum-to-zero rows over replicates "
                "nested in a condition)."
            )
    raise ValueError(message.strip())


#: Relative weight above which a coefficient counts as part of a null vector.
_NULL_WEIGHT = 1e-6


def _column_norms(x: Array) -> Array:
    # Euclidean norms of the columns, without forming the n_obs x k array x * x.
    return np.asarray(np.sqrt(np.einsum("ij,ij->j", x, x)), dtype=np.float64)


#: Rows per block of the tall-skinny QR, in bytes of the block (cache-sized).
_QR_BLOCK_BYTES = 1 << 20


def _r_factor(x: Array, scale: Array) -> Array:
    """``R`` of the thin QR of ``x / scale``, by blocks of rows (tall-skinny QR).

    The ``R`` factors of row blocks are stacked and factorised again (Demmel, Grigori,
    Hoemmen & Langou, "Communication-optimal parallel and sequential QR and LU
    factorizations", SIAM J. Sci. Comput. 34, 2012): the same ``R`` up to row signs, with
    memory bounded by one block and several times faster than one LAPACK call on a tall
    matrix.
    """
    n, k = x.shape
    rows = max(4 * k, _QR_BLOCK_BYTES // (8 * max(k, 1)))
    if n <= rows:
        return np.asarray(np.linalg.qr(x / scale, mode="r"))
    parts = [np.linalg.qr(x[i : i + rows] / scale, mode="r") for i in range(0, n, rows)]
    return np.asarray(np.linalg.qr(np.vstack(parts), mode="r"))


def column_rank(x: Array) -> int:
    """Numerical rank of a matrix, independent of the units of its columns.

    Columns are scaled to unit norm before the decision (see :func:`check_identifiable`
    for the threshold), so a covariate on a 1e8 or 1e-8 scale counts like any other.

    Parameters
    ----------
    x : ndarray
        Shape ``(n, k)``; the work is a thin QR by row blocks, never ``n x n``.

    Returns
    -------
    int
        The rank (0 for an empty matrix).
    """
    if x.size == 0:
        return 0
    return _rank_and_null_space(np.asarray(x, dtype=np.float64))[0]


def equilibrated_null_space(x: Array) -> tuple[Array, Array]:
    """Orthonormal null space of ``x`` with its columns scaled to unit norm.

    Parameters
    ----------
    x : ndarray
        Shape ``(n, k)``; the work is a thin QR by row blocks, never ``n x n``.

    Returns
    -------
    null : ndarray
        ``(k, k - rank)`` orthonormal basis of the null space of ``x / scale``.
    scale : ndarray
        ``(k,)`` column norms (1 for all-zero columns): ``x @ (null / scale[:, None]) = 0``.
    """
    x = np.asarray(x, dtype=np.float64)
    norms = _column_norms(x)
    scale = np.where(norms > 0.0, norms, 1.0)
    _, null = _rank_and_null_space(x)
    return null * scale[:, None], scale


def _rank_and_null_space(x: Array) -> tuple[int, Array]:
    """Numerical rank of ``x`` ``(n, k)`` and a basis ``(k, k - rank)`` of its null space.

    Columns are equilibrated (unit norm) before the decision; the basis is returned in the
    original coordinates. Uses a thin QR of ``x`` and the SVD of its ``k x k`` factor ``R``.
    """
    n, k = x.shape
    norms = _column_norms(x)
    # All-zero columns cannot be scaled; they stay zero and give a null vector each.
    scale = np.where(norms > 0.0, norms, 1.0)
    r = _r_factor(x, scale)
    _, s, vt = np.linalg.svd(r, full_matrices=True)
    tol = max(n, k) * np.finfo(np.float64).eps * (s[0] if s.size else 1.0)
    rank = int((s > tol).sum())
    null = vt[rank:].T / scale[:, None]
    return rank, null


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
