"""Cox-Reid dispersion of an intercept-only NB scale model, batched over features.

For fitted means ``mu`` (size factors included) each feature's ``t = log r`` maximises the
adjusted profile likelihood of :mod:`batchglm.dispersion.adjusted_profile` (plus, for
DESeq2's maximum a posteriori estimate, a normal prior on ``log alpha = -t``). Every
feature is a 1-D problem. All features are solved together: the objective is first
evaluated on a grid of ``t`` (so the global maximum is found even where the APL has several
local ones), then :func:`batchglm.solvers.newton.solve` refines the best grid point inside
the two grid cells around it (the cells are the solver's bounds) where the derivative
changes sign there. The grid is 0.5 apart in ``log r`` (47 points for 85 observations;
0.25 before, which found the same maxima on the reference data sets at twice the cost).

Plateau rule (gene-wise estimate, no prior): where the APL's maximum is no higher than its
value at the lower dispersion bound ``MIN_ALPHA`` (1e-8, DESeq2's ``minDisp``) up to
rounding (:data:`PLATEAU_TOL`), the estimate is that bound. Towards the Poisson limit the
APL flattens to a constant; without the rule a profile flat to rounding there had its
maximum wherever the grid's best point and Newton happened to stop, which moved with the
grid (``tests/test_cox_reid_plateau.py``).

Cost. A grid point costs one ``log1p`` and one weight pass over the counts
(:meth:`~batchglm.dispersion.adjusted_profile.AdjustedProfile.grid_values`); with numba
both the grid and every Newton evaluation run in compiled kernels that visit each
observation once (:mod:`batchglm.dispersion.apl_kernel`), the Newton iterations stay in
:func:`~batchglm.solvers.newton.solve`. The APL does
not depend on the prior, so the MAP pass adds the prior to the gene-wise pass's grid
(:func:`cox_reid_search` returns it) instead of evaluating it again. Newton starts from the
maximum of the cubic through the bracket's values and slopes (about 2e-4 from the optimum
instead of 0.06), which saves it about one of three iterations; a feature whose Newton end
is not a located maximum at least as high as the best grid point is solved again from that
point. DESeq2's
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
from batchglm.solvers.status import Status

__all__ = [
    "MIN_ALPHA",
    "PLATEAU_TOL",
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
#: 0.5 gives 47 points for 85 observations (``log r`` from ``-log 85`` to ``log 1e8``).
_GRID_STEP = 0.5
#: Plateau rule of the gene-wise estimate (no prior): where the APL's maximum is at most
#: this much (natural-log likelihood units) above its value at the lower dispersion bound
#: ``MIN_ALPHA``, the estimate is that bound; see :func:`_on_plateau`.
PLATEAU_TOL = 1e-9
#: Rounding allowance of the plateau rule, relative to ``|APL|`` at the bound (the values'
#: sums lose a few units in the last place per term).
_PLATEAU_ROUNDING = 1e-12
#: Newton settings of the refinement: a bound is released at most this often per feature,
#: and the maximiser is located to ``1e-10`` in ``log r`` even where the APL is flat.
#: A Newton end counts as located when the remaining Newton step is below this (in
#: ``log r``); otherwise the feature is solved again from the best grid point.
_LOCATED = 1e-8
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
        ``(G,)`` points from ``-log(alpha_max)`` to ``-log(1e-8)``, about 0.5 apart.
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
    # The objective at t_out, kept for the plateau rule below.
    v_out = values[best, np.arange(n_feat)]
    if bracketed.any():
        at = np.flatnonzero(bracketed)
        cols = np.arange(n_feat)[at]
        b_lo, b_hi = lo[at], hi[at]
        v_best = values[best[at], cols]
        start = _hermite_start(
            b_lo,
            b_hi,
            values[np.maximum(best[at] - 1, 0), cols],
            values[np.minimum(best[at] + 1, grid.size - 1), cols],
            g_lo[at, 0],
            g_hi[at, 0],
        )
        sol = solve(apl.subset(bracketed), start[:, None], _OPTIONS, bounds=(b_lo, b_hi))
        t_new = sol.theta[:, 0]
        # Newton from the cubic's maximum must end on a located maximum at least as high as
        # the best grid point. Where it did not (the solver stops where a step cannot be
        # told from the value's rounding, which for separated features is far coarser than
        # its estimate, or a second maximum inside the two cells), the feature is solved
        # again from the best grid point, the search of the full grid.
        with np.errstate(all="ignore"):
            remaining = np.abs(sol.grad[:, 0] / sol.hess[:, 0, 0])
        slack = 1e-9 * np.maximum(np.abs(v_best), 1.0)
        lost = ~(
            np.isfinite(t_new)
            & (sol.loglik >= v_best - slack)
            & ((remaining <= _LOCATED) | (sol.status == Status.SCALE_AT_BOUND))
        )
        if lost.any():
            again = np.zeros(n_feat, dtype=bool)
            again[at[lost]] = True
            from_grid = t_out[at[lost]]
            sol2 = solve(
                apl.subset(again), from_grid[:, None], _OPTIONS, bounds=(b_lo[lost], b_hi[lost])
            )
            t_new[lost] = np.where(np.isfinite(sol2.theta[:, 0]), sol2.theta[:, 0], from_grid)
            sol.loglik[lost] = sol2.loglik
        t_out[at] = t_new
        v_out[at] = np.fmax(sol.loglik, v_best)
    if prior is None:
        t_out[_on_plateau(v_out, values[-1])] = grid[-1]
    return t_out, grid_apl


def _on_plateau(v_max: Array, v_bound: Array) -> NDArray[np.bool_]:
    """Tell which gene-wise maxima are no higher than the APL at ``MIN_ALPHA``, to tolerance.

    Towards the Poisson limit (``alpha -> 0``, ``t -> inf``) the APL flattens to a constant,
    and where it rises (or stays flat) all the way there its values on the last grid points
    differ by rounding only: the best of them, and Newton's end between them, would move
    with the grid. The rule: a maximum at most :data:`PLATEAU_TOL` (plus
    ``1e-12 |v_bound|`` for rounding) above ``v_bound``, the APL at the grid's last point
    ``t = -log(MIN_ALPHA)``, is that point. The tolerance is far above the values' rounding
    on ordinary data and far below any difference a test could see (a likelihood-ratio
    statistic of ``2e-6``). DESeq2 clips its gene-wise estimates to ``minDisp`` (1e-8)
    where its line search (``fitDisp``) runs towards ``alpha -> 0``; this rule gives the
    same answer whatever the grid's resolution.
    """
    with np.errstate(invalid="ignore"):
        tol = PLATEAU_TOL + _PLATEAU_ROUNDING * np.abs(v_bound)
        return np.asarray(np.isfinite(v_bound) & (v_max - v_bound <= tol))


def _hermite_start(
    lo: Array, hi: Array, v_lo: Array, v_hi: Array, g_lo: Array, g_hi: Array
) -> Array:
    """Newton's start: the maximum of the cubic through the bracket's values and slopes.

    On ``[lo, hi]`` the cubic Hermite interpolant of the objective (values ``v``, slopes
    ``g``, ``g_lo > 0 > g_hi``) has one maximum where its slope falls through zero. On the
    benchmark tables it lies about 2e-4 from the optimum (the best grid point: 0.06),
    which saves Newton about one iteration. Clipped to the bracket; the grid's midpoint
    where the cubic is degenerate.
    """
    width = hi - lo
    # p(s) = a s^3 + b s^2 + c s + d on s in [0, 1]; p'(s) = 3 a s^2 + 2 b s + c.
    a = 2.0 * (v_lo - v_hi) + width * (g_lo + g_hi)
    b = 3.0 * (v_hi - v_lo) - width * (2.0 * g_lo + g_hi)
    c = width * g_lo
    with np.errstate(all="ignore"):
        # The root where p'' < 0, written without cancellation: c / (sqrt(b^2 - 3ac) - b).
        s = c / (np.sqrt(np.maximum(b * b - 3.0 * a * c, 0.0)) - b)
    s = np.where(np.isfinite(s), np.clip(s, 0.0, 1.0), 0.5)
    return np.asarray(lo + width * s)
