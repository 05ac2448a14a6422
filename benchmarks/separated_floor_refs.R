# edgeR glmQLFit/glmQLFTest, glmGamPoi test_de and edgeR exactTest on the null tables of
# benchmarks/separated_floor_calibration.py (argument: the folder with *_counts.csv);
# every tool gets the tables' size factors (edgeR: as normalisation factors).
args <- commandArgs(trailingOnly = TRUE)
suppressMessages({library(edgeR); library(glmGamPoi)})
for (f in Sys.glob(file.path(args[1], "*_counts.csv"))) {
  tag <- sub("_counts.csv", "", basename(f))
  y <- as.matrix(read.csv(f)); cd <- read.csv(sub("_counts", "_coldata", f))
  cd$group <- factor(cd$group)
  design <- model.matrix(~ group, cd)
  d <- DGEList(y, group = cd$group); d$samples$norm.factors <- cd$sf / d$samples$lib.size * exp(mean(log(d$samples$lib.size)))
  d <- estimateDisp(d, design)
  fit <- glmQLFit(d, design); qt <- glmQLFTest(fit, coef = 2)
  gfit <- glm_gp(y, design = design, size_factors = cd$sf, overdispersion_shrinkage = TRUE)
  gt <- test_de(gfit, contrast = c(0, 1))
  et <- exactTest(d)
  write.csv(data.frame(edger = qt$table$PValue, gampoi = gt$pval, exact = et$table$PValue),
            sub("_counts", "_refs", f), row.names = FALSE)
  cat(tag, "\n")
}
