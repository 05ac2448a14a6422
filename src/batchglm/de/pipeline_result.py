"""The result of the DESeq2-style pipeline (:func:`batchglm.de.test`).

A :class:`~batchglm.de.DEResult` plus what the pipeline adds: Cook's distances and outlier
flags, the independent-filtering threshold, DESeq2's ``baseMean`` and the size factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.de.multiple_testing import bh_qvalues
from batchglm.de.result import DEResult
from batchglm.de.table import DETable

Array = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class PipelineResult(DEResult):
    """A :class:`~batchglm.de.DEResult` with DESeq2's outlier handling and filtering.

    ``mean`` holds DESeq2's ``baseMean`` (mean over observations of counts divided by
    size factors), ``pval`` is ``NaN`` for Cook's outliers and ``qval`` the adjusted
    p-values after independent filtering.

    Attributes
    ----------
    max_cooks : ndarray
        Largest Cook's distance per feature (``maxCooks``) over the observations in design
        cells of 3 or more, of the fit that gave the feature's p-value on the counts it
        was fit to: after outlier replacement, the refit's on the replaced counts
        (:func:`batchglm.de.cooks.max_cooks_distance`, ``docs/outliers.md``); ``NaN``
        where not defined.
    cooks_outlier : ndarray of bool
        Features flagged as outliers (``status`` ``"outlier"``, ``NaN`` p-value). After
        replacement only distances of observations that could not be replaced (first
        pass) flag a feature, as in DESeq2.
    replaced : ndarray of bool
        Features whose outlier counts were replaced before the test was rerun.
    n_counts_replaced : int
        Outlier counts replaced (over all features).
    n_refit : int
        Features refitted after the replacement: those with replaced counts, or all
        features for ``method="ql"`` (whose prior is re-estimated from all of them).
    cooks_cutoff : float or None
        Cutoff used; ``None`` when Cook's distances were not used.
    filtered : ndarray of bool
        Features removed by independent filtering (``padj`` ``NaN``).
    filter_threshold : float
        ``baseMean`` threshold of independent filtering (``nan`` when off).
    filter_theta : float
        Its quantile among the ``baseMean`` values.
    filter_num_rej : pandas.DataFrame or None
        Rejections at ``alpha`` per quantile tried, with the lowess curve.
    alpha : float
        The false discovery rate used for filtering and the summary line.
    size_factors : ndarray or None
        Size factors per observation.
    """

    max_cooks: Array | None = None
    cooks_outlier: NDArray[np.bool_] | None = None
    replaced: NDArray[np.bool_] | None = None
    n_counts_replaced: int = 0
    n_refit: int = 0
    cooks_cutoff: float | None = None
    filtered: NDArray[np.bool_] | None = None
    padj_values: Array | None = None
    filter_threshold: float = float("nan")
    filter_theta: float = float("nan")
    filter_num_rej: pd.DataFrame | None = None
    alpha: float = 0.1
    size_factors: Array | None = None
    signed: Array | None = None

    def signed_stat(self) -> Array:
        """Return the ``stat`` column, thresholded as DESeq2's when a threshold was tested.

        See :func:`batchglm.de.threshold.wald_threshold`; without a threshold, the plain one.

        Returns
        -------
        ndarray
            One value per feature.
        """
        return super().signed_stat() if self.signed is None else self.signed

    @property
    def qval(self) -> Array:
        """Benjamini-Hochberg adjusted p-values after independent filtering.

        Returns
        -------
        ndarray
            ``NaN`` for filtered features and those without a p-value.
        """
        if self.padj_values is None:
            return bh_qvalues(self.pval)
        return self.padj_values

    @property
    def status(self) -> NDArray[np.str_]:
        """Fit status per feature, ``"outlier"`` for Cook's outliers.

        Returns
        -------
        ndarray of str
            See :attr:`batchglm.de.DEResult.status`.
        """
        labels = super().status.astype(object)
        if self.cooks_outlier is not None:
            labels[self.cooks_outlier] = "outlier"
        return labels.astype(str)

    def summary(self, sort_by: str | None = None, n_max: int | None = None) -> DETable:
        """Return the results table, indexed by feature.

        Parameters
        ----------
        sort_by : str or None
            Column to sort by, ascending (``NaN`` last); ``None`` keeps the fit's order.
        n_max : int, optional
            Return only the first ``n_max`` rows (after sorting).

        Returns
        -------
        DETable
            The columns of :meth:`batchglm.de.DEResult.summary`, with ``baseMean`` the mean
            of the normalised counts (DESeq2's definition), followed after ``status`` by
            ``maxCooks``, ``replaced`` and ``filtered``. ``table.attrs`` holds
            ``filterThreshold``, ``filterTheta``, ``alpha`` and ``cooksCutoff``.

        Raises
        ------
        ValueError
            If ``sort_by`` is not a column or ``n_max`` is negative.
        """
        table = DEResult.summary(self)
        n = len(self.feature_names)
        at = list(table.columns).index("status") + 1
        extra = {
            "maxCooks": self.max_cooks if self.max_cooks is not None else np.full(n, np.nan),
            "replaced": self.replaced if self.replaced is not None else np.zeros(n, bool),
            "filtered": self.filtered if self.filtered is not None else np.zeros(n, bool),
        }
        for i, (name, values) in enumerate(extra.items()):
            table.insert(at + i, name, values)
        table.attrs.update(
            {
                "filterThreshold": self.filter_threshold,
                "filterTheta": self.filter_theta,
                "alpha": self.alpha,
                "cooksCutoff": self.cooks_cutoff,
            }
        )
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

    def summary_line(self) -> str:
        """One line: features tested, and significant at ``alpha``.

        Returns
        -------
        str
            E.g. ``"2000 features, 1893 tested, 211 with padj < 0.1 (12 Cook's outliers,
            301 filtered at baseMean < 3.2)"``; with no sample in a design cell of 3 or
            more (continuous covariates), the Cook's part says the check was skipped, and
            with ``cooks_cutoff=None`` that it was turned off.
            After outlier replacement it says how many counts were replaced in how many
            features and how many features were refitted, e.g. ``"5 replaced outlier
            counts in 4 features, 4 features refit"`` (``"all 2000 features refit"`` for
            ``method="ql"``).
        """
        n_tested = int(np.isfinite(self.pval).sum())
        with np.errstate(invalid="ignore"):
            n_sig = int((self.qval < self.alpha).sum())
        parts = []
        if self.cooks_outlier is not None and self.cooks_cutoff is None:
            parts.append("Cook's check off: cooks_cutoff=None")
        elif self.cooks_outlier is not None:
            replaced_any = self.replaced is not None and bool(self.replaced.any())
            if (
                self.max_cooks is not None
                and not np.isfinite(self.max_cooks).any()
                and not replaced_any
            ):
                # DESeq2's rule: only samples whose design row (cell) has 3 or more
                # samples get a Cook's distance; with continuous covariates none may.
                parts.append("Cook's check skipped: no design cell has 3 or more samples")
            else:
                parts.append(f"{int(self.cooks_outlier.sum())} Cook's outliers")
        if self.replaced is not None and self.replaced.any():
            n_feat = len(self.feature_names)
            refit = (
                f"all {n_feat} features refit"
                if self.n_refit == n_feat
                else f"{self.n_refit} features refit"
            )
            parts.append(
                f"{self.n_counts_replaced} replaced outlier counts in "
                f"{int(self.replaced.sum())} features, {refit}"
            )
        if self.filtered is not None and np.isfinite(self.filter_threshold):
            n_filt = int((self.filtered & np.isfinite(self.pval)).sum())
            parts.append(f"{n_filt} filtered at baseMean < {self.filter_threshold:.4g}")
        more = f" ({', '.join(parts)})" if parts else ""
        return (
            f"{len(self.feature_names)} features, {n_tested} tested, {n_sig} with "
            f"padj < {self.alpha:g}{more}"
        )
