"""Orchestration of a random-intercept fit over feature chunks.

Per chunk: the plain GLM (:func:`batchglm.fit`'s block fit) gives starting values for the
fixed effects and the scale; a moment estimate starts ``sigma``; the engine of
:mod:`batchglm.solvers.newton` then maximises the Laplace objective of
:mod:`batchglm.mixed.laplace`. Nothing loops over features.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm import blocks
from batchglm.data import Data
from batchglm.design import Design
from batchglm.fit_settings import FitSettings
from batchglm.mixed.grouping import Grouping, parse_random_effects
from batchglm.mixed.joint import JointLaplaceObjective
from batchglm.mixed.laplace import LaplaceObjective
from batchglm.mixed.random_effects import VAR_AT_BOUND, RandomEffects
from batchglm.mixed.reml import RemlObjective, fixed_effect_covariance
from batchglm.mixed.small_sample import between_within
from batchglm.result import FitResult
from batchglm.solvers.linalg import inverse_negative
from batchglm.solvers.newton import SolverOptions, solve
from batchglm.solvers.objective import Problem
from batchglm.solvers.status import CONVERGED_CODES, Status, warn_if_unconverged

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]

#: Newton decrement at which the plain GLM fit that starts the mixed fit stops.
_START_TOL = 1e-4
#: Families with a log link whose log-likelihood is concave in the predictor.
FAMILIES = ("nb", "poisson")

Block = tuple[Array, Array, Array, NDArray[np.int32], NDArray[np.int8], Array, Array, Array, Array]


def fit_mixed(
    d: Data,
    problem: Problem,
    groupings: list[Grouping],
    options: SolverOptions,
    chunk: int,
    n_jobs: int,
    settings: dict[str, object],
    reml: bool = False,
) -> FitResult:
    """Fit a random-intercept GLM per feature by maximising the Laplace likelihood.

    Parameters
    ----------
    d : Data
        The observations (dense or sparse; densified one chunk at a time).
    problem : Problem
        Fixed-effect designs, family and offsets.
    groupings : list of Grouping
        The random-intercept factors (several: see :mod:`batchglm.mixed.joint`).
    options : SolverOptions
        Newton settings of the outer problem.
    chunk : int
        Features per chunk.
    n_jobs : int
        Threads over chunks.
    settings : dict
        Recorded in the result.
    reml : bool
        Estimate the variance and scale by the restricted Laplace likelihood
        (:mod:`batchglm.mixed.reml`, glmmTMB's ``REML = TRUE``) instead of the marginal one.

    Returns
    -------
    FitResult
        Fixed effects (``coef_loc``, ``se_loc`` from the inverse observed information of
        the Laplace likelihood), scale, Laplace ``loglik``, and ``random_var`` /
        ``random_effects``.

    Raises
    ------
    ValueError
        For a family other than ``nb`` or ``poisson``, dask data, values that are not
        non-negative integer counts, or ``reml`` with several grouping factors.
    """
    fam = problem.family
    if reml and len(groupings) > 1:
        raise ValueError(
            f"`reml=True` supports one random-intercept factor, but {len(groupings)} were "
            f"given ({[g.factor for g in groupings]}); use `reml=False` for several."
        )
    if fam.name not in FAMILIES:
        raise ValueError(
            f"`random_effects` needs family 'nb' or 'poisson' (log link), but family "
            f"{fam.name!r} was given."
        )
    if d.kind == "dask":
        raise ValueError("`random_effects` is not supported for dask input; compute it first.")
    n_obs, n_feat = d.shape
    # Bad values fail before any fitting, as in `bg.fit`.
    if d.kind == "dense":
        fam.validate(d.values)
    k = problem.n_params
    theta = np.zeros((n_feat, k))
    cov = np.full((n_feat, k, k), np.nan)
    loglik = np.zeros(n_feat)
    n_iter = np.zeros(n_feat, dtype=np.int32)
    status = np.zeros(n_feat, dtype=np.int8)
    n_fac = len(groupings)
    var = np.zeros((n_feat, n_fac))
    q = sum(g.n_groups for g in groupings)
    modes = np.zeros((q, n_feat))
    g0 = groupings[0].n_groups
    donor_resid = np.full((g0, n_feat), np.nan)
    donor_var = np.full((g0, n_feat), np.nan)
    # With further factors: every feature's group log levels, from which the moderation reads
    # the within-stratum variance (batchglm.mixed.moderation, containment strata).
    stratum_resid = np.full((g0, n_feat), np.nan) if len(groupings) > 1 else None
    factors = [g.factor for g in groupings]
    logger.info(
        "fitting %d features x %d observations with random intercepts for %s (%d groups, %s)",
        n_feat,
        n_obs,
        factors,
        q,
        fam.name,
    )

    def run(sl: slice) -> None:
        y = d.block(sl)
        if d.kind != "dense":
            fam.validate(y, sl.start)  # sparse and on-disk blocks: checked as they are read
        out = fit_block(problem, y, groupings, options, reml)
        theta[sl], cov[sl], loglik[sl], n_iter[sl], status[sl], var[sl], modes[:, sl] = out[:7]
        donor_resid[:, sl], donor_var[:, sl] = out[7:]
        if stratum_resid is not None:
            fitted = status[sl] != Status.ALL_ZERO
            block = np.full((g0, fitted.size), np.nan)
            block[:, fitted] = group_residuals(
                problem, np.asarray(y)[:, fitted], theta[sl][fitted], groupings[0]
            )[0]
            stratum_resid[:, sl] = block

    # The feature-block rule and parallel map of every pass (threads, BLAS held to one).
    blocks.map_blocks(
        run, blocks.feature_blocks(n_feat, chunk), n_jobs=n_jobs, desc="batchglm.fit (mixed)"
    )
    if reml:
        _log_reml_nonfinite(status, d.feature_names)
    warn_if_unconverged(status, options.max_iter)
    _log_factors_at_bound(var, status, factors)
    return FitResult(
        family=fam,
        feature_names=d.feature_names,
        obs_names=d.obs_names,
        loc=problem.loc,
        scale=problem.scale,
        size_factors=np.exp(problem.offset),
        theta_free=theta,
        cov_free=cov,
        loglik_values=loglik,
        n_iter_values=n_iter,
        status_codes=status,
        settings=FitSettings.from_mapping(
            {**settings, "random_effects": factors, "method": "reml" if reml else "laplace"},
            family=fam.name,
        ),
        random=RandomEffects(
            factors,
            [g.levels for g in groupings],
            var,
            np.split(modes, np.cumsum([g.n_groups for g in groupings])[:-1]),
            [g.sums.index for g in groupings],
        ),
        # With several factors the first one names the replicates (see docs/mixed_model.md).
        small_sample=between_within(
            problem.loc.matrix,
            groupings[0].sums,
            donor_resid,
            donor_var,
            np.where(status != Status.ALL_ZERO, var[:, 0], np.nan),
            reml=reml,
            others=[g.sums for g in groupings[1:]],
            other_at_zero=var[:, 1:] < VAR_AT_BOUND,
            stratum_resid=stratum_resid,
        ),
        data=d,
    )


def _log_factors_at_bound(var: Array, status: NDArray[np.int8], factors: list[str]) -> None:
    """Say which factor's variance is 0 among ``random_var_at_bound`` features (INFO)."""
    if len(factors) < 2:
        return
    zero = (var < VAR_AT_BOUND) & (status != Status.ALL_ZERO)[:, None]
    if not zero.any():
        return
    per = ", ".join(f"{f!r} {int(n)}" for f, n in zip(factors, zero.sum(axis=0), strict=True))
    logger.info(
        "random-intercept variance at 0 (singular fit) in %d feature(s): %s, all factors %d; "
        "`res.random_var_at_bound` says which factor per feature.",
        int(zero.any(axis=1).sum()),
        per,
        int(zero.all(axis=1).sum()),
    )


def _log_reml_nonfinite(status: NDArray[np.int8], names: pd.Index) -> None:
    """Name the features without a finite restricted likelihood (logged as a warning)."""
    bad = np.flatnonzero(status == Status.NONFINITE)
    if bad.size:
        shown = ", ".join(str(n) for n in names[bad[:5]]) + (", ..." if bad.size > 5 else "")
        logger.warning(
            "%d feature(s) have no finite REML likelihood (%s): their fixed effects are not "
            "identifiable from the data (e.g. all zeros in one condition); fit them with "
            "`reml=False`.",
            bad.size,
            shown,
        )


def start_sigma(problem: Problem, y: Array, a: Array, grouping: Grouping) -> tuple[Array, Array]:
    """Moment start for ``sigma``: root mean square of the groups' log observed/fitted ratio.

    Parameters
    ----------
    problem : Problem
        Designs and offsets.
    y : ndarray
        Counts ``(n_obs, F)``.
    a : ndarray
        Fixed-effect location coefficients of the plain GLM ``(F, k_loc)``.
    grouping : Grouping
        The groups.

    Returns
    -------
    sigma : ndarray
        ``(F,)`` starting values in ``[0.05, 2]`` (never 0: ``sigma = 0`` is a stationary
        point of the Laplace likelihood, so a start there would stay there).
    ratio : ndarray
        ``(n_groups, F)`` the log ratios ``log((sum_g y + 1/2) / (sum_g mu + 1/2))``
        (natural log), starting values of the random intercepts ``u_g``.
    """
    mu = np.exp(problem.eta_loc(a))
    ratio = np.log((grouping.sums(y) + 0.5) / (grouping.sums(mu) + 0.5))
    return np.clip(np.sqrt((ratio * ratio).mean(axis=0)), 0.05, 2.0), ratio


def fit_block(
    problem: Problem,
    y: Array,
    groupings: list[Grouping],
    options: SolverOptions,
    reml: bool = False,
) -> Block:
    """Fit one chunk of features.

    Parameters
    ----------
    problem : Problem
        Designs, family and offsets.
    y : ndarray
        Counts ``(n_obs, F)``.
    groupings : list of Grouping
        The random-intercept factors.
    options : SolverOptions
        Newton settings.
    reml : bool
        Maximise the restricted Laplace likelihood (one factor).

    Returns
    -------
    tuple
        ``theta (F, k)``, ``cov (F, k, k)``, ``loglik``, ``n_iter``, ``status``, variances
        ``(F, n_factors)`` and modes ``(total groups, F)`` on the natural-log scale.
    """
    from batchglm.solvers.block_fit import fit_block as glm_fit_block

    # The plain GLM only starts the outer Newton iteration, which converges on its own:
    # a decrement of 1e-4 (a log-likelihood gain below 1e-4 left) is close enough and
    # saves its last, quadratically converging iterations.
    start_options = dataclasses.replace(options, tol=max(options.tol, _START_TOL))
    theta, cov, loglik, n_iter, status = glm_fit_block(problem, y, start_options)
    n_feat = y.shape[1]
    n_fac = len(groupings)
    factor_of = np.repeat(np.arange(n_fac), [g.n_groups for g in groupings])
    var = np.zeros((n_feat, n_fac))
    modes = np.zeros((factor_of.size, n_feat))
    resid = np.full((groupings[0].n_groups, n_feat), np.nan)
    resid_var = resid.copy()
    fit = status != Status.ALL_ZERO
    if not fit.any():
        return theta, cov, loglik, n_iter, status, var, modes, resid, resid_var
    kl = problem.k_loc
    yf = np.ascontiguousarray(y[:, fit])
    a0, b0 = theta[fit, :kl], theta[fit, kl:]
    # Several factors share the group-to-group variation at the start.
    starts = [start_sigma(problem, yf, a0, g) for g in groupings]
    sig0 = [st[0] / np.sqrt(n_fac) for st in starts]
    # With one factor the groups' log ratios start the modes (standardised, u / sigma):
    # the first inner solve then needs two or three Newton steps instead of five or six.
    v0 = starts[0][1] / sig0[0][None, :] if n_fac == 1 else None
    sens: Array | None = None
    schur: Array | None = None
    if reml:
        sol_theta, hess, sol_loglik, sol_n_iter, sol_status, sens, schur, v = _solve_reml(
            problem, yf, groupings[0], a0, sig0[0], b0, options, v0
        )
    else:
        start = np.column_stack([a0, *sig0, b0])
        objective: LaplaceObjective | JointLaplaceObjective
        if n_fac == 1:
            objective = LaplaceObjective(problem, yf, groupings[0].sums, v0)
        else:
            objective = JointLaplaceObjective(problem, yf, groupings)
        sol = solve(objective, start, options)
        sol_theta, hess, sol_loglik = sol.theta, sol.hess.copy(), sol.loglik
        sol_n_iter, sol_status = sol.n_iter, sol.status
        glm_status = status[fit]
        back = boundary_fallback(sol_status, sol_loglik, loglik[fit], glm_status)
        if back.any():
            # The start stopped at a decrement of 1e-4; the boundary solution is the GLM
            # optimum at the caller's tolerance (a rare path: one more GLM pass).
            glm_theta, _, _, _, glm_full = glm_fit_block(problem, y, options)
            glm_status = np.where(back, glm_full[fit], glm_status).astype(np.int8)
            a1, b1 = glm_theta[fit, :kl], glm_theta[fit, kl:]
            sol_theta = sol_theta.copy()
            sol_theta[back] = np.column_stack([a1, np.zeros((a1.shape[0], n_fac)), b1])[back]
            # An optimum on the boundary, not a failure the user must act on: INFO.
            logger.info(
                "%d feature(s) of the mixed fit stalled or ended below their plain GLM fit "
                "(the Laplace likelihood at variance 0); they are reported at the boundary "
                "(random-intercept variance 0, the GLM coefficients).",
                int(back.sum()),
            )
            ll_b, _, hess_b = objective.evaluate(sol_theta, 2)
            assert hess_b is not None
            sol_loglik = np.where(back, ll_b, sol_loglik)
            hess[back] = hess_b[back]
            # The GLM's own status (converged, scale_at_bound, separated) carries over;
            # converged becomes random_var_at_bound below.
            sol_status = np.where(back, glm_status, sol_status).astype(np.int8)
        else:
            objective.evaluate(sol_theta, 0)
        v = objective.modes
    sigma = sol_theta[:, kl : kl + n_fac]
    zero = sigma * sigma < VAR_AT_BOUND
    at_bound = zero.any(axis=1) & (sol_status == Status.CONVERGED)
    sol_status[at_bound] = Status.RANDOM_VAR_AT_BOUND
    sep_eta = problem.family.separated_eta
    if sep_eta is not None:
        # As for plain fits (batchglm.solvers.block_fit): an optimum whose fixed-effect
        # fitted mean is practically 0 somewhere ran off (e.g. all zeros in one condition);
        # say so in `res.status`, not only in the test's table.
        from batchglm.solvers.block_fit import _min_eta

        optimum = np.isin(sol_status, CONVERGED_CODES)
        ran_off = _min_eta(problem, sol_theta[:, :kl], None, None) < sep_eta
        sol_status[optimum & ran_off] = Status.SEPARATED
    # On the boundary a sigma's curvature can vanish; the other parameters decouple from
    # it there (the likelihood is even in each sigma), so it is taken out before inverting.
    for j in range(n_fac):
        rows = zero[:, j]
        hess[rows, kl + j, :] = 0.0
        hess[rows, :, kl + j] = 0.0
        hess[rows, kl + j, kl + j] = -1.0
    keep = np.r_[np.arange(kl), np.arange(kl + n_fac, kl + n_fac + problem.k_scale)]
    if reml:
        # hess is the Hessian of L_R over [sigma, b]; a* moves with them (glmmTMB's vcov).
        assert sens is not None and schur is not None
        sens[zero[:, 0], :, 0] = 0.0
        cov_full = fixed_effect_covariance(schur, sens, inverse_negative(hess[:, kl:, kl:]))
        cov_fit = cov_full[:, keep][:, :, keep]
    else:
        cov_fit = inverse_negative(hess)[:, keep][:, :, keep]
    theta[fit] = sol_theta[:, keep]
    cov[fit] = cov_fit
    loglik[fit] = sol_loglik
    n_iter[fit] = sol_n_iter
    status[fit] = sol_status
    var[fit] = sigma * sigma
    modes[:, fit] = sigma.T[factor_of] * v
    # Features whose first factor's variance is 0: the group-level summaries of the
    # boundary-aware test (batchglm.mixed.small_sample.donor_level_sf).
    first_zero = np.flatnonzero(fit)[zero[:, 0]]
    if first_zero.size:
        resid[:, first_zero], resid_var[:, first_zero] = group_residuals(
            problem, y[:, first_zero], theta[first_zero], groupings[0]
        )
    return theta, cov, loglik, n_iter, status, var, modes, resid, resid_var


def boundary_fallback(
    status: NDArray[np.int8], loglik: Array, glm_loglik: Array, glm_status: NDArray[np.int8]
) -> NDArray[np.bool_]:
    """Features whose mixed fit must be replaced by its boundary solution (variance 0).

    With every random-intercept variance at 0 the Laplace marginal likelihood equals the
    plain GLM likelihood, so a maximum-likelihood mixed fit can never end below the GLM fit
    of the same feature. A fit that does (by more than ``1e-6 + 1e-10 |loglik|``), or that
    stalled without getting above it, failed; where the GLM fit itself reached an optimum,
    the boundary point (GLM coefficients and scale, variance 0) is the better answer. A
    stalled fit above the GLM fit stays ``stalled`` (it is not an optimum, nor is the
    boundary). Not for REML fits, whose restricted likelihood differs from the GLM's.

    Parameters
    ----------
    status : ndarray of int8
        ``(F,)`` status of the mixed fit.
    loglik : ndarray
        ``(F,)`` Laplace log-likelihood at its end (natural log).
    glm_loglik : ndarray
        ``(F,)`` log-likelihood of the plain GLM fit that started it.
    glm_status : ndarray of int8
        ``(F,)`` status of that GLM fit.

    Returns
    -------
    ndarray of bool
        ``(F,)`` features to report at the boundary.
    """
    tol = 1e-6 + 1e-10 * np.abs(glm_loglik)
    with np.errstate(invalid="ignore"):
        below = ~(loglik >= glm_loglik - tol)
        not_above = ~(loglik > glm_loglik + tol)
    glm_ok = np.isin(glm_status, CONVERGED_CODES) & np.isfinite(glm_loglik)
    failed = below | ((status == Status.STALLED) & not_above)
    out: NDArray[np.bool_] = glm_ok & failed
    return out


def _solve_reml(
    problem: Problem,
    y: Array,
    grouping: Grouping,
    a0: Array,
    sigma0: Array,
    b0: Array,
    options: SolverOptions,
    v0: Array | None,
) -> tuple[Array, Array, Array, NDArray[np.int32], NDArray[np.int8], Array, Array, Array]:
    """Maximise the restricted Laplace likelihood; results laid out as ``[a, sigma, b]``."""
    objective = RemlObjective(problem, y, grouping.sums, a0, v0)
    sol = solve(objective, np.column_stack([sigma0, b0]), options)
    # Derivatives, a* and its sensitivities at the final point.
    loglik, _, outer_hess = objective.evaluate(sol.theta, 2)
    assert outer_hess is not None and objective.sens is not None
    assert objective.schur is not None
    kl = problem.k_loc
    k = kl + sol.theta.shape[1]
    hess = np.zeros((y.shape[1], k, k))
    hess[:, kl:, kl:] = outer_hess
    theta = np.column_stack([objective.a, sol.theta])
    status = sol.status.copy()
    return (
        theta,
        hess,
        loglik,
        sol.n_iter,
        status,
        objective.sens,
        objective.schur,
        objective.modes,
    )


def group_residuals(
    problem: Problem, y: Array, theta: Array, grouping: Grouping
) -> tuple[Array, Array]:
    """Log observed/fitted ratio of every group and its sampling variance.

    Parameters
    ----------
    problem : Problem
        Designs, family and offsets.
    y : ndarray
        Counts ``(n_obs, F)``.
    theta : ndarray
        Fixed-effect fit ``(F, k_loc + k_scale)`` (random intercepts at 0).
    grouping : Grouping
        The groups.

    Returns
    -------
    resid : ndarray
        ``(n_groups, F)``: ``log((sum_g y + 1/2) / (sum_g mu + 1/2))`` (natural log).
    var : ndarray
        ``(n_groups, F)``: its delta-method variance with no group effect,
        ``sum_g Var(y) / (sum_g mu + 1/2)^2`` (``Var(y) = mu + mu^2 / r`` for NB, ``mu``
        for Poisson).
    """
    kl = problem.k_loc
    mu = np.exp(problem.eta_loc(theta[:, :kl]))
    var_y = mu
    if problem.family.has_scale:
        r = np.exp(problem.scale_groups.expand(problem.eta_scale_groups(theta[:, kl:])))
        var_y = mu + mu * mu / r
    sums = grouping.sums
    fitted = sums(mu) + 0.5
    return np.log((sums(y) + 0.5) / fitted), sums(var_y) / (fitted * fitted)


def mixed_grouping(
    random_effects: str | Sequence[str],
    obs: pd.DataFrame | None,
    n_obs: int,
    loc: Design,
    family: str,
    fixed_scale: bool,
) -> list[Grouping]:
    """Check the arguments of a mixed fit and return its grouping factor.

    Parameters
    ----------
    random_effects : str or sequence of str
        As in :func:`batchglm.fit`.
    obs : pandas.DataFrame or None
        Observation annotations.
    n_obs : int
        Number of observations.
    loc : Design
        Fixed location design.
    family : str
        Family name.
    fixed_scale : bool
        Whether ``fixed_scale`` was given.

    Returns
    -------
    list of Grouping
        The random-intercept factors.

    Raises
    ------
    ValueError
        For a family other than ``nb``/``poisson``, with ``fixed_scale``, or a bad factor
        (see :func:`batchglm.mixed.grouping.parse_random_effects`).
    """
    if family not in FAMILIES:
        raise ValueError(
            f"`random_effects` needs family 'nb' or 'poisson' (log link), but family "
            f"{family!r} was given."
        )
    if fixed_scale:
        raise ValueError("`fixed_scale` must be None with `random_effects`.")
    return parse_random_effects(random_effects, obs, n_obs, loc)
