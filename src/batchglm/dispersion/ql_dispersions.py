"""Quasi-likelihood dispersions of fits at the trended NB dispersion (edgeR's glmQLFit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from batchglm import blocks
from batchglm.dispersion.expected_deviance import KappaTable, expected_deviance
from batchglm.dispersion.nb_fit import fitted_means
from batchglm.dispersion.quasi_likelihood import (
    SqueezedVariances,
    nb_deviance,
    squeeze_var,
    zero_fit_residual_df,
)
from batchglm.inputs import data_of_fit
from batchglm.result import FitResult

if TYPE_CHECKING:
    from batchglm.dispersion.estimate import Dispersions

Array = NDArray[np.float64]


@dataclass(frozen=True)
class QuasiLikelihood:
    """Quasi-likelihood dispersions of fits at the trended NB dispersion.

    Attributes
    ----------
    s2 : ndarray
        Per-feature QL dispersion ``deviance / expected_deviance`` (0 where
        ``df_residual`` is 0, ``NaN`` for features not tested).
    squeezed : SqueezedVariances
        Prior and posterior (moderated) QL dispersions and degrees of freedom.
    df_residual : ndarray of int
        Residual degrees of freedom per feature, not counting fitted zeros (see
        :func:`batchglm.dispersion.quasi_likelihood.zero_fit_residual_df`); at most the
        location model's ``n_obs - rank``.
    expected_deviance : ndarray or None
        The divisor of ``s2`` per feature: the deviance expected under the NB model at the
        fitted means (see :mod:`batchglm.dispersion.expected_deviance`), or ``None`` when
        ``s2`` was divided by ``df_residual``.
    """

    s2: Array
    squeezed: SqueezedVariances
    df_residual: NDArray[np.int64]
    expected_deviance: Array | None = None

    @property
    def var_post(self) -> Array:
        """Moderated QL dispersion per feature."""
        return self.squeezed.var_post

    @property
    def df_total(self) -> Array:
        """Denominator degrees of freedom of the QL F test per feature."""
        return self.squeezed.df_total


def quasi_likelihood(
    data: Any,
    res_trend: FitResult,
    disp: Dispersions,
    *,
    layer: str | None = None,
    abundance_trend: bool = True,
    deviance_bias: bool = True,
    progress: bool | None = None,
) -> QuasiLikelihood:
    """QL dispersions from the deviances of a fit at the trended NB dispersions.

    As edgeR's ``glmQLFit`` (Lund et al. 2012; Lun & Smyth 2017), moderated by
    :func:`~batchglm.dispersion.squeeze_var` with ``d`` degrees of freedom per feature
    and a prior trending in ``log base_mean``; ``d`` is the residual df without fitted
    zeros (observations with a zero count and a fitted mean below 1e-4). The raw QL
    dispersion is ``deviance / E[deviance]``, the deviance over its expectation under the
    NB model at the fitted means (:mod:`batchglm.dispersion.expected_deviance`): at small
    means that expectation is well below ``d`` and ``deviance / d`` would make the QL
    dispersions, and with them the tests, anti-conservative (``docs/calibration.md``).
    Features with ``d = 0`` (e.g. all counts in one group of single observations) are
    tested at the prior.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts, matched to ``res_trend`` by name where named.
    res_trend : FitResult
        Location fit with the scale fixed at ``disp.trend`` (see
        :func:`batchglm.dispersion.refit_location`).
    disp : Dispersions
        The dispersion estimates (for the trend and ``base_mean``).
    layer : str, optional
        AnnData layer with the counts.
    abundance_trend : bool
        Let the prior QL dispersion trend with ``log base_mean`` (edgeR's default).
    deviance_bias : bool
        Divide the deviance by its expectation (default) rather than by ``d`` (edgeR 3's
        ``glmQLFit``).
    progress : bool, optional
        Show a ``tqdm.auto`` bar over features for the deviance pass; by default only for
        large passes (over ``5e7`` observation-feature pairs) on a terminal, as
        :func:`batchglm.fit`.

    Returns
    -------
    QuasiLikelihood
        Raw and moderated QL dispersions.
    """
    d = data_of_fit(data, res_trend, layer=layer)
    n_feat = d.shape[1]
    r = 1.0 / disp.trend
    x = res_trend.loc.reduced
    s2 = np.full(n_feat, np.nan)
    df = np.zeros(n_feat, dtype=np.int64)
    divisor = np.full(n_feat, np.nan)
    testable = disp.usable & res_trend.converged.to_numpy()
    table = KappaTable.build(r[testable]) if deviance_bias and testable.any() else None

    def _pass3(sl: slice) -> None:
        use = np.flatnonzero(testable[sl])
        if not use.size:
            return
        y = d.block(sl)[:, use]
        mu = fitted_means(res_trend, sl)[:, use]
        at = sl.start + use
        df[at] = zero_fit_residual_df(y, mu, x)
        dev = nb_deviance(y, mu, r[at])
        divisor[at] = expected_deviance(mu, r[at], x, table) if deviance_bias else df[at]
        with np.errstate(divide="ignore", invalid="ignore"):
            s2[at] = np.where((df[at] > 0) & (divisor[at] > 0), dev / divisor[at], 0.0)

    blocks.map_blocks(
        _pass3,
        # Two blocks per thread: the common size left one thread idle for a fifth of it.
        blocks.balanced_blocks(d.shape[0], n_feat),
        progress=blocks.show_progress(progress, d.shape[0], n_feat),
        desc="QL dispersions",
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = np.log(disp.base_mean) if abundance_trend else None
    squeezed = squeeze_var(s2, df.astype(np.float64), cov)
    return QuasiLikelihood(s2, squeezed, df, divisor if deviance_bias else None)
