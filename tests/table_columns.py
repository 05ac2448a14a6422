"""The leading columns of every results table, in DESeq2's ``results()`` order.

Shared by the tests that pin a table's layout (``bg.de`` summaries, the pipeline, the CLI
and ``bg.tl``); each adds the columns of its own table around them.
"""

from __future__ import annotations

RESULTS_COLUMNS = ("baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj", "status")
