"""Differential testing on fits: Wald and likelihood-ratio tests, location and scale.

::

    import batchglm as bg
    res = bg.fit(data, design_loc)
    de = bg.de.wald(res, coef="condition")              # or contrast=..., model="scale"
    de = bg.de.lrt(data, full_loc=x_full, reduced_loc=x_reduced)
    de = bg.de.lrt(data, full_loc=x, full_scale=z_full, reduced_scale=z_reduced)
    de = bg.de.lrt(adata, full=bg.de.Model("~ condition + batch"), reduced=bg.de.Model("~ batch"))
    de.summary()           # DataFrame indexed by feature: baseMean, log2FoldChange, lfcSE,
                           # stat, pvalue, padj, status, ... in feature order

The whole bulk pipeline (DESeq2's ``DESeq`` + ``results``: size factors, MAP
dispersions, Wald test, Cook's outliers, independent filtering) in one call::

    de = bg.de.test(adata, "~ condition", contrast=("condition", "trt", "ctrl"))

With few replicates, share information across features (DESeq2 / edgeR style)::

    de = bg.de.wald(res, coef="condition", dispersion="map", data=counts)
    de = bg.de.ql_f(res, coef="condition", data=counts)  # quasi-likelihood F test

Shrunken fold changes (apeglm's Cauchy prior, DESeq2's normal prior) and tests against
a minimum fold change (DESeq2's ``lfcThreshold``, edgeR's TREAT)::

    shrunk = bg.de.lfc_shrink(res, coef="condition[T.stim]", data=counts)
    de = bg.de.wald(res, coef="condition[T.stim]", lfc_threshold=1, dispersion="map",
                    data=counts)
    de = bg.de.ql_f(res, coef="condition[T.stim]", data=counts, lfc_threshold=1)

Contrasts can be written as users write them::

    de = bg.de.wald(res, contrast="condition[T.stim] - condition[T.ifn]")
    de = bg.de.wald(res, contrast=bg.de.cond(condition="stim") - bg.de.cond(condition="ifn"))

Results go into an AnnData's ``var`` and come back as the same table (also from
``.h5ad``; the fit itself is stored with ``res.to_anndata(adata)``)::

    de.to_anndata(adata, key_added="trt_vs_ctrl")      # var["trt_vs_ctrl_pvalue"], ...
    table = bg.de.read_results(adata, "trt_vs_ctrl")

Separated features (a group with only zeros) and designs without residual degrees of
freedom are handled as described in ``docs/inference.md``.
"""

from __future__ import annotations

from batchglm.de.anndata_results import read_results
from batchglm.de.contrasts import Cond, cond
from batchglm.de.degrees_of_freedom import SmallSampleWarning, check_residual_df
from batchglm.de.lfc_shrink import ShrunkenLFC, lfc_shrink
from batchglm.de.lrt import lrt
from batchglm.de.model_spec import Model
from batchglm.de.multiple_testing import bh_qvalues
from batchglm.de.pipeline import PipelineResult, test
from batchglm.de.pseudoreplication import CrossedGroupingWarning
from batchglm.de.ql import ql_f
from batchglm.de.result import DEResult
from batchglm.de.table import DETable
from batchglm.de.wald import wald
from batchglm.nested_designs import check_nested

__all__ = [
    "Cond",
    "CrossedGroupingWarning",
    "DEResult",
    "DETable",
    "Model",
    "PipelineResult",
    "ShrunkenLFC",
    "SmallSampleWarning",
    "bh_qvalues",
    "check_nested",
    "check_residual_df",
    "cond",
    "lfc_shrink",
    "lrt",
    "ql_f",
    "read_results",
    "test",
    "wald",
]
