"""Matrices on disk, laid out again by feature blocks in one streaming pass.

A backed ``.h5ad`` (``anndata.read_h5ad(path, backed="r")``) or a zarr store keeps its
matrix on disk, usually as CSR (one row per cell): reading the features of one gene means
reading every row. :func:`feature_blocked` reads the matrix once, in row (observation)
blocks, and writes each row block's columns into the feature blocks of
:func:`batchglm.blocks.feature_blocks`; afterwards every pass reads whole feature blocks
through :meth:`batchglm.data.Data.block`. The whole matrix is never read at once.

Where the result goes (documented rule, ``memory_budget``, default 2 GiB):

* in memory, as a scipy CSC float64 matrix (or a dense float64 array for a dense source),
  when the relayout's peak (the source's non-zeros held once in its own dtype plus the CSC
  copy: ``nnz * (itemsize + 4 + 12)`` bytes; dense: ``8 * n_obs * n_features``) fits the
  budget;
* otherwise on disk, in a temporary directory (``tmp_dir``, default the system's) of one
  file pair per feature block (values in the source's dtype, row indices as int32/int64),
  held by a :class:`FeatureBlockStore` and removed when it is garbage collected. The peak
  extra memory is then one row block plus one feature block, far below the CSR matrix.

A CSC source is already feature-major: in memory it is read feature block by feature block;
beyond the budget its feature blocks are read from the source file on demand.

Dense sources (an h5py or zarr 2-D dataset) are read in row blocks the same way.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from tqdm.auto import tqdm

from batchglm.blocks import block_size, feature_blocks, show_progress

Array = NDArray[np.float64]

#: Default bytes the relayout may hold in memory before it goes to disk.
DEFAULT_MEMORY_BUDGET = 2 * 2**30
#: Largest number of non-zeros (sparse) or values (dense) in one row block read.
ROW_BLOCK_ENTRIES = 2**22
#: Smallest row block, in entries, so small files are not read in tiny pieces.
MIN_ROW_BLOCK_ENTRIES = 2**15


def is_backed(values: object) -> bool:
    """Whether ``values`` is a matrix on disk that :func:`feature_blocked` reads.

    Parameters
    ----------
    values : object
        Anything.

    Returns
    -------
    bool
        True for an ``h5py.Dataset``, a ``zarr.Array`` and anndata's on-disk sparse
        datasets (``anndata.abc.CSRDataset`` / ``CSCDataset``, from a backed AnnData or
        ``anndata.io.sparse_dataset``).
    """
    for t in type(values).__mro__:
        mod = t.__module__.split(".")[0]
        if (mod == "h5py" and t.__name__ == "Dataset") or (mod == "zarr" and t.__name__ == "Array"):
            return True
        if mod == "anndata" and t.__name__ == "BaseCompressedSparseDataset":
            return True
    return False


def _index_dtype(n_obs: int) -> np.dtype[Any]:
    return np.dtype(np.int32) if n_obs < 2**31 else np.dtype(np.int64)


def _sparse_format(values: Any) -> str | None:
    fmt = getattr(values, "format", None)
    if fmt in ("csr", "csc") and not isinstance(values, np.ndarray):
        return str(fmt)
    return None


#: Whether the current relayout draws a progress bar (set by :func:`feature_blocked`).
_SHOW = threading.local()


def _row_blocks(values: Any, fmt: str | None, n_obs: int, n_feat: int) -> Any:
    """Observation slices with about the same number of entries each (with a bar if asked)."""
    spans = _row_spans(values, fmt, n_obs, n_feat)
    return tqdm(
        spans, disable=not getattr(_SHOW, "on", False), unit="row block", desc="batchglm.read"
    )


def _row_spans(values: Any, fmt: str | None, n_obs: int, n_feat: int) -> list[slice]:
    if fmt == "csr":
        indptr = np.asarray(values.group["indptr"][:], dtype=np.int64)
        nnz = int(indptr[-1])
        target = int(np.clip(nnz // 32, MIN_ROW_BLOCK_ENTRIES, ROW_BLOCK_ENTRIES))
        out, start = [], 0
        while start < n_obs:
            # Last row whose block stays within `target` entries (at least one row).
            stop = int(np.searchsorted(indptr, indptr[start] + target, side="right")) - 1
            stop = min(max(stop, start + 1), n_obs)
            out.append(slice(start, stop))
            start = stop
        return out
    total = n_obs * n_feat
    target = int(np.clip(total // 32, MIN_ROW_BLOCK_ENTRIES, ROW_BLOCK_ENTRIES))
    rows = max(1, target // max(n_feat, 1))
    return [slice(s, min(s + rows, n_obs)) for s in range(0, n_obs, rows)]


@dataclass(eq=False)
class FeatureBlockStore:
    """Feature blocks of a matrix in files on disk, read one block at a time.

    Made by :func:`feature_blocked`; use it as :class:`batchglm.data.Data` values. Blocks
    come back as float64 (scipy CSC for sparse, C-contiguous dense otherwise).

    Attributes
    ----------
    stored_shape : tuple of int
        ``(n_obs, n_features)`` as stored (:attr:`shape` is the view's, after :meth:`take`).
    blocks : list of slice
        The stored feature blocks.
    dense : bool
        Whether blocks are dense.
    directory : pathlib.Path or None
        Where the files are (``None``: blocks are read from a CSC ``source``).
    """

    stored_shape: tuple[int, int]
    blocks: list[slice]
    dense: bool
    directory: Path | None
    value_dtype: np.dtype[Any]
    index_dtype: np.dtype[Any]
    #: ``(n_row_blocks, n_features)`` non-zeros of each row block in each feature.
    counts: NDArray[np.int64] | None = None
    source: Any = None
    #: Observations and features of the stored matrix in this view's order (``None``: as
    #: stored); set by :meth:`take`.
    obs_order: NDArray[np.intp] | None = None
    feature_order: NDArray[np.intp] | None = None
    #: The store that owns the files (views keep it, and so its files, alive).
    owner: FeatureBlockStore | None = field(default=None, repr=False)
    _starts: NDArray[np.intp] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._starts = np.array([b.start for b in self.blocks], dtype=np.intp)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_obs, n_features)`` of this view (after :meth:`take`)."""
        n = self.stored_shape[0] if self.obs_order is None else len(self.obs_order)
        f = self.stored_shape[1] if self.feature_order is None else len(self.feature_order)
        return n, f

    def take(
        self, obs: NDArray[np.intp] | None, features: NDArray[np.intp] | None
    ) -> FeatureBlockStore:
        """Return a view with observations and features in another order (no data copied).

        Parameters
        ----------
        obs, features : ndarray of intp or None
            Positions in this view; ``None`` keeps the order.

        Returns
        -------
        FeatureBlockStore
            The same files, read in the new order.
        """
        rows = (
            self.obs_order
            if obs is None
            else (np.asarray(obs, dtype=np.intp) if self.obs_order is None else self.obs_order[obs])
        )
        cols = (
            self.feature_order
            if features is None
            else (
                np.asarray(features, dtype=np.intp)
                if self.feature_order is None
                else self.feature_order[features]
            )
        )
        view = copy.copy(self)
        view.obs_order, view.feature_order = rows, cols
        view.owner = self if self.owner is None else self.owner
        return view

    def __array__(self, *args: Any, **kwargs: Any) -> NDArray[Any]:
        """Refuse to turn the whole matrix into one array.

        Raises
        ------
        TypeError
            Always: the matrix is kept on disk to be read by feature blocks.
        """
        raise TypeError(
            f"a FeatureBlockStore keeps a {self.shape[0]} x {self.shape[1]} matrix on disk to "
            "be read by feature blocks (Data.block); converting it whole would load it into "
            "memory. Read it with a larger `memory_budget` to get an in-memory matrix."
        )

    @property
    def dtype(self) -> np.dtype[Any]:
        """float64, the dtype of every block read."""
        return np.dtype(np.float64)

    @property
    def nbytes_on_disk(self) -> int:
        """Bytes of the block files (0 when blocks are read from the source)."""
        if self.directory is None:
            return 0
        return sum(p.stat().st_size for p in self.directory.iterdir())

    def read_block(self, i: int) -> Any:
        """Feature block ``i`` as float64.

        Parameters
        ----------
        i : int
            Position in :attr:`blocks`.

        Returns
        -------
        scipy.sparse.csc_array or ndarray
            ``(n_obs, width)``.
        """
        sl = self.blocks[i]
        n_obs, width = self.stored_shape[0], sl.stop - sl.start
        if self.source is not None:
            return sparse.csc_array(self.source[:, sl], dtype=np.float64)
        assert self.directory is not None
        values = np.fromfile(self.directory / f"{i}.values", dtype=self.value_dtype)
        if self.dense:
            return values.astype(np.float64).reshape(n_obs, width)
        rows = np.fromfile(self.directory / f"{i}.rows", dtype=self.index_dtype)
        assert self.counts is not None
        counts = self.counts[:, sl]  # (n_row_blocks, width), written row block by row block
        col = np.repeat(np.tile(np.arange(width), counts.shape[0]), counts.ravel())
        # Row blocks were appended in order, so a stable sort by feature leaves rows sorted.
        order = np.argsort(col, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(counts.sum(axis=0))])
        return sparse.csc_array(
            (values[order].astype(np.float64), rows[order], indptr), shape=(n_obs, width)
        )

    def __getitem__(self, key: Any) -> Any:
        """``store[:, features]`` for a slice (step 1) or integer positions.

        Parameters
        ----------
        key : tuple
            ``(slice(None), features)``.

        Returns
        -------
        scipy.sparse.csc_array or ndarray
            ``(n_obs, len(features))`` float64.

        Raises
        ------
        IndexError
            For any other kind of index (rows are not selectable on a store).
        """
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)):
            raise IndexError(
                "a FeatureBlockStore is indexed as store[:, features]; rows cannot be selected "
                f"on disk, but {key!r} was given."
            )
        cols = key[1]
        out = self._columns(cols if self.feature_order is None else self.feature_order[cols])
        if self.obs_order is not None:
            out = out[self.obs_order]
        return sparse.csc_array(out) if sparse.issparse(out) else out

    def _columns(self, cols: Any) -> Any:
        n_feat = self.stored_shape[1]
        if isinstance(cols, slice) and cols.step in (None, 1):
            start, stop, _ = cols.indices(n_feat)
            i = int(np.searchsorted(self._starts, start, side="right")) - 1
            if i >= 0 and self.blocks[i] == slice(start, stop):
                return self.read_block(i)
            pos = np.arange(start, stop)
        else:
            pos = np.arange(n_feat)[cols]
        pos = np.atleast_1d(np.asarray(pos, dtype=np.intp))
        which = np.searchsorted(self._starts, pos, side="right") - 1
        parts = []
        for i in np.unique(which):
            block = self.read_block(int(i))
            parts.append((np.flatnonzero(which == i), block[:, pos[which == i] - self._starts[i]]))
        if self.dense:
            out = np.empty((self.stored_shape[0], len(pos)))
            for where, part in parts:
                out[:, where] = part
            return out
        if not parts:
            return sparse.csc_array((self.stored_shape[0], 0))
        stacked = sparse.hstack([p for _, p in parts], format="csc")
        order = np.argsort(np.concatenate([w for w, _ in parts]), kind="stable")
        return sparse.csc_array(stacked[:, order])


