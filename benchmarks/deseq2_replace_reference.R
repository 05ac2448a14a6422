# DESeq2's outlier replacement (>= 7 replicates per group) on a simulated table, for
# tests/test_cooks_refit.py (which needs no R).
#
#   Rscript benchmarks/deseq2_replace_reference.R [DATADIR]      # default DATADIR: tests/data
#
# 8 vs 8 samples, 1000 genes with means 30..3000 and dispersions 0.05 + 2/mean, a 2-fold
# change in a quarter of the genes; 15 genes get one count multiplied by 40 (one sample
# each), which DESeq2 replaces by the trimmed mean and refits (refitWithoutOutliers: only
# those genes, at the dispersion trend and prior variance of the first pass).
# Writes
#   deseq2_replace_counts.csv  counts, genes in rows, samples s1..s16 in columns;
#   deseq2_replace.csv         per gene: baseMean, log2FoldChange, lfcSE, stat, pvalue of
#                              DESeq() + results() with default Cook's handling (the
#                              refitted genes' values come from the replaced counts),
#                              replace (whether the gene was refitted), dispGeneEst, dispFit,
#                              dispersion (MAP) as DESeq2 stores them, and in the first rows
#                              the size factors, the prior variance (dispPriorVar) and the
#                              parametric trend's coefficients asymptDisp, extraPois.
suppressPackageStartupMessages(library(DESeq2))
args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args) >= 1) args[1] else "tests/data"
set.seed(20261201)
n_genes <- 1000
n_per <- 8
condition <- factor(rep(c("ctrl", "trt"), each = n_per))
sf <- exp(rnorm(2 * n_per, 0, 0.2))
base <- exp(runif(n_genes, log(30), log(3000)))
lfc <- ifelse(seq_len(n_genes) %% 4 == 0, 1, 0)
disp <- 0.05 + 2 / base
mu <- outer(base, sf) * 2^(outer(lfc, as.numeric(condition == "trt")))
counts <- matrix(rnbinom(length(mu), mu = mu, size = 1 / disp), nrow = n_genes)
hit <- sample(n_genes, 15)
for (g in hit) {
  s <- sample(2 * n_per, 1)
  counts[g, s] <- 40L * max(counts[g, ]) + 100L
}
dimnames(counts) <- list(sprintf("gene%03d", seq_len(n_genes)), sprintf("s%d", seq_len(2 * n_per)))
coldata <- data.frame(condition = condition, row.names = colnames(counts))
dds <- DESeqDataSetFromMatrix(counts, coldata, ~condition)
dds <- DESeq(dds, quiet = TRUE)
res <- results(dds, name = "condition_trt_vs_ctrl")
mc <- mcols(dds)
fn <- dispersionFunction(dds)
coefs <- attr(fn, "coefficients")
out <- data.frame(
  gene = rownames(res), baseMean = res$baseMean, log2FoldChange = res$log2FoldChange,
  lfcSE = res$lfcSE, stat = res$stat, pvalue = res$pvalue,
  replace = mc$replace, dispGeneEst = mc$dispGeneEst, dispFit = mc$dispFit,
  dispersion = mc$dispersion, sizeFactor = NA_real_, dispPriorVar = NA_real_,
  asymptDisp = NA_real_, extraPois = NA_real_
)
out$sizeFactor[seq_len(ncol(counts))] <- sizeFactors(dds)
out$dispPriorVar[1] <- attr(fn, "dispPriorVar")
out$asymptDisp[1] <- coefs[["asymptDisp"]]
out$extraPois[1] <- coefs[["extraPois"]]
num <- vapply(out, is.double, logical(1))
out[num] <- lapply(out[num], signif, digits = 10)
write.csv(counts, file.path(dir, "deseq2_replace_counts.csv"))
write.csv(out, file.path(dir, "deseq2_replace.csv"), row.names = FALSE)
cat("DESeq2", format(packageVersion("DESeq2")), ": refitted genes", sum(mc$replace, na.rm = TRUE),
    "; prior variance", attr(fn, "dispPriorVar"), "\n")
