# Reference for tests/test_threshold.py: DESeq2 results() with lfcThreshold and each
# altHypothesis on a small simulated NB data set (4 vs 4 samples, 120 genes).
# Run from the repository root:  Rscript benchmarks/threshold_deseq2.R
# Writes tests/data/threshold_counts.csv (genes x samples, with size factors in the last
# row "sizeFactor") and tests/data/threshold_deseq2.csv (one row per gene and hypothesis).
suppressPackageStartupMessages(library(DESeq2))
set.seed(20261130)
n_genes <- 120
condition <- factor(rep(c("A", "B"), each = 4))
sf <- c(0.8, 1.1, 1.0, 1.25, 0.9, 1.2, 0.85, 1.05)
base <- rgamma(n_genes, shape = 1.2, scale = 60) + 2
lfc <- c(rep(0, 40), rnorm(40, 0, 0.6), sample(c(-1, 1), 40, TRUE) * runif(40, 1, 3))
disp <- 0.04 + 1.5 / base
mu <- outer(base, sf) * exp(outer(lfc * log(2), as.numeric(condition == "B")))
counts <- matrix(rnbinom(length(mu), mu = mu, size = 1 / disp), nrow = n_genes)
rownames(counts) <- sprintf("g%03d", seq_len(n_genes))
colnames(counts) <- sprintf("s%d", 1:8)
dds <- DESeqDataSetFromMatrix(counts, data.frame(condition = condition), design = ~condition)
sizeFactors(dds) <- sf
dds <- DESeq(dds, quiet = TRUE, minReplicatesForReplace = Inf)
out <- list()
plain <- results(dds, name = "condition_B_vs_A", cooksCutoff = FALSE,
                 independentFiltering = FALSE)
out[["none"]] <- data.frame(gene = rownames(plain), alt = "none", lfcThreshold = 0,
                            log2FoldChange = plain$log2FoldChange, lfcSE = plain$lfcSE,
                            stat = plain$stat, pvalue = plain$pvalue,
                            dispersion = dispersions(dds))
for (alt in c("greaterAbs", "lessAbs", "greater", "less")) {
  r <- results(dds, name = "condition_B_vs_A", lfcThreshold = 1, altHypothesis = alt,
               cooksCutoff = FALSE, independentFiltering = FALSE)
  out[[alt]] <- data.frame(gene = rownames(r), alt = alt, lfcThreshold = 1,
                           log2FoldChange = r$log2FoldChange, lfcSE = r$lfcSE,
                           stat = r$stat, pvalue = r$pvalue, dispersion = dispersions(dds))
}
write.csv(rbind(counts, sizeFactor = sf), "tests/data/threshold_counts.csv")
write.csv(do.call(rbind, out), "tests/data/threshold_deseq2.csv", row.names = FALSE)
cat(sessionInfo()$otherPkgs$DESeq2$Version, "\n")
