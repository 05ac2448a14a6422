"""Likelihood-ratio tests between nested location/scale models.

Besides two designs, the reduced model can be the full design under the constraint
``L a = 0`` for a contrast ``L`` (edgeR's ``glmLRT(contrast=)``): see
:mod:`batchglm.de.lrt_contrast`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from batchglm.align import align_to_data
from batchglm.de.degrees_of_freedom import warn_small_sample
from batchglm.de.lrt_mixed import (
    check_lrt_dispersion,
    flag_count_outliers,
    mixed_ready_fits,
    mixed_reference,
)
from batchglm.de.model_spec import Model, model_keywords
from batchglm.de.result import DEResult
from batchglm.de.scale_test import (
    scale_only,
    use_cox_reid,
)
from batchglm.de.separated_tests import lrt_floor
from batchglm.de.shrunken import attach, check_dispersion, shrunken_fit
from batchglm.de.statistics import SAME_SPACE, likelihood_ratio
from batchglm.design import build_design
from batchglm.dispersion.estimate import fixed_log_r, refit_location
from batchglm.families import Family
from batchglm.fit import fit
from batchglm.formula import annotation_warnings_once
from batchglm.mixed.count_outliers import COUNT_OUTLIER_ALPHA
from batchglm.nested_designs import check_nested
from batchglm.obs_weights import same_weights
from batchglm.result import FitResult

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]


@annotation_warnings_once  # hook: one AnnotationWarning per column per call
def lrt(
    data: Any = None,
    full_loc: Any = None,
    reduced_loc: Any = None,
    full_scale: Any = None,
    reduced_scale: Any = None,
    *,
    full: FitResult | Model | None = None,
    reduced: FitResult | Model | None = None,
    obs: pd.DataFrame | None = None,
    family: str | Family = "nb",
    size_factors: ArrayLike | None = None,
    constraints_full_loc: ArrayLike | None = None,
    constraints_reduced_loc: ArrayLike | None = None,
    constraints_full_scale: ArrayLike | None = None,
    constraints_reduced_scale: ArrayLike | None = None,
    coef: str | None = None,
    dispersion: str = "mle",
    trend: str = "parametric",
    scale_test: str | None = None,
    progress: bool | None = None,
    moderate: bool | str | None = None,
    count_outlier_alpha: float | None = COUNT_OUTLIER_ALPHA,
    **fit_kwargs: Any,
) -> DEResult:
    """Likelihood-ratio test of a reduced model against a full model, per feature.

    Either fits both models on ``data`` with :func:`batchglm.fit`, or takes two ready
    fits ``full=`` and ``reduced=``.

    Parameters
    ----------
    data : array_like, pandas.DataFrame or AnnData, optional
        Observations ``(n_obs, n_features)``, anything :func:`batchglm.fit` accepts. With
        ready fits ``full=``/``reduced=`` it defaults to the data of ``full`` (``res.data``).
    full_loc : design, optional
        Location design of the full model (matrix, DataFrame, or a formula with ``obs``).
    reduced_loc : design, optional
        Location design of the reduced model; ``None`` keeps ``full_loc`` (a test of the
        scale model only).
    full_scale : design, optional
        Scale design of the full model; ``None`` is intercept only.
    reduced_scale : design, optional
        Scale design of the reduced model; ``None`` keeps ``full_scale``. For an
        intercept-only reduced scale model pass ``"~ 1"`` (or a column of ones).
    full, reduced : FitResult or Model, optional
        Two ready fits of the same data, instead of ``data`` and designs; or two
        :class:`batchglm.de.Model` objects with ``data``, the designs grouped per model
        (``full=Model("~ condition + batch"), reduced=Model("~ batch")`` fits the same
        models as ``full_loc="~ condition + batch", reduced_loc="~ batch"``).
    obs : pandas.DataFrame, optional
        Observation annotations for formula designs (passed on to :func:`batchglm.fit`).
    family : str or Family
        Noise model, as in :func:`batchglm.fit`.
    size_factors : array_like, optional
        As in :func:`batchglm.fit`; the same for both models.
    constraints_full_loc, constraints_reduced_loc : array_like, optional
        Location constraints of each model. A reduced design left at ``None`` also keeps
        the full model's constraints unless given here.
    constraints_full_scale, constraints_reduced_scale : array_like, optional
        Scale constraints of each model, likewise.
    coef : str, optional
        Coefficient of the full model whose estimate to report as the effect (``coef_mle``,
        ``coef_se``, ``log2fc``). A name found in both models is taken from the tested
        one (from the location model when both are tested). By
        default, the one column of the full design that the reduced design lacks, when
        there is exactly one (compared by values, not names); otherwise no effect.
    dispersion : {"mle", "map", "ql"}
        ``"mle"``: each model is fitted with its own maximum-likelihood dispersions.
        ``"map"`` and ``"ql"`` (for NB location tests with an intercept-only scale model)
        estimate dispersions from the full fit and refit both models with the dispersion
        held at the shrunken (MAP) or trended value; ``"ql"`` then divides the statistic by
        ``df`` times the moderated quasi-likelihood dispersion and uses an F reference, as
        edgeR's ``glmQLFTest`` (see :func:`batchglm.de.wald`). With ready fits, pass the
        counts as ``data`` too.
    trend : {"parametric", "local", "mean"}
        Mean-dispersion trend for ``"map"`` and ``"ql"``.
    scale_test : {"cox_reid", "plain"}, optional
        Statistic of a test of the scale model alone (both fits share the location model,
        the scale models differ). ``"cox_reid"``, the default for NB fits: twice the
        difference of the Cox-Reid adjusted profile log-likelihoods (APL) of the two
        scale models, each maximised at its fit's means
        (:func:`batchglm.dispersion.genewise_dispersions`; Cox & Reid 1987, the adjustment
        DESeq2 and edgeR use for dispersions). ``"plain"``: twice the difference of the
        log-likelihoods, the default for other families (no Cox-Reid adjustment exists
        for them here). With ready fits, ``"cox_reid"`` needs the counts as ``data``.
    progress : bool, optional
        Progress bars (tqdm, on stderr) of the two fits and, with ``dispersion`` ``"map"``
        or ``"ql"``, of the dispersion passes and refits; by default on only for long
        passes on a terminal, as :func:`batchglm.fit` and :func:`batchglm.de.wald`.
        ``False`` draws nothing. The Cox-Reid scale statistic draws no bar.
    moderate : bool or str, optional
        Fits with ``random_effects`` only, as in :func:`batchglm.de.wald`: whether a test
        that drops group-level location columns (a condition that donors are nested in)
        refers its Bartlett-type F statistic to the empirical-Bayes moderated group-level
        variance (default ``True``, the nonparametric prior; ``"limma"``; see
        :func:`batchglm.mixed.moderation.moderated_sf` with ``statistic="lrt"``).
        ``False`` gives ``F(df, G - p_b)`` per feature. Measured on a fresh user's
        simulation (raw-scale cell covariate, 5 seeds): power at q < 0.05 0.28 -> 0.58
        (4 vs 4) and 0.74 -> 0.82 (6 vs 6) with null rejection 0.048-0.054.
    count_outlier_alpha : float or None
        Fits with ``random_effects`` only (ignored for plain GLMs, which the bulk pipeline
        checks by Cook's distance): family-wise level of the count-outlier check. A
        positive count whose upper-tail probability at its conditional mean under the
        full fit (fixed part plus predicted random intercepts) is below
        ``alpha / (n_obs * n_features)`` makes its feature status ``outlier`` with a
        ``NaN`` p-value, and one warning names them (:mod:`batchglm.mixed.count_outliers`).
        ``None`` turns the check off.
    **fit_kwargs
        Further arguments of :func:`batchglm.fit` (``max_iter``, ``tol``, ``n_jobs``, ...).
        ``weights`` and ``offset`` given here enter both the full and the reduced fit.

    Returns
    -------
    DEResult
        P-values from the chi-squared distribution with as many degrees of freedom as the
        full model has free parameters more than the reduced one.

    Notes
    -----
    The reduced model must be nested in the full one: for the location and for the scale
    model, the column space of the reduced design after constraints (``X C``) must lie in
    that of the full design. This is checked on the column spaces, so recodings of the
    same factor are fine; a pair that is not nested is an error that names the offending
    columns. For two ready fits, the feature names, observation names, family and size
    factors must agree; that the data are the same cannot be checked and is up to the
    caller.

    Features where either fit did not reach an optimum (including all-zero features) get
    ``NaN`` p-values, as do features whose full fit has a clearly lower log-likelihood
    than the reduced fit (the full fit missed its optimum); they are left out of the
    Benjamini-Hochberg correction.

    The chi-squared reference is asymptotic: with two groups of NB counts the rejection
    rate of null features at 0.05 was about 0.094 for 10 observations, 0.071 for 20, 0.054
    for 50 and 0.049 for 200.

    **Separated features** (a group with only zeros in the tested direction, NB and
    Poisson location tests): the p-value is never below the conditional test of "no read
    on the zero side" given the feature's total, under null means from the full fit's
    nuisance estimates (:func:`batchglm.de.floor_null.floor_null_means`), at the
    full fit's NB dispersion (QL-inflated for ``"ql"``; the exact binomial test of the
    split for Poisson), as in :func:`batchglm.de.wald` and :func:`batchglm.de.ql_f`
    (:func:`batchglm.de.separated_tests.lrt_floor`, ``docs/inference.md``). On simulated nulls
    with 1-5 reads all in one group the rejection rate at 0.05 went from 0.124 to 0 (3 vs
    3, ``"mle"``; Poisson 0.135 to 0) and 0.056 to 0.002 (5 vs 5), while on/off genes
    stay called. Ready fits without their data get no floor and a
    warning.

    For a test of the scale model, the plain statistic ignores that the location
    coefficients were estimated, and is anti-conservative in small samples; the Cox-Reid
    adjusted one much less so. Rejection rates at 0.05 of null NB features (two groups of
    equal size, location effect by group, size ``r`` 0.5..20, means 3..300, size factors;
    2000 features each, binomial SE 0.005; see ``docs/calibration.md``):

    ====  ============  ==========
    n     ``cox_reid``  ``plain``
    ====  ============  ==========
    6     0.047         0.088
    10    0.052         0.069
    20    0.059         0.069
    ====  ============  ==========

    Features without an APL optimum (a Cox-Reid fit that stopped on ``max_iter``, stalled
    or became non-finite) get ``NaN`` p-values; an adjusted statistic below 0 (the two APLs
    are maximised at slightly different means) counts as 0.

    Raises
    ------
    ValueError
        If the models are not nested, have the same column spaces, arguments conflict
        (ready fits with fitting arguments), ``scale_test`` is unknown or given for a test
        that is not of the scale model alone, or ``"cox_reid"`` is asked for without the
        counts or for a family other than NB, or ready fits differ in size factors,
        ``weights`` or ``offset``, or a :class:`~batchglm.de.Model` comes with a ready fit,
        with design keywords, or without a full location design, or ``moderate`` is asked
        of fits without random effects, or ``full``/``reduced`` is a formula string, or
        ``count_outlier_alpha`` is outside ``(0, 1)``.
    NotImplementedError
        With ``weights`` or ``offset`` (passed on to :func:`batchglm.fit`, or in ready
        fits) and ``dispersion`` other than ``"mle"``, or a Cox-Reid scale test.

    Warns
    -----
    UserWarning
        For ready fits that hold no data (and no ``data=``) while some feature is
        separated in the tested direction: its p-value then has no zero-side floor; and
        for a mixed fit with count outliers (see ``count_outlier_alpha``).
    """
    if isinstance(full, Model) or isinstance(reduced, Model):
        designs = model_keywords(
            full,
            reduced,
            {
                "full_loc": full_loc,
                "reduced_loc": reduced_loc,
                "full_scale": full_scale,
                "reduced_scale": reduced_scale,
                "constraints_full_loc": constraints_full_loc,
                "constraints_reduced_loc": constraints_reduced_loc,
                "constraints_full_scale": constraints_full_scale,
                "constraints_reduced_scale": constraints_reduced_scale,
            },
        )
        return lrt(
            data,
            obs=obs,
            family=family,
            size_factors=size_factors,
            coef=coef,
            dispersion=dispersion,
            trend=trend,
            scale_test=scale_test,
            progress=progress,
            moderate=moderate,
            count_outlier_alpha=count_outlier_alpha,
            **designs,
            **fit_kwargs,
        )
    shrink = dispersion != "mle"
    if shrink and scale_test is not None:
        raise ValueError(
            f"`scale_test={scale_test!r}` chooses the statistic of a test of the scale model, "
            f"but `dispersion={dispersion!r}` tests the location model only; leave "
            "`scale_test` out."
        )
    strings = [(n, v) for n, v in (("full", full), ("reduced", reduced)) if isinstance(v, str)]
    if strings:
        raise ValueError(
            f"`full` and `reduced` take ready fits (bg.fit) or bg.de.Model objects, but "
            f"`{strings[0][0]}` was given the formula {strings[0][1]!r}; pass formulas as "
            "`full_loc=` and `reduced_loc=` (the second and third arguments)."
        )
    if full is not None or reduced is not None:
        given = [
            name
            for name, value in (
                ("data", None if shrink else data),
                ("full_loc", full_loc),
                ("reduced_loc", reduced_loc),
                ("full_scale", full_scale),
                ("reduced_scale", reduced_scale),
                ("obs", obs),
                ("size_factors", size_factors),
                ("constraints_full_loc", constraints_full_loc),
                ("constraints_reduced_loc", constraints_reduced_loc),
                ("constraints_full_scale", constraints_full_scale),
                ("constraints_reduced_scale", constraints_reduced_scale),
            )
            if value is not None
        ] + sorted(k for k in fit_kwargs if not (shrink and k == "layer"))
        if full is None or reduced is None:
            raise ValueError("pass both `full` and `reduced` fits, or neither.")
        cox_reid = False
        if isinstance(full, FitResult) and isinstance(reduced, FitResult):
            _check_same_fit_setup(full, reduced)
            cox_reid = use_cox_reid(scale_test, full, reduced)
            if cox_reid:
                given = [g for g in given if g not in ("data", "layer")]
        if given:
            raise ValueError(
                f"with ready fits `full` and `reduced`, leave out the fitting arguments "
                f"{given}; they were fixed when the fits were made."
            )
        if not isinstance(full, FitResult) or not isinstance(reduced, FitResult):
            raise ValueError("`full` and `reduced` must be FitResult objects from bg.fit.")
        full = mixed_ready_fits(full, reduced, moderate)  # hook: de/lrt_mixed.py
        if data is None and full.data is not None:
            data = full.data  # the counts both fits were made on (checked above)
            fit_kwargs.pop("layer", None)
        check_dispersion(dispersion, data)
        check_lrt_dispersion(dispersion, (full, reduced))
        if not shrink:
            if cox_reid and data is None:
                raise ValueError(
                    "the Cox-Reid adjusted test of the scale model (`scale_test='cox_reid'`, "
                    "the default for NB) needs the counts: pass the fits' data as `data=`, "
                    "or `scale_test='plain'` for the unadjusted likelihood ratio."
                )
            if not scale_only(full, reduced):
                warn_small_sample(full, "bg.de.lrt")
            de = likelihood_ratio(full, reduced, coef, _cr_data(cox_reid, data, fit_kwargs))
            de = with_floor(de, data, fit_kwargs.get("layer"))
            return flag_count_outliers(de, data, fit_kwargs.get("layer"), count_outlier_alpha)
        layer = fit_kwargs.get("layer")
        shrunk = shrunken_fit(data, full, dispersion, layer=layer, trend=trend, progress=progress)
        reduced_refit = refit_location(data, reduced, shrunk.alpha, layer=layer, progress=progress)
        de = attach(likelihood_ratio(shrunk.fit, reduced_refit, coef), shrunk, dispersion)
        return with_floor(de, data, layer)

    if data is None or full_loc is None:
        raise ValueError(
            "pass `data` and `full_loc` (with `reduced_loc` and/or `reduced_scale`), or two "
            "ready fits `full=` and `reduced=`."
        )
    check_dispersion(dispersion, data, "scale" if reduced_scale is not None and shrink else "loc")
    if shrink and any(fit_kwargs.get(k) is not None for k in ("weights", "offset")):
        raise NotImplementedError(
            f"dispersion={dispersion!r} does not support `weights` or `offset` yet (the "
            "dispersion estimators are unweighted); use dispersion='mle'."
        )
    check_lrt_dispersion(dispersion, random_effects=fit_kwargs.get("random_effects"))
    if reduced_loc is None and reduced_scale is None:
        raise ValueError(
            "give a reduced model: `reduced_loc` and/or `reduced_scale` (a design left at "
            "None is the full model's)."
        )
    if reduced_loc is None:
        reduced_loc = full_loc
        if constraints_reduced_loc is None:
            constraints_reduced_loc = constraints_full_loc
    if reduced_scale is None:
        reduced_scale = full_scale
        if constraints_reduced_scale is None:
            constraints_reduced_scale = constraints_full_scale
    full_loc, reduced_loc, full_scale, reduced_scale = align_to_data(
        data,
        full_loc=full_loc,
        reduced_loc=reduced_loc,
        full_scale=full_scale,
        reduced_scale=reduced_scale,
    )
    n_obs = _n_obs(data)
    pre_df: list[int] = []
    if n_obs is not None:
        # Cheap check before fitting anything: only for matrix designs (formulas need
        # `bg.fit` to evaluate; the check after fitting covers them).
        for which, fd, fc, rd, rc in (
            ("loc", full_loc, constraints_full_loc, reduced_loc, constraints_reduced_loc),
            ("scale", full_scale, constraints_full_scale, reduced_scale, constraints_reduced_scale),
        ):
            f_eff = _effective(fd, fc, n_obs, which)
            r_eff = _effective(rd, rc, n_obs, which)
            if f_eff is not None and r_eff is not None and r_eff.shape[0] == f_eff.shape[0]:
                pre_df.append(check_nested(f_eff, r_eff, which))
        if len(pre_df) == 2 and sum(pre_df) <= 0:
            raise ValueError(SAME_SPACE)

    kwargs = dict(fit_kwargs, progress=progress)
    if obs is not None:
        kwargs["obs"] = obs
    res_full = fit(
        data,
        full_loc,
        full_scale,
        constraints_loc=constraints_full_loc,
        constraints_scale=constraints_full_scale,
        size_factors=size_factors,
        family=family,
        **kwargs,
    )
    if not shrink:
        res_reduced = fit(
            data,
            reduced_loc,
            reduced_scale,
            constraints_loc=constraints_reduced_loc,
            constraints_scale=constraints_reduced_scale,
            size_factors=size_factors,
            family=family,
            **kwargs,
        )
        cox_reid = use_cox_reid(scale_test, res_full, res_reduced)
        res_full = mixed_reference(res_full, res_reduced, moderate)  # hook: de/lrt_mixed.py
        if not scale_only(res_full, res_reduced):
            warn_small_sample(res_full, "bg.de.lrt")
        de = likelihood_ratio(res_full, res_reduced, coef, _cr_data(cox_reid, data, kwargs))
        de = with_floor(de, data, kwargs.get("layer"))
        return flag_count_outliers(de, data, kwargs.get("layer"), count_outlier_alpha)
    shrunk = shrunken_fit(
        data, res_full, dispersion, layer=kwargs.get("layer"), trend=trend, progress=progress
    )
    res_reduced = fit(
        data,
        reduced_loc,
        reduced_scale,
        constraints_loc=constraints_reduced_loc,
        constraints_scale=constraints_reduced_scale,
        size_factors=size_factors,
        family=family,
        fixed_scale=fixed_log_r(shrunk.alpha),
        **kwargs,
    )
    de = attach(likelihood_ratio(shrunk.fit, res_reduced, coef), shrunk, dispersion)
    return with_floor(de, data, kwargs.get("layer"))


def with_floor(de: DEResult, data: Any, layer: str | None = None) -> DEResult:
    """Floor the p-values of separated features at the conditional test of their zero side.

    Parameters
    ----------
    de : DEResult
        A likelihood-ratio test (``de.fit`` the full fit, ``de.reduced`` the reduced one;
        chi-squared, or F for ``dispersion="ql"`` with ``de.ql_dispersion``).
    data : array_like, scipy.sparse, pandas.DataFrame, AnnData or None
        The counts of the fits; ``None`` uses the full fit's own data.
    layer : str, optional
        AnnData layer of ``data``.

    Returns
    -------
    DEResult
        ``de`` with ``pval`` no smaller than
        :func:`batchglm.de.separated_tests.lrt_floor` (NB and Poisson location tests; NaN stays
        NaN). Tests of the scale model alone are returned unchanged.

    Raises
    ------
    ValueError
        If ``data`` does not have the fit's shape, or names other features.

    Warns
    -----
    UserWarning
        When neither ``data`` nor the fit holds the counts and some feature is separated in
        the tested direction (:func:`batchglm.de.separated_tests.lrt_floor`).

    Notes
    -----
    Source: the conditional test of Robinson and Smyth (2008), used as a lower bound as in
    :func:`batchglm.de.wald` and :func:`batchglm.de.ql_f` (``docs/inference.md``,
    "Separated features").
    """
    full, reduced = de.fit, de.reduced
    if full is None or reduced is None or de.model == "scale":
        return de
    if data is None:
        data, layer = full.data, None
    floor = lrt_floor(data, full, reduced, layer=layer, ql_dispersion=de.ql_dispersion)
    return replace(de, pval=np.maximum(de.pval, floor))


def _cr_data(cox_reid: bool, data: Any, kwargs: dict[str, Any]) -> tuple[Any, Any] | None:
    return (data, kwargs.get("layer")) if cox_reid else None


def _n_obs(data: Any) -> int | None:
    shape = getattr(data, "shape", None)
    if shape is None:
        shape = np.shape(data)
    return int(shape[0]) if len(shape) == 2 else None


def _effective(design: Any, constraints: Any, n_obs: int, which: str) -> Array | None:
    """``X @ C`` for matrix designs, parsed as :func:`batchglm.fit` parses them.

    ``None`` for formulas (they need ``bg.fit``'s annotations; the check after fitting
    covers them) and for designs ``bg.fit`` will refuse, so it gives the message.
    """
    if isinstance(design, str):
        return None
    try:
        parsed = build_design(design, constraints, n_obs, which, check=False)
    except ValueError:
        return None
    return parsed.reduced


def _check_same_fit_setup(full: FitResult, reduced: FitResult) -> None:
    if full.family != reduced.family:
        raise ValueError(
            f"`full` and `reduced` must use the same family, but they use {full.family!r} "
            f"and {reduced.family!r}."
        )
    if not full.feature_names.equals(reduced.feature_names):
        raise ValueError(
            "`full` and `reduced` must be fits of the same features in the same order, but "
            f"their feature names differ ({len(full.feature_names)} vs "
            f"{len(reduced.feature_names)} features)."
        )
    if not full.obs_names.equals(reduced.obs_names):
        raise ValueError(
            "`full` and `reduced` must be fits of the same observations, but their "
            f"observation names differ ({len(full.obs_names)} vs {len(reduced.obs_names)})."
        )
    if not np.allclose(full.size_factors, reduced.size_factors, rtol=1e-12, atol=0.0):
        raise ValueError("`full` and `reduced` must use the same size factors, but they differ.")
    if not same_weights(full, reduced):
        raise ValueError(
            "`full` and `reduced` must use the same `weights` and `offset`, but they differ."
        )
