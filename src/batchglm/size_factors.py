"""Size factors by name, computed feature block by feature block (sparse stays sparse).

* ``"median_ratio"`` (DESeq2's ``estimateSizeFactors``): per observation, the median over
  features of ``y / geometric mean of the feature``, using only features with no zero count.
* ``"poscounts"`` (DESeq2's ``type="poscounts"``, for sparse data where few features have
  no zero): the geometric mean of a feature counts only its positive values but divides by
  the number of observations, the median is over each observation's positive counts, and
  the factors are scaled to geometric mean 1.
* ``"normed_sum"``: total count per observation divided by the mean total.
* ``"tmm"``: edgeR's TMM effective library sizes (see :mod:`batchglm.tmm`).

Frequency weights per observation (``weights``) make every method but TMM equal to the same
method on the data with each observation repeated ``weight`` times: the geometric means of
``"median_ratio"`` and ``"poscounts"`` weight each observation's log count by its weight
(observations of weight 0 are left out, so a feature needs positive counts only in the
observations of positive weight), the median over features per observation is unchanged,
and the final scalings (geometric mean 1, mean total) are weighted means.

Every method is one pass over the feature blocks of :mod:`batchglm.blocks`, in parallel
threads (dask tasks for dask input); one pass suffices: per-feature geometric means depend
only on that feature, and the medians are taken over the collected ``(observation, log ratio)``
pairs, which are no more than the non-zero entries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm import blocks
from batchglm.data import Data
from batchglm.input_types import dense_block
from batchglm.inputs import as_data

Array = NDArray[np.float64]

METHODS = ("median_ratio", "poscounts", "normed_sum", "tmm")


def _per_block(d: Data, func: Any, n_jobs: int | None, progress: bool | None) -> list[Any]:
    """``func(stored_block)`` over the feature blocks of :mod:`batchglm.blocks`, in order."""
    n_obs, n_feat = d.shape
    size = blocks.block_size(n_obs)
    show = blocks.show_progress(progress, n_obs, n_feat)
    if d.kind == "dask":

        def on_chunk(chunk: Any, sl: slice) -> Any:
            return func(sparse.csc_array(chunk) if sparse.issparse(chunk) else dense_block(chunk))

        return blocks.map_dask_blocks(
            on_chunk, d.values, size, progress=show, desc="batchglm.size_factors"
        )
    return blocks.map_blocks(
        lambda sl: func(d.stored_block(sl)),
        blocks.feature_blocks(n_feat, size),
        n_jobs=n_jobs,
        progress=show,
        desc="batchglm.size_factors",
    )


def _row_medians(rows: NDArray[np.integer[Any]], values: Array, n_obs: int) -> Array:
    """Median of ``values`` within each row label; ``NaN`` for rows without values."""
    counts = np.bincount(rows, minlength=n_obs)
    if rows.size and counts.min() == counts.max():
        # Every row has as many values (median ratio: each used feature is positive in every
        # observation): group them by a stable integer sort and take the medians by
        # partition, the same values as the sorted path below at a fraction of its cost.
        grouped = values[np.argsort(rows, kind="stable")].reshape(n_obs, -1)
        return np.asarray(np.median(grouped, axis=1), dtype=np.float64)
    order = np.lexsort((values, rows))
    rows, values = rows[order], values[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full(n_obs, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = 0.5 * (values[lo] + values[hi])
    return out


def _log_ratios(
    y: Any, method: str, weights: Array | None = None
) -> tuple[NDArray[np.integer[Any]], Array]:
    """``(observation, log y - log geometric mean)`` for the entries of one feature block.

    With ``weights`` ``(n_obs,)`` the geometric mean is weighted and a feature is used when
    its counts are positive in every (``"median_ratio"``) or some (``"poscounts"``)
    observation of positive weight.
    """
    n_obs = y.shape[0]
    total = float(n_obs) if weights is None else float(weights.sum())
    if sparse.issparse(y):
        csc = sparse.csc_array(y, dtype=np.float64, copy=True)
        csc.sum_duplicates()
        csc.eliminate_zeros()
        _check_counts(csc.data)
        nnz = np.diff(csc.indptr)
        col = np.repeat(np.arange(csc.shape[1]), nnz)
        logs = np.log(csc.data)
        if weights is None:
            log_sum = np.bincount(col, weights=logs, minlength=csc.shape[1])
            n_used, n_need = nnz, n_obs
        else:
            w_entry = weights[csc.indices]
            log_sum = np.bincount(col, weights=logs * w_entry, minlength=csc.shape[1])
            n_used = np.bincount(col, weights=w_entry > 0, minlength=csc.shape[1])
            n_need = int(np.count_nonzero(weights > 0))
        if method == "median_ratio":
            keep_col = np.asarray(n_used == n_need)
            log_gm = np.where(keep_col, log_sum / total, np.nan)
        else:
            keep_col = np.asarray(n_used > 0)
            log_gm = log_sum / total
        keep = keep_col[col]
        return csc.indices[keep].astype(_rows_dtype(n_obs)), logs[keep] - log_gm[col[keep]]
    y = np.asarray(y, dtype=np.float64)
    _check_counts(y)
    positive = y > 0
    with np.errstate(divide="ignore"):
        logs = np.log(y)
    if weights is None:
        log_sum = np.where(positive, logs, 0.0).sum(axis=0)
        used = positive
    else:
        log_sum = (np.where(positive, logs, 0.0) * weights[:, None]).sum(axis=0)
        used = positive[weights > 0]
    cols = np.asarray(used.all(axis=0) if method == "median_ratio" else used.any(axis=0))
    # Column-major order, as the sparse branch gives: results do not depend on storage.
    c, r = np.nonzero((positive & cols[None, :]).T)
    return r.astype(_rows_dtype(n_obs)), logs[r, c] - log_sum[c] / total


def _rows_dtype(n_obs: int) -> type[np.signedinteger[Any]]:
    # The collected pairs are as many as the non-zeros: int32 rows keep them at 12 bytes.
    return np.int32 if n_obs < 2**31 else np.int64


def _log_ratio_entries(
    d: Data, method: str, weights: Array | None, n_jobs: int | None, progress: bool | None
) -> tuple[NDArray[np.integer[Any]], Array]:
    """All blocks' ``(observation, log ratio)`` pairs, blocks in feature order."""
    parts = _per_block(d, lambda y: _log_ratios(y, method, weights), n_jobs, progress)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


