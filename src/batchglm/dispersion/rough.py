"""DESeq2's rough starting dispersions: the location fit that the gene-wise estimates use.

DESeq2 (``estimateDispersionsGeneEst``, Love, Huber and Anders 2014) never fits the
per-gene means and dispersions jointly. It starts from

``alpha_0 = min(alpha_rough, alpha_moments)``, clipped to ``[1e-8, max(10, n_obs)]``,

where, with normalised counts ``y / s`` (size factors ``s``), ``p`` location columns and
``n`` observations,

* ``alpha_rough = max(0, sum_i ((y_i/s_i - m_i)^2 - m_i) / m_i^2 / (n - p))`` with ``m``
  the least-squares fit of the normalised counts on the design, floored at 1
  (``roughDispEstimate`` / ``linearModelMu``), and
* ``alpha_moments = (v - xi m) / m^2`` with ``m`` and ``v`` the mean and sample variance
  (``n - 1``) of the normalised counts and ``xi = mean(1 / s)``
  (``momentsDispEstimate``),

computed here at the size factors scaled to geometric mean 1 (DESeq2 uses them as given,
so its start depends on their overall scale; ours does not), fits the location model at
``alpha_0`` held fixed, and estimates the Cox-Reid dispersion at
those means (one iteration). The fit at a fixed dispersion is about half the cost of the
joint maximum-likelihood fit, and the gene-wise estimate changes little with the means it
is made at (the final test refits the location at the shrunken dispersions in both
cases). :func:`batchglm.de.test` with ``dispersion`` ``"map"`` or ``"ql"`` starts this way
(:func:`rough_start`); :func:`batchglm.de.wald` and friends on a user's own fit keep that
fit's means.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm import blocks
from batchglm.align import align_inputs
from batchglm.data import as_size_factors
from batchglm.design import build_design
from batchglm.dispersion.cox_reid import MIN_ALPHA, max_alpha
from batchglm.dispersion.refit import fixed_log_r
from batchglm.inputs import as_data

Array = NDArray[np.float64]


def rough_dispersion(y: Array, size_factors: Array, x: Array) -> Array:
    """DESeq2's starting dispersion ``min(rough, moments)`` per feature, clipped.

    Parameters
    ----------
    y : ndarray
        Counts ``(n_obs, F)``.
    size_factors : ndarray
        ``(n_obs,)`` positive size factors.
    x : ndarray
        Location design ``(n_obs, p)`` of full column rank, ``p < n_obs``.

    Returns
    -------
    ndarray
        ``(F,)`` dispersions in ``[1e-8, max(10, n_obs)]``; ``NaN`` for all-zero features.
        Formulas: DESeq2's ``roughDispEstimate`` and ``momentsDispEstimate`` (see the
        module docstring).

    Raises
    ------
    ValueError
        If the design has no residual degrees of freedom (``p >= n_obs``).
    """
    n_obs, p = x.shape
    if p >= n_obs:
        raise ValueError(
            f"rough dispersions need more observations than location columns, but the design "
            f"has {p} columns for {n_obs} observations."
        )
    # bulkfix hook: the estimators assume size factors near 1; scaling them to geometric mean 1
    # (absorbed by the intercept) makes the start independent of their overall scale.
    size_factors = size_factors / np.exp(np.mean(np.log(size_factors)))
    norm = y / size_factors[:, None]
    q, _ = np.linalg.qr(x)
    fitted = np.maximum(q @ (q.T @ norm), 1.0)
    rough = np.maximum((((norm - fitted) ** 2 - fitted) / fitted**2).sum(axis=0) / (n_obs - p), 0)
    mean = norm.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        moments = (norm.var(axis=0, ddof=1) - np.mean(1.0 / size_factors) * mean) / mean**2
        alpha = np.clip(np.minimum(rough, moments), MIN_ALPHA, max_alpha(n_obs))
    return np.where(mean > 0, alpha, np.nan)


@dataclass(frozen=True)
class RoughStart:
    """What the initial fit of :func:`batchglm.de.test` needs: size factors and ``log r``.

    Attributes
    ----------
    size_factors : ndarray
        ``(n_obs,)`` the size factors (computed once, passed on to the fit).
    log_r : ndarray
        ``(n_features, 1)`` ``-log alpha_0`` in the data's feature order (0 for all-zero
        features), for :func:`batchglm.fit`'s ``fixed_scale``.
    """

    size_factors: Array
    log_r: Array


def rough_start(
    data: Any,
    design: Any,
    *,
    obs: pd.DataFrame | None,
    layer: str | None,
    size_factors: Any,
    constraints_loc: Any,
) -> RoughStart | None:
    """Size factors and DESeq2's starting dispersions for the initial location fit.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        Counts ``(n_obs, n_features)``.
    design : str, array_like or pandas.DataFrame
        Location design, as :func:`batchglm.fit`'s ``design_loc``.
    obs : pandas.DataFrame, optional
        Observation annotations for a formula.
    layer : str, optional
        AnnData layer with the counts.
    size_factors : str, array_like or None
        As :func:`batchglm.fit`'s (a method name is computed here once).
    constraints_loc : object
        Location constraints, as :func:`batchglm.fit`'s.

    Returns
    -------
    RoughStart or None
        ``None`` where the rough start does not apply (dask data, or no residual degrees
        of freedom): the caller then fits the dispersions jointly as before.
    """
    # The fit that follows reads the same data and warns about repeated names (once).
    d = as_data(data, layer=layer, warn_duplicates=False)
    if d.kind == "dask":
        return None
    n_obs, n_feat = d.shape
    with warnings.catch_warnings():
        # The fit that follows builds the same design and warns about it (once).
        warnings.simplefilter("ignore")
        obs_al, design_al, _, sf_al, _ = align_inputs(d, obs, design, None, size_factors, None)
        loc = build_design(design_al, constraints_loc, n_obs, "loc", obs=obs_al)
    x = np.asarray(loc.reduced, dtype=np.float64)
    if x.shape[1] >= n_obs:
        return None
    if isinstance(sf_al, str):
        from batchglm.size_factors import size_factors as named_size_factors

        sf_al = named_size_factors(d, sf_al)
    sf = as_size_factors(sf_al, n_obs)
    alpha = np.full(n_feat, np.nan)

    def _rough(sl: slice) -> None:
        alpha[sl] = rough_dispersion(d.block(sl), sf, x)

    # In the feature blocks' threads, as every other pass (each block writes its own slice).
    blocks.map_blocks(_rough, blocks.balanced_blocks(n_obs, n_feat))
    return RoughStart(sf, fixed_log_r(alpha)[:, None])
