"""Shrunken log fold changes: apeglm's Cauchy prior and DESeq2's normal prior.

Maximum-likelihood fold changes of weakly expressed or noisy features are large and
variable; for ranking and plotting, a posterior estimate that pulls uninformative fold
changes towards zero is more useful. :func:`lfc_shrink` computes, per feature, the mode of

    log p(a | y) = l(a; y, alpha) + log prior(L a) - ||P theta||^2 / (2 * 15^2) + const

over the location parameters at fixed NB dispersions ``alpha`` (the MAP dispersions by
default), where ``L a`` is the tested coefficient or contrast and ``P theta`` the part of
the free parameters orthogonal to it, and reports the mode of ``L a`` with its posterior
standard deviation from the curvature at the mode (a Laplace approximation).

* ``type="apeglm"`` (Zhu, Ibrahim & Love 2018, Bioinformatics 35:2084, package apeglm):
  a Cauchy prior (Student t with 1 degree of freedom) with scale ``S`` on ``L a``. ``S``
  is estimated across features as apeglm does: the variance ``A`` of a zero-centred normal
  distribution of the true effects is estimated from the maximum-likelihood effects
  ``b_g`` and their variances ``D_g`` with the Efron & Morris (1975) estimator, the root of
  ``A = sum((b_g^2 - D_g) I_g) / sum(I_g)``, ``I_g = 1 / (2 (A + D_g)^2)`` on
  ``[1e-6, 400]``, and ``S = min(sqrt(A), 1)`` (natural-log units). Other parameters get
  apeglm's wide normal prior with standard deviation 15. The local false sign rate
  ``Phi(-|mode| / sd)`` and apeglm's s-values (its running mean in increasing order) are
  available with ``svalue=True``.
* ``type="normal"`` (DESeq2's ``lfcShrink(type="normal")``, Love, Huber & Anders 2014):
  a zero-centred normal prior on ``L a`` with DESeq2's variance (``estimateBetaPriorVar``,
  ``betaPriorMethod="weighted"``): ``sd = q / z_0.975`` with ``q`` the 95% quantile of
  ``|log2FoldChange|`` of the maximum-likelihood effects below 10 in absolute value,
  weighted by ``1 / (1 / baseMean + dispFit)`` as Hmisc's ``wtd.quantile(normwt=TRUE)``
  (at least ``1e-3``). ``lfcSE`` is DESeq2's covariance of the MAP estimate,
  ``(I + Lam)^-1 I (I + Lam)^-1`` with the Fisher information ``I``; ``lfsr`` uses the
  posterior SD. Agreement with DESeq2 1.38 on ``~ condition`` designs: median
  ``|dLFC|`` about 0.001 (``docs/inference.md``). On purpose, the prior is on the tested
  effect only: DESeq2 also shrinks every covariate's coefficient, which moves the tested
  estimate wherever a covariate is partly confounded with it (5 v 5 ``~ age +
  condition``: median 0.024, max 0.47 log2; ours equals DESeq2 with the prior on the
  condition only to median 2.4e-4; ``tests/test_lfc_shrink_covariate.py``), and DESeq2's
  ``contrast=`` path refits an expanded design whose two-level contrasts get twice the
  prior variance of ``coef=``; here ``contrast=`` and ``coef=`` agree.

The prior scales and s-values live in :mod:`batchglm.de.lfc_prior`, the batched Newton
search for the posterior mode in :mod:`batchglm.de.lfc_posterior`; this module checks the
inputs, runs the unshrunken Wald test and assembles the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.de.lfc_posterior import NO_SHRINK_SD, LfcPosterior, reparametrisation
from batchglm.de.lfc_prior import apeglm_prior_scale, normal_prior_sd, svalues
from batchglm.de.result import DEResult
from batchglm.de.table import DETable
from batchglm.de.wald import Coef, ContrastLike, test_rows, wald
from batchglm.families.tails import norm_cdf
from batchglm.inputs import data_of_fit
from batchglm.obs_weights import is_weighted
from batchglm.result import FitResult

Array = NDArray[np.float64]

TYPES = ("apeglm", "normal")

_BLOCK = 2048


@dataclass(frozen=True, eq=False)
class ShrunkenLFC:
    """Shrunken log fold changes with the unshrunken test they came from.

    Attributes
    ----------
    de : DEResult
        The unshrunken Wald test; its p-values are kept, as DESeq2's ``lfcShrink`` does.
    type : str
        ``"apeglm"`` or ``"normal"``.
    coef_map : ndarray
        Posterior mode of the tested effect, natural-log scale, one per feature.
    coef_sd : ndarray
        Standard error reported as ``lfcSE``, natural log: the posterior standard deviation
        (inverse curvature at the mode) for apeglm; DESeq2's covariance of the MAP estimate
        ``(I + Lam)^-1 I (I + Lam)^-1`` for normal.
    prior_scale : float
        Cauchy scale (apeglm) or normal standard deviation (normal) of the prior, log2
        units.
    converged : ndarray of bool
        Whether the mode was found (and the curvature there is positive).
    n_iter : ndarray of int
        Newton iterations used per feature (the better of the two starts).
    lfsr : ndarray
        Local false sign rate ``Phi(-|coef_map| / sd)`` with ``sd`` the posterior standard
        deviation.
    svalue : ndarray or None
        apeglm's s-values, when asked for.
    """

    de: DEResult
    type: str
    coef_map: Array
    coef_sd: Array
    prior_scale: float
    converged: NDArray[np.bool_]
    n_iter: NDArray[np.int64]
    lfsr: Array
    svalue: Array | None = None

    @property
    def log2fc(self) -> Array:
        """Shrunken log2 fold change, ``coef_map / ln 2``, capped like the MLE's.

        Returns
        -------
        ndarray
            One value per feature. Separated features (status ``separated``, whose MLE
            runs towards infinity) are clipped to ``+-max_lfc`` of the unshrunken test, as
            its ``log2FoldChange`` is (:attr:`DEResult.lfc_capped`): a finite prior cannot
            make such an estimate meaningful beyond the cap. ``coef_map`` keeps the raw
            posterior mode.
        """
        from batchglm.solvers.status import Status

        raw = self.coef_map / np.log(2.0)
        separated = self.de.fit.status_codes == Status.SEPARATED
        cap = self.de.max_lfc
        return np.where(separated, np.clip(raw, -cap, cap), raw)

    def summary(self, sort_by: str | None = None, n_max: int | None = None) -> DETable:
        """Return the results table with shrunken fold changes, indexed by feature.

        Parameters
        ----------
        sort_by : str, optional
            Column to sort by, ascending, ``NaN`` last.
        n_max : int, optional
            Return only the first ``n_max`` rows (after sorting).

        Returns
        -------
        DETable
            The unshrunken test's table (:meth:`DEResult.summary`) without ``stat``, with
            ``log2FoldChange`` the posterior mode (for separated features capped at
            ``+-max_lfc`` as ``log2FoldChange_MLE`` is; :attr:`log2fc`; the raw mode is
            ``coef_map / ln 2``) and ``lfcSE`` its posterior standard deviation (log2
            units; for normal DESeq2's standard error of the MAP estimate, see
            :attr:`coef_sd`), ``pvalue``/``padj`` of the unshrunken test, and the added columns
            ``log2FoldChange_MLE`` and ``lfcSE_MLE`` (the unshrunken ones), ``lfsr``
            and (with ``svalue=True``) ``svalue``.

        Raises
        ------
        ValueError
            If ``sort_by`` is not a column or ``n_max`` is negative.
        """
        ln2 = np.log(2.0)
        table = self.de.summary()
        mle, se = table["log2FoldChange"].to_numpy(), table["lfcSE"].to_numpy()
        table = table.drop(columns=["stat"])
        table["log2FoldChange"] = self.log2fc
        table["lfcSE"] = self.coef_sd / ln2
        pos = list(table.columns).index("status") + 1
        table.insert(pos, "log2FoldChange_MLE", mle)
        table.insert(pos + 1, "lfcSE_MLE", se)
        table.insert(pos + 2, "lfsr", self.lfsr)
        if self.svalue is not None:
            table.insert(pos + 3, "svalue", self.svalue)
        if sort_by is not None:
            if sort_by not in table.columns:
                raise ValueError(
                    f"`sort_by` must be a column of the table or None, but {sort_by!r} was "
                    f"given; the columns are {list(table.columns)}."
                )
            table = table.sort_values(sort_by, kind="stable", na_position="last")
        if n_max is not None:
            if n_max < 0:
                raise ValueError(f"`n_max` must be at least 0, but {n_max} was given.")
            table = table.iloc[:n_max]
        return DETable(table)


def lfc_shrink(
    res_or_de: FitResult | DEResult,
    coef: Coef | Sequence[Coef] | None = None,
    *,
    contrast: ContrastLike | None = None,
    type: str = "apeglm",
    data: Any = None,
    layer: str | None = None,
    dispersion: str = "map",
    trend: str = "parametric",
    prior_scale: float | None = None,
    svalue: bool = False,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> ShrunkenLFC:
    """Shrink the log fold changes of one coefficient or contrast (apeglm or normal prior).

    Parameters
    ----------
    res_or_de : FitResult or DEResult
        An NB fit from :func:`batchglm.fit`, or a one-degree-of-freedom Wald test of its
        location (:func:`batchglm.de.wald` with ``dispersion`` ``"mle"`` or ``"map"``)
        whose p-values are to be kept; then ``coef``/``contrast`` must name what it
        tested.
    coef : str or int, optional
        The location coefficient whose fold change is shrunk.
    contrast : array_like, Series, dict, tuple, str or Cond, optional
        Instead of ``coef``: one contrast, in any form :func:`batchglm.de.wald` accepts.
    type : {"apeglm", "normal"}
        The prior: apeglm's Cauchy (default) or DESeq2's normal (see the module
        docstring).
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit (required: the posterior is computed from them). For a
        :func:`batchglm.de.test` result whose Cook's outlier counts were replaced
        (``replaced``), the replaced counts its refit kept are used instead, so that the
        shrunken and the MLE columns come from the same counts (DESeq2's ``lfcShrink``
        uses the original counts there).
    layer : str, optional
        AnnData layer of ``data``.
    dispersion : {"map", "mle"}
        NB dispersions held fixed: DESeq2's empirical-Bayes MAP estimates (default, as
        DESeq2 passes to apeglm) or the fit's own. Only used with a ``FitResult``.
    trend : {"parametric", "local", "mean"}
        Mean-dispersion trend for ``dispersion="map"``.
    prior_scale : float, optional
        Fix the prior's scale (Cauchy scale or normal standard deviation) in log2 units
        instead of estimating it across features.
    svalue : bool
        Also compute apeglm's s-values.
    max_iter : int
        Newton iterations per start.
    tol : float
        Stop when every parameter step is below ``tol``.

    Returns
    -------
    ShrunkenLFC
        Per feature the posterior mode and standard deviation; ``summary()`` gives the
        table (``log2FoldChange`` and ``lfcSE`` shrunken, ``pvalue``/``padj`` unshrunken).

    Raises
    ------
    ValueError
        For an unknown ``type`` or ``dispersion``, missing ``data``, a family other than
        NB, a joint test (several coefficients or contrast rows), a scale-model test, a
        DEResult that tested something else, a non-positive ``prior_scale``, or a fit with
        random effects (see Notes).
    NotImplementedError
        For a fit with observation ``weights`` or an ``offset`` (the posterior is
        unweighted).

    Notes
    -----
    Mixed fits (``bg.fit(..., random_effects=...)``) are refused: the posterior here is the
    cell-level NB likelihood at fixed dispersions, whose standard error leaves out the
    donor variance (0.18 times the mixed-model SE in a 3 vs 3 donor example, which put 158
    of 200 null genes at lfsr < 0.05). Report the mixed fit's own Wald
    ``log2FoldChange``/``lfcSE``, or shrink a pseudobulk fit (:func:`batchglm.pseudobulk`).
    """
    if type not in TYPES:
        raise ValueError(f"`type` must be 'apeglm' or 'normal', but {type!r} was given.")
    if data is None:
        raise ValueError(
            "`lfc_shrink` computes the posterior from the counts, so pass the fit's data as "
            "`data=`."
        )
    if prior_scale is not None and not (np.isfinite(prior_scale) and prior_scale > 0):
        raise ValueError(
            f"`prior_scale` must be positive (log2 units), but {prior_scale} was given."
        )
    de, lmat = _unshrunken(res_or_de, coef, contrast, data, layer, dispersion, trend)
    fit = de.fit
    ln2 = np.log(2.0)
    if prior_scale is None:
        ok = de.converged & np.isfinite(de.coef_mle) & np.isfinite(de.coef_se)
        ok &= de.kind == "wald"
        if type == "apeglm":
            scale = apeglm_prior_scale(de.coef_mle[ok], de.coef_se[ok])
        else:
            w = _precision_weights(res_or_de, data, layer, trend)
            scale = normal_prior_sd(de.coef_mle[ok] / ln2, w[ok]) * ln2
    else:
        scale = float(prior_scale) * ln2
    l_free = (lmat @ fit.loc.constraints)[0]
    gmat = reparametrisation(l_free)
    xg = fit.loc.matrix @ fit.loc.constraints @ np.linalg.inv(gmat)
    start = fit.theta_free[:, : fit.loc.n_free] @ gmat.T
    log_r = fit.scale.matrix @ fit.coef_scale.to_numpy().T  # (n_obs, F)
    replaced = getattr(res_or_de, "replaced", None)
    if replaced is not None and np.any(replaced) and fit.data is not None:
        # bg.de.test replaced Cook's outlier counts and refitted: shrink on those counts, as
        # the MLE columns and p-values were computed, not on the original `data`.
        d = data_of_fit(fit.data, fit)
    else:
        d = data_of_fit(data, fit, layer=layer)
    n_feat = len(fit.feature_names)
    mode = np.full(n_feat, np.nan)
    sd = np.full(n_feat, np.nan)
    post_sd = np.full(n_feat, np.nan)
    conv = np.zeros(n_feat, dtype=bool)
    iters = np.zeros(n_feat, dtype=np.int64)
    usable = np.asarray(fit.converged, dtype=bool) & np.all(np.isfinite(start), axis=1)
    log_sf = np.log(fit.size_factors)
    for lo in range(0, n_feat, _BLOCK):
        sl = slice(lo, min(lo + _BLOCK, n_feat))
        idx = np.flatnonzero(usable[sl]) + lo
        if idx.size == 0:
            continue
        y = np.asarray(d.block(sl), dtype=np.float64)[:, idx - lo].T
        post = LfcPosterior(y, xg, log_sf, log_r[:, idx].T, scale, type)
        g, sd_b, ok, it = post.mode(start[idx], max_iter, tol)
        mode[idx], post_sd[idx], conv[idx], iters[idx] = g[:, 0], sd_b, ok, it
        sd[idx] = post.sandwich_sd(g) if type == "normal" else sd_b
    mode[~conv] = np.nan
    sd[~conv] = np.nan
    post_sd[~conv] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        lfsr = norm_cdf(-np.abs(mode) / post_sd)
    return ShrunkenLFC(
        de=de,
        type=type,
        coef_map=mode,
        coef_sd=sd,
        prior_scale=scale / ln2,
        converged=conv,
        n_iter=iters,
        lfsr=lfsr,
        svalue=svalues(lfsr) if svalue else None,
    )


def _unshrunken(
    res_or_de: FitResult | DEResult,
    coef: Any,
    contrast: Any,
    data: Any,
    layer: str | None,
    dispersion: str,
    trend: str,
) -> tuple[DEResult, Array]:
    fit = res_or_de.fit if isinstance(res_or_de, DEResult) else res_or_de
    if fit.random is not None:
        raise ValueError(
            "`lfc_shrink` needs a fit without random effects (its posterior is the "
            "cell-level likelihood, which ignores the donor variance), but this fit has "
            f"random_effects={list(fit.random.factors)!r}; report log2FoldChange and lfcSE "
            "of bg.de.wald(res, ...) on the mixed fit, or pseudobulk the counts with "
            "bg.pseudobulk and shrink that fit."
        )
    if is_weighted(fit):
        raise NotImplementedError(
            "`lfc_shrink` does not support fits made with `weights` or `offset` yet (its "
            "posterior and the MAP dispersions would ignore them); report the unshrunken "
            "fold changes of bg.de.wald(res, coef) on the weighted fit instead."
        )
    if dispersion not in ("map", "mle"):
        raise ValueError(
            f"`dispersion` must be 'map' or 'mle' for lfc_shrink, but {dispersion!r} was given."
        )
    if isinstance(res_or_de, DEResult):
        de = res_or_de
        if de.test != "wald" or de.model != "loc" or de.dispersion not in ("mle", "map"):
            raise ValueError(
                "`lfc_shrink` needs a Wald test of the location model with dispersion 'mle' "
                f"or 'map', but got test={de.test!r}, model={de.model!r}, "
                f"dispersion={de.dispersion!r}."
            )
        lmat, labels = test_rows(de.fit, coef, contrast, de.fit.loc, "loc")
        tested = ", ".join(labels)
        if not de.tested.startswith(tested):
            raise ValueError(
                f"the test result tested {de.tested!r} but `coef`/`contrast` give {tested!r}; "
                "pass what the test tested."
            )
    else:
        lmat, _ = test_rows(res_or_de, coef, contrast, res_or_de.loc, "loc")
        _one_row(lmat)
        de = wald(
            res_or_de,
            coef,
            contrast=contrast,
            dispersion=dispersion,
            data=data,
            layer=layer,
            trend=trend,
        )
    _one_row(lmat)
    if de.fit.family != "nb":
        raise ValueError(
            f"`lfc_shrink` is for negative binomial fits, but the fit's family is "
            f"{de.fit.family!r}."
        )
    return de, lmat


def _precision_weights(
    res_or_de: FitResult | DEResult, data: Any, layer: str | None, trend: str
) -> Array:
    """DESeq2's weights of the normal prior's quantile, ``1 / (1 / baseMean + dispFit)``.

    ``baseMean`` is the mean of the normalised counts and ``dispFit`` the trended
    dispersion at it (DESeq2's ``estimateBetaPriorVar``); taken from the dispersions the
    MAP test estimated where they are cached, else estimated on the fit.
    """
    from batchglm.dispersion.estimate import estimate_dispersions

    fit = res_or_de.fit if isinstance(res_or_de, DEResult) else res_or_de
    disp = fit.derived.get(("dispersions", trend))
    if disp is None:
        disp = estimate_dispersions(data, fit, layer=layer, trend=trend, shrink=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(1.0 / (1.0 / disp.base_mean + disp.trend), dtype=np.float64)


def _one_row(lmat: Array) -> None:
    if lmat.shape[0] != 1:
        raise ValueError(
            f"`lfc_shrink` shrinks one coefficient or contrast, but {lmat.shape[0]} were given."
        )


__all__ = [
    "NO_SHRINK_SD",
    "TYPES",
    "ShrunkenLFC",
    "apeglm_prior_scale",
    "lfc_shrink",
    "normal_prior_sd",
    "svalues",
]