def _cleanup(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def feature_blocked(
    values: Any,
    *,
    memory_budget: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> Any:
    """Lay a matrix on disk out by feature blocks, reading it once in row blocks.

    Parameters
    ----------
    values : h5py.Dataset, zarr.Array or anndata sparse dataset
        ``(n_obs, n_features)`` on disk: CSR or CSC sparse, or dense 2-D.
    memory_budget : int, optional
        Bytes the result may take in memory (see the module description); default
        :data:`DEFAULT_MEMORY_BUDGET` (2 GiB). ``0`` always goes to disk.
    tmp_dir : path-like, optional
        Where the on-disk blocks go; default the system's temporary directory.
    progress : bool, optional
        A ``tqdm.auto`` bar over row blocks; by default only for large matrices on a
        terminal (:func:`batchglm.blocks.show_progress`).

    Returns
    -------
    scipy.sparse.csc_array, ndarray or FeatureBlockStore
        In-memory float64 CSC (sparse source) or dense array, or the on-disk store.

    Raises
    ------
    ValueError
        When the values are not numeric or not 2-D.
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    if budget < 0:
        raise ValueError(f"`memory_budget` must be at least 0 bytes, but {budget} was given.")
    shape = tuple(int(s) for s in values.shape)
    if len(shape) != 2:
        raise ValueError(
            f"a matrix on disk must be 2-D (n_obs, n_features), but it has {len(shape)} "
            "dimension(s)."
        )
    n_obs, n_feat = shape
    _SHOW.on = show_progress(progress, n_obs, n_feat)
    try:
        return _relayout(values, budget, tmp_dir, n_obs, n_feat)
    finally:
        _SHOW.on = False


def _relayout(
    values: Any, budget: int, tmp_dir: str | os.PathLike[str] | None, n_obs: int, n_feat: int
) -> Any:
    dtype = np.dtype(values.dtype)
    if dtype.kind not in "iuf":
        raise ValueError(f"a matrix on disk must be numeric, but its dtype is {dtype}.")
    fmt = _sparse_format(values)
    fblocks = feature_blocks(n_feat, block_size(n_obs))
    idx = _index_dtype(n_obs)
    if fmt is None:
        if 8 * n_obs * n_feat <= budget:
            out = np.empty((n_obs, n_feat))
            for rb in _row_blocks(values, None, n_obs, n_feat):
                out[rb] = np.asarray(values[rb])
            return out
        return _dense_to_disk(values, fblocks, n_obs, n_feat, dtype, tmp_dir)
    nnz = int(values.group["indptr"][-1])
    in_memory = nnz * (dtype.itemsize + idx.itemsize + 8 + idx.itemsize) <= budget
    if fmt == "csc":
        if in_memory:
            return _csc_to_memory(values, fblocks, n_obs, n_feat, nnz, idx)
        return FeatureBlockStore((n_obs, n_feat), fblocks, False, None, dtype, idx, source=values)
    if in_memory:
        return _csr_to_memory(values, fblocks, n_obs, n_feat, nnz, idx)
    return _csr_to_disk(values, fblocks, n_obs, n_feat, dtype, idx, tmp_dir)


def _make_dir(tmp_dir: str | os.PathLike[str] | None) -> Path:
    return Path(tempfile.mkdtemp(prefix="batchglm-blocks-", dir=tmp_dir))


def _dense_to_disk(
    values: Any,
    fblocks: list[slice],
    n_obs: int,
    n_feat: int,
    dtype: np.dtype[Any],
    tmp_dir: str | os.PathLike[str] | None,
) -> FeatureBlockStore:
    directory = _make_dir(tmp_dir)
    store = FeatureBlockStore((n_obs, n_feat), fblocks, True, directory, dtype, np.dtype(np.int64))
    weakref.finalize(store, _cleanup, str(directory))
    for rb in _row_blocks(values, None, n_obs, n_feat):
        rows = np.asarray(values[rb])
        for i, fb in enumerate(fblocks):
            # C order within a block of fixed width: appended row blocks make the whole
            # (n_obs, width) block in C order.
            with open(directory / f"{i}.values", "ab") as fh:
                np.ascontiguousarray(rows[:, fb], dtype=dtype).tofile(fh)
    return store


def _csr_rows(values: Any, rb: slice) -> sparse.csc_array:
    part = sparse.csr_array(values[rb])
    part.sum_duplicates()
    return sparse.csc_array(part)


def _csr_to_disk(
    values: Any,
    fblocks: list[slice],
    n_obs: int,
    n_feat: int,
    dtype: np.dtype[Any],
    idx: np.dtype[Any],
    tmp_dir: str | os.PathLike[str] | None,
) -> FeatureBlockStore:
    directory = _make_dir(tmp_dir)
    rblocks = _row_blocks(values, "csr", n_obs, n_feat)
    counts = np.zeros((len(rblocks.iterable), n_feat), dtype=np.int64)
    store = FeatureBlockStore((n_obs, n_feat), fblocks, False, directory, dtype, idx, counts)
    weakref.finalize(store, _cleanup, str(directory))
    for r, rb in enumerate(rblocks):
        piece = _csr_rows(values, rb)
        counts[r] = np.diff(piece.indptr)
        for i, fb in enumerate(fblocks):
            lo, hi = piece.indptr[fb.start], piece.indptr[fb.stop]
            with open(directory / f"{i}.values", "ab") as fh:
                np.asarray(piece.data[lo:hi], dtype=dtype).tofile(fh)
            with open(directory / f"{i}.rows", "ab") as fh:
                (piece.indices[lo:hi].astype(idx) + np.asarray(rb.start, dtype=idx)).tofile(fh)
    return store


def _csr_to_memory(
    values: Any, fblocks: list[slice], n_obs: int, n_feat: int, nnz: int, idx: np.dtype[Any]
) -> sparse.csc_array:
    # Each row block once as CSC in the source's dtype (a feature block is a contiguous
    # range of it), then the final arrays are filled feature block by feature block.
    pieces = []
    col_nnz = np.zeros(n_feat, dtype=np.int64)
    for rb in _row_blocks(values, "csr", n_obs, n_feat):
        piece = _csr_rows(values, rb)
        piece.indices = piece.indices.astype(idx, copy=False)
        col_nnz += np.diff(piece.indptr)
        pieces.append((rb.start, piece))
    indptr = np.concatenate([[0], np.cumsum(col_nnz)])
    data = np.empty(int(indptr[-1]))
    indices = np.empty(int(indptr[-1]), dtype=idx)
    for fb in fblocks:
        width = fb.stop - fb.start
        vals = np.concatenate([p.data[p.indptr[fb.start] : p.indptr[fb.stop]] for _, p in pieces])
        rows = np.concatenate(
            [
                p.indices[p.indptr[fb.start] : p.indptr[fb.stop]] + np.asarray(s, idx)
                for s, p in pieces
            ]
        )
        cnt = np.stack([np.diff(p.indptr[fb.start : fb.stop + 1]) for _, p in pieces])
        col = np.repeat(np.tile(np.arange(width), cnt.shape[0]), cnt.ravel())
        # Row blocks in order: a stable sort by feature leaves each feature's rows sorted.
        order = np.argsort(col, kind="stable")
        lo, hi = indptr[fb.start], indptr[fb.stop]
        data[lo:hi] = vals[order]
        indices[lo:hi] = rows[order]
    return sparse.csc_array((data, indices, indptr), shape=(n_obs, n_feat))


def _csc_to_memory(
    values: Any, fblocks: list[slice], n_obs: int, n_feat: int, nnz: int, idx: np.dtype[Any]
) -> sparse.csc_array:
    indptr = np.asarray(values.group["indptr"][:], dtype=np.int64)
    data = np.empty(nnz)
    indices = np.empty(nnz, dtype=idx)
    for fb in fblocks:
        part = sparse.csc_array(values[:, fb])
        lo, hi = indptr[fb.start], indptr[fb.stop]
        data[lo:hi] = part.data
        indices[lo:hi] = part.indices
    out = sparse.csc_array((data, indices, indptr), shape=(n_obs, n_feat))
    out.sum_duplicates()
    return out
