"""Fitting dask arrays: one task per feature chunk, on whatever scheduler is active.

All observations of a feature live in one task (the array is rechunked to a single chunk
along observations), features are split across tasks. Each task runs the same per-block
solver as an in-memory fit, so results are identical; a task lost with its worker is simply
recomputed by dask, which makes fits robust to worker failures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from batchglm.input_types import dense_block, is_dask_array
from batchglm.solvers.block_fit import fit_block
from batchglm.solvers.newton import SolverOptions
from batchglm.solvers.objective import Problem

Array = NDArray[np.float64]

__all__ = ["dense_block", "fit_dask", "is_dask_array"]


def fit_dask(
    values: Any,
    problem: Problem,
    options: SolverOptions,
    validate: Callable[[Array, int], None],
    chunk_size: int,
) -> tuple[Array, Array, Array, NDArray[np.int32], NDArray[np.int8]]:
    """Fit every feature of a dask array, one task per feature chunk.

    Parameters
    ----------
    values : dask.array.Array
        Observations ``(n_obs, n_features)``; chunks of numpy or scipy.sparse arrays.
    problem : Problem
        Designs, family and offsets (sent to every task).
    options : SolverOptions
        Solver settings.
    validate : callable
        ``validate(y, first_feature)`` raises ``ValueError`` for data outside the family's
        domain; ``first_feature`` makes positions in messages global.
    chunk_size : int
        Features per task when the array's own chunks are larger.

    Returns
    -------
    tuple of ndarray
        ``theta, cov, loglik, n_iter, status`` for all features.
    """
    n_obs, n_feat = values.shape
    k = problem.n_params
    width = 3 + k + k * k
    col_chunks = values.chunks[1]
    if max(col_chunks) > chunk_size:
        values = values.rechunk({0: -1, 1: chunk_size})
    else:
        values = values.rechunk({0: -1})
    transposed = values.T
    packed = transposed.map_blocks(
        _fit_packed,
        problem,
        options,
        validate,
        dtype=np.float64,
        chunks=(transposed.chunks[0], (width,)),
        meta=np.empty((0, 0)),
    )
    out = np.asarray(packed.compute())
    theta = out[:, 3 : 3 + k]
    cov = out[:, 3 + k :].reshape(n_feat, k, k)
    return (
        np.ascontiguousarray(theta),
        np.ascontiguousarray(cov),
        out[:, 0].copy(),
        out[:, 1].astype(np.int32),
        out[:, 2].astype(np.int8),
    )


def _fit_packed(
    block_t: Any,
    problem: Problem,
    options: SolverOptions,
    validate: Callable[[Array, int], None],
    block_info: dict[Any, Any] | None = None,
) -> Array:
    y = dense_block(block_t.T)
    start = 0
    if block_info is not None and 0 in block_info:
        start = int(block_info[0]["array-location"][0][0])
    validate(y, start)
    with threadpool_limits(limits=1, user_api="blas"):
        theta, cov, loglik, n_iter, status = fit_block(problem, y, options)
    n = y.shape[1]
    return np.concatenate(
        [
            loglik[:, None],
            n_iter[:, None].astype(np.float64),
            status[:, None].astype(np.float64),
            theta,
            cov.reshape(n, -1),
        ],
        axis=1,
    )
