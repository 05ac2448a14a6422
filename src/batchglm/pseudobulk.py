"""Pseudobulk: sum the counts of cells by sample (and cell type) into a new AnnData.

With few donors, differential tests between conditions should treat the donor, not the
cell, as the replicate; summing each donor's cells (per cell type) gives bulk-like samples
for :func:`batchglm.fit` with ``dispersion="map"`` or ``"ql"`` tests.

Sample-level annotations (condition, batch) are kept when they are constant within every
pseudobulk sample; other columns are dropped. A dropped categorical column is either a
cell-level annotation (cluster, cell-cycle phase) or a sign that the sample labels were
reused across its values ("d1" in ctrl and "d1" in stim, summed into one sample). The
counts alone cannot tell them apart; a warning is given when another annotation (age,
sex, batch) shows that the label-by-value combinations are the real samples
(:func:`reused_label_evidence`). Without such a column the mix-up surfaces when a formula
names the dropped column: its error says that pseudobulk dropped it, and why.
"""

from __future__ import annotations

import logging
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

logger = logging.getLogger("batchglm")

#: Key of ``pb.obs.attrs``: dropped column -> why, for the error of a formula naming it.
DROPPED_ATTR = "batchglm_dropped_columns"
#: Key of ``pb.uns`` that marks ``bg.pseudobulk`` output (kept through subsetting and h5ad).
PSEUDOBULK_KEY = "batchglm_pseudobulk"


def _keys(groupby: str | Sequence[str], name: str = "groupby") -> list[str]:
    keys = [groupby] if isinstance(groupby, str) else list(groupby)
    if not keys:
        raise ValueError(f"`{name}` must name at least one column of `adata.obs`.")
    return keys


def _is_factor(column: pd.Series) -> bool:
    """Categorical, string, object or boolean: a column that could be a design factor."""
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def reused_label_evidence(obs: pd.DataFrame, dropped: list[str], codes: Any) -> dict[str, str]:
    """Find dropped factors that look like sample-level annotations summed across reused labels.

    A factor ``c`` that varies within pseudobulk samples is either a cell-level annotation
    (cluster, phase) or a sample-level one whose sample labels were reused across its
    values ("d1" in ctrl and "d1" in stim). The data tell them apart only through another
    column ``d`` (age, sex, batch, library) that varies within samples, is constant
    within every sample-by-``c`` combination, and is not a function of ``c`` alone: then
    the combinations, not the labels, are the samples.

    Parameters
    ----------
    obs : pandas.DataFrame
        Cell annotations, ``(n_obs, k)``.
    dropped : list of str
        Columns of ``obs`` that vary within the pseudobulk samples.
    codes : ndarray
        ``(n_obs,)`` pseudobulk sample of every cell.

    Returns
    -------
    dict
        Factor name -> the name of a corroborating column, for the factors with evidence.
    """
    found: dict[str, str] = {}
    factors = [c for c in dropped if _is_factor(obs[c])]
    if not factors:
        return found
    n_values = obs[dropped].nunique(dropna=False)
    n_samples = len(np.unique(codes))
    for col in factors:
        # Constant within sample x value combinations: at most that many distinct values
        # (cheap pre-filter that leaves out continuous cell-level measures).
        limit = n_samples * n_values[col]
        others = [d for d in dropped if d != col and n_values[d] <= limit]
        if not others:
            continue
        within_combo = obs[others].groupby(
            [codes, obs[col].to_numpy()], observed=True, dropna=False
        )
        constant = within_combo.nunique(dropna=False).le(1).all(axis=0)
        candidates = [d for d in others if constant[d]]
        if not candidates:
            continue
        by_value = obs[candidates].groupby(obs[col].to_numpy(), observed=True, dropna=False)
        varies = by_value.nunique(dropna=False).gt(1).any(axis=0)
        for d in candidates:
            if varies[d]:
                found[col] = d
                break
    return found


