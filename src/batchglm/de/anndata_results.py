"""Test results stored in an AnnData and read back (:meth:`DEResult.to_anndata`).

Every column of a result's :meth:`~batchglm.de.DEResult.summary` becomes an
``adata.var`` column ``f"{key}_{column}"`` (features matched by name; variables that were
not tested get ``NaN`` and status ``"not_tested"``), and ``adata.uns[key]`` records what
was tested and the table's attributes (``filterThreshold``, ``alpha``, ...).
:func:`read_results` returns the table again, also after ``write_h5ad`` / ``read_h5ad``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batchglm.de.table import DETable
from batchglm.input_types import is_anndata

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.de.result import DEResult


def _check_key(adata: Any, key_added: Any) -> None:
    if not is_anndata(adata):
        raise ValueError(f"`adata` must be an AnnData, but a {type(adata).__name__} was given.")
    if not isinstance(key_added, str) or not key_added or "/" in key_added:
        raise ValueError(
            f"`key_added` must be a non-empty string without '/', but {key_added!r} was given."
        )


def write_results(result: DEResult, adata: AnnData, key_added: str = "batchglm_de") -> AnnData:
    """Store a test's results table in an AnnData, in place.

    Parameters
    ----------
    result : DEResult
        A test (:func:`batchglm.de.test`, :func:`~batchglm.de.wald`, ...).
    adata : anndata.AnnData
        Target, whose ``var_names`` hold every tested feature (any order); modified in
        place.
    key_added : str
        Prefix ``key`` of the keys written.

    Returns
    -------
    anndata.AnnData
        ``adata``, with ``var[f"{key}_{column}"]`` for every column of
        ``result.summary()`` (``baseMean``, ``log2FoldChange`` in log2 units, ``lfcSE``,
        ``stat``, ``pvalue``, ``padj``, ``status`` as a categorical, ...) and
        ``uns[key]`` = ``{"test", "tested", "model", "columns", "attrs"}``.

    Raises
    ------
    ValueError
        If ``adata`` is no AnnData, ``key_added`` is not a plain name, a tested feature is
        not in ``adata.var_names``, or names repeat.
    """
    _check_key(adata, key_added)
    table = result.summary()
    var_names = pd.Index(adata.var_names.astype(str))
    names = pd.Index(table.index.astype(str))
    missing = names.difference(var_names)
    if len(missing):
        raise ValueError(
            f"{len(missing)} tested features are not in `adata.var_names`, e.g. "
            f"{[str(m) for m in missing[:5]]}; write the results to the AnnData they came from."
        )
    if names.has_duplicates or var_names.has_duplicates:
        raise ValueError(
            "feature names must be unique on both sides to match results to an AnnData; "
            "call `adata.var_names_make_unique()` before fitting."
        )
    pos = names.get_indexer(var_names)
    tested = pos >= 0
    for column in table.columns:
        values = table[column].to_numpy()
        key = f"{key_added}_{column}"
        if column == "status":
            out = np.full(len(var_names), "not_tested", dtype=object)
            out[tested] = values[pos[tested]].astype(str)
            adata.var[key] = pd.Categorical(out.astype(str))
        elif values.dtype == bool:
            flags = np.zeros(len(var_names), dtype=bool)
            flags[tested] = values[pos[tested]]
            adata.var[key] = flags
        elif values.dtype == object:
            text = np.full(len(var_names), "", dtype=object)
            text[tested] = values[pos[tested]].astype(str)
            adata.var[key] = text.astype(str)
        else:
            num = np.full(len(var_names), np.nan)
            num[tested] = values[pos[tested]]
            adata.var[key] = num
    attrs = {k: (np.nan if v is None else float(v)) for k, v in table.attrs.items()}
    adata.uns[key_added] = {
        "test": result.test,
        "tested": result.tested,
        "model": result.model,
        "columns": list(table.columns),
        "attrs": attrs,
    }
    return adata


def read_results(adata: AnnData, key_added: str = "batchglm_de") -> DETable:
    """Read a results table written by :meth:`batchglm.de.DEResult.to_anndata`.

    Parameters
    ----------
    adata : anndata.AnnData
        The AnnData (also one read back from ``.h5ad``).
    key_added : str
        The ``key_added`` the results were written with.

    Returns
    -------
    DETable
        The summary table, indexed by ``var_names`` (index name ``"feature"``), columns in
        their original order; variables that were not tested have status
        ``"not_tested"``. ``table.attrs`` holds the stored attributes (``filterThreshold``,
        ``alpha``, ...) and ``tested``.

    Raises
    ------
    ValueError
        If ``adata`` is no AnnData, or holds no results under ``key_added``.
    """
    _check_key(adata, key_added)
    meta = adata.uns.get(key_added)
    if not isinstance(meta, dict) or "columns" not in meta:
        raise ValueError(
            f"`adata.uns` holds no test results under {key_added!r}; write them with "
            f"`result.to_anndata(adata, key_added={key_added!r})`."
        )
    columns = [str(c) for c in meta["columns"]]
    data = {c: np.asarray(adata.var[f"{key_added}_{c}"]) for c in columns}
    if "status" in data:
        data["status"] = data["status"].astype(str)
    index = pd.Index(adata.var_names.astype(str), name="feature")
    table = DETable(data, index=index)
    table.attrs.update({str(k): v for k, v in dict(meta.get("attrs", {})).items()})
    table.attrs["tested"] = str(meta["tested"])
    return table
