"""Pseudobulk: sum the counts of cells by sample (and cell type) into a new AnnData.

With few donors, differential tests between conditions should treat the donor, not the
cell, as the replicate; summing each donor's cells (per cell type) gives bulk-like samples
for :func:`batchglm.fit` with ``dispersion="map"`` or ``"ql"`` tests.

Sample-level annotations (condition, batch) are kept when they are constant within every
pseudobulk sample. A categorical column that varies within samples is dropped with a
warning: it is either a cell-level annotation (cluster, cell-cycle phase) or a sign that
the sample labels were reused across its values ("d1" in ctrl and "d1" in stim, summed
into one sample), which only the user can tell apart.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from batchglm import blocks
from batchglm.inputs import as_data
from batchglm.warning_site import user_stacklevel

if TYPE_CHECKING:
    from anndata import AnnData


def _keys(groupby: str | Sequence[str], name: str = "groupby") -> list[str]:
    keys = [groupby] if isinstance(groupby, str) else list(groupby)
    if not keys:
        raise ValueError(f"`{name}` must name at least one column of `adata.obs`.")
    return keys


def _warn_dropped(obs: pd.DataFrame, dropped: list[str], sample: list[str], codes: Any) -> None:
    """Warn about categorical ``obs`` columns dropped because they vary within samples."""
    factors = [
        c
        for c in dropped
        if not pd.api.types.is_numeric_dtype(obs[c]) or pd.api.types.is_bool_dtype(obs[c])
    ]
    if not factors:
        return
    parts = []
    for col in factors:
        n_values = obs[col].groupby(codes, observed=True).nunique(dropna=False)
        parts.append(f"{col!r} ({int((n_values > 1).sum())} of {len(n_values)} samples)")
    sample_arg = sample[0] if len(sample) == 1 else sample
    warnings.warn(
        f"`obs` columns {factors} vary within pseudobulk samples of `sample={sample_arg!r}` "
        f"and were dropped: {', '.join(parts)} mix several values. For a cell-level "
        "annotation (cluster, cell-cycle phase) that is intended (split by cell types with "
        "`groupby=`). For a sample-level one (condition, batch) the sample labels were "
        "reused across its values and its samples were summed together: make the labels "
        f"unique or pass `sample={[*sample, factors[0]]!r}`.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def pseudobulk(
    adata: AnnData,
    sample: str | Sequence[str],
    groupby: str | Sequence[str] | None = None,
    *,
    layer: str | None = None,
    min_cells: int = 1,
    n_jobs: int | None = None,
    progress: bool | None = None,
) -> AnnData:
    """Sum counts over the cells of each sample (and group, e.g. cell type).

    Parameters
    ----------
    adata : anndata.AnnData
        Cells x features with raw counts in ``.X`` or ``layer`` (dense or sparse).
    sample : str or sequence of str
        Column(s) of ``adata.obs`` naming each cell's sample (donor, replicate); several
        columns define a sample by their combination, e.g. ``["donor", "condition"]`` when
        donor labels are reused across conditions.
    groupby : str or sequence of str, optional
        Further ``obs`` columns to split by, e.g. ``"cell_type"``.
    layer : str, optional
        Layer with the counts; ``None`` uses ``.X``.
    min_cells : int
        Pseudobulk samples with fewer cells are dropped.
    n_jobs : int, optional
        Threads summing feature blocks (:func:`batchglm.blocks.map_blocks`); by default the
        available CPU cores; dask input runs one dask task per block. The sums do not
        depend on ``n_jobs``.
    progress : bool, optional
        Progress bar over feature blocks; by default only for long passes on a terminal.

    Returns
    -------
    anndata.AnnData
        One observation per combination present in the data, with summed counts (dense
        float64) in ``.X``. Its ``obs`` holds the key columns, ``n_cells``, and every other
        ``obs`` column that is constant within each pseudobulk sample (sample-level
        annotations such as condition or batch); columns that vary within a sample are
        dropped (numeric ones, e.g. QC metrics, silently). ``var`` is copied. Names join
        the key values with ``"_"``.

    Raises
    ------
    ValueError
        When a key is not a column of ``adata.obs`` or has missing values, ``layer`` is not
        a layer, or ``min_cells`` is below 1.

    Warns
    -----
    UserWarning
        When categorical (non-numeric or boolean) ``obs`` columns vary within samples and
        are dropped, naming them and how many samples mix their values: reused sample
        labels sum cells of different conditions into one sample.
    """
    import anndata

    sample_keys = _keys(sample, "sample")
    keys = sample_keys + ([] if groupby is None else _keys(groupby))
    missing = [k for k in keys if k not in adata.obs.columns]
    if missing:
        raise ValueError(
            f"{missing} are not columns of `adata.obs`; its columns are {list(adata.obs.columns)}."
        )
    if min_cells < 1:
        raise ValueError(f"`min_cells` must be at least 1, but {min_cells} was given.")
    if layer is not None and layer not in adata.layers:
        raise ValueError(
            f"`layer` {layer!r} is not a layer of the AnnData; its layers are "
            f"{list(adata.layers.keys())}."
        )
    d = as_data(adata, layer=layer, warn_duplicates=False)
    obs = adata.obs
    if obs[keys].isna().to_numpy().any():
        raise ValueError(f"the key columns {keys} of `adata.obs` must not have missing values.")
    codes, uniques = pd.MultiIndex.from_frame(obs[keys].astype(str)).factorize()
    n_groups = len(uniques)
    n_cells = np.bincount(codes, minlength=n_groups)
    # A sparse groups x cells indicator sums cells without densifying the cell matrix.
    indicator = sparse.csr_array(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_groups, len(codes))
    )
    summed = np.zeros((n_groups, d.shape[1]))

    def add(block: Any) -> Any:
        part = indicator @ block
        return part.toarray() if sparse.issparse(part) else np.asarray(part)

    # Feature blocks in parallel, as in the fit (batchglm.blocks); a backed AnnData is read
    # once in row blocks into feature blocks (batchglm.backed), never whole.
    n_obs, n_feat = d.shape
    size = blocks.block_size(n_obs)
    show = blocks.show_progress(progress, n_obs, n_feat)
    if d.kind == "dask":
        parts = blocks.map_dask_blocks(
            lambda chunk, sl: add(chunk), d.values, size, progress=show, desc="batchglm.pseudobulk"
        )
        starts = np.cumsum([0] + [p.shape[1] for p in parts])
        spans = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    else:
        spans = blocks.feature_blocks(n_feat, size)
        parts = blocks.map_blocks(
            lambda sl: add(d.stored_block(sl)),
            spans,
            n_jobs=n_jobs,
            progress=show,
            desc="batchglm.pseudobulk",
        )
    for sl, part in zip(spans, parts, strict=True):
        summed[:, sl] = part
    keep = n_cells >= min_cells
    names = ["_".join(t) for t in uniques]
    table = pd.DataFrame({"_group": codes}, index=obs.index)
    columns: dict[str, object] = {}
    dropped = []
    for col in obs.columns:
        per_group = obs[col].groupby(table["_group"].to_numpy(), observed=True)
        if col in keys or bool((per_group.nunique(dropna=False) <= 1).all()):
            first = per_group.first().reindex(range(n_groups)).to_numpy()
            if isinstance(obs[col].dtype, pd.CategoricalDtype):
                columns[col] = pd.Categorical(first, categories=obs[col].cat.categories)
            else:
                columns[col] = first
        else:
            dropped.append(str(col))
    _warn_dropped(obs, dropped, sample_keys, table["_group"].to_numpy())
    out_obs = pd.DataFrame(columns, index=pd.Index(names))
    out_obs["n_cells"] = n_cells
    out_obs = out_obs[[*keys, *[c for c in out_obs.columns if c not in keys]]]
    out_obs = out_obs.iloc[np.flatnonzero(keep)]
    return anndata.AnnData(
        X=np.asarray(summed[keep], dtype=np.float64), obs=out_obs, var=adata.var.copy()
    )
