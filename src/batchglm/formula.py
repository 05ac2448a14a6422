"""R-style formulas evaluated on observation annotations with ``formulaic``.

A formula such as ``"~ 1 + condition + replicate"`` becomes a design DataFrame whose columns
are formulaic's names (``"Intercept"``, ``"condition[T.treated]"``, ...). Those names are the
coefficient names everywhere else: in results, in string constraints and in tests.

Annotations that are probably a mistake get an :class:`AnnotationWarning` naming the column
(rules in ``docs/annotations.md``):

* levels of a categorical column that no observation has are dropped before the formula is
  evaluated (as DESeq2 does with ``droplevels``), see :func:`drop_unused_levels`;
* a numeric column with a few distinct integer values that enters a formula as a number
  (a slope), as group labels coded 1/2/3 do;
* a factor with a single level, whose term formulaic drops from the design.
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd
from formulaic import Formula, model_matrix
from formulaic.errors import FormulaicError

#: Integer-valued numeric columns with this many distinct values or fewer (and at least
#: :data:`MIN_INTEGER_CODES`) look like group labels when they enter a formula as a number.
MAX_INTEGER_CODES = 10

#: With two distinct values a slope spans the same columns as a factor, so the fit is the same.
MIN_INTEGER_CODES = 3

_PACKAGE = str(Path(__file__).resolve().parent)


class AnnotationWarning(UserWarning):
    """An ``obs`` column used in a formula is probably not what was meant.

    Silence it with ``warnings.filterwarnings("ignore", category=AnnotationWarning)``.
    """


#: The annotation warnings already given in the current user-facing call, keyed by rule and
#: column; ``None`` outside such a call (then every warning is given).
_GIVEN: ContextVar[set[tuple[str, str]] | None] = ContextVar("batchglm_annotations", default=None)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def annotation_warnings_once(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Give each :class:`AnnotationWarning` once per call of a user-facing function.

    An analysis that evaluates the same annotations several times (the full and reduced
    models of a likelihood-ratio test, a location and a scale design, refits) would
    otherwise repeat the same advice about the same ``obs`` column. Within a call of the
    decorated function (nested calls share the outermost one's record), a warning is given
    once per rule and column, naming the first design it was found in.

    Parameters
    ----------
    func : callable
        The user-facing function (``bg.fit``, ``bg.de.lrt``, ``bg.de.test``).

    Returns
    -------
    callable
        ``func`` with the same signature and docstring.
    """

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if _GIVEN.get() is not None:
            return func(*args, **kwargs)
        token = _GIVEN.set(set())
        try:
            return func(*args, **kwargs)
        finally:
            _GIVEN.reset(token)

    return wrapper


def _warn(message: str, key: tuple[str, str] | None = None) -> None:
    # Point the warning at the first caller outside batchglm (the user's line).
    level, frame = 1, sys._getframe(0)
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    # Once per (rule, column) within a user-facing call (annotation_warnings_once); a
    # warning silenced by the active filters (a library pass that builds the design again
    # under "ignore") does not count as given.
    given = _GIVEN.get()
    if key is not None and given is not None:
        if key in given:
            return
        if not _ignored(message, frame):
            given.add(key)
    warnings.warn(message, AnnotationWarning, stacklevel=level)


def _ignored(message: str, frame: Any) -> bool:
    """Whether the active warning filters drop an AnnotationWarning pointed at ``frame``."""
    module = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    lineno = frame.f_lineno if frame is not None else 0
    for action, msg, category, mod, line in warnings.filters:
        if (
            (msg is None or msg.match(message))
            and issubclass(AnnotationWarning, category)
            and (mod is None or mod.match(module))
            and (line == 0 or line == lineno)
        ):
            return bool(action == "ignore")
    return bool(getattr(warnings, "defaultaction", "default") == "ignore")


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

    Raises
    ------
    ValueError
        For a formula with a left-hand side or one that cannot be parsed.
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


def _quoted(name: str) -> str:
    # How a column name is written in a formula: backticks unless it is an identifier.
    return name if name.isidentifier() else f"`{name}`"


