"""Cox-Reid adjusted scale coefficients of an NB fit with any scale model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm import blocks
from batchglm.design import Design
from batchglm.dispersion.cox_reid_design import cox_reid_scale
from batchglm.dispersion.nb_fit import check_nb_fit, fitted_means, residual_df
from batchglm.inputs import data_of_fit
from batchglm.result import FitResult
from batchglm.solvers.status import Status

Array = NDArray[np.float64]


@dataclass(frozen=True)
class GenewiseScale:
    """Cox-Reid adjusted scale coefficients of an NB fit with any scale model.

    Attributes
    ----------
    feature_names : pandas.Index
        Feature names.
    scale : Design
        The fit's scale design (``log r = Z C b``).
    coef_free : ndarray
        Free scale coefficients ``b`` per feature, ``(F, k_scale)``; ``NaN`` for features
        without an estimate.
    apl : ndarray
        The adjusted profile log-likelihood at the estimate.
    status : ndarray of int8
        :class:`~batchglm.solvers.status.Status` code per feature (``SCALE_AT_BOUND``
        where some predictor stopped on ``[-log(alpha_max), log(1e8)]``, e.g.
        under-dispersion); ``ALL_ZERO`` for features without an estimate.
    n_iter : ndarray of int
        Newton iterations used.
    df_residual : int
        Observations minus location parameters.
    usable : ndarray of bool
        Features with an estimate (not all zero).
    """

    feature_names: pd.Index
    scale: Design
    coef_free: Array
    apl: Array
    status: NDArray[np.int8]
    n_iter: NDArray[np.int32]
    df_residual: int
    usable: NDArray[np.bool_]

    @property
    def coef(self) -> pd.DataFrame:
        """Full scale coefficients ``C b`` per feature, named like the fit's.

        They satisfy the scale constraints, so they can be passed to
        :func:`batchglm.fit` as ``fixed_scale``.
        """
        full = self.coef_free @ self.scale.constraints.T
        return pd.DataFrame(full, index=self.feature_names, columns=self.scale.names)

    def log_r(self) -> Array:
        """``log r`` for every observation and feature, ``(n_obs, F)``.

        Returns
        -------
        ndarray
            Scale predictors ``Z C b``.
        """
        return np.asarray(self.scale.reduced @ self.coef_free.T)

    def alpha(self) -> Array:
        """Dispersion ``alpha = 1 / r`` for every observation and feature, ``(n_obs, F)``.

        Returns
        -------
        ndarray
            ``exp(-log r)``.
        """
        return np.exp(-self.log_r())


def genewise_dispersions(
    data: Any, res: FitResult, *, layer: str | None = None, alpha_max: float | None = None
) -> GenewiseScale:
    """Cox-Reid adjusted maximum-likelihood scale coefficients for an NB fit.

    Works with any scale model of the fit (several columns, constraints): at the fit's
    means, each feature's free scale coefficients maximise
    ``sum_i l(y_i; mu_i, r_i) - 1/2 log det(X^T W X)`` (see
    :mod:`batchglm.dispersion.adjusted_profile`). With an intercept-only scale model this is
    the ``genewise`` estimate of :func:`batchglm.dispersion.estimate_dispersions`.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts the fit was made on, ``(n_obs, n_features)``. Named observations and
        features are matched to the fit's names (and reordered); unnamed data pair by
        position (see :func:`batchglm.inputs.data_of_fit`).
    res : FitResult
        An NB fit (from :func:`batchglm.fit`); its fitted means are held fixed.
    layer : str, optional
        AnnData layer with the counts.
    alpha_max : float, optional
        Largest dispersion, by default ``max(10, n_obs)``.

    Returns
    -------
    GenewiseScale
        Coefficients per feature.
    """
    d = data_of_fit(data, res, layer=layer)
    check_nb_fit(res, d, "Cox-Reid dispersion estimation", intercept_only=False)
    n_obs, n_feat = d.shape
    x = res.loc.reduced
    z = res.scale.reduced
    df_residual = residual_df(x, n_obs)
    usable = res.status_codes != Status.ALL_ZERO
    coef = np.full((n_feat, z.shape[1]), np.nan)
    apl = np.full(n_feat, np.nan)
    status = np.full(n_feat, Status.ALL_ZERO, dtype=np.int8)
    n_iter = np.zeros(n_feat, dtype=np.int32)
    # The one feature-block rule of every pass (batchglm.blocks).
    for sl in blocks.feature_blocks(n_feat, blocks.block_size(n_obs)):
        y = d.block(sl)
        usable[sl] &= y.any(axis=0)
        use = np.flatnonzero(usable[sl])
        if not use.size:
            continue
        mu = fitted_means(res, sl)
        sol = cox_reid_scale(
            np.ascontiguousarray(y[:, use]),
            np.ascontiguousarray(mu[:, use]),
            x,
            z,
            alpha_max=alpha_max,
        )
        at = sl.start + use
        coef[at], apl[at], status[at], n_iter[at] = sol.b, sol.apl, sol.status, sol.n_iter
    return GenewiseScale(
        feature_names=res.feature_names,
        scale=res.scale,
        coef_free=coef,
        apl=apl,
        status=status,
        n_iter=n_iter,
        df_residual=df_residual,
        usable=usable,
    )
