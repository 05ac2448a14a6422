"""Constraints given by name instead of by matrix rows.

Two forms, both ending as the same reparametrisation matrix ``C`` (``theta = C @ theta_free``)
that :mod:`batchglm.constraints` builds from matrices, so fits are identical:

* **Nested factors**, a dict ``{"replicate": "condition"}`` (the original batchglm's
  ``constraint_matrix_from_dict`` vocabulary). The levels of ``replicate`` are coded with one
  indicator column per level, without a reference level, and the coefficients of the levels
  within each level of ``condition`` sum to zero. The grouping ``"1"`` puts all levels into
  one zero-sum set. This needs a formula design: the formula's ``replicate`` term is replaced
  by the full indicator columns ``replicate[r1], replicate[r2], ...``, appended after the
  formula's other columns. Several entries (``{"bio": "condition", "tech": "pair"}``) may
  be given; each constrained factor must be a main-effect term of the formula.
* **Equations** over coefficient names, a string or a list of strings such as
  ``["replicate[T.r2] + replicate[T.r3] = 0"]``, parsed by formulaic's linear-constraint
  parser. Right-hand sides must be zero: constraints are a reparametrisation, not offsets.
  With a formula design, equations may also name *every* level of a factor, as one writes
  a sum-to-zero over replicates: ``["replicate[r1] + replicate[r2] = 0", ...]`` with
  ``"~ 1 + condition + replicate"``. Treatment coding has no column for the reference
  level ``r1``, so a factor whose levels the equations name as ``factor[level]`` is coded
  like the nested-factor dict codes it: its term is replaced by one indicator column per
  level, appended after the formula's other columns. The fit is then the same as with the
  dict, and identifiability is checked after the constraints as for any design.

From the constraint rows ``R theta = 0``, ``C`` is the basis of the null space of ``R`` read
off its reduced row echelon form: each constraint solves for its leftmost parameter (the
dependent one) and the others stay free, as in the seed's encoding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from formulaic import Formula
from formulaic.errors import FormulaicError
from formulaic.utils.constraints import LinearConstraintParser, LinearConstraints
from numpy.typing import NDArray

from batchglm.formula import (
    data_variables,
    evaluate_formula,
    nested_pairs,
    one_line,
    parse_formula,
)

Array = NDArray[np.float64]

#: The grouping value that puts all levels of a factor into a single zero-sum set.
ALL_LEVELS = "1"


def is_named(constraints: object) -> bool:
    """Whether constraints are given by name (dict or equation strings), not as a matrix.

    Parameters
    ----------
    constraints : object
        User constraints.

    Returns
    -------
    bool
        True for a mapping, a string, or a non-empty list/tuple of strings.
    """
    if isinstance(constraints, Mapping | str):
        return True
    return (
        isinstance(constraints, list | tuple)
        and len(constraints) > 0
        and all(isinstance(c, str) for c in constraints)
    )


def _factor(obs: pd.DataFrame, name: str, which: str, role: str) -> pd.Series:
    if name not in obs.columns:
        raise ValueError(
            f"`{which}` names {role} {name!r}, which is not a column of `obs`; `obs` has "
            f"columns {[str(c) for c in obs.columns]}."
        )
    col = obs[name]
    if col.isna().any():
        raise ValueError(
            f"`{which}`: the {role} {name!r} has {int(col.isna().sum())} missing values; "
            "every observation needs a level."
        )
    cat = col if isinstance(col.dtype, pd.CategoricalDtype) else col.astype("category")
    return cat.cat.remove_unused_categories()


def term_is_factor(term: str, key: str) -> bool:
    """Whether a formula term is the factor ``key``, written plainly or as ``C(key, ...)``.

    Parameters
    ----------
    term : str
        A term of a parsed formula.
    key : str
        An ``obs`` column name.

    Returns
    -------
    bool
        True for ``key``, ``C(key)``, ``C(`key`)`` or ``C(key, ...)``.
    """
    return term == key or re.fullmatch(rf"C\(\s*`?{re.escape(key)}`?\s*(,.*)?\)", term) is not None


def _level_coded(
    formula: str, obs: pd.DataFrame, keys: Sequence[str], which: str
) -> list[pd.DataFrame]:
    # The formula without the terms of `keys`, then one indicator block per key with a
    # column `key[level]` for every level (no reference level dropped).
    parsed = parse_formula(formula, f"design_{which}")
    kept = [t for t in parsed if not any(term_is_factor(str(t), key) for key in keys)]
    blocks = [evaluate_formula(Formula(kept), obs, f"design_{which}", text=formula)]
    for key in keys:
        levels = _factor(obs, key, f"constraints_{which}", "factor")
        codes = levels.cat.codes.to_numpy()
        n_lvl = len(levels.cat.categories)
        blocks.append(
            pd.DataFrame(
                (codes[:, None] == np.arange(n_lvl)).astype(np.float64),
                index=obs.index,
                columns=[f"{key}[{lvl}]" for lvl in levels.cat.categories],
            )
        )
    return blocks


def nested_design(
    formula: str,
    obs: pd.DataFrame,
    spec: Mapping[str, str],
    which: str,
) -> tuple[pd.DataFrame, Array]:
    """Design and constraint matrix for nested-factor constraints ``{factor: grouping}``.

    Parameters
    ----------
    formula : str
        Formula of the design, containing each constrained factor as a main-effect term.
    obs : pandas.DataFrame
        Observation annotations.
    spec : mapping of str to str
        ``{factor: grouping}``: the levels of ``factor`` sum to zero within each level of
        ``grouping`` (``"1"``: all levels together).
    which : str
        ``"loc"`` or ``"scale"``, for messages.

    Returns
    -------
    design : pandas.DataFrame
        The formula's other columns followed by one indicator column per level of each
        constrained factor, named ``factor[level]``.
    C : ndarray
        Reparametrisation matrix ``(p, p_free)``.

    Raises
    ------
    ValueError
        For an empty or non-string dict, a factor that is no term of the formula, a
        grouping that is no column of ``obs``, missing levels, or a factor not nested in
        its grouping.
    """
    arg = f"constraints_{which}"
    if len(spec) == 0:
        raise ValueError(f"`{arg}` is an empty dict; give at least one factor: grouping pair.")
    for key, group in spec.items():
        if not isinstance(key, str) or not isinstance(group, str):
            raise ValueError(
                f"`{arg}` must map factor names to grouping names (strings), like "
                f"{{'replicate': 'condition'}}, but it has the entry {key!r}: {group!r}."
            )
    names = [str(t) for t in parse_formula(formula, f"design_{which}")]
    missing = [key for key in spec if not any(term_is_factor(n, key) for n in names)]
    if missing:
        raise ValueError(
            f"`{arg}` constrains {missing}, but the formula {formula!r} of `design_{which}` "
            f"has no such term; its terms are {names}. Add the factor to the formula."
        )
    blocks = _level_coded(formula, obs, list(spec), which)
    rows: list[Array] = []
    offset = blocks[0].shape[1]
    for (key, group), block in zip(spec.items(), blocks[1:], strict=True):
        n_lvl = block.shape[1]
        if group == ALL_LEVELS:
            members = [np.arange(n_lvl)]
        else:
            levels = _factor(obs, key, arg, "factor")
            outer = _factor(obs, group, arg, "grouping")
            members = _nested_members(levels, outer, key, group, arg)
        for idx in members:
            row = np.zeros(n_lvl)
            row[idx] = 1.0
            rows.append(np.concatenate([np.zeros(offset), row]))
        offset += n_lvl
    design = pd.concat(blocks, axis=1)
    dup = design.columns[design.columns.duplicated()].tolist()
    if dup:
        raise ValueError(
            f"`{arg}` adds columns {dup} that the rest of the formula already has; "
            "name each constrained factor once."
        )
    r = np.array([np.pad(row, (0, offset - row.size)) for row in rows])
    return design, null_space(r, [str(c) for c in design.columns], arg)


def _nested_members(
    inner: pd.Series, outer: pd.Series, key: str, group: str, arg: str
) -> list[NDArray[np.intp]]:
    table = pd.crosstab(inner.to_numpy(), outer.to_numpy())
    table = table.reindex(index=inner.cat.categories, columns=outer.cat.categories, fill_value=0)
    spread = (table.to_numpy() > 0).sum(axis=1)
    if np.any(spread > 1):
        lvl = table.index[int(np.argmax(spread > 1))]
        where = table.columns[table.loc[lvl].to_numpy() > 0].tolist()
        raise ValueError(
            f"`{arg}`: {key!r} is not nested in {group!r}: level {lvl!r} of {key!r} occurs "
            f"in levels {[str(w) for w in where]} of {group!r}. Each level of the constrained "
            "factor must lie within one level of its grouping factor."
        )
    present = table.to_numpy() > 0
    return [np.flatnonzero(present[:, j]) for j in range(present.shape[1]) if present[:, j].any()]


def _parse_error(which: str, equations: list[str], err: Exception) -> ValueError:
    return ValueError(
        f"`{which}` could not be parsed as linear constraints ({equations!r}): {one_line(str(err))}"
    )


def equation_names(spec: str | Sequence[str], which: str) -> list[str]:
    """Coefficient names that linear-constraint equations use, in order of appearance.

    Parameters
    ----------
    spec : str or sequence of str
        Equations such as ``["replicate[r1] + replicate[r2] = 0"]``.
    which : str
        Argument name for messages, e.g. ``"constraints_loc"``.

    Returns
    -------
    list of str
        The distinct names (backticks removed), ordered by where they first occur.

    Raises
    ------
    ValueError
        When the equations cannot be parsed (formulaic's linear-constraint syntax).
    """
    equations = [spec] if isinstance(spec, str) else list(spec)
    text = ", ".join(equations)
    try:
        terms = LinearConstraintParser(variable_names=[]).get_terms(text)
    except (FormulaicError, ValueError) as err:
        raise _parse_error(which, equations, err) from None
    groups = terms if isinstance(terms, tuple) else ([] if terms is None else (terms,))
    found = {str(f.factor.expr) for group in groups for f in group if f.factor != 1}
    return sorted(found, key=lambda name: (text.find(name), name))


def equation_design(
    formula: str,
    obs: pd.DataFrame,
    design: pd.DataFrame,
    spec: str | Sequence[str],
    which: str,
) -> pd.DataFrame:
    """Return the formula design for equations that name every level of a factor.

    A sum-to-zero over replicates is naturally written over all levels,
    ``"replicate[r1] + replicate[r2] = 0"``, but formulaic's treatment coding of
    ``"~ 1 + condition + replicate"`` drops the reference level (its columns are
    ``replicate[T.r2]``, ...). When the equations name ``factor[level]`` coefficients the
    formula lacks, and ``factor`` is a column of ``obs`` and a main-effect term of the
    formula, the term is coded with one indicator column per level, named
    ``factor[level]`` and appended after the formula's other columns, exactly as the
    nested-factor dict ``{"replicate": "condition"}`` codes it (original batchglm's
    full-rank replicate coding). Identifiability is checked afterwards, on the constrained
    design, by :func:`batchglm.design.check_identifiable`.

    Parameters
    ----------
    formula : str
        The design's formula.
    obs : pandas.DataFrame
        Observation annotations it is evaluated on, ``(n_obs, ...)``.
    design : pandas.DataFrame
        The formula's design as formulaic codes it, ``(n_obs, p)``.
    spec : str or sequence of str
        The equations.
    which : str
        ``"loc"`` or ``"scale"``, for messages.

    Returns
    -------
    pandas.DataFrame
        ``design`` itself when the equations only use its columns (or names that are no
        level of any factor, which :func:`equations_matrix` reports); otherwise the design
        with the named factors coded by every level, ``(n_obs, p')``.

    Raises
    ------
    ValueError
        When a named factor is not a main-effect term of the formula, a named level does
        not occur, a factor is named as ``C(factor)[level]``, or the equations mix the
        treatment-coded names of a factor with its every-level names.
    """
    arg = f"constraints_{which}"
    used = equation_names(spec, arg)
    have = {str(c) for c in design.columns}
    columns = [str(c) for c in obs.columns]
    named: dict[str, list[str]] = {}
    for name in used:
        match = re.fullmatch(r"(.+)\[(.*)\]", name)
        if name in have or match is None:
            continue
        prefix, level = match.group(1), match.group(2)
        key = next((c for c in columns if term_is_factor(prefix, c)), None)
        if key is None:
            continue
        if prefix != key:
            raise ValueError(
                f"`{arg}` uses {name!r}; a level of {key!r} is named with the bare factor "
                f"name, so write {key}[{level}]."
            )
        named.setdefault(key, []).append(level)
    if not named:
        return design
    terms = [str(t) for t in parse_formula(formula, f"design_{which}")]
    for key, levels in named.items():
        if not any(term_is_factor(t, key) for t in terms):
            raise ValueError(
                f"`{arg}` uses {key}[{levels[0]}], but {key!r} is not a term of the formula "
                f"{formula!r} of `design_{which}` (its terms are {terms}); add {key!r} to "
                "the formula."
            )
    blocks = _level_coded(formula, obs, list(named), which)
    for (key, levels), block in zip(named.items(), blocks[1:], strict=True):
        known = [str(c)[len(key) + 1 : -1] for c in block.columns]
        bad = [lvl for lvl in levels if lvl not in known]
        if bad:
            raise ValueError(
                f"`{arg}` uses {key}[{bad[0]}], but no observation has level {bad[0]!r} "
                f"of {key!r}; its levels are {known}."
            )
    coded = pd.concat(blocks, axis=1)
    stale = [name for name in used if name in have and name not in coded.columns]
    if stale:
        key = next((k for k in named if stale[0].startswith(f"{k}[")), next(iter(named)))
        raise ValueError(
            f"`{arg}` uses {stale[0]!r} together with {key}[{named[key][0]}]; naming a "
            f"level codes {key!r} with every level ({key}[<level>] for each of its levels), "
            f"so write every {key!r} coefficient as {key}[<level>]."
        )
    dup = coded.columns[coded.columns.duplicated()].tolist()
    if dup:
        raise ValueError(
            f"`{arg}` codes {list(named)} by every level, which adds columns {dup} that the "
            "rest of the formula already has; rename those columns."
        )
    return coded


def equations_matrix(spec: str | Sequence[str], names: Sequence[str], which: str) -> Array:
    """Constraint matrix ``C`` from linear equations over coefficient names.

    Parameters
    ----------
    spec : str or sequence of str
        E.g. ``["replicate[T.r2] + replicate[T.r3] = 0"]``; names with spaces or operators
        may be quoted in backticks. Right-hand sides must be zero.
    names : sequence of str
        Coefficient (design column) names.
    which : str
        Argument name for messages, e.g. ``"constraints_loc"``.

    Returns
    -------
    ndarray
        ``C`` of shape ``(p, p_free)``.

    Raises
    ------
    ValueError
        For a name that is no coefficient, equations that cannot be parsed, a non-zero
        right-hand side, or constraints that fix every parameter.
    """
    equations = [spec] if isinstance(spec, str) else list(spec)
    try:
        lc = LinearConstraints.from_spec(equations, variable_names=list(names))
    except KeyError as err:
        raise ValueError(
            f"`{which}` uses the name {err.args[0]!r}, which is not a coefficient of the "
            f"design; its coefficients are {list(names)}."
        ) from None
    except (FormulaicError, ValueError) as err:
        raise _parse_error(which, equations, err) from None
    r = np.asarray(lc.constraint_matrix, dtype=np.float64)
    rhs = np.asarray(lc.constraint_values, dtype=np.float64)
    if np.any(rhs != 0):
        k = int(np.argmax(rhs != 0))
        raise ValueError(
            f"`{which}` constraints must have a zero right-hand side (they reparametrise, "
            f"they do not fix values), but constraint {k} of {equations!r} has right-hand "
            f"side {float(rhs[k])!r}."
        )
    return null_space(r, list(names), which)


def null_space(r: Array, names: Sequence[str], which: str) -> Array:
    """Basis ``C`` of ``{theta : R theta = 0}`` from the reduced row echelon form of ``R``.

    Parameters
    ----------
    r : ndarray
        Constraint rows ``(m, p)``.
    names : sequence of str
        Coefficient names, for messages.
    which : str
        Argument name for messages.

    Returns
    -------
    ndarray
        ``C`` of shape ``(p, p - rank(R))``: identity on the free parameters, and each
        dependent (pivot) parameter expressed through them. Redundant rows are dropped.

    Raises
    ------
    ValueError
        When the constraints fix every parameter at zero.
    """
    a = np.array(r, dtype=np.float64, copy=True)
    m, p = a.shape
    tol = max(m, p) * np.finfo(np.float64).eps * max(1.0, float(np.abs(a).max(initial=0.0)))
    pivots: list[int] = []
    row = 0
    for col in range(p):
        if row == m:
            break
        best = row + int(np.argmax(np.abs(a[row:, col])))
        if abs(a[best, col]) <= tol:
            continue
        a[[row, best]] = a[[best, row]]
        a[row] /= a[row, col]
        others = np.arange(m) != row
        a[others] -= np.outer(a[others, col], a[row])
        pivots.append(col)
        row += 1
    free = [j for j in range(p) if j not in pivots]
    if not free:
        raise ValueError(
            f"`{which}` leaves no free parameter: all of {list(names)} are fixed at zero."
        )
    c = np.zeros((p, len(free)))
    c[free, np.arange(len(free))] = 1.0
    c[pivots, :] = -a[: len(pivots)][:, free]
    c[np.abs(c) <= tol] = 0.0
    return c


def suggestion(formula: str, obs: pd.DataFrame, involved: Sequence[str], which: str) -> str:
    """Hint for a confounded formula design: name nested factors in a dict constraint.

    A dict constraint ``{a: b}`` is suggested only when every level of ``b`` holds at
    least two levels of ``a`` (replicates or donors nested in conditions). A level of ``a``
    alone in its level of ``b`` (a condition that coincides with a batch) cannot be
    separated from it by any constraint: nesting ``a`` in ``b`` would only pin that level's
    effect to zero by convention, and contrasts of ``a`` across levels of ``b`` would report
    the convention, not the data. Then the hint names the coinciding levels and says to
    drop a factor instead.

    Parameters
    ----------
    formula : str
        The design's formula.
    obs : pandas.DataFrame
        The annotations it was evaluated on.
    involved : sequence of str
        Names of the confounded columns.
    which : str
        ``"loc"`` or ``"scale"``.

    Returns
    -------
    str
        One sentence: the suggested ``constraints_{which}={factor: grouping}`` with the
        formula's confounded factors and, for each, a factor it is nested in (preferring
        the formula's own factors over other ``obs`` columns); or the coinciding levels.
    """

    def mentioned(factor: str) -> bool:
        pat = re.compile(rf"(^|[:(`]){re.escape(factor)}[`)\[]")
        return any(pat.search(name) for name in involved)

    used = data_variables(formula, obs)
    inner = [v for v in used if mentioned(v)]
    outer = used + [str(c) for c in obs.columns if str(c) not in used]
    picks: dict[str, str] = {}
    aliased: list[str] = []
    for a, b in nested_pairs(obs, inner, outer):
        both = obs[[a, b]].dropna().astype(str)
        per_group = both.groupby(b)[a].nunique()
        if (per_group >= 2).all():
            # One grouping per factor is enough for a hint; the preferred one comes first.
            picks.setdefault(a, b)
        elif b in used:
            lone = str(per_group.index[int(np.argmin(per_group.to_numpy()))])
            level = str(both.loc[both[b] == lone, a].iloc[0])
            aliased.append(f"level {level!r} of {a!r} occurs only in level {lone!r} of {b!r}")
    if aliased and not picks:
        return (
            f"No constraint can separate these factors: {'; '.join(aliased)}, so the data "
            "cannot tell their effects apart. Drop one of them from the formula (a condition "
            "confounded with a batch cannot be tested against it)."
        )
    example = (
        "{" + ", ".join(f"{k!r}: {v!r}" for k, v in picks.items()) + "}"
        if picks
        else "{'<nested factor>': '<grouping factor>'}"
    )
    return (
        f"For replicates or donors nested in conditions, name them instead: "
        f"`constraints_{which}={example}` codes every level and makes them sum to zero "
        "within each group (contrasts between levels of the nested factor in different "
        "groups then stay untestable)."
    )
