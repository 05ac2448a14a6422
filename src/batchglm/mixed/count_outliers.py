"""Count outliers of mixed fits: upper-tail probabilities at the conditional means.

The bulk pipeline flags outlier counts by Cook's distance (:mod:`batchglm.de.cooks`); a
mixed fit has no such check, and one extreme count can pull a donor variance to 0 and give
a confident, wrong fold change. Here every positive count ``y`` is referred to the fitted
model at its *conditional* mean ``mu = s * exp(x . a + sum_k u_k[group_k])`` (size factor,
fixed part and the predicted random intercepts of its groups): NB
``P(Y >= y) = I_{mu/(mu+r)}(y, r)`` (regularised incomplete beta, NB size ``r``), Poisson
``P(Y >= y) = P(y, mu)`` (regularised lower incomplete gamma), as in the tail of any count
distribution (e.g. Johnson, Kemp and Kotz, *Univariate Discrete Distributions*, 2005).
A count is an outlier when its tail probability is below ``alpha / (n_obs * n_features)``
(Bonferroni over all counts). Only non-zero entries are visited, block by block
(:func:`batchglm.blocks.map_blocks`); nothing of size ``n_obs x n_features`` is formed.
See ``docs/mixed_model.md`` ("Count outliers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy import special

from batchglm.blocks import balanced_blocks, map_blocks
from batchglm.nonzeros import NonZeros

if TYPE_CHECKING:
    from batchglm.data import Data
    from batchglm.result import FitResult

Array = NDArray[np.float64]

#: Default family-wise level of the count-outlier check (Bonferroni over all counts).
COUNT_OUTLIER_ALPHA = 0.01


@dataclass(frozen=True)
class CountTails:
    """Upper-tail probabilities of the non-zero counts of a feature block.

    Attributes
    ----------
    obs, feat : ndarray of int
        ``(nnz,)`` observation and feature (position in the fit) of each entry.
    counts, mean, tail : ndarray
        ``(nnz,)`` count, conditional mean and ``P(Y >= count)`` at that mean.
    """

    obs: NDArray[np.intp]
    feat: NDArray[np.intp]
    counts: Array
    mean: Array
    tail: Array


@dataclass(frozen=True)
class CountOutliers:
    """Result of :func:`find_count_outliers`.

    Attributes
    ----------
    outlier : ndarray of bool
        ``(F,)`` features with at least one count below the threshold.
    min_tail : ndarray
        ``(F,)`` smallest tail probability of a positive count (1 without one).
    threshold : float
        ``alpha / (n_obs * n_features)``.
    worst : tuple of (int, int, float, float) or None
        ``(feature, obs, count, conditional mean)`` of the smallest tail probability among
        the flagged features, ``None`` when none is flagged.
    """

    outlier: NDArray[np.bool_]
    min_tail: Array
    threshold: float
    worst: tuple[int, int, float, float] | None


def upper_tail(family: str, counts: Array, mean: Array, size: Array | None = None) -> Array:
    """Upper-tail probability ``P(Y >= counts)`` of NB or Poisson counts.

    Parameters
    ----------
    family : {"nb", "poisson"}
        The noise model.
    counts : ndarray
        Positive counts (non-integer values are treated through the continuous
        incomplete beta/gamma functions).
    mean : ndarray
        Means ``mu`` (same shape).
    size : ndarray, optional
        NB size ``r`` (``Var = mu + mu^2 / r``); needed for ``"nb"``.

    Returns
    -------
    ndarray
        NB: ``betainc(y, r, mu / (mu + r))``; Poisson: ``gammainc(y, mu)``
        (:mod:`scipy.special`, regularised).

    Raises
    ------
    ValueError
        When ``family`` is not ``"nb"`` or ``"poisson"``, or ``size`` is missing for NB.
    """
    if family == "poisson":
        return np.asarray(special.gammainc(counts, mean), dtype=np.float64)
    if family != "nb":
        raise ValueError(f"count tails need family 'nb' or 'poisson', but {family!r} was given.")
    if size is None:
        raise ValueError("the NB tail needs `size` (the NB size r), but None was given.")
    return np.asarray(special.betainc(counts, size, mean / (mean + size)), dtype=np.float64)


def count_tails(res: FitResult, data: Data, features: slice) -> CountTails:
    """Tail probabilities of the positive counts of a block of features of a mixed fit.

    Parameters
    ----------
    res : FitResult
        A mixed fit (``random`` with group codes ``index``), family NB or Poisson.
    data : Data
        The fit's counts in the fit's order (:func:`batchglm.inputs.data_of_fit`).
    features : slice
        Feature positions of the block.

    Returns
    -------
    CountTails
        One entry per non-zero count of the block; means include the size factors, the
        fit's offset and the predicted random intercepts.
    """
    nz = NonZeros.of(data.stored_block(features))
    pos = np.arange(features.start, features.stop, dtype=np.intp)
    obs, feat = nz.obs, pos[nz.feat]
    k = res.loc.n_free
    theta = res.theta_free[pos]
    a = theta[:, :k] @ res.loc.constraints.T  # (F_b, p)
    eta = np.einsum("ij,ij->i", res.loc.matrix[obs], a[nz.feat])
    eta += np.log(res.size_factors)[obs]
    given = res.settings.offset
    if given is not None:
        eta += given[obs] if given.ndim == 1 else given[obs, feat]
    if res.random is not None and res.random.index is not None:
        for modes, index in zip(res.random.modes, res.random.index, strict=True):
            eta += modes[index[obs], feat]
    mean = np.exp(eta)
    size = None
    if res.family == "nb":
        if res.has_scale:
            b = theta[:, k:] @ res.scale.constraints.T
            size = np.exp(np.einsum("ij,ij->i", res.scale.matrix[obs], b[nz.feat]))
        else:
            size = np.ones_like(mean)
    tail = upper_tail(res.family.name, nz.values, mean, size)
    return CountTails(obs, feat, nz.values, mean, tail)


def find_count_outliers(
    res: FitResult, data: Data, alpha: float = COUNT_OUTLIER_ALPHA, n_jobs: int | None = None
) -> CountOutliers:
    """Features of a mixed fit with a count far above its conditional mean.

    Parameters
    ----------
    res : FitResult
        A mixed NB or Poisson fit.
    data : Data
        Its counts, ``(n_obs, n_features)``, in the fit's order.
    alpha : float
        Family-wise level; a count is an outlier when ``P(Y >= y) < alpha / (n_obs F)``.
    n_jobs : int, optional
        Threads for the feature blocks (:func:`batchglm.blocks.map_blocks`).

    Returns
    -------
    CountOutliers
        Flags, smallest tail probability per feature and the worst flagged count.

    Raises
    ------
    ValueError
        When ``alpha`` is not in ``(0, 1)``.
    """
    if not 0 < alpha < 1:
        raise ValueError(
            f"`count_outlier_alpha` must lie in (0, 1) or be None, but {alpha} was given."
        )
    n_obs, n_feat = len(res.obs_names), len(res.feature_names)
    threshold = alpha / (n_obs * n_feat)
    min_tail = np.ones(n_feat)
    worst: tuple[int, int, float, float] | None = None
    best = np.inf

    def one(block: slice) -> CountTails:
        return count_tails(res, data, block)

    for part in map_blocks(one, balanced_blocks(n_obs, n_feat, n_jobs), n_jobs=n_jobs):
        if part.tail.size == 0:
            continue
        np.minimum.at(min_tail, part.feat, part.tail)
        i = int(np.argmin(part.tail))
        if part.tail[i] < threshold and part.tail[i] < best:
            best = float(part.tail[i])
            worst = (
                int(part.feat[i]),
                int(part.obs[i]),
                float(part.counts[i]),
                float(part.mean[i]),
            )
    return CountOutliers(min_tail < threshold, min_tail, threshold, worst)
