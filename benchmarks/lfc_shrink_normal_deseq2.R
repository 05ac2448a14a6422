# DESeq2 lfcShrink(type = "normal") on the data of benchmarks/threshold_deseq2.R, for the
# comparison in tests/test_lfc_shrink.py and docs/inference.md (same prior and lfcSE as
# DESeq2 for this ~ condition design; our MAP dispersions differ slightly from DESeq2's,
# so agreement is close, not exact).
# Run from the repository root after threshold_deseq2.R:
#   Rscript benchmarks/lfc_shrink_normal_deseq2.R
suppressPackageStartupMessages(library(DESeq2))
table <- read.csv("tests/data/threshold_counts.csv", row.names = 1, check.names = FALSE)
sf <- unlist(table["sizeFactor", ])
counts <- as.matrix(table[rownames(table) != "sizeFactor", ])
condition <- factor(rep(c("A", "B"), each = 4))
dds <- DESeqDataSetFromMatrix(round(counts), data.frame(condition = condition), ~condition)
sizeFactors(dds) <- sf
dds <- DESeq(dds, quiet = TRUE, minReplicatesForReplace = Inf)
shr <- lfcShrink(dds, coef = "condition_B_vs_A", type = "normal", quiet = TRUE)
write.csv(data.frame(gene = rownames(shr), log2FoldChange = shr$log2FoldChange,
                     lfcSE = shr$lfcSE),
          "tests/data/lfc_normal_deseq2.csv", row.names = FALSE)
