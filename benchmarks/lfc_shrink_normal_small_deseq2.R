# DESeq2 lfcShrink(type = "normal") on two small simulated designs, for
# tests/test_lfc_normal_small_designs.py and the "normal" bullet of docs/inference.md:
#   3v3: ~ condition, 3 vs 3 (the design where the unweighted prior was furthest off);
#   4v4batch: ~ batch + condition, 4 vs 4 in two batches (balanced), where lfcShrink also
#     shrinks the batch coefficient; tested_only is nbinomWaldTest(betaPrior = TRUE) with
#     the prior on condition only (batch and intercept at variance 1e6), at lfcShrink's own
#     prior variance for condition: the model of bg.de.lfc_shrink(type = "normal").
# Writes tests/data/lfc_normal_<name>_counts.csv (genes x samples, plus the sizeFactor
# row) and tests/data/lfc_normal_<name>_deseq2.csv. Run from the repository root:
#   Rscript benchmarks/lfc_shrink_normal_small_deseq2.R
suppressPackageStartupMessages(library(DESeq2))
simulate <- function(n_gene, cond, batch, seed) {
  set.seed(seed)
  base <- exp(rnorm(n_gene, log(80), 1.6))
  lfc <- ifelse(runif(n_gene) < 0.8, rnorm(n_gene, 0, 0.15), rnorm(n_gene, 0, 1.5))
  beff <- rnorm(n_gene, 0, 0.4)
  disp <- 0.04 + 1.5 / base
  sf <- exp(rnorm(length(cond), 0, 0.25))
  mu <- outer(base, sf) * exp(outer(lfc, cond == "B") * log(2) + outer(beff, batch == "b2"))
  cnt <- matrix(rnbinom(length(mu), mu = mu, size = 1 / disp), nrow = n_gene)
  dimnames(cnt) <- list(sprintf("g%03d", seq_len(n_gene)), paste0("s", seq_along(cond)))
  cnt[rowSums(cnt) > 0, ]
}
run <- function(name, cnt, coldata, design) {
  dds <- DESeqDataSetFromMatrix(cnt, coldata, design)
  dds <- DESeq(dds, quiet = TRUE, minReplicatesForReplace = Inf)
  shr <- lfcShrink(dds, coef = "condition_B_vs_A", type = "normal", quiet = TRUE)
  bpv <- attr(shr, "priorInfo")$betaPriorVar
  cat(name, "lfcShrink betaPriorVar:", format(bpv), "\n")
  out <- data.frame(gene = rownames(dds), baseMean = mcols(dds)$baseMean,
                    log2FoldChange = shr$log2FoldChange, lfcSE = shr$lfcSE)
  con <- lfcShrink(dds, contrast = c("condition", "B", "A"), type = "normal", quiet = TRUE)
  out$contrast_log2FoldChange <- con$log2FoldChange
  cat(name, "contrast (expanded) betaPriorVar:", format(attr(con, "priorInfo")$betaPriorVar),
      "\n")
  if (ncol(model.matrix(design, coldata)) > 2) {
    p <- length(bpv)
    dds2 <- nbinomWaldTest(dds, betaPrior = TRUE, modelMatrixType = "standard", quiet = TRUE,
                           betaPriorVar = c(rep(1e6, p - 1), bpv[[p]]))
    r2 <- results(dds2, name = "condition_B_vs_A")
    out$tested_only <- r2$log2FoldChange
    out$tested_only_lfcSE <- r2$lfcSE
  }
  tab <- rbind(cnt, sizeFactor = sizeFactors(dds))
  write.csv(tab, sprintf("tests/data/lfc_normal_%s_counts.csv", name))
  write.csv(out, sprintf("tests/data/lfc_normal_%s_deseq2.csv", name), row.names = FALSE)
}
cond <- factor(rep(c("A", "B"), each = 3))
run("3v3", simulate(400, cond, rep("b1", 6), 11), data.frame(condition = cond), ~condition)
cond <- factor(rep(c("A", "B"), each = 4))
batch <- factor(rep(c("b1", "b2"), 4))
run("4v4batch", simulate(400, cond, batch, 12), data.frame(batch = batch, condition = cond),
    ~ batch + condition)
