"""Fitted means of a fit: the one place where coefficients become per-observation means.

Residuals, predictions and ``FitResult.fitted`` all go through :func:`linear_predictors`,
and every fitted mean (fitted values, ``baseMean``, residuals, dispersion estimates) through
:func:`fitted_mean`, so size factors (a location offset ``log(size_factors)``) and
constraints are applied the same way everywhere. Only the features asked for are
computed: a block of ``n_obs x len(features)`` values, never the whole
``n_obs x n_features`` matrix unless requested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import NDArray

if TYPE_CHECKING:
    from batchglm.result import FitResult

Array = NDArray[np.float64]

FeatureSelection = str | slice | Sequence[str] | Sequence[int] | NDArray[np.integer] | None


def feature_positions(res: FitResult, features: FeatureSelection) -> NDArray[np.intp]:
    """Positions of selected features.

    Parameters
    ----------
    res : FitResult
        The fit.
    features : str, slice, sequence of str or int, or None
        ``None`` for all features; a name; names; integer positions; or a slice of
        positions or of names (both ends included for names, as in pandas ``.loc``).

    Returns
    -------
    ndarray of int
        Positions in ``res.feature_names``.

    Raises
    ------
    KeyError
        When a name is not a feature of the fit.
    ValueError
        When names are looked up but the fit's feature names are not unique.
    """
    names = res.feature_names
    n = len(names)
    if features is None:
        return np.arange(n, dtype=np.intp)
    if isinstance(features, slice):
        if isinstance(features.start, str) or isinstance(features.stop, str):
            _require_unique(names)
            features = names.slice_indexer(features.start, features.stop, features.step)
        return np.arange(n, dtype=np.intp)[features]
    items = [features] if isinstance(features, str) else list(features)
    if all(isinstance(f, int | np.integer) and not isinstance(f, bool) for f in items):
        pos = np.asarray(items, dtype=np.intp)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise KeyError(f"feature positions must lie in [0, {n}), but {items} were given.")
        return np.where(pos < 0, pos + n, pos)
    _require_unique(names)
    pos = names.get_indexer(pd.Index([str(f) for f in items]))
    missing = [str(f) for f, p in zip(items, pos, strict=True) if p < 0]
    if missing:
        raise KeyError(f"{missing[:5]} are not features of the fit ({len(missing)} missing).")
    return np.asarray(pos, dtype=np.intp)


def _require_unique(names: pd.Index) -> None:
    if not names.is_unique:
        dup = names[names.duplicated()].unique()[:3].tolist()
        raise ValueError(
            f"features can be selected by name only when names are unique, but {dup} occur "
            "more than once; select by position instead."
        )


def linear_predictors(
    res: FitResult, positions: NDArray[np.intp], offset: Array | None = None
) -> tuple[Array, Array]:
    """Location and scale predictors at the fit's observations, for some features.

    Parameters
    ----------
    res : FitResult
        The fit.
    positions : ndarray of int
        Feature positions (see :func:`feature_positions`).
    offset : ndarray, optional
        Location offset per observation; by default ``log(res.size_factors)`` plus the
        ``offset`` the fit was given (``res.settings["offset"]``, per observation or per
        observation and feature).

    Returns
    -------
    eta_loc, eta_scale : ndarray
        ``(n_obs, len(positions))`` each.
    """
    k = res.loc.n_free
    theta = res.theta_free[positions]
    a = theta[:, :k] @ res.loc.constraints.T
    eta_loc = res.loc.matrix @ a.T
    if offset is not None:
        eta_loc += offset[:, None]
    else:
        eta_loc += np.log(res.size_factors)[:, None]
        given = res.settings.offset
        if given is not None:
            eta_loc += given[:, None] if given.ndim == 1 else given[:, positions]
    if res.has_scale:
        b = theta[:, k:] @ res.scale.constraints.T
        eta_scale = res.scale.matrix @ b.T
    else:
        eta_scale = np.zeros_like(eta_loc)
    return eta_loc, eta_scale


def fitted_mean(
    res: FitResult, positions: NDArray[np.intp] | None = None, *, size_factors: bool = True
) -> Array:
    """Fitted means of the fit's observations: the one place coefficients become means.

    ``res.family.fitted_mean`` applied to the location predictors, i.e. the family's
    inverse link of ``x . a`` plus the offset ``log(size_factors)`` (log link). Fitted
    values, ``baseMean`` of the test tables, residuals and dispersion estimates all go
    through here.

    Parameters
    ----------
    res : FitResult
        The fit.
    positions : ndarray of int, optional
        Feature positions (see :func:`feature_positions`); ``None`` for all.
    size_factors : bool
        Include the size factors and the fit's offset (the counts' scale). ``False`` gives
        the mean as the model sees it for a size factor of 1 and no offset (DESeq2's
        normalised scale).

    Returns
    -------
    ndarray
        ``(n_obs, len(positions))`` means on the response scale.
    """
    pos = np.arange(len(res.feature_names), dtype=np.intp) if positions is None else positions
    offset = None if size_factors else np.zeros(len(res.obs_names))
    eta_loc, _ = linear_predictors(res, pos, offset)
    return res.family.fitted_mean(eta_loc)


def fitted(res: FitResult, features: FeatureSelection = None) -> pd.DataFrame:
    """Fitted mean of every observation, size factors included.

    Parameters
    ----------
    res : FitResult
        The fit.
    features : str, slice, sequence of str or int, or None
        Features to compute (see :func:`feature_positions`); ``None`` for all.

    Returns
    -------
    pandas.DataFrame
        ``(n_obs, n_selected)`` means on the response scale (counts for NB and Poisson:
        ``size_factor * exp(offset + x . a)``), indexed by ``obs_names``, columns feature
        names. The fit's ``offset``, if any, is included; weights do not change a mean.

    Raises
    ------
    KeyError
        When a name is not a feature of the fit.
    ValueError
        When names are looked up but the fit's feature names are not unique.
    """
    pos = feature_positions(res, features)
    return pd.DataFrame(fitted_mean(res, pos), index=res.obs_names, columns=res.feature_names[pos])
