"""What kind of input a value is, without importing optional packages to find out.

The input layer's type tests and its one block adapter. They live at the bottom of the
import graph (no ``batchglm`` imports), so :mod:`batchglm.data`, :mod:`batchglm.align`,
:mod:`batchglm.size_factors` and the dask fit ask the same question the same way without
importing each other (see ``docs/architecture.md``, *Import layers*). The on-disk test,
:func:`batchglm.backed.is_backed`, stays with the reader it selects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def is_anndata(obj: object) -> bool:
    """Whether ``obj`` is an AnnData object, without importing anndata otherwise.

    Parameters
    ----------
    obj : object
        Anything.

    Returns
    -------
    bool
        True for :class:`anndata.AnnData` (and subclasses).
    """
    return any(
        t.__name__ == "AnnData" and t.__module__.split(".")[0] == "anndata"
        for t in type(obj).__mro__
    )


def is_dask_array(values: object) -> bool:
    """Return whether ``values`` is a dask array (without importing dask needlessly).

    Parameters
    ----------
    values : object
        Any input.

    Returns
    -------
    bool
        ``True`` for ``dask.array.Array``.
    """
    return type(values).__module__.startswith("dask.") and hasattr(values, "map_blocks")


def dense_block(block: Any) -> Array:
    """Turn one chunk (numpy, scipy.sparse or array-like) into a C-contiguous float64 array.

    Parameters
    ----------
    block : array_like
        A chunk ``(n_obs, n_chunk_features)``.

    Returns
    -------
    ndarray
        Dense copy (or view) of the chunk.
    """
    if hasattr(block, "toarray"):
        block = block.toarray()
    return np.ascontiguousarray(np.asarray(block, dtype=np.float64))