def _dropped_reason(
    column: pd.Series,
    col: str,
    n_mixed: int,
    n_groups: int,
    sample_arg: str | list[str],
    sample_keys: list[str],
) -> str:
    """Why a formula cannot use a column that bg.pseudobulk dropped, and what to do."""
    head = (
        f"bg.pseudobulk dropped it because it varies within {n_mixed} of {n_groups} samples "
        f"of `sample={sample_arg!r}`"
    )
    if not _is_factor(column):
        # A continuous cell-level measure (n_genes, percent mito): adding it to `sample`
        # would make nearly every cell its own sample.
        return (
            f"{head}: it is a cell-level measurement; to adjust for it at sample level, add "
            f"its per-sample mean to the pseudobulk obs, e.g. "
            f"`pb.obs[{col!r}] = adata.obs.groupby({sample_arg!r}, observed=True)"
            f"[{col!r}].mean()` (aligned to the pseudobulk's sample names), or fit the cells "
            "with `random_effects=`"
        )
    return (
        f"{head}: if those labels were reused for different samples, pass "
        f"`sample={[*sample_keys, col]!r}` or make the labels unique; if it is a cell-level "
        f"annotation (cluster, cell type), pass `groupby={col!r}` to test within its levels"
    )


def _warn_dropped(obs: pd.DataFrame, dropped: list[str], sample: list[str], codes: Any) -> None:
    """Log dropped columns; warn about the factors that look summed across reused labels."""
    if dropped:
        logger.info("pseudobulk: obs columns %s vary within samples and were dropped", dropped)
    evidence = reused_label_evidence(obs, dropped, codes)
    if not evidence:
        return
    col, other = next(iter(evidence.items()))
    n_mixed = int(obs[col].groupby(codes, observed=True).nunique(dropna=False).gt(1).sum())
    sample_arg = sample[0] if len(sample) == 1 else sample
    warnings.warn(
        f"`obs` column {col!r} varies within {n_mixed} of {int(codes.max()) + 1} pseudobulk "
        f"samples of `sample={sample_arg!r}` and was dropped{_more(list(evidence))}, but "
        f"{other!r} is constant within each sample and {col!r} combination and not within "
        f"the samples: the labels look reused across {col!r} values (one label for "
        f"different samples), and their cells were summed together. Pass "
        f"`sample={[*sample, col]!r}` or make the labels unique; if {col!r} is a cell-level "
        "annotation, ignore this.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def _more(columns: list[str]) -> str:
    return f" (as were {columns[1:]})" if len(columns) > 1 else ""


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
        When a dropped categorical ``obs`` column looks like a sample-level annotation
        summed across reused sample labels (:func:`reused_label_evidence`): names it, how
        many samples mix its values, the corroborating column, and
        ``sample=[..., column]``. Every dropped column is logged at INFO level and
        recorded in ``obs.attrs["batchglm_dropped_columns"]``, so that a formula naming
        it later says why it is missing.
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
    mixed: dict[str, int] = {}
    for col in obs.columns:
        per_group = obs[col].groupby(table["_group"].to_numpy(), observed=True)
        n_mixed = int((per_group.nunique(dropna=False) > 1).sum())
        if col in keys or n_mixed == 0:
            first = per_group.first().reindex(range(n_groups)).to_numpy()
            if isinstance(obs[col].dtype, pd.CategoricalDtype):
                columns[col] = pd.Categorical(first, categories=obs[col].cat.categories)
            else:
                columns[col] = first
        else:
            dropped.append(str(col))
            mixed[str(col)] = n_mixed
    _warn_dropped(obs, dropped, sample_keys, table["_group"].to_numpy())
    out_obs = pd.DataFrame(columns, index=pd.Index(names))
    out_obs["n_cells"] = n_cells
    out_obs = out_obs[[*keys, *[c for c in out_obs.columns if c not in keys]]]
    out_obs = out_obs.iloc[np.flatnonzero(keep)]
    # Read by a formula that names a dropped column (batchglm.formula), to say why it is
    # missing; pandas keeps attrs through copies, not through h5ad files or subsetting.
    sample_arg = sample_keys[0] if len(sample_keys) == 1 else sample_keys
    out_obs.attrs[DROPPED_ATTR] = {
        col: _dropped_reason(obs[col], col, n, n_groups, sample_arg, sample_keys)
        for col, n in mixed.items()
    }
    return anndata.AnnData(
        X=np.asarray(summed[keep], dtype=np.float64),
        obs=out_obs,
        var=adata.var.copy(),
        # Read by bg.fit: sums over different numbers of cells need size factors.
        uns={PSEUDOBULK_KEY: {"sample": list(sample_keys)}},
    )
