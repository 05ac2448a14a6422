"""Feature blocks: one size rule and one parallel map for every pass over the data.

Every pass that touches the data matrix (the fit, size factors, pseudobulk sums, the
on-disk relayout of :mod:`batchglm.backed`) walks the features in contiguous blocks of
``block_size(n_obs)`` features, so one dense float64 block ``(n_obs, width)`` stays near
:data:`BLOCK_BYTES` (4 MiB: element-wise passes run from cache; one feature at least).
:func:`map_blocks` runs a function on every block, on threads
for in-memory and on-disk data (NumPy releases the GIL in its kernels; BLAS is held to one
thread per worker so the threads do not oversubscribe the cores) and as one dask task per
block for dask input, with an optional ``tqdm.auto`` progress bar counted in features.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from threadpoolctl import ThreadpoolController
from tqdm.auto import tqdm

T = TypeVar("T")

#: Bytes of one dense float64 feature block ``(n_obs, width)``.
BLOCK_BYTES = 4 * 2**20
#: Fewest features per block. One: the fit's working memory is about 16 times a dense block,
#: so a floor above one would let a million cells take gigabytes per thread; per-block
#: overheads are small next to the work on such tall blocks.
MIN_BLOCK = 1
#: Observation-feature pairs above which a pass takes seconds: worth a bar on a terminal.
PROGRESS_PAIRS = 5e7


def block_size(n_obs: int, chunk_size: int | None = None) -> int:
    """Features per block.

    Parameters
    ----------
    n_obs : int
        Observations (rows of every block).
    chunk_size : int, optional
        A size chosen by the caller; by default ``max(MIN_BLOCK, BLOCK_BYTES // (8 n_obs))``.

    Returns
    -------
    int
        Features per block, at least 1.

    Raises
    ------
    ValueError
        When ``chunk_size`` is below 1.
    """
    if chunk_size is None:
        return max(MIN_BLOCK, BLOCK_BYTES // (8 * max(int(n_obs), 1)))
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be at least 1, but {chunk_size} was given.")
    return int(chunk_size)


def feature_blocks(n_features: int, size: int) -> list[slice]:
    """Contiguous feature slices of ``size`` features (the last may be shorter).

    Parameters
    ----------
    n_features : int
        Number of features.
    size : int
        Features per block (see :func:`block_size`).

    Returns
    -------
    list of slice
        ``ceil(n_features / size)`` slices covering ``0 .. n_features`` in order.
    """
    return [slice(s, min(s + size, n_features)) for s in range(0, n_features, size)]


def n_workers(n_jobs: int | None) -> int:
    """Threads for a parallel pass.

    Parameters
    ----------
    n_jobs : int, optional
        Requested threads; by default the CPU cores available to this process.

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    ValueError
        When ``n_jobs`` is below 1.
    """
    if n_jobs is None:
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1
    if n_jobs < 1:
        raise ValueError(f"`n_jobs` must be at least 1, but {n_jobs} was given.")
    return int(n_jobs)


#: Fewest features per block of :func:`balanced_blocks` (smaller blocks repeat per-block
#: work that is shared by a block's features).
MIN_BALANCED = 64


def balanced_blocks(
    n_obs: int, n_features: int, n_jobs: int | None = None, smallest: int = MIN_BALANCED
) -> list[slice]:
    """Feature blocks of the common size, cut so that every thread gets work.

    With few observations the common block (:func:`block_size`, 4 MiB of counts) holds
    thousands of features: 10,000 features x 85 observations make two blocks of 6,168 and
    3,832 features, and with two threads one of them idles for a fifth of the pass. Two
    blocks per thread (of at least ``smallest`` features, never above the common size)
    balance the threads.

    Parameters
    ----------
    n_obs : int
        Observations (rows of every block).
    n_features : int
        Number of features.
    n_jobs : int, optional
        Threads of the pass (see :func:`n_workers`).
    smallest : int
        Fewest features per block.

    Returns
    -------
    list of slice
        Contiguous slices covering ``0 .. n_features`` in order.
    """
    per_thread = -(-n_features // (2 * n_workers(n_jobs)))
    size = min(block_size(n_obs), max(smallest, per_thread, 1))
    return feature_blocks(n_features, size)


def show_progress(progress: bool | None, n_obs: int, n_features: int) -> bool:
    """Whether to draw a bar: as asked, or by default for long passes on a terminal.

    Parameters
    ----------
    progress : bool, optional
        The caller's choice; ``None`` decides from the size.
    n_obs, n_features : int
        Size of the pass.

    Returns
    -------
    bool
        ``progress`` when given, else whether ``n_obs * n_features`` exceeds
        :data:`PROGRESS_PAIRS` and stderr is a terminal.
    """
    if progress is not None:
        return bool(progress)
    return n_obs * n_features > PROGRESS_PAIRS and sys.stderr.isatty()


#: The BLAS libraries found at the last scan and the number of modules loaded then.
_CONTROLLER: tuple[ThreadpoolController, int] | None = None


def single_threaded_blas() -> Any:
    """Return a context manager that limits BLAS to one thread, as ``threadpool_limits``.

    Finding the loaded BLAS libraries scans every shared library of the process (several
    ms, tens under load) each time ``threadpool_limits`` is entered; the scan is kept and
    redone only when modules were imported since (a new extension may bring its own BLAS).

    Returns
    -------
    contextlib.AbstractContextManager
        Restores the previous limits on exit.
    """
    global _CONTROLLER
    n_modules = len(sys.modules)
    if _CONTROLLER is None or _CONTROLLER[1] != n_modules:
        _CONTROLLER = (ThreadpoolController(), n_modules)
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def map_blocks(
    func: Callable[[slice], T],
    blocks: Sequence[slice],
    *,
    n_jobs: int | None = None,
    progress: bool = False,
    desc: str = "batchglm",
) -> list[T]:
    """Run ``func`` on every feature block, in parallel threads, results in block order.

    Parameters
    ----------
    func : callable
        ``func(block) -> result`` for one feature slice; it reads its own data (e.g. with
        :meth:`batchglm.data.Data.block`) and must not write to memory shared with other
        blocks except its own slice of an output.
    blocks : sequence of slice
        Feature slices (see :func:`feature_blocks`).
    n_jobs : int, optional
        Threads; by default the available CPU cores. ``1`` runs in the calling thread.
    progress : bool
        Draw a ``tqdm.auto`` bar counted in features.
    desc : str
        Label of the bar.

    Returns
    -------
    list
        ``[func(b) for b in blocks]``: the same values, in the same order, whatever
        ``n_jobs`` is.

    Raises
    ------
    Exception
        The first exception raised by ``func``; blocks not yet started are cancelled.
    """
    jobs = min(n_workers(n_jobs), max(len(blocks), 1))
    total = sum(b.stop - b.start for b in blocks)
    bar = tqdm(total=total, disable=not progress, unit="feature", desc=desc)
    try:
        # Blocks are small batched products: multi-threaded BLAS inside each would only
        # add synchronisation, which collapses when other processes compete for the cores.
        with single_threaded_blas():
            if jobs == 1:
                out = []
                for b in blocks:
                    out.append(func(b))
                    bar.update(b.stop - b.start)
                return out
            return _threaded(func, blocks, jobs, bar)
    finally:
        bar.close()


def fold_blocks(
    func: Callable[[slice], T],
    blocks: Sequence[slice],
    combine: Callable[[Any, T], Any],
    initial: Any,
    *,
    n_jobs: int | None = None,
    progress: bool = False,
    desc: str = "batchglm",
) -> Any:
    """Fold ``combine`` over ``func(block)`` in block order, holding few results at once.

    Like :func:`map_blocks`, but the blocks run in windows of ``2 n_jobs`` and each window's
    results are folded into the accumulator before the next starts, so memory holds a few
    block results, not all of them (per-block row sums of a tall matrix would otherwise
    add up to ``n_obs x n_blocks``).

    Parameters
    ----------
    func : callable
        ``func(block) -> result``.
    blocks : sequence of slice
        Feature slices.
    combine : callable
        ``combine(accumulator, result) -> accumulator``, applied in block order, so the
        result does not depend on ``n_jobs``.
    initial : object
        The starting accumulator.
    n_jobs : int, optional
        Threads; by default the available CPU cores.
    progress : bool
        Draw a ``tqdm.auto`` bar counted in features.
    desc : str
        Label of the bar.

    Returns
    -------
    object
        The final accumulator.

    Raises
    ------
    Exception
        The first exception raised by ``func`` (earliest block of its window).
    """
    jobs = min(n_workers(n_jobs), max(len(blocks), 1))
    window = 2 * jobs
    acc = initial
    bar = tqdm(
        total=sum(_width(b) for b in blocks), disable=not progress, unit="feature", desc=desc
    )
    try:
        with single_threaded_blas():
            for start in range(0, len(blocks), window):
                part = blocks[start : start + window]
                if jobs == 1:
                    results = []
                    for b in part:
                        results.append(func(b))
                        bar.update(_width(b))
                else:
                    results = _threaded(func, part, jobs, bar)
                for r in results:
                    acc = combine(acc, r)
    finally:
        bar.close()
    return acc


def _threaded(func: Callable[[slice], T], blocks: Sequence[slice], jobs: int, bar: Any) -> list[T]:
    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(func, b) for b in blocks]
    index = {f: i for i, f in enumerate(futures)}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in done:
                bar.update(_width(blocks[index[f]]))
            if any(f.exception() is not None for f in done):
                break
    finally:
        # Blocks not yet started are dropped; running ones finish before we return.
        pool.shutdown(wait=True, cancel_futures=True)
    failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
    if failed:
        # The earliest failing block, so the message does not depend on thread timing.
        raise failed[0].exception()  # type: ignore[misc]
    return [f.result() for f in futures]


def _width(block: slice) -> int:
    return int(block.stop - block.start)


def fold_dask_blocks(
    func: Callable[[Any, slice], T],
    values: Any,
    size: int,
    combine: Callable[[Any, T], Any],
    initial: Any,
) -> Any:
    """Fold ``combine`` over ``func(chunk, block)`` of a dask array's feature blocks.

    The fold runs in the task graph, in block order, so only the final accumulator comes
    back to the caller.

    Parameters
    ----------
    func : callable
        ``func(chunk, block) -> result`` as in :func:`map_dask_blocks`.
    values : dask.array.Array
        ``(n_obs, n_features)``.
    size : int
        Features per block.
    combine : callable
        ``combine(accumulator, result) -> accumulator``, in block order.
    initial : object
        The starting accumulator.

    Returns
    -------
    object
        The final accumulator.
    """
    import dask

    arr = values.rechunk({0: -1, 1: size})
    acc: Any = initial
    start = 0
    for width, chunk in zip(arr.chunks[1], arr.to_delayed().ravel(), strict=True):
        part = dask.delayed(func)(chunk, slice(start, start + int(width)))
        acc = dask.delayed(combine)(acc, part)
        start += int(width)
    return dask.compute(acc)[0]


def map_dask_blocks(
    func: Callable[[Any, slice], T],
    values: Any,
    size: int,
    *,
    progress: bool = False,
    desc: str = "batchglm",
) -> list[T]:
    """Run ``func`` on every feature block of a dask array, one dask task per block.

    Parameters
    ----------
    func : callable
        ``func(chunk, block) -> result``; ``chunk`` is the block's values ``(n_obs,
        width)`` as the dask chunk holds them (numpy or scipy.sparse), ``block`` its
        feature slice. It runs on whatever scheduler is active (threads, or the workers
        of a ``distributed`` cluster, so it must pickle).
    values : dask.array.Array
        ``(n_obs, n_features)``.
    size : int
        Features per block; the array is rechunked to whole columns of this width.
    progress : bool
        Draw a ``tqdm.auto`` bar (it advances when the whole computation returns).
    desc : str
        Label of the bar.

    Returns
    -------
    list
        One result per block, in feature order.
    """
    import dask

    n_feat = int(values.shape[1])
    arr = values.rechunk({0: -1, 1: size})
    starts = [0]
    for width in arr.chunks[1]:
        starts.append(starts[-1] + int(width))
    delayed = arr.to_delayed().ravel()
    tasks = [
        dask.delayed(func)(chunk, slice(starts[i], starts[i + 1]))
        for i, chunk in enumerate(delayed)
    ]
    with tqdm(total=n_feat, disable=not progress, unit="feature", desc=desc) as bar:
        out = list(dask.compute(*tasks))
        bar.update(n_feat)
    return out
