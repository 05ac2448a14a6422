"""Cox-Reid dispersion of an intercept-only NB scale model, batched over features.

For fitted means ``mu`` (size factors included) each feature's ``t = log r`` maximises the
adjusted profile likelihood of :mod:`batchglm.dispersion.adjusted_profile` (plus, for
DESeq2's maximum a posteriori estimate, a normal prior on ``log alpha = -t``). Every
feature is a 1-D problem. All features are solved together: the objective is first
evaluated on a grid of ``t`` (so the global maximum is found even where the APL has several
local ones), then :func:`batchglm.solvers.newton.solve` refines the best grid point inside
the two grid cells around it (the cells are the solver's bounds) where the derivative
changes sign there. DESeq2's
``estimateDispersionsGeneEst`` also searches a grid of ``log alpha`` before refining; the
adjustment is Cox and Reid's (1987), as in edgeR and DESeq2.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.dispersion.adjusted_profile import (
    NOISE_FLOOR,
    STEP_TOL,
    AdjustedProfile,
    LogNormalPrior,
)
from batchglm.solvers.newton import SolverOptions, solve

__all__ = [
    "MIN_ALPHA",
    "LogNormalPrior",
    "cox_reid_log_r",
    "cox_reid_search",
    "log_r_grid",
    "max_alpha",
]

Array = NDArray[np.float64]

#: DESeq2's smallest dispersion; ``log r`` never exceeds ``log(1 / MIN_ALPHA)`` (this is
#: also the NB family's upper bound on ``r``).
MIN_ALPHA = 1e-8
#: Grid step on ``log r``; Newton then refines inside the two cells around the best point.
_GRID_STEP = 0.25
#: Newton settings of the refinement: a bound is released at most this often per feature,
#: and the maximiser is located to ``1e-10`` in ``log r`` even where the APL is flat.
_OPTIONS = SolverOptions(max_releases=3, step_tol=STEP_TOL, noise_floor=NOISE_FLOOR)


def max_alpha(n_obs: int) -> float:
    """Largest dispersion considered, ``max(10, n_obs)`` as in DESeq2.

    Parameters
    ----------
    n_obs : int
        Number of observations.

    Returns
    -------
    float
        The upper bound on ``alpha = 1 / r``.
    """
    return float(max(10.0, n_obs))


def log_r_grid(n_obs: int, alpha_max: float | None = None) -> Array:
    """Return the grid of ``log r`` searched before the Newton refinement.

    Parameters
    ----------
    n_obs : int
        Number of observations.
    alpha_max : float, optional
        Largest dispersion allowed; by default :func:`max_alpha`.

    Returns
    -------
    ndarray
        ``(G,)`` points from ``-log(alpha_max)`` to ``-log(1e-8)``, about 0.25 apart.
    """
    upper = alpha_max if alpha_max is not None else max_alpha(n_obs)
    lo_t, hi_t = -np.log(upper), -np.log(MIN_ALPHA)
    return np.linspace(lo_t, hi_t, int(np.ceil((hi_t - lo_t) / _GRID_STEP)) + 1)


def cox_reid_log_r(
    y: Array,
    mu: Array,
    x: Array,
    prior: LogNormalPrior | None = None,
    alpha_max: float | None = None,
    *,
    grid_apl: Array | None = None,
) -> Array:
    """Maximise the Cox-Reid adjusted profile likelihood (plus a prior) over ``log r``.

    Parameters
    ----------
    y : ndarray
        Counts ``(n_obs, F)``.
    mu : ndarray
        Fitted means ``(n_obs, F)``, size factors included; held fixed.
    x : ndarray
        Location design after constraints, ``(n_obs, k)``.
    prior : LogNormalPrior, optional
        Normal prior on ``log alpha``; without it the estimate is the APL maximiser.
    alpha_max : float, optional
        Largest dispersion allowed; by default :func:`max_alpha`.
    grid_apl : ndarray, optional
        ``(G, F)`` APL without prior on :func:`log_r_grid` at these counts and means, as
        returned by :func:`cox_reid_search`: the grid is then not evaluated again (the
        prior does not change the APL, so DESeq2's MAP pass reuses the gene-wise grid).

    Returns
    -------
    ndarray
        ``log r`` per feature, within ``[-log(alpha_max), -log(1e-8)]``. A maximum beyond
        either end (e.g. under-dispersion) stops on that end.

    Raises
    ------
    ValueError
        If ``grid_apl`` does not have one row per grid point and one column per feature.
    """
    return cox_reid_search(y, mu, x, prior, alpha_max, grid_apl=grid_apl)[0]


def cox_reid_search(
    y: Array,
    mu: Array,
    x: Array,
    prior: LogNormalPrior | None = None,
    alpha_max: float | None = None,
    *,
    grid_apl: Array | None = None,
) -> tuple[Array, Array]:
    """:func:`cox_reid_log_r` that also returns the APL on the grid (without prior).

    Parameters
    ----------
    y, mu, x, prior, alpha_max, grid_apl
        As :func:`cox_reid_log_r`.

    Returns
    -------
    log_r : ndarray
        ``(F,)`` the estimate.
    grid_apl : ndarray
        ``(G, F)`` APL (prior left out) on :func:`log_r_grid`; pass it back as
        ``grid_apl`` to search the same features again under a prior without another pass
        over the counts.

    Raises
    ------
    ValueError
        If ``grid_apl`` does not have one row per grid point and one column per feature.
    """
    n_obs, n_feat = y.shape
    grid = log_r_grid(n_obs, alpha_max)
    if grid_apl is not None and grid_apl.shape != (grid.size, n_feat):
        raise ValueError(
            f"`grid_apl` must have shape {(grid.size, n_feat)} (grid points, features), "
            f"but has shape {grid_apl.shape}."
        )
    if n_feat == 0:
        return np.zeros(0), np.zeros((grid.size, 0))
    apl = AdjustedProfile(y, mu, x, np.ones((n_obs, 1)), prior)
    if grid_apl is None:
        plain = apl if prior is None else apl.without_prior()
        with np.errstate(all="ignore"):
            grid_apl = plain.grid_values(grid)
    values = grid_apl
    if prior is not None:
        # The prior's log density in t = log r (log alpha = -t), added as evaluate does.
        values = grid_apl - (grid[:, None] + prior.mean[None, :]) ** 2 / (2.0 * prior.var)
    best = np.nanargmax(np.where(np.isfinite(values), values, -np.inf), axis=0)
    lo = grid[np.maximum(best - 1, 0)]
    hi = grid[np.minimum(best + 1, grid.size - 1)]
    with np.errstate(all="ignore"):
        g_lo = apl.evaluate(lo[:, None], 1)[1]
        g_hi = apl.evaluate(hi[:, None], 1)[1]
    assert g_lo is not None and g_hi is not None
    # A bracket holds a sign change of the derivative (rising, then falling): an interior
    # maximum, which Newton locates. Elsewhere the best grid point is the answer: an end of
    # the range where the objective still rises outward, or a plateau (a feature whose APL
    # is flat to rounding towards the Poisson limit) where no point is better than another.
    bracketed = (g_lo[:, 0] > 0) & (g_hi[:, 0] < 0)
    t_out: Array = grid[best]
    if bracketed.any():
        sub = apl.subset(bracketed)
        start = t_out[bracketed]
        sol = solve(sub, start[:, None], _OPTIONS, bounds=(lo[bracketed], hi[bracketed]))
        # The ascent never loses, so its end is at least as good as the start.
        t_out[bracketed] = np.where(np.isfinite(sol.theta[:, 0]), sol.theta[:, 0], start)
    return t_out, grid_apl
