"""Refit the location model of an NB fit with its dispersions held fixed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.inputs import data_of_fit
from batchglm.result import FitResult
from batchglm.solvers.status import Status

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


def warm_start(res: FitResult, constraints_loc: Array) -> Array:
    """Return starting location coefficients ``(n_features, p)`` for a refit of ``res``.

    The fit's coefficients for features at an optimum (``converged`` or
    ``scale_at_bound``), ``NaN`` (the default start) for the others: a ``separated``
    feature's coefficients run towards infinity and are no useful start. With other
    constraints ``C_r`` (a reduced model) the start is the least-squares fit of the fit's
    linear predictor, ``a = (C_r' G C_r)^-1 C_r' G b`` with ``G = X'X``, which puts the
    reduced intercept near the mean of the groups' log means rather than dropping the
    tested coefficients.

    Parameters
    ----------
    res : FitResult
        The fit being refined.
    constraints_loc : ndarray
        Constraint matrix ``(p, k)`` of the refit.

    Returns
    -------
    ndarray
        Full location coefficients (natural log scale), ``NaN`` rows where the default
        start is used.
    """
    coef = res.coef_loc.to_numpy()
    at_optimum = np.isin(res.status_codes, (Status.CONVERGED, Status.SCALE_AT_BOUND))
    coef = np.where(at_optimum[:, None], coef, np.nan)
    if constraints_loc is res.loc.constraints:
        return coef
    gram = res.loc.matrix.T @ res.loc.matrix
    cg = constraints_loc.T @ gram
    free = np.linalg.lstsq(cg @ constraints_loc, cg @ np.nan_to_num(coef).T, rcond=None)[0]
    out = (constraints_loc @ free).T
    out[~at_optimum] = np.nan
    return out


def refit_location(
    data: Any,
    res: FitResult,
    alpha: Array,
    *,
    layer: str | None = None,
    constraints_loc: Array | None = None,
    progress: bool | None = None,
    warm: bool = True,
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
    warm : bool
        Start Newton from the location coefficients of ``res`` (see :func:`warm_start`)
        rather than from the default start. The
        dispersions change little between the fit and the refit, so a few iterations
        reach the same optimum (to about 1e-8 in the coefficients; tested against the cold
        start in ``tests/test_refit_warm_start.py``).

    Returns
    -------
    FitResult
        The location fit at the given dispersions; location standard errors come from the
        location block of the information alone.
    """
    from batchglm.fit import fit

    c = res.loc.constraints if constraints_loc is None else constraints_loc
    out = fit(
        data_of_fit(data, res, layer=layer),
        res.design_loc,
        constraints_loc=c,
        size_factors=res.size_factors,
        fixed_scale=fixed_log_r(alpha),
        init_loc=warm_start(res, c) if warm else None,
        max_iter=int(res.settings.get("max_iter", 100)),  # type: ignore[call-overload]
        tol=float(res.settings.get("tol", 1e-10)),  # type: ignore[arg-type]
        progress=progress,
    )
    if constraints_loc is None:
        # Same design and constraints: keep the fit's own Design (its formula and `obs`),
        # so contrasts by level names work on the refit (e.g. lfc_shrink of bg.de.test).
        out = replace(out, loc=res.loc)
    return out
