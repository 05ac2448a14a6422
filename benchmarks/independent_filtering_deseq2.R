# DESeq2's independent filtering (DESeq2:::pvalueAdjustment, as results() calls it) on fixed
# p-values and baseMeans, for tests/test_independent_filtering_deseq2.py.
# Input: tests/data/independent_filtering_input.csv (feature, baseMean, pvalue), written by
# that test's generator; output: tests/data/independent_filtering_deseq2.csv (padj per
# feature and alpha) and the chosen filterThreshold / filterTheta per alpha in
# tests/data/independent_filtering_deseq2_meta.csv.
# Run: Rscript benchmarks/independent_filtering_deseq2.R  (R 4.2, DESeq2 1.38)
suppressMessages(library(DESeq2))
d <- read.csv("tests/data/independent_filtering_input.csv")
res <- S4Vectors::DataFrame(baseMean = d$baseMean, pvalue = d$pvalue)
out <- list()
for (alpha in c(0.1, 0.05)) {
  r <- DESeq2:::pvalueAdjustment(res, independentFiltering = TRUE, alpha = alpha,
                                 pAdjustMethod = "BH")
  out[[length(out) + 1]] <- data.frame(alpha = alpha, feature = d$feature, padj = r$padj)
  md <- S4Vectors::metadata(r)
  cat(sprintf("alpha %g: filterThreshold %.17g filterTheta %.17g\n", alpha,
              md$filterThreshold, md$filterTheta))
  write.table(data.frame(alpha = alpha, filterThreshold = md$filterThreshold,
                         filterTheta = md$filterTheta),
              "tests/data/independent_filtering_deseq2_meta.csv", sep = ",",
              row.names = FALSE, col.names = alpha == 0.1, append = alpha != 0.1)
}
write.csv(do.call(rbind, out), "tests/data/independent_filtering_deseq2.csv", row.names = FALSE)
