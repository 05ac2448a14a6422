"""Reading AnnData: values, names and annotations as :class:`~batchglm.data.Data`.

Reading: ``bg.fit(adata, ..., layer="counts")`` takes ``adata.layers[layer]`` (else
``adata.X``), dense or scipy sparse, the observation annotations from ``adata.obs`` (for
formulas), feature names from ``var_names`` and observation names from ``obs_names``.

Values stay in their own storage (sparse stays sparse); the fit densifies one feature block
at a time. A backed AnnData (``read_h5ad(path, backed="r")``) or an AnnData whose ``.X`` is
an on-disk sparse dataset is not read whole: its matrix is laid out by feature blocks in one
streaming pass (:mod:`batchglm.backed`). anndata reads the layers of a backed file into
memory when it opens it; :func:`read_backed` reads a file's ``.X`` or one layer from disk
without opening the rest.

Writing a fit into an AnnData is :mod:`batchglm.anndata_write` (it depends on the result;
this module, part of the input layer, does not).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from batchglm.data import Data, as_matrix

if TYPE_CHECKING:
    from anndata import AnnData


def read_anndata(adata: AnnData, layer: str | None = None) -> Data:
    """Values, names and annotations of an AnnData.

    Parameters
    ----------
    adata : anndata.AnnData
        ``n_obs x n_vars`` data.
    layer : str, optional
        Name of the layer with the data (e.g. raw counts); ``None`` uses ``adata.X``.

    Returns
    -------
    Data
        Values as :func:`batchglm.data.as_matrix` keeps them (dense float64, sparse CSC
        float64, a lazy dask array, or for an on-disk matrix its feature-blocked copy;
        never densified), ``var_names`` as feature names, ``obs_names`` as observation
        names and ``adata.obs`` as annotations.

    Raises
    ------
    ValueError
        For an empty AnnData, non-numeric values, an unknown ``layer``, or an AnnData
        without ``.X`` and no ``layer``.
    """
    if layer is None:
        values = adata.X
        if values is None:
            raise ValueError(
                "`data` is an AnnData without .X; pass `layer=` with one of its layers "
                f"{list(adata.layers.keys())}."
            )
    else:
        if not isinstance(layer, str) or layer not in adata.layers:
            raise ValueError(
                f"`layer` {layer!r} is not a layer of the AnnData; its layers are "
                f"{list(adata.layers.keys())} (or pass layer=None for .X)."
            )
        values = adata.layers[layer]
    where = f"layer {layer!r}" if layer is not None else ".X"
    try:
        matrix = as_matrix(values, f"the AnnData's {where}")
    except ValueError:
        raise ValueError(
            f"the AnnData's {where} must be numeric, but it holds {type(values).__name__}."
        ) from None
    if len(matrix.shape) != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(
            "`data` must have at least one observation and one feature, but the AnnData "
            f"has shape {tuple(adata.shape)}."
        )
    return Data(
        matrix,
        pd.Index(adata.var_names.astype(str)),
        pd.Index(adata.obs_names.astype(str)),
        obs=adata.obs,
    )


def read_backed(
    path: str | os.PathLike[str],
    layer: str | None = None,
    *,
    memory_budget: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> Data:
    """Read a ``.h5ad`` file or ``.zarr`` store without loading its matrix whole.

    ``obs`` and ``var`` are read into memory; the matrix (``X`` or ``layers/<layer>``; CSR,
    CSC or dense) is read once in row blocks and laid out by feature blocks, in memory or in
    a temporary directory, by :func:`batchglm.backed.feature_blocked`.

    Parameters
    ----------
    path : str or path-like
        A ``.h5ad`` file (HDF5) or a ``.zarr`` directory written by anndata.
    layer : str, optional
        Layer with the data; ``None`` reads ``X``.
    memory_budget : int, optional
        Bytes the relayout may hold in memory before it goes to disk (default 2 GiB;
        ``0``: always on disk).
    tmp_dir : path-like, optional
        Directory for on-disk feature blocks; default the system's temporary directory.
    progress : bool, optional
        Progress bar over row blocks; by default only for large matrices on a terminal.

    Returns
    -------
    Data
        The values (in-memory CSC/dense, or a :class:`batchglm.backed.FeatureBlockStore`),
        ``var_names``, ``obs_names`` and ``obs``.

    Raises
    ------
    ValueError
        When the path is neither a ``.h5ad`` file nor a zarr store, or the layer (or ``X``)
        is not in it.
    """
    from anndata.io import read_elem, sparse_dataset

    from batchglm.backed import feature_blocked

    p = Path(path)
    if p.is_dir():
        import zarr

        root: Any = zarr.open_group(str(p), mode="r")
    elif p.is_file():
        import h5py

        root = h5py.File(p, "r")
    else:
        raise ValueError(
            f"`data` must be an existing .h5ad file or .zarr store, but {str(path)!r} is neither."
        )
    key = "X" if layer is None else f"layers/{layer}"
    layers = list(root["layers"].keys()) if "layers" in root else []
    if key not in root:
        raise ValueError(
            f"{'`layer` ' + repr(layer) if layer is not None else 'X'} is not in {str(path)!r}; "
            f"its layers are {layers}."
        )
    elem = root[key]
    encoding = str(elem.attrs.get("encoding-type", "array"))
    matrix = sparse_dataset(elem) if encoding in ("csr_matrix", "csc_matrix") else elem
    obs = read_elem(root["obs"])
    var = read_elem(root["var"])
    values = feature_blocked(
        matrix, memory_budget=memory_budget, tmp_dir=tmp_dir, progress=progress
    )
    if getattr(values, "source", None) is None and hasattr(root, "close"):
        root.close()  # everything is read; a CSC store read on demand keeps the file open
    return Data(
        values,
        pd.Index(var.index.astype(str)),
        pd.Index(obs.index.astype(str)),
        obs=obs,
    )
