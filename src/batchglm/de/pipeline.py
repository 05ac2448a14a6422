"""One call for a bulk RNA-seq differential expression analysis (DESeq2's DESeq + results).

::

    import batchglm as bg
    de = bg.de.test(adata, design="~ condition", contrast=("condition", "trt", "ctrl"))
    de.summary()   # baseMean, log2FoldChange, lfcSE, stat, pvalue, padj, status, maxCooks, ...

Steps (each documented where it is implemented):

1. size factors (``"median_ratio"`` by default, DESeq2's; ``"tmm"`` for edgeR's) and an NB
   fit of ``design`` (:func:`batchglm.fit`); with ``dispersion`` ``"map"`` or ``"ql"`` (NB
   location tests) the location is fitted at DESeq2's rough starting dispersion held fixed,
   as ``estimateDispersionsGeneEst`` does, not jointly with per-feature dispersions
   (:mod:`batchglm.dispersion.rough`; the test refits it at the shrunken dispersions);
2. the test: Wald (default with ``dispersion="map"``, DESeq2's ``nbinomWaldTest``),
   likelihood ratio against ``reduced`` (DESeq2's ``nbinomLRT``) or of a ``contrast``
   (edgeR's ``glmLRT(contrast=)``), or the quasi-likelihood
   F test (``method="ql"``, edgeR's ``glmQLFTest``);
3. Cook's distances of the final location fit (:mod:`batchglm.de.cooks`). Counts above the
   cutoff in design cells with at least ``min_replicates_for_replace`` (7) observations
   are replaced by the 20 %-trimmed mean of the feature's normalised counts times the size
   factor (truncated to an integer, as DESeq2), and only the features with replaced counts
   are refitted and retested, at the first pass's dispersion trend and prior
   (:mod:`batchglm.de.outlier_refit`, DESeq2's ``refitWithoutOutliers``; ``method="ql"``
   reruns every feature); other features whose largest Cook's distance (over cells with at least 3
   observations) exceeds the cutoff are flagged: ``status`` ``"outlier"``, ``pvalue``
   ``NaN``;
4. independent filtering on ``baseMean`` (:mod:`batchglm.de.independent_filtering`) and
   Benjamini-Hochberg ``padj``.

Differences from DESeq2 are deliberate and listed in ``docs/validation.md``.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse

from batchglm.de.cooks import (
    CooksOutliers,
    default_cutoff,
    design_cells,
    find_outliers,
    max_cooks_distance,
)
from batchglm.de.independent_filtering import FilterResult
from batchglm.de.independent_filtering import independent_filtering as filter_by_base_mean
from batchglm.de.multiple_testing import bh_qvalues
from batchglm.de.outlier_refit import refit_replaced
from batchglm.de.pipeline_options import check_options
from batchglm.de.pipeline_result import PipelineResult
from batchglm.de.pipeline_steps import initial_fit, run_test
from batchglm.de.pipeline_weights import (
    check_weighted_options,
    resolve_weights_offset,
    weighted_base_mean,
)
from batchglm.de.result import DEResult
from batchglm.de.threshold import check_treat_null, wald_threshold
from batchglm.formula import annotation_warnings_once
from batchglm.inputs import data_of_fit
from batchglm.result import FitResult
from batchglm.solvers.block_cache import reusing_block_tables

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]

#: Trim of the mean that replaces outlier counts (DESeq2's ``replaceOutliers``).
REPLACE_TRIM = 0.2
#: DESeq2's ``minReplicatesForReplace``.
MIN_REPLICATES_FOR_REPLACE = 7


def _replaced_counts(values: Any, sf: Array, out: CooksOutliers) -> Any:
    """Return the counts with the replaceable outliers set to DESeq2's trimmed-mean replacement."""
    feats = np.unique(out.replace_feature)
    cols = values[:, feats]
    cols = np.asarray(cols.toarray() if sparse.issparse(cols) else cols, dtype=np.float64)
    normed = np.sort(cols / sf[:, None], axis=0)
    n = normed.shape[0]
    k = int(np.floor(n * REPLACE_TRIM))
    trimmed = normed[k : n - k].mean(axis=0) if 2 * k < n else np.median(normed, axis=0)
    col_of = np.searchsorted(feats, out.replace_feature)
    new = np.trunc(trimmed[col_of] * sf[out.replace_obs])
    if sparse.issparse(values):
        lil = sparse.lil_array(values, dtype=np.float64)
        lil[out.replace_obs, out.replace_feature] = new
        return lil.tocsr()
    dense = np.array(values, dtype=np.float64, copy=True)
    dense[out.replace_obs, out.replace_feature] = new
    return dense


