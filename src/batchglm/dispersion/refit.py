"""Refit the location model of an NB fit with its dispersions held fixed."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.inputs import data_of_fit
from batchglm.result import FitResult

Array = NDArray[np.float64]


def fixed_log_r(alpha: Array) -> Array:
    """``log r = -log alpha`` for :func:`batchglm.fit`'s ``fixed_scale``; 0 where undefined.

    Parameters
    ----------
    alpha : ndarray
        Dispersions, ``NaN`` for features without an estimate (all zero).

    Returns
    -------
    ndarray
        Finite ``log r`` per feature.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        log_r = -np.log(alpha)
    return np.where(np.isfinite(log_r), log_r, 0.0)


def refit_location(
    data: Any,
    res: FitResult,
    alpha: Array,
    *,
    layer: str | None = None,
    constraints_loc: Array | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Refit the location model of ``res`` with the NB dispersions held at ``alpha``.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit, matched to it by name where named.
    res : FitResult
        The original fit (design, constraints and size factors are reused).
    alpha : ndarray
        Dispersion per feature (``NaN`` for features without one).
    layer : str, optional
        AnnData layer with the counts.
    constraints_loc : ndarray, optional
        A constraint matrix ``C`` (``p`` rows) replacing the fit's, e.g. for a reduced
        model.
    progress : bool, optional
        Progress bar of the refit, as :func:`batchglm.fit`'s ``progress``.

    Returns
    -------
    FitResult
        The location fit at the given dispersions; location standard errors come from the
        location block of the information alone.
    """
    from batchglm.fit import fit

    c = res.loc.constraints if constraints_loc is None else constraints_loc
    return fit(
        data_of_fit(data, res, layer=layer),
        res.design_loc,
        constraints_loc=c,
        size_factors=res.size_factors,
        fixed_scale=fixed_log_r(alpha),
        max_iter=int(res.settings.get("max_iter", 100)),  # type: ignore[call-overload]
        tol=float(res.settings.get("tol", 1e-10)),  # type: ignore[arg-type]
        progress=progress,
    )
