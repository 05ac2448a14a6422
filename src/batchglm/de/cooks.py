"""Cook's distances of the location fit and DESeq2's count-outlier rules.

For observation ``i`` and feature ``j`` of an NB (or Poisson) location fit (DESeq2's
``calculateCooksDistance``, Love, Huber and Anders 2014, *Genome Biology* 15:550)::

    D_ij = (y_ij - mu_ij)^2 / (mu_ij + a_j mu_ij^2) * h_ij / (p (1 - h_ij)^2)

* ``mu_ij``: the fitted mean, size factors included;
* ``h_ij``: diagonal of the hat matrix ``W^1/2 X (X^T W X)^-1 X^T W^1/2`` of the location
  design (after constraints) with IRLS weights ``w_ij = mu_ij / (1 + mu_ij / r_ij)`` at the
  fit's own NB size ``r`` (for DESeq2's pipeline: the MAP dispersion);
* ``a_j``: **not** the fitted dispersion but DESeq2's robust method-of-moments dispersion
  (``robustMethodOfMomentsDisp``): from the normalised counts, the largest trimmed
  within-cell variance over the design cells (identical design rows) with at least 3
  observations (trim 1/3, 1/4 or 1/8 of each tail for cells of <= 3, <= 23 or more
  observations, variances scaled by 2.04, 1.86, 1.51 for the trimming), or the trimmed
  variance over all observations when no cell has 3; ``a = max((v - m) / m^2, 0.04)`` with
  ``m`` the mean normalised count. The floor 0.04 stops the other counts of the outlier's
  group from getting large distances as well. The counts are normalised by the size
  factors scaled to geometric mean 1: DESeq2 uses them as given, which makes ``v - m``
  (and the outlier calls) depend on their overall scale (0.85 % in maxCooks on Marioni).
* ``p``: the number of free location coefficients.

Distances are computed feature block by feature block, the blocks in parallel threads
(:func:`batchglm.blocks.map_blocks`, :func:`batchglm.blocks.balanced_blocks`: every
thread gets work also when all features fit one common block); each block is vectorised
over its features and only per-feature summaries and the (few) entries above the cutoff
are kept. A feature's distances do not depend on the blocks or the number of threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm import blocks
from batchglm.families.tails import f_ppf
from batchglm.inputs import data_of_fit
from batchglm.result import FitResult

Array = NDArray[np.float64]

#: Trim fraction, variance scale for a cell of n observations: n <= 3.5, <= 23.5, more.
_TRIM = (1.0 / 3.0, 1.0 / 4.0, 1.0 / 8.0)
_TRIM_SCALE = (2.04, 1.86, 1.51)
#: Floor of the robust dispersion (DESeq2's ``minDisp`` in ``robustMethodOfMomentsDisp``).
ROBUST_MIN_DISP = 0.04
#: Observations per design cell needed for a Cook's distance to count (DESeq2).
MIN_CELL_FOR_COOKS = 3


def _blocks(n_obs: int, n_feat: int, n_jobs: int | None) -> list[slice]:
    """Feature blocks of the common size (4 MiB of counts), at least two per thread."""
    return blocks.balanced_blocks(n_obs, n_feat, n_jobs)


def default_cutoff(n_obs: int, p: int) -> float:
    """DESeq2's default Cook's cutoff, the 0.99 quantile of ``F(p, n_obs - p)``.

    Parameters
    ----------
    n_obs : int
        Observations.
    p : int
        Free location coefficients.

    Returns
    -------
    float
        The cutoff; ``inf`` when ``n_obs <= p`` (no residual degrees of freedom).
    """
    if n_obs <= p:
        return float("inf")
    return f_ppf(0.99, p, n_obs - p)


def design_cells(x: Array) -> NDArray[np.intp]:
    """Cell label per observation: observations with identical design rows share one.

    Parameters
    ----------
    x : ndarray
        Design ``(n_obs, p)``.

    Returns
    -------
    ndarray of int
        Labels ``0..n_cells-1`` in order of first appearance.
    """
    _, first, inverse = np.unique(np.round(x, 12), axis=0, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return np.asarray(order[np.ravel(inverse)], dtype=np.intp)


def cells_with_at_least(cells: NDArray[np.intp], n: int) -> NDArray[np.bool_]:
    """Whether each observation's design cell has at least ``n`` observations.

    Parameters
    ----------
    cells : ndarray of int
        Cell labels from :func:`design_cells`.
    n : int
        Minimum cell size.

    Returns
    -------
    ndarray of bool
        One value per observation (DESeq2's ``nOrMoreInCell``).
    """
    return np.asarray(np.bincount(cells)[cells] >= n)


def _trim_index(n: int) -> int:
    return 0 if n <= 3 else (1 if n <= 23 else 2)


def _trimmed_mean(sorted_block: Array, trim: float) -> Array:
    """R's ``mean(x, trim=trim)`` down the rows of a sorted block (median for trim >= 0.5)."""
    n = sorted_block.shape[0]
    k = int(np.floor(n * trim))
    if 2 * k >= n:
        return np.asarray(np.median(sorted_block, axis=0))
    return np.asarray(sorted_block[k : n - k].mean(axis=0))


def robust_dispersion(normed: Array, cells: NDArray[np.intp]) -> Array:
    """DESeq2's robust method-of-moments NB dispersion used by Cook's distances.

    Parameters
    ----------
    normed : ndarray
        Normalised counts (counts divided by size factors), ``(n_obs, B)``.
    cells : ndarray of int
        Design cell per observation (:func:`design_cells`).

    Returns
    -------
    ndarray
        ``max((v - m) / m^2, 0.04)`` per feature, ``(B,)``; ``NaN`` for all-zero features.
        See the module description for ``v``.
    """
    big = np.flatnonzero(np.bincount(cells) >= MIN_CELL_FOR_COOKS)
    if big.size:
        var = np.full(normed.shape[1], -np.inf)
        for c in big:
            sub = normed[cells == c]
            t = _trim_index(sub.shape[0])
            centre = _trimmed_mean(np.sort(sub, axis=0), _TRIM[t])
            sq = np.sort((sub - centre) ** 2, axis=0)
            var = np.maximum(var, _TRIM_SCALE[t] * _trimmed_mean(sq, _TRIM[t]))
    else:
        centre = _trimmed_mean(np.sort(normed, axis=0), _TRIM[2])
        var = _TRIM_SCALE[2] * _trimmed_mean(np.sort((normed - centre) ** 2, axis=0), _TRIM[2])
    m = normed.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = (var - m) / m**2
    return np.where(m > 0, np.maximum(alpha, ROBUST_MIN_DISP), np.nan)


def _block_cooks(
    y: Array, res: FitResult, sl: slice | NDArray[np.intp], cells: NDArray[np.intp]
) -> Array:
    """Cook's distances ``(n_obs, B)`` of the features ``sl`` (a slice or positions)."""
    x = res.loc.reduced
    n_obs, k = x.shape
    coef = res.theta_free[sl, :k]
    eta = np.minimum(x @ coef.T, 700.0)
    mu = res.size_factors[:, None] * np.exp(eta)
    if res.theta_free.shape[1] > k:
        log_r = res.scale.reduced @ res.theta_free[sl, k:].T
        with np.errstate(over="ignore"):
            w = mu / (1.0 + mu * np.exp(-log_r))
    else:
        w = mu
    xtwx = np.einsum("ik,if,il->fkl", x, w, x, optimize=True)
    with np.errstate(invalid="ignore"):
        try:
            inv = np.linalg.inv(xtwx)
        except np.linalg.LinAlgError:
            inv = np.linalg.pinv(xtwx, hermitian=True)
    hat = w * np.einsum("ik,fkl,il->if", x, inv, x, optimize=True)
    # DESeq2 normalises by the size factors as given; scaled to geometric mean 1, the
    # moment estimate (variance minus mean) no longer depends on their overall scale.
    sf = res.size_factors / np.exp(np.mean(np.log(res.size_factors)))
    alpha = robust_dispersion(y / sf[:, None], cells)
    with np.errstate(divide="ignore", invalid="ignore"):
        pearson_sq = (y - mu) ** 2 / (mu + alpha * mu**2)
        return np.asarray(pearson_sq / k * hat / (1.0 - hat) ** 2)


def cooks_distance(
    data: Any,
    res: FitResult,
    *,
    layer: str | None = None,
    features: Any = None,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """Cook's distance of every observation for each feature's location fit (DESeq2).

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit ``(n_obs, n_features)``, matched to it by name.
    res : FitResult
        An NB or Poisson fit; for DESeq2's values, the location fit at the MAP dispersions
        (``bg.de.test(...).fit``).
    layer : str, optional
        AnnData layer with the counts.
    features : slice or sequence of int, optional
        Feature positions to compute; ``None`` for all. Only an ``(n_obs, n_selected)``
        array is returned.
    n_jobs : int, optional
        Threads over feature blocks (:func:`batchglm.blocks.map_blocks`); by default the
        available CPU cores. The distances do not depend on it.

    Returns
    -------
    pandas.DataFrame
        ``(n_obs, n_selected)`` unitless distances, obs names x feature names; ``NaN`` for
        all-zero features.

    Raises
    ------
    ValueError
        If the fit's family is not ``"nb"`` or ``"poisson"``, or ``n_jobs`` is below 1.
    """
    _check_family(res)
    d = data_of_fit(data, res, layer=layer)
    pos = np.arange(d.shape[1])[features if features is not None else slice(None)]
    cells = design_cells(res.loc.reduced)
    out = np.empty((d.shape[0], pos.size))

    def block(sl: slice) -> None:
        inside = (pos >= sl.start) & (pos < sl.stop)
        if inside.any():
            cooks = _block_cooks(d.block(sl), res, sl, cells)
            out[:, inside] = cooks[:, pos[inside] - sl.start]

    blocks.map_blocks(block, _blocks(*d.shape, n_jobs), n_jobs=n_jobs)
    return pd.DataFrame(out, index=res.obs_names, columns=res.feature_names[pos])


def max_cooks_distance(
    data: Any, res: FitResult, *, features: Any = None, n_jobs: int | None = None
) -> Array:
    """Largest Cook's distance per feature, DESeq2's ``maxCooks`` (``recordMaxCooks``).

    The maximum over the observations whose design cell has at least 3 observations, of
    the distances of :func:`cooks_distance` (Love, Huber and Anders 2014). The pipeline
    uses it for the fit that gave a feature's p-value after outlier replacement: the
    refitted fit on the replaced counts.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit ``(n_obs, n_features)``, matched to it by name.
    res : FitResult
        An NB or Poisson fit.
    features : sequence of int, optional
        Feature positions to compute; ``None`` for all. Only ``(n_obs, block)`` arrays are
        built.
    n_jobs : int, optional
        Threads over feature blocks (:func:`batchglm.blocks.map_blocks`); by default the
        available CPU cores. The distances do not depend on it.

    Returns
    -------
    ndarray
        ``(n_selected,)`` unitless distances; ``NaN`` for all-zero features, when no
        observation is in a cell of 3 or when there are no residual degrees of freedom.

    Raises
    ------
    ValueError
        If the fit's family is not ``"nb"`` or ``"poisson"``, or ``n_jobs`` is below 1.
    """
    _check_family(res)
    d = data_of_fit(data, res)
    n_obs, n_feat = d.shape
    pos = np.arange(n_feat)[features if features is not None else slice(None)]
    out = np.full(pos.size, np.nan)
    cells = design_cells(res.loc.reduced)
    use = cells_with_at_least(cells, MIN_CELL_FOR_COOKS)
    if n_obs <= res.loc.n_free or not use.any():
        return out

    def block(sl: slice) -> None:
        inside = np.flatnonzero((pos >= sl.start) & (pos < sl.stop))
        if not inside.size:
            return
        at = pos[inside]
        cooks = _block_cooks(d.block(sl)[:, at - sl.start], res, at, cells)
        finite = np.isfinite(cooks)
        m = np.where(finite, cooks, -np.inf)[use].max(axis=0)
        out[inside] = np.where(finite.any(axis=0) & np.isfinite(m), m, np.nan)

    # Blocks over the whole range, cut by the selected features only, so that a few
    # refitted features do not read every block.
    spans = _selected_spans(np.unique(pos), n_obs, n_jobs)
    blocks.map_blocks(block, spans, n_jobs=n_jobs)
    return out


def _selected_spans(srt: NDArray[np.intp], n_obs: int, n_jobs: int | None) -> list[slice]:
    """Disjoint feature slices, one per block of the sorted unique positions ``srt``."""
    parts = _blocks(n_obs, srt.size, n_jobs)
    return [slice(int(srt[p.start]), int(srt[p.stop - 1]) + 1) for p in parts]


def _check_family(res: FitResult) -> None:
    if res.family not in ("nb", "poisson"):
        raise ValueError(
            f"Cook's distances need an NB or Poisson fit, but the fit's family is {res.family!r}."
        )


@dataclass(frozen=True)
class CooksOutliers:
    """Per-feature Cook's summaries and the counts above the cutoff.

    Attributes
    ----------
    cutoff : float
        The cutoff used.
    max_cooks : ndarray
        Largest distance over the observations in design cells with at least 3
        observations (DESeq2's ``maxCooks``); ``NaN`` when no such cell exists or there are
        no residual degrees of freedom.
    max_cooks_kept : ndarray
        The same over those observations that are not replaceable (cells with fewer than
        ``min_replicates`` observations): DESeq2's ``maxCooks`` after replacement.
    count_at_max : ndarray
        The count of the observation with the largest distance (over all observations).
    n_above_max : ndarray of int
        How many counts of the feature exceed ``count_at_max``.
    above : ndarray of bool
        Whether any distance exceeds the cutoff.
    replace_obs, replace_feature : ndarray of int
        Positions of the replaceable counts whose distance exceeds the cutoff.
    replaceable : ndarray of bool
        Per observation: in a cell with at least ``min_replicates`` observations.
    """

    cutoff: float
    max_cooks: Array
    max_cooks_kept: Array
    count_at_max: Array
    n_above_max: NDArray[np.int64]
    above: NDArray[np.bool_]
    replace_obs: NDArray[np.intp]
    replace_feature: NDArray[np.intp]
    replaceable: NDArray[np.bool_]


def find_outliers(
    data: Any,
    res: FitResult,
    cutoff: float,
    *,
    layer: str | None = None,
    min_replicates: float = 7,
    n_jobs: int | None = None,
) -> CooksOutliers:
    """Cook's distances of a fit, summarised per feature, in parallel feature blocks.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit.
    res : FitResult
        NB or Poisson fit (DESeq2: at the MAP dispersions).
    cutoff : float
        Distances above it are outliers (DESeq2: :func:`default_cutoff`).
    layer : str, optional
        AnnData layer with the counts.
    min_replicates : float
        Observations whose design cell has at least this many observations are
        replaceable (DESeq2's ``minReplicatesForReplace``, 7); ``inf`` for none.
    n_jobs : int, optional
        Threads over feature blocks (:func:`batchglm.blocks.map_blocks`); by default the
        available CPU cores. The result does not depend on it.

    Returns
    -------
    CooksOutliers
        Summaries; no ``(n_obs, n_features)`` array is kept.

    Raises
    ------
    ValueError
        If the fit's family is not ``"nb"`` or ``"poisson"``, or ``n_jobs`` is below 1.
    """
    _check_family(res)
    d = data_of_fit(data, res, layer=layer)
    n_obs, n_feat = d.shape
    cells = design_cells(res.loc.reduced)
    use = cells_with_at_least(cells, MIN_CELL_FOR_COOKS)
    if n_obs <= res.loc.n_free:
        use = np.zeros(n_obs, dtype=bool)
    replaceable = np.bincount(cells)[cells] >= min_replicates
    kept = use & ~replaceable
    max_cooks = np.full(n_feat, np.nan)
    max_kept = np.full(n_feat, np.nan)
    count_at_max = np.full(n_feat, np.nan)
    n_above_max = np.zeros(n_feat, dtype=np.int64)
    above = np.zeros(n_feat, dtype=bool)

    def block(sl: slice) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        # Each block writes only its own slice of the per-feature outputs.
        y = d.block(sl)
        cooks = _block_cooks(y, res, sl, cells)
        finite = np.isfinite(cooks)
        ok = finite.any(axis=0)
        masked = np.where(finite, cooks, -np.inf)
        if use.any():
            m = masked[use].max(axis=0)
            max_cooks[sl] = np.where(ok & np.isfinite(m), m, np.nan)
        if kept.any():
            m = masked[kept].max(axis=0)
            max_kept[sl] = np.where(ok & np.isfinite(m), m, np.nan)
        at = np.argmax(masked, axis=0)
        cmax = y[at, np.arange(y.shape[1])]
        count_at_max[sl] = np.where(ok, cmax, np.nan)
        n_above_max[sl] = (y > cmax[None, :]).sum(axis=0)
        hit = finite & (cooks > cutoff)
        above[sl] = hit.any(axis=0)
        r, c = np.nonzero(hit & replaceable[:, None])
        return r.astype(np.intp), (c + sl.start).astype(np.intp)

    found = blocks.map_blocks(block, _blocks(n_obs, n_feat, n_jobs), n_jobs=n_jobs)
    rep_obs = np.concatenate([r for r, _ in found]) if found else np.zeros(0, np.intp)
    rep_feat = np.concatenate([c for _, c in found]) if found else np.zeros(0, np.intp)
    # By observation, then feature: the same order whatever the blocks (and threads) are.
    order = np.lexsort((rep_feat, rep_obs))
    return CooksOutliers(
        cutoff=float(cutoff),
        max_cooks=max_cooks,
        max_cooks_kept=max_kept,
        count_at_max=count_at_max,
        n_above_max=n_above_max,
        above=above,
        replace_obs=rep_obs[order],
        replace_feature=rep_feat[order],
        replaceable=np.asarray(replaceable),
    )
