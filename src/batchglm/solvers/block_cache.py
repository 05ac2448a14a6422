"""Count tables of feature blocks, kept across the fits of one analysis on the same counts.

The shrinkage path of :func:`batchglm.de.test` fits the same counts three times (the
initial fit at DESeq2's rough dispersion, the refit at the shrunken or trended dispersion
and, for the QL test, the reduced refit; :mod:`batchglm.de.pipeline_steps`). Each fit of a
feature block lists the block's non-zero entries, tabulates its distinct counts
(:class:`~batchglm.solvers.count_table.CountTable`) and sums ``-log y!``; those depend on
the counts and the scale groups only, not on the parameters, so inside
:func:`reuse_block_tables` the later fits take them from the first. The count table also
keeps its last count-term sums, which the reduced refit, held at the same dispersions as
the full refit, reuses as they are. The results are the same numbers: the same tables,
built once instead of three times.

Outside the context nothing is kept (a fit's tables are as large as its counts).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

#: The tables of the analysis in progress, per counts array (identity), per feature block.
_ACTIVE: ContextVar[list[tuple[object, dict[Any, Any]]] | None] = ContextVar(
    "batchglm_block_tables", default=None
)


@contextmanager
def reuse_block_tables() -> Iterator[None]:
    """Keep the count tables of the fits inside, for later fits of the same data object.

    Nested uses share the outermost's tables; they are dropped when it exits.

    Yields
    ------
    None
    """
    if _ACTIVE.get() is not None:
        yield
        return
    token = _ACTIVE.set([])
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def reusing_block_tables(func: F) -> F:
    """Decorate ``func`` to run inside :func:`reuse_block_tables`.

    The wrapper is a frame of this package, so warnings that point at the user's line
    (:func:`batchglm.warning_site.user_stacklevel`) still do; ``contextlib``'s decorator
    form would put its own frame between them.

    Parameters
    ----------
    func : callable
        The function, e.g. :func:`batchglm.de.test`.

    Returns
    -------
    callable
        ``func`` with the count tables kept for the duration of each call.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with reuse_block_tables():
            return func(*args, **kwargs)

    return cast(F, wrapper)


def tables_for(data: object) -> dict[Any, Any] | None:
    """Return the kept tables of ``data`` by feature block (``None`` outside the context).

    Parameters
    ----------
    data : object
        The stored counts of a fit (``Data.values``: the array itself, not a copy); matched
        by identity, so a changed copy of the counts (e.g. with outliers replaced) gets
        tables of its own.

    Returns
    -------
    dict or None
        A dictionary the fit reads and fills, keyed by block; ``None`` when no
        :func:`reuse_block_tables` is active in this thread's context.
    """
    kept = _ACTIVE.get()
    if kept is None:
        return None
    for owner, tables in kept:
        if owner is data:
            return tables
    tables = {}
    kept.append((data, tables))
    return tables
