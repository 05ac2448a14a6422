"""batchglm's dispersions on the Marioni and Sultan tables, as inputs of the R references.

``benchmarks/ql_reference.R`` reruns edgeR's QL fit at our trended NB dispersions and
DESeq2's trend, MAP and Wald test from our gene-wise dispersions, so that the comparisons
in ``tests/test_ql_reference.py`` and ``tests/test_deseq2_reference.py`` isolate the step
under test. Run this first::

    PYTHONPATH=src python benchmarks/ql_reference_inputs.py        # writes tests/data/
    Rscript benchmarks/ql_reference.R

Writes ``tests/data/deseq2_<name>_batchglm_dispersions.csv.gz`` (gene, sizeFactor (TMM effective
library sizes, geometric mean 1; first rows, one per sample), ``dispGeneEst`` (Cox-Reid
gene-wise, median-ratio size factors as DESeq2), ``dispTrendTMM`` (our parametric trend
at TMM size factors, used by ``method="ql"``)).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

import batchglm as bg
from batchglm.dispersion.estimate import estimate_dispersions

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SETS = {"marioni": ("tissue", "Kidney", "Liver"), "sultan": ("cell", "HEK293T", "Ramos")}


def main(outdir: Path) -> None:
    """Write one table per data set."""
    for name, (factor, ref_level, level) in SETS.items():
        counts = pd.read_csv(DATA / f"deseq2_{name}_counts.csv.gz", index_col=0).T
        coldata = pd.read_csv(DATA / f"deseq2_{name}_coldata.csv", index_col=0)
        coldata[factor] = pd.Categorical(coldata[factor], categories=[ref_level, level])
        res = bg.fit(counts, f"~ {factor}", obs=coldata, size_factors="median_ratio")
        genewise = estimate_dispersions(counts, res).genewise
        res_tmm = bg.fit(counts, f"~ {factor}", obs=coldata, size_factors="tmm")
        trend_tmm = estimate_dispersions(counts, res_tmm).trend
        sf = np.full(counts.shape[1], np.nan)
        sf[: counts.shape[0]] = res_tmm.size_factors
        out = pd.DataFrame(
            {
                "sizeFactor": sf,
                "dispGeneEst": genewise,
                "dispTrendTMM": trend_tmm,
            },
            index=pd.Index(counts.columns, name="gene"),
        )
        out.to_csv(outdir / f"deseq2_{name}_batchglm_dispersions.csv.gz", float_format="%.9g")
        print(name, out.shape)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