def _two_group(x: Array) -> bool:
    """Tell whether the design is one two-level factor (DESeq2's ``dontFilter`` rule applies)."""
    cells = design_cells(x)
    return int(cells.max()) == 1 and int(np.linalg.matrix_rank(x)) == 2


@annotation_warnings_once  # hook: one AnnotationWarning per column per call
@reusing_block_tables  # the refits reuse the first fit's count tables
def test(
    data: Any,
    design: Any,
    *,
    coef: Any = None,
    contrast: Any = None,
    method: str = "wald",
    reduced: Any = None,
    dispersion: str | None = None,
    size_factors: Any = "default",
    obs: pd.DataFrame | None = None,
    layer: str | None = None,
    cooks_cutoff: float | str | None = "default",
    independent_filtering: bool = True,
    alpha: float = 0.1,
    lfc_threshold: float = 0.0,
    alt_hypothesis: str = "greaterAbs",
    treat_null: str | None = None,
    min_replicates_for_replace: float = MIN_REPLICATES_FOR_REPLACE,
    progress: bool | None = None,
    model: str = "loc",
    family: str = "nb",
    design_scale: Any = None,
    constraints_loc: Any = None,
    constraints_scale: Any = None,
    max_iter: int = 100,
    tol: float = 1e-10,
    weights: Any = None,
    offset: Any = None,
) -> PipelineResult:
    """Differential expression of bulk counts in one call: fit, test, outliers, filtering.

    Follows DESeq2's ``DESeq()`` + ``results()`` defaults (Love, Huber and Anders 2014)
    with ``method="wald"``; ``method="ql"`` is edgeR's ``glmQLFit`` + ``glmQLFTest`` (Lund
    et al. 2012, Chen et al. 2016) with DESeq2's outlier handling and filtering on top
    (``cooks_cutoff=None, independent_filtering=False`` switch them off).

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        Counts ``(n_obs, n_features)`` (observations in rows).
    design : str, array_like or pandas.DataFrame
        Location design, e.g. ``"~ condition"`` (evaluated on ``obs`` or ``adata.obs``).
    coef : str, int or sequence, optional
        Coefficient(s) to test (Wald, QL) or to report as the effect (LRT), e.g.
        ``"condition[T.trt]"``.
    contrast : array_like, dict or tuple, optional
        Instead of ``coef``: a contrast, e.g. ``("condition", "trt", "ctrl")`` (see
        :func:`batchglm.de.wald`). With ``method="lrt"`` (instead of ``reduced``): the
        likelihood-ratio test of ``design`` against ``design`` under ``contrast = 0``, as
        edgeR's ``glmLRT(contrast=)``; the contrast is the reported effect
        (:func:`batchglm.de.lrt_contrast.contrast_null_constraints`).
    method : {"wald", "lrt", "ql"}
        The test. ``"lrt"`` compares ``design`` with ``reduced`` or with ``design`` under
        ``contrast = 0``.
    reduced : str or design, optional
        Reduced design for ``method="lrt"``, e.g. ``"~ 1"`` (or give ``contrast``).
    dispersion : {"map", "mle", "ql"}, optional
        NB dispersions: ``"map"`` (DESeq2's empirical-Bayes shrinkage; the default for
        ``"wald"`` and ``"lrt"`` of the NB location model), ``"mle"`` (per feature, no
        sharing; the default for other families and for ``model="scale"``) or ``"ql"``
        (trend + quasi-likelihood F test; the only choice for ``method="ql"``).
    size_factors : {"default", "median_ratio", "poscounts", "normed_sum", "tmm"}, array or None
        Size factors. ``"default"``: ``"median_ratio"`` (DESeq2's default) for the count
        families ``"nb"`` and ``"poisson"`` without an ``offset``, none otherwise;
        ``"tmm"`` gives edgeR's effective library sizes
        (:func:`batchglm.tmm.tmm_size_factors`); an array gives one positive factor per
        observation; ``None`` fits unnormalised counts.
    obs : pandas.DataFrame, optional
        Observation annotations for formula designs (default: ``adata.obs``).
    layer : str, optional
        AnnData layer with the counts.
    cooks_cutoff : "default", float or None
        Cook's distance above which a count is an outlier; ``"default"`` is DESeq2's
        ``F(0.99; p, n_obs - p)`` quantile (``p`` free location coefficients); ``None``
        switches outlier detection and replacement off.
    independent_filtering : bool
        Filter low-``baseMean`` features before ``padj`` as DESeq2 (on by default here;
        the other tests of :mod:`batchglm.de` do not filter).
    alpha : float
        False discovery rate for independent filtering and the summary line (DESeq2's
        default 0.1).
    lfc_threshold : float
        Threshold ``T`` on the log2 fold change (log2 units, ``>= 0``) of the alternative
        ``alt_hypothesis``, as DESeq2's ``results(lfcThreshold=)``: Wald tests with
        ``dispersion`` ``"map"`` or ``"mle"`` (:func:`batchglm.de.threshold.wald_threshold`);
        with ``method="ql"``, edgeR's TREAT QL test (``glmTreat``,
        :func:`batchglm.de.threshold.treat_ql`).
    alt_hypothesis : {"greaterAbs", "lessAbs", "greater", "less"}
        The alternative, as DESeq2's ``altHypothesis``: ``|LFC| > T`` (default),
        ``|LFC| < T`` (needs ``T > 0``), ``LFC > T``, ``LFC < -T``. Wald tests with
        ``dispersion`` ``"map"`` or ``"mle"``; ``method="ql"`` has ``"greaterAbs"`` only.
    treat_null : {"interval", "worst.case"}, optional
        The null of the TREAT test (``method="ql"`` with ``lfc_threshold > 0``), as edgeR's
        ``glmTreat(null=)``: ``"interval"`` (edgeR's default) or ``"worst.case"`` (larger
        p-values); see :func:`batchglm.de.threshold.treat_pvalues`.
    min_replicates_for_replace : float
        Outlier counts of observations in design cells with at least this many
        observations are replaced (DESeq2's ``minReplicatesForReplace``, 7); ``inf``
        never replaces (outliers are then only flagged).
    progress : bool, optional
        Progress bars of the fits and of the dispersion and QL passes (default: on for
        long passes on a terminal, as :func:`batchglm.fit`); the stages are logged at INFO
        level (``batchglm test -v``).
    model : {"loc", "scale"}
        The model part whose coefficients a Wald test tests (``"scale"`` needs
        ``dispersion="mle"``).
    family : str
        Noise model (see :func:`batchglm.fit`); Cook's distances (``cooks_cutoff``) are
        defined for ``"nb"`` and ``"poisson"`` only and skipped for other families when
        left at ``"default"``.
    design_scale, constraints_loc, constraints_scale, max_iter, tol
        Passed on to :func:`batchglm.fit` (the reduced fit of an LRT gets all but
        ``constraints_loc``).
    weights : array_like, pandas.Series, pandas.DataFrame or str, optional
        Observation weights as in :func:`batchglm.fit` (frequency weights: an integer
        weight ``k`` is ``k`` copies of the observation), ``(n_obs,)``,
        ``(n_obs, n_features)`` or an ``obs`` column name, matched by name
        (``docs/inputs.md``). Every fit (full, reduced, refits) uses them and ``baseMean``
        is the weighted mean of the normalised counts. They need ``dispersion="mle"`` (the
        MAP and QL dispersion estimators are unweighted) and, unless all weights are 1,
        ``cooks_cutoff=None`` (DESeq2's Cook's distances and replacement are defined for
        unweighted counts).
    offset : array_like, pandas.Series, pandas.DataFrame or str, optional
        Location offset on the natural-log scale of the mean, as in :func:`batchglm.fit`
        (e.g. tximport's length offsets), ``(n_obs,)`` or ``(n_obs, n_features)``. With an
        offset, ``size_factors="default"`` means none (as DESeq2 skips size factors when
        normalisation factors are given); explicit size factors multiply ``exp(offset)``.
        An offset per observation is a normalisation factor ``exp(offset)`` per sample and
        works with every option: ``offset=log(s)`` gives the same table as
        ``size_factors=s``. An offset per observation and feature needs
        ``dispersion="mle"`` and ``cooks_cutoff=None``; ``baseMean`` then divides each count
        by its own normalisation factor ``size_factor * exp(offset)``.

    Returns
    -------
    PipelineResult
        ``summary()`` gives DESeq2's columns plus ``status`` (``"outlier"`` for flagged
        features), ``maxCooks``, ``replaced`` and ``filtered``; ``summary_line()`` one line
        of counts.

    Raises
    ------
    ValueError
        For unknown or inconsistent options (``method``, ``dispersion``, ``coef`` /
        ``contrast`` / ``reduced``, ``alpha``, ``lfc_threshold``, ``alt_hypothesis``,
        ``treat_null``,
        ``cooks_cutoff``), Cook's distances asked for with weights other than 1 or an
        offset per observation and feature, and
        anything :func:`batchglm.fit` and the tests raise.
    NotImplementedError
        For ``weights`` or an offset per observation and feature with ``dispersion``
        ``"map"`` or ``"ql"`` (the default ``"map"`` included).

    Notes
    -----
    The two-group exception of DESeq2 applies: in a design of one two-level factor, a
    flagged feature is kept when at least 3 counts exceed the count with the largest
    Cook's distance. After replacement only the features with replaced counts are refitted
    and retested, as DESeq2's ``refitWithoutOutliers``: new gene-wise and MAP dispersions
    at the first pass's trend function (evaluated at their new ``baseMean``) and prior
    variance; every other feature keeps its first-pass results exactly
    (:mod:`batchglm.de.outlier_refit`). ``method="ql"`` reruns every feature on the replaced
    counts instead (edgeR has no replacement, and the QL prior would otherwise come from
    the refitted features alone).
    """
    counts_family = family in ("nb", "poisson")
    if dispersion is None and (family != "nb" or model != "loc") and method != "ql":
        dispersion = "mle"
    dispersion = check_options(
        method,
        dispersion,
        coef,
        contrast,
        reduced,
        alpha,
        lfc_threshold,
        alt_hypothesis,
        cooks_cutoff,
        min_replicates_for_replace,
    )
    check_treat_null(treat_null, lfc_threshold, method)
    if (lfc_threshold > 0 or alt_hypothesis != "greaterAbs") and model != "loc":
        raise ValueError(
            "`lfc_threshold` > 0 and `alt_hypothesis` apply to location effects "
            f"(`model='loc'`), but model={model!r} was given."
        )
    if isinstance(cooks_cutoff, str) and not counts_family:
        cooks_cutoff = None
    if cooks_cutoff is not None and not counts_family:
        raise ValueError(
            f"Cook's distances are defined for NB and Poisson fits, but family {family!r} "
            "was given; set `cooks_cutoff=None`."
        )
    if isinstance(size_factors, str) and size_factors == "default":
        size_factors = "median_ratio" if counts_family and offset is None else None
    w_arr, size_factors, off_arr = resolve_weights_offset(
        data, layer, obs, size_factors, weights, offset, counts_family
    )
    check_weighted_options(w_arr, off_arr, dispersion, cooks_cutoff, method)
    fit_args = {
        "family": family,
        "max_iter": max_iter,
        "tol": tol,
        "constraints_scale": constraints_scale,
        "progress": progress,
        "weights": w_arr,
        "offset": off_arr,
    }
    res = initial_fit(
        data,
        design,
        obs,
        layer,
        size_factors,
        constraints_loc,
        fit_args,
        design_scale,
        model,
        dispersion,
    )
    run = {
        "method": method,
        "dispersion": dispersion,
        "coef": coef,
        "contrast": contrast,
        "reduced": reduced,
        "layer": layer,
        "obs": obs,
        "model": model,
        "design_scale": design_scale,
        "fit_args": fit_args,
        "lfc_threshold": lfc_threshold if method == "ql" else 0.0,
        "treat_null": treat_null,
    }
    logger.info(
        "testing %d features (%s, dispersion %r)", len(res.feature_names), method, dispersion
    )
    # With the fit's own data the dispersion estimates stay on the fit (res.derived), for
    # the refit of features whose outlier counts get replaced.
    own = res.data is not None
    de_res = run_test(
        res.data if own else data, res, **({**run, "layer": None, "obs": res.obs} if own else run)
    )
    d = data_of_fit(data, res, layer=layer)
    values = d.values
    sf = res.size_factors
    n_feat = len(res.feature_names)
    cutoff: float | None = None
    outliers = np.zeros(n_feat, dtype=bool)
    replaced = np.zeros(n_feat, dtype=bool)
    max_cooks = flag_cooks = np.full(n_feat, np.nan)
    n_counts_replaced = n_refit = 0
    if cooks_cutoff is not None:
        n_obs = len(res.obs_names)
        cutoff = (
            default_cutoff(n_obs, res.loc.n_free)
            if isinstance(cooks_cutoff, str)
            else float(cooks_cutoff)
        )
        logger.info("Cook's distances (cutoff %.3g)", cutoff)
        out = find_outliers(values, de_res.fit, cutoff, min_replicates=min_replicates_for_replace)
        max_cooks = flag_cooks = out.max_cooks
        if out.replace_obs.size:
            replaced[out.replace_feature] = True
            values = _replaced_counts(values, sf, out)
            logger.info(
                "replacing %d outlier count(s) in %d feature(s) and refitting",
                out.replace_obs.size,
                int(replaced.sum()),
            )
            new_data = _as_input(values, res)
            if method == "ql":
                # edgeR has no replacement; the QL prior (df and scale trend) would be
                # re-estimated from the refitted features alone, so all are rerun, starting
                # as the first run (the rough dispersion on the new counts).
                res = initial_fit(
                    new_data,
                    _design_of(design, res),
                    res.obs,
                    None,
                    sf,
                    constraints_loc,
                    fit_args,
                    design_scale,
                    model,
                    dispersion,
                )
                de_res = run_test(new_data, res, **{**run, "layer": None, "obs": res.obs})
            else:
                res, de_res = refit_replaced(
                    values,
                    res,
                    de_res,
                    np.flatnonzero(replaced),
                    design=_design_of(design, res),
                    design_scale=design_scale,
                    constraints_loc=constraints_loc,
                    run=run,
                    initial_fit=initial_fit,
                    run_test=run_test,
                    named=_named,
                )
            # DESeq2 flags only by the counts that could not be replaced; maxCooks is the
            # refit's on the replaced counts (docs/outliers.md).
            flag_cooks = out.max_cooks_kept
            refit = np.arange(n_feat) if method == "ql" else np.flatnonzero(replaced)
            max_cooks = max_cooks.copy()
            max_cooks[refit] = max_cooks_distance(values, de_res.fit, features=refit)
            n_counts_replaced, n_refit = int(out.replace_obs.size), int(refit.size)
        with np.errstate(invalid="ignore"):
            outliers = flag_cooks > cutoff
        if outliers.any() and _two_group(res.loc.reduced):
            outliers &= ~(out.n_above_max >= 3)
    if method == "wald" and (lfc_threshold > 0 or alt_hypothesis != "greaterAbs"):
        de_res = wald_threshold(de_res, lfc_threshold, alt_hypothesis)
    pval = np.where(outliers, np.nan, de_res.pval)
    base_mean = weighted_base_mean(values, sf, w_arr, off_arr)
    filt: FilterResult | None = None
    if independent_filtering:
        filt = filter_by_base_mean(pval, base_mean, alpha)
        padj, filtered = filt.padj, filt.filtered
    else:
        padj, filtered = bh_qvalues(pval), np.zeros(n_feat, dtype=bool)
    base = {f.name: getattr(de_res, f.name) for f in fields(DEResult)}
    base.update(mean=base_mean, pval=pval)
    return PipelineResult(
        **base,
        max_cooks=max_cooks,
        cooks_outlier=outliers,
        replaced=replaced,
        n_counts_replaced=n_counts_replaced,
        n_refit=n_refit,
        cooks_cutoff=cutoff,
        filtered=filtered,
        padj_values=padj,
        filter_threshold=filt.threshold if filt is not None else float("nan"),
        filter_theta=filt.theta if filt is not None else float("nan"),
        filter_num_rej=filt.num_rejections if filt is not None else None,
        alpha=alpha,
        size_factors=sf,
        signed=getattr(de_res, "signed", None),
    )


#: Not a pytest test function, despite its name.
test.__test__ = False  # type: ignore[attr-defined]


def _as_input(values: Any, res: FitResult) -> Any:
    """Name the replaced counts like the fit, for a rerun."""
    return _named(values, res.obs_names, res.feature_names)


def _named(values: Any, obs_names: pd.Index, feature_names: pd.Index) -> Any:
    """Name counts by observation and feature, for a refit."""
    if sparse.issparse(values):
        import anndata

        return anndata.AnnData(
            X=values,
            obs=pd.DataFrame(index=obs_names),
            var=pd.DataFrame(index=feature_names),
        )
    return pd.DataFrame(values, index=obs_names, columns=feature_names)


def _design_of(design: Any, res: FitResult) -> Any:
    """Return the design to refit with: the formula (with the fit's obs) or the design matrix."""
    return design if isinstance(design, str) else res.design_loc
