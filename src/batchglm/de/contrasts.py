"""Contrasts written as users write them: expressions over coefficient names, and ``cond``.

Two forms, both turned into rows of weights over the location coefficients:

* a string such as ``"condition[T.stim] - condition[T.ctrl]"``, ``"0.5 * (b + c) - a"`` or
  ``"b = c"`` over the coefficient names of the tested model; several comma-separated
  expressions give a joint test (one row each);
* ``cond(condition="stim") - cond(condition="ctrl")``: design rows of hypothetical
  observations with the given variable values, for fits from a formula (the idea of
  formulaic-contrasts and of glmGamPoi's ``cond()``).

The parser is a small recursive-descent one that only knows numbers, coefficient names,
``+ - * /``, parentheses, ``=`` and ``,``: nothing is evaluated as Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.design import Design, equilibrated_null_space
from batchglm.formula import evaluate_formula
from batchglm.result import FitResult

Array = NDArray[np.float64]

_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_OPERATORS = "+-*/()=,"


@dataclass(frozen=True)
class Cond:
    """A linear combination of design rows of hypothetical observations.

    Build it with :func:`cond` and combine with ``+``, ``-`` and numbers; pass the result as
    ``contrast=`` to :func:`batchglm.de.wald`, :func:`batchglm.de.ql_f` or
    :func:`batchglm.de.lfc_shrink`.

    Attributes
    ----------
    terms : tuple of (float, tuple of (str, object))
        Weight and variable assignments of each design row.
    """

    terms: tuple[tuple[float, tuple[tuple[str, Any], ...]], ...]

    def __add__(self, other: object) -> Cond:
        if not isinstance(other, Cond):
            return NotImplemented
        return Cond(self.terms + other.terms)

    def __sub__(self, other: object) -> Cond:
        if not isinstance(other, Cond):
            return NotImplemented
        return Cond(self.terms + (-1.0 * other).terms)

    def __neg__(self) -> Cond:
        return -1.0 * self

    def __mul__(self, other: object) -> Cond:
        if isinstance(other, bool) or not isinstance(other, int | float | np.number):
            return NotImplemented
        return Cond(tuple((float(other) * w, a) for w, a in self.terms))

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> Cond:
        if isinstance(other, bool) or not isinstance(other, int | float | np.number):
            return NotImplemented
        return self * (1.0 / float(other))

    def __str__(self) -> str:
        parts = []
        for w, assign in self.terms:
            args = ", ".join(f"{k}={v!r}" for k, v in assign)
            parts.append(f"{w:+g}*cond({args})")
        return " ".join(parts)


def cond(**values: Any) -> Cond:
    """Design row of a hypothetical observation with the given variable values.

    Differences of such rows are contrasts: ``cond(condition="stim") -
    cond(condition="ctrl")`` compares two levels, ``cond(condition="stim", batch="b2") -
    cond(condition="ctrl", batch="b2")`` fixes another variable, and ``cond(dose=2) -
    cond(dose=0)`` is twice the slope of a numeric ``dose``. The weights are computed
    exactly from the fit's formula (as formulaic-contrasts and glmGamPoi's ``cond()`` do).

    Parameters
    ----------
    **values
        Column of the fit's ``obs`` = value (a level of a categorical column, or a number
        for a numeric one).

    Returns
    -------
    Cond
        Combine with ``+``, ``-`` and numbers.

    Raises
    ------
    ValueError
        If no variable is given.
    """
    if not values:
        raise ValueError("`cond()` needs at least one variable, e.g. cond(condition='stim').")
    return Cond(((1.0, tuple(values.items())),))


def expression_rows(
    contrast: str | Cond, design: Design, model: str, res: FitResult
) -> tuple[Array, list[str]]:
    """Weights over ``design``'s coefficients for a string expression or a :class:`Cond`.

    Parameters
    ----------
    contrast : str or Cond
        ``"b - a"``-style expression(s) over coefficient names (comma-separated for a
        joint test), or a combination of :func:`cond` rows.
    design : Design
        The tested model's design (names and, for ``Cond``, formula and ``obs``).
    model : str
        ``"loc"`` or ``"scale"``, for messages.
    res : FitResult
        The fit.

    Returns
    -------
    lmat : ndarray
        ``(n_tests, p)`` weights.
    labels : list of str
        One description per row.

    Raises
    ------
    ValueError
        For an unknown coefficient name, a syntax error, a nonlinear or constant
        expression, or (``Cond``) a fit without a formula, an unknown variable or level,
        or a combination that depends on variables it does not fix.
    """
    if isinstance(contrast, Cond):
        return cond_rows(contrast, design, model, res)
    names = list(design.names)
    parts = _split_top(contrast)
    rows = [parse_expression(part, names, model) for part in parts]
    return np.vstack(rows), [part.strip() for part in parts]


def _split_top(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    if any(not p.strip() for p in parts):
        raise ValueError(f"`contrast` {text!r} has an empty expression; write e.g. 'b - a'.")
    return parts


class _Parser:
    """Recursive descent over ``expr := term (+|- term)*``, ``term := unary (*|/ unary)*``.

    Values are pairs ``(vector over coefficients, constant)``.
    """

    def __init__(self, text: str, names: list[str], model: str) -> None:
        self.text = text
        self.names = sorted(names, key=len, reverse=True)
        self.index = {n: j for j, n in enumerate(names)}
        self.p = len(names)
        self.model = model
        self.pos = 0

    def error(self, what: str) -> ValueError:
        return ValueError(
            f"`contrast` {self.text!r}: {what} at position {self.pos}; write an expression "
            "over coefficient names such as 'b - a' or '0.5 * (b + c) - a'."
        )

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expr(self) -> tuple[Array, float]:
        vec, const = self.term()
        while self.peek() in ("+", "-") and self.peek():
            sign = 1.0 if self.text[self.pos] == "+" else -1.0
            self.pos += 1
            v2, c2 = self.term()
            vec, const = vec + sign * v2, const + sign * c2
        return vec, const

    def term(self) -> tuple[Array, float]:
        vec, const = self.unary()
        while self.peek() in ("*", "/") and self.peek():
            op = self.text[self.pos]
            self.pos += 1
            v2, c2 = self.unary()
            if op == "*":
                if np.any(vec) and np.any(v2):
                    raise self.error("a product of two coefficients is not linear")
                if np.any(vec):
                    vec, const = vec * c2, const * c2
                else:
                    vec, const = v2 * const, c2 * const
            else:
                if np.any(v2):
                    raise self.error("division by a coefficient is not linear")
                if c2 == 0:
                    raise self.error("division by zero")
                vec, const = vec / c2, const / c2
        return vec, const

    def unary(self) -> tuple[Array, float]:
        ch = self.peek()
        if ch in ("+", "-") and ch:
            self.pos += 1
            vec, const = self.unary()
            return (vec, const) if ch == "+" else (-vec, -const)
        if ch == "(":
            self.pos += 1
            out = self.expr()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.pos += 1
            return out
        return self.atom()

    def atom(self) -> tuple[Array, float]:
        self.skip()
        rest = self.text[self.pos :]
        if not rest:
            raise self.error("unexpected end of the expression")
        if rest[0] == "`":
            end = rest.find("`", 1)
            if end < 0:
                raise self.error("missing closing '`'")
            return self.name(rest[1:end], end + 1)
        for name in self.names:
            if rest.startswith(name) and self._boundary(len(name)):
                return self.name(name, len(name))
        m = _NUMBER.match(rest)
        if m and self._boundary(m.end()):
            self.pos += m.end()
            return np.zeros(self.p), float(m.group(0))
        if rest[0] in _OPERATORS:
            raise self.error(f"unexpected {rest[0]!r}")
        token = self._token(rest)
        raise ValueError(
            f"`contrast` {self.text!r} names {token!r}, which is not a coefficient of the "
            f"{self.model} model; its coefficients are {list(self.index)} (quote names with "
            "spaces or operators in backticks)."
        )

    def _boundary(self, length: int) -> bool:
        nxt = self.pos + length
        return nxt >= len(self.text) or self.text[nxt].isspace() or self.text[nxt] in _OPERATORS

    @staticmethod
    def _token(rest: str) -> str:
        depth = 0
        for i, ch in enumerate(rest):
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            elif depth <= 0 and (ch.isspace() or ch in _OPERATORS):
                return rest[:i]
        return rest

    def name(self, name: str, length: int) -> tuple[Array, float]:
        if name not in self.index:
            raise ValueError(
                f"`contrast` {self.text!r} names {name!r}, which is not a coefficient of the "
                f"{self.model} model; its coefficients are {list(self.index)}."
            )
        self.pos += length
        vec = np.zeros(self.p)
        vec[self.index[name]] = 1.0
        return vec, 0.0


def parse_expression(text: str, names: list[str], model: str = "loc") -> Array:
    """Weights of one linear expression (or equation) over coefficient names.

    Parameters
    ----------
    text : str
        E.g. ``"condition[T.stim] - condition[T.ctrl]"``, ``"2*b - (a + c)"`` or
        ``"b = c"`` (read as ``b - c``). Names are matched longest first; names with spaces
        or operator characters that clash can be quoted in backticks.
    names : list of str
        The coefficient names, in order.
    model : str
        Model name for messages.

    Returns
    -------
    ndarray
        ``(p,)`` weights.

    Raises
    ------
    ValueError
        For unknown names, syntax errors, nonlinear terms, a constant term (or a nonzero
        right-hand side), or an expression with all weights zero.
    """
    parser = _Parser(text, names, model)
    vec, const = parser.expr()
    if parser.peek() == "=":
        parser.pos += 1
        v2, c2 = parser.expr()
        vec, const = vec - v2, const - c2
    if parser.peek():
        raise parser.error(f"unexpected {parser.peek()!r}")
    if const != 0:
        raise ValueError(
            f"`contrast` {text!r} has a constant term {const:g}; contrasts test a "
            "combination against 0 (for a minimum effect size use `lfc_threshold=`)."
        )
    if not np.any(vec):
        raise ValueError(f"`contrast` {text!r} gives all-zero weights; nothing is tested.")
    return vec


def cond_rows(
    contrast: Cond, design: Design, model: str, res: FitResult
) -> tuple[Array, list[str]]:
    """Weights over the coefficients of a :class:`Cond` combination.

    Parameters
    ----------
    contrast : Cond
        The combination.
    design : Design
        The tested design; must come from a formula on an ``obs`` table.
    model : str
        ``"loc"`` or ``"scale"``, for messages.
    res : FitResult
        The fit (for messages).

    Returns
    -------
    lmat : ndarray
        ``(1, p)`` weights.
    labels : list of str
        One description.

    Raises
    ------
    ValueError
        See :func:`expression_rows`.

    Notes
    -----
    Each observation's row is evaluated once per ``cond`` term with the named variables
    set (the others as observed) and combined with the terms' weights, in one formula
    evaluation together with the observed rows, so that factor levels and hence columns are
    those of the fit. The combination must be the same for every observation: otherwise it
    depends on a variable it leaves free (an interaction), which is an error.
    """
    formula = getattr(design, "formula", None)
    obs = getattr(design, "obs", None)
    label = str(contrast)
    if formula is None or not isinstance(obs, pd.DataFrame):
        raise ValueError(
            f"`contrast` {label} uses cond(), which needs a fit from a formula, e.g. "
            f"bg.fit(data, '~ condition', obs=obs); this {model} design is a matrix with "
            f"coefficients {design.names}; pass weights or a string expression instead."
        )
    base = obs.reset_index(drop=True)
    n = len(base)
    frames = [base]
    for _, assign in contrast.terms:
        alt = base.copy()
        for var, value in assign:
            alt[var] = _column_value(base, var, value, label)
        frames.append(alt)
    stacked = pd.concat(frames, ignore_index=True)
    try:
        rows = evaluate_formula(str(formula), stacked, f"design_{model}", warn=False)
    except ValueError as err:
        raise ValueError(
            f"the design rows of `contrast` {label} could not be built from the formula "
            f"{str(formula)!r} ({err})."
        ) from None
    cols = [str(c) for c in rows.columns]
    if cols != list(design.names):
        raise ValueError(
            f"the formula {str(formula)!r} gives columns {cols} but the fit's {model} "
            f"coefficients are {design.names} (named constraints recode them); pass "
            "`contrast=` as weights over the coefficients instead."
        )
    x = rows.to_numpy()
    weights = np.array([w for w, _ in contrast.terms])
    blocks = x[n:].reshape(len(weights), n, -1)
    combo = np.round(np.einsum("t,tnp->np", weights, blocks), 12)
    if np.any(combo != combo[0]):
        free = sorted({c for c in obs.columns if c not in _named(contrast)})
        raise ValueError(
            f"`contrast` {label} depends on variables it does not fix (one of {free} "
            "interacts with the compared ones in the formula); name them in every cond(...)."
        )
    if not np.any(combo[0]):
        raise ValueError(f"`contrast` {label} gives all-zero weights; nothing is tested.")
    return combo[:1], [label]


#: Relative size of the part of a contrast outside the design's row space that counts as
#: non-estimable (on equilibrated columns).
ESTIMABLE_RTOL = 1e-8


def check_estimable(lmat: Array, labels: list[str], design: Design, model: str) -> None:
    """Refuse tested combinations whose value the data do not determine (not estimable).

    A combination ``L theta`` of the coefficients of a design ``X`` is estimable when ``L``
    lies in the row space of ``X`` before constraints (Searle, *Linear Models*, 1971,
    sec. 5.4): only then is its value the same under every constraint that makes the fit
    identifiable. Otherwise the constraint, not the data, decides it: with a condition
    whose level ``ctrl`` coincides with a batch, "stim vs ctrl" under the zero-sum
    constraint ``{"group": "batch"}`` is ``(stim - ifn) / 2``. Designs without constraints
    are full rank (checked by the fit), so everything is estimable there.

    Constraints exist to give meaning to some combinations that are not estimable in this
    strict sense, and those stay testable. The constraint equations ``R theta = 0`` fall
    into sets on disjoint columns (e.g. the replicates of one condition, summing to zero).

    * Sets the combination does not touch are left out first: their constraint defines the
      other effects as averages over those levels (the condition effect as the mean over
      its replicates, as nested-factor constraints declare).
    * A combination that touches one set may use its equations: one replicate's
      coefficient is its deviation from its condition's mean (``p1`` with ``p1 + p2 = 0``
      is ``(p1 - p2) / 2``).
    * A combination that touches several sets must be estimable in the strict sense:
      levels of different sets (replicates of different conditions, a condition in one
      batch against one in another) are compared only through the constraints.

    Combinations that the constraints fix at zero are left to the Wald test's own error.

    Parameters
    ----------
    lmat : ndarray
        ``(n_tests, p)`` tested combinations of the design's coefficients.
    labels : list of str
        One description per row, for the message.
    design : Design
        The tested model's design (unconstrained matrix ``X`` and constraints ``C``).
    model : str
        ``"loc"`` or ``"scale"``, for the message.

    Raises
    ------
    ValueError
        For the first row that is not estimable, naming the confounded columns it depends
        on.
    """
    c = design.constraints
    p = c.shape[0]
    if c.shape == (p, p) and np.allclose(c, np.eye(p)):
        return
    eqs, blocks = _constraint_blocks(c)
    for row, label in zip(lmat, labels, strict=True):
        l_free = row @ c
        if not np.any(np.abs(l_free) > 1e-12 * max(np.abs(row).max(initial=0.0), 1e-300)):
            continue  # fixed at zero by the constraints: the Wald test's own error
        keep = np.ones(p, dtype=bool)
        touched = []
        for cols in blocks:
            if np.any(row[cols] != 0):
                touched.append(cols)
            else:
                keep[cols] = False
        x = design.matrix[:, keep]
        if len(touched) == 1:
            own = eqs[np.any(eqs[:, touched[0]] != 0, axis=1)]
            x = np.vstack([x, own[:, keep]])
        outside, names = _outside_row_space(x, row[keep], design.names, keep)
        if not names:
            continue
        raise ValueError(
            f"{label!r} is not estimable from the {model} design: it depends on the "
            f"confounded columns {names}, whose split only the constraints decide, not the "
            "data. Test a contrast within one level of the factor it is confounded with "
            "(e.g. between conditions of the same batch), or refit without the confounding "
            "factor."
        )


def _outside_row_space(
    x: Array, row: Array, all_names: list[str], keep: NDArray[np.bool_]
) -> tuple[Array, list[str]]:
    """Part of ``row`` outside the row space of ``x`` and the columns it involves."""
    null, scale = equilibrated_null_space(x)
    scaled = row / scale
    outside = null @ (null.T @ scaled)
    if null.shape[1] == 0 or np.linalg.norm(outside) <= ESTIMABLE_RTOL * np.linalg.norm(scaled):
        return outside, []
    names = np.asarray(all_names, dtype=object)[keep]
    weight = np.abs(outside)
    return outside, [str(n) for n in names[weight > 1e-6 * weight.max()]]


def _constraint_blocks(c: Array) -> tuple[Array, list[NDArray[np.intp]]]:
    """Constraint equations ``R`` (``R C = 0``) and the sets of columns they tie together.

    ``R`` is in reduced row echelon form; the sets are the connected components of the
    columns through its rows' non-zero weights (columns in no equation are in no set).
    """
    u, s, _ = np.linalg.svd(c, full_matrices=True)
    rank = int((s > max(c.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 1.0)).sum())
    # Unlike an SVD basis, the echelon form keeps equations on disjoint columns (the
    # zero-sum sets of two conditions) apart.
    eqs = _rref(u[:, rank:].T)
    eqs[np.abs(eqs) <= 1e-10] = 0.0
    support = eqs != 0
    p = c.shape[0]
    parent = list(range(p))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for eq in support:
        cols = np.flatnonzero(eq)
        for j in cols[1:]:
            parent[find(int(j))] = find(int(cols[0]))
    roots: dict[int, list[int]] = {}
    for j in np.flatnonzero(support.any(axis=0)):
        roots.setdefault(find(int(j)), []).append(int(j))
    return eqs, [np.asarray(v, dtype=np.intp) for v in roots.values()]


def _rref(a: Array, tol: float = 1e-10) -> Array:
    """Reduced row echelon form of a small matrix (Gauss-Jordan, partial pivoting)."""
    a = np.array(a, dtype=np.float64)
    n_rows, n_cols = a.shape
    row = 0
    for col in range(n_cols):
        if row == n_rows:
            break
        piv = row + int(np.argmax(np.abs(a[row:, col])))
        if abs(a[piv, col]) <= tol:
            continue
        a[[row, piv]] = a[[piv, row]]
        a[row] /= a[row, col]
        others = np.arange(n_rows) != row
        a[others] -= np.outer(a[others, col], a[row])
        row += 1
    return a[:row]


def _named(contrast: Cond) -> set[str]:
    return {var for _, assign in contrast.terms for var, _ in assign}


def _column_value(obs: pd.DataFrame, var: str, value: Any, label: str) -> pd.Series:
    if var not in obs.columns:
        raise ValueError(
            f"`contrast` {label} sets {var!r}, which is not a column of the fit's `obs`; its "
            f"columns are {[str(c) for c in obs.columns]}."
        )
    col = obs[var]
    n = len(obs)
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(
                f"`contrast` {label} sets the numeric column {var!r} to {value!r}; give a number."
            )
        return pd.Series([value] * n, dtype=np.float64)
    lookup = {str(v): v for v in pd.unique(col)}
    if str(value) not in lookup:
        raise ValueError(
            f"`contrast` {label} sets {var!r} to {value!r}, which is not one of its levels "
            f"{sorted(lookup)}."
        )
    return pd.Series([lookup[str(value)]] * n, dtype=col.dtype)
