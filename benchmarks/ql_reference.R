# edgeR and glmGamPoi quasi-likelihood references, and DESeq2 from batchglm's gene-wise
# dispersions, on the Marioni and Sultan tables, for tests/test_ql_reference.py and
# tests/test_deseq2_reference.py (which need no R).
#
#   PYTHONPATH=src python benchmarks/ql_reference_inputs.py   # our dispersions (inputs)
#   Rscript benchmarks/ql_reference.R [DATADIR]               # default DATADIR: tests/data
#
# Reads deseq2_<name>_{counts.csv.gz,coldata.csv,batchglm_dispersions.csv.gz} (written by
# benchmarks/deseq2_reference.R and benchmarks/ql_reference_inputs.py) and writes:
#   edger_<name>_ql.csv.gz      edgeR (3.40) defaults: calcNormFactors (TMM), estimateDisp,
#                               glmQLFit (robust = FALSE, abundance.trend = TRUE),
#                               glmQLFTest(coef = 2) (logFCUnshrunk: the coefficient without
#                               edgeR's prior.count; FDR is BH of PValue); and the same QL fit and test at
#                               batchglm's TMM size factors and trended NB dispersions
#                               (columns suffixed "_atOurTrend").
#   glmgampoi_<name>_ql.csv.gz  glmGamPoi (1.10) glm_gp (overdispersion_shrinkage = TRUE) at
#                               DESeq2's size factors + test_de(contrast = the coefficient).
#   deseq2_<name>_ourgenewise.csv.gz
#                               DESeq2 (1.38) with mcols(dds)$dispGeneEst replaced by
#                               batchglm's, then estimateDispersionsFit, estimateDispersionsMAP,
#                               nbinomWaldTest, results() (Cook's cutoff, independent
#                               filtering, alpha = 0.1 defaults).
#   deseq2_<name>_ourgenewise.txt  DESeq2's dispPriorVar, varLogDispEsts, trend
#                               coefficients and filterThreshold of that run.
#   edger_<name>_time.txt       elapsed seconds (median of 3) of edgeR's and glmGamPoi's
#                               full runs, and the versions.
suppressPackageStartupMessages({library(DESeq2); library(edgeR); library(glmGamPoi)})
args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args) >= 1) args[1] else "tests/data"
sets <- list(marioni = c("tissue", "Kidney", "Liver"), sultan = c("cell", "HEK293T", "Ramos"))

sig <- function(df) {
  num <- vapply(df, is.numeric, logical(1))
  df[num] <- lapply(df[num], signif, digits = 6)
  df
}
timed <- function(run) median(replicate(3, system.time(run())[["elapsed"]]))

