"""Labelled arrays for the seed facade that still work with NumPy's ``np.matmul``.

The seed returned parameters and design matrices as :class:`xarray.DataArray` objects, and
its tutorial multiplies them with ``np.matmul(design, params)``. Current xarray refuses every
generalized ufunc (``np.matmul``, ``np.vecdot``, ...) on DataArrays, so plain DataArrays would
break that tutorial cell. :class:`SeedArray` is a DataArray (names, coordinates, ``.sel``,
reductions and arithmetic all behave as usual) that evaluates generalized ufuncs on the plain
values instead, returning a NumPy array as ``np.matmul`` did in the seed's days.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike, NDArray

__all__ = ["SeedArray", "as_matrix", "labelled"]


def _plain(x: Any) -> Any:
    """Return the plain values behind labelled containers, anything else unchanged."""
    if isinstance(x, xr.DataArray | pd.DataFrame | pd.Series):
        return x.to_numpy()
    return x


class SeedArray(xr.DataArray):
    """An :class:`xarray.DataArray` that NumPy's generalized ufuncs accept.

    Everything except generalized ufuncs (``np.matmul``, ``np.vecdot``, ``np.matvec``, ...)
    is plain xarray behaviour: indexing, ``np.sum``/``np.max`` reductions and arithmetic keep
    names and coordinates and return :class:`SeedArray` objects where xarray keeps the type.
    A generalized ufunc is evaluated on the underlying values and returns a NumPy array,
    because such a product mixes dimensions (e.g. observations x parameters times
    parameters x features) and the result has no unambiguous labels.

    Examples
    --------
    >>> import numpy as np
    >>> par = SeedArray(np.ones((2, 3)), dims=("design_loc_params", "features"))
    >>> np.matmul(np.ones((4, 2)), par).shape
    (4, 3)
    """

    __slots__ = ()

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """Evaluate generalized ufuncs on plain values; defer everything else to xarray.

        Parameters
        ----------
        ufunc : numpy.ufunc
            The ufunc being applied.
        method : str
            How it is applied (``"__call__"``, ``"reduce"``, ...).
        *inputs : object
            The operands.
        **kwargs : object
            Keyword arguments of the ufunc call.

        Returns
        -------
        object
            A NumPy array for generalized ufuncs, otherwise what xarray returns.
        """
        if ufunc.signature is not None and method == "__call__":
            out = kwargs.get("out")
            if out is not None:
                outs = out if isinstance(out, tuple) else (out,)
                if any(isinstance(o, xr.DataArray) for o in outs):
                    return NotImplemented
            return ufunc(*(_plain(x) for x in inputs), **kwargs)
        return super().__array_ufunc__(ufunc, method, *inputs, **kwargs)


def labelled(
    values: ArrayLike,
    dims: tuple[str, str],
    coords: Sequence[Sequence[Hashable] | None],
    name: str | None = None,
) -> SeedArray:
    """Wrap a 2-D matrix as a :class:`SeedArray` with index coordinates.

    Parameters
    ----------
    values : array_like
        The 2-D matrix.
    dims : tuple of str
        The two dimension names.
    coords : sequence
        One label sequence per dimension, or ``None`` for no coordinate on that dimension.
    name : str, optional
        Name of the array.

    Returns
    -------
    SeedArray
        The labelled matrix.
    """
    c = {d: list(v) for d, v in zip(dims, coords, strict=True) if v is not None}
    return SeedArray(np.asarray(values), dims=dims, coords=c, name=name)


def as_matrix(
    x: Any, what: str, names: Sequence[str] | None = None
) -> tuple[NDArray[Any], list[str] | None]:
    """Read a 2-D matrix and, where the container carries them, its column labels.

    Parameters
    ----------
    x : array_like, pandas.DataFrame, xarray.DataArray or patsy.DesignMatrix
        The matrix.
    what : str
        Argument name for messages.
    names : sequence of str, optional
        Column labels given explicitly; they take precedence.

    Returns
    -------
    values : ndarray
        The matrix.
    columns : list of str or None
        Column labels, or ``None`` where ``x`` carries none and none were given.
    """
    columns: list[str] | None = None
    if isinstance(x, pd.DataFrame):
        columns = [str(c) for c in x.columns]
        values = x.to_numpy()
    elif isinstance(x, xr.DataArray):
        if x.ndim == 2 and x.dims[1] in x.coords:
            columns = [str(c) for c in x.coords[x.dims[1]].to_numpy()]
        values = x.to_numpy()
    else:
        values = np.asarray(x)
        info = getattr(x, "design_info", None)  # patsy DesignMatrix, as the seed accepted
        if info is not None and hasattr(info, "column_names"):
            columns = [str(c) for c in info.column_names]
    if values.ndim != 2:
        raise ValueError(f"`{what}` must be a 2-D matrix, but it has {values.ndim} dimension(s).")
    if names is not None:
        columns = [str(n) for n in names]
        if len(columns) != values.shape[1]:
            raise ValueError(
                f"{len(columns)} names were given for `{what}`, which has "
                f"{values.shape[1]} columns."
            )
    return values, columns
