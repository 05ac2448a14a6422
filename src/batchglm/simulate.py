"""Simulated data sets with known parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from batchglm.data import as_size_factors
from batchglm.design import Design, build_design
from batchglm.families import Family, get_family

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Simulation:
    """A simulated data set and the parameters that generated it.

    Attributes
    ----------
    data : ndarray
        Observations ``(n_obs, n_features)``.
    coef_loc, coef_scale : pandas.DataFrame
        True full parameters, features x coefficient names (constraints hold exactly).
    size_factors : ndarray
        Size factor per observation.
    loc, scale : Design
        Designs with names and constraint matrices.
    family : str
        Family name.
    """

    data: Array
    coef_loc: pd.DataFrame
    coef_scale: pd.DataFrame
    size_factors: Array
    loc: Design
    scale: Design
    family: str

    @property
    def design_loc(self) -> pd.DataFrame:
        """Location design with coefficient-name columns."""
        return self.loc.frame()

    @property
    def design_scale(self) -> pd.DataFrame:
        """Scale design with coefficient-name columns."""
        return self.scale.frame()

    @property
    def constraints_loc(self) -> Array:
        """Location constraint matrix ``C``."""
        return self.loc.constraints

    @property
    def constraints_scale(self) -> Array:
        """Scale constraint matrix ``C``."""
        return self.scale.constraints

    @property
    def feature_names(self) -> pd.Index:
        """Feature names ``feature0, feature1, ...``."""
        return self.coef_loc.index


def _intercepts(matrix: Array) -> NDArray[np.bool_]:
    return np.all(matrix == 1.0, axis=0)


def _project(theta: Array, c: Array) -> Array:
    # Nearest parameters (least squares) that satisfy the constraints exactly.
    return theta @ (c @ np.linalg.pinv(c)).T


def simulate(
    design_loc: ArrayLike | pd.DataFrame | str,
    design_scale: ArrayLike | pd.DataFrame | str | None = None,
    n_features: int = 100,
    *,
    obs: pd.DataFrame | None = None,
    family: str | Family = "nb",
    constraints_loc: ArrayLike | Mapping[str, str] | Sequence[str] | None = None,
    constraints_scale: ArrayLike | Mapping[str, str] | Sequence[str] | None = None,
    size_factors: ArrayLike | None = None,
    seed: int | np.random.Generator | None = None,
) -> Simulation:
    """Draw parameters and data for ``n_features`` features.

    Parameter ranges follow the original batchglm simulator: intercept columns (all ones)
    of the location model get ``log(mean) ~ U(log 300, log 9000)``; other location
    coefficients ``log(U(0.5, 2))``; scale intercepts ``log(r)`` with ``r`` a uniform integer
    in 1..10, other scale coefficients ``log(U(0.5, 2))``. With constraints, the draw is
    projected onto the constrained parameter space. Intercepts depend on the family
    (``Family.draw_loc_intercepts`` / ``draw_scale_intercepts``): ``"poisson"`` as NB
    without a scale model (``coef_scale`` has no columns); ``"normal"`` means ``U(1, 10)``
    and ``sd ~ U(0.5, 2)``; ``"beta"`` means ``mu ~ U(0.1, 0.9)`` (logit scale) and
    precisions ``phi ~ U(5, 100)``.

    Parameters
    ----------
    design_loc : array_like, pandas.DataFrame or str
        Location design ``(n_obs, p_loc)``, or a formula evaluated on ``obs``.
    design_scale : array_like, pandas.DataFrame or str, optional
        Scale design or formula; ``None`` is intercept only.
    n_features : int
        Number of features to simulate.
    family : str or Family
        Noise model: ``"nb"``, ``"poisson"``, ``"normal"`` or ``"beta"``.
    obs : pandas.DataFrame, optional
        Observation annotations for formula designs; its rows are the observations.
    constraints_loc, constraints_scale : array_like, dict or list of str, optional
        As in :func:`batchglm.fit`.
    size_factors : array_like, optional
        Positive per-observation factors multiplying the mean; log-link families only.
    seed : int or numpy.random.Generator, optional
        Seed for reproducible draws.

    Returns
    -------
    Simulation
        Data and true parameters.

    Raises
    ------
    ValueError
        For ``n_features < 1``, a formula design without ``obs``, or size factors for a
        family without a log link.
    """
    fam = get_family(family)
    if n_features < 1:
        raise ValueError(f"`n_features` must be at least 1, but {n_features} was given.")
    rng = np.random.default_rng(seed)
    if isinstance(design_loc, str):
        if obs is None:
            raise ValueError(
                "`design_loc` is a formula, so `obs` (one row per observation to simulate) "
                "must be given."
            )
        n_obs = len(obs)
    else:
        n_obs = np.asarray(design_loc).shape[0]
    loc = build_design(design_loc, constraints_loc, n_obs, "loc", check=False, obs=obs)
    scale = build_design(design_scale, constraints_scale, n_obs, "scale", check=False, obs=obs)
    if size_factors is not None and fam.loc_link != "log":
        raise ValueError(
            f"family {fam.name!r} has a {fam.loc_link} link for the mean, so `size_factors` "
            "(an offset log(size_factors) for log-link means) must be None."
        )
    sf = as_size_factors(size_factors, n_obs)

    a = np.log(rng.uniform(0.5, 2.0, size=(n_features, len(loc.names))))
    icpt = _intercepts(loc.matrix)
    a[:, icpt] = fam.draw_loc_intercepts(rng, (n_features, int(icpt.sum())))
    a = _project(a, loc.constraints)
    scale_names = scale.names if fam.has_scale else []
    if fam.has_scale:
        b = np.log(rng.uniform(0.5, 2.0, size=(n_features, len(scale.names))))
        icpt = _intercepts(scale.matrix)
        b[:, icpt] = fam.draw_scale_intercepts(rng, (n_features, int(icpt.sum())))
        b = _project(b, scale.constraints)
        eta_scale = scale.matrix @ b.T
    else:
        b = np.zeros((n_features, 0))
        eta_scale = np.zeros((n_obs, n_features))

    eta_loc = np.log(sf)[:, None] + loc.matrix @ a.T
    data = fam.sample(rng, eta_loc, eta_scale)
    features = pd.Index([f"feature{j}" for j in range(n_features)])
    return Simulation(
        data=data,
        coef_loc=pd.DataFrame(a, index=features, columns=loc.names),
        coef_scale=pd.DataFrame(b, index=features, columns=scale_names),
        size_factors=sf,
        loc=loc,
        scale=scale,
        family=fam.name,
    )
