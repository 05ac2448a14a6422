"""Size factors by name, computed feature block by feature block (sparse stays sparse).

* ``"median_ratio"`` (DESeq2's ``estimateSizeFactors``): per observation, the median over
  features of ``y / geometric mean of the feature``, using only features with no zero count.
* ``"poscounts"`` (DESeq2's ``type="poscounts"``, for sparse data where few features have
  no zero): the geometric mean of a feature counts only its positive values but divides by
  the number of observations, the median is over each observation's positive counts, and
  the factors are scaled to geometric mean 1.
* ``"normed_sum"``: total count per observation divided by the mean total.
* ``"tmm"``: edgeR's TMM effective library sizes (see :mod:`batchglm.tmm`).

Every method needs one pass over the features: per-feature geometric means depend only on
that feature, and the medians are taken over the collected ``(observation, log ratio)``
pairs, which are no more than the non-zero entries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm.data import Data, as_data

Array = NDArray[np.float64]

METHODS = ("median_ratio", "poscounts", "normed_sum", "tmm")
#: Features per dense block; bounded so a block of a tall matrix stays small.
_BLOCK_BYTES = 16 * 2**20


def _blocks(d: Data) -> Any:
    n_obs, n_feat = d.shape
    step = max(1, _BLOCK_BYTES // (8 * n_obs))
    for start in range(0, n_feat, step):
        yield slice(start, min(start + step, n_feat))


def _row_medians(rows: NDArray[np.intp], values: Array, n_obs: int) -> Array:
    """Median of ``values`` within each row label; ``NaN`` for rows without values."""
    order = np.lexsort((values, rows))
    rows, values = rows[order], values[order]
    counts = np.bincount(rows, minlength=n_obs)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full(n_obs, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = 0.5 * (values[lo] + values[hi])
    return out


def _log_ratio_entries(d: Data, method: str) -> tuple[NDArray[np.intp], Array]:
    """``(observation, log y - log geometric mean)`` for the entries the median uses."""
    n_obs = d.shape[0]
    rows: list[NDArray[np.intp]] = []
    vals: list[Array] = []
    if d.kind == "sparse":
        csc = sparse.csc_array(d.values)
        csc.sum_duplicates()
        csc.eliminate_zeros()
        _check_counts(csc.data)
        nnz = np.diff(csc.indptr)
        col = np.repeat(np.arange(csc.shape[1]), nnz)
        logs = np.log(csc.data)
        log_sum = np.bincount(col, weights=logs, minlength=csc.shape[1])
        if method == "median_ratio":
            keep_col = np.asarray(nnz == n_obs)
            log_gm = np.where(keep_col, log_sum / n_obs, np.nan)
        else:
            keep_col = np.asarray(nnz > 0)
            log_gm = log_sum / n_obs
        keep = keep_col[col]
        return csc.indices[keep].astype(np.intp), logs[keep] - log_gm[col[keep]]
    for sl in _blocks(d):
        y = d.block(sl)
        _check_counts(y)
        positive = y > 0
        with np.errstate(divide="ignore"):
            logs = np.log(y)
        log_sum = np.where(positive, logs, 0.0).sum(axis=0)
        cols = np.asarray(
            positive.all(axis=0) if method == "median_ratio" else positive.any(axis=0)
        )
        mask = positive & cols[None, :]
        r, c = np.nonzero(mask)
        rows.append(r.astype(np.intp))
        vals.append(logs[r, c] - log_sum[c] / n_obs)
    return np.concatenate(rows), np.concatenate(vals)


def _check_counts(values: Array) -> None:
    if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0):
        raise ValueError(
            "size factors by name need finite, non-negative counts, but `data` has negative "
            "or non-finite values."
        )


def _totals(d: Data) -> Array:
    if d.kind == "sparse":
        return np.asarray(d.values.sum(axis=1), dtype=np.float64).ravel()
    total = np.zeros(d.shape[0])
    for sl in _blocks(d):
        total += d.block(sl).sum(axis=1)
    return total


def size_factors(data: Any, method: str = "median_ratio", *, layer: str | None = None) -> Array:
    """Per-observation size factors computed from counts.

    Parameters
    ----------
    data : array_like, scipy.sparse, dask array, pandas.DataFrame or AnnData
        Counts ``(n_obs, n_features)``; sparse input is never densified.
    method : {"median_ratio", "poscounts", "normed_sum", "tmm"}
        See the module description.
    layer : str, optional
        AnnData layer with the counts.

    Returns
    -------
    ndarray
        Positive factors, shape ``(n_obs,)``.
    """
    if method not in METHODS:
        raise ValueError(
            f"`size_factors` must be an array or one of {list(METHODS)}, but {method!r} was "
            "given."
        )
    d = data if isinstance(data, Data) else as_data(data, layer=layer)
    n_obs = d.shape[0]
    if method == "tmm":  # edgeR's TMM, in its own module
        from batchglm.tmm import tmm_size_factors

        return tmm_size_factors(d)
    if method == "normed_sum":
        total = _totals(d)
        if np.any(total <= 0):
            raise ValueError(
                f"size factors by 'normed_sum' need a positive total count in every "
                f"observation, but observation {int(np.argmax(total <= 0))} has none."
            )
        return np.asarray(total / total.mean())
    rows, vals = _log_ratio_entries(d, method)
    log_sf = _row_medians(rows, vals, n_obs)
    if method == "median_ratio" and rows.size == 0:
        raise ValueError(
            "size factors by 'median_ratio' need features with a positive count in every "
            "observation, but every feature has a zero; use size_factors='poscounts'."
        )
    missing = ~np.isfinite(log_sf)
    if missing.any():
        raise ValueError(
            f"size factors by {method!r} need a positive count in every observation, but "
            f"observation {int(np.argmax(missing))} has none among the features used."
        )
    sf = np.exp(log_sf)
    if method == "poscounts":
        sf = sf / np.exp(np.mean(np.log(sf)))
    return np.asarray(sf)
