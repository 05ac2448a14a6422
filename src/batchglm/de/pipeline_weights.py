"""Observation weights and offsets in the bulk pipeline (:func:`batchglm.de.test`).

:func:`batchglm.fit` takes frequency weights and location offsets (``obs_weights.py``);
the pipeline passes them through every fit and states what it cannot do with them:

* weights per observation enter the named size factors (median-ratio, poscounts,
  normed_sum; :func:`batchglm.size_factors.size_factors`), so integer weights give the
  table of duplicated rows and a weight-0 observation does not move the others' factors;
  TMM has no weighted form and is refused with weights other than 1;

* an offset per observation is a normalisation factor per sample, ``exp(offset)``, and
  is folded into the size factors, so every step (dispersions, Cook's distances, the
  replacement of outliers, ``baseMean``) treats it as DESeq2 treats size factors;
* weights and offsets per observation and feature enter the fits only: the MAP and QL
  dispersion estimators and DESeq2's Cook's distances are unweighted and know one
  normalisation factor per sample, so they are refused with a one-line error instead of
  silently ignoring the weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm.align import align_inputs
from batchglm.data import as_size_factors
from batchglm.inputs import as_data
from batchglm.obs_weights import as_weights, obs_array
from batchglm.size_factors import size_factors as named_size_factors

Array = NDArray[np.float64]


def resolve_weights_offset(
    data: Any,
    layer: str | None,
    obs: Any,
    size_factors: Any,
    weights: Any,
    offset: Any,
    counts_family: bool,
) -> tuple[Array | None, Any, Array | None]:
    """Align weights and offset to the data, and fold a per-observation offset into size factors.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts ``(n_obs, n_features)``.
    layer : str, optional
        AnnData layer of ``data``.
    obs : pandas.DataFrame, optional
        Observation annotations (for ``obs`` column names).
    size_factors : str, array_like or None
        A method name, values or None, as :func:`batchglm.fit` takes them.
    weights, offset : array_like, pandas.Series, pandas.DataFrame, str or None
        As :func:`batchglm.fit` takes them (natural-log offset for count families).
    counts_family : bool
        Whether the family has a log link for the mean (``"nb"``, ``"poisson"``).

    Returns
    -------
    weights : ndarray or None
        ``(n_obs,)`` or ``(n_obs, n_features)`` in the data's order.
    size_factors : str, array_like or None
        Unchanged; the named method's factors computed with the weights (an ``(n_obs,)``
        array, :func:`batchglm.size_factors.size_factors`) when the weights are per
        observation, so that integer weights give the factors of duplicated rows; times
        ``exp(offset)`` when the offset is per observation and the family has a log link.
    offset : ndarray or None
        The offset left to pass to the fits: ``(n_obs, n_features)``, or ``(n_obs,)`` for
        families without a log link; ``None`` when folded.

    Raises
    ------
    ValueError
        As :func:`batchglm.fit` for weights, offsets or size factors that do not match the
        data, and for weights other than 1 with ``size_factors="tmm"``.
    """
    if weights is None and offset is None:
        return None, size_factors, None
    d = as_data(data, layer=layer)
    given_sf = None if isinstance(size_factors, str) else size_factors
    obs_al, _, _, sf_al, _ = align_inputs(d, obs, None, None, given_sf, None)
    w = as_weights(weights, d, obs_al)
    off = obs_array(offset, d, obs_al, "offset")
    if isinstance(size_factors, str) and w is not None and w.ndim == 1:
        # Weighted estimation: integer weights give the factors of duplicated rows.
        size_factors = named_size_factors(d, size_factors, weights=w)
        sf_al = size_factors
    if off is None or off.ndim == 2 or not counts_family:
        return w, size_factors, off
    n_obs = d.shape[0]
    if isinstance(size_factors, str):
        sf = as_size_factors(named_size_factors(d, size_factors), n_obs)
    elif size_factors is None:
        sf = np.ones(n_obs)
    else:
        sf = as_size_factors(sf_al, n_obs)
    return w, sf * np.exp(off), None


def check_weighted_options(
    weights: Array | None,
    offset: Array | None,
    dispersion: str,
    cooks_cutoff: Any,
    method: str = "wald",
) -> None:
    """Refuse the pipeline options that would ignore weights or a per-feature offset.

    Parameters
    ----------
    weights : ndarray or None
        Aligned weights.
    offset : ndarray or None
        The offset left after :func:`resolve_weights_offset`.
    dispersion : str
        ``"mle"``, ``"map"`` or ``"ql"``.
    cooks_cutoff : object
        ``None`` when Cook's distances are off.
    method : str
        ``"wald"``, ``"lrt"`` or ``"ql"`` (for the message: ``"ql"`` always uses the QL
        dispersion).

    Raises
    ------
    NotImplementedError
        For weights or a per-feature offset with ``dispersion`` ``"map"`` or ``"ql"``.
    ValueError
        For Cook's distances with weights other than 1 or with a per-feature offset.
    """
    per_feature = offset is not None and offset.ndim == 2
    what = "`weights`" if weights is not None else "an `offset` per observation and feature"
    if (weights is not None or per_feature) and method == "ql":
        raise NotImplementedError(
            f"bg.de.test with {what} needs method 'wald' or 'lrt' with dispersion='mle' (the "
            "QL dispersion estimator ignores them), but method='ql' was given."
        )
    if (weights is not None or per_feature) and dispersion != "mle":
        raise NotImplementedError(
            f"bg.de.test with {what} needs dispersion='mle' (the MAP and QL dispersion "
            f"estimators ignore them), but dispersion={dispersion!r} was given (the NB "
            "default is 'map'); pass dispersion='mle' with method 'wald' or 'lrt'."
        )
    if cooks_cutoff is None:
        return
    if weights is not None and not np.all(weights == 1.0):
        raise ValueError(
            "Cook's distances and outlier replacement (DESeq2's) are defined for unweighted "
            "counts, but `weights` other than 1 were given; pass cooks_cutoff=None."
        )
    if per_feature:
        raise ValueError(
            "Cook's distances use one normalisation factor per observation, but an `offset` "
            "per observation and feature was given; pass cooks_cutoff=None (or an offset "
            "per observation, which acts as size factors)."
        )


def weighted_base_mean(
    values: Any, sf: Array, weights: Array | None, offset: Array | None
) -> Array:
    """DESeq2's ``baseMean``: mean of the normalised counts, weighted by frequency weights.

    Parameters
    ----------
    values : ndarray or scipy.sparse matrix
        Counts ``(n_obs, n_features)``; sparse stays sparse.
    sf : ndarray
        ``(n_obs,)`` size factors.
    weights : ndarray or None
        ``(n_obs,)`` or ``(n_obs, n_features)`` frequency weights; ``sum w y/s / sum w`` is
        the plain mean over duplicated observations.
    offset : ndarray or None
        ``(n_obs, n_features)`` natural-log offset: each count is divided by
        ``sf * exp(offset)`` (DESeq2's normalisation factors).

    Returns
    -------
    ndarray
        ``(n_features,)`` baseMean, in counts.
    """
    scale = 1.0 / sf[:, None]
    if offset is not None:
        scale = scale * np.exp(-offset)
    if sparse.issparse(values):
        normed: Any = sparse.csr_array(values).multiply(scale)
    else:
        normed = np.asarray(values, dtype=np.float64) * scale
    if weights is None:
        return np.asarray(normed.mean(axis=0)).ravel()
    w = weights[:, None] if weights.ndim == 1 else weights
    total = normed.multiply(w) if sparse.issparse(normed) else normed * w
    return np.asarray(total.sum(axis=0)).ravel() / np.broadcast_to(w, normed.shape).sum(axis=0)