for (name in names(sets)) {
  f <- sets[[name]]
  counts <- as.matrix(read.csv(gzfile(file.path(dir, paste0("deseq2_", name, "_counts.csv.gz"))),
                               row.names = 1, check.names = FALSE))
  storage.mode(counts) <- "integer"
  coldata <- read.csv(file.path(dir, paste0("deseq2_", name, "_coldata.csv")), row.names = 1)
  coldata[[f[1]]] <- factor(coldata[[f[1]]], levels = f[2:3])
  stopifnot(identical(rownames(coldata), colnames(counts)))
  ours <- read.csv(gzfile(file.path(dir, paste0("deseq2_", name, "_batchglm_dispersions.csv.gz"))),
                   row.names = 1)
  stopifnot(identical(rownames(ours), rownames(counts)))
  design <- model.matrix(as.formula(paste("~", f[1])), coldata)

  # edgeR defaults.
  edger <- function() {
    y <- calcNormFactors(DGEList(counts))
    y <- estimateDisp(y, design)
    fit <- glmQLFit(y, design)
    list(y = y, fit = fit, qlf = glmQLFTest(fit, coef = 2))
  }
  t_edger <- timed(edger)
  e <- edger()
  # edgeR's QL at our size factors and our trended NB dispersions.
  sf <- ours$sizeFactor[seq_len(ncol(counts))]
  y2 <- DGEList(counts, lib.size = sf * mean(colSums(counts)))
  fit2 <- glmQLFit(y2, design, dispersion = ours$dispTrendTMM)
  q2 <- glmQLFTest(fit2, coef = 2)
  out <- data.frame(
    gene = rownames(counts), logFCUnshrunk = e$fit$unshrunk.coefficients[, 2] / log(2),
    PValue = e$qlf$table$PValue, trendedDispersion = e$y$trended.dispersion,
    dfResidual = e$fit$df.residual, varPost = e$fit$var.post,
    logFCUnshrunk_atOurTrend = fit2$unshrunk.coefficients[, 2] / log(2),
    PValue_atOurTrend = q2$table$PValue, varPost_atOurTrend = fit2$var.post,
    normFactor = NA_real_, dfPrior = NA_real_, dfPrior_atOurTrend = NA_real_
  )
  stopifnot(length(unique(e$fit$df.prior)) == 1, length(unique(fit2$df.prior)) == 1)
  out$normFactor[seq_len(ncol(counts))] <- e$y$samples$norm.factors
  out$dfPrior[1] <- e$fit$df.prior[1]
  out$dfPrior_atOurTrend[1] <- fit2$df.prior[1]
  write.csv(sig(out), gzfile(file.path(dir, paste0("edger_", name, "_ql.csv.gz"))),
            row.names = FALSE)

  # glmGamPoi at DESeq2's size factors.
  dsf <- estimateSizeFactorsForMatrix(counts)
  gp <- function() {
    fit <- glm_gp(counts, design = design, size_factors = dsf)
    list(fit = fit, de = test_de(fit, contrast = colnames(design)[2]))
  }
  t_gp <- timed(gp)
  g <- gp()
  gout <- data.frame(
    gene = g$de$name, lfc = g$de$lfc, pval = g$de$pval, adj_pval = g$de$adj_pval,
    df2 = g$de$df2, overdispersion = g$fit$overdispersions,
    overdispersionTrend = g$fit$overdispersion_shrinkage_list$dispersion_trend,
    qlDispersion = g$fit$overdispersion_shrinkage_list$ql_disp_shrunken,
    qlDfPrior = g$fit$overdispersion_shrinkage_list$ql_df0,
    sizeFactor = NA_real_
  )
  gout$sizeFactor[seq_len(ncol(counts))] <- dsf
  write.csv(sig(gout), gzfile(file.path(dir, paste0("glmgampoi_", name, "_ql.csv.gz"))),
            row.names = FALSE)

  # DESeq2 from our gene-wise dispersions.
  dds <- DESeqDataSetFromMatrix(counts, coldata, as.formula(paste("~", f[1])))
  dds <- estimateSizeFactors(dds)
  dds <- estimateDispersionsGeneEst(dds)
  maxDisp <- max(10, ncol(dds))
  mcols(dds)$dispGeneEst <- pmin(pmax(ours$dispGeneEst, 1e-8), maxDisp)
  dds <- estimateDispersionsFit(dds)
  dds <- estimateDispersionsMAP(dds)
  dds <- nbinomWaldTest(dds)
  res <- results(dds, contrast = f[c(1, 3, 2)])
  mc <- mcols(dds)
  dout <- data.frame(
    gene = rownames(res), baseMean = res$baseMean, log2FoldChange = res$log2FoldChange,
    pvalue = res$pvalue, padj = res$padj, dispFit = mc$dispFit, dispersion = mc$dispersion,
    dispOutlier = mc$dispOutlier, maxCooks = mc$maxCooks
  )
  write.csv(sig(dout), gzfile(file.path(dir, paste0("deseq2_", name, "_ourgenewise.csv.gz"))),
            row.names = FALSE)
  disp_fun <- dispersionFunction(dds)
  writeLines(c(paste("dispPriorVar", attr(disp_fun, "dispPriorVar")),
               paste("varLogDispEsts", attr(disp_fun, "varLogDispEsts")),
               paste("dispFitCoefs", paste(attr(disp_fun, "coefficients"), collapse = " ")),
               paste("filterThreshold", metadata(res)$filterThreshold)),
             file.path(dir, paste0("deseq2_", name, "_ourgenewise.txt")))
  writeLines(c(paste("edgeR", t_edger), paste("glmGamPoi", t_gp),
               paste("versions edgeR", packageVersion("edgeR"), "glmGamPoi",
                     packageVersion("glmGamPoi"), "DESeq2", packageVersion("DESeq2"))),
             file.path(dir, paste0("edger_", name, "_time.txt")))
  cat(name, ": edgeR ", sum(p.adjust(out$PValue, "BH") < 0.05), " glmGamPoi ", sum(gout$adj_pval < 0.05),
      " DESeq2(our gene-wise) ", sum(res$padj < 0.05, na.rm = TRUE), " at 0.05\n", sep = "")
}
