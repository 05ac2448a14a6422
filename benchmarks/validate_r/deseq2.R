# DESeq2 with the given size factors: DESeq() (gene-wise Cox-Reid dispersions, parametric
# trend, MAP shrinkage, Wald test), no Cooks filtering, outlier replacement or independent
# filtering, so every feature gets a p-value.
script_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(script_dir, "common.R"))
suppressPackageStartupMessages(library(DESeq2))
d <- read_validation_data()
dds <- DESeqDataSetFromMatrix(d$counts, d$samples, design = ~condition)
sizeFactors(dds) <- d$sf
dds <- DESeq(dds, quiet = TRUE, minReplicatesForReplace = Inf)
res <- results(dds, name = "condition_B_vs_A", cooksCutoff = FALSE, independentFiltering = FALSE)
write_validation("deseq2", data.frame(
  pval = res$pvalue, dispersion = dispersions(dds), genewise = mcols(dds)$dispGeneEst,
  trend = mcols(dds)$dispFit))
