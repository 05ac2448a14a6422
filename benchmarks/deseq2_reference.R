# DESeq2 reference results on real bulk RNA-seq counts shipped by Debian R packages, for
# tests/test_deseq2_reference.py (which needs no R).
#
#   Rscript benchmarks/deseq2_reference.R [OUTDIR]      # default OUTDIR: tests/data
#
# Data sets (both public, both shipped as Bioconductor package data):
#   marioni: NOISeq's `Marioni` (Marioni et al. 2008, Genome Research 18:1509), 5 kidney vs
#            5 liver lanes, 5088 genes (apt-get install r-bioc-noiseq).
#   sultan:  HTSFilter's `sultan` (Sultan et al. 2008, Science 321:956), 2 HEK293T vs
#            2 Ramos B cell samples, 9010 genes (apt-get install r-bioc-htsfilter).
# DESeq2 runs with its defaults (DESeq(), results() with Cook's cutoff and independent
# filtering, alpha = 0.1). Writes per data set: deseq2_<name>_counts.csv.gz (genes x
# samples), deseq2_<name>_coldata.csv, deseq2_<name>_results.csv.gz and the DESeq2 run time
# in deseq2_<name>_time.txt (seconds, median of 3 runs). The results also hold DESeq2's
# size factors and edgeR's TMM normalisation factors (first rows, one per sample).
suppressPackageStartupMessages({
  library(DESeq2); library(edgeR); library(NOISeq); library(HTSFilter); library(Biobase)
})
args <- commandArgs(trailingOnly = TRUE)
outdir <- if (length(args) >= 1) args[1] else "tests/data"

run <- function(name, counts, coldata, design, contrast) {
  keep <- rowSums(counts) > 0                      # all-zero genes carry no information
  counts <- counts[keep, , drop = FALSE]
  storage.mode(counts) <- "integer"
  dds <- DESeqDataSetFromMatrix(counts, coldata, design)
  times <- replicate(3, system.time({
    d <- DESeq(dds, quiet = TRUE); r <- results(d, contrast = contrast)
  })[["elapsed"]])
  dds <- DESeq(dds, quiet = TRUE)
  res <- results(dds, contrast = contrast)
  mc <- mcols(dds)
  out <- data.frame(
    gene = rownames(res), baseMean = res$baseMean, log2FoldChange = res$log2FoldChange,
    lfcSE = res$lfcSE, pvalue = res$pvalue, padj = res$padj,
    dispGeneEst = mc$dispGeneEst, dispersion = mc$dispersion,
    maxCooks = mc$maxCooks, sizeFactor = NA_real_, tmmNormFactor = NA_real_
  )
  # Per-sample values in the first rows (samples in the order of the count columns).
  out$sizeFactor[seq_len(ncol(counts))] <- sizeFactors(dds)
  out$tmmNormFactor[seq_len(ncol(counts))] <- calcNormFactors(counts)
  num <- vapply(out, is.numeric, logical(1))
  out[num] <- lapply(out[num], signif, digits = 7)
  write.csv(data.frame(gene = rownames(counts), counts, check.names = FALSE),
            gzfile(file.path(outdir, paste0("deseq2_", name, "_counts.csv.gz"))),
            row.names = FALSE)
  write.csv(data.frame(sample = rownames(coldata), coldata),
            file.path(outdir, paste0("deseq2_", name, "_coldata.csv")), row.names = FALSE)
  write.csv(out, gzfile(file.path(outdir, paste0("deseq2_", name, "_results.csv.gz"))),
            row.names = FALSE)
  writeLines(c(format(median(times)), paste("filterThreshold", metadata(res)$filterThreshold),
               paste("DESeq2", packageVersion("DESeq2"))),
             file.path(outdir, paste0("deseq2_", name, "_time.txt")))
  cat(name, ": ", nrow(counts), " genes, ", sum(res$padj < 0.05, na.rm = TRUE),
      " with padj < 0.05, DESeq2 ", median(times), " s\n", sep = "")
}

data(Marioni)
coldata <- data.frame(tissue = factor(as.character(myfactors$Tissue), c("Kidney", "Liver")),
                      row.names = colnames(mycounts))
run("marioni", as.matrix(mycounts), coldata, ~ tissue, c("tissue", "Liver", "Kidney"))

data(sultan)
s_counts <- exprs(sultan)
cell <- ifelse(pData(sultan)$cell.line == "HEK293T", "HEK293T", "Ramos")
coldata <- data.frame(cell = factor(cell, c("HEK293T", "Ramos")), row.names = colnames(s_counts))
run("sultan", s_counts, coldata, ~ cell, c("cell", "Ramos", "HEK293T"))
