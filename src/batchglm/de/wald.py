"""Wald tests of coefficients and linear contrasts."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from batchglm.de.contrasts import Cond, check_estimable, expression_rows
from batchglm.de.degrees_of_freedom import check_residual_df, warn_small_sample
from batchglm.de.levels import level_contrast
from batchglm.de.lrt_mixed import flag_count_outliers
from batchglm.de.mixed_separation import donor_level_fallback
from batchglm.de.pseudoreplication import warn_wald
from batchglm.de.result import MAX_LFC, DEResult
from batchglm.de.separated_tests import lrt_statistic
from batchglm.de.separation import boundary_tested, scale_free_at_zeros
from batchglm.de.shrunken import attach, check_dispersion, shrunken_fit
from batchglm.de.statistics import RANK_RTOL, wald_rows
from batchglm.de.threshold import check_threshold, wald_threshold
from batchglm.design import Design
from batchglm.families.tails import chi2_sf
from batchglm.mixed.count_outliers import COUNT_OUTLIER_ALPHA
from batchglm.mixed.few_groups import warn_few_groups
from batchglm.mixed.moderation import with_moderation
from batchglm.mixed.random_effects import check_mixed_dispersion
from batchglm.mixed.small_sample import warn_variance_at_zero
from batchglm.result import FitResult
from batchglm.solvers.status import ConvergenceWarning, Status

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]

#: Singular values of ``L C`` below this fraction of the largest count as zero.

Coef = str | int
ContrastLike = (
    ArrayLike | pd.Series | pd.DataFrame | Mapping[str, float] | tuple[str, str, str] | str | Cond
)


def wald(
    res: FitResult,
    coef: Coef | Sequence[Coef] | None = None,
    *,
    contrast: ContrastLike | None = None,
    model: str = "loc",
    dispersion: str = "mle",
    data: Any = None,
    layer: str | None = None,
    trend: str = "parametric",
    max_lfc: float = MAX_LFC,
    lfc_threshold: float = 0.0,
    alt_hypothesis: str = "greaterAbs",
    progress: bool | None = None,
    moderate: bool | str | None = None,
    count_outlier_alpha: float | None = COUNT_OUTLIER_ALPHA,
) -> DEResult:
    """Wald test of one or several coefficients, or of linear contrasts, per feature.

    Parameters
    ----------
    res : FitResult
        A fit from :func:`batchglm.fit`.
    coef : str, int or sequence of them, optional
        Coefficient name(s) or position(s) in ``model``'s design. One coefficient gives a
        1-degree-of-freedom test of ``coef == 0``; several give the joint test that all are
        zero.
    contrast : array_like, pandas.Series, pandas.DataFrame, dict or tuple, optional
        Instead of ``coef``: weights over ``model``'s coefficients. A vector (or a Series /
        dict indexed by coefficient names; missing names weigh 0) tests ``c . a == 0``; a
        matrix with one row per contrast (or a DataFrame with coefficient-name columns)
        tests all rows jointly. A tuple ``(factor, level, reference)`` such as
        ``("condition", "treated", "control")`` compares two levels of a factor; it needs a
        fit from a formula. A string such as ``"condition[T.stim] - condition[T.ctrl]"``
        is a linear expression over coefficient names (comma-separated expressions are
        tested jointly), and ``bg.de.cond(condition="stim") - bg.de.cond(condition="ctrl")``
        compares design rows of a formula fit (see :mod:`batchglm.de.contrasts`).
    model : {"loc", "scale"}
        The model whose coefficients are tested.
    dispersion : {"mle", "map", "ql"}
        ``"mle"`` tests the fit as it is. ``"map"`` (as DESeq2) and ``"ql"`` (as edgeR's and
        glmGamPoi's quasi-likelihood tests) share information across features, which
        matters with few replicates; both need ``data`` and an NB fit with an
        intercept-only scale model, and test the location model only. ``"map"`` refits the
        location with each feature's dispersion held at its empirical-Bayes (maximum a
        posteriori) estimate and keeps the chi-squared reference. ``"ql"`` refits at the
        trended dispersion and divides the statistic by ``df`` times the moderated
        quasi-likelihood dispersion, with an F reference (see :mod:`batchglm.de.shrunken`).
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData, optional
        The counts of the fit, for ``dispersion="map"`` or ``"ql"`` and for the
        likelihood-ratio p-values of features separated in the tested direction (see
        Notes). By default the data the fit was made on (``res.data``, kept by reference);
        only results built without it give ``NaN`` p-values to separated features.
    layer : str, optional
        AnnData layer of ``data`` with the counts.
    trend : {"parametric", "local", "mean"}
        Mean-dispersion trend for ``"map"`` and ``"ql"`` (see
        :func:`batchglm.dispersion.fit_trend`).
    max_lfc : float
        Cap on ``|log2FoldChange|`` of separated features (status ``separated``, whose
        estimate runs towards infinity; glmGamPoi's ``max_lfc``, default 10); the raw
        estimate stays in ``coef_mle`` and ``lfc_capped`` marks them. A converged feature's
        fold change is reported as estimated, however large (with an ``lfcSE`` to match),
        so that ``log2FoldChange / lfcSE`` stays its Wald ``z``.
    lfc_threshold : float
        Test against a minimum effect size instead of zero: a threshold ``T >= 0`` on
        ``|log2FoldChange|`` (log2 units), as DESeq2's ``lfcThreshold``; needs a single
        coefficient or contrast. See :mod:`batchglm.de.threshold`.
    alt_hypothesis : {"greaterAbs", "lessAbs", "greater", "less"}
        The alternative with ``lfc_threshold``, as DESeq2's ``altHypothesis``:
        ``|LFC| > T``, ``|LFC| < T``, ``LFC > T``, ``LFC < -T``.
    progress : bool, optional
        Progress bars of the dispersion passes and refits (default: on for long passes on a
        terminal, as :func:`batchglm.fit`); only with ``dispersion`` ``"map"`` or ``"ql"``.
    moderate : bool or str, optional
        Fits with ``random_effects`` only: whether tests of group-level coefficients (a
        condition that donors are nested in) use the empirical-Bayes moderated group-level
        variance (default ``True``: a nonparametric prior; ``"limma"``: limma's scaled
        inverse chi-squared prior with ``d + d0`` degrees of freedom; see
        :mod:`batchglm.mixed.moderation`). ``False`` gives the per-feature ``t(G - p_b)``
        reference.
    count_outlier_alpha : float or None
        Fits with ``random_effects`` only (ignored for plain GLMs, which the bulk pipeline
        checks by Cook's distance): family-wise level of the count-outlier check. A
        positive count whose upper-tail probability at its conditional mean (fixed part
        plus predicted random intercepts) is below ``alpha / (n_obs * n_features)`` makes
        its feature status ``outlier`` with a ``NaN`` p-value, and one warning names them
        (:mod:`batchglm.mixed.count_outliers`). ``None`` turns the check off.

    Returns
    -------
    DEResult
        P-values, q-values and the tested effect per feature; a
        :class:`batchglm.de.threshold.ThresholdedDEResult` with a threshold.

    Raises
    ------
    ValueError
        For an unknown coefficient or a malformed contrast, a combination the constraints
        fix at zero or that is not estimable (its value set by the constraints, not the
        data; :func:`batchglm.de.contrasts.check_estimable`), ``data`` that is not the
        fit's, or a fit that estimated its scale without residual degrees of freedom (see
        :func:`batchglm.de.degrees_of_freedom.check_residual_df`), a threshold on a fit
        with random effects, or ``moderate=True`` for a fit without random effects, or
        ``count_outlier_alpha`` outside ``(0, 1)``.

    Warns
    -----
    UserWarning
        For a mixed fit with count outliers (see ``count_outlier_alpha``).

    Notes
    -----
    The covariance is the inverse observed information of the fit. With constraints
    ``theta = C theta_free`` the covariance of the full parameters is singular, so the test
    works in the free parametrisation: the tested combinations ``L theta = (L C)
    theta_free`` are reduced to a basis of the row space of ``L C`` (its rank is the
    degrees of freedom), and ``W = e^T V^{-1} e`` with ``e`` the estimates of that basis and
    ``V`` their (non-singular) covariance. This equals the Moore-Penrose form
    ``(L theta)^T pinv(L Cov L^T) (L theta)`` with ``rank(L C)`` degrees of freedom. A
    combination that the constraints force to zero cannot be tested and is an error.

    Features that did not reach an optimum (``res.converged`` is False, which includes
    all-zero features) get ``NaN`` p-values; they are left out of the Benjamini-Hochberg
    correction. ``coef_mle`` and ``coef_se`` (and ``log2fc = coef_mle / ln 2``) describe
    the tested effect when there is one row; for joint tests they are ``NaN`` and
    ``DEResult.estimates`` holds every tested combination.

    **Separated features.** A feature with status ``separated`` (a group with only zeros)
    has no finite estimate in the separated direction; its Wald statistic collapses
    towards 0 there (Hauck-Donner effect), so a clear difference (0 vs 30 counts) would get
    p close to 1. When some tested combination is not estimable from the observations with
    non-zero fitted means (:func:`batchglm.de.separation.separated_in_direction`), the
    Wald statistic of that feature is replaced by the likelihood-ratio statistic of the
    same hypothesis (the model refitted under ``L theta = 0`` for those features only,
    with the same dispersion setting; ``stat_kind == "lrt"``), which stays valid at the
    boundary. This needs ``data``; without it those features get ``NaN`` p-values and a
    warning. Their p-value is never below the conditional NB test of "no read on the
    zero side" given the feature's total, at the test's NB dispersion (QL-inflated for
    ``"ql"``; :mod:`batchglm.de.zero_side`), which the chi-squared reference overstates
    for a handful of reads. Their ``log2FoldChange`` is capped at ``+-max_lfc``.
    Combinations that do not involve the separated group keep their Wald test.

    With ``dispersion="mle"`` the test is asymptotic and uses per-feature
    maximum-likelihood scales (no shrinkage across features). With few observations it is
    anti-conservative: on NB nulls with two groups the rejection rate at 0.05 was about
    0.12 for 10 observations, 0.086 for 20, 0.058 for 50 and 0.050 for 200.
    :func:`batchglm.de.lrt` is somewhat closer to nominal at small sizes, and
    ``dispersion="map"`` or ``"ql"`` are calibrated down to 3 vs 3 samples (see
    ``docs/validation.md``).
    """
    res = with_moderation(res, moderate)  # hook: batchglm.mixed.moderation
    if data is None:
        data, layer = res.data, None
    check_dispersion(dispersion, data, model)
    check_mixed_dispersion(dispersion, (res,))
    check_threshold(lfc_threshold, alt_hypothesis)
    if res.random is not None and (lfc_threshold > 0 or alt_hypothesis != "greaterAbs"):
        raise ValueError(  # the thresholded test would skip the mixed small-sample reference
            "`lfc_threshold`/`alt_hypothesis` need a fit without random effects, but this "
            "fit has them; test the mixed fit against zero, or pseudobulk (bg.pseudobulk)."
        )
    if not max_lfc > 0:
        raise ValueError(f"`max_lfc` must be positive, but {max_lfc} was given.")
    check_residual_df(res, "bg.de.wald")
    design, start = _model_part(res, model)
    lmat, labels = test_rows(res, coef, contrast, design, model)
    warn_wald(res, lmat, labels, model)
    warn_variance_at_zero(res, model, lmat)
    warn_few_groups(res, model, lmat)  # hook: batchglm.mixed.few_groups (2 vs 2 donors)
    if dispersion == "mle":
        warn_small_sample(res, "bg.de.wald")
        de = wald_rows(res, design, start, lmat, labels, model)
        de = replace(_boundary_lrt(de, lmat, data, layer)[0], max_lfc=max_lfc)
        de = flag_count_outliers(de, data, layer, count_outlier_alpha)  # hook: lrt_mixed.py
        return wald_threshold(de, lfc_threshold, alt_hypothesis)
    shrunk = shrunken_fit(data, res, dispersion, layer=layer, trend=trend, progress=progress)
    de = wald_rows(shrunk.fit, shrunk.fit.loc, 0, lmat, labels, model)
    phi = shrunk.ql.var_post if shrunk.ql is not None else None
    de, floor = _boundary_lrt(de, lmat, data, layer, phi)
    de = replace(attach(de, shrunk, dispersion), max_lfc=max_lfc)
    # "ql": the F p-values of separated features keep their zero-side floor.
    de = replace(de, pval=np.maximum(de.pval, floor))
    return wald_threshold(de, lfc_threshold, alt_hypothesis)


def _boundary_lrt(
    de: DEResult, lmat: Array, data: Any, layer: str | None, ql_dispersion: Array | None = None
) -> tuple[DEResult, Array]:
    """Replace the Wald statistic of features separated in the tested direction by the LR one.

    Without ``data`` those features get ``NaN`` p-values and one warning. Also returns the
    zero-side floor per feature (0 where none applies; at the QL-inflated dispersion when
    ``ql_dispersion`` is given), already applied to the returned chi-squared p-values.
    """
    floor_all = np.zeros(len(de.fit.feature_names))
    res = de.fit
    kind = np.full(len(res.feature_names), "wald")
    if de.model != "loc" or res.random is not None:
        # Mixed fits: the reduced refit below would drop the random effects; separated
        # features are tested at the donor level instead (batchglm.de.mixed_separation).
        de = replace(de, stat_kind=kind)
        return donor_level_fallback(de, lmat, data, layer), floor_all
    c = res.loc.constraints
    l_free = lmat @ c
    u, s, _ = np.linalg.svd(l_free, full_matrices=False)
    basis = u[:, s > RANK_RTOL * max(s.max(initial=0.0), 1e-300)].T @ l_free
    boundary = boundary_tested(res, basis)
    hit = np.flatnonzero(boundary & de.converged)
    if data is not None:
        # Other separated features keep the Wald statistic, bounded by the zero-side floor
        # where the null does not fit their zeros too (docs/validation.md,
        # "Covariate-separated genes").
        de, floor_all = _floor_only(de, data, basis, ~boundary, layer, ql_dispersion)
    if hit.size == 0:
        return replace(de, stat_kind=kind, refit_failed=np.zeros(kind.size, bool)), floor_all
    stat, pval = de.stat.copy(), de.pval.copy()
    names = [str(n) for n in res.feature_names[hit[:5]]]
    more = f" and {hit.size - 5} more" if hit.size > 5 else ""
    if data is None:
        warnings.warn(
            f"{hit.size} feature(s) ({', '.join(names)}{more}) have status 'separated' in the "
            f"tested direction ({de.tested}): a group with only zeros makes their Wald "
            "statistic invalid (Hauck-Donner), so they get NaN p-values; pass the fit's data "
            "as `data=` to bg.de.wald to test them by likelihood ratio instead.",
            UserWarning,
            stacklevel=3,
        )
        stat[hit] = np.nan
        pval[hit] = np.nan
        kind[hit] = "none"
        return replace(de, stat=stat, pval=pval, stat_kind=kind), floor_all
    phi = None if ql_dispersion is None else ql_dispersion[hit]
    with warnings.catch_warnings():
        # The refit's own ConvergenceWarning names no step; the failures are reported below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr, ok, floor = lrt_statistic(data, res, basis, hit, layer=layer, ql_dispersion=phi)
    failed = np.zeros(len(res.feature_names), dtype=bool)
    failed[hit[~ok]] = True
    _warn_refit_failed(res, hit[~ok], de.tested)
    stat[hit] = lr
    floor_all[hit] = floor
    with np.errstate(invalid="ignore"):
        # Never below the conditional NB test of the zero side (batchglm.de.zero_side).
        pval[hit] = np.where(ok, np.maximum(chi2_sf(lr, de.df), floor), np.nan)
    kind[hit] = "lrt"
    free = hit[scale_free_at_zeros(res, hit)]
    if free.size:
        stat[free], pval[free], kind[free] = np.nan, np.nan, "none"
        shown = ", ".join(str(n) for n in res.feature_names[free[:5]])
        warnings.warn(
            f"{free.size} separated feature(s) ({shown}{' ...' if free.size > 5 else ''}) "
            "have a scale (dispersion) parameter that only their all-zero observations "
            "inform: the zeros can be explained by that dispersion alone, so the data hold "
            "no information on the tested effect and they get NaN p-values; test them with "
            "a scale model that does not separate the all-zero group (e.g. "
            "design_scale='~ 1').",
            UserWarning,
            stacklevel=3,
        )
    logger.info(
        "%d feature(s) separated in the tested direction (%s%s) tested by likelihood ratio "
        "instead of Wald.",
        hit.size,
        ", ".join(names),
        more,
    )
    return replace(de, stat=stat, pval=pval, stat_kind=kind, refit_failed=failed), floor_all


def _floor_only(
    de: DEResult,
    data: Any,
    basis: Array,
    candidates: NDArray[np.bool_],
    layer: str | None,
    ql_dispersion: Array | None,
) -> tuple[DEResult, Array]:
    """Bound the Wald p-values of separated ``candidates`` by their zero-side floor."""
    res = de.fit
    floor_all = np.zeros(len(res.feature_names))
    rest = np.flatnonzero(candidates & de.converged & (res.status_codes == Status.SEPARATED))
    if rest.size == 0:
        return de, floor_all
    phi = None if ql_dispersion is None else ql_dispersion[rest]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, ok, floor = lrt_statistic(data, res, basis, rest, layer=layer, ql_dispersion=phi)
    floor_all[rest] = np.where(ok, floor, 0.0)
    with np.errstate(invalid="ignore"):
        pval = np.where(np.isnan(de.pval), np.nan, np.maximum(de.pval, floor_all))
    return replace(de, pval=pval), floor_all


def _warn_refit_failed(res: FitResult, failed: NDArray[np.intp], tested: str) -> None:
    """Warn, naming the features, where the reduced refit of separated features failed."""
    if failed.size == 0:
        return
    shown = ", ".join(str(n) for n in res.feature_names[failed[:5]])
    more = f" and {failed.size - 5} more" if failed.size > 5 else ""
    warnings.warn(
        f"bg.de.wald: the reduced refit that tests {failed.size} feature(s) separated in the "
        f"tested direction ({tested}) by likelihood ratio reached no optimum for {shown}"
        f"{more}; they get NaN p-values and status 'reduced_failed'. Check that the size "
        "factors have a geometric mean near 1, or test them with method='lrt'.",
        ConvergenceWarning,
        stacklevel=3,
    )


def test_rows(
    res: FitResult,
    coef: Coef | Sequence[Coef] | None,
    contrast: ContrastLike | None,
    design: Design,
    model: str,
) -> tuple[Array, list[str]]:
    """Rows ``L`` over the model's coefficients for a ``coef`` or ``contrast`` argument.

    Parameters
    ----------
    res : FitResult
        The fit (for contrasts by level names).
    coef : str, int or sequence of them, optional
        As in :func:`wald`.
    contrast : array_like, Series, DataFrame, dict or tuple, optional
        As in :func:`wald`.
    design : Design
        The tested model's design.
    model : str
        ``"loc"`` or ``"scale"``.

    Returns
    -------
    lmat : ndarray
        ``(n_tests, p)`` weights.
    labels : list of str
        One description per row.

    Raises
    ------
    ValueError
        Unless exactly one of ``coef`` and ``contrast`` is given, for unknown
        coefficients and malformed contrasts, or for combinations that are not estimable
        (:func:`batchglm.de.contrasts.check_estimable`).
    """
    if (coef is None) == (contrast is None):
        raise ValueError("pass exactly one of `coef` and `contrast` to `bg.de.wald`.")
    if coef is not None:
        lmat, labels = _coef_rows(coef, design, model)
    else:
        assert contrast is not None  # one of the two is given, checked above
        lmat, labels = _contrast_rows(contrast, design, model, res)
    check_estimable(lmat, labels, design, model)  # trust: de/contrasts.py
    return lmat, labels


def _model_part(res: FitResult, model: str) -> tuple[Design, int]:
    if model == "loc":
        return res.loc, 0
    if model == "scale":
        if res.theta_free.shape[1] == res.loc.n_free:
            raise ValueError(
                f"`model='scale'` needs a fit with a scale model, but family {res.family!r} "
                "has none."
            )
        return res.scale, res.loc.n_free
    raise ValueError(f"`model` must be 'loc' or 'scale', but {model!r} was given.")


def _coef_position(c: Coef, design: Design, model: str) -> int:
    if isinstance(c, str):
        if c not in design.names:
            raise ValueError(
                f"coefficient {c!r} is not in the {model} model; its coefficients are "
                f"{design.names}."
            )
        return design.names.index(c)
    if isinstance(c, int | np.integer) and not isinstance(c, bool):
        p = len(design.names)
        if not -p <= int(c) < p:
            raise ValueError(
                f"coefficient position {int(c)} is out of range for the {model} model with "
                f"{p} coefficients {design.names}."
            )
        return int(c) % p
    raise ValueError(
        f"`coef` must be a coefficient name, a position, or a sequence of them, but "
        f"{c!r} was given."
    )


def _coef_rows(coef: Coef | Sequence[Coef], design: Design, model: str) -> tuple[Array, list[str]]:
    items = (
        list(coef)
        if isinstance(coef, Sequence | np.ndarray) and not isinstance(coef, str)
        else [coef]
    )
    if not items:
        raise ValueError("`coef` must name at least one coefficient.")
    pos = [_coef_position(c, design, model) for c in items]
    if len(set(pos)) != len(pos):
        raise ValueError(f"`coef` names a coefficient more than once: {items}.")
    lmat = np.zeros((len(pos), len(design.names)))
    lmat[np.arange(len(pos)), pos] = 1.0
    return lmat, [design.names[j] for j in pos]


def _describe(row: Array, names: list[str]) -> str:
    terms = [f"{w:+g}*{n}" for w, n in zip(row, names, strict=True) if w != 0]
    return " ".join(terms) if terms else "0"


def _contrast_rows(
    contrast: ContrastLike, design: Design, model: str, res: FitResult
) -> tuple[Array, list[str]]:
    if isinstance(contrast, str | Cond):
        # Strings ("b - a") and bg.de.cond(...) combinations: see batchglm.de.contrasts.
        return expression_rows(contrast, design, model, res)
    names = design.names
    p = len(names)
    if (
        isinstance(contrast, tuple)
        and len(contrast) == 3
        and isinstance(contrast[0], str)
        and all(
            isinstance(x, str | int | np.integer) and not isinstance(x, bool) for x in contrast[1:]
        )
    ):
        if model != "loc":
            raise ValueError("contrasts by level names are only available for `model='loc'`.")
        # Levels of integer-coded factors may be given as numbers: ("group", 3, 1).
        factor, level, ref = contrast[0], str(contrast[1]), str(contrast[2])
        row = level_contrast(res, factor, level, ref)
        return row[None, :], [f"{factor}: {level} vs {ref}"]
    if isinstance(contrast, Mapping | pd.Series):
        weights = dict(contrast.items())
        unknown = sorted(str(k) for k in weights if k not in names)
        if unknown:
            raise ValueError(
                f"`contrast` names coefficients {unknown} that are not in the {model} model; "
                f"its coefficients are {names}."
            )
        lmat = np.array([[float(weights.get(n, 0.0)) for n in names]])
    elif isinstance(contrast, pd.DataFrame):
        unknown = sorted(str(k) for k in contrast.columns if k not in names)
        if unknown:
            raise ValueError(
                f"`contrast` names coefficients {unknown} that are not in the {model} model; "
                f"its coefficients are {names}."
            )
        lmat = contrast.reindex(columns=names, fill_value=0.0).to_numpy(dtype=np.float64)
    else:
        try:
            lmat = np.atleast_2d(np.asarray(contrast, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(
                "`contrast` must be numeric weights over the coefficients, a Series/dict/"
                "DataFrame by coefficient name, or a tuple (factor, level, reference)."
            ) from None
        if lmat.ndim != 2 or lmat.shape[1] != p:
            raise ValueError(
                f"`contrast` must have {p} weights per row (one per {model} coefficient "
                f"{names}), but its shape is {np.shape(contrast)}."
            )
    if lmat.shape[0] == 0 or not np.all(np.isfinite(lmat)):
        raise ValueError("`contrast` must have at least one row of finite weights.")
    return lmat, [_describe(row, names) for row in lmat]
