"""What the dispersion passes need from an NB fit: checks, residual df and fitted means."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.data import Data
from batchglm.design import column_rank
from batchglm.result import FitResult

Array = NDArray[np.float64]


def check_nb_fit(res: FitResult, data: Data, what: str, intercept_only: bool = True) -> None:
    """Raise unless ``res`` is an NB fit of ``data`` (with an intercept-only scale model).

    Parameters
    ----------
    res : FitResult
        The fit.
    data : Data
        The data it is said to come from.
    what : str
        The option that needs it, for messages.
    intercept_only : bool
        Also require an intercept-only scale model (one dispersion per feature).

    Raises
    ------
    ValueError
        If the fit is not NB, its scale model is not intercept-only (when required), or
        ``data`` does not have the fit's shape.
    NotImplementedError
        For a fit with observation weights or an offset (the dispersion estimates would
        ignore them).
    """
    from batchglm.obs_weights import require_unweighted  # obs_weights imports the result

    require_unweighted(res, what)
    if res.family != "nb":
        raise ValueError(
            f"{what} needs a negative binomial fit, but the fit's family is {res.family!r}."
        )
    scale = res.scale.reduced
    if intercept_only and (scale.shape[1] != 1 or not np.allclose(scale, scale[0, 0])):
        raise ValueError(
            f"{what} shares one dispersion per feature across observations, so it needs "
            "an intercept-only scale model, but the fit's scale model has coefficients "
            f"{res.scale.names}; Cox-Reid estimates for a general scale model come from "
            "bg.dispersion.genewise_dispersions(data, res)."
        )
    if data.shape != (len(res.obs_names), len(res.feature_names)):
        raise ValueError(
            f"`data` must be the data of the fit, shape ({len(res.obs_names)}, "
            f"{len(res.feature_names)}), but its shape is {data.shape}."
        )


def residual_df(x: Array, n_obs: int) -> int:
    """Residual degrees of freedom of a location design, ``n_obs - rank(x)``.

    Parameters
    ----------
    x : ndarray
        Location design after constraints, ``(n_obs, k)``.
    n_obs : int
        Number of observations.

    Returns
    -------
    int
        The residual degrees of freedom, at least 1.

    Raises
    ------
    ValueError
        If the design leaves no residual degrees of freedom.
    """
    df_residual = n_obs - column_rank(x)
    if df_residual < 1:
        raise ValueError(
            "estimating dispersions needs residual degrees of freedom, but the location "
            f"design leaves {df_residual} (observations minus coefficients); use fewer "
            "coefficients or more observations."
        )
    return df_residual


def fitted_means(res: FitResult, sl: slice) -> Array:
    """Fitted means of a block of features, size factors included.

    Parameters
    ----------
    res : FitResult
        The fit.
    sl : slice
        The features of the block.

    Returns
    -------
    ndarray
        ``(n_obs, block)`` means ``s_i exp(x_i . a)`` (the predictor capped at 700), through
        :func:`batchglm.fitted.fitted_mean`, the one place coefficients become means.
    """
    from batchglm.fitted import fitted_mean  # fitted.py imports the dispersion package

    return fitted_mean(res, np.arange(len(res.feature_names))[sl])
