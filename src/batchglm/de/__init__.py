"""Differential testing on fits: Wald and likelihood-ratio tests, location and scale.

::

    import batchglm as bg
    res = bg.fit(data, design_loc)
    de = bg.de.wald(res, coef="condition")              # or contrast=..., model="scale"
    de = bg.de.lrt(data, full_loc=x_full, reduced_loc=x_reduced)
    de = bg.de.lrt(data, full_loc=x, full_scale=z_full, reduced_scale=z_reduced)
    de.summary()           # DataFrame indexed by feature: baseMean, log2FoldChange, lfcSE,
                           # stat, pvalue, padj, status, ... sorted by pvalue

With few replicates, share information across features (DESeq2 / edgeR style)::

    de = bg.de.wald(res, coef="condition", dispersion="map", data=counts)
    de = bg.de.ql_f(res, coef="condition", data=counts)  # quasi-likelihood F test

Contrasts can be written as users write them::

    de = bg.de.wald(res, contrast="condition[T.stim] - condition[T.ifn]")
    de = bg.de.wald(res, contrast=bg.de.cond(condition="stim") - bg.de.cond(condition="ifn"))

Separated features (a group with only zeros) and designs without residual degrees of
freedom are handled as described in ``docs/inference.md``.
"""

from __future__ import annotations

from batchglm.de.contrasts import Cond, cond
from batchglm.de.degrees_of_freedom import SmallSampleWarning, check_residual_df
from batchglm.de.lrt import lrt
from batchglm.de.multiple_testing import bh_qvalues
from batchglm.de.nested import check_nested
from batchglm.de.ql import ql_f
from batchglm.de.result import DEResult
from batchglm.de.table import DETable
from batchglm.de.wald import wald

__all__ = [
    "Cond", "DEResult", "DETable", "SmallSampleWarning", "bh_qvalues", "check_nested",
    "check_residual_df", "cond", "lrt", "ql_f", "wald",
]
