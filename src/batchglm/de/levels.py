"""Contrasts by factor level names, for fits from a formula."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.formula import evaluate_formula, numeric_uses
from batchglm.result import FitResult

Array = NDArray[np.float64]


def _formula_info(res: FitResult) -> tuple[str | None, pd.DataFrame | None]:
    # Formula fits keep the formula and the observation table on their Design.
    formula = getattr(res.loc, "formula", None)
    obs = getattr(res.loc, "obs", None)
    return (
        str(formula) if formula is not None else None,
        obs if isinstance(obs, pd.DataFrame) else None,
    )


def level_contrast(res: FitResult, factor: str, level: str, reference: str) -> Array:
    """Weights over the location coefficients for ``level`` minus ``reference`` of a factor.

    Parameters
    ----------
    res : FitResult
        A fit whose location design came from a formula on an ``obs`` table.
    factor : str
        A column of ``obs`` used in the formula.
    level, reference : str
        Two levels of ``factor``.

    Returns
    -------
    ndarray
        ``x(level) - x(reference)``: the difference of the design rows of the two levels,
        one weight per location coefficient, shape ``(p,)``.

    Raises
    ------
    ValueError
        When the fit has no formula design; ``factor`` is not a column of its ``obs``;
        ``factor`` is a numeric column that the formula uses as a number (a slope, e.g.
        groups coded 1/2/3 written plainly as ``group``), where levels do not exist;
        ``level`` or ``reference`` is not a level of ``factor`` (levels that no observation
        has were dropped before the fit); or the difference depends on other variables.

    Notes
    -----
    Each observation's design row is evaluated twice, with ``factor`` set to ``level`` and
    to ``reference`` (the other variables as observed), with the factor levels of the
    original table. When every observation gives the same difference, that difference is
    the contrast; when it varies (``factor`` interacts with another variable), the
    comparison depends on that variable and is an error asking for an explicit contrast.
    """
    formula, obs = _formula_info(res)
    if formula is None or obs is None:
        raise ValueError(
            f"a contrast by level names ({factor!r}, {level!r}, {reference!r}) needs a fit "
            "from a formula, e.g. bg.fit(data, '~ 1 + condition', obs=obs); this fit has a "
            f"matrix design. Pass `contrast=` as weights over the coefficients "
            f"{res.loc.names} instead."
        )
    if factor not in obs.columns:
        raise ValueError(
            f"{factor!r} is not a column of the fit's `obs`; its columns are "
            f"{[str(c) for c in obs.columns]}."
        )
    _refuse_numeric(formula, obs, factor, level, reference)
    present = {str(v) for v in pd.unique(obs[factor])}
    for lv in (level, reference):
        if lv not in present:
            raise ValueError(
                f"{lv!r} is not a level of {factor!r}; its levels are {sorted(present)}."
            )
    if level == reference:
        raise ValueError(f"`level` and `reference` must differ, but both are {level!r}.")
    col = obs[factor]
    lookup = {str(v): v for v in pd.unique(col)}
    n = len(obs)
    frames = [obs.reset_index(drop=True)]
    for lv in (level, reference):
        alt = frames[0].copy()
        alt[factor] = pd.Series([lookup[lv]] * n, dtype=col.dtype)
        frames.append(alt)
    # Evaluating the original rows together with the altered ones keeps the level sets
    # (hence the columns) identical to the fit's.
    stacked = pd.concat(frames, ignore_index=True)
    try:
        # The fit already warned about its annotations; these rows are only for the weights.
        plain = evaluate_formula(formula, stacked, "design_loc", warn=False)
    except ValueError as err:
        raise ValueError(
            f"the design rows of {factor!r} = {level!r} and {reference!r} could not be built "
            f"from the formula {formula!r} ({err}); pass `contrast=` as weights over the "
            "coefficients instead."
        ) from None
    x = plain.to_numpy()
    plain_diff = x[n : 2 * n] - x[2 * n :]
    names = [str(c) for c in plain.columns]
    return _map_columns(res, formula, factor, level, reference, names, plain_diff)


def _refuse_numeric(
    formula: str, obs: pd.DataFrame, factor: str, level: str, reference: str
) -> None:
    # A numeric column written plainly in the formula is one slope, not a set of levels:
    # "level 3 vs 1" would silently become twice the slope.
    col = obs[factor]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return
    uses = numeric_uses(formula, obs, factor)
    if not uses:
        return
    quoted = factor if factor.isidentifier() else f"`{factor}`"
    raise ValueError(
        f"a level contrast ({factor!r}, {level!r}, {reference!r}) needs {factor!r} to be a "
        f"factor, but it is a numeric column of `obs` that the formula {formula!r} uses as "
        f"a number in {uses} (one slope, not one coefficient per level). To compare groups, "
        f"make it a factor: write C({quoted}) in the formula or convert the column with "
        f"obs[{factor!r}] = obs[{factor!r}].astype('category'), and fit again; to test the "
        f"slope, use coef={factor!r}."
    )


def _map_columns(
    res: FitResult,
    formula: str,
    factor: str,
    level: str,
    reference: str,
    plain_names: list[str],
    plain_diff: Array,
) -> Array:
    # Named nested-factor constraints ({"replicate": "condition"}) replace a factor's
    # treatment columns by one indicator column `factor[level]` per level. The other
    # columns are the plain formula's, so they are taken from it by name.
    spec = getattr(res.loc, "constraint_spec", None)
    constrained = [str(k) for k in spec] if isinstance(spec, dict) else []
    names = list(res.loc.names)
    diff = np.zeros((plain_diff.shape[0], len(names)))
    for j, name in enumerate(names):
        if name in plain_names:
            diff[:, j] = plain_diff[:, plain_names.index(name)]
        elif any(name.startswith(f"{k}[") for k in constrained):
            if factor in constrained:
                diff[:, j] = (name == f"{factor}[{level}]") - (name == f"{factor}[{reference}]")
        else:
            raise ValueError(
                f"the formula {formula!r} evaluated for the contrast gives columns "
                f"{plain_names}, which do not cover the fit's coefficient {name!r}; pass "
                "`contrast=` as weights over the coefficients instead."
            )
    moved = np.any(plain_diff != 0, axis=0)
    lost = [
        m
        for m, mv in zip(plain_names, moved, strict=True)
        if mv and m not in names and not (factor in constrained and m.startswith(f"{factor}["))
    ]
    if lost:
        raise ValueError(
            f"the formula {formula!r} gives columns {lost} that change between the levels "
            f"but are not coefficients of the fit; pass `contrast=` as weights over the "
            "coefficients instead."
        )
    # Compared with the first row rather than sorted with np.unique(axis=0): linear in n_obs.
    rows = np.round(diff, 12)
    if np.any(rows != rows[0]):
        raise ValueError(
            f"the difference between {factor!r} levels {level!r} and {reference!r} depends "
            "on other variables (the factor interacts with them in the formula); pass "
            "`contrast=` as weights over the coefficients for the comparison you mean."
        )
    return rows[0]
