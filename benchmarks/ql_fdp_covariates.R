# edgeR 3.40 QL (robust FALSE, its default, and TRUE) and DESeq2 1.38 Wald and LRT on the
# tables of benchmarks/ql_fdp_covariates.py: Rscript benchmarks/ql_fdp_covariates.R DIR
suppressMessages({library(edgeR); library(DESeq2)})
dir <- commandArgs(TRUE)[1]
for (variant in c("indep", "trend")) for (seed in c(201, 202, 203)) {
  tag <- sprintf("%s_%d", variant, seed)
  obs <- read.csv(file.path(dir, sprintf("obs_%s.csv", tag)), row.names = 1, stringsAsFactors = TRUE)
  Y <- as.matrix(read.csv(file.path(dir, sprintf("Y_%s.csv", tag)), row.names = 1))
  colnames(Y) <- rownames(obs)
  des <- model.matrix(~ batch + RIN + age + condition, obs)
  y <- estimateDisp(calcNormFactors(DGEList(Y)), des)
  out <- data.frame(gene = rownames(Y), trended = y$trended.dispersion)
  for (rob in c(FALSE, TRUE)) {
    f <- glmQLFit(y, des, robust = rob)
    k <- if (rob) "edgeR_rob" else "edgeR"
    out[[paste0(k, "_p")]] <- glmQLFTest(f, coef = ncol(des))$table$PValue
    out[[paste0(k, "_s2post")]] <- f$var.post
    out[[paste0(k, "_dfprior")]] <- f$df.prior
  }
  dds <- suppressMessages(DESeqDataSetFromMatrix(Y, obs, ~ batch + RIN + age + condition))
  dw <- suppressWarnings(suppressMessages(DESeq(dds, quiet = TRUE)))
  rw <- results(dw, name = "condition_trt_vs_ctrl")
  dl <- suppressWarnings(suppressMessages(nbinomLRT(dw, reduced = ~ batch + RIN + age, quiet = TRUE)))
  rl <- results(dl, name = "condition_trt_vs_ctrl")
  out$deseq2_wald_p <- rw$pvalue; out$deseq2_wald_padj <- rw$padj
  out$deseq2_lrt_p <- rl$pvalue; out$deseq2_lrt_padj <- rl$padj
  write.csv(out, file.path(dir, sprintf("peers_%s.csv", tag)), row.names = FALSE)
}
