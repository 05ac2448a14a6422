"""End-to-end time of ``bg.de.test(..., dispersion="map")`` against DESeq2 on the same data.

Uses the real count tables of ``tests/data/deseq2_*`` (see ``benchmarks/deseq2_reference.R``)
and times, median of ``--repeats`` runs each, batchglm's pipeline and, when ``Rscript``
with DESeq2 is available, ``DESeq()`` + ``results()`` on the same counts in one R session
(package loading excluded from both)::

    PYTHONPATH=src python benchmarks/deseq2_timing.py [--repeats 3]

Prints one line per data set: seconds for each and the ratio DESeq2 / batchglm.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import pandas as pd

import batchglm as bg

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SETS = {"marioni": ("tissue", "Kidney", "Liver"), "sultan": ("cell", "HEK293T", "Ramos")}

R_TIMING = """
suppressPackageStartupMessages(library(DESeq2))
counts <- as.matrix(read.csv(gzfile("{counts}"), row.names = 1, check.names = FALSE))
coldata <- read.csv("{coldata}", row.names = 1)
coldata${factor} <- factor(coldata${factor}, c("{ref}", "{level}"))
dds <- DESeqDataSetFromMatrix(counts, coldata, ~ {factor})
times <- replicate({repeats}, system.time(suppressMessages({{
  d <- DESeq(dds, quiet = TRUE); r <- results(d, contrast = c("{factor}", "{level}", "{ref}"))
}}))[["elapsed"]])
cat(median(times), "\\n")
"""


def _time_batchglm(name: str, repeats: int) -> float:
    factor, ref, level = SETS[name]
    counts = pd.read_csv(DATA / f"deseq2_{name}_counts.csv.gz", index_col=0).T
    coldata = pd.read_csv(DATA / f"deseq2_{name}_coldata.csv", index_col=0)
    coldata[factor] = pd.Categorical(coldata[factor], categories=[ref, level])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        bg.de.test(
            counts, f"~ {factor}", obs=coldata, coef=f"{factor}[T.{level}]", dispersion="map"
        ).summary()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _time_deseq2(name: str, repeats: int) -> float | None:
    if shutil.which("Rscript") is None:
        return None
    factor, ref, level = SETS[name]
    script = R_TIMING.format(
        counts=DATA / f"deseq2_{name}_counts.csv.gz",
        coldata=DATA / f"deseq2_{name}_coldata.csv",
        factor=factor,
        ref=ref,
        level=level,
        repeats=repeats,
    )
    done = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    return float(done.stdout.split()[-1])


def main() -> None:
    """Time both tools on each data set and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name in SETS:
        ours = _time_batchglm(name, args.repeats)
        theirs = _time_deseq2(name, args.repeats)
        ratio = f"{theirs / ours:.2f}" if theirs is not None else "n/a"
        deseq2 = f"{theirs:.2f} s" if theirs is not None else "n/a (no Rscript/DESeq2)"
        print(f"{name}: batchglm {ours:.2f} s, DESeq2 {deseq2}, DESeq2/batchglm {ratio}")


if __name__ == "__main__":
    main()