class _InvalidCounts(ValueError):
    """Negative or non-finite counts in a block; located by :func:`_raise_first_invalid`."""


def _check_counts(values: Array) -> None:
    if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0):
        raise _InvalidCounts("negative or non-finite counts")


def _raise_first_invalid(d: Data, method: str) -> None:
    """Name the first negative or non-finite count (feature blocks in order, row-major).

    Only run once a block has failed, so the extra pass costs nothing on valid data.
    """
    n_obs, n_feat = d.shape
    count = 0
    first: tuple[int, int, float] | None = None
    for sl in blocks.feature_blocks(n_feat, blocks.block_size(n_obs)):
        y = d.stored_block(sl)
        if sparse.issparse(y):
            coo = sparse.coo_array(y)
            bad = ~(np.isfinite(coo.data) & (coo.data >= 0))
            rows, cols, vals = coo.row[bad], coo.col[bad], coo.data[bad]
        else:
            y = dense_block(y)
            rows, cols = np.nonzero(~(np.isfinite(y) & (y >= 0)))
            vals = y[rows, cols]
        count += int(rows.size)
        if first is None and rows.size:
            k = int(np.lexsort((cols, rows))[0])
            first = (int(rows[k]), int(cols[k]) + int(sl.start or 0), float(vals[k]))
    if first is None:
        return
    i, j, value = first
    raise ValueError(
        f"size factors by {method!r} need finite, non-negative counts, but `data` has "
        f"{count} negative or non-finite values; the first is {value!r} at observation {i} "
        f"({d.obs_names[i]!r}), feature {j} ({d.feature_names[j]!r})."
    )


def _block_totals(y: Any) -> Array:
    if sparse.issparse(y):
        _check_counts(y.data)
        return np.asarray(y.sum(axis=1), dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64)
    _check_counts(y)
    return np.asarray(y.sum(axis=1))


def _add(total: Array, part: Array) -> Array:
    return total + part


def _totals(d: Data, n_jobs: int | None, progress: bool | None) -> Array:
    """Per-observation totals, summed in feature-block order (any ``n_jobs``, same sums)."""
    n_obs, n_feat = d.shape
    size = blocks.block_size(n_obs)
    start = np.zeros(n_obs)
    if d.kind == "dask":

        def on_chunk(chunk: Any, sl: slice) -> Array:
            return _block_totals(
                sparse.csc_array(chunk) if sparse.issparse(chunk) else dense_block(chunk)
            )

        return np.asarray(blocks.fold_dask_blocks(on_chunk, d.values, size, _add, start))
    return np.asarray(
        blocks.fold_blocks(
            lambda sl: _block_totals(d.stored_block(sl)),
            blocks.feature_blocks(n_feat, size),
            _add,
            start,
            n_jobs=n_jobs,
            progress=blocks.show_progress(progress, n_obs, n_feat),
            desc="batchglm.size_factors",
        )
    )