def drop_unused_levels(formula: str | Formula, obs: pd.DataFrame, which: str) -> pd.DataFrame:
    """Drop the levels no observation has from the categorical columns a formula uses.

    An unused level (left over after subsetting) would give an all-zero design column and a
    rank-deficient design. As DESeq2 does with ``droplevels``, such levels are removed, with
    an :class:`AnnotationWarning` naming the column and the levels.

    Parameters
    ----------
    formula : str or formulaic.Formula
        The formula; only the columns it uses are changed.
    obs : pandas.DataFrame
        ``(n_obs, n_columns)`` observation annotations.
    which : str
        Argument name for messages, e.g. ``"design_loc"``.

    Returns
    -------
    pandas.DataFrame
        ``obs`` itself when nothing was dropped, else a copy with the unused categories
        removed (same index, same columns, the remaining levels in their order).

    Warns
    -----
    AnnotationWarning
        Once per column that had unused levels.
    """
    parsed = parse_formula(formula, which) if isinstance(formula, str) else formula
    used = {str(v) for v in parsed.required_variables}
    dropped: dict[Any, list[str]] = {}
    for name in obs.columns:
        col = obs[name]
        if str(name) not in used or not isinstance(col.dtype, pd.CategoricalDtype):
            continue
        codes = col.cat.codes.to_numpy()
        counts = np.bincount(codes[codes >= 0], minlength=len(col.cat.categories))
        if np.any(counts == 0):
            dropped[name] = [str(v) for v in col.cat.categories[counts == 0]]
    if not dropped:
        return obs
    out = obs.copy()
    for name, levels in dropped.items():
        out[name] = obs[name].cat.remove_unused_categories()
        kept = [str(v) for v in out[name].cat.categories]
        _warn(
            f"`obs` column {str(name)!r} used in `{which}` has categories that no observation "
            f"has: {levels}; they were dropped before building the design (an empty level "
            f"would give an all-zero column), leaving the levels {kept}. To silence this, "
            f"drop them yourself: obs[{str(name)!r}] = "
            f"obs[{str(name)!r}].cat.remove_unused_categories().",
            ("unused_levels", str(name)),
        )
    return out


def _model_matrix(parsed: Formula, obs: pd.DataFrame, which: str, shown: str) -> Any:
    unknown = _unknown_variables(parsed, obs)
    if unknown:
        have = [str(c) for c in obs.columns]
        where = (
            f"`obs` has columns {have}"
            if have
            else "no `obs` was given (pass `obs=` or an AnnData, whose .obs is used)"
        )
        # bg.pseudobulk records the columns it dropped and why (pseudobulk.DROPPED_ATTR).
        why = obs.attrs.get("batchglm_dropped_columns", {})
        where += "".join(f"; {name!r}: {why[name]}" for name in unknown if name in why)
        raise ValueError(
            f"`{which}` formula {shown!r} uses variables that are not columns of `obs`: "
            f"{unknown}; {where}."
        )
    try:
        # na_action="raise": formulaic would otherwise drop rows silently, and the design
        # would no longer line up with the data.
        return model_matrix(parsed, obs, na_action="raise")
    except (FormulaicError, ValueError, TypeError, NameError) as err:
        raise ValueError(
            f"`{which}` formula {shown!r} could not be evaluated on `obs`: {one_line(str(err))}"
        ) from None


