"""The fit and the test of :func:`batchglm.de.test`, run once and again after replacement.

:func:`initial_fit` is DESeq2's initial location fit at the rough dispersion
(:mod:`batchglm.dispersion.rough`) where that applies, else the joint NB fit;
:func:`run_test` the chosen test on it. The pipeline (:mod:`batchglm.de.pipeline`) calls
both, and :mod:`batchglm.de.outlier_refit` calls them again for the features whose outlier
counts were replaced.
"""

from __future__ import annotations

from typing import Any

from batchglm.de.result import DEResult
from batchglm.dispersion.rough import RoughStart, rough_start
from batchglm.result import FitResult


def initial_fit(
    data: Any,
    design: Any,
    obs: Any,
    layer: str | None,
    size_factors: Any,
    constraints_loc: Any,
    fit_args: dict[str, Any],
    design_scale: Any,
    model: str,
    dispersion: str,
) -> FitResult:
    """Fit the pipeline's first model (first pass and the refits after Cook's replacement).

    DESeq2's initial fit for shrunken NB dispersions: the location at a rough dispersion
    held fixed (:mod:`batchglm.dispersion.rough`), for NB location tests with
    ``dispersion`` ``"map"`` or ``"ql"``, an intercept-only scale model and no weights or
    offset; elsewhere (or where the rough start does not apply) the joint fit.

    Parameters
    ----------
    data, design, obs, layer, size_factors, constraints_loc, design_scale, model
        As in :func:`batchglm.de.test`.
    fit_args : dict
        Further arguments of :func:`batchglm.fit`.
    dispersion : str
        The resolved dispersion option.

    Returns
    -------
    FitResult
        The fit.
    """
    from batchglm.fit import fit

    start: RoughStart | None = None
    if (
        fit_args["family"] == "nb"
        and model == "loc"
        and dispersion in ("map", "ql")
        and design_scale is None
        and fit_args["constraints_scale"] is None
        and fit_args["weights"] is None
        and fit_args["offset"] is None
    ):
        start = rough_start(
            data,
            design,
            obs=obs,
            layer=layer,
            size_factors=size_factors,
            constraints_loc=constraints_loc,
        )
    return fit(
        data,
        design,
        design_scale,
        obs=obs,
        layer=layer,
        size_factors=size_factors if start is None else start.size_factors,
        constraints_loc=constraints_loc,
        fixed_scale=None if start is None else start.log_r,
        **fit_args,
    )


def run_test(
    data: Any,
    res: FitResult,
    *,
    method: str,
    dispersion: str,
    coef: Any,
    contrast: Any,
    reduced: Any,
    layer: str | None,
    obs: Any,
    model: str,
    design_scale: Any,
    fit_args: dict[str, Any],
    lfc_threshold: float = 0.0,
    treat_null: str | None = None,
) -> DEResult:
    """Run the test of :func:`batchglm.de.test` on a fit (first pass and after replacement).

    Wald (:func:`batchglm.de.wald`), the QL F test (:func:`batchglm.de.ql_f`) or the
    likelihood-ratio test (:func:`batchglm.de.lrt`) against ``reduced`` or against the
    design under ``contrast = 0``, whose reduced model is fitted here.

    Parameters
    ----------
    data : object
        The counts of ``res``.
    res : FitResult
        The pipeline's fit (:func:`initial_fit`).
    method, dispersion, coef, contrast, reduced, layer, obs, model, design_scale
        As in :func:`batchglm.de.test`.
    fit_args : dict
        Further arguments of :func:`batchglm.fit` (family, solver settings, weights, offset,
        progress).
    lfc_threshold : float
        TREAT threshold (log2 units) of the QL test; 0 for the others.
    treat_null : str, optional
        The TREAT null of the QL test.

    Returns
    -------
    DEResult
        The test's table.
    """
    from batchglm.de.lrt import lrt
    from batchglm.de.lrt_contrast import contrast_null_constraints, with_contrast_effect
    from batchglm.de.ql import ql_f
    from batchglm.de.wald import wald
    from batchglm.fit import fit

    if method == "wald":
        return wald(
            res,
            coef=coef,
            contrast=contrast,
            dispersion=dispersion,
            data=data,
            layer=layer,
            model=model,
            progress=fit_args["progress"],
        )
    if method == "ql":
        return ql_f(
            res,
            coef=coef,
            contrast=contrast,
            data=data,
            layer=layer,
            lfc_threshold=lfc_threshold,
            treat_null=treat_null,
            progress=fit_args["progress"],
        )
    if contrast is None:
        red = fit(
            data,
            reduced,
            design_scale,
            obs=obs,
            layer=layer,
            size_factors=res.size_factors,
            **fit_args,
        )
    else:
        lmat, c_reduced, labels = contrast_null_constraints(res, contrast)
        red = fit(
            data,
            res.design_loc,
            design_scale,
            obs=obs,
            layer=layer,
            size_factors=res.size_factors,
            constraints_loc=c_reduced,
            **fit_args,
        )
    if dispersion == "mle":
        de = lrt(full=res, reduced=red, coef=coef, progress=fit_args["progress"])
    else:
        de = lrt(
            data,
            full=res,
            reduced=red,
            coef=coef,
            dispersion=dispersion,
            layer=layer,
            progress=fit_args["progress"],
        )
    return de if contrast is None else with_contrast_effect(de, lmat, labels)
