"""R-style formulas evaluated on observation annotations with ``formulaic``.

A formula such as ``"~ 1 + condition + replicate"`` becomes a design DataFrame whose columns
are formulaic's names (``"Intercept"``, ``"condition[T.treated]"``, ...). Those names are the
coefficient names everywhere else: in results, in string constraints and in tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
from formulaic import Formula, model_matrix
from formulaic.errors import FormulaicError

#: ANSI colour codes that formulaic puts around the offending token of a syntax error.
_ANSI = re.compile(r"\x1b\[[0-9;]*m|[\u29da\u29db]")


def one_line(message: str) -> str:
    """Collapse a (formulaic) error message into one plain line.

    Parameters
    ----------
    message : str
        The message, possibly spread over several lines with terminal colour codes.

    Returns
    -------
    str
        The message on one line without colour codes.
    """
    return " ".join(_ANSI.sub("", message).split())


def parse_formula(formula: str, which: str) -> Formula:
    """Parse a one-sided formula.

    Parameters
    ----------
    formula : str
        E.g. ``"~ 1 + condition + replicate"`` (the ``~`` is optional).
    which : str
        Argument name for messages, e.g. ``"design_loc"``.

    Returns
    -------
    formulaic.Formula
        The parsed right-hand side.
    """
    try:
        parsed = Formula(formula)
    except FormulaicError as err:
        raise ValueError(
            f"`{which}` could not be parsed as a formula ({formula!r}): {one_line(str(err))}"
        ) from None
    if getattr(parsed, "lhs", None) is not None:
        raise ValueError(
            f"`{which}` must be a one-sided formula such as '~ 1 + condition', but "
            f"{formula!r} has a left-hand side; the data are the response."
        )
    return parsed


def _unknown_variables(parsed: Formula, obs: pd.DataFrame) -> list[str]:
    names = {str(v) for v in parsed.required_variables}
    return sorted(names - {str(c) for c in obs.columns})


def evaluate_formula(
    formula: str | Formula,
    obs: pd.DataFrame,
    which: str,
    text: str | None = None,
) -> pd.DataFrame:
    """Evaluate a one-sided formula on observation annotations.

    Parameters
    ----------
    formula : str or formulaic.Formula
        The formula.
    obs : pandas.DataFrame
        One row per observation; the formula's variables are its columns.
    which : str
        Argument name for messages, e.g. ``"design_loc"``.
    text : str, optional
        The formula as the user wrote it, for messages (defaults to ``str(formula)``).

    Returns
    -------
    pandas.DataFrame
        ``(n_obs, p)`` float64 design with formulaic's column names, indexed like ``obs``.

    Raises
    ------
    ValueError
        For variables missing from ``obs`` (all of them named), missing values, or any
        other evaluation error of formulaic.
    """
    shown = text if text is not None else str(formula)
    parsed = parse_formula(formula, which) if isinstance(formula, str) else formula
    unknown = _unknown_variables(parsed, obs)
    if unknown:
        have = [str(c) for c in obs.columns]
        where = (
            f"`obs` has columns {have}" if have
            else "no `obs` was given (pass `obs=` or an AnnData, whose .obs is used)"
        )
        raise ValueError(
            f"`{which}` formula {shown!r} uses variables that are not columns of `obs`: "
            f"{unknown}; {where}."
        )
    try:
        # na_action="raise": formulaic would otherwise drop rows silently, and the design
        # would no longer line up with the data.
        mm = model_matrix(parsed, obs, na_action="raise")
    except (FormulaicError, ValueError, TypeError, NameError) as err:
        raise ValueError(
            f"`{which}` formula {shown!r} could not be evaluated on `obs`: "
            f"{one_line(str(err))}"
        ) from None
    frame = pd.DataFrame(
        np.asarray(mm, dtype=np.float64), index=obs.index, columns=[str(c) for c in mm.columns]
    )
    return frame


def data_variables(formula: str, obs: pd.DataFrame) -> list[str]:
    """Columns of ``obs`` that a formula uses.

    Parameters
    ----------
    formula : str
        The formula.
    obs : pandas.DataFrame
        Observation annotations.

    Returns
    -------
    list of str
        Used column names, in the order of ``obs.columns``.
    """
    try:
        names = {str(v) for v in Formula(formula).required_variables}
    except FormulaicError:
        return []
    return [str(c) for c in obs.columns if str(c) in names]


def is_categorical(values: pd.Series) -> bool:
    """Whether formulaic codes a column as a factor (indicator columns per level).

    Parameters
    ----------
    values : pandas.Series
        An ``obs`` column.

    Returns
    -------
    bool
        True for categorical, string, object and boolean columns.
    """
    return not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def nested_pairs(
    obs: pd.DataFrame, inner: Iterable[str], outer: Iterable[str]
) -> list[tuple[str, str]]:
    """Pairs ``(a, b)`` of factors where every level of ``a`` lies within one level of ``b``.

    These are the candidates for named constraints ``{a: b}`` (replicates nested in
    conditions), used to suggest a fix when a formula design is confounded.

    Parameters
    ----------
    obs : pandas.DataFrame
        Observation annotations.
    inner : iterable of str
        Candidate nested factors; only categorical columns of ``obs`` are used.
    outer : iterable of str
        Candidate grouping factors, in order of preference; only categorical columns with
        at least two levels and fewer levels than the nested factor are used.

    Returns
    -------
    list of (str, str)
        Nested pairs, in the order of ``inner`` and then ``outer``.
    """
    def factors(names: Iterable[str]) -> list[str]:
        return [v for v in names if v in obs.columns and is_categorical(obs[v])]

    outers = factors(outer)
    pairs = []
    for a in factors(inner):
        n_a = obs[a].nunique()
        for b in outers:
            if a == b or not 2 <= obs[b].nunique() < n_a:
                continue
            both = obs[[a, b]].dropna().astype(str)
            if (both.groupby(a)[b].nunique() == 1).all():
                pairs.append((a, b))
    return pairs
