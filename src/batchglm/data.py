"""Input data and size factors.

Data stay in their own storage: dense numpy, scipy.sparse (kept sparse, in CSC layout so
feature blocks are cheap to cut), dask (kept lazy) or, for matrices on disk (backed
``.h5ad``, zarr), feature blocks laid out in one streaming pass (:mod:`batchglm.backed`).
The solver only ever sees dense float64 blocks of a few features, made by
:meth:`Data.block`, in the blocks of :mod:`batchglm.blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import sparse

from batchglm.input_types import is_dask_array

if TYPE_CHECKING:
    pass

    from batchglm.nonzeros import NonZeros

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Data:
    """Observations with their names.

    Attributes
    ----------
    values : ndarray, scipy.sparse.csc_array, dask.array.Array or FeatureBlockStore
        ``(n_obs, n_features)``: dense float64, sparse CSC float64, a lazy dask array, or
        feature blocks on disk (:mod:`batchglm.backed`).
    feature_names : pandas.Index
        One name per feature.
    obs_names : pandas.Index
        One name per observation.
    obs : pandas.DataFrame or None
        Observation annotations that came with the data (AnnData's ``.obs``), for formulas.
    """

    values: Any
    feature_names: pd.Index
    obs_names: pd.Index
    obs: pd.DataFrame | None = None

    @property
    def kind(self) -> str:
        """Storage: ``"dense"``, ``"sparse"``, ``"dask"`` or ``"disk"`` (feature blocks)."""
        from batchglm.backed import FeatureBlockStore

        if isinstance(self.values, np.ndarray):
            return "dense"
        if sparse.issparse(self.values):
            return "sparse"
        if isinstance(self.values, FeatureBlockStore):
            return "disk"
        return "dask"

    def block(self, features: slice) -> Array:
        """Dense C-contiguous float64 copy of some features, ``(n_obs, n_block)``.

        Parameters
        ----------
        features : slice
            Feature positions.

        Returns
        -------
        ndarray
            The block.
        """
        part = self.stored_block(features)
        if sparse.issparse(part):
            part = part.toarray()
        return np.ascontiguousarray(part, dtype=np.float64)

    def block_with_nonzeros(self, features: slice) -> tuple[Array, NonZeros | None]:
        """Dense block of some features and, for sparse storage, its non-zero entries.

        Parameters
        ----------
        features : slice
            Feature positions.

        Returns
        -------
        block : ndarray
            As :meth:`block`, ``(n_obs, n_block)``.
        nonzeros : NonZeros or None
            The block's non-zero entries listed from the CSC block itself (no pass over the
            dense block); ``None`` for dense storage.
        """
        from batchglm.nonzeros import NonZeros

        part = self.stored_block(features)
        if not sparse.issparse(part):
            return np.ascontiguousarray(part, dtype=np.float64), None
        dense = np.ascontiguousarray(part.toarray(), dtype=np.float64)
        return dense, NonZeros.of(part)

    def stored_block(self, features: slice) -> Any:
        """Return some features in their stored form, ``(n_obs, n_block)``.

        Parameters
        ----------
        features : slice
            Feature positions.

        Returns
        -------
        ndarray or scipy.sparse.csc_array
            Dense for dense data, CSC for sparse and sparse on-disk data; a dask block is
            computed (numpy, or CSC when its chunks are sparse).
        """
        part = self.values[:, features]
        if self.kind == "dask":
            part = part.compute()
        if sparse.issparse(part):
            return sparse.csc_array(part)
        return np.asarray(part)

    def reorder(self, obs: NDArray[np.intp] | None, features: NDArray[np.intp] | None) -> Data:
        """Take observations and features in another order.

        Parameters
        ----------
        obs : ndarray of intp or None
            Observation positions, ``(n_obs,)``; ``None`` keeps the order.
        features : ndarray of intp or None
            Feature positions, ``(n_features,)``; ``None`` keeps the order.

        Returns
        -------
        Data
            ``self`` when nothing moves; otherwise a copy in the same storage (sparse
            stays sparse, dask stays lazy).
        """
        if obs is None and features is None:
            return self
        values = self.values
        if self.kind == "disk":
            values = values.take(obs, features)
        elif self.kind == "dense" and obs is not None and features is not None:
            values = values[np.ix_(obs, features)]  # one copy, not two
        else:
            if obs is not None:
                values = values[obs]
            if features is not None:
                values = values[:, features]
        return Data(
            values,
            self.feature_names if features is None else self.feature_names[features],
            self.obs_names if obs is None else self.obs_names[obs],
            obs=self.obs if self.obs is None or obs is None else self.obs.iloc[obs],
        )

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_obs, n_features)``."""
        n, f = self.values.shape
        return int(n), int(f)


def as_matrix(values: Any, what: str) -> Any:
    """Validate the storage of a data matrix without densifying it.

    Parameters
    ----------
    values : array_like, scipy.sparse matrix/array, dask.array.Array or on-disk matrix
        ``(n_obs, n_features)`` values; an on-disk matrix is an h5py or zarr dataset or an
        anndata sparse dataset (see :func:`batchglm.backed.is_backed`).
    what : str
        How to name the input in messages.

    Returns
    -------
    ndarray, scipy.sparse.csc_array, dask.array.Array or FeatureBlockStore
        Dense float64, sparse CSC float64, the dask array as it is, or for a matrix on
        disk its feature-blocked copy (:func:`batchglm.backed.feature_blocked`).

    Raises
    ------
    ValueError
        When the values are not numeric or not 2-D.
    """
    from batchglm.backed import feature_blocked, is_backed

    if is_backed(values):
        # On disk (h5py / zarr / anndata sparse dataset): one streaming pass in row blocks
        # into feature blocks, never the whole matrix at once (batchglm.backed).
        return feature_blocked(values)
    if sparse.issparse(values) or is_dask_array(values):
        dtype = np.dtype(values.dtype)
        if dtype.kind not in "iuf":
            raise ValueError(f"{what} must be numeric, but its dtype is {dtype}.")
        if len(values.shape) != 2:
            raise ValueError(
                f"{what} must be 2-D (n_obs, n_features), but it has {len(values.shape)} "
                "dimension(s)."
            )
        if sparse.issparse(values):
            # CSC: cutting feature blocks touches only their non-zeros; the copy costs the
            # size of the non-zeros, never of the dense matrix.
            return sparse.csc_array(values, dtype=np.float64)
        return values
    try:
        dense = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a numeric (n_obs, n_features) matrix.") from None
    if dense.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D (n_obs, n_features), but it has {dense.ndim} dimension(s)."
        )
    return dense


def as_size_factors(size_factors: ArrayLike | None, n_obs: int) -> Array:
    """Validate per-observation size factors.

    Parameters
    ----------
    size_factors : array_like or None
        Positive ``(n_obs,)`` values; ``None`` means all ones.
    n_obs : int
        Number of observations.

    Returns
    -------
    ndarray
        Size factors as float64.

    Raises
    ------
    ValueError
        When there is not one size factor per observation, or one is not finite and
        positive.
    """
    if size_factors is None:
        return np.ones(n_obs)
    sf = np.asarray(size_factors, dtype=np.float64)
    if sf.ndim == 2 and 1 in sf.shape:
        sf = sf.ravel()
    if sf.shape != (n_obs,):
        raise ValueError(
            f"`size_factors` must have one value per observation, shape ({n_obs},), but its "
            f"shape is {sf.shape}."
        )
    bad = ~(np.isfinite(sf) & (sf > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"`size_factors` must be finite and positive, but {int(bad.sum())} are not; "
            f"the first is {float(sf[i])!r} at observation {i}."
        )
    return sf
