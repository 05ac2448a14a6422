"""batchglm as a pertpy differential-expression backend.

:class:`BatchglmDE` implements pertpy's ``LinearModelBase`` interface (the one its
``PyDESeq2``, ``EdgeR`` and ``Statsmodels`` backends share: ``fit``, ``test_contrasts``,
``compare_groups``, ``test_reduced``, ``contrast`` and ``cond``) on top of :func:`batchglm.fit`,
:func:`batchglm.de.wald` and :func:`batchglm.de.lrt`::

    from batchglm.integrations.pertpy import BatchglmDE

    model = BatchglmDE(pdata, design="~ condition + donor", layer="counts")
    model.fit()                                   # NB GLM per gene, median-ratio size factors
    res = model.test_contrasts(model.contrast("condition", "ctrl", "stim"))
    res = BatchglmDE.compare_groups(pdata, "condition", "ctrl", ["stim", "ifn"])

Results are pertpy's tables: one row per gene with ``variable``, ``log_fc`` (log2),
``p_value`` and ``adj_p_value`` (Benjamini-Hochberg), sorted by ``p_value``, plus DESeq2's
``baseMean``, ``lfcSE`` and ``stat`` and batchglm's per-gene fit ``status``.

Importing this module imports pertpy (its ``tools`` subpackage, which takes a few seconds);
``pip install "batchglm[pertpy]"`` installs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

import batchglm as bg
from batchglm.formula import drop_unused_levels

try:
    import formulaic_contrasts  # noqa: F401  (LinearModelBase builds its contrasts with it)
    from pertpy.tools._differential_gene_expression import LinearModelBase
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "batchglm.integrations.pertpy needs pertpy>=1.0.3 with its differential-expression "
        f"extra, which failed to import ({err}); install them with "
        '`pip install "batchglm[pertpy]"`.'
    ) from err

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.de.result import DEResult
    from batchglm.result import FitResult

__all__ = ["BatchglmDE", "NotFittedError"]

#: Columns of every result table, in order (pertpy's names, then DESeq2's).
RESULT_COLUMNS = (
    "variable",
    "baseMean",
    "log_fc",
    "lfcSE",
    "stat",
    "p_value",
    "adj_p_value",
    "status",
)


class NotFittedError(ValueError, AttributeError):
    """A test was asked of a :class:`BatchglmDE` model before its ``fit()``."""


class BatchglmDE(LinearModelBase):
    """Negative binomial GLMs per gene by batchglm, behind pertpy's ``LinearModelBase``.

    Parameters
    ----------
    adata : AnnData
        Counts ``(n_obs, n_genes)``, usually pseudobulked (``pt.tl.PseudobulkSpace``,
        :func:`batchglm.pseudobulk`); dense or scipy sparse, never densified.
    design : str or array_like
        A formula on ``adata.obs`` such as ``"~ condition + donor"`` (evaluated by formulaic
        through pertpy's ``formulaic_contrasts``; then ``contrast`` and ``cond`` build
        contrast vectors), or a design matrix ``(n_obs, p)``. Categories of ``adata.obs``
        columns that no observation has (left over after subsetting) are dropped from the
        formula's design, as :func:`batchglm.fit` does, with an
        :class:`batchglm.formula.AnnotationWarning`; ``adata`` itself is not changed.
    mask : str, optional
        A boolean column of ``adata.var``: only these genes are fitted and tested.
    layer : str, optional
        Layer with the raw counts; ``None`` uses ``adata.X``.
    **kwargs
        Accepted for pertpy's interface and ignored; fitting options go to :meth:`fit`.

    Raises
    ------
    ValueError
        If the counts are not non-negative integers (pertpy's own check raises for
        non-numeric or non-finite values first).

    Warns
    -----
    batchglm.formula.AnnotationWarning
        Once per ``adata.obs`` column of the formula with unused categories, naming them
        and ``remove_unused_categories()``.

    Notes
    -----
    The model is batchglm's NB GLM: ``log E[y_ig] = log s_i + x_i . a_g`` with a dispersion
    per gene, fitted by exact maximum likelihood (:func:`batchglm.fit`). Size factors are
    DESeq2's median-of-ratios by default, as pertpy's ``PyDESeq2`` backend uses.

    Tests default to ``dispersion="map"``: Wald tests at DESeq2's shrunken (maximum a
    posteriori) dispersions, which stay calibrated down to 3 vs 3 samples, as pseudobulk
    data often are. ``dispersion="mle"`` tests each gene at its own maximum-likelihood
    dispersion (as pertpy's ``Statsmodels`` backend with ``sm.NegativeBinomial``), which
    is anti-conservative with few samples; ``"ql"`` uses edgeR's quasi-likelihood F test.
    A model fitted with ``random_effects`` (``fit(random_effects="donor")``, a mixed model,
    see ``docs/mixed_model.md``) is tested with ``dispersion="mle"`` and the mixed fit's
    small-sample reference; ``"map"`` and ``"ql"`` are refused for it.
    Unlike pertpy's ``PyDESeq2`` backend, no Cook's distance filtering or independent
    filtering is applied (use :func:`batchglm.de.test` for DESeq2's whole pipeline).

    ``log_fc`` is log2, as in the ``PyDESeq2`` and ``EdgeR`` backends (the ``Statsmodels``
    backend reports its coefficients unscaled: natural log for count GLMs). ``baseMean``
    is batchglm's: the mean fitted mean at size factor 1 (see
    :meth:`batchglm.de.result.DEResult.summary`), not DESeq2's mean of normalised counts.
    """

    def __init__(
        self,
        adata: AnnData,
        design: str | Any,
        *,
        mask: str | None = None,
        layer: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(adata, design, mask=mask, layer=layer, **kwargs)
        self._fit: FitResult | None = None
        if isinstance(design, str):
            # As bg.fit: levels no observation has (common after subsetting an AnnData)
            # would give all-zero design columns; drop them with an AnnotationWarning and
            # rebuild the design and contrasts without them (`adata` is left unchanged).
            obs = drop_unused_levels(design, self.adata.obs, "design")
            if obs is not self.adata.obs:
                from formulaic_contrasts import FormulaicContrasts

                self.formulaic_contrasts = FormulaicContrasts(obs, design)
                self.design = self.formulaic_contrasts.design_matrix

    def _check_counts(self) -> None:
        """Require non-negative integer counts, as the NB model does.

        Raises
        ------
        ValueError
            If the data matrix has negative or non-integer values.
        """
        where = "`adata.X`" if self.layer is None else f"`adata.layers[{self.layer!r}]`"
        values = self.data.data if sparse.issparse(self.data) else np.asarray(self.data)
        for bad, what in (
            (values < 0, "negative"),
            (values != np.floor(values), "non-integer"),
        ):
            if bad.any():
                raise ValueError(
                    f"{where} must hold non-negative integer counts for batchglm's negative "
                    f"binomial model, but it has {int(bad.sum())} {what} values (the first: "
                    f"{values[bad].flat[0]!r}); pass raw counts, not normalised values."
                )

    @property
    def fit_result(self) -> FitResult:
        """The batchglm fit (:class:`batchglm.FitResult`) made by :meth:`fit`.

        For fitted means, residuals, predictions and VST: ``model.fit_result.residuals(...)``.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        if self._fit is None:
            raise NotFittedError(
                "this BatchglmDE model has not been fitted yet; call `.fit()` before testing."
            )
        return self._fit

    def fit(
        self,
        size_factors: Any = "median_ratio",
        design_scale: Any = None,
        **kwargs: Any,
    ) -> None:
        """Fit the NB GLM of every gene (:func:`batchglm.fit`).

        Parameters
        ----------
        size_factors : str, array_like or None
            ``"median_ratio"`` (DESeq2's, the default, as pertpy's ``PyDESeq2`` backend),
            ``"poscounts"`` (for genes that all have zeros, as single cells do), ``"tmm"``
            (edgeR's, as pertpy's ``EdgeR`` backend), ``"normed_sum"``, one factor per
            observation, or ``None`` (no offset, as pertpy's ``Statsmodels`` backend).
            See :func:`batchglm.size_factors`.
        design_scale : str or array_like, optional
            Dispersion design (formula on ``adata.obs`` or matrix); ``None`` is one
            dispersion per gene. Tests with ``dispersion="map"`` or ``"ql"`` need ``None``.
        **kwargs
            Further arguments of :func:`batchglm.fit` (``constraints_loc``,
            ``random_effects``, ``n_jobs``, ``max_iter``, ``tol``, ...).

        Raises
        ------
        ValueError
            If the design does not have one row per observation (formulaic dropped
            observations with missing values); from :func:`batchglm.fit`, for example for a
            rank-deficient design, or size factors the counts cannot give
            (``"median_ratio"`` when every gene has a zero).
        """
        design = self.design
        n_rows, n_obs = np.shape(design)[0], self.adata.n_obs
        if n_rows != n_obs:
            raise ValueError(
                f"the design has {n_rows} rows but `adata` has {n_obs} observations; they "
                "must match (formulaic drops observations with missing values in the "
                "formula's columns: remove those observations from `adata` first)."
            )
        if isinstance(design, pd.DataFrame):
            # formulaic's ModelMatrix, as a plain frame whose columns name the coefficients
            design = pd.DataFrame(
                np.asarray(design, dtype=np.float64),
                index=self.adata.obs_names,
                columns=design.columns,
            )
        self._fit = bg.fit(
            self.adata,
            design,
            design_scale,
            layer=self.layer,
            size_factors=size_factors,
            **kwargs,
        )

    def _test_single_contrast(
        self,
        contrast: Any,
        *,
        dispersion: str | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Wald test of one contrast per gene (:func:`batchglm.de.wald`).

        Parameters
        ----------
        contrast : array_like, pandas.Series, str or sequence of 3 str
            Weights over the design's coefficients, as ``contrast`` and ``cond`` build them
            (a vector ``(p,)``; a matrix ``(k, p)`` tests its rows jointly), anything
            :func:`batchglm.de.wald` takes as ``contrast`` (a string expression over
            coefficient names), or ``[column, group_to_compare, baseline]`` (the older
            pertpy form for ``PyDESeq2``).
        dispersion : {"map", "mle", "ql"}, optional
            See the class notes. ``None`` (default): ``"map"``, or ``"mle"`` for a fit with
            ``random_effects`` (the only setting a mixed fit is tested with).
        **kwargs
            Further arguments of :func:`batchglm.de.wald` (``lfc_threshold``,
            ``alt_hypothesis``, ``trend``, ``max_lfc``).

        Returns
        -------
        pandas.DataFrame
            One row per gene, :data:`RESULT_COLUMNS`, sorted by ``p_value`` (``NaN`` last).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ValueError
            From :func:`batchglm.de.wald`, for a malformed contrast.
        """
        contrast = self._as_contrast(contrast)
        disp = self._dispersion(dispersion)
        de = bg.de.wald(self.fit_result, contrast=contrast, dispersion=disp, **kwargs)
        return _pertpy_table(de)

    def _dispersion(self, dispersion: str | None) -> str:
        if dispersion is not None:
            return dispersion
        return "mle" if self.fit_result.random is not None else "map"

    def _as_contrast(self, contrast: Any) -> Any:
        if (
            isinstance(contrast, Sequence)
            and not isinstance(contrast, str)
            and len(contrast) == 3
            and all(isinstance(c, str) for c in contrast)
        ):
            column, group, baseline = contrast
            return self.contrast(column=column, baseline=baseline, group_to_compare=group)
        return contrast

    def test_reduced(
        self,
        modelB: BatchglmDE,  # noqa: N803 (pertpy's name)
        *,
        dispersion: str | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Likelihood-ratio test of this (full) model against a reduced one, per gene.

        Parameters
        ----------
        modelB : BatchglmDE
            The reduced model, fitted on the same ``adata`` (same genes, observations and
            size factors); its design must be nested in this model's.
        dispersion : {"map", "mle", "ql"}, optional
            ``None`` (default): ``"map"``, or ``"mle"`` for fits with ``random_effects``.
            ``"map"``: both models at DESeq2's shrunken dispersions of this model, as
            DESeq2's ``nbinomLRT``; ``"mle"``: each model with its own ML dispersions;
            ``"ql"``: edgeR's quasi-likelihood F test.
        **kwargs
            Further arguments of :func:`batchglm.de.lrt` (``coef``, ``trend``).

        Returns
        -------
        pandas.DataFrame
            One row per gene, :data:`RESULT_COLUMNS`, sorted by ``p_value``. ``stat`` is the
            likelihood-ratio (or F) statistic; ``log_fc`` is the log2 fold change of the
            one coefficient the reduced model drops (``NaN`` when it drops several).

        Raises
        ------
        TypeError
            If ``modelB`` is not a :class:`BatchglmDE` model.
        NotFittedError
            If either model has not been fitted.
        ValueError
            From :func:`batchglm.de.lrt`: models that are not nested or not fitted on the
            same data.
        """
        if not isinstance(modelB, BatchglmDE):
            raise TypeError(
                "`modelB` must be a fitted BatchglmDE model of the same data, but a "
                f"{type(modelB).__name__} was given."
            )
        de = bg.de.lrt(
            full=self.fit_result,
            reduced=modelB.fit_result,
            dispersion=self._dispersion(dispersion),
            **kwargs,
        )
        return _pertpy_table(de)


def _pertpy_table(de: DEResult) -> pd.DataFrame:
    """Turn a batchglm result into pertpy's table, sorted by ``p_value``."""
    table = de.summary()
    out = pd.DataFrame(
        {
            "variable": table.index.to_numpy(),
            "baseMean": table["baseMean"].to_numpy(),
            "log_fc": table["log2FoldChange"].to_numpy(),
            "lfcSE": table["lfcSE"].to_numpy(),
            "stat": table["stat"].to_numpy(),
            "p_value": table["pvalue"].to_numpy(),
            "adj_p_value": table["padj"].to_numpy(),
            "status": table["status"].to_numpy(),
        },
        columns=list(RESULT_COLUMNS),
    )
    return out.sort_values("p_value", kind="stable", na_position="last").reset_index(drop=True)
