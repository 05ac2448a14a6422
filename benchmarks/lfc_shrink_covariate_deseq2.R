# DESeq2's normal-prior shrinkage with a covariate in the design (~ age + condition), for
# tests/test_lfc_shrink_covariate.py. Input: benchmarks/lfc_shrink_covariate_input.py.
# Columns of tests/data/lfc_covariate_deseq2.csv:
#   lfcShrink: lfcShrink(type = "normal"), DESeq2's default: a normal prior on every
#     non-intercept coefficient of the standard design (lfcShrink with coef), age included (its variance
#     matched to age's own MLE coefficients);
#   tested_only: nbinomWaldTest(betaPrior = TRUE) with the prior on condition only (age and
#     the intercept at variance 1e6, standard model matrix), at the prior variance from
#     DESeq2's weighted upper-quantile matching of the MLE condition LFCs (weights
#     1 / (1 / baseMean + dispFit), as lfcShrink): the model of bg.de.lfc_shrink(type =
#     "normal");
#   mle: the MLE log2 fold change. Also the prior variances used (attributes row).
# Run from the repository root: Rscript benchmarks/lfc_shrink_covariate_deseq2.R
suppressPackageStartupMessages(library(DESeq2))
counts <- as.matrix(read.csv("tests/data/lfc_covariate_counts.csv", row.names = 1,
                             check.names = FALSE))
cd <- read.csv("tests/data/lfc_covariate_coldata.csv", row.names = 1)
cd$condition <- factor(cd$condition, levels = c("A", "B"))
dds <- DESeqDataSetFromMatrix(counts, cd, ~ age + condition)
sizeFactors(dds) <- cd$sizeFactor
dds <- DESeq(dds, quiet = TRUE, minReplicatesForReplace = Inf)
res <- results(dds, name = "condition_B_vs_A")
shr <- lfcShrink(dds, coef = "condition_B_vs_A", type = "normal", quiet = TRUE)
mle <- res$log2FoldChange
use <- !is.na(mle) & abs(mle) < 10
w <- 1 / (1 / mcols(dds)$baseMean + mcols(dds)$dispFit)
prior_var <- DESeq2:::matchWeightedUpperQuantileForVariance(mle[use], w[use], 0.05)
dds2 <- nbinomWaldTest(dds, betaPrior = TRUE, modelMatrixType = "standard", quiet = TRUE,
                       betaPriorVar = c(1e6, 1e6, prior_var))
tested_only <- results(dds2, name = "condition_B_vs_A")$log2FoldChange
write.csv(data.frame(gene = rownames(dds), mle = mle, lfcShrink = shr$log2FoldChange,
                     tested_only = tested_only, dispersion = dispersions(dds)),
          "tests/data/lfc_covariate_deseq2.csv", row.names = FALSE)
cat("prior sd (log2) of condition, tested-only:", sqrt(prior_var), "\n")
cat("lfcShrink's betaPriorVar:", format(attr(shr, "priorInfo")$betaPriorVar), "\n")
d <- abs(shr$log2FoldChange - tested_only)
cat("lfcShrink vs tested_only: median", median(d, na.rm = TRUE), "max", max(d, na.rm = TRUE), "\n")
