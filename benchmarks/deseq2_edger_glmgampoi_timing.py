"""End-to-end times of batchglm's bulk pipeline next to DESeq2, edgeR and glmGamPoi.

On the same counts, in one run, median of ``--repeats`` runs each (package loading
excluded): batchglm's plain NB fit (``bg.fit``, median-ratio size factors, per-feature
dispersions), ``bg.de.test(method="wald")`` (MAP dispersions, Cook's, filtering) and
``bg.de.test(method="ql")``; DESeq2 ``DESeq()`` + ``results()``; edgeR
``calcNormFactors`` + ``estimateDisp`` + ``glmQLFit`` + ``glmQLFTest``; glmGamPoi
``glm_gp`` + ``test_de``. Data: the Marioni and Sultan tables of ``tests/data/deseq2_*``
and a simulated table of ``--n-genes`` x ``--n-samples`` (default 10,000 x 85: two groups,
a four-level batch, NB counts with log-normal means and DESeq2-like dispersions
``0.05 + 1 / mean``, size factors log-normal with sd 0.3, 10 % of genes changed)::

    PYTHONPATH=src python benchmarks/deseq2_edger_glmgampoi_timing.py [--repeats 3]

Prints a Markdown table: seconds, and each time over the plain fit's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

import batchglm as bg

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SETS = {"marioni": ("tissue", "Kidney", "Liver"), "sultan": ("cell", "HEK293T", "Ramos")}

R_TIMING = """
suppressPackageStartupMessages({{library(DESeq2); library(edgeR); library(glmGamPoi)}})
counts <- as.matrix(read.csv("{counts}", row.names = 1, check.names = FALSE))
storage.mode(counts) <- "integer"
coldata <- read.csv("{coldata}", row.names = 1, stringsAsFactors = TRUE)
coldata${factor} <- factor(coldata${factor}, c("{ref}", "{level}"))
form <- as.formula("{formula}")
design <- model.matrix(form, coldata)
coef <- paste0("{factor}", "{level}")
tm <- function(run) median(replicate({repeats}, system.time(suppressMessages(run()))[["elapsed"]]))
deseq2 <- function() {{
  d <- DESeq(DESeqDataSetFromMatrix(counts, coldata, form), quiet = TRUE)
  results(d, contrast = c("{factor}", "{level}", "{ref}"))
}}
edger <- function() {{
  y <- estimateDisp(calcNormFactors(DGEList(counts)), design)
  glmQLFTest(glmQLFit(y, design), coef = coef)
}}
gp <- function() {{
  sf <- estimateSizeFactorsForMatrix(counts)  # DESeq2's, as bg.de.test's default
  test_de(glm_gp(counts, design = design, size_factors = sf), contrast = coef)
}}
cat("DESeq2", tm(deseq2), "\\n")
cat("edgeR", tm(edger), "\\n")
cat("glmGamPoi", tm(gp), "\\n")
"""


def simulate(n_genes: int, n_samples: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NB counts ``(n_samples, n_genes)`` with a condition and a batch, and their obs."""
    rng = np.random.default_rng(seed)
    cond = np.where(np.arange(n_samples) % 2 == 0, "ctrl", "trt")
    batch = np.array([f"b{i % 4}" for i in range(n_samples // 2) for _ in range(2)])
    batch = np.resize(batch, n_samples)
    obs = pd.DataFrame(
        {"condition": cond, "batch": batch}, index=[f"s{i}" for i in range(n_samples)]
    )
    mean = np.exp(rng.normal(3.0, 2.0, n_genes))
    lfc = np.where(rng.uniform(size=n_genes) < 0.1, rng.normal(0, 1.0, n_genes), 0.0)
    batch_eff = rng.normal(0, 0.3, (4, n_genes))
    sf = np.exp(rng.normal(0, 0.3, n_samples))
    b_idx = np.array([int(b[1]) for b in batch])
    log_mu = (
        np.log(sf)[:, None]
        + np.log(mean)[None, :]
        + (cond == "trt")[:, None] * lfc[None, :]
        + batch_eff[b_idx]
    )
    mu = np.exp(log_mu)
    alpha = 0.05 + 1.0 / mean
    y = rng.negative_binomial(1.0 / alpha[None, :], 1.0 / (1.0 + alpha[None, :] * mu))
    counts = pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(n_genes)])
    counts = counts.loc[:, counts.sum(axis=0) > 0]
    return counts, obs


def _median_time(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _time_r(
    counts: pd.DataFrame,
    obs: pd.DataFrame,
    formula: str,
    factor: str,
    ref: str,
    level: str,
    repeats: int,
) -> dict[str, float]:
    if shutil.which("Rscript") is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        cpath, opath = Path(tmp) / "counts.csv", Path(tmp) / "obs.csv"
        counts.T.to_csv(cpath)
        obs.to_csv(opath)
        script = R_TIMING.format(
            counts=cpath,
            coldata=opath,
            factor=factor,
            ref=ref,
            level=level,
            formula=formula,
            repeats=repeats,
        )
        done = subprocess.run(
            ["Rscript", "-e", script], capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        print(done.stderr[-2000:])
    out = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = float(parts[1])
    return out


def _row(
    name: str,
    counts: pd.DataFrame,
    obs: pd.DataFrame,
    formula: str,
    factor: str,
    ref: str,
    level: str,
    repeats: int,
    only_r: bool = False,
) -> str:
    coef = f"{factor}[T.{level}]"
    if only_r:
        r = _time_r(counts, obs, formula, factor, ref, level, repeats)
        return f"| {name} | " + " | ".join(f"{k} {v:.2f}" for k, v in r.items()) + " |"
    plain = _median_time(
        lambda: bg.fit(counts, formula, obs=obs, size_factors="median_ratio", progress=False),
        repeats,
    )
    wald = _median_time(
        lambda: bg.de.test(counts, formula, obs=obs, coef=coef, progress=False).summary(),
        repeats,
    )
    ql = _median_time(
        lambda: bg.de.test(
            counts, formula, obs=obs, coef=coef, method="ql", progress=False
        ).summary(),
        repeats,
    )
    r = _time_r(counts, obs, formula, factor, ref, level, repeats)
    cells = [f"{plain:.2f}", f"{wald:.2f} ({wald / plain:.1f}x)", f"{ql:.2f} ({ql / plain:.1f}x)"]
    for tool in ("DESeq2", "edgeR", "glmGamPoi"):
        t = r.get(tool)
        cells.append("n/a" if t is None else f"{t:.2f} ({t / plain:.1f}x)")
    shape = f"{counts.shape[1]} x {counts.shape[0]}"
    return f"| {name} ({shape}) | " + " | ".join(cells) + " |"


def main() -> None:
    """Time every tool on every data set and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-genes", type=int, default=10_000)
    parser.add_argument("--n-samples", type=int, default=85)
    parser.add_argument("--skip-real", action="store_true", help="only the simulated table")
    parser.add_argument("--only-r", action="store_true", help="time the R tools only")
    args = parser.parse_args()
    print(
        "| data (genes x samples) | bg.fit s | de.test wald s | de.test ql s | DESeq2 s "
        "| edgeR QL s | glmGamPoi s |"
    )
    print("|---|---|---|---|---|---|---|")
    counts, obs = simulate(args.n_genes, args.n_samples)
    print(
        _row(
            "simulated",
            counts,
            obs,
            "~ batch + condition",
            "condition",
            "ctrl",
            "trt",
            args.repeats,
            args.only_r,
        ),
        flush=True,
    )
    if args.skip_real:
        return
    for name, (factor, ref, level) in SETS.items():
        counts = pd.read_csv(DATA / f"deseq2_{name}_counts.csv.gz", index_col=0).T
        obs = pd.read_csv(DATA / f"deseq2_{name}_coldata.csv", index_col=0)
        obs[factor] = pd.Categorical(obs[factor], categories=[ref, level])
        print(
            _row(name, counts, obs, f"~ {factor}", factor, ref, level, args.repeats, args.only_r),
            flush=True,
        )


if __name__ == "__main__":
    main()
