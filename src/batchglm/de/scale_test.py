"""Tests of the scale model alone: which statistic, and the Cox-Reid adjusted one.

A likelihood-ratio test whose full and reduced fits share the location model and differ in
the scale model tests the dispersion (differential dispersion). With few observations the
plain statistic is anti-conservative; the ratio of Cox-Reid adjusted profile likelihoods
(Cox & Reid 1987, as edgeR and DESeq2 use for dispersions) is calibrated
(``docs/calibration.md``). Nesting and degrees of freedom of the two parts are decided here
too, as both the plain and the adjusted test need them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.design import Design
from batchglm.dispersion.estimate import genewise_dispersions
from batchglm.nested_designs import check_nested
from batchglm.obs_weights import is_weighted
from batchglm.result import FitResult
from batchglm.solvers.status import CONVERGED_CODES

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]

#: Statistics of a test of the scale model alone (same location model in both fits).
SCALE_TESTS = ("cox_reid", "plain")


def has_scale(res: FitResult) -> bool:
    """Whether the fit estimated a scale model (see :attr:`FitResult.has_scale`).

    Parameters
    ----------
    res : FitResult
        A fit.

    Returns
    -------
    bool
        ``res.has_scale``.
    """
    return res.has_scale


def _scale_effective(res: FitResult) -> Array:
    # A family without a scale model contributes no scale parameters to either fit.
    return res.scale.reduced if has_scale(res) else np.zeros((len(res.obs_names), 0))


def _free_names(design: Design) -> list[str] | None:
    # Without constraints the free parameters are the design's columns.
    return list(design.names) if design.n_free == len(design.names) else None


def scale_only(full: FitResult, reduced: FitResult) -> bool:
    """Whether the fits share the location model and differ in the scale model."""
    df_loc, df_scale = nested_df(full, reduced)
    return df_loc == 0 and df_scale > 0


def nested_df(full: FitResult, reduced: FitResult) -> tuple[int, int]:
    """Degrees of freedom of the location and the scale part; raise unless nested."""
    df_loc = check_nested(full.loc.reduced, reduced.loc.reduced, "loc", _free_names(reduced.loc))
    df_scale = check_nested(
        _scale_effective(full),
        _scale_effective(reduced),
        "scale",
        _free_names(reduced.scale) if has_scale(reduced) else None,
    )
    return df_loc, df_scale


def use_cox_reid(scale_test: str | None, full: FitResult, reduced: FitResult) -> bool:
    """Resolve ``scale_test`` for a pair of fits; raise where it does not apply.

    Parameters
    ----------
    scale_test : {"cox_reid", "plain"} or None
        The statistic asked for; ``None`` is Cox-Reid for NB tests of the scale model alone.
    full, reduced : FitResult
        The nested fits.

    Returns
    -------
    bool
        Whether the Cox-Reid adjusted profile likelihood ratio is used.

    Raises
    ------
    ValueError
        For an unknown ``scale_test``, one given for a test that is not of the scale model
        alone, or ``"cox_reid"`` for a family other than NB.
    NotImplementedError
        When the Cox-Reid statistic would be used for a fit with weights or an offset.
    """
    if scale_test is not None and scale_test not in SCALE_TESTS:
        raise ValueError(
            f"`scale_test` must be 'cox_reid' or 'plain', but {scale_test!r} was given."
        )
    only_scale = scale_only(full, reduced)
    if scale_test is None:
        cox_reid = only_scale and full.family == "nb"
        if cox_reid and is_weighted(full):
            raise NotImplementedError(
                "the Cox-Reid adjusted scale test (the default for NB) does not support fits "
                "with `weights` or `offset` yet; pass `scale_test='plain'`."
            )
        return cox_reid
    if not only_scale:
        raise ValueError(
            f"`scale_test={scale_test!r}` chooses the statistic of a test of the scale model "
            "alone, but the full and reduced fits differ in the location model (or not in "
            "the scale model); leave `scale_test` out."
        )
    if scale_test == "cox_reid" and full.family != "nb":
        raise ValueError(
            "`scale_test='cox_reid'` adjusts negative binomial profile likelihoods, but the "
            f"family is {full.family!r}; use `scale_test='plain'`."
        )
    if scale_test == "cox_reid" and is_weighted(full):
        raise NotImplementedError(
            "`scale_test='cox_reid'` does not support fits with `weights` or `offset` yet; "
            "use `scale_test='plain'`."
        )
    return scale_test == "cox_reid"


def cox_reid_statistic(
    full: FitResult, reduced: FitResult, data: Any, layer: Any
) -> tuple[Array, Array, NDArray[np.bool_]]:
    """``2 (APL_full - APL_reduced)`` per feature, with both APLs and where they exist."""
    gw_full = genewise_dispersions(data, full, layer=layer)
    gw_red = genewise_dispersions(data, reduced, layer=layer)
    optimum = np.isin(gw_full.status, CONVERGED_CODES) & np.isin(gw_red.status, CONVERGED_CODES)
    ok = gw_full.usable & gw_red.usable & optimum
    lost = gw_full.usable & gw_red.usable & ~optimum
    if lost.any():
        logger.warning(
            "%d feature(s) have no Cox-Reid adjusted profile likelihood optimum (e.g. %s) "
            "and get NaN p-values in the scale test; `scale_test='plain'` tests them "
            "without the adjustment.",
            int(lost.sum()),
            full.feature_names[lost][0],
        )
    stat = np.where(ok, 2.0 * (gw_full.apl - gw_red.apl), np.nan)
    return stat, gw_full.apl, ok
