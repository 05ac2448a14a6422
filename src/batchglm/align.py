"""Matching labelled inputs to the data by observation and feature names.

One rule for every input that comes with names (see ``docs/inputs.md``):

* both sides carry names: they are matched **by name** and the input is reordered to the
  data's order (the fit's order for ``data=`` given to tests and dispersion estimates);
  names that differ as sets are an error naming a few missing and extra names;
* duplicated names on either side cannot be matched by name: an error, unless both sides
  list the very same names in the same order (then nothing needs matching);
* a side without names pairs **by position**: numpy arrays and lists, and pandas objects
  whose labels are the default ``0, 1, ..., n-1`` (a ``RangeIndex``). A default index that
  is a permutation of the other side's default index (``obs.sample(frac=1)``) is still
  matched by name, since its labels say where each row came from. A pandas input with a
  default index paired by position with *named* data gets one
  :class:`PositionalPairingWarning` (its names were most likely lost by
  ``reset_index(drop=True)`` or ``pd.read_csv`` without ``index_col``).

Names are compared as strings, as :func:`batchglm.inputs.as_data` stores them.
Duplicated names in the data are kept as given (results use them unchanged) and get one
:class:`DuplicateNamesWarning` at input; look-ups by such a name are refused
(:func:`name_position`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.input_types import is_anndata
from batchglm.warning_site import user_stacklevel

if TYPE_CHECKING:
    from batchglm.data import Data

T = TypeVar("T")

#: How many example names a message shows.
_SHOWN = 5


class DuplicateNamesWarning(UserWarning):
    """The data name two or more features (or observations) alike."""


class PositionalPairingWarning(UserWarning):
    """A pandas input without names (a default ``RangeIndex``) is paired with named data."""


def as_names(labels: Any) -> pd.Index:
    """Labels as an index of strings, the form names are compared in.

    Parameters
    ----------
    labels : pandas.Index or sequence
        Row or column labels; a MultiIndex is flattened to tuples first.

    Returns
    -------
    pandas.Index
        One string per label, in order.
    """
    index = labels if isinstance(labels, pd.Index) else pd.Index(labels)
    if isinstance(index, pd.MultiIndex):
        index = index.to_flat_index()
    return pd.Index(index.astype(str))


def is_default(names: pd.Index, axis: str) -> bool:
    """Whether names are only positions, i.e. carry no names.

    Parameters
    ----------
    names : pandas.Index
        String names (see :func:`as_names`).
    axis : {"observation", "feature"}
        Which names: for features, ``feature0, feature1, ...`` (what
        :func:`batchglm.inputs.as_data` gives a numpy array) also counts as unnamed.

    Returns
    -------
    bool
        True for ``"0", "1", ..., "n-1"`` in order (and, for features,
        ``"feature0", ...``).
    """
    n = len(names)
    if n and names[0] not in ("0", "feature0"):
        return False  # the common case, without building n strings
    if names.equals(pd.Index([str(i) for i in range(n)])):
        return True
    return axis == "feature" and names.equals(pd.Index([f"feature{j}" for j in range(n)]))


def _examples(names: pd.Index) -> list[str]:
    return [str(v) for v in names[:_SHOWN]]


def _duplicated(names: pd.Index) -> pd.Index:
    return pd.Index(names[names.duplicated()].unique())


def positions(
    target: pd.Index,
    labels: Any,
    *,
    what: str,
    target_what: str,
    axis: str,
    hint: str | None = None,
    warn: bool = False,
) -> NDArray[np.intp] | None:
    """Where each target name sits among an input's labels, or None to pair by position.

    Parameters
    ----------
    target : pandas.Index
        String names in the order wanted (the data's, or the fit's).
    labels : pandas.Index or sequence
        The input's labels, one per row (any type; compared as strings).
    what : str
        The input, for messages, e.g. ``"`obs`"``.
    target_what : str
        The side holding ``target``, for messages, e.g. ``"`data`"``.
    axis : {"observation", "feature"}
        What the names name.
    hint : str, optional
        How to fix a mismatch; by default, to select the rows by name or drop the names.
    warn : bool
        Warn (:class:`PositionalPairingWarning`) when ``labels`` are the default ``0, 1,
        ..., n-1`` and ``target`` has names, so the input is paired by position.

    Returns
    -------
    ndarray of intp or None
        ``pos`` with ``labels[pos] == target``; ``None`` when the labels already are the
        target in order, or one side has no names (the caller checks the lengths).

    Raises
    ------
    ValueError
        When both sides have names and they differ as sets, or either side has duplicated
        names that are not already in the same order.
    """
    given = as_names(labels)
    if given.equals(target):
        return None
    unique = given.is_unique and target.is_unique
    # One hash look-up serves the set comparison and the reordering.
    pos = given.get_indexer(target) if unique and len(given) == len(target) else None
    same_set = pos is not None and bool((pos >= 0).all())
    if is_default(target, axis) or is_default(given, axis):
        # Positions only; a shuffled default index still says where its rows came from.
        if warn and not same_set and not is_default(target, axis):
            warn_positional(what, target_what, target, axis)
        return pos if same_set else None
    for side, names in ((what, given), (target_what, target)):
        dup = _duplicated(names)
        if len(dup):
            raise ValueError(
                f"{what} can only be matched to {target_what} by {axis} name when the names "
                f"are unique, but {side} repeats {len(dup)} name(s), e.g. {_examples(dup)}; "
                f"make the names unique on both sides (e.g. adata.{_fix(axis)}()) or give "
                "them in the same order."
            )
    if same_set:
        return pos
    missing = target[~target.isin(given)]
    extra = given[~given.isin(target)]
    parts = []
    if len(missing):
        parts.append(
            f"lacks {_count(len(missing), axis)} of {target_what} (e.g. {_examples(missing)})"
        )
    if len(extra):
        parts.append(
            f"has {_count(len(extra), axis)} that {target_what} lacks (e.g. {_examples(extra)})"
        )
    fix = hint or (
        "select its rows by name (e.g. obs.loc[counts.index]), or pass it without names (a "
        "numpy array) to pair by position"
    )
    raise ValueError(
        f"{what} must name the same {axis}s as {target_what}, but {what} "
        + " and ".join(parts)
        + f"; {fix}."
    )


def warn_positional(what: str, target_what: str, target: pd.Index, axis: str) -> None:
    """Warn that an input without names is paired by position with named data.

    Parameters
    ----------
    what, target_what : str
        The unnamed input and the named side, for the message.
    target : pandas.Index
        The named side's names.
    axis : {"observation", "feature"}
        What the names name.

    Warns
    -----
    PositionalPairingWarning
        Naming the input and a few of the names it could be matched by.
    """
    warnings.warn(
        f"{what} has the default index 0..{len(target) - 1} (no {axis} names), so it is "
        f"paired with {target_what} by position, but {target_what} names its {axis}s (e.g. "
        f"{_examples(target)}); set the index of {what} to those names (e.g. "
        f"obs.index = counts.index after checking the order) to match by name.",
        PositionalPairingWarning,
        stacklevel=user_stacklevel(),
    )


def _count(n: int, axis: str) -> str:
    return f"{n} {axis}" + ("" if n == 1 else "s")


def _fix(axis: str) -> str:
    return "var_names_make_unique" if axis == "feature" else "obs_names_make_unique"


def align_rows(
    value: T, target: pd.Index, *, what: str, target_what: str, axis: str, warn: bool = False
) -> T:
    """Reorder the rows of a labelled input to the target names.

    Parameters
    ----------
    value : object
        A pandas Series or DataFrame (its index is matched); anything else is returned as
        it is and pairs by position.
    target : pandas.Index
        String names in the order wanted.
    what, target_what : str
        Both sides, for messages.
    axis : {"observation", "feature"}
        What the names name.
    warn : bool
        As :func:`positions`.

    Returns
    -------
    object
        ``value`` with rows in the target's order (the same object when nothing moves).

    Raises
    ------
    ValueError
        As :func:`positions`.
    """
    if not isinstance(value, pd.Series | pd.DataFrame):
        return value
    pos = positions(target, value.index, what=what, target_what=target_what, axis=axis, warn=warn)
    if pos is None:
        return value
    return value.iloc[pos]  # type: ignore[return-value]


def warn_duplicates(names: pd.Index, axis: str, source: str) -> None:
    """Warn once that some names are repeated, and how to make them unique.

    Parameters
    ----------
    names : pandas.Index
        Feature or observation names.
    axis : {"observation", "feature"}
        What the names name.
    source : str
        Where they came from, e.g. ``"AnnData"`` or ``"DataFrame"``, for the fix shown.
    """
    dup = _duplicated(names)
    if not len(dup):
        return
    n_rows = int(names.isin(dup).sum())
    if source == "AnnData":
        fix = f"call adata.{_fix(axis)}() before fitting"
    else:
        fix = "give the DataFrame unique " + (
            "column names" if axis == "feature" else "index labels"
        )
    warnings.warn(
        f"`data` has {n_rows} {axis}s sharing {len(dup)} name(s), e.g. {_examples(dup)}; "
        f"results keep these names, so look-ups and matching by them are refused; {fix}.",
        DuplicateNamesWarning,
        stacklevel=user_stacklevel(),
    )


def name_position(names: pd.Index, name: str, axis: str) -> int:
    """Position of one name, refusing names that are missing or repeated.

    Parameters
    ----------
    names : pandas.Index
        Feature (or observation) names.
    name : str
        The name looked up.
    axis : {"observation", "feature"}
        What the names name, for messages.

    Returns
    -------
    int
        Its position.

    Raises
    ------
    KeyError
        When ``name`` is not among ``names``.
    ValueError
        When ``name`` occurs more than once.
    """
    hits = np.flatnonzero(names == name)
    if hits.size == 0:
        raise KeyError(
            f"{axis} {name!r} is not in the fit; its {axis}s are e.g. {_examples(names)}."
        )
    if hits.size > 1:
        raise ValueError(
            f"{axis} name {name!r} is ambiguous: it names {hits.size} {axis}s (positions "
            f"{hits[:_SHOWN].tolist()}); look it up by position, or make the names unique "
            f"before fitting (e.g. adata.{_fix(axis)}())."
        )
    return int(hits[0])


def align_inputs(
    d: Data, obs: T, design_loc: Any, design_scale: Any, size_factors: Any, fixed_scale: Any
) -> tuple[T | pd.DataFrame | None, Any, Any, Any, Any]:
    """Put the labelled inputs of :func:`batchglm.fit` in the data's order.

    Parameters
    ----------
    d : Data
        The data.
    obs : pandas.DataFrame or None
        Observation annotations; ``None`` takes the data's own (an AnnData's ``.obs``).
    design_loc, design_scale : object
        Designs; DataFrames are matched by their index.
    size_factors : object
        Size factors; a Series (or one-column DataFrame) is matched by its index.
    fixed_scale : object
        Known scale coefficients; a DataFrame or Series is matched by feature names.

    Returns
    -------
    tuple
        ``(obs, design_loc, design_scale, size_factors, fixed_scale)``, reordered where
        labelled; unlabelled inputs are returned as they are.

    Raises
    ------
    ValueError
        As :func:`positions`, naming the input that does not match.

    Warns
    -----
    PositionalPairingWarning
        Once, for ``obs`` or else a ``size_factors`` Series with a default index paired by
        position with named data (designs are not checked: they are often built by
        position).
    """
    warned = False  # one PositionalPairingWarning per fit, for the first unnamed input

    def rows(value: Any, what: str, warn: bool = False) -> Any:
        # Designs are often built by position (a DataFrame of columns): no warning for them.
        nonlocal warned
        warn = warn and not warned
        out = align_rows(
            value, d.obs_names, what=what, target_what="`data`", axis="observation", warn=warn
        )
        if not warn:
            return out
        warned = warned or (
            isinstance(value, pd.Series | pd.DataFrame)
            and is_default(as_names(value.index), "observation")
            and not is_default(d.obs_names, "observation")
        )
        return out

    if obs is not None:
        _refuse_transposed(d, obs)
    return (
        d.obs if obs is None else rows(obs, "`obs`", warn=True),
        rows(design_loc, "`design_loc`"),
        rows(design_scale, "`design_scale`"),
        rows(size_factors, "`size_factors`", warn=True),
        align_rows(
            fixed_scale, d.feature_names, what="`fixed_scale`", target_what="`data`", axis="feature"
        ),
    )


def _refuse_transposed(d: Data, obs: Any) -> None:
    """Refuse ``obs`` naming the data's features: counts given as features x observations."""
    if not isinstance(obs, pd.DataFrame):
        return
    names = as_names(obs.index)
    if is_default(names, "observation") or names.equals(d.obs_names):
        return
    if names.is_unique and len(names) == len(d.feature_names):
        if bool(names.isin(d.feature_names).all()) and not bool(names.isin(d.obs_names).all()):
            raise ValueError(
                f"`obs` must name the observations (rows) of `data`, but its {len(names)} "
                f"names are the data's columns (e.g. {_examples(names)}): the counts look "
                f"transposed ({len(d.obs_names)} rows x {len(d.feature_names)} columns); pass "
                "them as observations x features, e.g. `data.T`."
            )


def align_to_data(data: Any, **inputs: Any) -> list[Any]:
    """Reorder labelled per-observation inputs to a data argument's observation names.

    For callers that look at designs before :func:`batchglm.fit` does (which aligns its own
    inputs), without converting the data.

    Parameters
    ----------
    data : object
        Anything :func:`batchglm.fit` accepts; only an AnnData's ``obs_names`` or a
        DataFrame's index are read. Other data pair every input by position.
    **inputs : object
        Inputs by argument name, e.g. ``full_loc=frame``; pandas objects are matched by
        their index, anything else is returned as it is.

    Returns
    -------
    list
        The inputs in the order given, reordered where labelled.

    Raises
    ------
    ValueError
        As :func:`positions`.
    """
    if is_anndata(data):
        target = as_names(data.obs_names)
    elif isinstance(data, pd.DataFrame):
        target = as_names(data.index)
    else:
        return list(inputs.values())
    return [
        align_rows(value, target, what=f"`{name}`", target_what="`data`", axis="observation")
        for name, value in inputs.items()
    ]
