"""Every input becomes a :class:`~batchglm.data.Data`: arrays, DataFrames, AnnData, paths.

:func:`as_data` is the one entry point for data given to :func:`batchglm.fit` and the
passes after it; :func:`data_of_fit` gives the data a fit was made on, matched to the fit by
name (rules in ``docs/inputs.md``). This module sits on top of the input layer: it reads
AnnData and files through :mod:`batchglm.anndata_io` and matches names with
:mod:`batchglm.align`, neither of which imports it (``docs/architecture.md``, *Import
layers*).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from batchglm.align import as_names, is_default, positions
from batchglm.align import warn_duplicates as warn
from batchglm.anndata_io import read_anndata, read_backed
from batchglm.data import Data, as_matrix
from batchglm.input_types import is_anndata

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.result import FitResult


def as_data(
    data: ArrayLike | pd.DataFrame | AnnData | Data,
    layer: str | None = None,
    *,
    warn_duplicates: bool = True,
) -> Data:
    """Convert supported inputs into :class:`Data`.

    Parameters
    ----------
    data : array_like, pandas.DataFrame, anndata.AnnData, Data, str or path
        ``(n_obs, n_features)``; a path to a ``.h5ad`` file or ``.zarr`` store is read with
        :func:`batchglm.anndata_io.read_backed` (the matrix stays on disk). DataFrame
        columns become feature names and its index the observation names. An AnnData gives
        its ``var_names``, ``obs_names`` and ``.obs``
        (see :mod:`batchglm.anndata_io`). Arrays get positional names (``0, 1, ...`` and
        ``feature0, feature1, ...``), which :mod:`batchglm.align` treats as no names. A
        :class:`Data` is returned as it is.
    layer : str, optional
        AnnData layer to read instead of ``.X``; only for AnnData input.
    warn_duplicates : bool
        Emit a :class:`batchglm.align.DuplicateNamesWarning` when feature or observation
        names repeat (names are kept as given either way).

    Returns
    -------
    Data
        Values in their own storage, with names.

    Raises
    ------
    ValueError
        When a ``layer`` is given for non-AnnData input, the data are not numeric, or they
        have no observation or no feature.

    Warns
    -----
    batchglm.align.DuplicateNamesWarning
        With ``warn_duplicates``, when feature or observation names repeat.
    """
    if isinstance(data, Data) and layer is None:
        return data
    if isinstance(data, str | os.PathLike):
        out = read_backed(data, layer)
        if warn_duplicates:
            warn(out.feature_names, "feature", "AnnData")
            warn(out.obs_names, "observation", "AnnData")
        return out
    if is_anndata(data):
        out = read_anndata(data, layer)
        if warn_duplicates:
            warn(out.feature_names, "feature", "AnnData")
            warn(out.obs_names, "observation", "AnnData")
        return out
    if layer is not None:
        raise ValueError(
            f"`layer` ({layer!r}) selects an AnnData layer, but `data` is a "
            f"{type(data).__name__}; pass an AnnData or leave `layer` out."
        )
    if isinstance(data, pd.DataFrame):
        try:
            # Row-major whichever way the frame was built (a transposed frame is
            # column-major): sums over observations then run in one order, so a table and
            # its transpose give identical results.
            values = np.ascontiguousarray(data.to_numpy(dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(
                "`data` must hold numbers only, but the DataFrame has columns of dtypes "
                f"{sorted({str(t) for t in data.dtypes})}."
            ) from None
        features = as_names(data.columns)
        obs = as_names(data.index)
    else:
        values = as_matrix(data, "`data`")
        features = pd.Index([f"feature{j}" for j in range(values.shape[1])])
        obs = pd.Index([str(i) for i in range(values.shape[0])])
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(
            f"`data` must have at least one observation and one feature, but its shape is "
            f"{values.shape}."
        )
    if warn_duplicates:
        warn(features, "feature", type(data).__name__)
        warn(obs, "observation", type(data).__name__)
    return Data(values, features, obs)


def data_of_fit(data: Any, res: FitResult, *, layer: str | None = None) -> Data:
    """Return the data a fit was made on, observations and features in the fit's order.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame, AnnData or Data
        Counts ``(n_obs, n_features)``. With names, they are matched to the fit's
        ``obs_names`` and ``feature_names`` and reordered; without, they pair by position.
    res : FitResult
        The fit.
    layer : str, optional
        AnnData layer with the counts; for an AnnData, by default the layer the fit was
        made from (``res.settings["layer"]``), so it is not silently read from ``.X``. The
        fit's layer is ignored for arrays and DataFrames; a layer passed here is not.

    Returns
    -------
    Data
        The data in the fit's order (no copy when it already is), named as the fit.

    Raises
    ------
    ValueError
        When the data's shape differs from the fit's, its names and the fit's differ as
        sets, or are duplicated and in another order.
    """
    if layer is None and _has_layers(data):
        # An AnnData is read from the layer the fit used, not silently from `.X`; arrays and
        # DataFrames have no layers, so the fit's layer does not apply to them.
        layer = cast("str | None", res.settings.get("layer"))
    d = data if isinstance(data, Data) else as_data(data, layer=layer, warn_duplicates=False)
    want = (len(res.obs_names), len(res.feature_names))
    named = [
        not is_default(d.obs_names, "observation") and not is_default(res.obs_names, "observation"),
        not is_default(d.feature_names, "feature") and not is_default(res.feature_names, "feature"),
    ]
    if d.shape != want and not all(named):
        # Names, where both sides have them, say more than the shape (checked below).
        raise ValueError(
            f"`data` must be the data of the fit, shape {want}, but its shape is {d.shape}."
        )
    rows = positions(
        res.obs_names,
        d.obs_names,
        what="`data`",
        target_what="the fit",
        axis="observation",
        hint="pass the data the fit was made on",
    )
    cols = positions(
        res.feature_names,
        d.feature_names,
        what="`data`",
        target_what="the fit",
        axis="feature",
        hint="pass the data the fit was made on",
    )
    d = d.reorder(rows, cols)
    # Matched or positional: from here on the data carry the fit's names (an unnamed array
    # must not turn the fit's gene names into feature0, feature1, ...).
    return Data(d.values, res.feature_names, res.obs_names, d.obs)


def _has_layers(data: Any) -> bool:
    """Whether ``data`` is an AnnData or a path to one (the inputs with layers)."""
    return is_anndata(data) or isinstance(data, str | os.PathLike)
