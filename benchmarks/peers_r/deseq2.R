# DESeq2 peer: the default DESeq() pipeline (gene-wise dispersions, parametric trend,
# MAP shrinkage of the dispersions, Wald-test GLM fit) with given size factors, design
# ~ condition + batch, minReplicatesForReplace = Inf (no Cook's outlier replacement, so
# the coefficients belong to the original counts, as in the PyDESeq2 run with
# refit_cooks = False).  n_cores > 1: parallel = TRUE with BiocParallel::MulticoreParam.
# Coefficients are reported by DESeq2 on the log2 scale; written here on the natural log
# scale (multiplied by log(2)).
# Usage: Rscript deseq2.R <data_dir> <n_cores>
script_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(script_dir, "common.R"))
suppressPackageStartupMessages({
  library(DESeq2)
  library(BiocParallel)
})
d <- read_bench_data()
dds <- DESeqDataSetFromMatrix(countData = d$Y, colData = d$meta, design = ~ condition + batch)
sizeFactors(dds) <- d$sf
par <- n_cores > 1L
bp <- if (par) MulticoreParam(workers = n_cores) else SerialParam()
elapsed <- system.time(
  dds <- DESeq(dds, minReplicatesForReplace = Inf, quiet = TRUE, parallel = par, BPPARAM = bp)
)[["elapsed"]]
coefs <- coef(dds) * log(2)
write_result("deseq2", coefs, model.matrix(design(dds), colData(dds)), dispersions(dds),
             list(seconds = elapsed, version = as.character(packageVersion("DESeq2")),
                  n_cores = n_cores, fit_type = "parametric",
                  n_not_converged = sum(!mcols(dds)$betaConv, na.rm = TRUE)),
             alpha_raw = mcols(dds)$dispGeneEst)
