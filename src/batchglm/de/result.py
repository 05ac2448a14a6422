"""The result of a differential test: one row per feature."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.de.multiple_testing import bh_qvalues
from batchglm.de.table import DETable
from batchglm.result import FitResult
from batchglm.solvers.status import CONVERGED_CODES, Status

Array = NDArray[np.float64]

#: Default cap on ``|log2FoldChange|`` in the results table (glmGamPoi's ``max_lfc``).
MAX_LFC = 10.0

#: Columns of :meth:`DEResult.summary` that come first, in this order (DESeq2's names).
MAIN_COLUMNS = ("baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj", "status")


def base_mean(res: FitResult) -> Array:
    """Mean over observations of the fitted mean without size factors (``baseMean``).

    Parameters
    ----------
    res : FitResult
        A fit.

    Returns
    -------
    ndarray
        One value per feature: ``mean_i g^{-1}(x_i . a)`` with the family's inverse link
        (:func:`batchglm.fitted.fitted_mean` at size factors 1; for NB, the mean of the
        counts normalised by the size factors as the model sees it). For a fit with
        observation weights it is the weighted mean ``sum_i w_i m_i / sum_i w_i``, as the
        weights are frequency weights: an integer weight ``k`` counts like ``k`` copies of
        the observation, a weight of 0 drops it.
    """
    from batchglm.fitted import fitted_mean as _fitted_mean

    means = _fitted_mean(res, size_factors=False)
    w = res.settings.get("weights")
    if not isinstance(w, np.ndarray):
        return np.asarray(means.mean(axis=0))
    w2 = w[:, None] if w.ndim == 1 else w
    return np.asarray((w2 * means).sum(axis=0) / w2.sum(axis=0))


def fitted_mean(res: FitResult) -> Array:
    """Return :func:`base_mean` (deprecated name).

    Parameters
    ----------
    res : FitResult
        A fit.

    Returns
    -------
    ndarray
        :func:`base_mean` of the fit.
    """
    warnings.warn(
        "`batchglm.de.result.fitted_mean` is deprecated; use `base_mean` (per-feature "
        "baseMean) or `batchglm.fitted.fitted_mean` (per-observation means).",
        DeprecationWarning,
        stacklevel=2,
    )
    return base_mean(res)


def _fitted_nb_dispersion(fit: FitResult) -> Array | None:
    """Per-feature NB dispersion ``alpha = 1 / r`` of a fit whose scale is one per feature.

    ``None`` for other families, mixed fits, and scale designs that vary over observations
    (no single dispersion per feature).
    """
    if fit.family != "nb" or fit.random is not None or not fit.has_scale:
        return None
    x = np.asarray(fit.scale.matrix)
    if x.shape[0] == 0 or np.any(np.ptp(x, axis=0) > 0):
        return None
    b = fit.theta_free[:, fit.loc.n_free :] @ fit.scale.constraints.T
    eta = b @ x[0]
    return np.asarray(np.exp(-np.clip(eta, *fit.family.scale_bounds)), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class DEResult:
    """Per-feature results of a Wald, likelihood-ratio or quasi-likelihood F test.

    Build it with :func:`batchglm.de.wald`, :func:`batchglm.de.lrt` or
    :func:`batchglm.de.ql_f`; read it with :meth:`summary`.

    Attributes
    ----------
    test : str
        ``"wald"``, ``"lrt"`` or ``"ql_f"``.
    model : str
        The tested model part: ``"loc"``, ``"scale"`` or ``"loc+scale"``.
    tested : str
        What was tested, in words (coefficient names, a contrast, or the two models).
    df : int
        Degrees of freedom of the chi-squared reference distribution (numerator degrees of
        freedom of an F test).
    feature_names : pandas.Index
        Feature names.
    pval : ndarray
        P-values; ``NaN`` for features that could not be tested.
    stat : ndarray
        Test statistics: chi-squared with ``df`` degrees of freedom under the null (Wald or
        likelihood ratio, see ``stat_kind``), or F for ``dispersion="ql"`` and ``ql_f``.
    coef_mle, coef_se : ndarray
        Estimate and standard error of the reported effect on the natural-log (link)
        scale, unbounded; ``NaN`` when the test has several degrees of freedom or no single
        effect.
    effect_model : str or None
        ``"loc"`` or ``"scale"``: the model the reported effect belongs to.
    mean : ndarray
        Fitted mean per feature without size factors (``baseMean``), see
        :func:`base_mean`.
    loglik : ndarray
        Log-likelihood of the (full) model (``ll`` is its deprecated name).
    converged : ndarray of bool
        Whether the feature could be tested (all fits reached an optimum).
    estimates : pandas.DataFrame
        The tested linear combinations, features x tests (one column per degree of freedom
        before rank reduction).
    fit : FitResult
        The (full) fit.
    reduced : FitResult or None
        The reduced fit of a likelihood-ratio test.
    loglik_reduced : ndarray or None
        Log-likelihood of the reduced model (``ll_reduced`` is its deprecated name).
    dispersion : str
        How NB dispersions were set for the test: ``"mle"`` (per feature, fitted jointly),
        ``"map"`` (empirical-Bayes shrunken, held fixed) or ``"ql"`` (held at the trend,
        quasi-likelihood F test).
    nb_dispersion : ndarray or None
        The NB dispersion ``alpha = 1 / r`` held fixed per feature (``"map"``, ``"ql"``).
    ql_dispersion : ndarray or None
        Moderated quasi-likelihood dispersion per feature (``"ql"``).
    df_residual : ndarray or None
        Denominator degrees of freedom of the F test per feature (``"ql"``); ``stat`` is
        then F distributed with ``df`` and ``df_residual`` degrees of freedom.
    stat_kind : ndarray of str or None
        Per feature, the likelihood statistic behind ``stat``: ``"wald"`` or ``"lrt"``.
        A Wald test replaces the Wald statistic of features separated in the tested
        direction by the likelihood-ratio statistic (see :func:`batchglm.de.wald`), or
        marks them ``"none"`` (``NaN`` p-value) when it was not given the data.
        ``"donor_permutation"``: a random-effects fit's separated (or runaway-variance)
        feature tested at the donor level by randomization, ``"pseudobulk_ql_f"``: such a
        feature tested by pseudobulk + :func:`batchglm.de.ql_f` on the donor sums of all
        features (:mod:`batchglm.de.mixed_separation`).
        ``None``: ``"lrt"`` for ``test`` ``"lrt"``/``"ql_f"``, else ``"wald"``.
    max_lfc : float
        Cap on ``|log2FoldChange|`` (10, as glmGamPoi); the raw estimate stays in
        ``coef_mle``.
    refit_failed : ndarray of bool or None
        Wald tests: features separated in the tested direction whose internal reduced
        refit (for their likelihood-ratio statistic) reached no optimum; their p-value is
        ``NaN`` and their status ``reduced_failed``.
    count_outlier : ndarray of bool or None
        Tests of mixed fits: features with a count far above its conditional mean
        (:mod:`batchglm.mixed.count_outliers`); their p-value is ``NaN`` and their status
        ``outlier``. ``None`` when the check did not run.
    """

    test: str
    model: str
    tested: str
    df: int
    feature_names: pd.Index
    pval: Array
    stat: Array
    coef_mle: Array
    coef_se: Array
    effect_model: str | None
    mean: Array
    loglik: Array
    converged: NDArray[np.bool_]
    estimates: pd.DataFrame
    fit: FitResult
    reduced: FitResult | None = None
    loglik_reduced: Array | None = None
    dispersion: str = "mle"
    nb_dispersion: Array | None = None
    ql_dispersion: Array | None = None
    df_residual: Array | None = None
    stat_kind: NDArray[np.str_] | None = None
    max_lfc: float = MAX_LFC
    refit_failed: NDArray[np.bool_] | None = None
    count_outlier: NDArray[np.bool_] | None = None

    @cached_property
    def qval(self) -> Array:
        """Benjamini-Hochberg q-values over the features with a finite p-value.

        Returns
        -------
        ndarray
            ``NaN`` where ``pval`` is ``NaN``; those features do not count as tests.
        """
        return bh_qvalues(self.pval)

    @property
    def ll(self) -> Array:
        """Deprecated name of :attr:`loglik`.

        Returns
        -------
        ndarray
            ``loglik``.
        """
        warnings.warn(
            "`DEResult.ll` is deprecated; use `loglik`.", DeprecationWarning, stacklevel=2
        )
        return self.loglik

    @property
    def ll_reduced(self) -> Array | None:
        """Deprecated name of :attr:`loglik_reduced`.

        Returns
        -------
        ndarray or None
            ``loglik_reduced``.
        """
        warnings.warn(
            "`DEResult.ll_reduced` is deprecated; use `loglik_reduced`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.loglik_reduced

    @property
    def coef_sd(self) -> Array:
        """Deprecated name of :attr:`coef_se` (natural-log scale).

        Returns
        -------
        ndarray
            ``coef_se``.
        """
        warnings.warn(
            "`DEResult.coef_sd` is deprecated; use `coef_se` (natural-log scale) or the "
            "summary's `lfcSE` (log2 scale).",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.coef_se

    @property
    def log2fc(self) -> Array:
        """Log2 fold change of the reported effect, ``coef_mle / ln 2``, capped at ``max_lfc``.

        Returns
        -------
        ndarray
            For a location effect under a log link, the log2 fold change of the mean; for
            a scale effect, that of the scale parameter (NB: the size ``r``). Separated
            features (whose estimate runs towards infinity) beyond ``+-max_lfc`` are set to
            ``+-max_lfc`` (see :attr:`lfc_capped`); ``coef_mle`` keeps the raw estimate.
            ``NaN`` for all-zero features. ``NaN`` for location
            effects of families whose mean link is not the log (``"normal"``: identity,
            ``"beta"``: logit), where a coefficient is no fold change; ``coef_mle`` and
            ``coef_se`` then hold the effect on the link scale.
        """
        if self.effect_model == "loc" and self.fit.family.link != "log":
            return np.full(len(self.coef_mle), np.nan)
        raw = self.coef_mle / np.log(2.0)
        # All-zero features have no fold change (DESeq2 reports NA).
        raw = np.where(self.fit.status_codes == Status.ALL_ZERO, np.nan, raw)
        return np.where(self.lfc_capped, np.clip(raw, -self.max_lfc, self.max_lfc), raw)

    @property
    def lfc_capped(self) -> NDArray[np.bool_]:
        """Whether the fold change was capped at ``+-max_lfc``.

        Only separated features are capped (status ``separated``, whose estimate runs
        towards infinity); a large but finite, well-determined fold change is reported as
        it is, so ``log2FoldChange / lfcSE`` stays the Wald ``z``.

        Returns
        -------
        ndarray of bool
            One value per feature.
        """
        separated = self.fit.status_codes == Status.SEPARATED
        with np.errstate(invalid="ignore"):
            return np.asarray(separated & (np.abs(self.coef_mle / np.log(2.0)) > self.max_lfc))

    @property
    def status(self) -> NDArray[np.str_]:
        """Fit status per feature (:class:`batchglm.Status` labels).

        Returns
        -------
        ndarray of str
            The (full) fit's status: ``converged``, ``separated``, ``scale_at_bound``,
            ``all_zero``, ``max_iter``, ``stalled``, ``nonfinite`` or ``unidentifiable``.
            Where the full fit reached an optimum but the reduced fit of a likelihood-ratio
            test did not, the reduced fit's label prefixed by ``reduced_`` (e.g.
            ``reduced_max_iter``); ``reduced_failed`` where a Wald test's internal reduced
            refit of a separated feature failed (see ``refit_failed``); ``outlier`` for
            features of a mixed fit with a count outlier (``count_outlier``,
            :mod:`batchglm.mixed.count_outliers`).
        """
        labels = np.array([Status(int(s)).label for s in self.fit.status_codes], dtype=object)
        if self.refit_failed is not None:
            labels[self.refit_failed] = "reduced_failed"
        if self.reduced is not None:
            ok = np.isin(self.fit.status_codes, [int(s) for s in CONVERGED_CODES])
            red = self.reduced.status_codes
            bad = ok & ~np.isin(red, [int(s) for s in CONVERGED_CODES])
            labels[bad] = [f"reduced_{Status(int(s)).label}" for s in red[bad]]
        if self.count_outlier is not None:
            labels[self.count_outlier] = "outlier"
        return labels.astype(str)

    @property
    def kind(self) -> NDArray[np.str_]:
        """The likelihood statistic behind ``stat`` per feature: ``"wald"`` or ``"lrt"``.

        Returns
        -------
        ndarray of str
            See the ``stat_kind`` attribute.
        """
        if self.stat_kind is not None:
            return self.stat_kind
        default = "lrt" if self.test in ("lrt", "ql_f") else "wald"
        return np.full(len(self.feature_names), default)

    def signed_stat(self) -> Array:
        """Return the ``stat`` column of :meth:`summary`.

        Returns
        -------
        ndarray
            For a one-degree-of-freedom Wald test with a chi-squared reference
            (``dispersion`` ``"mle"`` or ``"map"``): the signed statistic
            ``sign(coef_mle) sqrt(stat)``, which is ``z = coef_mle / coef_se`` where the
            Wald statistic is used and the signed root of the likelihood-ratio statistic
            where it replaced the Wald statistic (``stat_kind == "lrt"``). Otherwise
            ``stat`` itself (chi-squared, or F for quasi-likelihood tests).
        """
        signed = (
            self.test == "wald"
            and self.df == 1
            and self.effect_model is not None
            and self.dispersion in ("mle", "map")
        )
        if not signed:
            return self.stat
        with np.errstate(invalid="ignore"):
            return np.sign(self.coef_mle) * np.sqrt(self.stat)

    def summary(self, sort_by: str | None = None, n_max: int | None = None) -> DETable:
        """Return the results table: one row per feature, indexed by feature name.

        Parameters
        ----------
        sort_by : str or None
            Column to sort by, ascending (``NaN`` last; ties keep feature order), e.g.
            ``"pvalue"``. ``None`` (the default, as DESeq2's ``results``) keeps the features
            in the order of the fit, so positions match ``res.feature_names``.
        n_max : int, optional
            Return only the first ``n_max`` rows (after sorting).

        Returns
        -------
        DETable
            A :class:`pandas.DataFrame` indexed by feature (index name ``"feature"``) with
            the columns, in order (DESeq2's names):

            * ``baseMean``: mean over observations of the fitted mean without size factors
              (:func:`base_mean`), not DESeq2's mean of normalised counts;
            * ``log2FoldChange``: ``coef_mle / ln 2``, capped at ``+-max_lfc``;
            * ``lfcSE``: standard error of ``log2FoldChange`` (log2 units, uncapped;
              quasi-likelihood tests scale it by the root of the QL dispersion);
            * ``stat``: the signed ``z`` for one-degree-of-freedom Wald tests, chi-squared
              for other Wald and likelihood-ratio tests, F for quasi-likelihood tests (see
              :meth:`signed_stat`);
            * ``pvalue``, ``padj`` (Benjamini-Hochberg over the features with a p-value);
            * ``status``: the fit's status (see :attr:`status`);

            then ``stat_kind`` (``"wald"`` or ``"lrt"``; ``"none"`` for features without a
            test, such as all-zero ones), ``lfc_capped``, ``coef_mle`` and ``coef_se``
            (natural-log scale, raw; ``NaN`` for all-zero features), ``loglik``, ``converged``, and
            ``dispersion`` (the NB dispersion held fixed) for ``dispersion="map"`` or
            ``"ql"``, ``ql_dispersion`` and ``df_residual`` for ``"ql"``.

            The old names ``pval``, ``qval``, ``log2fc``, ``mean``, ``ll``, ``coef_sd``
            and ``feature`` still read the same values (``coef_sd`` is ``coef_se``, natural
            log) with a :class:`DeprecationWarning`.

        Raises
        ------
        ValueError
            If ``sort_by`` is not a column or ``n_max`` is negative.
        """
        ln2 = np.log(2.0)
        # All-zero features have no estimate and no test: NaN and "none", as log2FoldChange
        # (the solver's stopping value near 0 is no estimate).
        all_zero = self.fit.status_codes == Status.ALL_ZERO
        columns: dict[str, object] = {
            "baseMean": self.mean,
            "log2FoldChange": self.log2fc,
            "lfcSE": np.where(np.isnan(self.log2fc), np.nan, self.coef_se / ln2),
            "stat": self.signed_stat(),
            "pvalue": self.pval,
            "padj": self.qval,
            "status": self.status,
            "stat_kind": np.where(all_zero, "none", self.kind),
            "lfc_capped": self.lfc_capped,
            "coef_mle": np.where(all_zero, np.nan, self.coef_mle),
            "coef_se": self.coef_se,
            "loglik": self.loglik,
            "converged": self.converged,
        }
        extra = {
            "dispersion": self.nb_dispersion
            if self.nb_dispersion is not None
            else _fitted_nb_dispersion(self.fit),
            "ql_dispersion": self.ql_dispersion,
            "df_residual": self.df_residual,
        }
        columns.update({name: values for name, values in extra.items() if values is not None})
        index = pd.Index(np.asarray(self.feature_names), name="feature")
        table = DETable(columns, index=index)
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
        return table

    def to_anndata(self, adata: Any, key_added: str = "batchglm_de") -> Any:
        """Store the results table in an AnnData's ``var``, in place.

        See :func:`batchglm.de.anndata_results.write_results` for the keys; read the table
        back (also from ``.h5ad``) with :func:`batchglm.de.read_results`.

        Parameters
        ----------
        adata : anndata.AnnData
            Target whose ``var_names`` hold every tested feature.
        key_added : str
            Prefix of the keys written.

        Returns
        -------
        anndata.AnnData
            ``adata``.

        Raises
        ------
        ValueError
            See :func:`batchglm.de.anndata_results.write_results`.
        """
        from batchglm.de.anndata_results import write_results

        return write_results(self, adata, key_added)

    def significant(self, alpha: float = 0.05) -> pd.Index:
        """Features with ``qval < alpha``.

        Parameters
        ----------
        alpha : float
            Target false discovery rate.

        Returns
        -------
        pandas.Index
            Names of the significant features.

        Raises
        ------
        ValueError
            If ``alpha`` is not in ``(0, 1)``.
        """
        if not 0 < alpha < 1:
            raise ValueError(f"`alpha` must lie in (0, 1), but {alpha} was given.")
        with np.errstate(invalid="ignore"):
            return self.feature_names[self.qval < alpha]

    def __repr__(self) -> str:
        n_tested = int(np.isfinite(self.pval).sum())
        with np.errstate(invalid="ignore"):
            n_sig = int((self.qval < 0.05).sum())
        return (
            f"DEResult(test={self.test!r}, model={self.model!r}, tested={self.tested!r}, "
            f"df={self.df}, dispersion={self.dispersion!r}, "
            f"n_features={len(self.feature_names)}, tested_features={n_tested}, "
            f"qval<0.05: {n_sig})"
        )