def size_factors(
    data: Any,
    method: str = "median_ratio",
    *,
    weights: Any = None,
    layer: str | None = None,
    n_jobs: int | None = None,
    progress: bool | None = None,
) -> Array:
    """Per-observation size factors computed from counts.

    Parameters
    ----------
    data : array_like, scipy.sparse, dask array, pandas.DataFrame or AnnData
        Counts ``(n_obs, n_features)``; sparse input is never densified.
    method : {"median_ratio", "poscounts", "normed_sum", "tmm"}
        See the module description.
    weights : array_like, optional
        Frequency weights per observation, shape ``(n_obs,)`` in the data's order, finite,
        non-negative and not all 0. Integer weights give the size factors of the data with
        each observation repeated ``weight`` times (DESeq2's estimator on the repeated
        rows); an observation of weight 0 does not change the other observations' factors
        (its own factor is still its median ratio, or 1 when it has no usable count).
        Not available for ``"tmm"``.
    layer : str, optional
        AnnData layer with the counts.
    n_jobs : int, optional
        Threads over feature blocks (:func:`batchglm.blocks.map_blocks`); by default the
        available CPU cores. Dask input runs one dask task per block instead. The result
        does not depend on ``n_jobs``.
    progress : bool, optional
        Progress bar over feature blocks; by default only for long passes on a terminal.

    Returns
    -------
    ndarray
        Positive factors, shape ``(n_obs,)``.

    Raises
    ------
    ValueError
        For an unknown method, negative or non-finite counts (naming the first, by
        observation and feature), observations the method cannot normalise (no
        positive count among the features it uses), ``weights`` of the wrong shape,
        negative, non-finite or all 0, or ``weights`` other than 1 with ``"tmm"``.
    """
    if method not in METHODS:
        raise ValueError(
            f"`size_factors` must be an array or one of {list(METHODS)}, but {method!r} was given."
        )
    d = data if isinstance(data, Data) else as_data(data, layer=layer)
    w = _check_weights(weights, d.shape[0], method)
    try:
        return _size_factors(d, method, w, n_jobs, progress)
    except _InvalidCounts:
        _raise_first_invalid(d, method)
        raise


def _check_weights(weights: Any, n_obs: int, method: str) -> Array | None:
    """``weights`` as a float ``(n_obs,)`` array, or None for none (or all 1)."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_obs,):
        raise ValueError(
            f"`weights` for size factors must have shape ({n_obs},) (one per observation), "
            f"but shape {w.shape} was given."
        )
    if not (np.all(np.isfinite(w)) and w.min() >= 0 and w.max() > 0):
        raise ValueError(
            "`weights` for size factors must be finite, non-negative and not all 0, but "
            f"they range from {w.min()!r} to {w.max()!r}."
        )
    if np.all(w == 1.0):
        return None
    if method == "tmm":
        raise ValueError(
            "size factors by 'tmm' cannot honour `weights` other than 1 (edgeR's TMM has no "
            "frequency weights); use 'median_ratio', 'poscounts' or 'normed_sum', or pass "
            "size factors you computed."
        )
    return w


def _size_factors(
    d: Data, method: str, w: Array | None, n_jobs: int | None, progress: bool | None
) -> Array:
    n_obs = d.shape[0]
    if method == "tmm":  # edgeR's TMM, in its own module
        from batchglm.tmm import tmm_size_factors

        return tmm_size_factors(d)
    if method == "normed_sum":
        total = _totals(d, n_jobs, progress)
        if np.any(total <= 0):
            raise ValueError(
                f"size factors by 'normed_sum' need a positive total count in every "
                f"observation, but observation {int(np.argmax(total <= 0))} has none."
            )
        mean_total = total.mean() if w is None else np.sum(w * total) / w.sum()
        return np.asarray(total / mean_total)
    rows, vals = _log_ratio_entries(d, method, w, n_jobs, progress)
    log_sf = _row_medians(rows, vals, n_obs)
    if rows.size == 0 or not np.all(np.isfinite(log_sf)):
        # An observation without a single count leaves no ratio to take (and gives every
        # feature a zero): say so rather than blame the method.
        total = _totals(d, n_jobs, progress)
        empty = np.flatnonzero(total <= 0) if w is None else np.flatnonzero((total <= 0) & (w > 0))
        if empty.size:
            raise ValueError(
                f"size factors need a positive count in every observation, but "
                f"{empty.size} observation(s) have no counts at all (observation "
                f"{int(empty[0])} first); remove them before fitting (no size factor can "
                "scale an empty library)."
            )
    if method == "median_ratio" and rows.size == 0:
        raise ValueError(
            "size factors by 'median_ratio' need features with a positive count in every "
            "observation, but every feature has a zero; use size_factors='poscounts'."
        )
    missing = ~np.isfinite(log_sf)
    if w is not None:  # an observation of weight 0 has no say: factor 1 when unusable
        log_sf[missing & (w == 0)] = 0.0
        missing &= w > 0
    if missing.any():
        raise ValueError(
            f"size factors by {method!r} need a positive count in every observation, but "
            f"observation {int(np.argmax(missing))} has none among the features used."
        )
    sf = np.exp(log_sf)
    if method == "poscounts":
        log_all = np.log(sf)
        mean_log = np.mean(log_all) if w is None else np.sum(w * log_all) / w.sum()
        sf = sf / np.exp(mean_log)
    return np.asarray(sf)
