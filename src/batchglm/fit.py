"""``batchglm.fit``: orchestration over feature chunks."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from batchglm import blocks
from batchglm.align import align_inputs
from batchglm.dask_fit import fit_dask
from batchglm.data import as_size_factors
from batchglm.design import Design, build_design, check_random_not_fixed
from batchglm.families import Family, get_family
from batchglm.fit_settings import FitSettings
from batchglm.formula import annotation_warnings_once
from batchglm.inputs import as_data
from batchglm.obs_weights import (
    as_weights,
    check_weighted_designs,
    feature_block,
    obs_array,
    weight_scale,
)
from batchglm.result import FitResult
from batchglm.solvers import block_cache
from batchglm.solvers.block_fit import fit_block
from batchglm.solvers.newton import SolverOptions
from batchglm.solvers.objective import Problem
from batchglm.solvers.status import Status, warn_if_unconverged, warn_if_unidentifiable

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]


@annotation_warnings_once  # hook: one AnnotationWarning per column per call
def fit(
    data: ArrayLike | pd.DataFrame | AnnData,
    design_loc: ArrayLike | pd.DataFrame | str,
    design_scale: ArrayLike | pd.DataFrame | str | None = None,
    *,
    obs: pd.DataFrame | None = None,
    layer: str | None = None,
    constraints_loc: ArrayLike | Mapping[str, str] | Sequence[str] | None = None,
    constraints_scale: ArrayLike | Mapping[str, str] | Sequence[str] | None = None,
    size_factors: ArrayLike | str | None = None,
    family: str | Family = "nb",
    max_iter: int = 100,
    tol: float = 1e-10,
    progress: bool | None = None,
    chunk_size: int | None = None,
    n_jobs: int | None = None,
    fixed_scale: ArrayLike | pd.DataFrame | None = None,
    init_loc: ArrayLike | None = None,
    random_effects: str | Sequence[str] | None = None,
    weights: ArrayLike | pd.Series | pd.DataFrame | str | None = None,
    offset: ArrayLike | pd.Series | pd.DataFrame | str | None = None,
    reml: bool = False,
) -> FitResult:
    """Fit one location/scale GLM per feature by exact maximum likelihood.

    Parameters
    ----------
    data : array_like, pandas.DataFrame or anndata.AnnData
        Observations ``(n_obs, n_features)``; DataFrame columns name the features
        (otherwise ``feature0, feature1, ...``). An AnnData gives ``adata.layers[layer]``
        (else ``adata.X``, dense or scipy sparse), names from ``var_names`` and
        ``obs_names``, and ``adata.obs`` for formulas.
    design_loc : array_like, pandas.DataFrame or str
        Location design ``(n_obs, p_loc)``. DataFrame columns name the coefficients;
        plain arrays get ``p0, p1, ...``. A formula such as ``"~ 1 + condition"`` is
        evaluated on ``obs`` by formulaic, whose column names become coefficient names.
    design_scale : array_like, pandas.DataFrame or str, optional
        Scale design ``(n_obs, p_scale)`` or formula; ``None`` is an intercept-only scale
        model.
    obs : pandas.DataFrame, optional
        Observation annotations for formulas, one row per observation; by default an
        AnnData's ``.obs``.
    layer : str, optional
        AnnData layer holding the data (e.g. raw counts); ``None`` uses ``adata.X``.
    constraints_loc, constraints_scale : array_like, dict or list of str, optional
        Either the seed encoding, shape ``(m, p)`` with ``m < p`` (one row per zero-sum set,
        ``-1`` on the dependent parameter, ``+1`` on the other members; rows may build on each
        other), or a ready matrix ``C`` of shape ``(p, k)`` with ``theta = C @ theta_free``.
        A matrix with ``p`` rows is always read as ``C``. With a formula design, a dict of
        nested factors such as ``{"replicate": "condition"}`` codes every level of
        ``replicate`` and constrains them to sum to zero within each ``condition``; a list
        of equations over coefficient names such as
        ``["replicate[T.r2] + replicate[T.r3] = 0"]`` works with any named design. See
        :mod:`batchglm.named_constraints`.
    size_factors : array_like or str, optional
        Positive per-observation factors, or a method to compute them from ``data``:
        ``"median_ratio"`` (DESeq2), ``"poscounts"`` (DESeq2's for sparse data) or
        ``"normed_sum"`` (see :func:`batchglm.size_factors.size_factors`; sparse data stay
        sparse). ``log(size_factors)`` is a location offset. Only
        for families with a log link for the mean (``"nb"``, ``"poisson"``); for
        ``"normal"`` and ``"beta"`` an offset on the identity or logit scale would not be a
        size factor, so passing one is an error (normalise ``data`` beforehand instead).
    family : str or Family
        ``"nb"``: negative binomial, log link for the mean and for the size ``r``
        (``var = mu + mu^2 / r``); integer counts.
        ``"poisson"``: log link for the mean, no scale model (``design_scale`` and
        ``constraints_scale`` must be None); integer counts.
        ``"normal"``: identity link for the mean, log link for the standard deviation; any
        finite values. With an intercept-only scale model it is solved in closed form
        (least squares, ``sd = sqrt(RSS / n)``; ``n_iter`` is 0).
        ``"beta"``: logit link for the mean, log link for the precision ``phi``
        (``var = mu (1 - mu) / (1 + phi)``); values strictly between 0 and 1.
    max_iter : int
        Maximum Newton iterations per feature.
    tol : float
        Convergence threshold on the Newton decrement (about twice the log-likelihood still
        to gain).
    progress : bool, optional
        Show a progress bar over feature chunks; by default only for large fits on a
        terminal.
    chunk_size : int, optional
        Features per chunk; by default chosen so working arrays stay around 4 MiB.
    fixed_scale : array_like or pandas.DataFrame, optional
        Known scale coefficients ``(n_features, p_scale)`` (full parameters, satisfying
        ``constraints_scale``; a 1-D array for an intercept-only scale model, e.g. NB
        ``log r`` from a dispersion-shrinkage method). Only the location is then fitted;
        the scale is treated as known, so its standard errors are 0 and location standard
        errors come from the location block of the observed information alone.
    init_loc : array_like, optional
        Starting values of the location coefficients ``(n_features, p_loc)`` (full
        parameters, projected onto ``constraints_loc`` by least squares), e.g. the
        coefficients of a fit that this one refines (a refit at shrunken dispersions,
        :func:`batchglm.dispersion.refit_location`): Newton then needs a few iterations
        instead of a cold start's. Rows with a non-finite entry get the default start. The
        optimum does not depend on the start where the likelihood has one; features
        without one (``separated``) may stop at other points of their flat direction.
    n_jobs : int, optional
        Threads fitting chunks in parallel; by default the number of CPU cores available to
        this process. NumPy releases the GIL in its element-wise kernels, so threads scale
        without copying data.
    random_effects : str or list of str, optional
        Name of an ``obs`` column (e.g. ``"donor"``) whose levels get random intercepts in
        the location model, ``log mu = offset + X a + u_donor`` with ``u ~ N(0, sigma^2)``
        per feature (several names: one variance per factor, crossed or nested), fitted by
        maximising the Laplace approximation of the marginal likelihood (as glmmTMB).
        Families ``"nb"`` and ``"poisson"``. The result has ``random_var``,
        ``random_effects(factor)``, between-within degrees of freedom for
        :func:`batchglm.de.wald`, and the Laplace marginal log-likelihood in ``loglik``;
        see ``docs/mixed_model.md``.
    weights : array_like, pandas.Series, pandas.DataFrame or str, optional
        Observation weights, non-negative and finite: ``(n_obs,)`` for all features or
        ``(n_obs, n_features)`` per observation and feature (e.g. zero-inflation
        posterior weights, as zinbwave's weights for DESeq2/edgeR). A Series or DataFrame is
        matched to the data by observation (and feature) names; a string names an ``obs``
        column. Each observation's log-likelihood term is multiplied by its weight, so the
        fit, its standard errors and ``loglik`` for an integer weight ``k`` are those of
        ``k`` copies of the observation (statsmodels' ``freq_weights``, edgeR's
        ``weights``); a weight of 0 drops the observation. Residual degrees of freedom count
        each observation of positive weight once. Dense arrays only (the data may be
        sparse, dask or on disk; dask takes ``(n_obs,)`` weights and offsets only).
    offset : array_like, pandas.Series, pandas.DataFrame or str, optional
        Location offset on the link scale of the mean (natural log for ``"nb"`` and
        ``"poisson"``, identity for ``"normal"``, logit for ``"beta"``), ``(n_obs,)`` or
        ``(n_obs, n_features)`` (e.g. tximport's length offsets, edgeR's ``offset``):
        ``eta = offset + log(size_factors) + X a``; given with ``size_factors`` the two add
        up. Aligned like ``weights``. A matrix offset ``log(size_factors)`` broadcast to
        every feature gives the size-factor fit.
    reml : bool, default False
        With ``random_effects`` (one factor): estimate the variance and the scale by the
        restricted Laplace likelihood (fixed effects integrated out with the random
        intercepts, glmmTMB's ``REML = TRUE``), which is less biased with few groups;
        ``loglik`` is then the restricted log-likelihood and ``bg.de.lrt`` refuses the fit.

    Returns
    -------
    FitResult
        Coefficients, standard errors, log-likelihoods and per-feature status. Weights and
        offset are kept in ``settings["weights"]`` and ``settings["offset"]`` (``None``
        when not given), for tests, refits, fitted values and residuals.

    Raises
    ------
    ValueError
        When inputs do not fit together or do not match the data: designs, constraints,
        size factors, ``fixed_scale``, weights or offsets of the wrong shape or names, or
        for a family without them (size factors need a log link for the mean); a design
        that is rank-deficient after its constraints, also on the observations of positive
        weight (vector ``weights``); weights that are negative, not finite or all zero for
        a feature; offsets that are not finite; a matrix of weights or offsets, or
        ``fixed_scale`` or ``init_loc``, with dask input; ``init_loc`` of the wrong shape
        or with ``random_effects``; ``max_iter < 1`` or ``tol <= 0``; data outside the
        family's domain; ``reml=True`` without ``random_effects`` or with several factors.
    NotImplementedError
        When ``weights`` or ``offset`` are given with ``random_effects``.

    Warns
    -----
    batchglm.ConvergenceWarning
        Once, summarising features that reached no optimum.
    batchglm.UnidentifiableWarning
        Once, naming the features whose design is rank-deficient on their observations of
        positive weight (``weights`` per observation and feature); they get the status
        ``unidentifiable`` and NaN estimates.

    Notes
    -----
    Features with no optimum in the interior get a finite estimate and a status:

    * ``all_zero`` (``"nb"``, ``"poisson"``): every count is zero. The location
      coefficients are the least-squares solution of ``X C a = log(1e-8)`` (a fitted mean of
      1e-8 times the size factor), the scale coefficients are 0, standard errors are NaN,
      and the feature is not fitted. For ``"normal"`` zeros are ordinary values.
    * ``scale_at_bound``: the scale optimum lies beyond the family's bound (NB: ``r`` at
      ``1e8``, under-dispersion; the fit is then numerically the Poisson fit; normal: ``sd``
      at ``1e-10`` for features the location model fits exactly, such as constant ones;
      beta: ``phi`` outside ``[1e-4, 1e6]``). The scale is held there and the location is
      fitted.
    * ``separated`` (``"nb"``, ``"poisson"``): a group with only zeros pushes fitted means
      towards 0; the fit stops where the remaining gain is below ``tol`` (fitted means
      below about 1e-9).
      Identifiable contrasts that do not involve that group keep meaningful standard errors.

    * ``unidentifiable`` (per-feature ``weights``): the feature's location or scale design
      restricted to its observations of positive weight is rank-deficient (e.g. a level
      whose observations all have weight 0 for that feature). Not fitted: coefficients,
      standard errors and ``loglik`` are NaN, and so are its test results.

    Weights are solved at each feature's weights divided by their mean positive weight
    (the estimates do not change, and the convergence rule then means the same for
    weights of any magnitude); ``loglik`` and the covariance are scaled back.
    """
    fam = get_family(family)
    d = as_data(data, layer=layer)
    n_obs, n_feat = d.shape
    # Labelled inputs follow the data's names, never their positions (docs/inputs.md).
    obs, design_loc, design_scale, size_factors, fixed_scale = align_inputs(
        d, obs, design_loc, design_scale, size_factors, fixed_scale
    )
    check_random_not_fixed(design_loc, random_effects)  # before the rank check (trust)
    loc = build_design(design_loc, constraints_loc, n_obs, "loc", obs=obs)
    if not fam.has_scale and (design_scale is not None or constraints_scale is not None):
        raise ValueError(
            f"family {fam.name!r} has no scale parameter, so `design_scale` and "
            "`constraints_scale` must be None."
        )
    scale = build_design(design_scale, constraints_scale, n_obs, "scale", obs=obs)
    if size_factors is not None and fam.loc_link != "log":
        raise ValueError(
            f"family {fam.name!r} has a {fam.loc_link} link for the mean, so `size_factors` "
            "(an offset log(size_factors) for log-link means) must be None; normalise "
            "`data` before fitting instead."
        )
    if size_factors is None and fam.name in ("nb", "poisson"):
        _warn_unnormalised_pseudobulk(data, d.values)
    # FitSettings.size_factors: the method's name, "given" for values, None for none.
    sf_method = size_factors if isinstance(size_factors, str) or size_factors is None else "given"
    w = as_weights(weights, d, obs)
    if isinstance(size_factors, str):
        from batchglm.size_factors import size_factors as named_size_factors

        # Per-observation weights enter the estimate (integer weights = duplicated rows);
        # per-feature weights have no such equivalent and do not.
        sf_weights = w if w is not None and w.ndim == 1 else None
        size_factors = named_size_factors(d, size_factors, weights=sf_weights)
    sf = as_size_factors(size_factors, n_obs)
    if max_iter < 1:
        raise ValueError(f"`max_iter` must be at least 1, but {max_iter} was given.")
    if not tol > 0:
        raise ValueError(f"`tol` must be positive, but {tol} was given.")

    fixed_b = _fixed_scale(fixed_scale, scale, n_feat, fam.has_scale)
    start_a = _init_loc(init_loc, loc, n_feat, random_effects is not None or d.kind == "dask")
    check_weighted_designs(loc, scale, w)
    # Solve at weights of mean 1 per feature: estimates do not depend on a constant factor
    # on the weights, the absolute convergence tolerance would (loglik is rescaled below).
    w_scale = weight_scale(w)
    w_solve = None if w is None or w_scale is None else w / w_scale
    off = obs_array(offset, d, obs, "offset")
    if reml and random_effects is None:
        raise ValueError("`reml=True` needs `random_effects`; it was None.")
    if random_effects is not None and (w is not None or off is not None):
        raise NotImplementedError(
            "`weights` and `offset` are not supported with `random_effects` (the Laplace "
            "objective of mixed models is unweighted); fit without them or use size factors."
        )
    if d.kind == "dask" and any(v is not None and v.ndim == 2 for v in (w, off)):
        raise ValueError(
            "`weights` and `offset` must be per observation, shape (n_obs,), for dask input, "
            "but an (n_obs, n_features) matrix was given; compute the data first."
        )
    log_sf = np.log(sf)
    problem = Problem(
        fam,
        loc,
        scale,
        log_sf + off if off is not None and off.ndim == 1 else log_sf,
        weights=w_solve if w_solve is not None and w_solve.ndim == 1 else None,
    )
    options = SolverOptions(max_iter=max_iter, tol=tol)
    if random_effects is not None:
        from batchglm.mixed.fit import fit_mixed, mixed_grouping

        grouping = mixed_grouping(random_effects, obs, n_obs, loc, fam.name, fixed_b is not None)
        return fit_mixed(
            d,
            problem,
            grouping,
            options,
            blocks.block_size(n_obs, chunk_size),
            blocks.n_workers(n_jobs),
            {"max_iter": max_iter, "tol": tol, "fixed_scale": False, "layer": layer},
            reml=reml,
        )
    k = problem.n_params
    theta = np.zeros((n_feat, k))
    cov = np.full((n_feat, k, k), np.nan)
    loglik = np.zeros(n_feat)
    n_iter = np.zeros(n_feat, dtype=np.int32)
    status = np.zeros(n_feat, dtype=np.int8)

    # One block rule and one parallel map for every pass (batchglm.blocks).
    chunk = blocks.block_size(n_obs, chunk_size)
    jobs = blocks.n_workers(n_jobs)
    if d.kind == "dense":
        fam.validate(d.values)
    elif d.kind == "dask" and fixed_b is not None:
        raise ValueError("`fixed_scale` is not supported for dask input; compute the data first.")
    show = blocks.show_progress(progress, n_obs, n_feat)
    started = time.perf_counter()
    logger.info(
        "fitting %d features x %d observations (%s, %d free parameters each)",
        n_feat,
        n_obs,
        fam.name,
        k,
    )

    # Inside bg.de.test the count tables of each block are kept for the refits of the same
    # counts (batchglm.solvers.block_cache); unweighted in-memory fits only.
    kept = None
    if d.kind != "dask" and w is None and fam.has_count_terms:
        kept = block_cache.tables_for(d.values)

    def run(sl: slice) -> None:
        y, nonzeros = d.block_with_nonzeros(sl)
        if d.kind != "dense":
            # Sparse and on-disk blocks are checked as they are read: one pass, not two.
            fam.validate(y, sl.start)
        fixed = None if fixed_b is None else fixed_b[sl]
        out = fit_block(
            problem,
            y,
            options,
            fixed,
            feature_block(w_solve, sl),
            feature_block(off, sl),
            nonzeros,
            None if start_a is None else start_a[sl],
            None if kept is None else kept.setdefault((sl.start, sl.stop), {}),
        )
        theta[sl], cov[sl], loglik[sl], n_iter[sl], status[sl] = out

    if d.kind == "dask":
        with (
            threadpool_limits(limits=1, user_api="blas"),
            tqdm(total=n_feat, disable=not show, unit="feature", desc="batchglm.fit") as bar,
        ):
            theta, cov, loglik, n_iter, status = fit_dask(
                d.values, problem, options, fam.validate, chunk
            )
            bar.update(n_feat)
    else:
        blocks.map_blocks(
            run,
            blocks.feature_blocks(n_feat, chunk),
            n_jobs=jobs,
            progress=show,
            desc="batchglm.fit",
        )
    if w_scale is not None:
        # Undo the normalisation: loglik, score and information are linear in the weights.
        loglik = loglik * w_scale
        cov = cov / (w_scale[..., None, None] if w_scale.ndim else w_scale)
    counts = {
        Status(int(c)).label: int(k)
        for c, k in zip(*np.unique(status, return_counts=True), strict=True)
    }
    logger.info("fitted %d features in %.2f s: %s", n_feat, time.perf_counter() - started, counts)
    warn_if_unconverged(status, max_iter, d.feature_names.tolist())
    warn_if_unidentifiable(status, d.feature_names.tolist())
    return FitResult(
        family=fam,
        feature_names=d.feature_names,
        obs_names=d.obs_names,
        loc=loc,
        scale=scale,
        size_factors=sf,
        theta_free=theta,
        cov_free=cov,
        loglik_values=loglik,
        n_iter_values=n_iter,
        status_codes=status,
        settings=FitSettings(
            family=fam.name,
            max_iter=max_iter,
            tol=tol,
            fixed_scale=fixed_b is not None,
            layer=layer,
            chunk_size=chunk_size,
            n_jobs=n_jobs,
            size_factors=sf_method,
            weights=w,
            offset=off,
        ),
        data=d,
    )


def _fixed_scale(
    fixed_scale: ArrayLike | pd.DataFrame | None, scale: Design, n_feat: int, has_scale: bool
) -> Array | None:
    """Free scale parameters ``(F, k_scale)`` from user-given full coefficients."""
    if fixed_scale is None:
        return None
    if not has_scale:
        raise ValueError("`fixed_scale` must be None for a family without a scale parameter.")
    full = np.asarray(fixed_scale, dtype=np.float64)
    if full.ndim == 1:
        full = full[:, None]
    p = len(scale.names)
    if full.shape != (n_feat, p):
        raise ValueError(
            f"`fixed_scale` must have shape ({n_feat}, {p}) (features x scale coefficients), "
            f"but its shape is {full.shape}."
        )
    if not np.all(np.isfinite(full)):
        raise ValueError("`fixed_scale` must be finite, but it has NaN or infinite values.")
    free = np.linalg.lstsq(scale.constraints, full.T, rcond=None)[0].T
    if np.abs(free @ scale.constraints.T - full).max() > 1e-8 * (1.0 + np.abs(full).max()):
        raise ValueError("`fixed_scale` must satisfy `constraints_scale`, but it does not.")
    return np.ascontiguousarray(free)


def _init_loc(
    init_loc: ArrayLike | None, loc: Design, n_feat: int, unsupported: bool
) -> Array | None:
    """Free location starting values ``(F, k_loc)`` from user-given full coefficients."""
    if init_loc is None:
        return None
    if unsupported:
        raise ValueError(
            "`init_loc` must be None for dask input or with `random_effects`, but it was given."
        )
    full = np.asarray(init_loc, dtype=np.float64)
    p = len(loc.names)
    if full.shape != (n_feat, p):
        raise ValueError(
            f"`init_loc` must have shape ({n_feat}, {p}) (features x location coefficients), "
            f"but its shape is {full.shape}."
        )
    with np.errstate(invalid="ignore"):
        free = np.linalg.lstsq(loc.constraints, np.nan_to_num(full).T, rcond=None)[0].T
    free[~np.isfinite(full).all(axis=1)] = np.nan
    return np.ascontiguousarray(free)


def _warn_unnormalised_pseudobulk(data: object, values: object) -> None:
    """Warn when ``bg.pseudobulk`` sums are fitted without size factors.

    Sums over donors with different numbers of cells differ in depth by as much as the
    cell counts; without size factors that difference is read as expression (a user's
    5 vs 5 donors of 36-382 cells: power 0.00-0.04 instead of 0.36-0.40). DESeq2 and edgeR
    normalise pseudobulk samples by library size.
    """
    import warnings

    from batchglm.pseudobulk import PSEUDOBULK_KEY
    from batchglm.warning_site import user_stacklevel

    uns = getattr(data, "uns", None)
    if not isinstance(uns, Mapping) or PSEUDOBULK_KEY not in uns:
        return
    totals = np.asarray(values.sum(axis=1)).ravel()  # type: ignore[attr-defined]
    totals = totals[totals > 0]
    if totals.size < 2 or totals.max() <= 1.5 * totals.min():
        return
    warnings.warn(
        f"`data` holds bg.pseudobulk sums whose totals differ {totals.max() / totals.min():.1f}"
        "-fold between samples, but no size factors were given, so that depth is fitted as "
        "expression; pass size_factors='median_ratio' (or 'poscounts' for sparse genes, "
        "DESeq2's and edgeR's practice for pseudobulk).",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