def evaluate_formula(
    formula: str | Formula,
    obs: pd.DataFrame,
    which: str,
    text: str | None = None,
    warn: bool = True,
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
    warn : bool
        Warn about integer-coded group labels used as numbers and single-level factors
        (see :func:`check_encoding`).

    Returns
    -------
    pandas.DataFrame
        ``(n_obs, p)`` float64 design with formulaic's column names, indexed like ``obs``.

    Raises
    ------
    ValueError
        For variables missing from ``obs`` (all of them named), missing values, or any
        other evaluation error of formulaic.

    Warns
    -----
    AnnotationWarning
        See :func:`check_encoding` (only with ``warn=True``).
    """
    shown = text if text is not None else str(formula)
    parsed = parse_formula(formula, which) if isinstance(formula, str) else formula
    mm = _model_matrix(parsed, obs, which, shown)
    if warn:
        check_encoding(mm.model_spec, obs, which, shown)
    frame = pd.DataFrame(
        np.asarray(mm, dtype=np.float64), index=obs.index, columns=[str(c) for c in mm.columns]
    )
    return frame


def _is_categorical_kind(state: Any) -> bool:
    kind = state[0] if isinstance(state, tuple) and state else None
    return str(getattr(kind, "value", kind)) == "categorical"


def integer_codes(values: pd.Series) -> list[float] | None:
    """Return the distinct values of a column that looks like integer-coded group labels.

    Parameters
    ----------
    values : pandas.Series
        An ``obs`` column, ``(n_obs,)``.

    Returns
    -------
    list of float or None
        The sorted distinct values when the column is numeric (not boolean), every value is
        a finite integer, and it has between :data:`MIN_INTEGER_CODES` and
        :data:`MAX_INTEGER_CODES` distinct values, fewer than observations (so values
        repeat, as group labels do); otherwise None.
    """
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x != np.round(x)):
        return None
    distinct = np.unique(x)
    if not MIN_INTEGER_CODES <= distinct.size <= min(MAX_INTEGER_CODES, x.size - 1):
        return None
    return [float(v) for v in distinct]


def check_encoding(spec: Any, obs: pd.DataFrame, which: str, shown: str) -> None:
    """Warn about ``obs`` columns that formulaic encoded in a way that is probably a mistake.

    Parameters
    ----------
    spec : formulaic.ModelSpec
        The model spec of the evaluated formula (``model_matrix(...).model_spec``).
    obs : pandas.DataFrame
        The annotations it was evaluated on, ``(n_obs, n_columns)``.
    which : str
        Argument name for messages, e.g. ``"design_loc"``.
    shown : str
        The formula as the user wrote it.

    Warns
    -----
    AnnotationWarning
        * For a numeric column entering the formula plainly (not inside ``C()`` or another
          transform) whose values look like integer group codes (:func:`integer_codes`):
          it is fitted as one slope, not as groups. DESeq2 prints a similar message for
          integer-valued numeric design variables.
        * For a factor with a single level whose term(s) produce no design column: the
          factor silently drops out of the model.
    """
    columns = {str(c): c for c in obs.columns}
    states = spec.encoder_state
    for factor in sorted(spec.factors, key=str):
        expr = str(factor.expr)
        method = str(getattr(factor.eval_method, "value", factor.eval_method))
        state = states.get(expr)
        if method == "lookup" and expr in columns and not _is_categorical_kind(state):
            codes = integer_codes(obs[columns[expr]])
            if codes is not None:
                shown_codes = [int(v) for v in codes]
                _warn(
                    f"`obs` column {expr!r} in `{which}` ({shown!r}) has {len(codes)} distinct "
                    f"integer values {shown_codes} and enters the formula as a number: one "
                    "slope, a fold change growing steadily from one value to the next. If it "
                    "labels groups (batches, donors, conditions), make it a factor: write "
                    f"C({_quoted(expr)}) in the formula or convert the column with "
                    f"obs[{expr!r}] = obs[{expr!r}].astype('category'). If a slope is meant "
                    "(dose, time), silence this with warnings.filterwarnings('ignore', "
                    "category=batchglm.formula.AnnotationWarning).",
                    ("integer_codes", expr),
                )
        if _is_categorical_kind(state) and len(state[1].get("categories", ())) == 1:
            lost = [
                str(term)
                for term, factors in spec.term_factors.items()
                if factor in factors and len(spec.term_indices.get(term, [])) == 0
            ]
            if lost:
                level = state[1]["categories"][0]
                label = f"`obs` column {expr!r}" if method == "lookup" else f"factor {expr!r}"
                _warn(
                    f"{label} in `{which}` ({shown!r}) has a single level ({str(level)!r}) "
                    f"among the observations, so it cannot tell any of them apart: its "
                    f"term(s) {lost} drop out and the design has no coefficient for it. "
                    "Remove it from the formula, or check that `obs` was not subset to one "
                    "level.",
                    ("single_level", expr),
                )


def numeric_uses(formula: str, obs: pd.DataFrame, column: str) -> list[str]:
    """Factors of a formula in which an ``obs`` column enters as a number, not as levels.

    Parameters
    ----------
    formula : str
        The formula.
    obs : pandas.DataFrame
        The annotations it is evaluated on.
    column : str
        A column of ``obs``.

    Returns
    -------
    list of str
        The factor expressions (``"group"``, ``"np.log(dose)"``) that use ``column`` and that
        formulaic encodes numerically (one coefficient per unit, a slope); empty when the
        column enters only as a factor (a categorical column, or a numeric one inside
        ``C()``).

    Raises
    ------
    ValueError
        When the formula cannot be evaluated on ``obs``.
    """
    parsed = parse_formula(formula, "design_loc")
    spec = _model_matrix(parsed, obs, "design_loc", formula).model_spec
    states = spec.encoder_state
    return sorted(
        str(factor.expr)
        for factor, names in spec.factor_variables.items()
        if column in {str(n) for n in names}
        and not _is_categorical_kind(states.get(str(factor.expr)))
    )


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
