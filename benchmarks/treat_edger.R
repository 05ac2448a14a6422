# edgeR's TREAT quasi-likelihood test (glmTreat) on a small simulated table, for
# tests/test_threshold.py (which needs no R).
#
#   Rscript benchmarks/treat_edger.R [DATADIR]      # default DATADIR: tests/data
#
# Writes
#   treat_edger_counts.csv  counts, genes in rows, samples s1..s8 in columns (4 vs 4);
#   treat_edger.csv         per gene: edgeR's NB dispersion of the QL fit (estimateDisp's
#                           trended.dispersion), posterior QL dispersion var.post, the total
#                           df of the test (df.prior + df.residual.zeros, capped as glmTreat
#                           caps it), the unshrunk log2 fold change, glmTreat p-values with
#                           null = "worst.case" and "interval" (lfc = log2(1.5)), the
#                           interval-null p-values at the small threshold log2(1.1)
#                           (PValueIntervalSmall: most genes then fall in the formula's
#                           second branch, z.right + z.left <= c), and whether edgeR's
#                           Poisson bound applies to the gene.
# Library sizes are the column sums with norm.factors 1 (no TMM), so that the size factors
# are plain column sums on both sides.
suppressPackageStartupMessages(library(edgeR))
args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args) >= 1) args[1] else "tests/data"
set.seed(20261130)
n_genes <- 60
group <- factor(rep(c("a", "b"), each = 4))
lib <- c(1.0, 1.3, 0.8, 1.1, 0.9, 1.2, 1.0, 0.7)
base <- exp(runif(n_genes, log(20), log(2000)))
lfc <- seq(-2, 2, length.out = n_genes)          # log2, both sides of the threshold
disp <- 0.05 + 2 / base
mu <- outer(base, lib) * 2^(outer(lfc, as.numeric(group == "b")))
counts <- matrix(rnbinom(length(mu), mu = mu, size = 1 / disp), nrow = n_genes)
dimnames(counts) <- list(sprintf("gene%02d", seq_len(n_genes)), sprintf("s%d", 1:8))
design <- model.matrix(~group)

y <- DGEList(counts, lib.size = colSums(counts))
y <- estimateDisp(y, design)
fit <- glmQLFit(y, design)
threshold <- log2(1.5)
worst <- glmTreat(fit, coef = 2, lfc = threshold, null = "worst.case")
interval <- glmTreat(fit, coef = 2, lfc = threshold, null = "interval")
small_threshold <- log2(1.1)
interval_small <- glmTreat(fit, coef = 2, lfc = small_threshold)  # edgeR's default null
df_total <- pmin(fit$df.prior + fit$df.residual.zeros,
                 nrow(fit) * (ncol(counts) - ncol(design)))
bound <- rowSums(fit$var.post * (1 + fit$fitted.values * fit$dispersion) < 1) > 0

write.csv(counts, file.path(dir, "treat_edger_counts.csv"))
out <- data.frame(
  gene = rownames(counts), dispersion = fit$dispersion, varPost = fit$var.post,
  dfTotal = df_total, logFCUnshrunk = fit$unshrunk.coefficients[, 2] / log(2),
  PValueWorstCase = worst$table$PValue, PValueInterval = interval$table$PValue,
  PValueIntervalSmall = interval_small$table$PValue,
  poissonBound = bound, lfcThreshold = threshold, lfcThresholdSmall = small_threshold
)
num <- vapply(out, is.double, logical(1))
out[num] <- lapply(out[num], signif, digits = 10)
write.csv(out, file.path(dir, "treat_edger.csv"), row.names = FALSE)
cat("edgeR", format(packageVersion("edgeR")), ": genes under the Poisson bound", sum(bound),
    "; worst-case p < 0.05:", sum(worst$table$PValue < 0.05), "\n")
